"""Checking a row as the webhook would (the same parsing, the action run up to its first
Klaviyo call), the lead a row sends, and each distinct lead's first row."""

from __future__ import annotations

import array
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Action, ignored_fields, result_fields
from klaviyo_leads.actions.lookup import Group
from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.budget import Budget
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context, NameCache
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.lead.body import MAX_BODY_BYTES, canonical_key, ensure_object, flatten, is_known
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.lead_files.rows import Row
from klaviyo_leads.outcomes import Outcome, Result

FIRST_ROWS = 10  # rows named per reason and for duplicates in the report
# Distinct leads the check remembers to name repeats (a 50 MiB file has about 250,000 rows):
# 6 MiB, held whatever the file's size.
MAX_TRACKED_LEADS = 1 << 18
# Reasons of a row that the action never answered; they name no lead data.
NOT_QUEUED = "The row could not be put on the action's queue"
DEAD_LETTERED = "The lead went to the action's dead-letter queue after its last delivery"
NO_RESULT = "No result came back for this row before the file's deadline"
RESULT_EXPIRED = "The row's result was no longer kept (results are kept 24 hours)"


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


def digest_of(lead: Mapping[str, Any]) -> int:
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


def checked(
    action: Action, row: Row, defaults: Mapping[str, Any], settings: Settings
) -> tuple[Result | None, dict[str, Any]]:
    if row.problem is not None:
        row.problem.ignored_fields = None
        return row.problem, {}
    lead = lead_of(row, defaults)
    return check(action, lead, settings), lead


def unanswered(action: Action, reason: str) -> dict[str, Any]:
    return result_fields(action, Result(Outcome.ERROR, reason))
