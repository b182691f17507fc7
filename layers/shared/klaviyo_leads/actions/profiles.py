"""Finding profiles and names in Klaviyo: the lookups several actions share."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from klaviyo_leads import outcomes
from klaviyo_leads.context import Context
from klaviyo_leads.klaviyo.client import Response, filter_value
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import unknown_target

WITH_SUBSCRIPTIONS = {"additional-fields[profile]": "subscriptions"}

# Klaviyo sits behind a CDN that refuses long request lines (a 414 page; about 16 KB is
# commonly cited, unconfirmed): every URL we build stays under 8 KB.
MAX_URL_BYTES = 8 * 1024
MAX_VALUES_PER_FILTER = 100

# Identifier -> (Klaviyo's filter field on /api/profiles, what the reason calls it).
SEARCH_FIELDS = {
    "email": ("email", "email address"),
    "phone_number": ("phone_number", "phone number"),
    "external_id": ("external_id", "external id"),
    "klaviyo_id": ("id", "Klaviyo Id"),
}


@dataclass(frozen=True)
class Group:
    """A list or segment as the actions use it."""

    id: str
    name: str | None
    opt_in_process: str | None = None  # lists: single_opt_in or double_opt_in


def klaviyo_list(ctx: Context, list_id: str) -> Group:
    return _group(ctx, "list", list_id, ("name", "opt_in_process"))


def segment(ctx: Context, segment_id: str) -> Group:
    return _group(ctx, "segment", segment_id, ("name",))


def _group(ctx: Context, kind: str, item_id: str, fields: tuple[str, ...]) -> Group:
    """A list's or segment's details, cached: an unknown one is a configuration error."""

    def fetch() -> Group:
        response = ctx.call(
            "GET",
            f"/api/{kind}s/{_path_id(item_id, kind)}",
            query={f"fields[{kind}]": ",".join(fields)},
            handled=(404,),
        )
        if response.status == 404:
            raise unknown_target(kind, 404, response.errors)
        attributes = (response.data or {}).get("attributes") or {}
        details = {name: attributes.get(name) for name in fields}
        return Group(item_id, **{k: v if isinstance(v, str) else None for k, v in details.items()})

    group: Group = ctx.names.get(kind, item_id, fetch)
    return group


def _path_id(value: str, kind: str) -> str:
    """Ids go into URL paths: refuse anything that is not a plain Klaviyo id."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):  # ASCII only: no full-width letters
        raise outcomes.INVALID_TARGET_ID(target=kind.title())
    return value


def search_value(ctx: Context, lead: Lead, identifier: str) -> str | None:
    """The lead's value for an identifier, normalised as Klaviyo stores it."""
    if identifier == "email":
        return lead.email()
    if identifier == "phone_number":
        return lead.phone(ctx.settings.default_phone_region)
    if identifier == "klaviyo_id":
        return lead.klaviyo_id()
    return lead.external_id()


def require_search_value(ctx: Context, lead: Lead) -> tuple[str, str]:
    """(identifier, value) for the lead, or a failure saying what is missing."""
    identifier = lead.identifier()
    value = search_value(ctx, lead, identifier)
    if value is None:
        if "klaviyo.identifier" not in lead:
            raise outcomes.NO_IDENTIFIER()
        raise outcomes.NO_SEARCH_VALUE(identifier=SEARCH_FIELDS[identifier][1])
    return identifier, value


def profile_reference(identifier: str, value: str) -> dict[str, Any]:
    """The profile resource a job or event names: its id, or the one identifier it has."""
    if identifier == "klaviyo_id":
        return {"type": "profile", "id": value, "attributes": {}}
    return {"type": "profile", "attributes": {identifier: value}}


def find_profile(ctx: Context, lead: Lead) -> dict[str, Any] | None:
    """The profile the lead identifies, chosen by profile handling when several match."""
    identifier, value = require_search_value(ctx, lead)
    if identifier == "klaviyo_id":
        return get_profile(ctx, value)
    matches = search_profiles(ctx, identifier, value, lead.profile_sort(), limit=1)
    return matches[0] if matches else None


def get_profile(ctx: Context, profile_id: str) -> dict[str, Any] | None:
    response = ctx.call(
        "GET",
        "/api/profiles/" + _path_id(profile_id, "profile"),
        query=WITH_SUBSCRIPTIONS,
        handled=(404,),
    )
    if response.status == 404:
        return None
    return resource(response)


def search_profiles(
    ctx: Context, identifier: str, value: str, sort: str, *, limit: int
) -> list[dict[str, Any]]:
    """Profiles whose identifier equals the value, in profile-handling order."""
    klaviyo_field = SEARCH_FIELDS[identifier][0]
    response = ctx.call(
        "GET",
        "/api/profiles",
        query={
            "filter": f"equals({klaviyo_field},{filter_value(value)})",
            "sort": sort,
            "page[size]": str(limit),
            **WITH_SUBSCRIPTIONS,
        },
    )
    return resources(response)


def resources(response: Response) -> list[dict[str, Any]]:
    data = response.data
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and "id" in item for item in data
    ):
        raise outcomes.unreadable_response(response.status)
    return data


def resource(response: Response) -> dict[str, Any]:
    data = response.data
    if not isinstance(data, dict) or "id" not in data:
        raise outcomes.unreadable_response(response.status)
    return data


def url_chunks(
    ctx: Context,
    path: str,
    values: list[str],
    query: Callable[[list[str]], Mapping[str, str]],
    limit: int = MAX_VALUES_PER_FILTER,
) -> list[list[str]]:
    """``values`` in chunks of at most ``limit`` whose URLs stay under ``MAX_URL_BYTES``.

    ``query(chunk)`` builds the query string that carries a chunk; each value costs its
    encoded length and an encoded comma, so the size is counted without building URLs.
    """
    base = len(ctx.client.url(path, query([])))
    chunks: list[list[str]] = []
    current: list[str] = []
    size = base
    for value in values:
        cost = len(quote_plus(filter_value(value))) + len(quote_plus(","))
        if current and (len(current) >= limit or size + cost > MAX_URL_BYTES):
            chunks.append(current)
            current, size = [], base
        current.append(value)
        size += cost
    if current:
        chunks.append(current)
    return chunks
