"""Finding profiles, lists and segments in Klaviyo: one lead's profile, or many at once.

One lead's lookups (``find_profile``, ``klaviyo_list``) and the batch's (``search``: one
``any()`` search serves up to 100 identifiers) share the search fields, the filter syntax and
the URL limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from klaviyo_leads import outcomes
from klaviyo_leads.context import Context
from klaviyo_leads.klaviyo.client import Response, filter_value
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Outcome, Result, unknown_target

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
            f"/api/{kind}s/{path_id(item_id, kind)}",
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


def path_id(value: str, kind: str) -> str:
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
        "/api/profiles/" + path_id(profile_id, "profile"),
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


# -- Many at once ------------------------------------------------------------------------------

PATH = "/api/profiles"
IDENTITY_FIELDS = "email,phone_number,external_id"


def key(identifier: str, value: str) -> str:
    """How Klaviyo compares identifier values: emails without regard to case."""
    return value.lower() if identifier == "email" else value


@dataclass
class Found:
    """Profiles per searched value, in profile-handling order; why a value's search failed."""

    matches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: dict[str, Result] = field(default_factory=dict)

    def first(self, value_key: str) -> dict[str, Any] | None:
        found = self.matches.get(value_key)
        return found[0] if found else None


def search(
    ctx: Context, identifier: str, sort: str, values: Iterable[str], *, full: bool = True
) -> Found:
    """Every profile matching each value; ``full`` reads consent too, else only the field."""
    found = Found()
    wanted = list(dict.fromkeys(key(identifier, v) for v in values))
    query = search_query(identifier, sort, full)
    for chunk in url_chunks(ctx, PATH, wanted, query):
        _search_chunk(ctx, identifier, chunk, query, found)
    return found


def people(
    ctx: Context, wanted: dict[int, dict[str, str]]
) -> tuple[dict[int, tuple[str, dict[str, Any]]], dict[int, Result]]:
    """The profile Klaviyo holds for each lead (its identifiers by name): by its email, else
    its phone number, else its external id, each kind in as few searches as allowed. Also the
    leads whose search Klaviyo refused, with why."""
    found: dict[int, tuple[str, dict[str, Any]]] = {}
    problems: dict[int, Result] = {}
    for name in ("email", "phone_number", "external_id"):
        asked = {
            index: values[name]
            for index, values in wanted.items()
            if values.get(name) and index not in found and index not in problems
        }
        if not asked:
            continue
        searched = search(ctx, name, "-created", asked.values())
        for index, value in asked.items():
            value_key = key(name, value)
            if value_key in searched.problems:
                problems[index] = searched.problems[value_key]
            elif (profile := searched.first(value_key)) is not None:
                found[index] = (name, profile)
    return found, problems


def search_query(identifier: str, sort: str, full: bool) -> Callable[[list[str]], dict[str, str]]:
    field_name = SEARCH_FIELDS[identifier][0]

    def query(values: list[str]) -> dict[str, str]:
        quoted = ",".join(filter_value(v) for v in values)
        # Without consent, the identifiers are enough (a list membership is asked by them).
        extra = WITH_SUBSCRIPTIONS if full else {"fields[profile]": IDENTITY_FIELDS}
        return {
            "filter": f"any({field_name},[{quoted}])",
            "sort": sort,
            "page[size]": "100",
            **extra,
        }

    return query


def _search_chunk(
    ctx: Context,
    identifier: str,
    chunk: list[str],
    query: Callable[[list[str]], dict[str, str]],
    found: Found,
) -> None:
    try:
        profiles = all_pages(ctx, PATH, query(chunk))
    except Result as problem:
        refused = problem.outcome is Outcome.FAILURE or problem.klaviyo_status == 414
        if refused and len(chunk) > 1:
            middle = len(chunk) // 2
            _search_chunk(ctx, identifier, chunk[:middle], query, found)
            _search_chunk(ctx, identifier, chunk[middle:], query, found)
        else:
            found.problems.update(dict.fromkeys(chunk, problem))
        return
    field_name = SEARCH_FIELDS[identifier][0]
    for wanted in chunk:
        found.matches.setdefault(wanted, [])
    for profile in profiles:  # already in profile-handling order
        attributes = profile.get("attributes") or {}
        value = profile["id"] if field_name == "id" else attributes.get(field_name)
        if isinstance(value, str) and key(identifier, value) in found.matches:
            found.matches[key(identifier, value)].append(profile)


def all_pages(
    ctx: Context, path: str, query: dict[str, str], *, within: str | None = None
) -> list[dict[str, Any]]:
    """Every page of a collection: a value matching many profiles may fill more than one.

    ``within`` names the list or segment the path belongs to: its 404 is an unknown target.
    """
    items: list[dict[str, Any]] = []
    current: dict[str, str] | None = query
    next_page: str | None = path
    handled = (404,) if within else ()
    while next_page is not None:
        response = ctx.call("GET", next_page, query=current, handled=handled)
        if within and response.status == 404:
            raise unknown_target(within, 404, response.errors)
        items += resources(response)
        links = response.body.get("links") if isinstance(response.body, dict) else None
        next_page = links.get("next") if isinstance(links, dict) else None
        current = None  # the next link carries the whole query
    return items


def segment_members(
    ctx: Context, segment_id: str, field_name: str, values: list[str]
) -> list[dict[str, Any]]:
    """The members among ``values``; the endpoint takes its filters in list form only."""
    path = f"/api/segments/{segment_id}/profiles"

    def query(chunk: list[str]) -> dict[str, str]:
        quoted = ",".join(filter_value(v) for v in chunk)
        filter_ = f"any({field_name},[{quoted}])"
        return {"filter": filter_, "page[size]": "100", **WITH_SUBSCRIPTIONS}

    members: list[dict[str, Any]] = []
    for chunk in url_chunks(ctx, path, values, query):
        members += all_pages(ctx, path, query(chunk), within="segment")
    return members


@dataclass
class Membership:
    """Which profiles are on a list; why it could not be told for some."""

    members: set[str] = field(default_factory=set)
    problems: dict[str, Result] = field(default_factory=dict)


def list_members(ctx: Context, list_id: str, profiles: list[dict[str, Any]]) -> Membership:
    """Which of ``profiles`` are members of the list.

    The list's member endpoint filters by email or phone (list form), up to 100 at a time;
    a profile with neither is read with its lists (a slower limit, and rare).
    """
    membership = Membership()
    by_identifier: dict[str, dict[str, str]] = {"email": {}, "phone_number": {}}
    alone: list[str] = []
    for profile in profiles:
        attributes = profile.get("attributes") or {}
        name = "email" if attributes.get("email") else "phone_number"
        value = attributes.get(name)
        if isinstance(value, str) and value:
            by_identifier[name][key(name, value)] = profile["id"]
        else:
            alone.append(profile["id"])
    for name, ids in by_identifier.items():
        if ids:
            found = list_members_by(ctx, list_id, name, list(ids))
            membership.members |= {ids[value] for value in found if value in ids}
    for profile_id in alone:
        try:
            response = ctx.call(
                "GET",
                f"/api/profiles/{profile_id}",
                query={"include": "lists", "fields[list]": "name"},
            )
        except Result as problem:
            membership.problems[profile_id] = problem
            continue
        data = response.data if isinstance(response.data, dict) else {}
        lists = ((data.get("relationships") or {}).get("lists") or {}).get("data") or []
        if any(isinstance(item, dict) and item.get("id") == list_id for item in lists):
            membership.members.add(profile_id)
    return membership


def list_members_by(
    ctx: Context, list_id: str, field_name: str, values: list[str]
) -> dict[str, str]:
    """The emails (or phone numbers, as lookup keys) of list members, and their profile ids."""
    path = f"/api/lists/{list_id}/profiles"

    def query(chunk: list[str]) -> dict[str, str]:
        quoted = ",".join(filter_value(v) for v in chunk)
        return {
            "filter": f"any({field_name},[{quoted}])",
            "fields[profile]": field_name,
            "page[size]": "100",
        }

    members: dict[str, str] = {}
    unique = list(dict.fromkeys(key(field_name, v) for v in values))
    for chunk in url_chunks(ctx, path, unique, query):
        for profile in all_pages(ctx, path, query(chunk), within="list"):
            value = (profile.get("attributes") or {}).get(field_name)
            if isinstance(value, str):
                members[key(field_name, value)] = profile["id"]
    return members
