"""Bulk calls for a batch of leads: one Klaviyo call serves up to 100 or 1000 leads.

Klaviyo's rate limits, not our code, decide how many leads a minute can move. One subscribe
job takes 1000 profiles, one list call 1000 profile ids, one profile search 100 identifiers.
Every lead still gets its own result: bad leads are kept out of bulk calls by the same
checks as the one-by-one path, and when Klaviyo rejects a bulk call because of some of its
leads, those get their own failure and the rest are sent again without them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import outcomes, subscribe
from .actions import Action
from .budget import effective_budget_seconds
from .context import Context
from .klaviyo import filter_value
from .lead import Lead, ensure_object
from .outcomes import KlaviyoError, Outcome, Result, from_klaviyo_answer, success, unknown_target
from .profiles import SEARCH_FIELDS, klaviyo_list, require_search_value, resources, url_chunks
from .runtime import Processed, Runtime, logger, processed
from .subscribe import Subscription

MAX_IDS_PER_LIST_CALL = 1000

_COALESCED = {"subscribe_profile_to_list", "add_profile_to_list"}
_LIST_ITEM_POINTER = re.compile(r"^/data/(\d+)(?:/|$)")

Results = list[Result | None]


def coalesces(action: Action) -> bool:
    return action.name in _COALESCED


def coalesce(
    runtime: Runtime,
    action: Action,
    payloads: list[Any],
    remaining_seconds: float | None,
    correlation_ids: list[str] | None = None,
) -> list[Processed]:
    """One result per payload, in order, using as few Klaviyo calls as the batch allows."""
    started = runtime.clock()
    results: Results = [None] * len(payloads)
    leads: dict[int, Lead] = {}
    timeouts = []
    for index, payload in enumerate(payloads):
        try:
            lead = Lead.from_object(ensure_object(payload))
            timeouts.append(lead.timeout_seconds())
            leads[index] = lead
        except Result as problem:
            results[index] = problem

    if leads:
        seconds = effective_budget_seconds(min(timeouts), remaining_seconds)
        ctx = runtime.context(runtime.budget(seconds))
        bulk = _subscribe_all if action.name == "subscribe_profile_to_list" else _add_all
        bulk(ctx, leads, results)

    elapsed = (runtime.clock() - started) / max(1, len(payloads))
    out = []
    for index, result in enumerate(results):
        final = result or outcomes.INTERNAL()
        if correlation_ids:
            logger.set_correlation_id(correlation_ids[index])
        runtime.record(action, final, elapsed)
        out.append(processed(action, final))
    return out


def _settle(results: Results, indexes: list[int], result: Result) -> None:
    for index in indexes:
        results[index] = result


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- Subscribe Profile to List -------------------------------------------------------------


def _subscribe_all(ctx: Context, leads: dict[int, Lead], results: Results) -> None:
    groups: dict[tuple[str | None, str | None], list[tuple[int, Subscription]]] = defaultdict(list)
    list_problems: dict[str, Result | None] = {}
    for index, lead in leads.items():
        try:
            _check_list_once(ctx, lead.list_id(), list_problems)
            subscription = subscribe.prepare(ctx, lead)
        except Result as problem:
            results[index] = problem
            continue
        groups[(subscription.list_id, subscription.custom_source)].append((index, subscription))
    for members in groups.values():
        subscribe.send_jobs(ctx, members, results)


def _check_list_once(ctx: Context, list_id: str | None, problems: dict[str, Result | None]) -> None:
    """One list lookup per list in a batch, failures included (only found lists are cached)."""
    if list_id is None:
        return
    if list_id not in problems:
        try:
            klaviyo_list(ctx, list_id)
            problems[list_id] = None
        except Result as problem:
            problems[list_id] = problem
    known = problems[list_id]
    if known is not None:
        raise known


def _split_rejected(
    ctx: Context,
    chunk: list[Any],
    errors: list[KlaviyoError],
    pointer: re.Pattern[str],
    results: Results,
    resend: Callable[[Context, list[Any], Results], None],
    *,
    whole: Callable[[], Result],
    served: Callable[[Any], list[int]],
    own: Callable[[list[KlaviyoError]], Result],
) -> None:
    """A 400 for a bulk call: fail the leads it names and resend the others.

    When the errors name no lead, halve the call until the bad leads stand alone. A
    rejection that is about no lead at all (an unknown list) is the same for every lead.
    """
    named: dict[int, list[KlaviyoError]] = defaultdict(list)
    for error in errors:
        match = pointer.match(error.pointer or "")
        if match and int(match.group(1)) < len(chunk):
            named[int(match.group(1))].append(error)
    if named:
        for position, own_errors in named.items():
            _settle(results, served(chunk[position]), own(own_errors))
        rest = [item for position, item in enumerate(chunk) if position not in named]
        if rest:
            resend(ctx, rest, results)
        return
    problem = whole()
    if len(chunk) == 1 or problem.outcome is not Outcome.FAILURE:
        everyone = [index for item in chunk for index in served(item)]
        _settle(results, everyone, problem)
        return
    middle = len(chunk) // 2
    resend(ctx, chunk[:middle], results)
    resend(ctx, chunk[middle:], results)


# -- Add Profile to List -------------------------------------------------------------------


@dataclass
class _Member:
    index: int
    identifier: str
    value: str
    sort: str
    profile_id: str | None = None


def _add_all(ctx: Context, leads: dict[int, Lead], results: Results) -> None:
    by_list: dict[str, list[_Member]] = defaultdict(list)
    for index, lead in leads.items():
        try:
            list_id = lead.list_id()
            if list_id is None:
                raise outcomes.LIST_ID_MISSING()
            identifier, value = require_search_value(ctx, lead)
            sort = lead.profile_sort()
        except Result as problem:
            results[index] = problem
            continue
        by_list[list_id].append(_Member(index, identifier, value, sort))

    for list_id, members in by_list.items():
        indexes = [m.index for m in members]
        try:
            name = klaviyo_list(ctx, list_id).name
        except Result as problem:
            _settle(results, indexes, problem)
            continue
        # Klaviyo Ids are looked up too: how Klaviyo answers a list add of an unknown id is
        # not documented (a 400, a 404 like an unknown list, or a 204 that adds nothing).
        _resolve_ids(ctx, members, results)
        found = [m for m in members if m.profile_id is not None]
        for chunk in _chunks(_by_profile(found), MAX_IDS_PER_LIST_CALL):
            _send_list_add(ctx, list_id, name, chunk, results)


def _by_profile(members: list[_Member]) -> list[tuple[list[int], str]]:
    """One entry per distinct profile: the leads it serves and its id."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for member in members:
        grouped[member.profile_id or ""].append(member.index)
    return [(indexes, profile_id) for profile_id, indexes in grouped.items()]


def _resolve_ids(ctx: Context, members: list[_Member], results: Results) -> None:
    """Profile ids for the members, up to 100 identifiers per search."""
    groups: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    for member in members:
        groups[(member.identifier, member.sort)].append(member)
    for (identifier, sort), group in groups.items():
        values = list(dict.fromkeys(_key(identifier, m.value) for m in group))
        query = _search_query(identifier, sort)
        for chunk in url_chunks(ctx, "/api/profiles", values, query):
            _resolve_chunk(ctx, identifier, sort, chunk, group, results)


def _resolve_chunk(
    ctx: Context,
    identifier: str,
    sort: str,
    chunk: list[str],
    group: list[_Member],
    results: Results,
) -> None:
    wanted = set(chunk)
    try:
        ids = _search_many(ctx, identifier, chunk, sort)
    except Result as problem:
        refused = problem.outcome is Outcome.FAILURE or problem.klaviyo_status == 414
        if refused and len(chunk) > 1:
            # Klaviyo refused the search because of some value (or its length): halve it.
            middle = len(chunk) // 2
            _resolve_chunk(ctx, identifier, sort, chunk[:middle], group, results)
            _resolve_chunk(ctx, identifier, sort, chunk[middle:], group, results)
            return
        hit = [m.index for m in group if _key(identifier, m.value) in wanted]
        _settle(results, hit, problem)
        return
    for member in group:
        key = _key(identifier, member.value)
        if key in wanted:
            member.profile_id = ids.get(key)
            if member.profile_id is None:
                results[member.index] = outcomes.NO_PROFILE()


def _key(identifier: str, value: str) -> str:
    return value.lower() if identifier == "email" else value


def _search_query(identifier: str, sort: str) -> Callable[[list[str]], dict[str, str]]:
    field = SEARCH_FIELDS[identifier][0]

    def query(values: list[str]) -> dict[str, str]:
        quoted = ",".join(filter_value(v) for v in values)
        return {
            "filter": f"any({field},[{quoted}])",
            "sort": sort,
            "page[size]": "100",
            "fields[profile]": field,
        }

    return query


def _search_many(ctx: Context, identifier: str, values: list[str], sort: str) -> dict[str, str]:
    """Identifier value -> the id of the profile profile handling picks for it."""
    field = SEARCH_FIELDS[identifier][0]
    query: dict[str, str] | None = _search_query(identifier, sort)(values)
    path: str | None = "/api/profiles"
    ids: dict[str, str] = {}
    while path is not None:
        response = ctx.call("GET", path, bucket="profiles", query=query)
        for profile in resources(response):
            value = profile["id"] if field == "id" else (profile.get("attributes") or {}).get(field)
            if isinstance(value, str):
                ids.setdefault(_key(identifier, value), profile["id"])  # first in sort order
        links = response.body.get("links") if isinstance(response.body, dict) else None
        path = links.get("next") if isinstance(links, dict) else None
        query = None  # the next link carries the whole query
    return ids


def _send_list_add(
    ctx: Context,
    list_id: str,
    name: str | None,
    chunk: list[tuple[list[int], str]],
    results: Results,
) -> None:
    indexes = [index for served, _ in chunk for index in served]
    try:
        response = ctx.call(
            "POST",
            f"/api/lists/{list_id}/relationships/profiles",
            bucket="list_add",
            body={"data": [{"type": "profile", "id": profile_id} for _, profile_id in chunk]},
            expect=(204,),
            handled=(400, 404),
        )
    except Result as problem:
        _settle(results, indexes, problem)
        return
    if response.status == 204:
        _settle(results, indexes, success(list_name=name))
        return
    if response.status == 404:
        _settle(results, indexes, unknown_target("list", 404, response.errors))
        return

    def resend(ctx: Context, rest: list[Any], results: Results) -> None:
        _send_list_add(ctx, list_id, name, rest, results)

    # Klaviyo names unknown profile ids by their place in the call: no profile for those leads.
    _split_rejected(
        ctx,
        chunk,
        response.errors,
        _LIST_ITEM_POINTER,
        results,
        resend,
        whole=lambda: from_klaviyo_answer(400, response.errors),
        served=lambda item: item[0],
        own=lambda errors: outcomes.NO_PROFILE(errors=errors),
    )
