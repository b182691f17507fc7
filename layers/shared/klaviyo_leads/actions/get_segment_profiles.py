"""Get Segment Profiles: whether the lead's profile is in a segment; a batch in one
membership query per up to 100 values."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.action import Batch, Results
from klaviyo_leads.actions.batch import Member, by_search, settle
from klaviyo_leads.actions.lookup import Group, require_search_value, search_profiles, segment
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, success


def get_segment_profiles(ctx: Context, lead: Lead) -> Result:
    """Check if a profile is within a specific segment in your Klaviyo account."""
    segment_id = lead.segment_id()
    if segment_id is None:
        raise outcomes.SEGMENT_ID_MISSING()
    group = segment(ctx, segment_id)
    identifier, value = require_search_value(ctx, lead)

    if identifier == "external_id":
        # The segment endpoint cannot filter by external id: find the candidates first,
        # then ask which of them are members, and keep profile-handling order.
        candidates = search_profiles(ctx, identifier, value, lead.profile_sort(), limit=100)
        if not candidates:
            raise outcomes.NO_PROFILE()
        ids = [c["id"] for c in candidates]
        members = {m["id"]: m for m in lookup.segment_members(ctx, segment_id, "profile_id", ids)}
        chosen = next((members[i] for i in ids if i in members), None)
    else:
        field_name = "profile_id" if identifier == "klaviyo_id" else identifier
        found = lookup.segment_members(ctx, segment_id, field_name, [value])
        chosen = found[0] if found else None
    if chosen is None:
        raise outcomes.NOT_IN_SEGMENT()
    return success(chosen, list_name=group.name)


# The segment endpoint filters by these; an external id is resolved to profile ids first.
_SEGMENT_FIELD = {"email": "email", "phone_number": "phone_number", "klaviyo_id": "profile_id"}


# Candidates for one external id the one-lead path checks (one page of its search).
MAX_CANDIDATES = 100


def get_segment_profiles_batch(batch: Batch) -> None:
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    by_segment: dict[str, list[Member]] = defaultdict(list)
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
            by_segment[segment_id].append(Member.of(ctx, index, lead))
        except Result as problem:
            results[index] = problem
    for segment_id, members in by_segment.items():
        name = groups[segment_id].name  # type: ignore[union-attr]
        try:
            _check_segment(ctx, segment_id, name, members, results)
        except Result as problem:  # the segment went away, or Klaviyo said no to a query
            settle(results, [m.index for m in members if results[m.index] is None], problem)


def _segment_or_problem(ctx: Context, segment_id: str) -> Group | Result:
    try:
        return segment(ctx, segment_id)
    except Result as problem:
        return problem


def _check_segment(
    ctx: Context, segment_id: str, name: str | None, members: list[Member], results: Results
) -> None:
    # External ids: every profile that has one, in profile-handling order, as candidates.
    candidates: dict[int, list[str]] = {}
    for (identifier, sort), group in by_search(members).items():
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
