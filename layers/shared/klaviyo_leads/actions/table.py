"""The actions, each a small function of (context, lead): the product sheet's six and five more.

An action returns a ``Result`` on success and raises one when it stops early; ``run_action``
turns both into the lead's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.create.one import create_profile
from klaviyo_leads.actions.profiles import (
    find_profile,
    klaviyo_list,
    profile_reference,
    require_search_value,
    search_profiles,
    segment,
)
from klaviyo_leads.actions.subscribe.subscribe import subscribe_profile_to_list, unsubscribe_profile
from klaviyo_leads.actions.track_event import track_event
from klaviyo_leads.actions.update_profile import update_profile
from klaviyo_leads.actions.upsert_profile import upsert_profile
from klaviyo_leads.context import Context
from klaviyo_leads.lead import fields as fieldmap
from klaviyo_leads.lead.record import Lead, finite
from klaviyo_leads.outcomes import (
    Result,
    errors_field,
    from_klaviyo_answer,
    success,
    unknown_target,
)

logger = Logger(service="klaviyo-lead-actions")

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
            returns_profile=True,  # as read back after the job: its consent, its suppressions
            appends=("opt_in_process",),
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
        result = action.run(ctx, lead)
    except Result as stopped:
        result = stopped
    result.ignored_fields = ignored_fields(action, lead)
    return result


def ignored_fields(action: Action, lead: Lead) -> list[str]:
    """The lead's keys the action does not read. Track Event sends the lead's own keys as
    event properties, so there only unknown variables (``klaviyo.*``) are lost."""
    track = action.name == "track_event"
    return [k for k in lead.ignored if not track or k.startswith("klaviyo.")]


def result_fields(action: Action, result: Result) -> dict[str, Any]:
    """The appended fields of contract section 5, flat, ``None`` where absent."""
    fields: dict[str, Any] = {"outcome": result.outcome.value, "reason": result.reason}
    if action.returns_profile:
        fields.update(fieldmap.profile_fields(result.profile, result.list_name))
        for channel, state in (result.consent or {}).items():
            fields[f"{channel}_consent"] = state  # what the subscribe came to, channel by channel
    for name in action.appends:
        fields[name] = getattr(result, name)
    fields["message_id"] = result.message_id
    fields["ignored_fields"] = result.ignored_fields
    fields["errors"] = errors_field(result.errors)
    return finite(fields)  # JSON has no NaN: a non-finite number Klaviyo echoes becomes null
