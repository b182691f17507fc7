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
from klaviyo_leads.actions import imports, lookup
from klaviyo_leads.actions.action import Batch
from klaviyo_leads.actions.batch import BULK_IMPORT_MIN_LEADS, IDENTITY_ATTRIBUTES, import_items
from klaviyo_leads.actions.create.batch import create_all
from klaviyo_leads.actions.create.identity import IDENTIFIERS, LABELS, Person, made_by
from klaviyo_leads.actions.create.one import create, new_profile
from klaviyo_leads.actions.lookup import get_profile
from klaviyo_leads.actions.update_profile import patch
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Outcome, Result, success


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


# -- A batch ------------------------------------------------------------------------------------


def upsert_profile_batch(batch: Batch) -> None:
    """Profiles found in bulk are updated by one import job; the rest are created as Create
    Profile creates them (recorded, so ``created`` is a fact), then updated where that finds
    them to exist after all (``upsert``)."""
    ctx = batch.ctx
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one(index)
        return
    found = _existing_people(batch, wanted)
    items: list[dict[str, Any]] = []
    served: list[int] = []
    in_the_job: set[str] = set()
    later: list[int] = []
    new: dict[int, dict[str, Any]] = {}
    for index, attributes in wanted.items():
        if batch.results[index] is not None:
            continue
        profile = found.get(index)
        if profile is None or made_by(profile, batch.origins[index] or ""):
            # To create, as Create Profile creates (recorded); or one an earlier attempt of
            # this lead made, which its record tells.
            new[index] = attributes
            continue
        person = Person.of(attributes)
        if person.is_other_person(profile):
            batch.fail(index, other_person(person, profile))
            continue
        item = {"type": "profile", "id": profile["id"], "attributes": attributes}
        identity_change = any(
            attributes.get(name) != (profile.get("attributes") or {}).get(name)
            for name in IDENTITY_ATTRIBUTES
            if attributes.get(name)
        )
        if identity_change or profile["id"] in in_the_job or not imports.fits(item):
            later.append(index)
            continue
        items.append(item)
        served.append(index)
        in_the_job.add(profile["id"])
    import_items(
        batch,
        items,
        served,
        lambda index, profile: success(profile, created=False),
        repeatable=True,
    )
    if new:
        create_all(batch, new)
    for index in new:
        made = batch.results[index]
        if made is not None and made.outcome is Outcome.SUCCESS and made.created is None:
            made.created = True  # the batch's create made it
        elif made is not None and made.duplicate_profile_id:
            later.append(index)  # it exists after all (made meanwhile): updated one by one
    for index in later:
        batch.one_by_one(index)


def _existing_people(batch: Batch, wanted: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The profile Klaviyo holds for each lead: by its email, else phone, else external id."""
    asked = {
        index: {name: attributes[name] for name in IDENTIFIERS if attributes.get(name)}
        for index, attributes in wanted.items()
        if batch.results[index] is None
    }
    found, problems = lookup.people(batch.ctx, asked)
    for index, problem in problems.items():
        batch.fail(index, problem)
    return {index: profile for index, (_, profile) in found.items()}
