"""The actions, each a small function of (context, lead): the product sheet's six and five more.

An action returns a ``Result`` on success and raises one when it stops early; ``run_action``
turns both into the lead's result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from . import fields as fieldmap
from . import lookup, outcomes
from .context import Context
from .events import track_event
from .klaviyo import CLOCK_SKEW_SECONDS, Response
from .lead import Lead
from .outcomes import (
    KlaviyoError,
    Outcome,
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
    klaviyo_list,
    profile_reference,
    require_search_value,
    resource,
    search_profiles,
    segment,
)
from .subscribe import subscribe_profile_to_list, unsubscribe_profile

logger = Logger(service="klaviyo-lead-actions")

# How long Klaviyo's profile search may lag behind a create. Not documented: an assumption,
# generous for an index that is near real time. Until then a search that finds nothing
# cannot prove that a create whose answer was lost did not happen.
SEARCH_SETTLE_SECONDS = 10.0


# -- Create Profile ------------------------------------------------------------------------


# How soon a create that found another request creating the same external id tries again.
CLAIM_RETRY_SECONDS = 2.0


def create_profile(ctx: Context, lead: Lead) -> Result:
    """Create a new profile in your Klaviyo account."""
    attributes = new_profile(ctx, lead)
    if ctx.claims is None or klaviyo_refuses_duplicates(attributes):
        return _create_profile(ctx, attributes)
    return _create_claimed(ctx, attributes)


def _create_claimed(ctx: Context, attributes: dict[str, Any]) -> Result:
    """A create by external id alone, under the fleet-wide claim of that id (``claims``)."""
    assert ctx.claims is not None
    external_id = str(attributes["external_id"])
    owner = ctx.origin_id or str(uuid.uuid4())
    try:
        standing = ctx.claims.claim(
            external_id, owner, ctx.budget.remaining() + SEARCH_SETTLE_SECONDS
        )
    except Exception:  # the table is out of reach: the search below is the guard left
        logger.warning("Could not claim an external id before creating its profile")
        return _create_profile(ctx, attributes)
    if standing is not None:
        if standing.profile_id:
            return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, standing.profile_id)
        raise outcomes.CREATE_IN_PROGRESS(retry_after=CLAIM_RETRY_SECONDS)
    try:
        result = _create_profile(ctx, attributes)
    except Result as problem:
        if not problem.effect_unknown and not problem.retryable:
            _settle_claim(ctx, external_id, owner, None)
        raise  # a retryable one may have created it: the claim stands until it expires
    created = result.outcome is Outcome.SUCCESS and (result.profile or {}).get("id")
    _settle_claim(ctx, external_id, owner, str(created) if created else None)
    return result


def _settle_claim(ctx: Context, external_id: str, owner: str, profile_id: str | None) -> None:
    assert ctx.claims is not None
    try:
        if profile_id:
            ctx.claims.created(external_id, owner, profile_id, SEARCH_SETTLE_SECONDS)
        else:
            ctx.claims.release(external_id, owner)
    except Exception:  # it expires by itself
        logger.warning("Could not settle an external id's claim")


def _create_profile(ctx: Context, attributes: dict[str, Any]) -> Result:
    # Since when a profile for this lead could be one we made: this attempt, or the lead's
    # first delivery when this is a redelivery.
    since = min(time.time(), ctx.first_seen_at or time.time())
    maybe_ours = ctx.redelivered
    if not klaviyo_refuses_duplicates(attributes):
        # Klaviyo would make a second profile for an external id: look for it first.
        existing = _created_since(ctx, attributes, 0.0)
        if existing is not None:
            if maybe_ours and created_after(existing, since - CLOCK_SKEW_SECONDS):
                return success(existing)
            return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, existing["id"])
    try:
        sent_at = time.time()
        response = _post_profile(ctx, attributes)
    except Result as problem:
        if not problem.effect_unknown:
            raise
        # The create may have reached Klaviyo before its answer was lost. Look before
        # sending it again.
        ours = _created_since(ctx, attributes, since)
        if ours is None and not klaviyo_refuses_duplicates(attributes):
            # Nothing would stop a second profile: the search must have caught up first.
            ours = _created_since_once_settled(ctx, attributes, since, sent_at)
        if ours is not None:
            return success(ours)
        maybe_ours = True
        response = _post_profile(ctx, attributes)
    if response.status == 201:
        return success(resource(response))
    existing_id = _duplicate_profile_id(response.errors)
    if maybe_ours and existing_id:
        existing = get_profile(ctx, existing_id)
        if existing and created_after(existing, since - CLOCK_SKEW_SECONDS):
            return success(existing)
    return duplicate(outcomes.DUPLICATE_PROFILE, existing_id, response.errors)


def duplicate(
    reason: outcomes.Reason, existing_id: str | None, errors: list[KlaviyoError] | None = None
) -> Result:
    """Create's failure for a profile that exists: its id in ``id`` and in the duplicate field."""
    return reason(
        profile={"type": "profile", "id": existing_id} if existing_id else None,
        errors=errors or [],
        duplicate_profile_id=existing_id,
    )


def new_profile(ctx: Context, lead: Lead) -> dict[str, Any]:
    """The attributes of the profile to create; at least one identifier."""
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    if not any(attributes.get(k) for k in ("email", "phone_number", "external_id")):
        raise outcomes.NO_IDENTIFIER()
    return attributes


def klaviyo_refuses_duplicates(attributes: dict[str, Any]) -> bool:
    """Klaviyo answers 409 for an email or phone it knows; an external id can repeat."""
    return bool(attributes.get("email") or attributes.get("phone_number"))


def _created_since_once_settled(
    ctx: Context, attributes: dict[str, Any], since: float, sent_at: float
) -> dict[str, Any] | None:
    """Wait until the search can be trusted, then look again; too long a wait goes back."""
    wait = sent_at + SEARCH_SETTLE_SECONDS - time.time()
    if wait > 0:
        if wait + 1.0 > ctx.budget.remaining():
            raise outcomes.CREATE_UNCONFIRMED()
        ctx.client.sleep(wait)
    return _created_since(ctx, attributes, since)


def _post_profile(ctx: Context, attributes: dict[str, Any]) -> Response:
    try:
        return ctx.call(
            "POST",
            "/api/profiles",
            query=WITH_SUBSCRIPTIONS,
            body={"data": {"type": "profile", "attributes": attributes}},
            expect=(201,),
            handled=(409,),
            idempotent=False,
        )
    except Result as problem:
        raise _phone_only_refused(attributes, problem) from None


def _created_since(ctx: Context, attributes: dict[str, Any], since: float) -> dict[str, Any] | None:
    """The profile an earlier attempt made, if Klaviyo has it: same identifier, born since."""
    for identifier in ("email", "phone_number", "external_id"):
        value = attributes.get(identifier)
        if value:
            newest = search_profiles(ctx, identifier, value, "-created", limit=1)
            if newest and created_after(newest[0], since - CLOCK_SKEW_SECONDS):
                return newest[0]
            return None
    return None


def _duplicate_profile_id(errors: list[KlaviyoError]) -> str | None:
    for error in errors:
        value = error.meta.get("duplicate_profile_id")
        if isinstance(value, str) and value:
            return value
    return None


def created_after(profile: dict[str, Any], timestamp: float) -> bool:
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
    group = segment(ctx, segment_id)
    identifier, value = require_search_value(ctx, lead)

    if identifier == "external_id":
        # The segment endpoint cannot filter by external id: find the candidates first,
        # then ask which of them are members, and keep profile-handling order.
        candidates = search_profiles(ctx, identifier, value, lead.profile_sort(), limit=100)
        if not candidates:
            raise outcomes.NO_PROFILE()
        ids = [c["id"] for c in candidates]
        members = {m["id"]: m for m in lookup.segment_members(ctx, segment_id, "profile_id", ids)}
        chosen = next((members[i] for i in ids if i in members), None)
    else:
        field_name = "profile_id" if identifier == "klaviyo_id" else identifier
        found = lookup.segment_members(ctx, segment_id, field_name, [value])
        chosen = found[0] if found else None
    if chosen is None:
        raise outcomes.NOT_IN_SEGMENT()
    return success(chosen, list_name=group.name)


# -- Update Profile ------------------------------------------------------------------------


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
        duplicate_profile_id=_duplicate_profile_id(response.errors),
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


# -- Add Profile to List -------------------------------------------------------------------


def add_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Add a profile to a specific list in your Klaviyo account."""
    list_id = lead.list_id()
    if list_id is None:
        raise outcomes.LIST_ID_MISSING()
    group = klaviyo_list(ctx, list_id)
    ctx.client.check_pace("add_profiles_to_list", ctx.budget)
    # Found first even by Klaviyo Id: how Klaviyo answers a list add of an unknown id is not
    # documented (a 400, a 404 like an unknown list, or a 204 that adds nothing).
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    _change_membership(ctx, "POST", list_id, profile["id"])
    return success(list_name=group.name)


def _change_membership(ctx: Context, method: str, list_id: str, profile_id: str) -> None:
    """Add (POST) or remove (DELETE) one profile; a 400 that points at it: no such profile."""
    response = ctx.call(
        method,
        f"/api/lists/{list_id}/relationships/profiles",
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


def remove_profile_from_list(ctx: Context, lead: Lead) -> Result:
    """Remove a profile from a list. Its consent stays as it was: this is not an unsubscribe."""
    list_id = lead.list_id()
    if list_id is None:
        raise outcomes.LIST_ID_MISSING()
    group = klaviyo_list(ctx, list_id)
    ctx.client.check_pace("remove_profiles_from_list", ctx.budget)
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    membership = lookup.list_members(ctx, list_id, [profile])
    if profile["id"] in membership.problems:
        raise membership.problems[profile["id"]]
    if profile["id"] not in membership.members:
        return outcomes.NOT_IN_LIST(list_name=group.name)
    _change_membership(ctx, "DELETE", list_id, profile["id"])
    return success(list_name=group.name)


# -- Upsert Profile ------------------------------------------------------------------------


def upsert_profile(ctx: Context, lead: Lead) -> Result:
    """Create the profile, or update the one Klaviyo matches, in one call."""
    attributes = new_profile(ctx, lead)
    try:
        response = ctx.call(
            "POST",
            "/api/profile-import",
            query=WITH_SUBSCRIPTIONS,
            body={"data": {"type": "profile", "attributes": attributes}},
            expect=(200, 201),
            handled=(409,),
        )
    except Result as problem:
        raise _phone_only_refused(attributes, problem) from None
    if response.status == 409:
        existing_id = _duplicate_profile_id(response.errors)
        raise outcomes.IDENTITIES_SPLIT(
            errors=response.errors,
            duplicate_profile_id=existing_id,
            profile={"type": "profile", "id": existing_id} if existing_id else None,
        )
    return success(resource(response), created=response.status == 201)


def _phone_only_refused(attributes: dict[str, Any], problem: Result) -> Result:
    """A phone alone is an identifier only in accounts with SMS set up: say so."""
    phone_only = set(attributes) & {"email", "phone_number", "external_id"} == {"phone_number"}
    if phone_only and problem.reason == outcomes.NO_IDENTIFIER.text:
        return outcomes.PHONE_ONLY_REFUSED(errors=problem.errors, klaviyo_status=400)
    return problem


# -- Delete Profile ------------------------------------------------------------------------

# What a data-privacy deletion job takes: one of these, and only one.
_DELETABLE_BY = {"email": "email", "phone_number": "phone_number", "klaviyo_id": "id"}


def delete_profile(ctx: Context, lead: Lead) -> Result:
    """Request the deletion of a profile and its data (Klaviyo does it asynchronously)."""
    if not ctx.settings.profile_deletion_enabled:
        raise outcomes.DELETION_OFF()
    identifier, value = deletion_identifier(ctx, lead)
    profile = profile_reference(identifier, value)
    ctx.call(
        "POST",
        "/api/data-privacy-deletion-jobs",
        body={
            "data": {
                "type": "data-privacy-deletion-job",
                "attributes": {"profile": {"data": profile}},
            }
        },
        expect=(202,),
    )
    return outcomes.DELETION_REQUESTED()


def deletion_identifier(ctx: Context, lead: Lead) -> tuple[str, str]:
    """The one identifier to delete by: the configured one, else the only one the lead has."""
    if "klaviyo.identifier" in lead:
        identifier, value = require_search_value(ctx, lead)
        if identifier not in _DELETABLE_BY:
            raise outcomes.NOT_DELETABLE_BY(identifier="external id")
        return identifier, value
    present = [
        name
        for name, key in (
            ("klaviyo_id", "klaviyo.id"),
            ("email", "email"),
            ("phone_number", "phone_1"),
        )
        if key in lead
    ]
    if len(present) > 1:
        raise outcomes.ONE_IDENTIFIER_ONLY()
    if not present:
        if lead.external_id():
            raise outcomes.NOT_DELETABLE_BY(identifier="external id")
        raise outcomes.NO_IDENTIFIER()
    return require_search_value(ctx, lead)


# -- The table of actions --------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    name: str
    seed_name: str
    route: str
    run: Callable[[Context, Lead], Result]
    returns_profile: bool
    # Result attributes appended beyond outcome, reason, errors and the profile fields.
    appends: tuple[str, ...] = ()


_PROFILE: dict[str, Any] = {"returns_profile": True, "appends": ("duplicate_profile_id",)}

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "add_profile_to_list",
            "Add Profile to List",
            "/add-profile-to-list",
            add_profile_to_list,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action("create_profile", "Create Profile", "/create-profile", create_profile, **_PROFILE),
        Action("get_profiles", "Get Profiles", "/get-profiles", get_profiles, **_PROFILE),
        Action(
            "get_segment_profiles",
            "Get Segment Profiles",
            "/get-segment-profiles",
            get_segment_profiles,
            **_PROFILE,
        ),
        Action("update_profile", "Update Profile", "/update-profile", update_profile, **_PROFILE),
        Action(
            "subscribe_profile_to_list",
            "Subscribe Profile to List",
            "/subscribe-profile-to-list",
            subscribe_profile_to_list,
            returns_profile=False,
            appends=("list_name", "opt_in_process"),
        ),
        Action(
            "unsubscribe_profile",
            "Unsubscribe Profile",
            "/unsubscribe-profile",
            unsubscribe_profile,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action(
            "remove_profile_from_list",
            "Remove Profile from List",
            "/remove-profile-from-list",
            remove_profile_from_list,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action(
            "upsert_profile",
            "Upsert Profile",
            "/upsert-profile",
            upsert_profile,
            returns_profile=True,
            appends=("duplicate_profile_id", "created"),
        ),
        Action("track_event", "Track Event", "/track-event", track_event, returns_profile=False),
        Action(
            "delete_profile",
            "Delete Profile",
            "/delete-profile",
            delete_profile,
            returns_profile=False,
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
    for name in action.appends:
        fields[name] = getattr(result, name)
    fields["message_id"] = result.message_id
    fields["errors"] = errors_field(result.errors)
    return fields
