"""Request bodies for the bulk import, unsubscribe and event tests."""

from __future__ import annotations

from typing import Any

IMPORT_JOBS = "/api/profile-bulk-import-jobs"
UNSUBSCRIBE_JOBS = "/api/profile-subscription-bulk-delete-jobs"
EVENTS = "/api/events"
EVENT_JOBS = "/api/event-bulk-create-jobs"
EMAIL_OUT = {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}
SMS_OUT = {"sms": {"marketing": {"consent": "UNSUBSCRIBED"}}}


def profile(profile_id: str | None = None, **attributes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        item["id"] = profile_id
    return item


def import_job(*profiles: dict[str, Any], list_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": list(profiles)}},
    }
    if list_ids:
        data["relationships"] = {
            "lists": {"data": [{"type": "list", "id": list_id} for list_id in list_ids]}
        }
    return {"data": data}


def unsubscribe_job(*profiles: dict[str, Any], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": list(profiles)}},
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def leaving(subscriptions: dict[str, Any] = EMAIL_OUT, **attributes: Any) -> dict[str, Any]:
    """A profile of an unsubscribe job."""
    return {"type": "profile", "attributes": {**attributes, "subscriptions": subscriptions}}


def event_attributes(
    metric: str = "Lead Received",
    properties: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "properties": {"form": "Acme"} if properties is None else properties,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        **extra,
    }


def event(
    who: dict[str, Any] | None = None,
    profile_id: str | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """A create_event body; ``who`` are the profile's attributes."""
    person: dict[str, Any] = {
        "type": "profile",
        "attributes": {"email": "lead@example.com"} if who is None else who,
    }
    if profile_id is not None:
        person["id"] = profile_id
    return {
        "data": {
            "type": "event",
            "attributes": {**event_attributes(**attributes), "profile": {"data": person}},
        }
    }


def bulk_events(*entries: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    """A bulk_create_events body from (profile attributes, [event attributes]) pairs."""
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": {"type": "profile", "attributes": who}},
                                "events": {
                                    "data": [{"type": "event", "attributes": e} for e in events]
                                },
                            },
                        }
                        for who, events in entries
                    ]
                }
            },
        }
    }
