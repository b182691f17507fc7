"""The lead trail: every lead's journey, written as JSON lines the stack files in its bucket.

An attempt at a lead leaves two records: ``received`` when it starts (how the lead came: path,
message id or Idempotency-Key, lead file and row, which delivery) and ``attempt`` when it ends
(Klaviyo's operations with their statuses and latency, the result, and whether the lead was
handed back for another attempt or this result is its final one). A lead's records share its
``lead_key``: what it first arrived as, the same on every delivery and retry.

The records are lines on the function's standard output: CloudWatch Logs keeps them in the
function's log group, and the stack's subscription filter hands them to the trail writer
(``trail.delivery``), which files them in the trail bucket by action and day. A line costs
microseconds and nothing waits on the bucket, so the trail can neither delay nor fail a lead.

What a record keeps of the lead follows ``TRAIL_PII``: ``lead`` keeps the lead as received;
``hashed`` keeps no lead data but the SHA-256 of its normalised email and phone number (as
Klaviyo's ``hashed_email``: lower-case, trimmed; the phone in E.164) and the field the operator
names (``TRAIL_VENDOR_FIELD``). Every record carries the hashes, so a lookup by email or phone
works in both modes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from klaviyo_leads.lead.body import canonical_key, ensure_object, finite
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result

VERSION = 1  # the records' shape; the subscription filter selects lines that carry it
WHOLE_LEAD, HASHED = "lead", "hashed"
PII_MODES = (WHOLE_LEAD, HASHED)
# A lead kept whole stays well inside CloudWatch Logs' 256 KB event; a larger one is dropped
# from its record (the hashes stay).
MAX_LEAD_CHARS = 64 * 1024


# The records' fields, with their types in the Athena table (the stack's TrailTable lists the
# same; its partitions, action and day, are the folders the writer files the records in).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("event", "string"),
    ("time", "string"),
    ("trail", "int"),
    ("lead_key", "string"),
    ("path", "string"),
    ("message_id", "string"),
    ("idempotency_key", "string"),
    ("request_id", "string"),
    ("lead_file", "string"),
    ("lead_row", "bigint"),
    ("delivery", "int"),
    ("dry_run", "boolean"),
    ("email_sha256", "string"),
    ("phone_sha256", "string"),
    ("vendor", "string"),
    ("lead", "string"),
    ("calls", "array<struct<operation:string,status:int,count:int,ms:double>>"),
    ("calls_shared_by", "int"),
    ("ms", "double"),
    ("outcome", "string"),
    ("reason", "string"),
    ("retryable", "boolean"),
    ("profile_id", "string"),
    ("duplicate_profile_id", "string"),  # Create's and Upsert's "already exists": whose
    ("created", "boolean"),  # Upsert: made or found
    ("email_consent", "string"),  # Subscribe: the consent Klaviyo holds, as read back
    ("sms_consent", "string"),
    ("handed_back", "boolean"),
    ("final", "boolean"),
    ("would_send", "string"),
)
PARTITIONS = ("action", "day")


@dataclass(frozen=True)
class Arrival:
    """How a lead came in, as its trail records it."""

    path: str  # api, sqs, eventbridge, direct
    message_id: str | None = None  # the SQS message, or the EventBridge event
    idempotency_key: str | None = None  # the webhook's Idempotency-Key header
    request_id: str | None = None  # API Gateway's request, or the invocation's
    lead_file: str | None = None  # the lead-file run the row belongs to
    lead_row: int | None = None


@dataclass
class Calls:
    """Klaviyo's calls during one attempt (a queued batch's are shared by its leads), by
    operation and status in the order first made: how many, and their latency in all."""

    made: dict[tuple[str, int | None], list[float]] = field(default_factory=dict)

    def add(self, operation: str, status: int | None, seconds: float) -> None:
        entry = self.made.setdefault((operation, status), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {
                "operation": operation,
                "status": status,
                "count": int(count),
                "ms": round(ms * 1000, 1),
            }
            for (operation, status), (count, ms) in self.made.items()
        ]


_collecting: ContextVar[Calls | None] = ContextVar("lead_trail_calls", default=None)


def observe(operation: str, status: int | None, seconds: float) -> None:
    """Told of every Klaviyo call (the client's observer): kept for the attempt under way."""
    calls = _collecting.get()
    if calls is not None:
        calls.add(operation, status, seconds)


@contextmanager
def collecting(calls: Calls | None) -> Iterator[Calls | None]:
    """Klaviyo's calls made inside go to ``calls`` (None: nowhere)."""
    token = _collecting.set(calls)
    try:
        yield calls
    finally:
        _collecting.reset(token)


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a line still buffered when the invocation times out would be lost


def sha256_of(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def email_hash(email: str) -> str:
    """The lookup key of an email: SHA-256 of it trimmed and lower-cased (hex)."""
    return sha256_of(email.strip().lower())


def phone_hash(phone_e164: str) -> str:
    """The lookup key of a phone number: SHA-256 of its E.164 form (hex)."""
    return sha256_of(phone_e164.strip())


class Trail:
    """Writes a container's trail records (one line each) to ``write``: standard output."""

    def __init__(
        self,
        pii: str = HASHED,
        vendor_field: str | None = None,
        region: str = "US",
        write: Callable[[str], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pii = pii if pii in PII_MODES else HASHED
        self.vendor_key = canonical_key(vendor_field) if vendor_field else None
        self.region = region
        self.write = write or _stdout
        self.wall = wall

    def start(
        self,
        action: str,
        arrival: Arrival,
        payload: Any,
        *,
        lead_key: str | None,
        delivery: int = 1,
        dry_run: bool = False,
    ) -> TrailAttempt:
        """The ``received`` record of an attempt at a lead; the attempt, to end later."""
        attempt = TrailAttempt(
            self,
            {
                "trail": VERSION,
                "action": action,
                "lead_key": lead_key or arrival.message_id or arrival.request_id,
                "path": arrival.path,
                "message_id": arrival.message_id,
                "idempotency_key": arrival.idempotency_key,
                "request_id": arrival.request_id,
                "lead_file": arrival.lead_file,
                "lead_row": arrival.lead_row,
                "delivery": delivery,
                "dry_run": dry_run,
                **self._identity(payload),
            },
        )
        self.emit("received", attempt.common, {})
        return attempt

    def _identity(self, payload: Any) -> dict[str, Any]:
        """What every record keeps of the lead: the hashes, the vendor, the lead (or not)."""
        email = phone = vendor = None
        try:
            lead = Lead.from_object(ensure_object(payload))
        except Result:
            lead = None
        if lead is not None:
            raw_email = lead.values.get("email")
            email = email_hash(raw_email) if isinstance(raw_email, str) else None
            try:
                e164 = lead.phone(self.region)
            except Result:
                e164 = None
            phone = phone_hash(e164) if e164 else None
            value = lead.values.get(self.vendor_key) if self.vendor_key else None
            vendor = str(value) if isinstance(value, str | int | float) else None
        kept = None
        if self.pii == WHOLE_LEAD:
            text = json.dumps(finite(payload), separators=(",", ":"), default=str)
            kept = text if len(text) <= MAX_LEAD_CHARS else None
        return {"email_sha256": email, "phone_sha256": phone, "vendor": vendor, "lead": kept}

    def emit(self, event: str, common: Mapping[str, Any], details: Mapping[str, Any]) -> None:
        """One record, never an exception: the trail must not fail a lead."""
        try:
            now = datetime.fromtimestamp(self.wall(), UTC)
            record = {
                "event": event,
                "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "day": now.date().isoformat(),
                **common,
                **details,
            }
            self.write(json.dumps(record, separators=(",", ":"), default=str, allow_nan=False))
        except Exception:  # a lost record is the trail's loss, never the lead's
            pass


@dataclass
class TrailAttempt:
    """One attempt at a lead (or at each lead of a queued batch): its Klaviyo calls so far."""

    trail: Trail
    common: dict[str, Any]
    calls: Calls = field(default_factory=Calls)

    def end(
        self,
        result: Result,
        seconds: float,
        *,
        would_send: list[dict[str, Any]] | None = None,
        shared_by: int = 1,
    ) -> None:
        """The ``attempt`` record: the result, and whether it is the lead's final one (a
        retryable result is handed back: another attempt follows, or none, if it goes to a
        dead-letter queue or its sender gives up)."""
        profile = result.profile or {}
        details: dict[str, Any] = {
            "calls": self.calls.as_json(),
            "calls_shared_by": shared_by,
            "ms": round(seconds * 1000, 1),
            "outcome": result.outcome.value,
            "reason": result.reason,
            "retryable": result.retryable,
            "profile_id": profile.get("id") if isinstance(profile, dict) else None,
            "duplicate_profile_id": result.duplicate_profile_id,
            "created": result.created,
            "email_consent": (result.consent or {}).get("email"),
            "sms_consent": (result.consent or {}).get("sms"),
            "handed_back": result.retryable,
            "final": not result.retryable,
            "would_send": None,
        }
        if would_send is not None:
            keep_bodies = self.trail.pii == WHOLE_LEAD
            details["would_send"] = json.dumps(
                [
                    {k: v for k, v in request.items() if keep_bodies or k in ("method", "path")}
                    for request in would_send
                ],
                separators=(",", ":"),
                default=str,
            )
        self.trail.emit("attempt", self.common, details)
