"""Update Profile: the chosen profile gets the lead's fields; fields it lacks stay as they are."""

from __future__ import annotations

from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import imports
from klaviyo_leads.actions.action import Batch
from klaviyo_leads.actions.batch import (
    BULK_IMPORT_MIN_LEADS,
    IDENTITY_ATTRIBUTES,
    Member,
    find_all,
    import_items,
)
from klaviyo_leads.actions.create.adding import hold_added
from klaviyo_leads.actions.create.one import duplicate_profile_id
from klaviyo_leads.actions.lookup import (
    WITH_SUBSCRIPTIONS,
    find_profile,
    require_search_value,
    resource,
)
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, success


def update_profile(ctx: Context, lead: Lead) -> Result:
    """Update a profile in your Klaviyo account; fields the lead lacks stay as they are."""
    attributes = changes(ctx, lead)
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    return patch(ctx, profile, attributes)


def patch(ctx: Context, profile: dict[str, Any], attributes: dict[str, Any]) -> Result:
    """PATCH the found profile; a new email or phone that another profile owns changes nothing.
    What the PATCH adds is held in the create ledger while it goes out (``create.adding``)."""
    profile_id = profile["id"]
    hold = hold_added(ctx, profile, attributes)
    try:
        response = ctx.call(
            "PATCH",
            f"/api/profiles/{profile_id}",
            query=WITH_SUBSCRIPTIONS,
            body={"data": {"type": "profile", "id": profile_id, "attributes": attributes}},
            handled=(404, 409),
            before_send=hold.renew if hold else None,
        )
    except BaseException as problem:
        if hold is None:
            raise
        raise hold.failed(problem) from None
    if response.status == 200:
        if hold is not None:
            hold.took(profile_id)
        return success(resource(response))
    if hold is not None:
        hold.refused()
    if response.status == 404:
        raise outcomes.NO_PROFILE(errors=response.errors)
    current = profile.get("attributes") or {}
    changed = [
        label
        for attribute, label in (("email", "email"), ("phone_number", "phone number"))
        if attributes.get(attribute) and attributes.get(attribute) != current.get(attribute)
    ]
    raise outcomes.IDENTIFIER_TAKEN(
        identifiers=" or ".join(changed) or "email or phone number",
        profile=profile,
        errors=response.errors,
        duplicate_profile_id=duplicate_profile_id(response.errors),
    )


def changes(ctx: Context, lead: Lead) -> dict[str, Any]:
    """The lead's attributes, less the identifier that finds the profile: it changes nothing.

    A lead with nothing else is a failure before any call.
    """
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    identifier, value = require_search_value(ctx, lead)
    attribute = {"email": "email", "phone_number": "phone_number", "external_id": "external_id"}
    if attributes.get(attribute.get(identifier, "")) == value:
        del attributes[attribute[identifier]]
    if not attributes:
        raise outcomes.NOTHING_TO_UPDATE()
    return attributes


# -- A batch ------------------------------------------------------------------------------------


def update_profile_batch(batch: Batch) -> None:
    """Find the profiles in bulk, then one import job for their changes.

    A change of email or phone goes one lead at a time: Klaviyo refuses it when another
    profile owns the value, and the PATCH says which one. So does a second lead for a
    profile already in the job (applied after it, as one lead after another would be).
    """
    ctx = batch.ctx
    members: list[Member] = []
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = changes(ctx, lead)
            members.append(Member.of(ctx, index, lead))
        except Result as problem:
            batch.fail(index, problem)
    if len(members) < BULK_IMPORT_MIN_LEADS:
        for member in members:
            batch.one_by_one(member.index)
        return
    found = find_all(batch, members)
    items: list[dict[str, Any]] = []
    served: list[int] = []
    in_the_job: set[str] = set()
    later: list[tuple[int, dict[str, Any]]] = []
    for index, profile in found.items():
        change = _changed(wanted[index], profile)
        item = {"type": "profile", "id": profile["id"], "attributes": change}
        if not change:
            batch.results[index] = success(profile)  # it already holds what the lead says
            continue
        identity_change = any(name in change for name in IDENTITY_ATTRIBUTES)
        if identity_change or profile["id"] in in_the_job or not imports.fits(item):
            later.append((index, profile))
            continue
        items.append(item)
        served.append(index)
        in_the_job.add(profile["id"])
    import_items(batch, items, served, lambda index, profile: success(profile), repeatable=True)
    for index, profile in later:
        try:
            # The lead's own context: a PATCH that adds an identifier records it under the
            # lead's origin, the same on its redelivery.
            batch.results[index] = patch(batch.lead_ctx(index), profile, wanted[index])
        except Result as problem:
            batch.fail(index, problem)


def _changed(wanted: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The attributes whose value differs from what the profile holds (objects key by key)."""
    current = profile.get("attributes") or {}
    changed: dict[str, Any] = {}
    for name, value in wanted.items():
        if isinstance(value, dict):
            held = current.get(name)
            held = held if isinstance(held, dict) else {}
            inner = {k: v for k, v in value.items() if held.get(k) != v}
            if inner:
                changed[name] = inner
        elif current.get(name) != value:
            changed[name] = value
    return changed
