"""The six actions of the product sheet, each a small function of (context, lead).

An action returns a ``Result`` on success and raises one when it stops early; ``run_action``
turns both into the lead's result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import fields as fieldmap
from . import outcomes
from .context import Context
from .klaviyo import Response, filter_value
from .lead import Lead
from .outcomes import (
    KlaviyoError,
    Result,
    errors_field,
    from_klaviyo_answer,
    success,
    unknown_target,
)
from .profiles import (
    WITH_SUBSCRIPTIONS,
    find_profile,
    get_profile,
    list_name,
    require_search_value,
    resource,
    resources,
    search_profiles,
    segment_name,
)

# Klaviyo's created time vs ours: allowed clock difference when judging a retried create.
CLOCK_SKEW_SECONDS = 30.0


# -- Create Profile ------------------------------------------------------------------------


def create_profile(ctx: Context, lead: Lead) -> Result:
    """Create a new profile in your Klaviyo account."""
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    if not any(attributes.get(k) for k in ("email", "phone_number", "external_id")):
        raise outcomes.NO_IDENTIFIER()
    # Since when a profile for this lead could be one we made: this attempt, or the lead's
    # first delivery when this is a redelivery.
    since = min(time.time(), ctx.first_seen_at or time.time())
    maybe_ours = ctx.redelivered
    if maybe_ours and not (attributes.get("email") or attributes.get("phone_number")):
        # Klaviyo would not stop a second profile for an external id: look first.
        ours = _created_since(ctx, attributes, since)
        if ours is not None:
            return success(ours)
    try:
        response = _post_profile(ctx, attributes)
    except Result as problem:
        if not problem.effect_unknown:
            raise
        # The create may have reached Klaviyo before its answer was lost. Look before
        # sending it again.
        ours = _created_since(ctx, attributes, since)
        if ours is not None:
            return success(ours)
        maybe_ours = True
        response = _post_profile(ctx, attributes)
    if response.status == 201:
        return success(resource(response))
    existing_id = _duplicate_profile_id(response.errors)
    if maybe_ours and existing_id:
        existing = get_profile(ctx, existing_id)
        if existing and _created_after(existing, since - CLOCK_SKEW_SECONDS):
            return success(existing)
    return outcomes.DUPLICATE_PROFILE(
        profile={"type": "profile", "id": existing_id} if existing_id else None,
        errors=response.errors,
        duplicate_profile_id=existing_id,
    )


def _post_profile(ctx: Context, attributes: dict[str, Any]) -> Response:
    return ctx.call(
        "POST",
        "/api/profiles",
        bucket="profiles",
        query=WITH_SUBSCRIPTIONS,
        body={"data": {"type": "profile", "attributes": attributes}},
        expect=(201,),
        handled=(409,),
        idempotent=False,
    )


def _created_since(ctx: Context, attributes: dict[str, Any], since: float) -> dict[str, Any] | None:
    """The profile an earlier attempt made, if Klaviyo has it: same identifier, born since."""
    for identifier in ("email", "phone_number", "external_id"):
        value = attributes.get(identifier)
        if value:
            newest = search_profiles(ctx, identifier, value, "-created", limit=1)
            if newest and _created_after(newest[0], since - CLOCK_SKEW_SECONDS):
                return newest[0]
            return None
    return None


def _duplicate_profile_id(errors: list[KlaviyoError]) -> str | None:
    for error in errors:
        value = error.meta.get("duplicate_profile_id")
        if isinstance(value, str) and value:
            return value
    return None


def _created_after(profile: dict[str, Any], timestamp: float) -> bool:
    created = fieldmap.read_path(profile, "attributes.created")
    try:
        return datetime.fromisoformat(str(created)).timestamp() >= timestamp
    except ValueError:
        return False


# -- Get Profiles --------------------------------------------------------------------------


def get_profiles(ctx: Context, lead: Lead) -> Result:
    """Identify if a profile exists in your Klaviyo account."""
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    return success(profile)


# -- Get Segment Profiles ------------------------------------------------------------------


def get_segment_profiles(ctx: Context, lead: Lead) -> Result:
    """Check if a profile is within a specific segment in your Klaviyo account."""
    segment_id = lead.segment_id()
    if segment_id is None:
        raise outcomes.SEGMENT_ID_MISSING()
    name = segment_name(ctx, segment_id)
    identifier, value = require_search_value(ctx, lead)

    if identifier == "external_id":
        # The segment endpoint cannot filter by external id: find the candidates first,
        # then ask which of them are members, and keep profile-handling order.
        candidates = search_profiles(ctx, identifier, value, lead.profile_sort(), limit=100)
        if not candidates:
            raise outcomes.NO_PROFILE()
        ids = [c["id"] for c in candidates]
        members = {m["id"]: m for m in _segment_members(ctx, segment_id, "profile_id", ids)}
        chosen = next((members[i] for i in ids if i in members), None)
    else:
        field_name = "profile_id" if identifier == "klaviyo_id" else identifier
        found = _segment_members(ctx, segment_id, field_name, [value])
        chosen = found[0] if found else None
    if chosen is None:
        raise outcomes.NOT_IN_SEGMENT()
    return success(chosen, list_name=name)


def _segment_members(
    ctx: Context, segment_id: str, field_name: str, values: list[str]
) -> list[dict[str, Any]]:
    quoted = [filter_value(v) for v in values]
    expression = (
        f"equals({field_name},{quoted[0]})"
        if len(quoted) == 1
        else f"any({field_name},[{','.join(quoted)}])"
    )
    response = ctx.call(
        "GET",
        f"/api/segments/{segment_id}/profiles",
        bucket="segment_profiles",
        query={"filter": expression, "page[size]": "100", **WITH_SUBSCRIPTIONS},
        handled=(404,),
    )
    if response.status == 404:
        raise unknown_target("segment", 404, response.errors)
    return resources(response)


# -- Update Profile ------------------------------------------------------------------------


def update_profile(ctx: Context, lead: Lead) -> Result:
    """Update a profile in your Klaviyo account; fields the lead lacks stay as they are."""
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    if not attributes:
        raise outcomes.NOTHING_TO_UPDATE(profile=profile)
    profile_id = profile["id"]
    response = ctx.call(
        "PATCH",
        f"/api/profiles/{profile_id}",
        bucket="profiles",
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
        duplicate_profile_id=_duplicate_profile_id(response.errors),
    )


# -- Add Profile to List -------------------------------------------------------------------


def add_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Add a profile to a specific list in your Klaviyo account."""
    list_id = lead.list_id()
    if list_id is None:
        raise outcomes.LIST_ID_MISSING()
    name = list_name(ctx, list_id)
    identifier, value = require_search_value(ctx, lead)
    ctx.client.check_pace("list_add", ctx.budget)
    if identifier == "klaviyo_id":
        profile_id = value  # Klaviyo checks it; no lookup needed
    else:
        profile = find_profile(ctx, lead)
        if profile is None:
            raise outcomes.NO_PROFILE()
        profile_id = profile["id"]
    response = ctx.call(
        "POST",
        f"/api/lists/{list_id}/relationships/profiles",
        bucket="list_add",
        body={"data": [{"type": "profile", "id": profile_id}]},
        expect=(204,),
        handled=(400, 404),
    )
    if response.status == 404:
        raise unknown_target("list", 404, response.errors)
    if response.status == 400:
        if any((e.pointer or "").startswith("/data/") for e in response.errors):
            raise outcomes.NO_PROFILE(errors=response.errors)
        raise from_klaviyo_answer(400, response.errors)
    return success(list_name=name)


# -- Subscribe Profile to List -------------------------------------------------------------

SUBSCRIBED = {"marketing": {"consent": "SUBSCRIBED"}}
_CHANNEL_NEEDS = {"email": ("email", "an email address"), "sms": ("phone_number", "a phone number")}


@dataclass
class Subscription:
    """One profile's part of a subscribe job, checked and ready to send."""

    attributes: dict[str, Any]
    profile_id: str | None
    list_id: str | None
    custom_source: str | None
    list_name: str | None = None

    def payload(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "profile", "attributes": self.attributes}
        if self.profile_id:
            item["id"] = self.profile_id
        return item


def prepare_subscription(ctx: Context, lead: Lead) -> Subscription:
    """Check the lead and work out channels and identifiers (may read the profile)."""
    list_id = lead.list_id()
    # An unknown list is a configuration error, said clearly before anything is sent.
    name = list_name(ctx, list_id) if list_id is not None else None
    wanted = lead.channels()
    custom_source = lead.custom_source()
    region = ctx.settings.default_phone_region
    known = {"email": lead.email(), "phone_number": lead.phone(region)}
    profile_id = None

    missing = [c for c in (wanted or ()) if not known[_CHANNEL_NEEDS[c][0]]]
    lacks_any = wanted is None and not any(known.values())
    if (missing or lacks_any) and ("klaviyo.id" in lead or lead.external_id()):
        profile = find_profile(ctx, lead)
        if profile is None:
            raise outcomes.NO_PROFILE()
        profile_id = profile["id"]
        stored = profile.get("attributes") or {}
        for attribute in known:
            known[attribute] = known[attribute] or stored.get(attribute)

    channels = wanted or tuple(c for c in _CHANNEL_NEEDS if known[_CHANNEL_NEEDS[c][0]])
    if not channels:
        raise outcomes.NOTHING_TO_SUBSCRIBE()
    for channel in channels:
        attribute, needs = _CHANNEL_NEEDS[channel]
        if not known[attribute]:
            raise outcomes.CHANNEL_NEEDS(channel=channel, needs=needs)

    attributes: dict[str, Any] = {"subscriptions": {c: SUBSCRIBED for c in channels}}
    if known["email"]:
        attributes["email"] = known["email"]
    if "sms" in channels:
        attributes["phone_number"] = known["phone_number"]
    return Subscription(attributes, profile_id, list_id, custom_source, name)


def subscribe_job(subscriptions: list[Subscription]) -> dict[str, Any]:
    """One bulk-subscribe job for profiles that share a list and custom source."""
    first = subscriptions[0]
    attributes: dict[str, Any] = {
        "profiles": {"data": [s.payload() for s in subscriptions]},
        "historical_import": False,
    }
    if first.custom_source:
        attributes["custom_source"] = first.custom_source
    job: dict[str, Any] = {"type": "profile-subscription-bulk-create-job", "attributes": attributes}
    if first.list_id:
        job["relationships"] = {"list": {"data": {"type": "list", "id": first.list_id}}}
    return {"data": job}


def subscribe_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Subscribe a profile to email and/or SMS marketing, optionally through a list."""
    subscription = prepare_subscription(ctx, lead)
    response = ctx.call(
        "POST",
        "/api/profile-subscription-bulk-create-jobs",
        bucket="subscribe",
        body=subscribe_job([subscription]),
        expect=(202,),
        handled=(400,),
    )
    if response.status == 400:
        if subscription.list_id and any(
            "list" in (e.detail or "").lower() or "list" in (e.pointer or "")
            for e in response.errors
        ):
            raise unknown_target("list", 400, response.errors)
        raise from_klaviyo_answer(400, response.errors)
    return success(list_name=subscription.list_name)


# -- The table of actions --------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    name: str
    seed_name: str
    route: str
    run: Callable[[Context, Lead], Result]
    returns_profile: bool
    uses_list: bool = False


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "add_profile_to_list",
            "Add Profile to List",
            "/add-profile-to-list",
            add_profile_to_list,
            returns_profile=False,
            uses_list=True,
        ),
        Action(
            "create_profile",
            "Create Profile",
            "/create-profile",
            create_profile,
            returns_profile=True,
        ),
        Action("get_profiles", "Get Profiles", "/get-profiles", get_profiles, returns_profile=True),
        Action(
            "get_segment_profiles",
            "Get Segment Profiles",
            "/get-segment-profiles",
            get_segment_profiles,
            returns_profile=True,
        ),
        Action(
            "update_profile",
            "Update Profile",
            "/update-profile",
            update_profile,
            returns_profile=True,
        ),
        Action(
            "subscribe_profile_to_list",
            "Subscribe Profile to List",
            "/subscribe-profile-to-list",
            subscribe_profile_to_list,
            returns_profile=False,
            uses_list=True,
        ),
    )
}


def run_action(action: Action, ctx: Context, lead: Lead) -> Result:
    try:
        return action.run(ctx, lead)
    except Result as stopped:
        return stopped


def result_fields(action: Action, result: Result) -> dict[str, Any]:
    """The appended fields of contract section 5, flat, ``None`` where absent."""
    fields: dict[str, Any] = {"outcome": result.outcome.value, "reason": result.reason}
    if action.returns_profile:
        fields.update(fieldmap.profile_fields(result.profile, result.list_name))
        fields["duplicate_profile_id"] = result.duplicate_profile_id
    elif action.uses_list:
        fields["list_name"] = result.list_name
    fields["errors"] = errors_field(result.errors)
    return fields
