"""What the actions' batch paths share: one Klaviyo call serves up to 100 or 1000 leads.

Klaviyo's rate limits, not our code, decide how many leads a minute can move. One subscribe
job takes 1000 profiles, one list call 1000 profile ids, one profile search 100 identifiers.
Every lead still gets its own result: bad leads are kept out of bulk calls by the same
checks as the one-by-one path (``check_list_once``, ``Member.of``), and when Klaviyo rejects a
bulk call because of some of its leads, those get their own failure and the rest are sent
again without them (``split_rejected``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import imports, lookup
from klaviyo_leads.actions.action import Batch, Results
from klaviyo_leads.actions.lookup import klaviyo_list, require_search_value
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import KlaviyoError, Outcome, Result


def settle(results: Results, indexes: list[int], result: Result) -> None:
    for index in indexes:
        results[index] = result


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def check_list_once(ctx: Context, list_id: str | None, problems: dict[str, Result | None]) -> None:
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


def split_rejected(
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
            settle(results, served(chunk[position]), own(own_errors))
        rest = [item for position, item in enumerate(chunk) if position not in named]
        if rest:
            resend(ctx, rest, results)
        return
    problem = whole()
    if len(chunk) == 1 or problem.outcome is not Outcome.FAILURE:
        everyone = [index for item in chunk for index in served(item)]
        settle(results, everyone, problem)
        return
    middle = len(chunk) // 2
    resend(ctx, chunk[:middle], results)
    resend(ctx, chunk[middle:], results)


# -- Members: a lead's way to its profile, found in bulk --------------------------------------


@dataclass
class Member:
    """One lead's way to its profile: which identifier, its value, profile handling."""

    index: int
    identifier: str
    value: str
    sort: str
    profile_id: str | None = None
    profile: dict[str, Any] | None = None

    @classmethod
    def of(cls, ctx: Context, index: int, lead: Lead) -> Member:
        """Checked in the order the one-lead path checks, so both fail the same way."""
        identifier, value = require_search_value(ctx, lead)
        # A Klaviyo Id names one profile: profile handling is not read for it.
        sort = "-updated" if identifier == "klaviyo_id" else lead.profile_sort()
        return cls(index, identifier, value, sort)


def by_search(members: list[Member]) -> dict[tuple[str, str], list[Member]]:
    groups: dict[tuple[str, str], list[Member]] = defaultdict(list)
    for member in members:
        groups[(member.identifier, member.sort)].append(member)
    return groups


def resolve_ids(ctx: Context, members: list[Member], results: Results) -> None:
    """Profile ids for the members, up to 100 identifiers per search."""
    for (identifier, sort), group in by_search(members).items():
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


# -- Import jobs (Update and Upsert) --------------------------------------------------------

# Below this many leads the one-lead path is quicker: a job is a call, polls and a read.
BULK_IMPORT_MIN_LEADS = 10
IDENTITY_ATTRIBUTES = ("email", "phone_number")


def find_all(batch: Batch, members: list[Member]) -> dict[int, dict[str, Any]]:
    """Each member's profile (as profile handling picks it); the others get their result."""
    found: dict[int, dict[str, Any]] = {}
    for (identifier, sort), group in by_search(members).items():
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


def import_items(
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
