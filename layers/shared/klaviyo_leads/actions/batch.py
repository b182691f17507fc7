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
from dataclasses import dataclass, replace
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import imports, lookup
from klaviyo_leads.actions import track_event as events
from klaviyo_leads.actions import upsert_profile as upserts
from klaviyo_leads.actions.create import batch as batch_creates
from klaviyo_leads.actions.create.identity import IDENTIFIERS, Person, made_by
from klaviyo_leads.actions.create.one import new_profile
from klaviyo_leads.actions.profiles import Group, klaviyo_list, require_search_value, segment
from klaviyo_leads.actions.subscribe import subscribe
from klaviyo_leads.actions.subscribe.subscribe import Subscription
from klaviyo_leads.actions.table import ACTIONS, Action, ignored_fields, run_action
from klaviyo_leads.actions.update_profile import changes, patch
from klaviyo_leads.budget import effective_budget_seconds
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead, ensure_object
from klaviyo_leads.outcomes import (
    KlaviyoError,
    Outcome,
    Result,
    from_klaviyo_answer,
    success,
    unknown_target,
)
from klaviyo_leads.runtime import Processed, Runtime, logger, processed

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
    """How a queued lead arrived: which delivery of its message this is (SQS's count)."""

    count: int = 1


@dataclass
class Batch:
    """The leads of one bulk call, their results, and the budget they share."""

    ctx: Context
    leads: dict[int, Lead]
    results: Results
    deliveries: list[Delivery]
    origins: list[str | None]  # what each lead arrived as (its SQS message id)

    def fail(self, index: int, problem: Result) -> None:
        self.results[index] = problem

    def lead_ctx(self, index: int) -> Context:
        """The batch's context as one of its leads sees it: its origin and delivery."""
        return replace(
            self.ctx, origin_id=self.origins[index], delivery=self.deliveries[index].count
        )

    def one_by_one(self, action: str, index: int) -> None:
        """Give a lead the one-lead path (a small batch, or what the bulk call cannot take)."""
        self.results[index] = run_action(ACTIONS[action], self.lead_ctx(index), self.leads[index])


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
    """Jobs of up to 1,000 profiles (by list, source and historical import), one read-back."""
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    items: list[tuple[int, Subscription]] = []
    list_problems: dict[str, Result | None] = {}
    for index, lead in leads.items():
        try:
            _check_list_once(ctx, lead.list_id(), list_problems)
            items.append((index, subscribe.prepare(batch.lead_ctx(index), lead)))
        except Result as problem:
            results[index] = problem
    subscribe.subscribe_all(ctx, items, results)


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
        for position, i in enumerate(job):
            answer = imports.outcome(imported, position)
            if isinstance(answer, Result):
                batch.fail(served[i], answer)
            else:
                batch.results[served[i]] = accepted(served[i], answer)


# -- Create Profile ------------------------------------------------------------------------


def _create_all(batch: Batch) -> None:
    """Recorded creates, duplicates found in bulk, the rest in one import job
    (``batch_creates``)."""
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(batch.ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one("create_profile", index)
        return
    batch_creates.create_all(batch, wanted)


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
    """Profiles found in bulk are updated by one import job; the rest are created as Create
    Profile creates them (recorded, so ``created`` is a fact), then updated where that finds
    them to exist after all (``upsert``)."""
    ctx = batch.ctx
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one("upsert_profile", index)
        return
    found = _existing_people(batch, wanted)
    items: list[dict[str, Any]] = []
    served: list[int] = []
    in_the_job: set[str] = set()
    later: list[int] = []
    new: dict[int, dict[str, Any]] = {}
    for index, attributes in wanted.items():
        if batch.results[index] is not None:
            continue
        profile = found.get(index)
        if profile is None or made_by(profile, batch.origins[index] or ""):
            # To create, as Create Profile creates (recorded); or one an earlier attempt of
            # this lead made, which its record tells.
            new[index] = attributes
            continue
        person = Person.of(attributes)
        if person.is_other_person(profile):
            batch.fail(index, upserts.other_person(person, profile))
            continue
        item = {"type": "profile", "id": profile["id"], "attributes": attributes}
        identity_change = any(
            attributes.get(name) != (profile.get("attributes") or {}).get(name)
            for name in _IDENTITY_ATTRIBUTES
            if attributes.get(name)
        )
        if identity_change or profile["id"] in in_the_job or not imports.fits(item):
            later.append(index)
            continue
        items.append(item)
        served.append(index)
        in_the_job.add(profile["id"])
    _import(
        batch,
        items,
        served,
        lambda index, profile: success(profile, created=False),
        repeatable=True,
    )
    if new:
        batch_creates.create_all(batch, new, alone_as="upsert_profile")
    for index in new:
        made = batch.results[index]
        if made is not None and made.outcome is Outcome.SUCCESS and made.created is None:
            made.created = True  # the batch's create made it
        elif made is not None and made.duplicate_profile_id:
            later.append(index)  # it exists after all (made meanwhile): updated one by one
    for index in later:
        batch.one_by_one("upsert_profile", index)


def _existing_people(batch: Batch, wanted: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The profile Klaviyo holds for each lead: by its email, else phone, else external id."""
    asked = {
        index: {name: attributes[name] for name in IDENTIFIERS if attributes.get(name)}
        for index, attributes in wanted.items()
        if batch.results[index] is None
    }
    found, problems = lookup.people(batch.ctx, asked)
    for index, problem in problems.items():
        batch.fail(index, problem)
    return {index: profile for index, (_, profile) in found.items()}


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
