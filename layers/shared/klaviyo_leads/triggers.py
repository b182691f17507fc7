"""Event shapes in, results out: API Gateway (REST v1, HTTP v2), SQS, EventBridge, direct.

Every trigger ends in ``Runtime.process`` for each lead; what differs is how leads arrive
and how results leave (an HTTP response, a partial batch response, published events).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .actions import Action, ActionResult, result_fields
from .idempotency import InProgressElsewhere
from .lead import leads_in, parse_body
from .outcomes import Kind, Problem, bad_request, http_status
from .publishing import Publication
from .runtime import Processed, Runtime, logger

# A record is not started with less than this left in the invocation: it goes back to the
# queue instead of running into the Lambda timeout (which would lose the batch's progress).
MIN_SECONDS_PER_RECORD = 10.0


def event_kind(event: Any) -> str:
    if not isinstance(event, Mapping):
        return "direct"
    if "requestContext" in event and (
        "httpMethod" in event or event.get("version") == "2.0" or "routeKey" in event
    ):
        return "api"
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return "sqs"
    if {"detail-type", "source", "detail"} <= set(event):
        return "eventbridge"
    return "direct"


def remaining_seconds(lambda_context: Any) -> float | None:
    getter = getattr(lambda_context, "get_remaining_time_in_millis", None)
    return getter() / 1000.0 if callable(getter) else None


def handle(runtime: Runtime, action: Action, event: Any, lambda_context: Any) -> Any:
    kind = event_kind(event)
    if kind == "api":
        return handle_api(runtime, action, event, lambda_context)
    if kind == "sqs":
        return handle_sqs(runtime, action, event, lambda_context)
    if kind == "eventbridge":
        logger.set_correlation_id(str(event.get("id") or "") or None)
        return handle_leads(runtime, action, event["detail"], lambda_context, always_publish=True)
    return handle_leads(runtime, action, event, lambda_context, always_publish=False)


# -- API Gateway ---------------------------------------------------------------------------


def handle_api(runtime: Runtime, action: Action, event: Mapping[str, Any], ctx: Any) -> dict:
    request = event.get("requestContext") or {}
    logger.set_correlation_id(str(request.get("requestId") or "") or None)
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        lead = parse_body(
            event.get("body"), headers.get("content-type"), bool(event.get("isBase64Encoded"))
        )
    except Problem as problem:
        result = ActionResult.from_problem(problem)
        runtime.record(action, result, 0.0)
        return api_response(result, result_fields(action, result))
    processed = runtime.process(
        action, lead, remaining_seconds=remaining_seconds(ctx), via_api_gateway=True
    )
    return api_response(processed.result, processed.fields)


def api_response(result: ActionResult, fields: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if result.kind is Kind.THROTTLED:
        headers["Retry-After"] = str(max(1, math.ceil(result.retry_after or 1)))
    return {
        "statusCode": http_status(result.outcome, result.kind),
        "headers": headers,
        "body": json.dumps(fields),
        "isBase64Encoded": False,
    }


# -- EventBridge and direct invocation -------------------------------------------------------


def handle_leads(
    runtime: Runtime, action: Action, payload: Any, ctx: Any, *, always_publish: bool
) -> Any:
    several = leads_in(payload)
    leads = several if several is not None else [payload]
    processed = [
        runtime.process(action, lead, remaining_seconds=remaining_seconds(ctx)) for lead in leads
    ]
    if runtime.publisher and (always_publish or several is not None):
        runtime.publisher.publish(
            [
                Publication(action.name, lead, p.fields)
                for lead, p in zip(leads, processed, strict=True)
            ]
        )
    if several is not None:
        return {"results": [p.fields for p in processed]}
    return processed[0].fields


# -- SQS -----------------------------------------------------------------------------------


class HandBack(Exception):
    """The record goes back to the queue (``batchItemFailures``) to be delivered again."""


def handle_sqs(runtime: Runtime, action: Action, event: Mapping[str, Any], ctx: Any) -> dict:
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    if runtime.settings.coalesce_batches:
        from .coalescing import prepare_batch

        precomputed = prepare_batch(runtime, action, event["Records"], ctx)
    else:
        precomputed = {}

    def record_handler(record: Any) -> dict[str, Any]:
        return process_record(runtime, action, record, ctx, precomputed.get(record.message_id))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(  # type: ignore[return-value]
        event=dict(event), record_handler=record_handler, processor=processor, context=ctx
    )


def process_record(
    runtime: Runtime, action: Action, record: Any, ctx: Any, precomputed: Processed | None
) -> dict[str, Any]:
    """One SQS record: claim it, process it (or reuse a stored result), publish, settle."""
    message_id = record.message_id
    logger.set_correlation_id(message_id)
    left = remaining_seconds(ctx)
    if precomputed is None and left is not None and left < MIN_SECONDS_PER_RECORD:
        raise HandBack("too little time left in this invocation")

    lead = _record_lead(record)
    idempotency = runtime.idempotency(action)
    fields = None
    if idempotency is not None:
        try:
            fields = idempotency.claim(message_id, int(left * 1000) if left else None)
        except InProgressElsewhere as exc:
            raise HandBack("the message is being processed elsewhere") from exc

    if fields is None:
        processed = precomputed or _process_body(runtime, action, lead, left)
        if processed.result.retryable:
            retry = HandBack(processed.result.reason or "retryable error")
            if idempotency is not None:
                idempotency.release(message_id, retry)
            raise retry
        if idempotency is not None:
            idempotency.complete(message_id, processed.fields)
        fields = processed.fields

    # The result is stored: a redelivery after a failed publish only publishes again.
    if (
        runtime.publisher
        and not runtime.publisher.publish([Publication(action.name, lead, fields, message_id)])[0]
    ):
        raise HandBack("the result could not be published")
    return fields


def _record_lead(record: Any) -> Any:
    """The lead as received: parsed JSON, or the raw body when it is not JSON."""
    try:
        return json.loads(record.body)
    except (TypeError, ValueError, RecursionError):
        return record.body


def _process_body(runtime: Runtime, action: Action, lead: Any, left: float | None) -> Processed:
    if isinstance(lead, str) and not _is_json(lead):
        result = ActionResult.from_problem(bad_request("The message body is not valid JSON"))
        runtime.record(action, result, 0.0)
        return Processed(result, result_fields(action, result))
    return runtime.process(action, lead, remaining_seconds=left)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True
