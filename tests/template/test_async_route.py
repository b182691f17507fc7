"""What each ``POST /<route>/async`` queues, per content type: its mapping templates, rendered.

moto ignores API Gateway integrations, so the templates are read from the template as SAM
translates it and rendered by ``devtools.api_gateway`` (a Velocity engine with API Gateway's
``$input``, ``$util`` and ``$context``), the same code the local runner's ``/async`` routes use.
The message must be the wrapped request the SQS handler reads as the synchronous route reads a
request (tests/integration/test_handlers.py ``test_the_async_route_wraps_any_body_...``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devtools.api_gateway import (
    GATEWAY_ERRORS,
    GatewayResponses,
    Integration,
    SqsRequest,
    async_integrations,
)
from klaviyo_leads.lead import parse_body
from tests.template.cfn_template import ACTIONS

FORM = "application/x-www-form-urlencoded"
WRAPPED_TYPES = {"application/json", FORM, "text/plain"}
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

# (Content-Type header or None, body, the lead the synchronous route reads from it)
ACCEPTED = [
    ("application/json", b'{"email": "a@example.com"}', {"email": "a@example.com"}),
    (None, b'{"email": "a@example.com"}', {"email": "a@example.com"}),
    (FORM, b"email=a%40example.com&klaviyo.channels=email", None),
    (FORM, b'{"email": "curl@example.com"}', {"email": "curl@example.com"}),  # curl -d '{...}'
    (f"{FORM}; charset=UTF-8", b"email=b%40example.com", {"email": "b@example.com"}),
    ("text/plain", b'{"first_name": "Zo\xc3\xab"}', {"first_name": "Zoë"}),
]
REFUSED = ["multipart/form-data; boundary=x", "application/xml", "text/xml", "application/soap+xml"]
NO_ERRORS = {"id": [], "code": [], "title": [], "detail": []}


def is_result(body: Any) -> bool:
    """A result of an answer that is no lead's: contract section 5's three fields."""
    return (
        isinstance(body, dict)
        and body.get("outcome") == "error"
        and isinstance(body.get("reason"), str)
        and bool(body["reason"])
        and body.get("errors") == NO_ERRORS
    )


@pytest.fixture(scope="module")
def routes(translated: dict[str, Any]) -> dict[str, Integration]:
    return async_integrations(translated)


def queued(route: Integration, body: bytes, content_type: str | None) -> SqsRequest | None:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return route.sqs_request(body, headers, request_id=REQUEST_ID)


def test_every_async_route_has_one_template_for_json_forms_and_text(
    routes: dict[str, Integration],
) -> None:
    assert set(routes) == {a.async_route for a in ACTIONS}
    first = routes[ACTIONS[0].async_route].templates["application/json"]
    for path, route in routes.items():
        assert set(route.templates) == WRAPPED_TYPES, path
        assert set(route.templates.values()) == {first}, path
        assert route.integration["passthroughBehavior"] == "never", path
        # API Gateway takes a request without a Content-Type for application/json.
        assert route.request_template(None) == first


@pytest.mark.parametrize(("content_type", "body", "lead"), ACCEPTED)
def test_accepted_bodies_are_queued_wrapped_and_read_as_the_sync_route_reads_them(
    routes: dict[str, Integration], content_type: str | None, body: bytes, lead: Any
) -> None:
    for action in ACTIONS:
        request = queued(routes[action.async_route], body, content_type)
        assert request is not None, (action.name, content_type)
        assert request.action == "SendMessage"
        assert request.message_attributes == {"api_request_id": REQUEST_ID}
        message = json.loads(request.message_body)
        assert message == {
            "http_request": {
                "body_base64": base64.b64encode(body).decode(),
                "content_type": content_type or "",
            }
        }
    wrapped = message["http_request"]
    read = parse_body(wrapped["body_base64"], wrapped["content_type"], True)
    assert read == parse_body(body, content_type, False)
    if lead is not None:
        assert read == lead


@pytest.mark.parametrize("content_type", REFUSED)
def test_multipart_and_xml_get_a_415_result(
    routes: dict[str, Integration], content_type: str
) -> None:
    route = routes[ACTIONS[0].async_route]
    assert queued(route, b"<lead/>", content_type) is None

    answer = route.call(b"<lead/>", {"Content-Type": content_type}, _never_sent, request_id="r")
    assert (answer.status, answer.content_type) == (415, "application/json")
    assert answer.json() == {
        "outcome": "error",
        "reason": "The request body must be JSON, a form or text/plain",
        "errors": NO_ERRORS,
    }


def test_without_gateway_responses_api_gateway_answers_its_own_message() -> None:
    """What the local gateway falls back to is what API Gateway does unconfigured."""
    answer = GatewayResponses().answer("UNSUPPORTED_MEDIA_TYPE")
    assert (answer.status, answer.json()) == (415, {"message": "Unsupported Media Type"})


def test_every_gateway_response_is_a_json_result(translated: dict[str, Any]) -> None:
    """API Gateway's own answers (4XX and 5XX, whatever the type) are results, with the status
    of their type; DEFAULT_4XX and DEFAULT_5XX shape every type not named."""
    body = translated["Resources"]["Api"]["Properties"]["Body"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "UNSUPPORTED_MEDIA_TYPE"} <= set(responses)
    for name in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert "statusCode" not in responses[name], f"{name} would change every status"
    for name, response in responses.items():
        assert list(response["responseTemplates"]) == ["application/json"], name
    gateway = GatewayResponses.of(translated)
    for response_type, (status, _) in GATEWAY_ERRORS.items():
        answer = gateway.answer(response_type)
        assert answer.status == int(responses.get(response_type, {}).get("statusCode", status))
        assert is_result(answer.json()), (response_type, answer.body)
    # Throttled is retryable: 503 with Retry-After, which generic senders retry (a 429 they
    # would drop as their own fault), as the functions answer it (contract section 6).
    for response_type in ("THROTTLED", "QUOTA_EXCEEDED"):
        answer = gateway.answer(response_type)
        assert answer.status == 503 and int(answer.headers["Retry-After"]) >= 1, response_type
    # API Gateway's message is the reason where the response names none of its own, quoted
    # for JSON ($context.error.messageString).
    quoted = gateway.answer("INVALID_API_KEY", 'Forbidden "key"')
    assert quoted.json()["reason"] == 'Forbidden "key"'
    assert gateway.answer("THROTTLED").headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    "content_type",
    [
        'application/x-www-form-urlencoded; charset="utf-8"',
        "text/plain; note=it's",
        "text/plain; note=back\\slash/é",
    ],
)
def test_the_content_type_is_escaped_for_json(
    routes: dict[str, Integration], content_type: str
) -> None:
    request = queued(routes[ACTIONS[0].async_route], b"email=a%40example.com", content_type)
    assert request is not None
    assert json.loads(request.message_body)["http_request"]["content_type"] == content_type


def test_an_empty_body_is_refused_by_sqs_and_answered_400(routes: dict[str, Integration]) -> None:
    route = routes[ACTIONS[0].async_route]
    request = queued(route, b"", "application/json")
    assert request is not None and request.message_body == ""  # SQS refuses an empty body

    refused = route.response(400, {"Error": {"Code": "MissingParameter"}})
    assert refused.status == 400 and refused.json()["accepted"] is False
    assert is_result(refused.json())


def test_sqs_answers_become_202_with_the_message_id_or_502(routes: dict[str, Integration]) -> None:
    route = routes[ACTIONS[0].async_route]
    sent = {"SendMessageResponse": {"SendMessageResult": {"MessageId": "m-1"}}}
    accepted = route.response(200, sent)
    assert (accepted.status, accepted.json()) == (202, {"accepted": True, "message_id": "m-1"})
    assert route.response(500, {}).status == 502
    assert route.response(403, {}).status == 502
    assert is_result(route.response(500, {}).json())


def _never_sent(request: SqsRequest) -> tuple[int, dict[str, Any]]:
    raise AssertionError("a refused request reached SQS")
