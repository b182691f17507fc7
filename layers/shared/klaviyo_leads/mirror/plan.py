"""The plan: the file's people matched against the list's members and, the rest, found by
search; what would be added, kept and removed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.lookup import klaviyo_list, search_value
from klaviyo_leads.lead.body import ensure_object
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.lead_files.checks import lead_of
from klaviyo_leads.mirror.members import STREAMS, Parallel, Streams, read_members, threads
from klaviyo_leads.outcomes import Result

FIRST_ROWS = 10  # rows named per reason in the report
SORT = "-updated"  # several profiles match: the newest update, the contract's default


@dataclass
class Plan:
    """What the file asks of the list."""

    list_id: str
    list_name: str | None = None
    members_before: int = 0
    rows_read: int = 0
    add: dict[str, int] = field(default_factory=dict)  # profile id -> its first row
    keep: set[str] = field(default_factory=set)
    no_profile: list[int] = field(default_factory=list)
    refused: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def refuse(self, row: int, result: Result) -> None:
        entry = self.refused.setdefault((result.outcome.value, result.reason or ""), [0, []])
        entry[0] += 1
        if len(entry[1]) < FIRST_ROWS:
            entry[1].append(row)

    @property
    def removal_share(self) -> float:
        return len(self.remove) / self.members_before if self.members_before else 0.0

    def as_json(self) -> dict[str, Any]:
        refused = sorted(self.refused.items(), key=lambda item: (-item[1][0], item[0]))
        return {
            "list_id": self.list_id,
            "list_name": self.list_name,
            "members_before": self.members_before,
            "rows_read": self.rows_read,
            "would_add": len(self.add),
            "would_keep": len(self.keep),
            "would_remove": len(self.remove),
            "members_after": len(self.keep) + len(self.add),
            "removal_share": round(self.removal_share, 4),
            "rows_without_profile": {"count": len(self.no_profile), "first": self.no_profile[:10]},
            "rows_refused": [
                {"outcome": outcome, "reason": reason, "count": count, "first_rows": rows}
                for (outcome, reason), (count, rows) in refused
            ],
        }


def plan(
    streams: Streams,
    list_id: str,
    rows: Any,
    defaults: Mapping[str, Any],
    parallel: Parallel = threads,
) -> Plan:
    """Read the list and the file; what would be added, kept and removed."""
    ctx = streams()
    group = klaviyo_list(ctx, list_id)
    members = read_members(streams, list_id, parallel)
    planned = Plan(list_id, group.name, len(members.ids))
    unmatched: dict[str, dict[str, list[int]]] = {}  # identifier -> value -> rows
    for row in rows:
        planned.rows_read += 1
        if row.problem is not None:
            planned.refuse(row.number, row.problem)
            continue
        try:
            lead = Lead.from_object(ensure_object(lead_of(row, defaults)))
            identifier = lead.identifier()
            value = search_value(ctx, lead, identifier)
            if value is None:
                raise outcomes.NO_IDENTIFIER()
        except Result as problem:
            planned.refuse(row.number, problem)
            continue
        member = members.find(identifier, value)
        if member is not None:
            planned.keep.add(member)
        else:
            unmatched.setdefault(identifier, {}).setdefault(lookup.key(identifier, value), [])
            unmatched[identifier][lookup.key(identifier, value)].append(row.number)
    for identifier, by_value in unmatched.items():
        found = _search(streams, identifier, list(by_value), parallel)
        for value, numbers in by_value.items():
            if value in found.problems:
                for number in numbers:
                    planned.refuse(number, found.problems[value])
                continue
            profile = found.first(value)
            if profile is None:
                planned.no_profile += numbers
            elif str(profile["id"]) in members.ids:  # matched by another identifier
                planned.keep.add(str(profile["id"]))
            else:
                planned.add.setdefault(str(profile["id"]), numbers[0])
    planned.remove = sorted(members.ids - planned.keep)
    return planned


def _search(
    streams: Streams, identifier: str, values: list[str], parallel: Parallel = threads
) -> lookup.Found:
    """The profiles of ``values`` (a hundred to a search), ``STREAMS`` searches side by side."""
    share = -(-len(values) // STREAMS)
    parts = [values[i : i + share] for i in range(0, len(values), share)] if values else []
    found = lookup.Found()

    def search(part: list[str]) -> lookup.Found:
        return lookup.search(streams(), identifier, SORT, part, full=False)

    for result in parallel(search, parts):
        found.matches.update(result.matches)
        found.problems.update(result.problems)
    return found
