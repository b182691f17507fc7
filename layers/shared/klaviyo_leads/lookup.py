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

from .context import Context
from .klaviyo import filter_value
from .outcomes import Outcome, Result, unknown_target
from .profiles import SEARCH_FIELDS, WITH_SUBSCRIPTIONS, resources, url_chunks

PATH = "/api/profiles"


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


def search_query(identifier: str, sort: str, full: bool) -> Callable[[list[str]], dict[str, str]]:
    field_name = SEARCH_FIELDS[identifier][0]

    def query(values: list[str]) -> dict[str, str]:
        quoted = ",".join(filter_value(v) for v in values)
        extra = WITH_SUBSCRIPTIONS if full else {"fields[profile]": field_name}
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
