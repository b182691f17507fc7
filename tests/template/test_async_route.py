"""``POST /<route>/async`` and API Gateway's own answers, on the template as SAM translates it.

The async route is the action's function (a Lambda proxy integration, as the synchronous
route): it queues the request and keeps an Idempotency-Key's first answer (its behaviour:
tests/integration/test_handlers.py ``TestAsyncRoute``). API Gateway's own answers are rendered
by ``devtools.api_gateway``, the code the local runner answers with.
"""

from __future__ import annotations

from typing import Any

from devtools.api_gateway import GATEWAY_ERRORS, GatewayResponses
from tests.template.cfn_template import ACTIONS, resources_of_type

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


def test_every_async_route_is_its_actions_function(translated: dict[str, Any]) -> None:
    """Not an SQS integration: only the function can give a repeated key its first answer."""
    paths = translated["Resources"]["Api"]["Properties"]["Body"]["paths"]
    for action in ACTIONS:
        integration = paths[action.async_route]["post"]["x-amazon-apigateway-integration"]
        sync = paths[action.route]["post"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", action.name
        assert integration["uri"] == sync["uri"], action.name  # the same function
    roles = resources_of_type(translated, "AWS::IAM::Role")
    assert not [r for r in roles if r.endswith("IntakeRole")]


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
