"""Upsert Profile: the person's profile created, or, when it exists, updated; ``created`` says
which, and is a fact.

The lead is created exactly as Create Profile creates it (recorded in the ledger, Klaviyo's
201 or the request's mark deciding "created"). When that finds the person's profile already
there, the profile is updated with the lead's fields instead. Never someone else's: a
profile found by the lead's phone number or external id that holds another email (or,
between two leads without one, another phone number) belongs to another person, and the
upsert is refused rather than re-identify it.
"""

from __future__ import annotations

from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.create.identity import LABELS, Person
from klaviyo_leads.actions.create.one import create, new_profile
from klaviyo_leads.actions.profiles import get_profile
from klaviyo_leads.actions.update_profile import patch
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, success


def upsert_profile(ctx: Context, lead: Lead) -> Result:
    """Create the profile, or update the one that holds the lead's identifiers."""
    attributes = new_profile(ctx, lead)
    person = Person.of(attributes)
    try:
        made = create(ctx, attributes)
    except Result as stopped:
        made = stopped
    existing_id = made.duplicate_profile_id
    if made.outcome is outcomes.Outcome.SUCCESS:
        return success(made.profile, created=True)
    if existing_id is None:
        raise made  # not a duplicate: what stopped the create stops the upsert
    profile = get_profile(ctx, existing_id)
    if profile is None:  # deleted in between: the lead comes back and creates it then
        raise outcomes.CREATE_IN_PROGRESS(retry_after=1.0)
    if person.is_other_person(profile):
        raise other_person(person, profile)
    updated = patch(ctx, profile, attributes)
    return success(updated.profile, created=False)


def other_person(person: Person, profile: dict[str, Any]) -> Result:
    """The profile found by some of the lead's identifiers is another person's."""
    shared = [n for n in person.shares(profile) if n != "email"]
    named = " and ".join(LABELS[n] for n in shared) or "phone number"
    return outcomes.IDENTIFIER_TAKEN(
        identifiers=named,
        profile={"type": "profile", "id": profile["id"]},
        duplicate_profile_id=profile["id"],
    )
