"""The action table: every action the bundle serves, and the only registry the code reads.

Each action is a module of this folder (or a folder, for Create and Subscribe) with its
one-lead path (``run``: a function of (context, lead)) and, where Klaviyo has a bulk call for
it, its batch path (``run_batch``: a function of a ``Batch``) side by side. Adding an action is
a module and a row here (docs/architecture.md has the whole checklist).
"""

from __future__ import annotations

from typing import Any

from klaviyo_leads.actions.action import Action
from klaviyo_leads.actions.create.batch import create_profile_batch
from klaviyo_leads.actions.create.one import create_profile
from klaviyo_leads.actions.delete_profile import delete_profile
from klaviyo_leads.actions.get_profiles import get_profiles, get_profiles_batch
from klaviyo_leads.actions.get_segment_profiles import (
    get_segment_profiles,
    get_segment_profiles_batch,
)
from klaviyo_leads.actions.lists import (
    add_profile_to_list,
    add_profile_to_list_batch,
    remove_profile_from_list,
    remove_profile_from_list_batch,
)
from klaviyo_leads.actions.subscribe.subscribe import (
    subscribe_profile_to_list,
    subscribe_profile_to_list_batch,
)
from klaviyo_leads.actions.subscribe.unsubscribe import (
    unsubscribe_profile,
    unsubscribe_profile_batch,
)
from klaviyo_leads.actions.track_event import track_event, track_event_batch
from klaviyo_leads.actions.update_profile import update_profile, update_profile_batch
from klaviyo_leads.actions.upsert_profile import upsert_profile, upsert_profile_batch

_PROFILE: dict[str, Any] = {"returns_profile": True, "appends": ("duplicate_profile_id",)}

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "add_profile_to_list",
            "Add Profile to List",
            "/add-profile-to-list",
            add_profile_to_list,
            add_profile_to_list_batch,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action(
            "create_profile",
            "Create Profile",
            "/create-profile",
            create_profile,
            create_profile_batch,
            **_PROFILE,
        ),
        Action(
            "get_profiles",
            "Get Profiles",
            "/get-profiles",
            get_profiles,
            get_profiles_batch,
            **_PROFILE,
        ),
        Action(
            "get_segment_profiles",
            "Get Segment Profiles",
            "/get-segment-profiles",
            get_segment_profiles,
            get_segment_profiles_batch,
            **_PROFILE,
        ),
        Action(
            "update_profile",
            "Update Profile",
            "/update-profile",
            update_profile,
            update_profile_batch,
            **_PROFILE,
        ),
        Action(
            "subscribe_profile_to_list",
            "Subscribe Profile to List",
            "/subscribe-profile-to-list",
            subscribe_profile_to_list,
            subscribe_profile_to_list_batch,
            returns_profile=True,  # as read back after the job: its consent, its suppressions
            appends=("opt_in_process",),
        ),
        Action(
            "unsubscribe_profile",
            "Unsubscribe Profile",
            "/unsubscribe-profile",
            unsubscribe_profile,
            unsubscribe_profile_batch,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action(
            "remove_profile_from_list",
            "Remove Profile from List",
            "/remove-profile-from-list",
            remove_profile_from_list,
            remove_profile_from_list_batch,
            returns_profile=False,
            appends=("list_name",),
        ),
        Action(
            "upsert_profile",
            "Upsert Profile",
            "/upsert-profile",
            upsert_profile,
            upsert_profile_batch,
            returns_profile=True,
            appends=("duplicate_profile_id", "created"),
        ),
        Action(
            "track_event",
            "Track Event",
            "/track-event",
            track_event,
            track_event_batch,
            returns_profile=False,
            keeps_lead_keys=True,  # the lead's keys are the event's properties
        ),
        # A deletion request is one profile's: Klaviyo has no bulk call for it.
        Action(
            "delete_profile",
            "Delete Profile",
            "/delete-profile",
            delete_profile,
            None,
            returns_profile=False,
        ),
    )
}
