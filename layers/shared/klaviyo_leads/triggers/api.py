"""API Gateway (REST v1, HTTP v2): one lead per request, answered in the request, or queued by
the ``/async`` route; ``Idempotency-Key`` makes a retried request answer once."""

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
from klaviyo_leads.aws.idempotency import (
    MAX_KEY_LENGTH,
    InProgressElsewhere,
    KeyReused,
    RecordsUnavailable,
)
from klaviyo_leads.budget import API_GATEWAY_LIMIT_SECONDS, remaining_seconds
from klaviyo_leads.lead.body import MAX_BODY_BYTES, parse_body
from klaviyo_leads.observability import count, logger
from klaviyo_leads.outcomes import Kind, Result
from klaviyo_leads.runtime import Processed, Runtime
from klaviyo_leads.trail.records import Arrival

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
    runtime: Runtime, action: Action, event: Mapping[str, Any], lambda_context: LambdaContext
) -> dict:
    logger.set_correlation_id(_request_id(event))
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    key = headers.get("idempotency-key")
    if dry_run.requested(event, headers):
        # A dry run keeps no answer for the key (nothing is written), and gives none kept.
        return _answer_api(runtime, action, event, headers, lambda_context, key=key, dry=True)[0]
    queued = is_async(event)
    if key is None or not runtime.settings.idempotency_table_name:
        if queued:
            return _queue_request(runtime, action, event, headers)[0]
        return _answer_api(runtime, action, event, headers, lambda_context)[0]
    return _answer_once(runtime, action, event, headers, lambda_context, str(key), queued)


def _answer_once(
    runtime: Runtime,
    action: Action,
    event: Mapping[str, Any],
    headers: Mapping[str, Any],
    lambda_context: LambdaContext,
    key: str,
    queued: bool,
) -> dict[str, Any]:
    """A repeat within 24 h gets the first answer (contract section 6, Retries by callers):
    on the async route, the first request's message id, and nothing is queued again."""
    requests = runtime.requests(action)
    assert requests is not None
    # A request in progress ends with its invocation, and no API request outlives API
    # Gateway's limit: a repeat after a crashed attempt runs again once that has passed.
    requests.config.register_lambda_context(_ApiDeadline(lambda_context))  # type: ignore[arg-type]
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
                    else _answer_api(runtime, action, event, headers, lambda_context, key=key)
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
    lambda_context: LambdaContext,
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
        remaining_seconds=remaining_seconds(lambda_context),
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
