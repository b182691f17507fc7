"""JSON:API resource objects, shaped like the 2026-07-15 response schemas."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .model import KlaviyoList, Profile, Segment, iso

PREDICTIVE_FIELDS = (
    "historic_clv",
    "predicted_clv",
    "total_clv",
    "historic_number_of_orders",
    "predicted_number_of_orders",
    "average_days_between_orders",
    "average_order_value",
    "churn_probability",
    "expected_date_of_next_order",
)


def relationship(base_url: str, kind: str, resource_id: str, name: str) -> dict[str, Any]:
    return {
        "links": {
            "self": f"{base_url}/api/{kind}/{resource_id}/relationships/{name}/",
            "related": f"{base_url}/api/{kind}/{resource_id}/{name}/",
        }
    }


def sparse(attributes: dict[str, Any], fields: Iterable[str] | None) -> dict[str, Any]:
    """Apply a sparse fieldset (``fields[profile]=email,location.city``): top-level names
    and dotted paths into nested objects."""
    if fields is None:
        return attributes
    out: dict[str, Any] = {}
    for name in fields:
        head, _, rest = name.partition(".")
        if head not in attributes:
            continue
        value = attributes[head]
        if rest and isinstance(value, dict):
            holder = out.setdefault(head, {})
            if isinstance(holder, dict):
                _copy_path(value, rest.split("."), holder)
        else:
            out[head] = value
    return out


def _copy_path(source: dict[str, Any], path: list[str], target: dict[str, Any]) -> None:
    key = path[0]
    if key not in source:
        return
    if len(path) == 1 or not isinstance(source[key], dict):
        target[key] = source[key]
        return
    _copy_path(source[key], path[1:], target.setdefault(key, {}))


def profile_resource(
    profile: Profile,
    base_url: str,
    *,
    subscriptions: bool = False,
    predictive: bool = False,
    fields: Iterable[str] | None = None,
    joined_group_at: datetime | None = None,
    relationship_data: dict[str, list[dict[str, str]]] | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(profile.attributes)
    attributes.update(
        created=iso(profile.created),
        updated=iso(profile.updated),
        last_event_date=iso(profile.last_event_date),
        location=dict(profile.location),
        properties=copy.deepcopy(profile.properties),
    )
    if subscriptions:
        attributes["subscriptions"] = copy.deepcopy(profile.subscriptions)
    if predictive:
        attributes["predictive_analytics"] = dict.fromkeys(PREDICTIVE_FIELDS)
    if joined_group_at is not None:
        attributes["joined_group_at"] = iso(joined_group_at)
    attributes = sparse(attributes, fields)
    relationships = {
        name: relationship(base_url, "profiles", profile.id, name) for name in ("lists", "segments")
    }
    for name, data in (relationship_data or {}).items():
        relationships.setdefault(name, relationship(base_url, "profiles", profile.id, name))
        relationships[name]["data"] = data
    return {
        "type": "profile",
        "id": profile.id,
        "attributes": attributes,
        "relationships": relationships,
        "links": {"self": f"{base_url}/api/profiles/{profile.id}/"},
    }


def list_resource(
    klaviyo_list: KlaviyoList,
    base_url: str,
    *,
    profile_count: bool = False,
    fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "name": klaviyo_list.name,
        "created": iso(klaviyo_list.created),
        "updated": iso(klaviyo_list.updated),
        "opt_in_process": f"{klaviyo_list.opt_in}_opt_in",
    }
    if profile_count:
        attributes["profile_count"] = len(klaviyo_list.members)
    return {
        "type": "list",
        "id": klaviyo_list.id,
        "attributes": sparse(attributes, fields),
        "relationships": {
            name: relationship(base_url, "lists", klaviyo_list.id, name)
            for name in ("profiles", "tags", "flow-triggers")
        },
        "links": {"self": f"{base_url}/api/lists/{klaviyo_list.id}/"},
    }


def segment_resource(
    segment: Segment,
    base_url: str,
    *,
    profile_count: bool = False,
    fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "name": segment.name,
        "definition": None,
        "created": iso(segment.created),
        "updated": iso(segment.updated),
        "is_active": segment.is_active,
        "is_processing": segment.is_processing,
        "is_starred": segment.is_starred,
    }
    if profile_count:
        attributes["profile_count"] = len(segment.members)
    return {
        "type": "segment",
        "id": segment.id,
        "attributes": sparse(attributes, fields),
        "relationships": {
            name: relationship(base_url, "segments", segment.id, name)
            for name in ("profiles", "tags", "flow-triggers")
        },
        "links": {"self": f"{base_url}/api/segments/{segment.id}/"},
    }


def identifier(kind: str, resource_id: str) -> dict[str, str]:
    return {"type": kind, "id": resource_id}
