"""Which trigger an event is (API Gateway, SQS, EventBridge, direct), checked and handed to it.

Every trigger ends in ``Runtime.process`` for each lead; what differs is how leads arrive
and how results leave (an HTTP response, a partial batch response, published events).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Action, result_fields
from klaviyo_leads.lead.body import leads_in
from klaviyo_leads.observability import count, logger
from klaviyo_leads.runtime import Runtime
from klaviyo_leads.triggers.api import api_response, handle_api
from klaviyo_leads.triggers.invocations import handle_direct, handle_eventbridge


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
    return TRIGGERS[kind](runtime, action, event, lambda_context)


def handle_sqs(
    runtime: Runtime, action: Action, event: Mapping[str, Any], lambda_context: LambdaContext
) -> dict:
    from klaviyo_leads.triggers.sqs import (
        handle_batch,  # the queue engine loads only for queues
    )

    return handle_batch(runtime, action, event, lambda_context)


Trigger = Callable[[Runtime, Action, Any, LambdaContext], Any]

# Every trigger the functions serve, by the kind ``event_kind`` tells: the one table of them
# (docs/architecture.md, "Adding a trigger").
TRIGGERS: dict[str, Trigger] = {
    "api": handle_api,
    "sqs": handle_sqs,
    "eventbridge": handle_eventbridge,
    "direct": handle_direct,
}
