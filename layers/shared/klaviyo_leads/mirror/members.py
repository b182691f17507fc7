"""A list's members, read through its list-profiles pages: a long list in slices of its join
times, streams side by side, each with a client and pacer of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypeVar
from urllib.parse import urlencode

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.lookup import path_id, resources
from klaviyo_leads.context import Context

_PAGE = {"fields[profile]": "email,phone_number,external_id,joined_group_at", "page[size]": "100"}
# Slices of a list read side by side, and searches made side by side: a page or a search takes
# Klaviyo about a fifth of a second, and the endpoints' limits allow 12 calls a second.
STREAMS = 8
SLICES_PER_STREAM = 4
LIST_PAGES = "get_profiles_for_list"  # the operation (and pacer bucket) of list pages
# A stream whose pacer holds it back longer than this hands its slice to the others.
HAND_BACK_SECONDS = 2.0

Item = TypeVar("Item")
Answer = TypeVar("Answer")
Parallel = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
# A context for one stream of calls: a client, and so a pacer, of its own. A pacer counts one
# stream's calls (its own calls, the rest of the account's); streams side by side are paced as
# containers side by side are, each taking a share of what the account leaves.
Streams = Callable[[], Context]


def threads(work: Callable[[Item], Answer], items: list[Item]) -> list[Answer]:
    """``work`` on every item, each in a thread of its own; the answers in the items' order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="mirror") as pool:
        return list(pool.map(work, items))


@dataclass
class Members:
    """The list's members: their ids, and their ids by identifier value."""

    ids: set[str] = field(default_factory=set)
    by_value: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"email": {}, "phone_number": {}, "external_id": {}}
    )

    def add(self, profile: Mapping[str, Any]) -> None:
        profile_id = str(profile["id"])
        self.ids.add(profile_id)
        attributes = profile.get("attributes") or {}
        for name, index in self.by_value.items():
            value = attributes.get(name)
            if isinstance(value, str) and value:
                index.setdefault(lookup.key(name, value), profile_id)

    def profiles(self) -> list[tuple[str, dict[str, str]]]:
        """(id, identifiers) of every member, for merging slices read apart."""
        values: dict[str, dict[str, str]] = {profile_id: {} for profile_id in self.ids}
        for name, index in self.by_value.items():
            for value, profile_id in index.items():
                values[profile_id][name] = value
        return list(values.items())

    def find(self, identifier: str, value: str) -> str | None:
        if identifier == "klaviyo_id":
            return value if value in self.ids else None
        return self.by_value[identifier].get(lookup.key(identifier, value))


def read_members(streams: Streams, list_id: str, parallel: Parallel = threads) -> Members:
    """Every member, a hundred a page (their identifiers only). A long list is read in
    slices of its join times, ``STREAMS`` side by side: one page follows another only after
    Klaviyo's answer, and one chain of pages is slower than the endpoint's limit. There are
    ``SLICES_PER_STREAM`` times more slices than streams, each stream taking the next slice
    left when it is done with one: join times bunch, and the streams end together."""
    path = f"/api/lists/{path_id(list_id, 'list')}/profiles"
    members = Members()
    ctx = streams()
    oldest = _page(ctx, path, {**_PAGE, "sort": "joined_group_at"})
    for profile in oldest.items:
        members.add(profile)
    if oldest.next_page is None or not oldest.items:
        return members
    newest = _page(ctx, path, {**_PAGE, "sort": "-joined_group_at"})
    before = len(members.ids)
    for profile in newest.items:
        members.add(profile)
    if newest.next_page is None or len(members.ids) < before + len(newest.items):
        return members  # the two ends met: 200 members at most, every one seen
    start, end = _joined(oldest.items[0]), _joined(newest.items[0])
    if start is None or end is None:
        return _read_slice(ctx, path, None, None, members)  # no join times: one chain
    # Whole seconds, as Klaviyo writes join times; the last slice ends after the newest.
    first, last = int(start.timestamp()), int(end.timestamp()) + 1
    count = STREAMS * SLICES_PER_STREAM
    cuts = sorted({first + (last - first) * i // count for i in range(count)} | {last})
    work = Slices([_slice_query(path, low, high) for low, high in pairwise(cuts)])
    for part in parallel(lambda _: _read_slices(streams(), work), list(range(STREAMS))):
        for profile_id, values in part.profiles():
            members.add({"id": profile_id, "attributes": values})
    return members


class Slices:
    """The slices of a list still to read, as the page each one goes on from, shared by the
    streams. A stream whose pacer would hold it back while others read hands its slice back
    and stops: the pacers of streams side by side take each other's calls for the rest of the
    account's, and one may find no share left in a window while the others go on. The last
    stream never stops: the others' pace it learnt fades as it reads alone."""

    def __init__(self, pages: list[str]) -> None:
        self._pages = pages
        self._lock = threading.Lock()
        self._reading = STREAMS

    def take(self) -> str | None:
        with self._lock:
            return self._pages.pop(0) if self._pages else None

    def hand_back(self, page: str) -> bool:
        """Give the slice to another stream (True: this one stops), unless it is the last."""
        with self._lock:
            if self._reading <= 1:
                return False
            self._pages.append(page)
            self._reading -= 1
            return True

    def done(self) -> None:
        with self._lock:
            self._reading -= 1


def _slice_query(path: str, start: int, end: int) -> str:
    """The first page of the members who joined in [start, end), as a URL path and query."""
    query = {
        **_PAGE,
        "sort": "joined_group_at",
        "filter": f"greater-or-equal(joined_group_at,{_moment(start)}),"
        f"less-than(joined_group_at,{_moment(end)})",
    }
    return f"{path}?{urlencode(query)}"


def _read_slices(ctx: Context, work: Slices) -> Members:
    """One stream: slices, page by page, until none is left (or it hands its slice back)."""
    members = Members()
    page: str | None = work.take()
    while page is not None:
        wait = ctx.client.check_pace(LIST_PAGES, ctx.budget)
        if wait > HAND_BACK_SECONDS and work.hand_back(page):
            return members
        answer = _page(ctx, page, None)
        for profile in answer.items:
            members.add(profile)
        page = answer.next_page or work.take()
    work.done()
    return members


@dataclass
class _Page:
    items: list[dict[str, Any]]
    next_page: str | None


def _page(ctx: Context, path: str, query: Mapping[str, str] | None) -> _Page:
    response = ctx.call("GET", path, query=query, handled=(404,))
    if response.status == 404:
        raise outcomes.unknown_target("list", 404, response.errors)
    links = response.body.get("links") if isinstance(response.body, dict) else None
    next_page = links.get("next") if isinstance(links, dict) else None
    return _Page(resources(response), next_page if isinstance(next_page, str) else None)


def _read_slice(
    ctx: Context, path: str, start: int | None, end: int | None, members: Members
) -> Members:
    """The members who joined in [start, end) (every member when unbounded), page by page."""
    query: dict[str, str] | None = {**_PAGE, "sort": "joined_group_at"}
    if start is not None and end is not None:
        query["filter"] = (  # type: ignore[index]
            f"greater-or-equal(joined_group_at,{_moment(start)}),"
            f"less-than(joined_group_at,{_moment(end)})"
        )
    next_page: str | None = path
    while next_page is not None:
        page = _page(ctx, next_page, query)
        for profile in page.items:
            members.add(profile)
        next_page, query = page.next_page, None  # the next link carries the whole query
    return members


def _joined(profile: Mapping[str, Any]) -> datetime | None:
    value = (profile.get("attributes") or {}).get("joined_group_at")
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _moment(seconds: int) -> str:
    """A datetime as Klaviyo's filters take it: ISO 8601, unquoted."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()
