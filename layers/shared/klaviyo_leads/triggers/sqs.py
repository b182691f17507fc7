"""SQS batches: one engine for every batch: exactly-once results, bulk calls, and partial batch
responses.

Each record ends in exactly one of: done (success, failure or a final error, its result
stored and published) or handed back to the queue (``batchItemFailures``) to be delivered
again, until the queue's ``maxReceiveCount`` moves it to the dead-letter queue.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from klaviyo_leads import dry_run, outcomes
from klaviyo_leads.actions.action import Action, Delivery
from klaviyo_leads.aws.bus import Publication
from klaviyo_leads.aws.idempotency import InProgressElsewhere
from klaviyo_leads.aws.queue import ORIGIN, Due, lead_file_row_of, visibility
from klaviyo_leads.budget import MIN_SECONDS_PER_LEAD, remaining_seconds
from klaviyo_leads.lead.body import parse_body
from klaviyo_leads.observability import logger
from klaviyo_leads.outcomes import Kind, Result
from klaviyo_leads.runtime import Processed, Runtime, internal_error, processed
from klaviyo_leads.trail import records as trail
from klaviyo_leads.trail.records import Arrival, TrailAttempt

# Message attributes of a lead-file row (``lead_files.splitter``): its file's run, and its row.
RUN_ATTRIBUTE, ROW_ATTRIBUTE = "lead_file_run", "lead_file_row"

# What storing and publishing one result costs after a bulk call (a DynamoDB write and a
# tenth of a PutEvents call), kept out of the bulk calls' time budget.
SETTLE_SECONDS_PER_RECORD = 0.02

# How the API's /async route wraps a request so the queue reads it as the sync route would.
HTTP_REQUEST = "http_request"


@dataclass(frozen=True)
class Unreadable:
    """A message whose body is not a lead: the result it gets, and what was received."""

    result: Result
    received: Any


class HandBack(Exception):
    """The record goes back to the queue, to come back in ``retry_in`` seconds (None: the
    back-off by delivery count, see ``aws.queue``)."""

    def __init__(self, reason: str, retry_in: float | None = None) -> None:
        super().__init__(reason)
        self.retry_in = retry_in


def hand_back(result: Result) -> HandBack:
    """A retryable result's way back: when Klaviyo (or the pacer) said, else the back-off."""
    wait = result.retry_after if result.kind is Kind.THROTTLED else None
    return HandBack(result.reason or "retryable error", wait)


@dataclass
class BatchItem:
    """A record of the batch: its lead, and what became of it. ``stored`` is its
    result once kept (an earlier delivery's, or this one's); ``hand_back`` says why it goes
    back to the queue instead."""

    record: SQSRecord
    lead: Any
    dry_run: bool = False  # nothing kept or published: its answer is the result
    stored: dict[str, Any] | None = None
    result: Processed | None = None
    hand_back: HandBack | None = None
    published: bool | None = None  # None: not tried yet


def handle_batch(
    runtime: Runtime, action: Action, event: Mapping[str, Any], lambda_context: LambdaContext
) -> dict:
    """Every SQS batch goes one way: its records taken in groups, each group claimed (the
    message's idempotency record; a dry run is not claimed), run, and its results kept; then
    every kept result published, ten to a call, and the rest handed back.

    A group is the whole batch where the action has a batch path (``Action.run_batch``) and
    coalescing is on: one bulk call serves its leads. Otherwise a group is one record, taken
    only while the invocation has time for a lead, and kept before the next is taken.
    """
    records = [SQSRecord(raw) for raw in event["Records"]]
    items: dict[str, BatchItem] = {}
    together = runtime.settings.coalesce_batches and action.run_batch is not None
    left = remaining_seconds(lambda_context)
    if together and (left is None or left >= MIN_SECONDS_PER_LEAD):
        group = [_claim(runtime, action, record, left) for record in records]
        items.update((item.record.message_id, item) for item in group)
        _run_together(runtime, action, [i for i in group if not i.dry_run], lambda_context)
        for item in group:
            if item.dry_run:
                _run_one(runtime, action, item, lambda_context)
        _keep(runtime, action, group)
    else:
        for record in records:
            left = remaining_seconds(lambda_context)
            if left is not None and left < MIN_SECONDS_PER_LEAD:
                item = BatchItem(record, None)
                _give_back(item, "Not started: too little time left in the invocation", 0.0)
            else:
                item = _claim(runtime, action, record, left)
                try:
                    _run_one(runtime, action, item, lambda_context)
                except Exception as exc:  # never the whole batch for one record
                    item.result = processed(action, internal_error(exc))
                _keep(runtime, action, [item])
            items[record.message_id] = item
    _publish(runtime, action, [i for i in items.values() if not i.dry_run])
    failures = [{"itemIdentifier": m} for m, item in items.items() if item.hand_back is not None]
    response = {"batchItemFailures": failures}
    handed_back = {m: i.hand_back.retry_in for m, i in items.items() if i.hand_back is not None}
    _delay_handed_back(runtime, event["Records"], response, handed_back)
    return response


def _give_back(item: BatchItem, reason: str, retry_in: float | None = None) -> None:
    logger.set_correlation_id(item.record.message_id)
    item.hand_back = HandBack(reason, retry_in)


def _claim(runtime: Runtime, action: Action, record: SQSRecord, left: float | None) -> BatchItem:
    """The record with its lead, claimed: its earlier result when one is kept, handed back
    when another invocation holds it or the claim cannot be made. A dry run is not claimed."""
    logger.set_correlation_id(record.message_id)
    lead = _lead_of(record)
    item = BatchItem(record, lead, dry_run=dry_run.in_payload(lead))
    idempotency = runtime.idempotency(action)
    if idempotency is None or item.dry_run:
        return item
    try:
        item.stored = idempotency.claim(record.raw_event, int(left * 1000) if left else None)
    except InProgressElsewhere:
        _give_back(item, "the message is being processed elsewhere")
    except Exception as exc:
        logger.warning("Could not claim a record", extra={"error_type": type(exc).__name__})
        _give_back(item, "the record could not be claimed")
    return item


def _to_run(item: BatchItem) -> bool:
    return item.stored is None and item.hand_back is None and item.result is None


def _run_one(
    runtime: Runtime, action: Action, item: BatchItem, lambda_context: LambdaContext
) -> None:
    if _to_run(item):
        item.result = _process(runtime, action, item.lead, item.record, lambda_context)


def _run_together(
    runtime: Runtime, action: Action, group: list[BatchItem], lambda_context: LambdaContext
) -> None:
    """The group's new leads in the action's batch path; what is not a lead, on its own."""
    todo = [item for item in group if _to_run(item)]
    readable = [item for item in todo if not isinstance(item.lead, Unreadable)]
    for item in todo:
        if isinstance(item.lead, Unreadable):
            _run_one(runtime, action, item, lambda_context)
    if not readable:
        return
    # Time left after the claims, less what keeping and publishing the results will take.
    left = remaining_seconds(lambda_context)
    if left is not None:
        left -= SETTLE_SECONDS_PER_RECORD * len(group)
    visits = _trail_batch(runtime, action, [item.record for item in readable])
    started = runtime.clock()
    with trail.collecting(visits[0].calls if visits else None):
        try:
            results = runtime.process_batch(
                action,
                [item.lead for item in readable],
                left,
                [origin_of(item.record) for item in readable],
                [_delivery(item.record) for item in readable],
            )
        except Exception as exc:
            results = [processed(action, internal_error(exc)) for _ in readable]
    for visit, result in zip(visits, results if visits else [], strict=True):
        visit.end(result.result, runtime.clock() - started, shared_by=len(visits))
    for item, result in zip(readable, results, strict=True):
        item.result = result


def _keep(runtime: Runtime, action: Action, group: list[BatchItem]) -> None:
    """Keep each new final result on the message's idempotency record; a retryable one
    releases the record and goes back to the queue, to really run again."""
    idempotency = runtime.idempotency(action)
    for item in group:
        if item.result is None or item.stored is not None or item.hand_back is not None:
            continue
        if item.dry_run:
            item.stored = item.result.fields
            continue
        result = item.result.result
        logger.set_correlation_id(item.record.message_id)
        try:
            if result.retryable:
                back = hand_back(result)
                if idempotency is not None:
                    idempotency.release(item.record.raw_event, back)
                item.hand_back = back
                continue
            if idempotency is not None:
                idempotency.complete(item.record.raw_event, item.result.fields)
        except Exception as exc:  # the store failing: the record is tried again later
            logger.warning("Could not store a result", extra={"error_type": type(exc).__name__})
            _give_back(item, "the result could not be stored")
            continue
        item.stored = item.result.fields


def _publish(runtime: Runtime, action: Action, items: list[BatchItem]) -> None:
    """Publish the kept results (a redelivery after a failed publish only publishes again);
    one that cannot be published goes back to the queue."""
    finished = [item for item in items if item.hand_back is None and item.stored is not None]
    if not finished:
        return
    try:
        delivered = _deliver(runtime, action, [(item.record, item) for item in finished])
    except Exception as exc:
        logger.warning("Could not publish results", extra={"error_type": type(exc).__name__})
        delivered = [False] * len(finished)
    for item, published in zip(finished, delivered, strict=True):
        item.published = published
        if not published:
            _give_back(item, "the result could not be published")


def _delay_handed_back(
    runtime: Runtime,
    raw_records: list[Any],
    response: Mapping[str, Any],
    handed_back: dict[str, float | None],
) -> None:
    """Make each handed-back record visible again when it is due, not after the queue's
    full visibility timeout. Where SQS refuses, the queue's timeout still brings it back.

    Never raises: the batch's results are settled by now, and an exception here would
    fail the whole batch, done records and all.
    """
    if runtime.queue is None:
        return
    try:
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        due = [
            Due(
                record.message_id,
                record.receipt_handle,
                visibility(
                    int(record.attributes.approximate_receive_count or 1),
                    handed_back.get(record.message_id),
                ),
            )
            for record in map(SQSRecord, raw_records)
            if record.message_id in failed
        ]
        refused = runtime.queue.delay(due) if due else []
    except Exception as exc:
        logger.warning(
            "Could not set when records come back", extra={"error_type": type(exc).__name__}
        )
        return
    if refused:
        logger.warning("Could not set when records come back", extra={"count": len(refused)})


def _deliver(
    runtime: Runtime, action: Action, finished: list[tuple[SQSRecord, BatchItem]]
) -> list[bool]:
    """Publish results on the bus (ten to a call) and keep them for GET /results."""
    delivered = [True] * len(finished)
    if runtime.publisher is not None:
        publications = [
            Publication(
                action.name, _as_received(item.lead, record), item.stored or {}, record.message_id
            )
            for record, item in finished
        ]
        delivered = runtime.publisher.publish(publications)
    if runtime.results is not None:
        kept = runtime.results.keep(
            [(_result_keys(record), action.name, item.stored or {}) for record, item in finished]
        )
        delivered = [a and b for a, b in zip(delivered, kept, strict=True)]
    return delivered


def _result_keys(record: SQSRecord) -> list[str]:
    """Its message id, and for a lead file's row the row: the assembler reads it by row."""
    row = lead_file_row_of(record.raw_event.get("messageAttributes"))
    return [record.message_id, row] if row else [record.message_id]


def _delivery(record: SQSRecord) -> Delivery:
    """Which delivery of its message a record is (SQS's receive count)."""
    return Delivery(count=int(record.attributes.approximate_receive_count or 1))


def _process(
    runtime: Runtime, action: Action, lead: Any, record: SQSRecord, lambda_context: LambdaContext
) -> Processed:
    if isinstance(lead, Unreadable):
        result = lead.result
        runtime.record(action, result, 0.0)
        if runtime.trail is not None:
            visit = runtime.trail.start(
                action.name,
                arrival_of(record),
                lead.received,
                lead_key=origin_of(record),
                delivery=_delivery(record).count,
            )
            visit.end(result, 0.0)
        return processed(action, result)
    return runtime.process(
        action,
        lead,
        remaining_seconds=remaining_seconds(lambda_context),
        origin_id=origin_of(record),
        delivery=_delivery(record).count,
        arrival=arrival_of(record),
    )


def arrival_of(record: SQSRecord) -> Arrival:
    """How a queued lead came: its message, and the lead-file row it is, if one."""
    attributes = record.message_attributes
    run = attributes[RUN_ATTRIBUTE] if RUN_ATTRIBUTE in attributes else None  # noqa: SIM401
    row = attributes[ROW_ATTRIBUTE] if ROW_ATTRIBUTE in attributes else None  # noqa: SIM401
    number = row.string_value if row is not None else None
    return Arrival(
        "sqs",
        message_id=record.message_id,
        lead_file=run.string_value if run is not None else None,
        lead_row=int(number) if number and number.isdigit() else None,
    )


def _trail_batch(runtime: Runtime, action: Action, records: list[SQSRecord]) -> list[TrailAttempt]:
    """Each coalesced lead's ``received`` record; their attempts share the batch's calls."""
    if runtime.trail is None or not records:
        return []
    visits = [
        runtime.trail.start(
            action.name,
            arrival_of(record),
            _lead_of(record),
            lead_key=origin_of(record),
            delivery=_delivery(record).count,
        )
        for record in records
    ]
    for visit in visits[1:]:
        visit.calls = visits[0].calls
    return visits


def origin_of(record: SQSRecord) -> str:
    """What the record's lead first arrived as: its message, or the event whose retry put it
    on the queue (the owner of what that event's first try created)."""
    attributes = record.message_attributes
    attribute = attributes[ORIGIN] if ORIGIN in attributes else None  # noqa: SIM401
    origin = attribute.string_value if attribute is not None else None
    return origin or record.message_id


def _lead_of(record: SQSRecord) -> Any:
    """The message's lead: its JSON body, or the request the /async route wrapped."""
    try:
        body = json.loads(record.body)
    except (TypeError, ValueError, RecursionError):
        return Unreadable(outcomes.MESSAGE_NOT_JSON(), record.body)
    request = body.get(HTTP_REQUEST) if isinstance(body, dict) and len(body) == 1 else None
    if not isinstance(request, dict):
        return body
    # The /async route writes these as text; anything else was not sent by it.
    for name in ("body_base64", "content_type"):
        if not isinstance(request.get(name), str | None):
            problem = f"{name} must be text, not {type(request[name]).__name__}"
            return Unreadable(outcomes.MESSAGE_MALFORMED(problem=problem), body)
    try:
        return parse_body(request.get("body_base64"), request.get("content_type"), True)
    except Result as problem:
        raw = request.get("body_base64")
        return Unreadable(problem, _decoded(raw) if isinstance(raw, str) else raw)


def _decoded(body_base64: str) -> str:
    try:
        return base64.b64decode(body_base64).decode("utf-8", "replace")
    except (ValueError, binascii.Error):
        return body_base64


def _as_received(lead: Any, record: SQSRecord) -> Any:
    """The lead for the result event: what was received, even when it was not a lead."""
    return lead.received if isinstance(lead, Unreadable) else lead
