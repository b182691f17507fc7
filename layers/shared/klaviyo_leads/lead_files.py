"""Lead files: a CSV or JSON Lines file of leads, checked, queued, and answered by a results file.

An object under ``<action>/`` in the lead-files bucket is a file of leads for that action;
under ``dry-run/<action>/`` it is only checked. The splitter reads the file twice, streaming:
first every row is checked as the webhook would check it (the same parsing, and the action run
up to its first Klaviyo call) and ``<stem>.report.json`` is written; only then are the rows put
on the action's queue, ten to a ``SendMessageBatch``, each message naming its file run and row.
Which message each row got goes, line by line, into a manifest in the bucket.

The assembler (on a schedule) reads each open run's manifest, looks the rows' results up in the
results table (by message id, where the queue path keeps them 24 h), updates
``<stem>.progress.json`` and, once every row has a final result, streams
``results/<stem>.results.csv`` (or ``.jsonl``) in the input's order and publishes a
``lead file finished`` event. A row still without a result when it must have left the queue
(dead-lettered) gets an error saying so.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

from . import outcomes
from .actions import ACTIONS, Action, ignored_fields, result_fields
from .budget import Budget
from .config import Settings
from .context import Context, NameCache
from .klaviyo import KlaviyoClient
from .lead import MAX_BODY_BYTES, Lead, canonical_key, ensure_object, flatten, is_known
from .ledger import CreateLedger
from .outcomes import Outcome, Result
from .profiles import Group

DRY_RUN_PREFIX = "dry-run/"
RESULTS_PREFIX = "results/"
STATE_PREFIX = ".lead-files/"
RUNS_PREFIX = STATE_PREFIX + "runs/"
OWN_SUFFIXES = (".report.json", ".progress.json")
# Message attributes of a queued row: which file run, which row.
RUN_ATTRIBUTE = "lead_file_run"
ROW_ATTRIBUTE = "lead_file_row"
SOURCE = "klaviyo.lead-actions"
FINISHED_DETAIL_TYPE = "lead file finished"

MAX_BATCH = 10  # SendMessageBatch's limit
SEND_THREADS = 16  # SendMessageBatch calls at once: a call takes tens of milliseconds
IN_FLIGHT_ENTRIES = 4 * SEND_THREADS  # batches (and refused rows) held before writing
LOOKUP_THREADS = 8  # BatchGetItem calls at once
MAX_BATCH_BYTES = 240 * 1024  # SendMessageBatch's 256 KiB for all bodies, with a margin
MAX_KEYS_PER_GET = 100  # BatchGetItem's limit
FIRST_ROWS = 10  # rows named per reason and for duplicates in the report
PART_BYTES = 5 * 1024 * 1024  # multipart upload parts: S3's minimum, so the least memory
MAX_JSONL_COLUMNS = 1000
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

# Reasons of a row that the action never answered; they name no lead data.
NOT_QUEUED = "The row could not be put on the action's queue"
DEAD_LETTERED = "The lead went to the action's dead-letter queue after its last delivery"
NO_RESULT = "No result came back for this row before the file's deadline"
RESULT_EXPIRED = "The row's result was no longer kept (results are kept 24 hours)"


class FileProblem(Exception):
    """The file cannot be taken: nothing of it is sent. The text names no lead data."""


@dataclass(frozen=True)
class Target:
    """What an object's key says: the action, a dry run, and where its outputs go."""

    key: str
    action: Action
    dry_run: bool
    stem: str
    jsonl: bool

    @property
    def report_key(self) -> str:
        return f"{self.stem}.report.json"

    @property
    def progress_key(self) -> str:
        return f"{self.stem}.progress.json"

    @property
    def results_key(self) -> str:
        return f"{RESULTS_PREFIX}{self.stem}.results.{'jsonl' if self.jsonl else 'csv'}"


def is_own_output(key: str) -> bool:
    """Keys the lead-file path writes itself, never read as a file of leads."""
    return key.startswith((RESULTS_PREFIX, STATE_PREFIX)) or key.endswith(OWN_SUFFIXES)


def stem_of(key: str) -> str:
    head, _, name = key.rpartition("/")
    base = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}/{base}" if head else base


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
    return Target(key, action, dry_run, stem_of(key), is_jsonl_name(key))


# -- Reading rows ------------------------------------------------------------------------------


@dataclass
class Row:
    """One data row: its number (1 = the first after the header) and what it holds."""

    number: int
    values: dict[str, Any] | None  # the row's columns as written
    raw: Any  # CSV: the fields; JSON Lines: the object, or the line when it is none
    problem: Result | None = None  # a JSON Lines line that is not a lead


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

    ``jsonl`` None: decided by the first character (``{`` is JSON Lines).
    """
    buffered = io.BufferedReader(_Raw(stream), buffer_size=64 * 1024)
    head = buffered.peek(4096)[:4096]
    bom = head.startswith(b"\xef\xbb\xbf")
    layout.bom = bom
    if not head.removeprefix(b"\xef\xbb\xbf").strip():
        raise FileProblem("The file is empty")
    if jsonl is None:
        jsonl = head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{")
    if jsonl:
        layout.format = "jsonl"
        yield from _jsonl_rows(buffered, layout)
    else:
        layout.format = "csv"
        yield from _csv_rows(buffered, layout)


def _csv_rows(stream: IO[bytes], layout: Layout) -> Iterator[Row]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    number = 0
    try:
        first = text.readline()
        while first and not first.strip():
            first = text.readline()
        if not first.strip():
            raise FileProblem("The file is empty")
        layout.delimiter = _sniff_delimiter(first)
        reader = csv.reader(itertools.chain([first], text), delimiter=layout.delimiter)
        header = [name.strip() for name in next(reader)]
        _check_header(header)
        layout.columns = header
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            number += 1
            if len(fields) > len(header):
                raise FileProblem(
                    f"Row {number} has {len(fields)} fields, more than the header's "
                    f"{len(header)} columns (a delimiter inside an unquoted value?)"
                )
            fields += [""] * (len(header) - len(fields))
            values = {name: value for name, value in zip(header, fields, strict=True) if name}
            yield Row(number, values, fields)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"The file is not valid UTF-8 (after row {number})") from exc
    except csv.Error as exc:
        raise FileProblem(f"Row {number + 1} cannot be read as CSV ({exc})") from exc
    if number == 0:
        raise FileProblem("The file has a header but no rows")


def _check_header(header: list[str]) -> None:
    named = [name for name in header if name]
    if len(set(named)) != len(named):
        twice = sorted({name for name in named if named.count(name) > 1})
        raise FileProblem(f"The header names a column more than once: {', '.join(twice)}")
    if not any(is_known(canonical_key(name)) for name in named):
        raise FileProblem(
            "The first row is not a header of lead keys: none of its columns is one "
            "(email, phone_1, Email, Phone 1, klaviyo.list_id, ...)"
        )


def _jsonl_rows(stream: IO[bytes], layout: Layout) -> Iterator[Row]:
    number = 0
    seen: dict[str, None] = {}
    for raw_line in stream:
        line = raw_line.removeprefix(b"\xef\xbb\xbf") if number == 0 else raw_line
        if not line.strip():
            continue
        number += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileProblem(f"The file is not valid UTF-8 (row {number})") from exc
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            yield Row(number, None, text.rstrip("\r\n"), outcomes.BODY_NOT_JSON())
            continue
        if not isinstance(value, dict):
            yield Row(number, None, value, outcomes.BODY_NOT_OBJECT())
            continue
        for key in value:
            if key not in seen and len(seen) < MAX_JSONL_COLUMNS:
                seen[key] = None
                layout.columns.append(key)
        yield Row(number, value, value)
    if number == 0:
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
    open addressing over two arrays, at most half full."""

    def __init__(self) -> None:
        self._digests = array.array("Q", bytes(8 * 1024))
        self._rows = array.array("I", bytes(4 * 1024))
        self._count = 0

    def first(self, digest: int, row: int) -> int | None:
        """The first row with ``digest``; None (and ``row`` remembered) when this is it."""
        mask = len(self._digests) - 1
        slot = digest & mask
        while True:
            held = self._digests[slot]
            if held == 0:
                break
            if held == digest:
                return int(self._rows[slot])
            slot = (slot + 1) & mask
        self._digests[slot], self._rows[slot] = digest, row
        self._count += 1
        if 2 * self._count > len(self._digests):
            self._grow()
        return None

    def _grow(self) -> None:
        digests, rows = self._digests, self._rows
        self._digests = array.array("Q", bytes(16 * len(digests)))
        self._rows = array.array("I", bytes(8 * len(rows)))
        mask = len(self._digests) - 1
        for held, row in zip(digests, rows, strict=True):
            if held:
                slot = held & mask
                while self._digests[slot]:
                    slot = (slot + 1) & mask
                self._digests[slot], self._rows[slot] = held, row


# -- The report --------------------------------------------------------------------------------


@dataclass
class Report:
    """What checking the whole file found; written as ``<stem>.report.json``."""

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
    results_key: str | None = None
    progress_key: str | None = None
    # Which rows the check refused (a bit per row): sending reads the file again and checks
    # only those again, for their result, instead of every row.
    refused_rows: bytearray = field(default_factory=bytearray)
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
            "duplicate_rows": {"count": self.duplicates, "first": self.first_duplicates},
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
            report.rows_read += 1
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

        return cls(
            s3=boto3.client("s3"),
            sqs=boto3.client("sqs"),
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
    from .lead_file_dry_run import runtimes

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
    """Check an uploaded file, write its report, and (unless a dry run) queue its rows."""
    s3 = services.s3
    head_args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        head_args["VersionId"] = version_id
    head = s3.head_object(**head_args)
    version_id = version_id or head.get("VersionId")
    if version_id == "null":
        version_id = None
    run_id = run_id_of(bucket, key, version_id, head.get("ETag"), head.get("LastModified"))
    report = Report(bucket, key, version_id, run_id, None, key.startswith(DRY_RUN_PREFIX))
    report.size = int(head.get("ContentLength", 0))
    try:
        target = target_of(key)
    except FileProblem as problem:
        report.problem = str(problem)
        put_json(s3, bucket, f"{stem_of(key)}.report.json", report.as_json())
        return report
    report.action = target.action.name
    report.results_key, report.progress_key = target.results_key, target.progress_key

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
            from .lead_file_dry_run import would

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
    send_rows(services, report, target, open_stream)
    return report


def _leads_to_send(
    open_stream: Callable[[], IO[bytes]], report: Report, target: Target
) -> Iterator[dict[str, Any]]:
    """The leads of the rows the check did not refuse, in the file's order."""
    for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
        if row.problem is None and not report.was_refused(row.number):
            yield lead_of(row, report.defaults)


def _version(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def send_rows(
    services: Services, report: Report, target: Target, open_stream: Callable[[], IO[bytes]]
) -> None:
    """Queue the checked file's rows; the manifest records each row's message (or result)."""
    s3, bucket = services.s3, report.bucket
    manifest_key = f"{RUNS_PREFIX}{report.run_id}/manifest.jsonl"
    state_key = f"{RUNS_PREFIX}{report.run_id}/state.json"
    state: dict[str, Any] = {
        "run_id": report.run_id,
        "bucket": bucket,
        "key": report.key,
        "version_id": report.version_id,
        "action": target.action.name,
        "format": report.layout.format,
        "delimiter": report.layout.delimiter,
        "columns": report.layout.columns,
        "report": target.report_key,
        "progress": target.progress_key,
        "results": target.results_key,
        "manifest": manifest_key,
        "rows": report.rows_read,
        "started_at": services.wall(),
        "queued": 0,
        "sending": True,
    }
    try:
        put_json(s3, bucket, state_key, state, IfNoneMatch="*")
    except Exception as exc:  # the same upload taken already (a repeated notification)
        if _precondition_failed(exc):
            return
        raise
    writer = S3Writer(s3, bucket, manifest_key, "application/x-ndjson")
    queue_url = services.queue_urls[target.action.name]
    pending: list[tuple[int, dict[str, Any], str]] = []
    counts = {"queued": 0}
    refused: dict[str, int] = {}
    # Batches in flight, oldest first: the manifest is written in the file's order, and at
    # most a few batches' rows are held at once (SQS's latency, not the file, sets the pace).
    in_flight: collections.deque[Future[list[tuple[bytes, bool | None]]]] = collections.deque()

    def lines_of(batch: list[tuple[int, dict[str, Any], str]]) -> list[tuple[bytes, bool | None]]:
        """The batch's manifest lines, each with whether SQS took the row."""
        ids = _send_batch(services.sqs, queue_url, report.run_id, batch)
        lines: list[tuple[bytes, bool | None]] = []
        for (number, _, _), message_id in zip(batch, ids, strict=True):
            if message_id is None:
                fields = _unanswered(target.action, NOT_QUEUED)
                lines.append((_line({"r": number, "x": fields}), False))
            else:
                lines.append((_line({"r": number, "m": message_id}), True))
        return lines

    def written(limit: int) -> None:
        while len(in_flight) > limit:
            for line, taken in in_flight.popleft().result():
                if taken:
                    counts["queued"] += 1
                elif taken is False:
                    refused["error"] = refused.get("error", 0) + 1
                writer.write(line)

    def done_now(line: bytes) -> Future[list[tuple[bytes, bool | None]]]:
        """A refused row's line (counted already), in its place among the batches."""
        future: Future[list[tuple[bytes, bool | None]]] = Future()
        future.set_result([(line, None)])
        return future

    pool = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="lead-file-send")
    try:
        size = 0
        for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
            if report.was_refused(row.number):
                result, lead = _checked(target.action, row, report.defaults, services.settings)
            else:
                result, lead = None, lead_of(row, report.defaults)
            if result is not None:
                if pending:
                    in_flight.append(pool.submit(lines_of, pending))
                    pending, size = [], 0
                refused[result.outcome.value] = refused.get(result.outcome.value, 0) + 1
                in_flight.append(
                    done_now(_line({"r": row.number, "x": fields_of(target.action, result)}))
                )
                written(IN_FLIGHT_ENTRIES)
                continue
            body = json.dumps(lead, separators=(",", ":"), default=str)
            if pending and (len(pending) == MAX_BATCH or size + len(body) > MAX_BATCH_BYTES):
                in_flight.append(pool.submit(lines_of, pending))
                pending, size = [], 0
                written(IN_FLIGHT_ENTRIES)
            pending.append((row.number, lead, body))
            size += len(body)
        if pending:
            in_flight.append(pool.submit(lines_of, pending))
        written(0)
        writer.close()
    except BaseException:
        for future in in_flight:
            future.cancel()
        writer.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    queued = counts["queued"]
    state.update(
        queued=queued,
        queued_at=services.wall(),
        sending=False,
        by_outcome=refused,
        done=sum(refused.values()),
    )
    put_json(s3, bucket, state_key, state)
    put_json(s3, bucket, target.progress_key, _progress(state))


def _send_batch(
    sqs: Any, queue_url: str, run_id: str, rows: list[tuple[int, dict[str, Any], str]]
) -> list[str | None]:
    """Each row's message id, None where SQS would not take it (after one more try)."""
    ids: list[str | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    for _ in range(2):
        entries = [
            {
                "Id": str(index),
                "MessageBody": rows[index][2],
                "MessageAttributes": {
                    RUN_ATTRIBUTE: {"DataType": "String", "StringValue": run_id},
                    ROW_ATTRIBUTE: {"DataType": "Number", "StringValue": str(rows[index][0])},
                },
            }
            for index in todo
        ]
        try:
            answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception:
            continue
        for sent in answer.get("Successful", []):
            ids[int(sent["Id"])] = str(sent["MessageId"])
        todo = [index for index in todo if ids[index] is None]
        if not todo:
            break
    return ids


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
        "finished": bool(state.get("finished")),
        "results": state["results"] if state.get("finished") else None,
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
    """Look at every open run once; the progress of each (finished ones included)."""
    return [check_run(services, bucket, key) for key in open_runs(services, bucket)]


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _bitmap(state: Mapping[str, Any]) -> bytearray:
    packed = state.get("done_rows")
    if packed:
        return bytearray(zlib.decompress(base64.b64decode(packed)))
    return bytearray((int(state["rows"]) + 8) // 8)


def _is_set(bits: bytearray, row: int) -> bool:
    return bool(bits[row >> 3] & (1 << (row & 7)))


def _set(bits: bytearray, row: int) -> None:
    bits[row >> 3] |= 1 << (row & 7)


def _manifest(services: Services, state: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    body = services.s3.get_object(Bucket=state["bucket"], Key=state["manifest"])["Body"]
    for line in body.iter_lines():
        if line.strip():
            yield json.loads(line)


def check_run(services: Services, bucket: str, state_key: str) -> dict[str, Any]:
    """Count the run's finished rows; assemble the results file once every row has one."""
    s3 = services.s3
    state = _read_json(s3, bucket, state_key)
    if state.get("sending"):
        return _progress(state)
    bits = _bitmap(state)
    by_outcome: dict[str, int] = dict(state.get("by_outcome") or {})
    dead: dict[str, str] = dict(state.get("dead_letters") or {})
    # Refused rows were counted when the file was sent; they are marked done on first sight.
    first_look = not state.get("done_rows")

    def unfinished() -> Iterator[list[tuple[int, str]]]:
        """The manifest's rows without a result yet, a lookup's worth at a time."""
        pending: list[tuple[int, str]] = []
        for entry in _manifest(services, state):
            number = int(entry["r"])
            if "x" in entry:
                if first_look:
                    _set(bits, number)
                continue
            if _is_set(bits, number) or str(number) in dead:
                continue
            pending.append((number, entry["m"]))
            if len(pending) == MAX_KEYS_PER_GET:
                yield pending
                pending = []
        if pending:
            yield pending

    left: list[tuple[int, str]] = []
    for chunk, found in _looked_up(services, unfinished(), lambda c: [m for _, m in c]):
        for number, message_id in chunk:
            fields = found.get(message_id)
            if fields is None:
                left.append((number, message_id))
                continue
            _set(bits, number)
            outcome = str(fields.get("outcome"))
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    if left:
        waiting = {m: n for n, m in left}
        for number in _dead_lettered(services, state, waiting):
            dead[str(number)] = DEAD_LETTERED
            by_outcome["error"] = by_outcome.get("error", 0) + 1
        queued_at = float(state.get("queued_at") or state["started_at"])
        if services.wall() - queued_at > services.dead_letter_after_seconds:
            for number, _ in left:
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
    if done >= int(state["rows"]):
        assemble(services, state)
        state["finished"] = True
        put_json(s3, bucket, state["progress"], _progress(state))
        _announce(services, state)
        s3.delete_object(Bucket=bucket, Key=state_key)
        return _progress(state)
    put_json(s3, bucket, state_key, state)
    put_json(s3, bucket, state["progress"], _progress(state))
    return _progress(state)


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


def _dead_lettered(
    services: Services, state: Mapping[str, Any], waiting: Mapping[str, int]
) -> list[int]:
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
            run = message.get("MessageAttributes", {}).get(RUN_ATTRIBUTE, {})
            if run.get("StringValue") == state["run_id"] and message["MessageId"] in waiting:
                found.append(waiting[message["MessageId"]])
    return found


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


def _queued_ids(chunk: list[tuple[Row, dict[str, Any]]]) -> list[str]:
    return [entry["m"] for _, entry in chunk if "m" in entry]


def assemble(services: Services, state: Mapping[str, Any]) -> None:
    """Stream the results file: every input row, in order, with its result appended."""
    s3, bucket = services.s3, state["bucket"]
    action = ACTIONS[state["action"]]
    jsonl = state["format"] == "jsonl"
    source = s3.get_object(Bucket=bucket, Key=state["key"], **_version(state.get("version_id")))
    rows = read_rows(source["Body"], jsonl, Layout())
    columns = list(state["columns"])
    appended = result_columns(action, columns)
    writer = S3Writer(s3, bucket, state["results"], "application/x-ndjson" if jsonl else "text/csv")
    text = io.StringIO()
    out = csv.writer(text, delimiter=state.get("delimiter") or ",", lineterminator="\r\n")
    if not jsonl:
        out.writerow(columns + [name for _, name in appended])
    dead = state.get("dead_letters") or {}
    try:
        manifest = _manifest(services, state)
        pairs = zip(rows, manifest, strict=True)
        chunks = iter(lambda: list(itertools.islice(pairs, MAX_KEYS_PER_GET)), [])
        for chunk, found in _looked_up(services, chunks, _queued_ids):
            for row, entry in chunk:
                if "x" in entry:
                    fields = entry["x"]
                elif entry["m"] in found:
                    fields = found[entry["m"]]
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
                    out.writerow(list(row.raw) + [_cell(fields.get(key)) for key, _ in appended])
            writer.write(text.getvalue().encode())
            text.seek(0)
            text.truncate()
        writer.write(text.getvalue().encode())
        writer.close()
    except BaseException:
        writer.abort()
        raise


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
        "results": state["results"],
        "report": state["report"],
    }
    services.events.put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": FINISHED_DETAIL_TYPE,
                "Detail": json.dumps(detail, separators=(",", ":")),
                "EventBusName": services.bus_name,
            }
        ]
    )


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


def split_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A new object in the bucket: check it, report, queue its rows."""
    from . import mirror  # mirror files are the mirror function's

    taken = []
    for bucket, key, version_id in objects_of(event):
        if is_own_output(key) or key.endswith("/"):
            continue
        if mirror.takes(services().s3, bucket, key, version_id):
            continue
        report = take_file(services(), bucket, key, version_id)
        taken.append({"key": key, "run_id": report.run_id, "accepted": report.accepted})
    return {"files": taken}


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
        open_runs = [run for run in runs if not run.get("finished")]
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
