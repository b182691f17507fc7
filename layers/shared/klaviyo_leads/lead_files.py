"""Lead files: a CSV or JSON Lines file of leads, checked, queued, and answered by a results file.

An object under ``<action>/`` in the lead-files bucket is a file of leads for that action;
under ``dry-run/<action>/`` it is only checked. The splitter reads the file twice, streaming:
first every row is checked as the webhook would check it (the same parsing, and the action run
up to its first Klaviyo call) and ``results/<key>.report.json`` is written; only then are the
rows put on the action's queue, ten to a ``SendMessageBatch``, each message naming its file run
and row. Which message each row got goes into the run's manifest, checkpointed as it is sent.

The assembler (on a schedule) reads each open run's manifest, looks the rows' results up in the
results table (by file run and row, where the queue path keeps them 24 h), updates
``results/<key>.progress.json`` and, once every row has a final result, streams
``results/<key>.results.csv`` (or ``.jsonl``) in the input's order and publishes a
``lead file finished`` event. A row still without a result when it must have left the queue
(dead-lettered) gets an error saying so. Everything the stack writes is under ``results/``.
"""

from __future__ import annotations

import array
import base64
import collections
import csv
import hashlib
import io
import itertools
import json
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any, cast

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Action, ignored_fields, result_fields
from klaviyo_leads.actions.lookup import Group
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.aws.queue import LEAD_FILE_ROW, LEAD_FILE_RUN, ORIGIN, lead_file_row_key
from klaviyo_leads.budget import Budget
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context, NameCache
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.lead.body import MAX_BODY_BYTES, canonical_key, ensure_object, flatten, is_known
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.observability import count, flush_counts, logger, metrics
from klaviyo_leads.outcomes import Outcome, Result

DRY_RUN_PREFIX = "dry-run/"
# Everything the stack writes in the bucket is under this prefix (reports, progress, results,
# and its working state): the splitter's rule takes every other new object, so none of the
# stack's own writes starts it.
RESULTS_PREFIX = "results/"
STATE_PREFIX = RESULTS_PREFIX + ".lead-files/"
RUNS_PREFIX = STATE_PREFIX + "runs/"
# Where a run's state goes when the run has failed, or a state there is none of ours.
SET_ASIDE_PREFIX = STATE_PREFIX + "failed/"
FINISHED_PREFIX = STATE_PREFIX + "finished/"  # a marker per finished run: it is not sent again
MAX_KEY_BYTES = 1024  # S3's limit on an object's key
KEY_HASH_CHARS = 16  # hex digits of a shortened key's SHA-256
# Message attributes of a queued row: which file run, which row.
RUN_ATTRIBUTE = LEAD_FILE_RUN
ROW_ATTRIBUTE = LEAD_FILE_ROW
SOURCE = "klaviyo.lead-actions"
FINISHED_DETAIL_TYPE = "lead file finished"

MAX_BATCH = 10  # SendMessageBatch's limit
SEND_TRIES = 3  # calls of a batch SQS refused or never received
SEND_BACK_OFF_SECONDS = 0.5  # before the second call, twice that before the third
# A sending splitter checkpoints (a manifest segment, then its state) this often; a run whose
# state is older than SENDER_STALE_SECONDS has lost its splitter: the next notification of the
# upload (Lambda's retry) resumes it. Past SENDER_GONE_SECONDS, none will: the run is failed.
CHECKPOINT_SECONDS = 20.0
SENDER_STALE_SECONDS = 60.0
SENDER_GONE_SECONDS = 3600.0
SEND_THREADS = 16  # SendMessageBatch calls at once: a call takes tens of milliseconds
IN_FLIGHT_ENTRIES = 4 * SEND_THREADS  # batches (and refused rows) held before writing
LOOKUP_THREADS = 8  # BatchGetItem calls at once
MAX_BATCH_BYTES = 240 * 1024  # SendMessageBatch's 256 KiB for all bodies, with a margin
MAX_KEYS_PER_GET = 100  # BatchGetItem's limit
FIRST_ROWS = 10  # rows named per reason and for duplicates in the report
# Distinct leads the check remembers to name repeats (a 50 MiB file has about 250,000 rows):
# 6 MiB, held whatever the file's size.
MAX_TRACKED_LEADS = 1 << 18
PART_BYTES = 5 * 1024 * 1024  # multipart upload parts: S3's minimum, so the least memory
MANIFEST_SEGMENT_BYTES = 1024 * 1024  # manifest lines held before a checkpoint writes them
# Columns a file may have (a CSV's header; a JSON Lines file's distinct keys, as reported):
# a wider header is refused before anything else is done with it.
MAX_COLUMNS = 1000
# The longest line a file may have (a row of a lead is at most 256 KB, MAX_BODY_BYTES, and the
# columns no action reads); a longer one is a row refused with ROW_TOO_LONG, never held whole.
MAX_ROW_BYTES = 1024 * 1024
# The csv module's limit on one field (128 KiB by default) would refuse a whole file for one
# long cell: the row's limit applies instead.
csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
# Without a better bound, a row without a result this long after it was queued has left the
# queue for its dead-letter queue: every delivery's back-off (42.5 min) plus five timeouts.
DEFAULT_DEAD_LETTER_AFTER_SECONDS = 6 * 3600
# The assembler runs every minute and, while a run is open, looks again this often within it;
# sooner (not under LOOK_SOONEST_SECONDS) when a run's rows, at the pace they finished since
# the last look, would all be done before then.
LOOK_EVERY_SECONDS = 5.0
LOOK_SOONEST_SECONDS = 1.0
# A look starts no later than this into its minute, so the gap before the next scheduled run
# is two seconds at most. A look that runs past the minute (seconds at 100,000 rows) holds the
# next run back (the function's reserved concurrency is one; Lambda retries a throttled
# scheduled event within its minute of age): two looks never overlap.
LOOK_FOR_SECONDS = 58.0
# A run whose look fails (an AWS call refused, its state unreadable) is looked at again, on its
# own, for this long; then it is failed: its progress says why, and LeadFileRunsFailed alarms.
# The other runs go on either way.
FAILING_FOR_SECONDS = 15 * 60
RUNS_FAILED_METRIC = "LeadFileRunsFailed"  # the stack's LeadFileRunsFailedAlarm watches it

# Reasons of a row that the action never answered; they name no lead data.
NOT_QUEUED = "The row could not be put on the action's queue"
DEAD_LETTERED = "The lead went to the action's dead-letter queue after its last delivery"
NO_RESULT = "No result came back for this row before the file's deadline"
RESULT_EXPIRED = "The row's result was no longer kept (results are kept 24 hours)"


class FileProblem(Exception):
    """The file cannot be taken: nothing of it is sent. The text names no lead data."""


class RunProblem(Exception):
    """A run cannot go on as it is; the text names no lead data."""


@dataclass(frozen=True)
class Target:
    """What an object's key says: the action, a dry run, and where its outputs go."""

    key: str
    action: Action
    dry_run: bool
    jsonl: bool
    # The run of an upload that is no longer the key's newest: its outputs carry its id, and
    # the plain names describe the newest upload.
    older_run: str | None = None

    @property
    def report_key(self) -> str:
        return output_key(self.key, f"{self._run}.report.json", RESULTS_PREFIX)

    @property
    def progress_key(self) -> str:
        return output_key(self.key, f"{self._run}.progress.json", RESULTS_PREFIX)

    @property
    def results_key(self) -> str:
        suffix = f"{self._run}.results.{'jsonl' if self.jsonl else 'csv'}"
        return output_key(self.key, suffix, RESULTS_PREFIX)

    @property
    def _run(self) -> str:
        return f".{self.older_run}" if self.older_run else ""


def is_own_output(key: str) -> bool:
    """Keys the lead-file path writes itself, never read as a file of leads."""
    return key.startswith(RESULTS_PREFIX)


def output_key(key: str, suffix: str, prefix: str = "") -> str:
    """``prefix + key + suffix``: an output named after the whole key, so two files never
    share one (``coll.csv``, ``coll.txt``), within S3's 1,024 bytes. A key too long for that
    keeps its first bytes and ends in ``~`` and 16 hex digits of its SHA-256."""
    name = f"{prefix}{key}{suffix}"
    if len(name.encode()) <= MAX_KEY_BYTES:
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()[:KEY_HASH_CHARS]
    room = MAX_KEY_BYTES - len(f"{prefix}~{digest}{suffix}".encode())
    head = key.encode()[:room].decode("utf-8", "ignore")  # never half a character
    return f"{prefix}{head}~{digest}{suffix}"


def is_jsonl_name(key: str) -> bool:
    return key.lower().endswith((".jsonl", ".ndjson", ".jsonlines"))


def target_of(key: str) -> Target:
    """The key's action; ``FileProblem`` when its prefix names none."""
    dry_run = key.startswith(DRY_RUN_PREFIX)
    rest = key[len(DRY_RUN_PREFIX) :] if dry_run else key
    name, _, file_name = rest.partition("/")
    action = ACTIONS.get(name)
    if action is None or not file_name:
        known = ", ".join(sorted(ACTIONS))
        raise FileProblem(
            "The file is not under an action's prefix: put it under <action>/ "
            f"(or dry-run/<action>/), where <action> is one of {known}"
        )
    return Target(key, action, dry_run, is_jsonl_name(key))


# -- Reading rows ------------------------------------------------------------------------------


@dataclass
class Row:
    """One row: its number (1 = the first after the header; a blank line takes a number, so
    a row's number is its place in the file) and what it holds."""

    number: int
    values: dict[str, Any] | None  # the row's columns as written
    raw: Any  # CSV: the fields; JSON Lines: the object, or the line when it is none
    problem: Result | None = None  # a JSON Lines line that is not a lead, a row too long
    blank: bool = False  # a blank line between rows: counted, nothing sent, no result


@dataclass
class Layout:
    """What the reader learnt about the file."""

    format: str = "csv"
    delimiter: str | None = None
    bom: bool = False
    columns: list[str] = field(default_factory=list)


_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def _sniff_delimiter(line: str) -> str:
    """Comma, semicolon or tab: whichever the header line has most of outside quotes."""
    bare = _QUOTED.sub("", line)
    counts = {d: bare.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Raw(io.RawIOBase):
    """Any object with ``read(n)`` (an S3 body, a file) as a raw stream to buffer."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_rows(stream: IO[bytes], jsonl: bool | None, layout: Layout) -> Iterator[Row]:
    """The file's rows, streaming; ``FileProblem`` for what makes the whole file unreadable.

    ``jsonl`` None: decided by the first character (``{`` is JSON Lines). A line longer than
    ``MAX_ROW_BYTES`` is never held: its row is refused (``ROW_TOO_LONG``) and the rest read on.
    """
    buffered = io.BufferedReader(_Raw(stream), buffer_size=64 * 1024)
    head = buffered.peek(4096)[:4096]
    bom = head.startswith(b"\xef\xbb\xbf")
    layout.bom = bom
    if bom:
        buffered.read(3)
    if not head.removeprefix(b"\xef\xbb\xbf").strip():
        raise FileProblem("The file is empty")
    if jsonl is None:
        jsonl = head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{")
    lines = _Lines(buffered)
    if jsonl:
        layout.format = "jsonl"
        rows = _jsonl_rows(lines, layout)
    else:
        layout.format = "csv"
        rows = _csv_rows(lines, layout)
    yield from _without_trailing_blanks(rows)


class _Lines:
    """A file's lines as text, one at a time and each within ``MAX_ROW_BYTES``: a longer one
    is read on in small pieces, dropped, and marked ``too_long`` (it comes as a blank line).
    ``row`` is the row being read, which a line that is not UTF-8 names."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.row = 0  # 0: the header (JSON Lines: before the first line)
        self.too_long = False

    def __iter__(self) -> Iterator[str]:
        while True:
            line = self._stream.readline(MAX_ROW_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_ROW_BYTES:
                while line and not line.endswith(b"\n"):
                    line = self._stream.readline(64 * 1024)
                self.too_long = True
                yield "\n"
                continue
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"Row {self.row}" if self.row else "The header row"
                raise FileProblem(
                    f"{where} is not valid UTF-8 (byte 0x{line[exc.start]:02X}): save the file "
                    "as UTF-8 (in Excel: Save As, CSV UTF-8; in LibreOffice: Save As, "
                    "Character set Unicode (UTF-8)) and upload it again"
                ) from exc

    def take_too_long(self) -> bool:
        too_long, self.too_long = self.too_long, False
        return too_long


def _too_long() -> Result:
    return outcomes.ROW_TOO_LONG(limit=MAX_ROW_BYTES // 1024)


def _without_trailing_blanks(rows: Iterator[Row]) -> Iterator[Row]:
    """Blank lines between rows, not the ones that end the file (a last newline or two)."""
    blanks: list[Row] = []
    for row in rows:
        if row.blank:
            blanks.append(row)
            continue
        yield from blanks
        blanks.clear()
        yield row


def _csv_rows(lines: _Lines, layout: Layout) -> Iterator[Row]:
    text = iter(lines)
    number = 0
    try:
        first = next(text, "")
        while first and not first.strip() and not lines.too_long:
            first = next(text, "")
        if lines.take_too_long():
            raise FileProblem(f"The header row is longer than {MAX_ROW_BYTES // 1024:,} KB")
        if not first.strip():
            raise FileProblem("The file is empty")
        layout.delimiter = _sniff_delimiter(first)
        reader = csv.reader(itertools.chain([first], text), delimiter=layout.delimiter)
        header = [name.strip() for name in next(reader)]
        if len(header) > MAX_COLUMNS:
            raise FileProblem(
                f"The header has {len(header):,} columns, more than the {MAX_COLUMNS:,} a file "
                "may have"
            )
        _check_header(header)
        layout.columns = header
        data = 0
        while True:
            number += 1
            lines.row = number
            fields = next(reader, None)
            if fields is None:
                break
            if lines.take_too_long():
                yield Row(number, None, [""] * len(header), _too_long())
                data += 1
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                yield Row(number, None, [], blank=True)
                continue
            data += 1
            if len(fields) > len(header):
                raise FileProblem(
                    f"Row {number} has {len(fields)} fields, more than the header's "
                    f"{len(header)} columns (a delimiter inside an unquoted value?)"
                )
            fields += [""] * (len(header) - len(fields))
            values = {name: value for name, value in zip(header, fields, strict=True) if name}
            yield Row(number, values, fields)
    except csv.Error as exc:
        raise FileProblem(f"Row {number} cannot be read as CSV ({exc})") from exc
    if data == 0:
        raise FileProblem("The file has a header but no rows")


def _check_header(header: list[str]) -> None:
    """Every check counts each name once: linear in the header's width."""
    counts = collections.Counter(name for name in header if name)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise FileProblem(f"The header names a column more than once: {', '.join(twice)}")
    if not any(is_known(canonical_key(name)) for name in counts):
        raise FileProblem(
            "The first row is not a header of lead keys: none of its columns is one "
            "(email, phone_1, Email, Phone 1, klaviyo.list_id, ...)"
        )


def _jsonl_rows(lines: _Lines, layout: Layout) -> Iterator[Row]:
    seen: dict[str, None] = {}
    data = 0
    lines.row = 1
    for number, text in enumerate(lines, start=1):
        lines.row = number + 1
        if lines.take_too_long():
            data += 1
            yield Row(number, None, "", _too_long())
            continue
        if not text.strip():
            yield Row(number, None, "", blank=True)
            continue
        data += 1
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            yield Row(number, None, text.rstrip("\r\n"), outcomes.BODY_NOT_JSON())
            continue
        if not isinstance(value, dict):
            yield Row(number, None, value, outcomes.BODY_NOT_OBJECT())
            continue
        for key in value:
            if key not in seen and len(seen) < MAX_COLUMNS:
                seen[key] = None
                layout.columns.append(key)
        yield Row(number, value, value)
    if data == 0:
        raise FileProblem("The file is empty")


# -- Checking a row ----------------------------------------------------------------------------


class _Reached(BaseException):
    """The action got as far as calling Klaviyo: the row passed every check made before."""


class _Offline:
    """A client whose every use is the action reaching Klaviyo."""

    def __getattr__(self, name: str) -> Any:
        def reached(*args: Any, **kwargs: Any) -> Any:
            raise _Reached

        return reached


class _OfflineNames(NameCache):
    """A list's or segment's details without asking Klaviyo: the rest of the row's checks
    still run (an unknown id is found when the row is sent, as for the webhook)."""

    def get(self, kind: str, item_id: str, fetch: Callable[[], Any]) -> Any:
        return Group(item_id, None)


def defaults_of(metadata: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The object's metadata as lead keys (settings for every row), and what is no lead key."""
    defaults: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in metadata.items():
        key = canonical_key(name)
        if is_known(key):
            defaults[key] = value
        else:
            unknown.append(name)
    return defaults, unknown


def lead_of(row: Row, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The row as the lead to send: its own non-blank values, and the file's settings
    (metadata) for the keys the row leaves blank. A column overrides the metadata."""
    values = row.values or {}
    present = {
        key
        for key, value in flatten(values).items()
        if value is not None and not (isinstance(value, str) and not value.strip())
    }
    lead = {key: value for key, value in defaults.items() if key not in present}
    for key, value in values.items():
        if isinstance(value, str) and not value.strip():
            continue
        lead[key] = value
    return lead


def check(action: Action, lead: Any, settings: Settings) -> Result | None:
    """The result the webhook would give this lead without calling Klaviyo, or None when
    it would call Klaviyo (the row is sent)."""
    body = json.dumps(lead, separators=(",", ":"), default=str)
    if len(body.encode()) > MAX_BODY_BYTES:
        return outcomes.BODY_TOO_LARGE(limit=MAX_BODY_BYTES // 1024)
    parsed: Lead | None = None
    try:
        parsed = Lead.from_object(ensure_object(lead))
        budget = Budget(parsed.timeout_seconds())
        offline = _Offline()  # Klaviyo and the create ledger alike: reached means "send it"
        ctx = Context(
            cast(KlaviyoClient, offline),
            budget,
            settings,
            _OfflineNames(),
            ledger=cast(CreateLedger, offline),
        )
        result = action.run(ctx, parsed)
    except _Reached:
        return None
    except Result as stopped:
        result = stopped
    if result.outcome is Outcome.SUCCESS or result.retryable:
        return None
    result.ignored_fields = ignored_fields(action, parsed) if parsed is not None else None
    return result


def fields_of(action: Action, result: Result) -> dict[str, Any]:
    return result_fields(action, result)


def _digest(lead: Mapping[str, Any]) -> int:
    """64 bits of the lead (never 0: that marks a free slot of ``FirstRows``)."""
    text = json.dumps(lead, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest()) | 1


class FirstRows:
    """Each distinct lead's first row, in 24 bytes a lead (a dict would take ten times that):
    open addressing over two arrays made once at their full size, at most half full, so the
    splitter's memory is the same whatever the file's size. Past ``MAX_TRACKED_LEADS``
    distinct leads, a new lead is not remembered (its repeats are not named)."""

    def __init__(self, capacity: int = MAX_TRACKED_LEADS) -> None:
        slots = 1 << (2 * capacity - 1).bit_length()
        self._digests = array.array("Q", bytes(8 * slots))
        self._rows = array.array("I", bytes(4 * slots))
        self._capacity = capacity
        self._count = 0
        self.forgotten = 0  # distinct leads not remembered: the table was full

    @property
    def full(self) -> bool:
        return self._count >= self._capacity

    def first(self, digest: int, row: int) -> int | None:
        """The first row with ``digest``; None (and ``row`` remembered, unless full) when
        this is it."""
        mask = len(self._digests) - 1
        slot = digest & mask
        while True:
            held = self._digests[slot]
            if held == 0:
                break
            if held == digest:
                return int(self._rows[slot])
            slot = (slot + 1) & mask
        if self.full:
            self.forgotten += 1
        else:
            self._digests[slot], self._rows[slot] = digest, row
            self._count += 1
        return None


# -- The report --------------------------------------------------------------------------------


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
    # A dry run's rows run as dry runs, when Klaviyo can be reached (lead_file_dry_run).
    would: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.problem is None

    def was_refused(self, row: int) -> bool:
        return row >> 3 < len(self.refused_rows) and _is_set(self.refused_rows, row)

    def refuse(self, row: int, result: Result) -> None:
        if len(self.refused_rows) <= row >> 3:
            self.refused_rows.extend(bytes(max(1024, (row >> 3) + 1 - len(self.refused_rows))))
        _set(self.refused_rows, row)
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
            result, lead = _checked(target.action, row, report.defaults, settings)
            if result is not None:
                report.refuse(row.number, result)
                continue
            report.rows_to_send += 1
            first = seen.first(_digest(lead), row.number)
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


def _checked(
    action: Action, row: Row, defaults: Mapping[str, Any], settings: Settings
) -> tuple[Result | None, dict[str, Any]]:
    if row.problem is not None:
        row.problem.ignored_fields = None
        return row.problem, {}
    lead = lead_of(row, defaults)
    return check(action, lead, settings), lead


# -- Writing to S3, streaming ------------------------------------------------------------------


class S3Writer:
    """An object written in parts as it grows: never more than a part in memory."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str) -> None:
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._upload_id is None:
            self._upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        number = len(self._parts) + 1
        answer = self.s3.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._buffer,  # sent before it is cleared: no copy of the part
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()

    def close(self) -> None:
        if self._upload_id is None:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=bytes(self._buffer),
                ContentType=self.content_type,
            )
            return
        if self._buffer:
            self._flush()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )


def put_json(s3: Any, bucket: str, key: str, value: Any, **extra: Any) -> Any:
    body = json.dumps(value, indent=2, default=str).encode()
    return s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **extra)


# -- The splitter ------------------------------------------------------------------------------


@dataclass
class Services:
    """The AWS clients and the stack's settings the lead-file path works with."""

    s3: Any
    sqs: Any
    dynamodb: Any = None
    events: Any = None
    settings: Settings = field(default_factory=Settings)
    queue_urls: dict[str, str] = field(default_factory=dict)
    dead_letter_queue_urls: dict[str, str] = field(default_factory=dict)
    results_table: str | None = None
    bus_name: str | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    dead_letter_after_seconds: float = DEFAULT_DEAD_LETTER_AFTER_SECONDS
    # Klaviyo for a dry run's rows: a runtime per stream of calls (None: the check only).
    klaviyo: Callable[[], Any] | None = None
    dry_run_seconds: float = 600.0
    wall: Callable[[], float] = time.time
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Services:
        import os

        import boto3

        env = os.environ if env is None else env

        def by_action(prefix: str) -> dict[str, str]:
            return {
                name: env[f"{prefix}{camel(name)}"]
                for name in ACTIONS
                if env.get(f"{prefix}{camel(name)}")
            }

        from botocore.config import Config

        return cls(
            s3=boto3.client("s3"),
            # No retry by the SDK: one after a call that timed out could queue rows twice.
            # ``_send_batch`` retries what surely queued nothing.
            sqs=boto3.client("sqs", config=Config(retries={"total_max_attempts": 1})),
            dynamodb=boto3.client("dynamodb"),
            events=boto3.client("events"),
            settings=Settings.from_env(env),
            queue_urls=by_action("QUEUE_URL_"),
            dead_letter_queue_urls=by_action("DEAD_LETTER_QUEUE_URL_"),
            results_table=env.get("RESULTS_TABLE_NAME") or None,
            bus_name=env.get("RESULTS_EVENT_BUS_NAME") or None,
            max_file_bytes=int(env.get("LEAD_FILE_MAX_BYTES") or DEFAULT_MAX_FILE_BYTES),
            dead_letter_after_seconds=float(
                env.get("LEAD_FILE_DEAD_LETTER_AFTER_SECONDS") or DEFAULT_DEAD_LETTER_AFTER_SECONDS
            ),
            klaviyo=_klaviyo(env),
        )


def _klaviyo(env: Mapping[str, str]) -> Callable[[], Any] | None:
    """Runtimes for a dry run's rows, when the stack gives the splitter Klaviyo's key."""
    from klaviyo_leads.lead_file_dry_run import runtimes

    return runtimes(env)


def camel(action: str) -> str:
    """``subscribe_profile_to_list`` -> ``SubscribeProfileToList`` (the stack's logical ids)."""
    return "".join(part.capitalize() for part in action.split("_"))


def run_id_of(
    bucket: str, key: str, version_id: str | None, etag: str | None, modified: Any = None
) -> str:
    """One upload, one run: the same for a repeated notification, new for a new upload (its
    version id; when versioning is off, its time: the same bytes uploaded again are a new run)."""
    text = f"{bucket}/{key}#{version_id or ''}#{etag or ''}#{modified or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def take_file(services: Services, bucket: str, key: str, version_id: str | None = None) -> Report:
    """Check an uploaded file, write its report, and (unless a dry run) queue its rows.

    S3 telling the splitter again of an upload (or Lambda retrying it) queues nothing twice:
    a run being sent by a live splitter, or sent already, is left alone; a run whose splitter
    stopped part-way is resumed from its last checkpoint.
    """
    s3 = services.s3
    dry_run = key.startswith(DRY_RUN_PREFIX)
    try:
        target = target_of(key)
    except FileProblem as problem:
        # Not read (the splitter may read only under the actions' prefixes): only reported.
        report = Report(
            bucket, key, version_id, run_id_of(bucket, key, version_id, None), None, dry_run
        )
        report.problem = str(problem)
        put_json(s3, bucket, output_key(key, ".report.json", RESULTS_PREFIX), report.as_json())
        return report
    head_args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        head_args["VersionId"] = version_id
    head = s3.head_object(**head_args)
    version_id = version_id or head.get("VersionId")
    if version_id == "null":
        version_id = None
    run_id = run_id_of(bucket, key, version_id, head.get("ETag"), head.get("LastModified"))
    report = Report(bucket, key, version_id, run_id, None, dry_run)
    report.size = int(head.get("ContentLength", 0))
    report.action = target.action.name
    if not _is_newest(s3, bucket, key, run_id):
        target = replace(target, older_run=run_id)
    report.results_key, report.progress_key = target.results_key, target.progress_key
    taken = None if target.dry_run else _taken(services, bucket, run_id)
    if taken is not None:
        taken = _sender_gone(services, bucket, run_id, taken)
        if taken is None:
            report.again = True
            return report

    def open_stream() -> IO[bytes]:
        return cast(
            IO[bytes], s3.get_object(Bucket=bucket, Key=key, **_version(version_id))["Body"]
        )

    if report.size > services.max_file_bytes:
        limit = services.max_file_bytes / (1024 * 1024)
        report.problem = (
            f"The file is larger than the stack's limit of {limit:g} MB (LeadFileMaxBytes)"
        )
    elif target.action.name not in services.queue_urls and not target.dry_run:
        report.problem = f"The stack has no queue for {target.action.name}"
    else:
        metadata = head.get("Metadata") or {}
        check_file(open_stream, report, target, metadata, services.settings)
        if target.dry_run and report.accepted and services.klaviyo is not None:
            from klaviyo_leads.lead_file_dry_run import would

            report.would = would(
                target.action,
                _leads_to_send(open_stream, report, target),
                services.klaviyo,
                services.dry_run_seconds,
                report.rows_to_send,
            )
    # The report first: when it cannot be written this raises, and no row is sent.
    put_json(s3, bucket, target.report_key, report.as_json())
    if target.dry_run or not report.accepted:
        return report
    send_rows(services, report, target, open_stream, taken)
    return report


def _is_newest(s3: Any, bucket: str, key: str, run_id: str) -> bool:
    """Whether the run's upload is still the key's newest (a deleted key has none newer)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _missing(exc):
            return True
        raise
    version_id = head.get("VersionId")
    version_id = None if version_id == "null" else version_id
    newest = run_id_of(bucket, key, version_id, head.get("ETag"), head.get("LastModified"))
    return newest == run_id


def _leads_to_send(
    open_stream: Callable[[], IO[bytes]], report: Report, target: Target
) -> Iterator[dict[str, Any]]:
    """The leads of the rows the check did not refuse, in the file's order."""
    for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
        if row.problem is None and not row.blank and not report.was_refused(row.number):
            yield lead_of(row, report.defaults)


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def state_key_of(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/state.json"


def _finished_key(run_id: str) -> str:
    return f"{FINISHED_PREFIX}{run_id}.json"


@dataclass
class _Taken:
    """A run begun before: its state and the state's ETag, or no state (the run is over)."""

    state: dict[str, Any] | None
    etag: str | None = None


def _taken(services: Services, bucket: str, run_id: str) -> _Taken | None:
    """The run as an earlier notification left it; None when it never began."""
    s3 = services.s3
    try:
        answer = s3.get_object(Bucket=bucket, Key=state_key_of(run_id))
        return _Taken(json.loads(answer["Body"].read()), answer.get("ETag"))
    except Exception as exc:
        if not _missing(exc):
            raise
    for over in (_finished_key(run_id), SET_ASIDE_PREFIX + f"{run_id}/state.json"):
        try:
            s3.head_object(Bucket=bucket, Key=over)
            return _Taken(None)
        except Exception as exc:
            if not _missing(exc):
                raise
    return None


def _sender_gone(services: Services, bucket: str, run_id: str, taken: _Taken) -> _Taken | None:
    """The run when its splitter stopped while sending (no checkpoint for
    ``SENDER_STALE_SECONDS``), for this one to finish; None when the run is sent, or being
    sent by a splitter that is still checkpointing (waited for once, to tell)."""
    state = taken.state
    if state is None or not state.get("sending"):
        return None
    age = services.wall() - float(state.get("heartbeat_at") or state["started_at"])
    if age <= SENDER_STALE_SECONDS:
        services.sleep(SENDER_STALE_SECONDS - age + 1)
        again = _taken(services, bucket, run_id)
        if again is None or again.state is None or again.etag != taken.etag:
            return None
    return taken


def send_rows(
    services: Services,
    report: Report,
    target: Target,
    open_stream: Callable[[], IO[bytes]],
    resumed: _Taken | None = None,
) -> None:
    """Queue the checked file's rows; the manifest records each row's message (or result).

    The manifest is written in segments: every ``CHECKPOINT_SECONDS`` the rows queued so far
    are written, then the state (``sent_through`` the last of them), which is also the
    sender's heartbeat. A splitter resuming a run queues the rows after ``sent_through``;
    rows it queues again were queued under another message, and are still one row
    (``queueing.lead_file_row_key``). Every state write is conditional on the one before:
    a splitter whose run was taken over stops.
    """
    s3, bucket = services.s3, report.bucket
    state_key = state_key_of(report.run_id)
    if resumed is not None and resumed.state is not None:
        state, etag = resumed.state, resumed.etag
        logger.warning(
            "Resuming a lead file run whose splitter stopped",
            extra={"run_id": report.run_id, "sent_through": state.get("sent_through")},
        )
    else:
        state = {
            "run_id": report.run_id,
            "bucket": bucket,
            "key": report.key,
            "version_id": report.version_id,
            "action": target.action.name,
            "format": report.layout.format,
            "delimiter": report.layout.delimiter,
            "byte_order_mark": report.layout.bom,
            "columns": report.layout.columns,
            "report": target.report_key,
            "progress": target.progress_key,
            "results": target.results_key,
            "manifest": f"{RUNS_PREFIX}{report.run_id}/manifest/",
            "segments": 0,
            "sent_through": 0,
            "row_keys": True,
            "rows": report.rows_read,
            "last_row": report.last_row,
            "started_at": services.wall(),
            "queued": 0,
            "by_outcome": {},
            "sending": True,
        }
        etag = None
    counts = {"queued": int(state.get("queued") or 0)}
    refused: dict[str, int] = dict(state.get("by_outcome") or {})
    sent_through = int(state.get("sent_through") or 0)
    segment = bytearray()  # the manifest's lines since the last checkpoint
    last_row = {"number": sent_through}
    state_exists = {"yes": resumed is not None}

    def save(**changes: Any) -> None:
        """The state, on condition that it is still this splitter's (else ``_TakenOver``)."""
        nonlocal etag
        state.update(
            changes,
            queued=counts["queued"],
            by_outcome=refused,
            sent_through=last_row["number"],
            heartbeat_at=services.wall(),
        )
        condition = (
            {"IfMatch": etag} if etag else {} if state_exists["yes"] else {"IfNoneMatch": "*"}
        )
        try:
            etag = put_json(s3, bucket, state_key, state, **condition).get("ETag")
            state_exists["yes"] = True
        except Exception as exc:
            if _precondition_failed(exc):
                raise _TakenOver from exc
            raise

    try:
        save()
    except _TakenOver:
        return  # another notification's splitter has it
    queue_url = services.queue_urls[target.action.name]
    pending: list[tuple[int, dict[str, Any], str]] = []
    # Batches in flight, oldest first: the manifest is written in the file's order, and at
    # most a few batches' rows are held at once (SQS's latency, not the file, sets the pace).
    in_flight: collections.deque[Future[list[tuple[int, bytes, bool | None]]]] = collections.deque()

    def lines_of(
        batch: list[tuple[int, dict[str, Any], str]],
    ) -> list[tuple[int, bytes, bool | None]]:
        """The batch's manifest lines, each with whether SQS took the row."""
        ids, in_doubt = _send_batch(services, queue_url, report.run_id, batch)
        lines: list[tuple[int, bytes, bool | None]] = []
        for (number, _, _), message_id in zip(batch, ids, strict=True):
            if message_id is not None:
                lines.append((number, _line({"r": number, "m": message_id}), True))
            elif in_doubt:
                # SQS did not answer: it may have the row. Not sent again; its result is
                # looked up by row like any other, and it has none if SQS had not taken it.
                lines.append((number, _line({"r": number, "q": 1}), True))
            else:
                fields = _unanswered(target.action, NOT_QUEUED)
                lines.append((number, _line({"r": number, "x": fields}), False))
        return lines

    def written(limit: int) -> None:
        while len(in_flight) > limit:
            for number, line, taken in in_flight.popleft().result():
                if taken:
                    counts["queued"] += 1
                elif taken is False:
                    refused["error"] = refused.get("error", 0) + 1
                segment.extend(line)
                last_row["number"] = number

    def done_now(number: int, line: bytes) -> Future[list[tuple[int, bytes, bool | None]]]:
        """A refused row's line (counted already), in its place among the batches."""
        future: Future[list[tuple[int, bytes, bool | None]]] = Future()
        future.set_result([(number, line, None)])
        return future

    checkpointed = {"at": services.wall()}

    def checkpoint(final: bool = False) -> None:
        """The rows queued so far into a manifest segment, then the state."""
        written(0)
        if segment:
            s3.put_object(
                Bucket=bucket,
                Key=f"{state['manifest']}{int(state['segments']):06d}.jsonl",
                Body=bytes(segment),
                ContentType="application/x-ndjson",
            )
            state["segments"] = int(state["segments"]) + 1
            segment.clear()
        if final:
            save(sending=False, queued_at=services.wall(), done=sum(refused.values()))
        else:
            save()
        checkpointed["at"] = services.wall()

    def due() -> bool:
        return (
            services.wall() - checkpointed["at"] >= CHECKPOINT_SECONDS
            or len(segment) >= MANIFEST_SEGMENT_BYTES
        )

    pool = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="lead-file-send")
    try:
        size = 0
        for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
            if row.number <= sent_through or row.blank:
                continue  # in the manifest already (sent by the splitter before), or blank
            if report.was_refused(row.number):
                result, lead = _checked(target.action, row, report.defaults, services.settings)
            else:
                result, lead = None, lead_of(row, report.defaults)
            if result is not None:
                if pending:
                    in_flight.append(pool.submit(lines_of, pending))
                    pending, size = [], 0
                refused[result.outcome.value] = refused.get(result.outcome.value, 0) + 1
                line = _line({"r": row.number, "x": fields_of(target.action, result)})
                in_flight.append(done_now(row.number, line))
                written(IN_FLIGHT_ENTRIES)
                continue
            body = json.dumps(lead, separators=(",", ":"), default=str)
            if pending and (len(pending) == MAX_BATCH or size + len(body) > MAX_BATCH_BYTES):
                in_flight.append(pool.submit(lines_of, pending))
                pending, size = [], 0
                written(IN_FLIGHT_ENTRIES)
                if due():
                    checkpoint()
            pending.append((row.number, lead, body))
            size += len(body)
        if pending:
            in_flight.append(pool.submit(lines_of, pending))
        checkpoint(final=True)
    except _TakenOver:
        logger.warning("A lead file run was taken over", extra={"run_id": report.run_id})
        return
    except BaseException:
        for future in in_flight:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    put_json(s3, bucket, target.progress_key, _progress(state))


class _TakenOver(Exception):
    """Another splitter wrote the run's state since this one did: it sends the rest."""


def _send_batch(
    services: Services, queue_url: str, run_id: str, rows: list[tuple[int, dict[str, Any], str]]
) -> tuple[list[str | None], bool]:
    """Each row's message id, None where SQS did not take it; and whether SQS left the rest
    in doubt (a call without an answer: sent again, it could queue them twice, so it is not).
    A call SQS answered with an error, or that never reached it, is made again."""
    ids: list[str | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    for attempt in range(SEND_TRIES):
        if attempt:
            services.sleep(SEND_BACK_OFF_SECONDS * attempt)
        entries = [
            {
                "Id": str(index),
                "MessageBody": rows[index][2],
                "MessageAttributes": {
                    RUN_ATTRIBUTE: {"DataType": "String", "StringValue": run_id},
                    ROW_ATTRIBUTE: {"DataType": "Number", "StringValue": str(rows[index][0])},
                    ORIGIN: {
                        "DataType": "String",
                        "StringValue": lead_file_row_key(run_id, rows[index][0]),
                    },
                },
            }
            for index in todo
        ]
        try:
            answer = services.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:
            answered = _not_taken(exc)
            logger.warning(
                "SendMessageBatch failed for lead file rows",
                extra={
                    "run_id": run_id,
                    "rows": len(todo),
                    "reason": _reason(exc),
                    "sent_again": answered and attempt + 1 < SEND_TRIES,
                },
            )
            if not answered:
                return ids, True
            continue
        for sent in answer.get("Successful", []):
            ids[int(sent["Id"])] = str(sent["MessageId"])
        failed = answer.get("Failed", [])
        if failed:
            logger.warning(
                "SQS refused lead file rows",
                extra={
                    "run_id": run_id,
                    "rows": len(failed),
                    "codes": sorted({str(f.get("Code")) for f in failed}),
                },
            )
        # An entry refused for what it is (SenderFault) is refused again: not sent again.
        todo = [
            int(f["Id"]) for f in failed if not f.get("SenderFault") and ids[int(f["Id"])] is None
        ]
        if not todo:
            break
    return ids, False


def _not_taken(exc: Exception) -> bool:
    """Whether a failed call surely queued nothing: SQS answered with an error, or the call
    never reached it. A call that timed out waiting for the answer may have."""
    if isinstance(getattr(exc, "response", None), dict):
        return True
    try:
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
    except ImportError:  # pragma: no cover - botocore is in every Lambda runtime
        return False
    return isinstance(exc, ConnectTimeoutError | EndpointConnectionError)


def _missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"NoSuchKey", "404", "NotFound"}


def _line(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), default=str) + "\n").encode()


def _unanswered(action: Action, reason: str) -> dict[str, Any]:
    return result_fields(action, Result(Outcome.ERROR, reason))


def _precondition_failed(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def _progress(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": state["run_id"],
        "key": state["key"],
        "action": state["action"],
        "rows": state["rows"],
        "queued": state.get("queued", 0),
        "done": state.get("done", 0),
        "by_outcome": state.get("by_outcome", {}),
        "rows_per_second": state.get("rows_per_second"),
        "formula_rows": state.get("formula_rows"),
        "finished": bool(state.get("finished")),
        "results": state["results"] if state.get("finished") else None,
        "failed": bool(state.get("failed")),
        "problem": state.get("problem"),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# -- The assembler -----------------------------------------------------------------------------


def open_runs(services: Services, bucket: str) -> list[str]:
    keys: list[str] = []
    paginator = services.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=RUNS_PREFIX):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/state.json")]
    return keys


def check_runs(services: Services, bucket: str) -> list[dict[str, Any]]:
    """Look at every open run once, each on its own: the progress of each (finished and
    failed ones included). A run whose look fails does not stop the others."""
    found = []
    for key in open_runs(services, bucket):
        try:
            found.append(check_run(services, bucket, key))
        except Exception as exc:
            found.append(_look_failed(services, bucket, key, exc))
    return found


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


_STATE_FIELDS = ("run_id", "bucket", "key", "action", "format", "columns", "rows", "results")


def read_state(s3: Any, bucket: str, state_key: str) -> dict[str, Any]:
    """A run's state, or ``RunProblem`` when it is none the splitter wrote for this bucket:
    the keys it names are the run's own (its file, its outputs), never others."""
    try:
        state = _read_json(s3, bucket, state_key)
    except ValueError as exc:
        raise RunProblem("The run's state is not JSON") from exc
    run_id = state_key.removeprefix(RUNS_PREFIX).partition("/")[0]
    if not isinstance(state, dict) or any(name not in state for name in _STATE_FIELDS):
        raise RunProblem("The run's state is not one the splitter wrote")
    if state["run_id"] != run_id or state["bucket"] != bucket or state["action"] not in ACTIONS:
        raise RunProblem("The run's state names another run, bucket or action")
    if not all(_is_own(state, name, check) for name, check in _OWN_KEYS.items()):
        raise RunProblem("The run's state names keys that are not a run's outputs")
    if not str(state.get("manifest", "")).startswith(f"{RUNS_PREFIX}{run_id}/"):
        raise RunProblem("The run's state names a manifest that is not the run's own")
    return cast(dict[str, Any], state)


# What each output a state names must look like: the assembler writes nothing else.
_OWN_KEYS: dict[str, Callable[[str], bool]] = {
    "results": lambda k: _is_output(k) and k.endswith((".results.csv", ".results.jsonl")),
    "progress": lambda k: _is_output(k) and k.endswith(".progress.json"),
    "report": lambda k: _is_output(k) and k.endswith(".report.json"),
}


def _is_output(key: str) -> bool:
    return key.startswith(RESULTS_PREFIX) and not key.startswith(STATE_PREFIX)


def _is_own(state: Mapping[str, Any], name: str, check: Callable[[str], bool]) -> bool:
    value = state.get(name)
    return isinstance(value, str) and check(value)


def _reason(exc: Exception) -> str:
    """What stopped a look, naming no lead data: the AWS call and its error code, or ours."""
    if isinstance(exc, RunProblem | FileProblem):
        return str(exc)
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code:
        return f"{getattr(exc, 'operation_name', None) or 'An AWS call'} was refused: {code}"
    return f"An unexpected error ({type(exc).__name__})"


def _look_failed(services: Services, bucket: str, state_key: str, exc: Exception) -> dict[str, Any]:
    """Note why the run's look failed in its state and progress; past FAILING_FOR_SECONDS,
    or when the state is none of a run's, the run is failed and its state set aside."""
    s3, reason = services.s3, _reason(exc)
    logger.error(
        "A lead file run could not be looked at",
        extra={"state": state_key, "reason": reason, "error_type": type(exc).__name__},
    )
    count("LeadFileLooksFailed")
    try:
        state = read_state(s3, bucket, state_key)
    except Exception as unreadable:
        count(RUNS_FAILED_METRIC)
        problem = _reason(unreadable)
        _set_aside(s3, bucket, state_key)
        return {"state": state_key, "failed": True, "problem": problem, "finished": False}
    now = services.wall()
    since = float(state.get("failing_since") or now)
    state.update(problem=reason, failing_since=since)
    if now - since >= FAILING_FOR_SECONDS:
        state["failed"] = True
        count(RUNS_FAILED_METRIC)
    try:
        put_json(s3, bucket, state["progress"], _progress(state))
        if state.get("failed"):
            _set_aside(s3, bucket, state_key, state)
        else:
            put_json(s3, bucket, state_key, state)
    except Exception as unwritten:  # the next look tries again
        logger.error(
            "A lead file run's failure could not be written",
            extra={"state": state_key, "reason": _reason(unwritten)},
        )
    return _progress(state)


def _set_aside(
    s3: Any, bucket: str, state_key: str, state: Mapping[str, Any] | None = None
) -> None:
    """Out of the open runs: kept under ``.lead-files/failed/`` for whoever looks into it."""
    aside = SET_ASIDE_PREFIX + state_key.removeprefix(RUNS_PREFIX)
    try:
        if state is not None:
            put_json(s3, bucket, aside, state)
        else:
            s3.copy_object(
                Bucket=bucket, Key=aside, CopySource={"Bucket": bucket, "Key": state_key}
            )
        s3.delete_object(Bucket=bucket, Key=state_key)
    except Exception as exc:  # looked at again next time, and failed again
        logger.error(
            "A lead file run's state could not be set aside",
            extra={"state": state_key, "reason": _reason(exc)},
        )


def _bitmap(state: Mapping[str, Any]) -> bytearray:
    packed = state.get("done_rows")
    if packed:
        return bytearray(zlib.decompress(base64.b64decode(packed)))
    return bytearray((int(state.get("last_row") or state["rows"]) + 8) // 8)


def _is_set(bits: bytearray, row: int) -> bool:
    return bool(bits[row >> 3] & (1 << (row & 7)))


def _set(bits: bytearray, row: int) -> None:
    bits[row >> 3] |= 1 << (row & 7)


def _manifest(services: Services, state: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The manifest's entries in the file's order, one per row."""
    manifest = state["manifest"]
    if "segments" in state:
        keys = [f"{manifest}{index:06d}.jsonl" for index in range(int(state["segments"]))]
    else:  # a run sent before manifests were written in segments
        keys = [manifest]
    last = 0
    for key in keys:
        body = services.s3.get_object(Bucket=state["bucket"], Key=key)["Body"]
        for line in body.iter_lines():
            if line.strip():
                entry = json.loads(line)
                if int(entry["r"]) > last:
                    last = int(entry["r"])
                    yield entry


def _lookup_key(state: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    """Where a queued row's result is kept: by row (whichever message carried it), or, for a
    run sent before results were kept by row, by its message; None for a refused row."""
    if "x" in entry:
        return None
    if state.get("row_keys"):
        return lead_file_row_key(state["run_id"], entry["r"])
    return str(entry["m"])


def check_run(services: Services, bucket: str, state_key: str) -> dict[str, Any]:
    """Count the run's finished rows; assemble the results file once every row has one."""
    s3 = services.s3
    state = read_state(s3, bucket, state_key)
    if state.get("sending"):
        heartbeat = float(state.get("heartbeat_at") or state["started_at"])
        if services.wall() - heartbeat > SENDER_GONE_SECONDS:
            raise RunProblem(
                f"The splitter stopped after row {int(state.get('sent_through') or 0):,} and "
                "was not run again: upload the file again"
            )
        return _progress(state)
    plain_names = not state.get("finished") and not state.get("older_run")
    if plain_names and not _is_newest(s3, bucket, state["key"], state["run_id"]):
        # The plain names are the newer upload's from now on.
        older = replace(target_of(state["key"]), older_run=state["run_id"])
        state.update(older_run=True, progress=older.progress_key, results=older.results_key)
    if not state.get("finished"):
        _count_finished(services, state)
        state.update(problem=None, failing_since=None)
        if int(state["done"]) < int(state["rows"]):
            put_json(s3, bucket, state_key, state)
            put_json(s3, bucket, state["progress"], _progress(state))
            return _progress(state)
        state["formula_rows"] = assemble(services, state)
        state["finished"] = True
        # Kept until the event is out: a refused event is sent again, the file not written again.
        put_json(s3, bucket, state_key, state)
        put_json(s3, bucket, state["progress"], _progress(state))
    _announce(services, state)
    # What tells a late notification of the upload that its run is over (kept as the bucket's
    # files are: LeadFileRetentionDays).
    put_json(s3, bucket, _finished_key(state["run_id"]), _progress(state))
    s3.delete_object(Bucket=bucket, Key=state_key)
    return _progress(state)


def _count_finished(services: Services, state: dict[str, Any]) -> None:
    """The rows that have their final result now, counted into the state once each."""
    bits = _bitmap(state)
    by_outcome: dict[str, int] = dict(state.get("by_outcome") or {})
    dead: dict[str, str] = dict(state.get("dead_letters") or {})
    # Refused rows were counted when the file was sent; they are marked done on first sight.
    first_look = not state.get("done_rows")

    def unfinished() -> Iterator[list[tuple[int, str]]]:
        """The manifest's rows without a result yet, a lookup's worth at a time."""
        pending: list[tuple[int, str]] = []
        for entry in _manifest(services, state):
            number, key = int(entry["r"]), _lookup_key(state, entry)
            if key is None:
                if first_look:
                    _set(bits, number)
                continue
            if _is_set(bits, number) or str(number) in dead:
                continue
            pending.append((number, key))
            if len(pending) == MAX_KEYS_PER_GET:
                yield pending
                pending = []
        if pending:
            yield pending

    left: list[int] = []
    for chunk, found in _looked_up(services, unfinished(), lambda c: [k for _, k in c]):
        for number, key in chunk:
            fields = found.get(key)
            if fields is None:
                left.append(number)
                continue
            if _is_set(bits, number):
                continue  # counted once, however many times the manifest names it
            _set(bits, number)
            outcome = str(fields.get("outcome"))
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    if left:
        for number in _dead_lettered(services, state, set(left)):
            dead[str(number)] = DEAD_LETTERED
            by_outcome["error"] = by_outcome.get("error", 0) + 1
        queued_at = float(state.get("queued_at") or state["started_at"])
        if services.wall() - queued_at > services.dead_letter_after_seconds:
            for number in left:
                if str(number) not in dead:
                    dead[str(number)] = NO_RESULT
                    by_outcome["error"] = by_outcome.get("error", 0) + 1
    done = sum(by_outcome.values())
    # The pace since the last look, whichever scheduled run made it: when to look next.
    now, looked = services.wall(), state.get("looked") or {}
    since = now - float(looked.get("at", now))
    state.update(
        done_rows=base64.b64encode(zlib.compress(bytes(bits))).decode(),
        by_outcome=by_outcome,
        dead_letters=dead,
        done=done,
        rows_per_second=(
            round((done - int(looked.get("done", done))) / since, 3) if since > 0 else None
        ),
        looked={"at": now, "done": done},
    )


def _looked_up(
    services: Services,
    chunks: Iterator[list[Any]],
    message_ids: Callable[[list[Any]], list[str]],
) -> Iterator[tuple[list[Any], dict[str, dict[str, Any]]]]:
    """Each chunk with its rows' stored results, in order; ``LOOKUP_THREADS`` lookups at once
    (a BatchGetItem takes milliseconds: one after another, 100,000 rows would take seconds)."""
    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lead-file-lookup") as pool:
        window: collections.deque[tuple[list[Any], Future[dict[str, dict[str, Any]]]]] = (
            collections.deque()
        )
        for chunk in chunks:
            window.append((chunk, pool.submit(_results_of, services, message_ids(chunk))))
            if len(window) >= 2 * LOOKUP_THREADS:
                done, found = window.popleft()
                yield done, found.result()
        while window:
            done, found = window.popleft()
            yield done, found.result()


def _results_of(services: Services, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Stored results by message id (the results table of ``results.py``)."""
    if not message_ids or not services.results_table or services.dynamodb is None:
        return {}
    found: dict[str, dict[str, Any]] = {}
    keys = [{"message_id": {"S": m}} for m in dict.fromkeys(message_ids)]
    table = services.results_table
    for _ in range(5):
        answer = services.dynamodb.batch_get_item(
            RequestItems={
                table: {
                    "Keys": keys,
                    "ProjectionExpression": "message_id, #r",
                    "ExpressionAttributeNames": {"#r": "result"},
                }
            }
        )
        for item in answer.get("Responses", {}).get(table, []):
            found[item["message_id"]["S"]] = json.loads(item["result"]["S"])
        keys = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        if not keys:
            break
    return found


def _dead_lettered(services: Services, state: Mapping[str, Any], waiting: set[int]) -> list[int]:
    """Rows of this run found in the action's dead-letter queue (looked at, left there)."""
    url = services.dead_letter_queue_urls.get(state["action"])
    if not url:
        return []
    found: list[int] = []
    for _ in range(10):
        try:
            answer = services.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=30,
                WaitTimeSeconds=0,
                MessageAttributeNames=[RUN_ATTRIBUTE, ROW_ATTRIBUTE],
            )
        except Exception:
            return found
        messages = answer.get("Messages", [])
        if not messages:
            break
        for message in messages:
            attributes = message.get("MessageAttributes", {})
            run = attributes.get(RUN_ATTRIBUTE, {}).get("StringValue")
            row = attributes.get(ROW_ATTRIBUTE, {}).get("StringValue")
            if run == state["run_id"] and str(row).isdigit() and int(row) in waiting:
                waiting.discard(int(row))
                found.append(int(row))
    return found


# OWASP's CSV injection guidance: a cell a spreadsheet reads as a formula starts with one of
# these. The results CSV writes such a cell after an apostrophe, which spreadsheets show as
# text and never run. A plain number (a sign, digits, spaces, a decimal part: "+1 415 555
# 0100", "-12.5") is no formula that calls anything and is written as it is.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d ]*(?:\.\d+)?")


def is_formula(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(cell)


def neutralised(cell: str) -> str:
    """A cell as the results CSV writes it: a would-be formula as text (``is_formula``)."""
    return f"'{cell}" if is_formula(cell) else cell


def _csv_cells(cells: list[str]) -> tuple[list[str], bool]:
    """The cells to write, and whether any was neutralised."""
    return [neutralised(cell) for cell in cells], any(is_formula(cell) for cell in cells)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def result_columns(action: Action, columns: list[str]) -> list[tuple[str, str]]:
    """(appended field, its column name): prefixed ``result.`` where an input column has it."""
    names = list(_unanswered(action, NO_RESULT))
    taken = set(columns)
    return [(name, f"result.{name}" if name in taken else name) for name in names]


def assemble(services: Services, state: Mapping[str, Any]) -> int:
    """Stream the results file: every input row, in order, with its result appended; the
    rows of a results CSV with a cell neutralised (``is_formula``)."""
    s3, bucket = services.s3, state["bucket"]
    action = ACTIONS[state["action"]]
    jsonl = state["format"] == "jsonl"
    source = s3.get_object(Bucket=bucket, Key=state["key"], **_version(state.get("version_id")))
    rows = (row for row in read_rows(source["Body"], jsonl, Layout()) if not row.blank)
    columns = list(state["columns"])
    appended = result_columns(action, columns)
    writer = S3Writer(s3, bucket, state["results"], "application/x-ndjson" if jsonl else "text/csv")
    text = io.StringIO()
    out = csv.writer(text, delimiter=state.get("delimiter") or ",", lineterminator="\r\n")
    if not jsonl:
        if state.get("byte_order_mark"):
            text.write("\ufeff")  # as the input had: Excel reads such a file as UTF-8
        out.writerow(_csv_cells(columns + [name for _, name in appended])[0])
    dead = state.get("dead_letters") or {}
    formula_rows = 0
    try:
        manifest = _manifest(services, state)
        pairs = zip(rows, manifest, strict=True)
        chunks = iter(lambda: list(itertools.islice(pairs, MAX_KEYS_PER_GET)), [])

        def keys(chunk: list[tuple[Row, dict[str, Any]]]) -> list[str]:
            return [k for _, entry in chunk if (k := _lookup_key(state, entry)) is not None]

        for chunk, found in _looked_up(services, chunks, keys):
            for row, entry in chunk:
                key = _lookup_key(state, entry)
                if key is None:
                    fields = entry["x"]
                elif key in found:
                    fields = found[key]
                else:
                    fields = _unanswered(action, dead.get(str(entry["r"]), RESULT_EXPIRED))
                if "m" in entry and not fields.get("message_id"):
                    # The row's queue message: GET /results/<id>, or its dead letter.
                    fields = {**fields, "message_id": entry["m"]}
                if jsonl:
                    record = dict(row.raw) if isinstance(row.raw, dict) else {"line": row.raw}
                    record.update({name: fields.get(key) for key, name in appended})
                    text.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
                else:
                    cells, changed = _csv_cells(
                        list(row.raw) + [_cell(fields.get(key)) for key, _ in appended]
                    )
                    formula_rows += changed
                    out.writerow(cells)
            writer.write(text.getvalue().encode())
            text.seek(0)
            text.truncate()
        writer.write(text.getvalue().encode())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return formula_rows


def _announce(services: Services, state: Mapping[str, Any]) -> None:
    if services.events is None or not services.bus_name:
        return
    detail = {
        "run_id": state["run_id"],
        "action": state["action"],
        "bucket": state["bucket"],
        "key": state["key"],
        "version_id": state.get("version_id"),
        "rows": state["rows"],
        "by_outcome": state.get("by_outcome", {}),
        "formula_rows": state.get("formula_rows"),
        "results": state["results"],
        "report": state["report"],
    }
    answer = services.events.put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": FINISHED_DETAIL_TYPE,
                "Detail": json.dumps(detail, separators=(",", ":")),
                "EventBusName": services.bus_name,
            }
        ]
    )
    if answer.get("FailedEntryCount"):
        code = (answer.get("Entries") or [{}])[0].get("ErrorCode")
        raise RunProblem(f"The bus did not take the 'lead file finished' event ({code})")


# -- Handlers ----------------------------------------------------------------------------------

_services: Services | None = None


def services() -> Services:
    global _services
    if _services is None:
        _services = Services.from_env()
    return _services


def objects_of(event: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(bucket, key, version id) of an EventBridge "Object Created" event or an S3
    notification (whose keys are URL-encoded)."""
    from urllib.parse import unquote_plus

    detail = event.get("detail")
    if isinstance(detail, Mapping):
        obj = detail.get("object") or {}
        return [(detail["bucket"]["name"], obj["key"], obj.get("version-id"))]
    found = []
    for record in event.get("Records", []):
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        key = unquote_plus(obj.get("key", ""))
        found.append((s3.get("bucket", {}).get("name", ""), key, obj.get("versionId")))
    return found


def _observed(handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> Any:
    """The function's metrics (LeadFileRunsFailed and the like), written as the actions' are."""

    def observed(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return handler(event, context)
        finally:
            flush_counts()

    return metrics.log_metrics(observed)


@_observed
def split_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A new object in the bucket: check it, report, queue its rows."""
    from klaviyo_leads import mirror  # mirror files are the mirror function's

    taken = []
    for bucket, key, version_id in objects_of(event):
        if is_own_output(key) or key.endswith("/"):
            continue
        if mirror.takes(services().s3, bucket, key, version_id):
            continue
        report = take_file(services(), bucket, key, version_id)
        taken.append(
            {
                "key": key,
                "run_id": report.run_id,
                "accepted": report.accepted,
                "taken_before": report.again,
            }
        )
    return {"files": taken}


@_observed
def assemble_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """On the schedule: progress of every open run, and the results of finished ones."""
    import os

    return {"runs": look(services(), os.environ["LEAD_FILES_BUCKET"])}


def look(services: Services, bucket: str) -> list[dict[str, Any]]:
    """Look at the open runs every ``LOOK_EVERY_SECONDS`` while one is open, for at most
    ``LOOK_FOR_SECONDS``: a file's results are written seconds after its last row, not up to
    a minute (the schedule's), and one look ends before the next one starts."""
    started = services.clock()
    while True:
        runs = check_runs(services, bucket)
        open_runs = [run for run in runs if not run.get("finished") and not run.get("failed")]
        wait = next_look_in(open_runs)
        waited = services.clock() - started
        if not open_runs or waited + wait > LOOK_FOR_SECONDS:
            return runs
        services.sleep(wait)


def next_look_in(runs: list[dict[str, Any]]) -> float:
    """Seconds until the next look: ``LOOK_EVERY_SECONDS``, or when the open run soonest to
    finish would have its last row at the pace its rows finished since the look before
    (``rows_per_second``), not sooner than ``LOOK_SOONEST_SECONDS``: the results file follows
    its last row by about a second, not by up to five."""
    wait = LOOK_EVERY_SECONDS
    for run in runs:
        pace = run.get("rows_per_second") or 0
        if pace > 0:
            due = (int(run.get("rows") or 0) - int(run.get("done") or 0)) / pace
            wait = min(wait, max(LOOK_SOONEST_SECONDS, due))
    return wait
