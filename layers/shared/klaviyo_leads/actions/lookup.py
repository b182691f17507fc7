"""Finding many profiles at once: one ``any()`` search serves up to 100 identifiers.

A batch of leads is looked up by kind of identifier and profile handling: every value of a
kind goes into as few searches as Klaviyo's page size and URL length allow, and each value
keeps every profile that matched it, in profile-handling order, so a lead gets the profile
it would have got alone. Klaviyo refusing a search because of one value (a 400, a 414) costs
only that value: the search is halved until the value stands alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads.actions.profiles import SEARCH_FIELDS, WITH_SUBSCRIPTIONS, resources, url_chunks
from klaviyo_leads.context import Context
from klaviyo_leads.klaviyo.client import filter_value
from klaviyo_leads.outcomes import Outcome, Result, unknown_target

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
