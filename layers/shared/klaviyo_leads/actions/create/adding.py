"""An update that gives a profile an identifier it lacks holds that identifier as a create would.

Klaviyo holds an email or a phone number to one profile; a PATCH that adds one to an existing
profile makes it that profile's as surely as a create would. Unrecorded, such a PATCH could land
while a queued batch's import is on its way for another lead with the same phone: the search
(still lagging) showed no one, the import matches the freshly patched profile by the phone,
and the lead would be told it created another person's profile. So Update and Upsert Profile
take the identifiers their PATCH adds in the ledger first, under the request's own owner (with
``OWNER_SUFFIX``: the create an Upsert tried first keeps its own record), and record the profile
as theirs once Klaviyo answered:

- a create that meets them while the PATCH is in flight waits ("in progress");
- one that meets them after is that profile's duplicate, naming the identifier;
- a PATCH that meets a create still at work on the identifier waits for it ("in progress");
  one that meets a profile recorded for it goes ahead, and Klaviyo's 409 names the holder.
"""

from __future__ import annotations

from typing import Any

from klaviyo_leads.actions.create.identity import IDENTIFIERS, Person, in_progress, normalised
from klaviyo_leads.actions.create.one import Attempt, hold_seconds, owner_of, record_unavailable
from klaviyo_leads.aws.ledger_records import HoldLost, LedgerUnavailable, Record
from klaviyo_leads.context import Context

OWNER_SUFFIX = "#update"


def added(profile: dict[str, Any], attributes: dict[str, Any]) -> Person:
    """The identifiers the attributes give the profile that it does not hold yet."""
    held = profile.get("attributes") or {}
    values = {
        name: value
        for name in IDENTIFIERS
        if isinstance(value := attributes.get(name), str)
        and value
        and not (
            isinstance(held.get(name), str)
            and normalised(name, held[name]) == normalised(name, value)
        )
    }
    return Person.of(values)


def hold_added(ctx: Context, profile: dict[str, Any], attributes: dict[str, Any]) -> Attempt | None:
    """The hold on what the PATCH adds, renewed for the write that goes out next (None: nothing
    to hold, no ledger, or the identifiers are another profile's already: Klaviyo decides).
    Raises the result that stops the update: "in progress" while another request creates with
    one of them, "record unavailable" when the ledger cannot be reached."""
    ledger = ctx.ledger
    person = added(profile, attributes)
    if ledger is None or not person.values():
        return None
    owner = owner_of(ctx) + OWNER_SUFFIX
    try:
        try:
            taken = ledger.take(person.identities(), owner, ctx.attempt, hold_seconds(ctx))
        except LedgerUnavailable:
            ledger.pause(Record(owner, ctx.attempt, person.identities(), 0.0, 0.0))
            raise
        now = ledger.clock()
        if taken.mine is None:
            running = [
                h.record
                for h in taken.others
                if h.record and not h.record.profile_id and h.record.running(now)
            ]
            if taken.busy or running:
                until = max((r.hold_until for r in running), default=None)
                raise in_progress(ctx, until, now)
            return None  # recorded for a profile, or left by a request that went away
        attempt = Attempt(ctx, person, attributes, owner, taken.mine)
        attempt.renew_for_write()
    except HoldLost:
        raise in_progress(ctx, None, ctx.wall()) from None
    except LedgerUnavailable:
        raise record_unavailable() from None
    return attempt
