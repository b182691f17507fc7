"""SQS batches: partial batch responses, exactly-once results, and bulk processing.

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

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
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

# Message attributes of a lead-file row (``lead_files``): its file's run, and its row.
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
    back-off by delivery count, see ``queueing``)."""

    def __init__(self, reason: str, retry_in: float | None = None) -> None:
        super().__init__(reason)
        self.retry_in = retry_in


def hand_back(result: Result) -> HandBack:
    """A retryable result's way back: when Klaviyo (or the pacer) said, else the back-off."""
    wait = result.retry_after if result.kind is Kind.THROTTLED else None
    return HandBack(result.reason or "retryable error", wait)


@dataclass
class Claimed:
    """A record this invocation owns: its lead, and its result if one is known already."""

    lead: Any
    stored: dict[str, Any] | None = None
    result: Processed | None = None
    hand_back: str | None = None
    published: bool | None = None  # None: not tried yet


def handle_batch(
    runtime: Runtime, action: Action, event: Mapping[str, Any], ctx: LambdaContext
) -> dict:
    idempotency = runtime.idempotency(action)
    if idempotency is not None:
        idempotency.config.register_lambda_context(ctx)
    claimed: dict[str, Claimed] = {}
    left = remaining_seconds(ctx)
    enough_time = left is None or left >= MIN_SECONDS_PER_LEAD  # else each record goes back
    if runtime.settings.coalesce_batches and action.run_batch is not None and enough_time:
        claimed = _claim_and_coalesce(runtime, action, event["Records"], ctx)

    def process_record(record: dict[str, Any]) -> dict[str, Any]:
        sqs_record = SQSRecord(record)
        result = _process(runtime, action, _lead_of(sqs_record), sqs_record, ctx)
        if result.result.retryable:
            raise hand_back(result.result)
        return result.fields

    once = idempotency.once(process_record) if idempotency is not None else process_record

    handed_back: dict[str, float | None] = {}

    def record_handler(record: SQSRecord) -> dict[str, Any]:
        logger.set_correlation_id(record.message_id)
        try:
            item = claimed.get(record.message_id)
            if item is None:
                lead = _lead_of(record)
                if dry_run.in_payload(lead):
                    # Nothing written: no idempotency record, no published or kept result.
                    return _process(runtime, action, lead, record, ctx).fields
                item = _one_by_one(record, ctx, once)
            else:
                _finish(runtime, action, record, ctx, item)
            return _publish(runtime, action, record, item)
        except HandBack as back:
            handed_back[record.message_id] = back.retry_in
            raise

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=dict(event), record_handler=record_handler, processor=processor, context=ctx
    )
    _delay_handed_back(runtime, event["Records"], response, handed_back)
    return response  # type: ignore[return-value]


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


def _one_by_one(record: SQSRecord, ctx: LambdaContext, once: Any) -> Claimed:
    left = remaining_seconds(ctx)
    if left is not None and left < MIN_SECONDS_PER_LEAD:
        raise HandBack("Not started: too little time left in the invocation", retry_in=0.0)
    try:
        fields = once(record=record.raw_event)
    except InProgressElsewhere as exc:
        raise HandBack("the message is being processed elsewhere") from exc
    return Claimed(_lead_of(record), stored=fields)


def _finish(
    runtime: Runtime, action: Action, record: SQSRecord, ctx: LambdaContext, item: Claimed
) -> None:
    """A record of a coalesced batch: its result is known unless it could not join the batch."""
    if item.hand_back:
        raise HandBack(item.hand_back)
    if item.stored is not None:
        return
    idempotency = runtime.idempotency(action)
    result = item.result or _process(runtime, action, item.lead, record, ctx)
    if result.result.retryable:
        retry = hand_back(result.result)
        if idempotency is not None:
            idempotency.release(record.raw_event, retry)
        raise retry
    if idempotency is not None:
        idempotency.complete(record.raw_event, result.fields)
    item.stored = result.fields


def _publish(runtime: Runtime, action: Action, record: SQSRecord, item: Claimed) -> dict[str, Any]:
    """Publish a stored result; a redelivery after a failed publish only publishes again."""
    fields = item.stored or {}
    published = item.published
    if published is None:
        published = _deliver(runtime, action, [(record, item)])[0]
    if published is False:
        raise HandBack("the result could not be published")
    return fields


def _deliver(
    runtime: Runtime, action: Action, finished: list[tuple[SQSRecord, Claimed]]
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


def claim(runtime: Runtime, action: Action, record: SQSRecord, left: float | None) -> Claimed:
    lead = _lead_of(record)
    idempotency = runtime.idempotency(action)
    if idempotency is None:
        return Claimed(lead)
    try:
        stored = idempotency.claim(record.raw_event, int(left * 1000) if left else None)
    except InProgressElsewhere:
        return Claimed(lead, hand_back="the message is being processed elsewhere")
    return Claimed(lead, stored=stored)


def _claim_and_coalesce(
    runtime: Runtime, action: Action, raw_records: list[Any], ctx: LambdaContext
) -> dict[str, Claimed]:
    left = remaining_seconds(ctx)
    claimed: dict[str, Claimed] = {}
    for raw in raw_records:
        record = SQSRecord(raw)
        if dry_run.in_payload(_lead_of(record)):
            continue  # a dry run goes one by one, unclaimed
        try:
            claimed[record.message_id] = claim(runtime, action, record, left)
        except Exception as exc:
            logger.warning("Could not claim a record", extra={"error_type": type(exc).__name__})
            claimed[record.message_id] = Claimed(None, hand_back="the record could not be claimed")
    todo = {m: c for m, c in claimed.items() if c.stored is None and c.hand_back is None}
    readable = {m: c for m, c in todo.items() if not isinstance(c.lead, Unreadable)}
    # Time left after the claims, less what storing and publishing the results will take.
    left = remaining_seconds(ctx)
    if left is not None:
        left -= SETTLE_SECONDS_PER_RECORD * len(claimed)
    records = {raw.get("messageId"): SQSRecord(raw) for raw in raw_records}
    visits = _trail_batch(runtime, action, [records[message_id] for message_id in readable])
    started = runtime.clock()
    with trail.collecting(visits[0].calls if visits else None):
        try:
            results = runtime.process_batch(
                action,
                [c.lead for c in readable.values()],
                left,
                [origin_of(records[message_id]) for message_id in readable],
                [_delivery(records[message_id]) for message_id in readable],
            )
        except Exception as exc:
            results = [processed(action, internal_error(exc)) for _ in readable]
    for visit, result in zip(visits, results if visits else [], strict=True):
        visit.end(result.result, runtime.clock() - started, shared_by=len(visits))
    for item, result in zip(readable.values(), results, strict=True):
        item.result = result
    _store_and_publish(runtime, action, claimed, raw_records)
    return claimed


def _store_and_publish(
    runtime: Runtime, action: Action, claimed: dict[str, Claimed], raw_records: list[Any]
) -> None:
    """Store the batch's final results, then publish them ten to a call, not one by one."""
    idempotency = runtime.idempotency(action)
    records = {raw.get("messageId"): SQSRecord(raw) for raw in raw_records}
    final: list[tuple[str, Claimed]] = []
    for message_id, item in claimed.items():
        if item.hand_back is None and item.stored is None and item.result is not None:
            if item.result.result.retryable:
                continue  # settle() releases it and hands it back
            try:
                if idempotency is not None:
                    idempotency.complete(records[message_id].raw_event, item.result.fields)
            except Exception as exc:  # the store failing: the record is tried again later
                logger.warning("Could not store a result", extra={"error_type": type(exc).__name__})
                item.hand_back = "the result could not be stored"
                continue
            item.stored = item.result.fields
        if item.hand_back is None and item.stored is not None:
            final.append((message_id, item))
    if not final:
        return
    finished = [(records[message_id], item) for message_id, item in final]
    for (_, item), delivered in zip(final, _deliver(runtime, action, finished), strict=True):
        item.published = delivered


def _delivery(record: SQSRecord) -> Delivery:
    """Which delivery of its message a record is (SQS's receive count)."""
    return Delivery(count=int(record.attributes.approximate_receive_count or 1))


def _process(
    runtime: Runtime, action: Action, lead: Any, record: SQSRecord, ctx: LambdaContext
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
        remaining_seconds=remaining_seconds(ctx),
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
