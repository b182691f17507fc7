"""The function's own SQS queue: records come back when due, retryable leads go onto it.

A record handed back to the queue would otherwise wait out the queue's visibility timeout
(36 minutes by default). Instead it comes back when Klaviyo said (``Retry-After``, plus
jitter), or, for other retryable errors, after a back-off by how often it was delivered.
Leads that arrive by EventBridge or direct invocation have no queue behind them: a
retryable one is put on the action's queue, with the time it was first seen.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klaviyo_leads.aws.clients import OnFirstUse, boto3_client

# Back-off for a record handed back without a wait Klaviyo asked for, by delivery: with
# the stack's maxReceiveCount of 5, a lead rides out an outage of sum(...) = 42.5 minutes
# before it moves to the dead-letter queue.
BACKOFF_SECONDS = (30, 120, 600, 1800)
JITTER = 0.2
MAX_VISIBILITY_SECONDS = 12 * 3600  # SQS's limit
FIRST_SEEN = "first_seen_at"  # message attribute: when the bundle first saw the lead
ORIGIN = "origin_id"  # message attribute: what the lead first arrived as (its create's owner)
# Message attributes of a lead file's row: its file run, and its number in the file.
LEAD_FILE_RUN = "lead_file_run"
LEAD_FILE_ROW = "lead_file_row"


def lead_file_row_key(run_id: str, row: int | str) -> str:
    """A lead file's row, whichever message carries it (a message sent twice is one row): its
    origin, its idempotency key and the key its result is kept under."""
    return f"lead-file:{run_id}:{row}"


def lead_file_row_of(message_attributes: Any) -> str | None:
    """The row key of a message with a lead file's row attributes; None for any other.
    ``message_attributes`` as Lambda's record has them (``stringValue``)."""
    if not isinstance(message_attributes, dict):
        return None
    run, row = (
        (message_attributes.get(name) or {}).get("stringValue")
        for name in (LEAD_FILE_RUN, LEAD_FILE_ROW)
    )
    return lead_file_row_key(run, row) if isinstance(run, str) and isinstance(row, str) else None


@dataclass(frozen=True)
class Due:
    """A handed-back record and when it should be delivered again."""

    message_id: str
    receipt_handle: str
    seconds: int


def visibility(receive_count: int, retry_in: float | None, rng: random.Random | None = None) -> int:
    """Seconds until a handed-back record is visible again.

    ``retry_in``: Klaviyo's ``Retry-After`` (or the pacer's wait), plus jitter so the records
    of a throttled batch do not all come back in the same second; None: the back-off.
    """
    rng = rng or random.Random()
    if retry_in is not None and not math.isfinite(retry_in):
        retry_in = None  # a wait for ever (or NaN) cannot be rounded: the back-off instead
    if retry_in is not None:
        seconds = retry_in + rng.uniform(0.0, max(1.0, JITTER * retry_in))
    else:
        base = BACKOFF_SECONDS[min(max(receive_count, 1), len(BACKOFF_SECONDS)) - 1]
        seconds = base * rng.uniform(1.0 - JITTER, 1.0 + JITTER)
    return int(min(MAX_VISIBILITY_SECONDS, max(0, math.ceil(seconds))))


class ActionQueue(OnFirstUse):
    """The action's SQS queue (its URL from the stack), through a client made on first use."""

    def __init__(self, url: str, client_factory: Callable[[], Any] | None = None) -> None:
        super().__init__(client_factory or boto3_client("sqs"))
        self.url = url

    def delay(self, due: list[Due]) -> list[str]:
        """Set each record's visibility; the message ids SQS did not take."""
        refused: list[str] = []
        for start in range(0, len(due), 10):  # ChangeMessageVisibilityBatch takes ten
            chunk = due[start : start + 10]
            entries = [
                {
                    "Id": str(index),
                    "ReceiptHandle": item.receipt_handle,
                    "VisibilityTimeout": item.seconds,
                }
                for index, item in enumerate(chunk)
            ]
            try:
                answer = self.client.change_message_visibility_batch(
                    QueueUrl=self.url, Entries=entries
                )
            except Exception:
                refused += [item.message_id for item in chunk]
                continue
            refused += [chunk[int(f["Id"])].message_id for f in answer.get("Failed", [])]
        return refused

    def send(self, lead: Any, first_seen_at: float, origin_id: str | None = None) -> str:
        """Put a lead on the queue for a later try; when it was first seen and what it first
        arrived as go with it, so the retry knows what its first try did."""
        answer = self.client.send_message(
            QueueUrl=self.url, **_message(Later(lead, first_seen_at, origin_id))
        )
        return str(answer["MessageId"])

    def send_request(self, body: str, attributes: dict[str, str]) -> str:
        """Put a request of the API's async route on the queue, as it came (string message
        attributes beside it); its message id."""
        answer = self.client.send_message(
            QueueUrl=self.url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        )
        return str(answer["MessageId"])

    def send_batch(self, later: list[Later]) -> list[str | None]:
        """Put up to ten leads on the queue in one call: each one's message id, or None for
        a lead SQS did not take (the call failed, or refused that entry)."""
        if len(later) > MAX_BATCH:
            raise ValueError(f"SendMessageBatch takes at most {MAX_BATCH} messages")
        entries = [{"Id": str(index), **_message(item)} for index, item in enumerate(later)]
        try:
            answer = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
        except Exception:
            return [None] * len(later)
        ids: list[str | None] = [None] * len(later)
        for sent in answer.get("Successful", []):
            ids[int(sent["Id"])] = str(sent["MessageId"])
        return ids


MAX_BATCH = 10  # SendMessageBatch's limit
# SendMessageBatch also limits the sum of its bodies; the bodies here are kept under SQS's
# long-standing 256 KiB (attributes count too, and are small).
MAX_BATCH_BYTES = 240 * 1024


def batches(later: list[Later]) -> list[list[Later]]:
    """The leads in SendMessageBatch calls: at most ten, and their bodies within the limit."""
    out: list[list[Later]] = []
    size = 0
    for item in later:
        body = len(_message(item)["MessageBody"].encode())
        if not out or len(out[-1]) == MAX_BATCH or size + body > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += body
    return out


@dataclass(frozen=True)
class Later:
    """A lead for a later try: when the bundle first saw it and what it first arrived as."""

    lead: Any
    first_seen_at: float
    origin_id: str | None = None


def _message(item: Later) -> dict[str, Any]:
    attributes = {FIRST_SEEN: {"DataType": "Number", "StringValue": f"{item.first_seen_at:.3f}"}}
    if item.origin_id:
        attributes[ORIGIN] = {"DataType": "String", "StringValue": item.origin_id}
    return {
        "MessageBody": json.dumps(item.lead, separators=(",", ":"), default=str),
        "MessageAttributes": attributes,
    }
