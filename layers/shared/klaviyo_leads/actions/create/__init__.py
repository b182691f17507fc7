"""Create Profile: the identity rule (``identity``: who a lead is, what another request's record
or a found profile means), one lead (``one``) and a queued batch (``batch``)."""
