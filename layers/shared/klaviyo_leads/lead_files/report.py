"""The report of a checked file (``results/<key>.report.json``): what will be sent and what
not, and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from klaviyo_leads.actions.action import ignored_fields
from klaviyo_leads.config import Settings
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.lead_files.bucket import FileProblem, Target
from klaviyo_leads.lead_files.checks import FIRST_ROWS, FirstRows, checked, defaults_of, digest_of
from klaviyo_leads.lead_files.csv_safety import is_formula
from klaviyo_leads.lead_files.row_bits import is_set, set_bit
from klaviyo_leads.lead_files.rows import Layout, read_rows
from klaviyo_leads.outcomes import Result


@dataclass
class Report:
    """What checking the whole file found; written as ``<key>.report.json``."""

    bucket: str
    key: str
    version_id: str | None
    run_id: str
    action: str | None
    dry_run: bool
    size: int | None = None
    problem: str | None = None
    layout: Layout = field(default_factory=Layout)
    defaults: dict[str, str] = field(default_factory=dict)
    unknown_metadata: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_to_send: int = 0
    refused: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    duplicates: int = 0
    first_duplicates: list[dict[str, int]] = field(default_factory=list)
    leads_not_remembered: int = 0  # past MAX_TRACKED_LEADS: their repeats are not counted
    # CSV rows with a cell the results file neutralises (``is_formula``), and the header.
    formula_rows: int = 0
    first_formula_rows: list[int] = field(default_factory=list)
    blank_rows: int = 0
    first_blank_rows: list[int] = field(default_factory=list)
    last_row: int = 0  # the number of the file's last row (blank lines take numbers too)
    results_key: str | None = None
    progress_key: str | None = None
    # Which rows the check refused (a bit per row): sending reads the file again and checks
    # only those again, for their result, instead of every row.
    refused_rows: bytearray = field(default_factory=bytearray)
    # The upload was taken already (a repeated notification): nothing was done this time.
    again: bool = False
    # A dry run's rows run as dry runs, when Klaviyo can be reached (``dry_run``).
    would: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.problem is None

    def was_refused(self, row: int) -> bool:
        return row >> 3 < len(self.refused_rows) and is_set(self.refused_rows, row)

    def refuse(self, row: int, result: Result) -> None:
        if len(self.refused_rows) <= row >> 3:
            self.refused_rows.extend(bytes(max(1024, (row >> 3) + 1 - len(self.refused_rows))))
        set_bit(self.refused_rows, row)
        entry = self.refused.setdefault((result.outcome.value, result.reason or ""), [0, []])
        entry[0] += 1
        if len(entry[1]) < FIRST_ROWS:
            entry[1].append(row)

    def as_json(self) -> dict[str, Any]:
        refused = sorted(self.refused.items(), key=lambda item: (-item[1][0], item[0]))
        return {
            "file": {
                "bucket": self.bucket,
                "key": self.key,
                "version_id": self.version_id,
                "size": self.size,
                "format": self.layout.format,
                "delimiter": self.layout.delimiter,
                "byte_order_mark": self.layout.bom,
            },
            "run_id": self.run_id,
            "action": self.action,
            "dry_run": self.dry_run,
            "accepted": self.accepted,
            "problem": self.problem,
            "columns": self.layout.columns,
            "unknown_columns": self.unknown_columns,
            "defaults": self.defaults,
            "unknown_metadata": self.unknown_metadata,
            "rows_read": self.rows_read,
            "rows_to_send": self.rows_to_send,
            "rows_refused": sum(count for count, _ in self.refused.values()),
            "refused": [
                {"outcome": outcome, "reason": reason, "count": count, "first_rows": rows}
                for (outcome, reason), (count, rows) in refused
            ],
            "duplicate_rows": {
                "count": self.duplicates,
                "first": self.first_duplicates,
                "leads_not_remembered": self.leads_not_remembered,
            },
            "blank_rows": {"count": self.blank_rows, "first_rows": self.first_blank_rows},
            "formula_cells": {
                "header": self.layout.format == "csv"
                and any(is_formula(name) for name in self.layout.columns),
                "rows": self.formula_rows,
                "first_rows": self.first_formula_rows,
            },
            "would": self.would,
            "results": None if self.dry_run or not self.accepted else self.results_key,
            "progress": None if self.dry_run or not self.accepted else self.progress_key,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def check_file(
    open_stream: Callable[[], IO[bytes]],
    report: Report,
    target: Target,
    metadata: Mapping[str, str],
    settings: Settings,
) -> Report:
    """Read and check every row; the report says what will be sent and what not."""
    report.defaults, report.unknown_metadata = defaults_of(metadata)
    seen = FirstRows()
    try:
        for row in read_rows(open_stream(), True if target.jsonl else None, report.layout):
            report.last_row = row.number
            if row.blank:
                report.blank_rows += 1
                if len(report.first_blank_rows) < FIRST_ROWS:
                    report.first_blank_rows.append(row.number)
                continue
            report.rows_read += 1
            if report.layout.format == "csv" and any(is_formula(cell) for cell in row.raw):
                report.formula_rows += 1
                if len(report.first_formula_rows) < FIRST_ROWS:
                    report.first_formula_rows.append(row.number)
            result, lead = checked(target.action, row, report.defaults, settings)
            if result is not None:
                report.refuse(row.number, result)
                continue
            report.rows_to_send += 1
            first = seen.first(digest_of(lead), row.number)
            if first is not None:
                report.duplicates += 1
                if len(report.first_duplicates) < FIRST_ROWS:
                    report.first_duplicates.append({"row": row.number, "same_as": first})
    except FileProblem as problem:
        report.problem = str(problem)
    report.leads_not_remembered = seen.forgotten
    report.unknown_columns = [
        name
        for name in report.layout.columns
        if ignored_fields(target.action, Lead.from_object({name: "x"}))
    ]
    return report
