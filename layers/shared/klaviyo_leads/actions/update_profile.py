"""Update Profile: the chosen profile gets the lead's fields; fields it lacks stay as they are."""

from __future__ import annotations

from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.create.one import duplicate_profile_id
from klaviyo_leads.actions.profiles import (
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
    """PATCH the found profile; a new email or phone that another profile owns changes nothing."""
    profile_id = profile["id"]
    response = ctx.call(
        "PATCH",
        f"/api/profiles/{profile_id}",
        query=WITH_SUBSCRIPTIONS,
        body={"data": {"type": "profile", "id": profile_id, "attributes": attributes}},
        handled=(404, 409),
    )
    if response.status == 200:
        return success(resource(response))
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
