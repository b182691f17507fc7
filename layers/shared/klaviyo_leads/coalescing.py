"""Bulk calls for a batch of leads: one Klaviyo call serves up to 100 or 1000 leads.

Klaviyo's rate limits, not our code, decide how many leads a minute can move. One subscribe
job takes 1000 profiles, one list call 1000 profile ids, one profile search 100 identifiers.
Every lead still gets its own result: bad leads are kept out of bulk calls by the same
checks as the one-by-one path, and when Klaviyo rejects a bulk call because of some of its
leads, those get their own failure and the rest are sent again without them.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from . import creates, events, imports, lookup, outcomes, subscribe
from .actions import ACTIONS, Action, changes, ignored_fields, patch, run_action
from .budget import effective_budget_seconds
from .claims import Claim, ClaimLost, LedgerUnavailable, identity_of
from .context import Context
from .creates import (
    created_after,
    duplicate_of,
    klaviyo_refuses_duplicates,
    new_profile,
)
from .klaviyo import CLOCK_SKEW_SECONDS
from .lead import Lead, ensure_object
from .outcomes import KlaviyoError, Outcome, Result, from_klaviyo_answer, success, unknown_target
from .profiles import Group, get_profile, klaviyo_list, require_search_value, segment
from .runtime import Processed, Runtime, logger, processed
from .subscribe import Subscription

MAX_IDS_PER_LIST_CALL = 1000

_COALESCED = {
    "subscribe_profile_to_list",
    "add_profile_to_list",
    "get_profiles",
    "get_segment_profiles",
    "update_profile",
    "create_profile",
    "unsubscribe_profile",
    "remove_profile_from_list",
    "upsert_profile",
    "track_event",
}
_LIST_ITEM_POINTER = re.compile(r"^/data/(\d+)(?:/|$)")

Results = list[Result | None]


def coalesces(action: Action) -> bool:
    return action.name in _COALESCED


@dataclass(frozen=True)
class Delivery:
    """How a queued lead arrived: a redelivered one may already have had its effect."""

    redelivered: bool = False
    first_seen_at: float | None = None  # wall-clock seconds
    count: int = 1  # SQS's receive count


@dataclass
class Batch:
    """The leads of one bulk call, their results, and the budget they share."""

    ctx: Context
    leads: dict[int, Lead]
    results: Results
    deliveries: list[Delivery]
    origins: list[str | None]  # what each lead arrived as (its SQS message id)
    imported_at: str | None = None  # when Klaviyo took the last import job
    claims: dict[int, Claim] = field(default_factory=dict)  # Create: each lead's own record

    def fail(self, index: int, problem: Result) -> None:
        self.results[index] = problem

    def one_by_one(self, action: str, index: int) -> None:
        """Give a lead the one-lead path (a small batch, or what the bulk call cannot take)."""
        delivery = self.deliveries[index]
        ctx = replace(
            self.ctx,
            redelivered=delivery.redelivered,
            first_seen_at=delivery.first_seen_at,
            origin_id=self.origins[index],
            delivery=delivery.count,
        )
        self.results[index] = run_action(ACTIONS[action], ctx, self.leads[index])


def coalesce(
    runtime: Runtime,
    action: Action,
    payloads: list[Any],
    remaining_seconds: float | None,
    correlation_ids: list[str] | None = None,
    deliveries: list[Delivery] | None = None,
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
        deliveries = deliveries or [Delivery()] * len(payloads)
        origins: list[str | None] = (
            [*correlation_ids] if correlation_ids else [None] * len(payloads)
        )
        _BULK[action.name](Batch(ctx, leads, results, deliveries, origins))

    elapsed = (runtime.clock() - started) / max(1, len(payloads))
    out = []
    for index, result in enumerate(results):
        final = result or outcomes.INTERNAL()
        if correlation_ids:
            logger.set_correlation_id(correlation_ids[index])
        runtime.record(action, final, elapsed)
        done = processed(action, final)
        if index in leads:  # a batch may share one result among leads: each names its own keys
            done.fields["ignored_fields"] = ignored_fields(action, leads[index])
        out.append(done)
    return out


def _settle(results: Results, indexes: list[int], result: Result) -> None:
    for index in indexes:
        results[index] = result


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- Subscribe Profile to List -------------------------------------------------------------


def _subscribe_all(batch: Batch) -> None:
    ctx, leads, results = batch.ctx, batch.leads, batch.results
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
    """One lead's way to its profile: which identifier, its value, profile handling."""

    index: int
    identifier: str
    value: str
    sort: str
    profile_id: str | None = None
    profile: dict[str, Any] | None = None

    @classmethod
    def of(cls, ctx: Context, index: int, lead: Lead) -> _Member:
        """Checked in the order the one-lead path checks, so both fail the same way."""
        identifier, value = require_search_value(ctx, lead)
        # A Klaviyo Id names one profile: profile handling is not read for it.
        sort = "-updated" if identifier == "klaviyo_id" else lead.profile_sort()
        return cls(index, identifier, value, sort)


def _by_search(members: list[_Member]) -> dict[tuple[str, str], list[_Member]]:
    groups: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    for member in members:
        groups[(member.identifier, member.sort)].append(member)
    return groups


def _add_all(batch: Batch) -> None:
    _list_all(batch, "POST")


def _remove_all(batch: Batch) -> None:
    _list_all(batch, "DELETE")


def _list_all(batch: Batch, method: str) -> None:
    """Add (POST) or remove (DELETE) list members: profiles found in bulk, 1,000 a call."""
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    by_list: dict[str, list[_Member]] = defaultdict(list)
    for index, lead in leads.items():
        try:
            list_id = lead.list_id()
            if list_id is None:
                raise outcomes.LIST_ID_MISSING()
            member = _Member.of(ctx, index, lead)
        except Result as problem:
            results[index] = problem
            continue
        by_list[list_id].append(member)

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
        if method == "DELETE":
            try:
                membership = lookup.list_members(ctx, list_id, [m.profile or {} for m in found])
            except Result as problem:
                _settle(results, [m.index for m in found], problem)
                continue
            for member in found:
                if member.profile_id in membership.problems:
                    results[member.index] = membership.problems[member.profile_id]
                elif member.profile_id not in membership.members:
                    results[member.index] = outcomes.NOT_IN_LIST(list_name=name)
            found = [m for m in found if results[m.index] is None]
        for chunk in _chunks(_by_profile(found), MAX_IDS_PER_LIST_CALL):
            _send_list_change(ctx, method, list_id, name, chunk, results)


def _by_profile(members: list[_Member]) -> list[tuple[list[int], str]]:
    """One entry per distinct profile: the leads it serves and its id."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for member in members:
        grouped[member.profile_id or ""].append(member.index)
    return [(indexes, profile_id) for profile_id, indexes in grouped.items()]


def _resolve_ids(ctx: Context, members: list[_Member], results: Results) -> None:
    """Profile ids for the members, up to 100 identifiers per search."""
    for (identifier, sort), group in _by_search(members).items():
        found = lookup.search(ctx, identifier, sort, [m.value for m in group], full=False)
        for member in group:
            value_key = lookup.key(identifier, member.value)
            profile = found.first(value_key)
            if value_key in found.problems:
                results[member.index] = found.problems[value_key]
            elif profile is None:
                results[member.index] = outcomes.NO_PROFILE()
            else:
                member.profile_id, member.profile = profile["id"], profile


def _send_list_change(
    ctx: Context,
    method: str,
    list_id: str,
    name: str | None,
    chunk: list[tuple[list[int], str]],
    results: Results,
) -> None:
    indexes = [index for served, _ in chunk for index in served]
    try:
        response = ctx.call(
            method,
            f"/api/lists/{list_id}/relationships/profiles",
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
        _send_list_change(ctx, method, list_id, name, rest, results)

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


# -- Get Profiles --------------------------------------------------------------------------


def _get_all(batch: Batch) -> None:
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    members = []
    for index, lead in leads.items():
        try:
            members.append(_Member.of(ctx, index, lead))
        except Result as problem:
            results[index] = problem
    for (identifier, sort), group in _by_search(members).items():
        found = lookup.search(ctx, identifier, sort, [m.value for m in group])
        for member in group:
            value_key = lookup.key(identifier, member.value)
            profile = found.first(value_key)
            if value_key in found.problems:
                results[member.index] = found.problems[value_key]
            else:
                results[member.index] = success(profile) if profile else outcomes.NO_PROFILE()


# -- Get Segment Profiles ------------------------------------------------------------------

# The segment endpoint filters by these; an external id is resolved to profile ids first.
_SEGMENT_FIELD = {"email": "email", "phone_number": "phone_number", "klaviyo_id": "profile_id"}
# Candidates for one external id the one-lead path checks (one page of its search).
MAX_CANDIDATES = 100


def _segment_all(batch: Batch) -> None:
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    by_segment: dict[str, list[_Member]] = defaultdict(list)
    groups: dict[str, Group | Result] = {}
    for index, lead in leads.items():
        try:
            segment_id = lead.segment_id()
            if segment_id is None:
                raise outcomes.SEGMENT_ID_MISSING()
            if segment_id not in groups:
                groups[segment_id] = _segment_or_problem(ctx, segment_id)
            known = groups[segment_id]
            if isinstance(known, Result):
                raise known
            by_segment[segment_id].append(_Member.of(ctx, index, lead))
        except Result as problem:
            results[index] = problem
    for segment_id, members in by_segment.items():
        name = groups[segment_id].name  # type: ignore[union-attr]
        try:
            _check_segment(ctx, segment_id, name, members, results)
        except Result as problem:  # the segment went away, or Klaviyo said no to a query
            _settle(results, [m.index for m in members if results[m.index] is None], problem)


def _segment_or_problem(ctx: Context, segment_id: str) -> Group | Result:
    try:
        return segment(ctx, segment_id)
    except Result as problem:
        return problem


def _check_segment(
    ctx: Context, segment_id: str, name: str | None, members: list[_Member], results: Results
) -> None:
    # External ids: every profile that has one, in profile-handling order, as candidates.
    candidates: dict[int, list[str]] = {}
    for (identifier, sort), group in _by_search(members).items():
        if identifier != "external_id":
            continue
        found = lookup.search(ctx, identifier, sort, [m.value for m in group], full=False)
        for member in group:
            value_key = lookup.key(identifier, member.value)
            matches = found.matches.get(value_key, [])[:MAX_CANDIDATES]
            if value_key in found.problems:
                results[member.index] = found.problems[value_key]
            elif not matches:
                results[member.index] = outcomes.NO_PROFILE()
            else:
                candidates[member.index] = [p["id"] for p in matches]
    # Then one membership query per up to 100 values of a kind, list-form filters.
    asked: dict[str, list[str]] = defaultdict(list)
    for member in members:
        if member.identifier == "external_id":
            asked["profile_id"] += candidates.get(member.index, [])
        else:
            asked[_SEGMENT_FIELD[member.identifier]].append(member.value)
    in_segment: dict[tuple[str, str], dict[str, Any]] = {}
    for field_name, values in asked.items():
        unique = list(dict.fromkeys(lookup.key(_identifier_of(field_name), v) for v in values))
        for profile in lookup.segment_members(ctx, segment_id, field_name, unique):
            attributes = profile.get("attributes") or {}
            value = profile["id"] if field_name == "profile_id" else attributes.get(field_name)
            if isinstance(value, str):
                in_segment[(field_name, lookup.key(_identifier_of(field_name), value))] = profile
    for member in members:
        if results[member.index] is not None:
            continue
        if member.identifier == "external_id":
            ids = candidates[member.index]
            chosen = next(
                (in_segment[("profile_id", i)] for i in ids if ("profile_id", i) in in_segment),
                None,
            )
        else:
            field_name = _SEGMENT_FIELD[member.identifier]
            chosen = in_segment.get((field_name, lookup.key(member.identifier, member.value)))
        results[member.index] = (
            success(chosen, list_name=name) if chosen else outcomes.NOT_IN_SEGMENT()
        )


def _identifier_of(segment_field: str) -> str:
    return {"profile_id": "klaviyo_id"}.get(segment_field, segment_field)


# -- Update Profile ------------------------------------------------------------------------

# Below this many leads the one-lead path is quicker: a job is a call, polls and a read.
BULK_IMPORT_MIN_LEADS = 10
_IDENTITY_ATTRIBUTES = ("email", "phone_number")


def _update_all(batch: Batch) -> None:
    """Find the profiles in bulk, then one import job for their changes.

    A change of email or phone goes one lead at a time: Klaviyo refuses it when another
    profile owns the value, and the PATCH says which one. So does a second lead for a
    profile already in the job (applied after it, as one lead after another would be).
    """
    ctx = batch.ctx
    members: list[_Member] = []
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = changes(ctx, lead)
            members.append(_Member.of(ctx, index, lead))
        except Result as problem:
            batch.fail(index, problem)
    if len(members) < BULK_IMPORT_MIN_LEADS:
        for member in members:
            batch.one_by_one("update_profile", member.index)
        return
    found = _find_all(batch, members)
    items: list[dict[str, Any]] = []
    served: list[int] = []
    in_the_job: set[str] = set()
    later: list[tuple[int, dict[str, Any]]] = []
    for index, profile in found.items():
        change = _changed(wanted[index], profile)
        item = {"type": "profile", "id": profile["id"], "attributes": change}
        if not change:
            batch.results[index] = success(profile)  # it already holds what the lead says
            continue
        identity_change = any(name in change for name in _IDENTITY_ATTRIBUTES)
        if identity_change or profile["id"] in in_the_job or not imports.fits(item):
            later.append((index, profile))
            continue
        items.append(item)
        served.append(index)
        in_the_job.add(profile["id"])
    _import(batch, items, served, lambda index, profile: success(profile), repeatable=True)
    for index, profile in later:
        try:
            batch.results[index] = patch(ctx, profile, wanted[index])
        except Result as problem:
            batch.fail(index, problem)


def _find_all(batch: Batch, members: list[_Member]) -> dict[int, dict[str, Any]]:
    """Each member's profile (as profile handling picks it); the others get their result."""
    found: dict[int, dict[str, Any]] = {}
    for (identifier, sort), group in _by_search(members).items():
        searched = lookup.search(batch.ctx, identifier, sort, [m.value for m in group])
        for member in group:
            value_key = lookup.key(identifier, member.value)
            profile = searched.first(value_key)
            if value_key in searched.problems:
                batch.fail(member.index, searched.problems[value_key])
            elif profile is None:
                batch.fail(member.index, outcomes.NO_PROFILE())
            else:
                found[member.index] = profile
    return found


def _changed(wanted: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The attributes whose value differs from what the profile holds (objects key by key)."""
    current = profile.get("attributes") or {}
    changed: dict[str, Any] = {}
    for name, value in wanted.items():
        if isinstance(value, dict):
            held = current.get(name)
            held = held if isinstance(held, dict) else {}
            inner = {k: v for k, v in value.items() if held.get(k) != v}
            if inner:
                changed[name] = inner
        elif current.get(name) != value:
            changed[name] = value
    return changed


def _import(
    batch: Batch,
    items: list[dict[str, Any]],
    served: list[int],
    accepted: Callable[[int, dict[str, Any]], Result],
    *,
    repeatable: bool,
) -> None:
    """Send ``items`` in import jobs; ``served[i]`` is the lead item ``i`` stands for.
    Jobs that may create profiles are not ``repeatable`` (see ``imports.run``)."""
    for job in imports.batches(items):
        try:
            imported = imports.run(batch.ctx, [items[i] for i in job], repeatable=repeatable)
        except Result as problem:
            for i in job:
                batch.fail(served[i], problem)
            continue
        batch.imported_at = imported.created_at
        for position, i in enumerate(job):
            answer = imports.outcome(imported, position)
            if isinstance(answer, Result):
                batch.fail(served[i], answer)
            else:
                batch.results[served[i]] = accepted(served[i], answer)


# -- Create Profile ------------------------------------------------------------------------


def _create_all(batch: Batch) -> None:
    """Duplicates found in bulk first; the rest created by one import job.

    A profile that someone else creates between the search and the job is matched by the
    job, not created by it: its ``created`` predates the job, and the lead is reported as
    the duplicate it is (the job has given that profile the lead's fields; see the docs).
    """
    ctx = batch.ctx
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one("create_profile", index)
        return
    if ctx.ledger is None:
        _create_all_unrecorded(batch, wanted)
    else:
        _create_all_recorded(batch, wanted)


def _create_all_unrecorded(batch: Batch, wanted: dict[int, dict[str, Any]]) -> None:
    """Without the stack's table: a redelivery owns what was made since its first delivery."""
    existing = _existing(batch, wanted)
    claimed: dict[tuple[str, str], int] = {}
    items: list[dict[str, Any]] = []
    served: list[int] = []
    waiting: dict[int, int] = {}  # a lead -> the earlier lead of the batch it collides with
    for index, attributes in wanted.items():
        if batch.results[index] is not None:
            continue
        profile = existing.get(index)
        if profile is not None:
            if _since_first_delivery(batch, index, profile):
                batch.results[index] = success(profile)  # its own earlier delivery made it
            else:
                batch.fail(index, duplicate_of(attributes, profile))
            continue
        identities = _identities(attributes)
        first = next((claimed[i] for i in identities if i in claimed), None)
        if first is not None:
            waiting[index] = first
            continue
        claimed.update(dict.fromkeys(identities, index))
        items.append({"type": "profile", "attributes": attributes})
        served.append(index)
    batch.imported_at = None
    _import(
        batch,
        items,
        served,
        lambda index, profile: _made_by_the_job(batch, index, wanted[index], profile),
        repeatable=False,
    )
    _after_the_job(batch, wanted, waiting)


def _after_the_job(
    batch: Batch, wanted: dict[int, dict[str, Any]], waiting: dict[int, int]
) -> None:
    """A lead that shares an identity with an earlier lead of the batch: a duplicate of what
    that lead made, or, when it made nothing, tried on its own."""
    for index, first in waiting.items():
        made = batch.results[first]
        if made is not None and made.outcome is Outcome.SUCCESS and made.profile:
            _release(batch, index)
            batch.fail(index, duplicate_of(wanted[index], made.profile))
        else:
            _release(batch, index)
            batch.one_by_one("create_profile", index)


# -- Create Profile, recorded ---------------------------------------------------------------


@dataclass
class _Creates:
    """A recorded bulk create's state: each lead's record, and the job reference they share."""

    job_ref: str
    claims: dict[int, Claim]  # ours, taken now or by an earlier attempt (the batch's)
    jobs: dict[str, imports.Job] = field(default_factory=dict)  # earlier jobs read, by id


def _create_all_recorded(batch: Batch, wanted: dict[int, dict[str, Any]]) -> None:
    """Every lead's create is recorded (``claims``) before the job that makes it is sent.

    A lead whose person another lead is creating is a duplicate of what that lead made, or
    "in progress"; a redelivered lead finds what its earlier attempt's job did (or, when that
    job's answer was lost, what the search shows) before anything is imported again.
    """
    ctx = batch.ctx
    assert ctx.ledger is not None
    state = _Creates(job_ref=uuid.uuid4().hex, claims=batch.claims)
    waiting, abandoned = _take_claims(batch, wanted, state)
    settled = _from_earlier_attempts(batch, wanted, state)
    to_search = {
        index: wanted[index]
        for index in [*state.claims, *abandoned]
        if batch.results[index] is None and index not in settled
    }
    existing = _existing(batch, to_search)
    items: list[dict[str, Any]] = []
    served: list[int] = []
    identities_in_job: dict[tuple[str, str], int] = {}
    for index in to_search:
        if batch.results[index] is not None:
            continue
        attributes = wanted[index]
        claim = state.claims.get(index) or abandoned[index]
        found = existing.get(index)
        if not _ready_to_import(batch, state, index, claim, attributes, found):
            continue
        identities = _identities(attributes)
        first = next((identities_in_job[i] for i in identities if i in identities_in_job), None)
        if first is not None:
            waiting[index] = first
            continue
        identities_in_job.update(dict.fromkeys(identities, index))
        items.append({"type": "profile", "attributes": attributes})
        served.append(index)
    _import_recorded(batch, state, items, served)
    _after_the_job(batch, wanted, waiting)


def _take_claims(
    batch: Batch, wanted: dict[int, dict[str, Any]], state: _Creates
) -> tuple[dict[int, int], dict[int, Claim]]:
    """Each lead's record: ours, another lead's of this batch (wait for it), another's."""
    ctx = batch.ctx
    assert ctx.ledger is not None
    hold = creates.hold_seconds(ctx)
    now = ctx.wall()
    owners: dict[str, int] = {}
    waiting: dict[int, int] = {}
    abandoned: dict[int, Claim] = {}
    for index, attributes in wanted.items():
        identity = identity_of(attributes)
        assert identity is not None
        owner = batch.origins[index] or creates.owner_of(ctx)
        try:
            claim = ctx.ledger.take(identity, owner, hold, job_ref=state.job_ref)
        except LedgerUnavailable:
            batch.fail(index, creates.record_unavailable())
            continue
        if claim.mine:
            state.claims[index] = claim
            owners[owner] = index
        elif claim.owner in owners:
            waiting[index] = owners[claim.owner]
        elif claim.profile_id:
            batch.fail(index, duplicate_of(attributes, claim.profile_id))
        elif (known := _others_job(batch, index, claim, attributes, state)) is not None:
            batch.fail(index, known)
        elif claim.held(now):
            batch.fail(index, creates.in_progress(_lead_ctx(batch, index), claim, now))
        else:
            abandoned[index] = claim
    return waiting, abandoned


def _others_job(
    batch: Batch, index: int, claim: Claim, attributes: dict[str, Any], state: _Creates
) -> Result | None:
    """What another lead's job says about this person (see ``creates.others_job_outcome``)."""
    try:
        return creates.others_job_outcome(
            _lead_ctx(batch, index), claim, attributes, cache=state.jobs
        )
    except LedgerUnavailable:
        return creates.record_unavailable()
    except Result as problem:
        return problem


def _from_earlier_attempts(
    batch: Batch, wanted: dict[int, dict[str, Any]], state: _Creates
) -> set[int]:
    """Leads an earlier attempt already settled: the profile it recorded, or what its job did."""
    settled: set[int] = set()
    for index, claim in state.claims.items():
        if claim.profile_id:
            found = get_profile(batch.ctx, claim.profile_id)
            batch.results[index] = success(found or {"type": "profile", "id": claim.profile_id})
            settled.add(index)
        elif claim.job_ref:
            try:
                answer = creates.earlier_job_outcome(
                    batch.ctx, claim, wanted[index], cache=state.jobs
                )
            except Result as problem:
                answer = problem
            if answer is not None:
                batch.results[index] = answer
                settled.add(index)
    return settled


def _ready_to_import(
    batch: Batch,
    state: _Creates,
    index: int,
    claim: Claim,
    attributes: dict[str, Any],
    found: dict[str, Any] | None,
) -> bool:
    """Whether the lead goes into the job; if not, its result is set."""
    ctx = batch.ctx
    assert ctx.ledger is not None
    wrote_before = claim.mine and (claim.written_at is not None or claim.job_ref is not None)
    if not claim.mine:  # abandoned by another lead: its write, if any, shows by now
        if found is not None:
            batch.fail(index, duplicate_of(attributes, found))
            return False
        try:
            taken = ctx.ledger.take_over(
                claim,
                batch.origins[index] or creates.owner_of(ctx),
                creates.hold_seconds(ctx),
                state.job_ref,
            )
        except LedgerUnavailable:
            taken = None
        if taken is None:
            batch.fail(index, creates.in_progress(_lead_ctx(batch, index), claim, ctx.wall()))
            return False
        state.claims[index] = taken
        return True
    if found is not None:
        if wrote_before and created_after(found, claim.started_at - CLOCK_SKEW_SECONDS):
            batch.results[index] = creates.own(ctx, claim, found)  # its earlier attempt made it
        else:
            ctx.ledger.release(claim)
            batch.fail(index, duplicate_of(attributes, found))
        return False
    if not wrote_before:
        return True
    if not klaviyo_refuses_duplicates(attributes):
        # An import would make a second profile if the earlier one is still out of sight.
        written = claim.written_at or claim.started_at
        settles_in = written + creates.settle_seconds(ctx) - ctx.wall()
        if settles_in > 0:
            batch.fail(
                index,
                outcomes.CREATE_UNSETTLED(seconds=int(settles_in) + 1, retry_after=settles_in),
            )
            return False
    try:
        ctx.ledger.writing(claim, creates.hold_seconds(ctx), state.job_ref)
    except ClaimLost:
        batch.fail(index, creates.in_progress(_lead_ctx(batch, index), claim, ctx.wall()))
        return False
    except LedgerUnavailable:
        batch.fail(index, creates.record_unavailable())
        return False
    return True


def _lead_ctx(batch: Batch, index: int) -> Context:
    return replace(batch.ctx, delivery=batch.deliveries[index].count)


def _import_recorded(
    batch: Batch, state: _Creates, items: list[dict[str, Any]], served: list[int]
) -> None:
    """The job(s); each taken job is recorded under the batch's reference as Klaviyo takes it."""
    ctx = batch.ctx
    assert ctx.ledger is not None
    ledger = ctx.ledger
    for job in imports.batches(items):
        try:
            imported = imports.run(
                ctx,
                [items[i] for i in job],
                repeatable=False,
                taken=lambda job_id: ledger.job_taken(state.job_ref, job_id),
            )
        except Result as problem:
            for i in job:
                index = served[i]
                batch.fail(index, problem)
                claim = state.claims[index]
                if not problem.retryable and not problem.effect_unknown:
                    ledger.release(claim)  # refused: nothing was imported
            continue
        batch.imported_at = imported.created_at
        for position, i in enumerate(job):
            index = served[i]
            claim = state.claims[index]
            answer = imports.outcome(imported, position)
            if isinstance(answer, Result):
                if not answer.retryable:
                    ledger.release(claim)
                batch.fail(index, answer)
                continue
            wrote_before = claim.written_at is not None or claim.job_ref is not None
            made = (
                created_after(answer, claim.started_at - CLOCK_SKEW_SECONDS)
                if wrote_before
                else not _predates_the_job(batch, answer)
            )
            if made:
                batch.results[index] = creates.own(ctx, claim, answer)
            else:
                ledger.release(claim)
                batch.fail(index, duplicate_of(items[i]["attributes"], answer))


def _release(batch: Batch, index: int) -> None:
    """Give up a lead's fresh record (it is a duplicate, or goes on alone)."""
    ledger = batch.ctx.ledger
    if ledger is None:
        return
    claim = batch.claims.get(index)
    if claim is not None and claim.written_at is None and claim.job_ref is None:
        ledger.release(claim)


def _existing(batch: Batch, wanted: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Profiles Klaviyo already has for the leads: by email, then phone; else external id."""
    found: dict[int, dict[str, Any]] = {}
    for identifier in ("email", "phone_number", "external_id"):
        leads = {
            index: attributes[identifier]
            for index, attributes in wanted.items()
            if attributes.get(identifier)
            and index not in found
            and batch.results[index] is None
            and (identifier != "external_id" or not klaviyo_refuses_duplicates(attributes))
        }
        if not leads:
            continue
        searched = lookup.search(batch.ctx, identifier, "-created", leads.values())
        for index, value in leads.items():
            value_key = lookup.key(identifier, value)
            if value_key in searched.problems:
                batch.fail(index, searched.problems[value_key])
            elif (profile := searched.first(value_key)) is not None:
                found[index] = profile
    return found


def _identities(attributes: dict[str, Any]) -> list[tuple[str, str]]:
    """What two new profiles of one batch may not share: email, phone, or a lone external id."""
    names = _IDENTITY_ATTRIBUTES if klaviyo_refuses_duplicates(attributes) else ("external_id",)
    return [(name, lookup.key(name, attributes[name])) for name in names if attributes.get(name)]


def _made_by_the_job(
    batch: Batch, index: int, attributes: dict[str, Any], profile: dict[str, Any]
) -> Result:
    if _predates_the_job(batch, profile) and not _since_first_delivery(batch, index, profile):
        return duplicate_of(attributes, profile)
    return success(profile)


def _since_first_delivery(batch: Batch, index: int, profile: dict[str, Any]) -> bool:
    """Without a record: a redelivered lead owns a profile made since its first delivery."""
    delivery = batch.deliveries[index]
    since = (delivery.first_seen_at or 0.0) - CLOCK_SKEW_SECONDS
    return delivery.redelivered and created_after(profile, since)


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


# -- Unsubscribe Profile -------------------------------------------------------------------


def _unsubscribe_all(batch: Batch) -> None:
    """Membership checked in bulk where a list is given, then jobs of up to 100 profiles."""
    ctx, results = batch.ctx, batch.results
    groups: dict[str | None, list[tuple[int, Subscription]]] = defaultdict(list)
    list_problems: dict[str, Result | None] = {}
    for index, lead in batch.leads.items():
        try:
            _check_list_once(ctx, lead.list_id(), list_problems)
            unsubscription = subscribe.prepare_unsubscribe(ctx, lead)
        except Result as problem:
            results[index] = problem
            continue
        groups[unsubscription.list_id].append((index, unsubscription))
    later: list[int] = []
    for items in groups.values():
        try:
            members = subscribe.only_list_members(ctx, items, results)
        except Result as problem:
            _settle(results, [index for index, _ in items], problem)
            continue
        # A second lead for one profile goes after the job, as one lead after another would:
        # an unsubscribe from a list also takes the profile off it.
        seen: set[str] = set()
        first: list[tuple[int, Subscription]] = []
        for index, item in members:
            identity = item.profile_id or (item.email or item.phone_number or "").lower()
            if identity in seen:
                later.append(index)
                results[index] = None
            else:
                seen.add(identity)
                first.append((index, item))
        subscribe.send_jobs(ctx, first, results)
    for index in later:
        batch.one_by_one("unsubscribe_profile", index)


# -- Upsert Profile ------------------------------------------------------------------------


def _upsert_all(batch: Batch) -> None:
    """One import job creates or updates them all; created when the job made the profile."""
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(batch.ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one("upsert_profile", index)
        return
    claimed: set[tuple[str, str]] = set()
    items: list[dict[str, Any]] = []
    served: list[int] = []
    later: list[int] = []  # a second lead for a profile of the job: after it, one by one
    for index, attributes in wanted.items():
        identities = set(_identities(attributes)) | {
            (name, lookup.key(name, attributes[name]))
            for name in ("email", "phone_number", "external_id")
            if attributes.get(name)
        }
        if identities & claimed or not imports.fits({"attributes": attributes}):
            later.append(index)
            continue
        claimed |= identities
        items.append({"type": "profile", "attributes": attributes})
        served.append(index)
    batch.imported_at = None
    _import(
        batch, items, served, lambda index, profile: _upserted(batch, profile), repeatable=False
    )
    for index in later:
        batch.one_by_one("upsert_profile", index)


def _upserted(batch: Batch, profile: dict[str, Any]) -> Result:
    return success(profile, created=not _predates_the_job(batch, profile))


def _predates_the_job(batch: Batch, profile: dict[str, Any]) -> bool:
    job_started = _timestamp(batch.imported_at)
    created = _timestamp((profile.get("attributes") or {}).get("created"))
    # Profiles carry whole seconds, jobs finer: "before the job" is before its second.
    return job_started is not None and created is not None and created < math.floor(job_started)


# -- Track Event ---------------------------------------------------------------------------


def _track_all(batch: Batch) -> None:
    """Bulk event jobs of up to 1,000 events; a retried lead keeps its message id as key."""
    items: list[tuple[int, events.Event]] = []
    for index, lead in batch.leads.items():
        ctx = replace(batch.ctx, origin_id=batch.origins[index])
        try:
            items.append((index, events.prepare(ctx, lead)))
        except Result as problem:
            batch.fail(index, problem)
    events.send_jobs(batch.ctx, items, batch.results)


_BULK: dict[str, Callable[[Batch], None]] = {
    "subscribe_profile_to_list": _subscribe_all,
    "add_profile_to_list": _add_all,
    "get_profiles": _get_all,
    "get_segment_profiles": _segment_all,
    "update_profile": _update_all,
    "create_profile": _create_all,
    "unsubscribe_profile": _unsubscribe_all,
    "remove_profile_from_list": _remove_all,
    "upsert_profile": _upsert_all,
    "track_event": _track_all,
}
