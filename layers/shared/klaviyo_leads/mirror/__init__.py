"""Mirror sync: a Klaviyo list made exactly the people of a lead file.

A file under ``mirror/<list_id>/`` in the lead-files bucket (or an Add Profile to List file whose
metadata says ``mirror: true``, its list in ``klaviyo.list_id``) names the people the list must
hold. The people missing from the list are added; members the file does not name are removed
from the list: a removal, never an unsubscribe, so nobody's consent changes. People are found as
Add Profile to List finds them (the lead's identifier, contract section 3); one without a profile
is not added, and the report says how many.

The plan comes first: the list's members are read through its list-profiles pages, the file's
people matched against them, the rest looked up a hundred to a search, and
``results/<key>.report.json`` says how many would be added, kept and removed before anything
is written. A plan that would
remove more than ``MIRROR_MAX_REMOVAL_PERCENT`` of the list (20 % unless the stack says
otherwise) is refused unless the file's metadata confirms it (``mirror-confirm-removals``: at
least the number of removals, or ``all``). Under ``dry-run/`` only the plan is written. Then the
removals and the additions go out, a thousand profiles to a call, the two side by side (each
has its own rate limit), every call through the client's pacer, within its share of the account.
``results/<key>.mirror.json`` says what was done. A file sent again changes nothing: its plan
adds and removes nobody.
"""
