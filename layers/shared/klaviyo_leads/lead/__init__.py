"""Reading a lead: its body (``body``), the lead itself (``record``), the field mapping
(``fields``) and phone numbers (``phone``)."""
