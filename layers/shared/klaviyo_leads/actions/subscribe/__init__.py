"""Subscribe and Unsubscribe: consent jobs (``jobs``), the consent read back after a subscribe
(``consent``) and the evidence recorded with it (``evidence``)."""
