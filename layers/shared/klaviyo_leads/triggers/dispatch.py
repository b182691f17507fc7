"""Event shapes in, results out: API Gateway (REST v1, HTTP v2), SQS, EventBridge, direct.

Every trigger ends in ``Runtime.process`` for each lead; what differs is how leads arrive
and how results leave (an HTTP response, a partial batch response, published events).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from klaviyo_leads import dry_run, outcomes
from klaviyo_leads.actions.action import Action, result_fields
from klaviyo_leads.actions.create.one import RECORD_RETRY_SECONDS
from klaviyo_leads.aws.bus import Publication
from klaviyo_leads.aws.idempotency import (
    MAX_KEY_LENGTH,
    InProgressElsewhere,
    KeyReused,
    RecordsUnavailable,
)
from klaviyo_leads.aws.queue import Later, batches
from klaviyo_leads.budget import API_GATEWAY_LIMIT_SECONDS, MIN_SECONDS_PER_LEAD, remaining_seconds
from klaviyo_leads.lead.record import MAX_BODY_BYTES, leads_in, parse_body
from klaviyo_leads.observability import count, logger
from klaviyo_leads.outcomes import Kind, Result
from klaviyo_leads.runtime import Processed, Runtime
from klaviyo_leads.trail.records import Arrival


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


def leads_received(kind: str, event: Any) -> int:
    """How many leads an event brings (the LeadsReceived metric: leads in, outcomes out)."""
    if kind == "sqs":
        return len(event["Records"])
    payload = event["detail"] if kind == "eventbridge" else event
    several = leads_in(payload) if kind != "api" else None
    return len(several) if several is not None else 1


def malformed(kind: str, event: Any) -> str | None:
    """What is wrong with an API Gateway or SQS event no AWS service sends (a hand-made
    invocation): the parts the handlers read must have their documented types."""
    if kind == "api":
        for name, types, called in _API_PARTS:
            if not isinstance(event.get(name), types):
                return f"{name} must be {called}"
        for name, value in (event.get("headers") or {}).items():
            if not isinstance(value, str):  # API Gateway puts several values in multiValueHeaders
                return f"headers.{name} must be text, not {type(value).__name__}"
        return None
    if kind == "sqs":
        for place, record in enumerate(event["Records"]):
            for name, types, called in _SQS_PARTS:
                if not isinstance(record.get(name), types):
                    return f"Records[{place}].{name} must be {called}"
            attributes = record["attributes"]
            for name in _SQS_COUNTS:
                if not str(attributes.get(name, "0")).isdigit():
                    return f"Records[{place}].attributes.{name} must be a whole number"
            values = record["messageAttributes"].values()
            if not all(isinstance(value, Mapping) for value in values):
                return f"Records[{place}].messageAttributes must hold objects"
    return None


_OBJECT = "an object"
_TEXT = "text"
_OPTIONAL: dict[str, tuple[type, ...]] = {_OBJECT: (Mapping, type(None)), _TEXT: (str, type(None))}
_REQUIRED: dict[str, tuple[type, ...]] = {_OBJECT: (Mapping,), _TEXT: (str,)}
# (part, the types it may have, what they are called)
_API_PARTS = (
    ("requestContext", _OPTIONAL[_OBJECT], _OBJECT),
    ("headers", _OPTIONAL[_OBJECT], _OBJECT),
    ("body", _OPTIONAL[_TEXT], _TEXT),
)
_SQS_PARTS = (
    ("messageId", _REQUIRED[_TEXT], _TEXT),
    ("body", _OPTIONAL[_TEXT], _TEXT),
    ("receiptHandle", _OPTIONAL[_TEXT], _TEXT),
    ("attributes", _REQUIRED[_OBJECT], _OBJECT),
    ("messageAttributes", _REQUIRED[_OBJECT], _OBJECT),
)
_SQS_COUNTS = ("ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp")


def handle(runtime: Runtime, action: Action, event: Any, lambda_context: LambdaContext) -> Any:
    kind = event_kind(event)
    problem = malformed(kind, event)
    if problem is not None:
        # Nothing to hand back or retry: the invoker gets the result (an API-shaped answer
        # when the event claimed to come from API Gateway).
        result = outcomes.EVENT_MALFORMED(problem=problem)
        count("LeadsReceived", 1)  # one answer, so one lead in: the books balance
        runtime.record(action, result, 0.0)
        fields = result_fields(action, result)
        logger.warning("A malformed event", extra={"problem": problem, "event_kind": kind})
        return api_response(result, fields) if kind == "api" else fields
    count("LeadsReceived", leads_received(kind, event))
    if kind == "api":
        return handle_api(runtime, action, event, lambda_context)
    if kind == "sqs":
        return handle_sqs(runtime, action, event, lambda_context)
    request_id = str(getattr(lambda_context, "aws_request_id", "") or "")
    if kind == "eventbridge":
        return handle_leads(
            runtime,
            action,
            event["detail"],
            lambda_context,
            always_publish=True,
            correlation_id=str(event.get("id") or request_id),
            path="eventbridge",
        )
    return handle_leads(
        runtime,
        action,
        event,
        lambda_context,
        always_publish=False,
        correlation_id=request_id,
        path="direct",
    )


# -- API Gateway ---------------------------------------------------------------------------

# A repeat that arrives while the first request runs is asked to come back after this long.
IN_PROGRESS_RETRY_SECONDS = 5.0


# POST /<route>/async queues the request; POST /<route> answers it.
ASYNC_SUFFIX = "/async"


def is_async(event: Mapping[str, Any]) -> bool:
    """Whether the request came by the async route (REST API: its resource; HTTP API: its
    route key)."""
    route = event.get("resource") or event.get("routeKey") or ""
    return isinstance(route, str) and route.rstrip("/").endswith(ASYNC_SUFFIX)


def handle_api(
    runtime: Runtime, action: Action, event: Mapping[str, Any], ctx: LambdaContext
) -> dict:
    logger.set_correlation_id(_request_id(event))
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    key = headers.get("idempotency-key")
    if dry_run.requested(event, headers):
        # A dry run keeps no answer for the key (nothing is written), and gives none kept.
        return _answer_api(runtime, action, event, headers, ctx, key=key, dry=True)[0]
    queued = is_async(event)
    if key is None or not runtime.settings.idempotency_table_name:
        if queued:
            return _queue_request(runtime, action, event, headers)[0]
        return _answer_api(runtime, action, event, headers, ctx)[0]
    return _answer_once(runtime, action, event, headers, ctx, str(key), queued)


def _answer_once(
    runtime: Runtime,
    action: Action,
    event: Mapping[str, Any],
    headers: Mapping[str, Any],
    ctx: LambdaContext,
    key: str,
    queued: bool,
) -> dict[str, Any]:
    """A repeat within 24 h gets the first answer (contract section 6, Retries by callers):
    on the async route, the first request's message id, and nothing is queued again."""
    requests = runtime.requests(action)
    assert requests is not None
    # A request in progress ends with its invocation, and no API request outlives API
    # Gateway's limit: a repeat after a crashed attempt runs again once that has passed.
    requests.config.register_lambda_context(_ApiDeadline(ctx))  # type: ignore[arg-type]
    if not key or len(key) > MAX_KEY_LENGTH:
        result = outcomes.BAD_IDEMPOTENCY_KEY(limit=MAX_KEY_LENGTH)
    else:
        request = {"body": event.get("body"), "content_type": headers.get("content-type")}
        if queued:  # the same key on the other route is another request
            request["route"] = ASYNC_SUFFIX
        try:
            return requests.answer(
                key,
                request,
                lambda: (
                    _queue_request(runtime, action, event, headers)
                    if queued
                    else _answer_api(runtime, action, event, headers, ctx, key=key)
                ),
            )
        except InProgressElsewhere:
            result = outcomes.STILL_RUNNING(retry_after=IN_PROGRESS_RETRY_SECONDS)
        except KeyReused:
            result = outcomes.IDEMPOTENCY_KEY_REUSED()
        except RecordsUnavailable:
            result = outcomes.RECORD_UNAVAILABLE(
                seconds=int(RECORD_RETRY_SECONDS), retry_after=RECORD_RETRY_SECONDS
            )
    runtime.record(action, result, 0.0)
    return api_response(result, result_fields(action, result))


class _ApiDeadline:
    """The invocation's context, its time left no longer than API Gateway waits for it."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def get_remaining_time_in_millis(self) -> int:
        limit = int(API_GATEWAY_LIMIT_SECONDS * 1000)
        remaining = getattr(self._context, "get_remaining_time_in_millis", None)
        return min(limit, int(remaining())) if callable(remaining) else limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _answer_api(
    runtime: Runtime,
    action: Action,
    event: Mapping[str, Any],
    headers: Mapping[str, Any],
    ctx: LambdaContext,
    *,
    key: str | None = None,
    dry: bool = False,
) -> tuple[dict[str, Any], bool]:
    """The API answer for one request, and whether a repeat may be given it (not retryable).

    The key is the lead's origin: a repeat of a keyed request whose earlier answer was not
    kept finds what the first attempt made as its own (a create's record), and a repeated
    Track Event is one event.
    """
    try:
        lead = parse_body(
            event.get("body"), headers.get("content-type"), bool(event.get("isBase64Encoded"))
        )
    except Result as result:
        runtime.record(action, result, 0.0)
        return api_response(result, result_fields(action, result)), True
    if dry:
        lead = dry_run.with_query_flag(lead, event)
    request_id = _request_id(event)
    origin = f"idempotency-key:{key}" if key else request_id
    first_seen = runtime.wall()
    processed = runtime.process(
        action,
        lead,
        remaining_seconds=remaining_seconds(ctx),
        via_api_gateway=True,
        origin_id=origin,
        arrival=Arrival(
            "api", idempotency_key=headers.get("idempotency-key"), request_id=request_id
        ),
    )
    if processed.result.kind is Kind.UNCONFIRMED and not processed.dry_run:
        processed = _confirm_later(runtime, action, lead, processed, first_seen, origin)
    answer = api_response(processed.result, processed.fields)
    return answer, not processed.result.retryable


# What the async route takes, as the synchronous route reads them (the type's parameters,
# such as a charset, aside); a request without a Content-Type is read as JSON.
ASYNC_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")
NOT_QUEUED = "The lead could not be queued"


def _queue_request(
    runtime: Runtime, action: Action, event: Mapping[str, Any], headers: Mapping[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The async route: the request itself on the action's queue (base64, with its
    Content-Type, so the queue reads it exactly as the synchronous route would), answered
    202 with its message id; and whether a repeat may be given that answer."""
    from klaviyo_leads.triggers.sqs import (
        HTTP_REQUEST,  # the queue's reader of it (loads only for this route)
    )

    content_type = headers.get("content-type")
    media_type = str(content_type or "").split(";")[0].strip().lower()
    raw = _raw_body(event)
    problem = None
    if media_type and media_type not in ASYNC_MEDIA_TYPES:
        problem = outcomes.UNSUPPORTED_MEDIA(
            media_type=media_type, accepted="JSON, a form or text/plain"
        )
    elif raw is None:
        problem = outcomes.BODY_NOT_BASE64()
    elif not raw:
        problem = outcomes.BODY_EMPTY()
    elif len(raw) > MAX_BODY_BYTES:
        problem = outcomes.BODY_TOO_LARGE(limit=MAX_BODY_BYTES // 1024)
    if problem is not None:
        runtime.record(action, problem, 0.0)
        return _not_queued(problem.http_status, problem.reason or ""), True
    message = {
        HTTP_REQUEST: {
            "body_base64": base64.b64encode(raw or b"").decode(),
            "content_type": content_type,
        }
    }
    try:
        if runtime.queue is None:
            raise RuntimeError("the function has no queue")
        message_id = runtime.queue.send_request(
            json.dumps(message), {"api_request_id": _request_id(event) or ""}
        )
    except Exception as exc:  # its caller retries: the answer is not kept
        logger.error("A request could not be queued", extra={"error_type": type(exc).__name__})
        return _not_queued(502, NOT_QUEUED), False
    answer = {"accepted": True, "message_id": message_id}
    return {
        "statusCode": 202,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer),
        "isBase64Encoded": False,
    }, True


def _raw_body(event: Mapping[str, Any]) -> bytes | None:
    """The request body as bytes; None when it claims base64 and is none."""
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return str(body).encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return None


def _not_queued(status: int, reason: str) -> dict[str, Any]:
    body = {"accepted": False, "outcome": "error", "reason": reason}
    body["errors"] = outcomes.errors_field([])
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _confirm_later(
    runtime: Runtime,
    action: Action,
    lead: Any,
    processed: Processed,
    first_seen: float,
    origin: str | None,
) -> Processed:
    """Klaviyo took the request but has not shown it applied within the webhook's time: the
    caller is answered now, not asked to send again. The lead goes on the action's queue,
    whose run of it (the same origin: it reads back, it does not send again) publishes the
    confirmed result and keeps it for ``GET /results/<message_id>``."""
    message_id = None
    if runtime.queue is not None:
        try:
            message_id = runtime.queue.send(lead, first_seen, origin)
        except Exception:
            count("LeadsNotQueued")  # its answer says it was not confirmed, and no more
            logger.error("A subscribe's confirmation could not be queued")
    unconfirmed = processed.result
    reason = outcomes.SUBSCRIBE_UNCONFIRMED if message_id else outcomes.SUBSCRIBE_NOT_CONFIRMED
    result = reason(
        profile=unconfirmed.profile,
        list_name=unconfirmed.list_name,
        opt_in_process=unconfirmed.opt_in_process,
        consent=unconfirmed.consent,
        message_id=message_id,
        ignored_fields=unconfirmed.ignored_fields,
    )
    return Processed(result, result_fields(action, result))


def _request_id(event: Mapping[str, Any]) -> str | None:
    return str((event.get("requestContext") or {}).get("requestId") or "") or None


def api_response(result: Result, fields: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if result.kind in (Kind.THROTTLED, Kind.CONFLICT):
        wait = result.retry_after
        # A wait that is no finite number cannot be rounded: one second, as for none.
        seconds = math.ceil(wait) if wait is not None and math.isfinite(wait) else 1
        headers["Retry-After"] = str(max(1, seconds))
    return {
        "statusCode": result.http_status,
        "headers": headers,
        "body": json.dumps(fields),
        "isBase64Encoded": False,
    }


# -- EventBridge and direct invocation -------------------------------------------------------


class LeadNotQueued(Exception):
    """A retryable lead of an EventBridge or direct invocation could not be put on the
    action's queue: the one exception a handler raises, so that Lambda retries the event."""


def handle_leads(
    runtime: Runtime,
    action: Action,
    payload: Any,
    ctx: LambdaContext,
    *,
    always_publish: bool,
    correlation_id: str,
    path: str = "direct",
) -> Any:
    several = leads_in(payload)
    if several is None:
        return _handle_one(runtime, action, payload, ctx, always_publish, correlation_id, path)
    processed: list[Processed] = []
    later: dict[int, Later] = {}  # retryable leads for the queue, by their place in the event
    # Kept back from the leads' own time, so the invocation ends before its deadline however
    # many leads it brings: publishing every result, and queueing the retryable ones.
    publishing = len(several) * PUBLISH_SECONDS_PER_LEAD if runtime.publisher else 0.0
    for index, lead in enumerate(several):
        logger.set_correlation_id(f"{correlation_id}/{index}")
        # What the lead arrived as: the same when Lambda retries the event (an EventBridge
        # event's id, a direct invocation's request id), so the retry finds its own creates.
        origin = f"{correlation_id}/{index}"
        first_seen = runtime.wall()
        left = remaining_seconds(ctx)
        if left is not None:
            queueing = (len(later) + len(several) - index) * QUEUE_SECONDS_PER_LEAD
            left -= QUEUE_MARGIN_SECONDS + publishing + queueing
        if left is not None and left < MIN_SECONDS_PER_LEAD:
            # Better a retryable result than a Lambda timeout that loses every result.
            result = outcomes.NOT_STARTED()
            runtime.record(action, result, 0.0)
            done = Processed(result, result_fields(action, result))
        else:
            done = runtime.process(
                action,
                lead,
                remaining_seconds=left,
                origin_id=origin,
                arrival=_arrival(path, origin),
            )
        if done.result.retryable and runtime.queue is not None and not done.dry_run:
            later[index] = Later(lead, first_seen, origin)
        processed.append(done)
    if later:
        queued = _queue_later(runtime, later, ctx, publishing)
        for index, message_id in queued.items():
            result = outcomes.QUEUED_FOR_RETRY(message_id=message_id)
            processed[index] = Processed(result, result_fields(action, result))
        if len(queued) < len(later):
            # Their results say retryable: the sender (or Lambda's retry) must send them again.
            count("LeadsNotQueued", len(later) - len(queued))
            logger.error(
                "Leads could not be queued",
                extra={"count": len(later) - len(queued), "queued": len(queued)},
            )
    _publish(runtime, action, several, processed, ctx)
    return {"results": [p.fields for p in processed]}


def _handle_one(
    runtime: Runtime,
    action: Action,
    lead: Any,
    ctx: LambdaContext,
    always_publish: bool,
    correlation_id: str,
    path: str = "direct",
) -> dict[str, Any]:
    logger.set_correlation_id(correlation_id)
    first_seen = runtime.wall()
    done = runtime.process(
        action,
        lead,
        remaining_seconds=remaining_seconds(ctx),
        origin_id=correlation_id or None,
        arrival=_arrival(path, correlation_id or None),
    )
    if done.result.retryable and runtime.queue is not None and not done.dry_run:
        try:
            message_id = runtime.queue.send(lead, first_seen, correlation_id or None)
        except Exception as exc:
            # The invocation fails on purpose: Lambda retries the event (the same id, so
            # the retry owns what this try created), then hands it to its dead-letter queue.
            count("LeadsNotQueued")
            raise LeadNotQueued(action.name) from exc
        result = outcomes.QUEUED_FOR_RETRY(message_id=message_id)
        done = Processed(result, result_fields(action, result))
    if always_publish:
        _publish(runtime, action, [lead], [done])
    return done.fields


# Time kept back from the invocation's deadline once the leads are queued and their results
# published: answering, and what the estimates below miss.
QUEUE_MARGIN_SECONDS = 2.0
# What settling a lead of a several-lead event costs once it is processed: its share of a
# PutEvents call (ten to a call; 600 results took 6.5 s) and, when it is retryable, of a
# SendMessageBatch call (ten to a call), with room to spare.
PUBLISH_SECONDS_PER_LEAD = 0.015
QUEUE_SECONDS_PER_LEAD = 0.01
# Publishing stops this long before the deadline: the results not published are counted
# (ResultsNotPublished, an alarm) and still answered.
PUBLISH_MARGIN_SECONDS = 0.5


def _queue_later(
    runtime: Runtime, later: dict[int, Later], ctx: LambdaContext, publishing: float
) -> dict[int, str]:
    """Put the retryable leads on the action's queue, ten to a call, while time allows (the
    results' publishing kept back): the message id of each lead queued, by its place."""
    assert runtime.queue is not None
    places = iter(later)  # the batches keep the leads' order
    queued: dict[int, str] = {}
    for batch in batches(list(later.values())):
        left = remaining_seconds(ctx)
        if left is not None and left < QUEUE_MARGIN_SECONDS + publishing:
            break
        for message_id in runtime.queue.send_batch(batch):
            place = next(places)
            if message_id is not None:
                queued[place] = message_id
    return queued


def _arrival(path: str, origin: str | None) -> Arrival:
    """An EventBridge lead came as its event (its id); a direct one as the invocation."""
    if path == "eventbridge":
        return Arrival(path, message_id=origin)
    return Arrival(path, request_id=origin)


def _publish(
    runtime: Runtime,
    action: Action,
    leads: list[Any],
    processed: list[Processed],
    ctx: LambdaContext | None = None,
) -> None:
    if not runtime.publisher:
        return

    def in_time() -> bool:
        left = remaining_seconds(ctx)
        return left is None or left > PUBLISH_MARGIN_SECONDS

    publications = [
        Publication(action.name, lead, p.fields)
        for lead, p in zip(leads, processed, strict=True)
        if not p.dry_run  # a dry run's answer is only the caller's
    ]
    if not publications:
        return
    accepted = runtime.publisher.publish(publications, in_time)
    lost = accepted.count(False)
    if lost:
        # Nobody else sees these results: say so loudly (logs, metric, alarm on it).
        count("ResultsNotPublished", lost)
        logger.error("Results could not be published", extra={"count": lost})


# -- SQS -----------------------------------------------------------------------------------


def handle_sqs(
    runtime: Runtime, action: Action, event: Mapping[str, Any], ctx: LambdaContext
) -> dict:
    from klaviyo_leads.triggers.sqs import (
        handle_batch,  # Powertools' batch utilities load only for queues
    )

    return handle_batch(runtime, action, event, ctx)
