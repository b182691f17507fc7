"""API Gateway's and the web ACL's own answers, as the deployed API gives them, for the local
stack and the tests.

moto keeps no API Gateway and no WAF: ``GatewayResponses`` renders the answers the template's
``x-amazon-apigateway-gateway-responses`` give (with a Velocity engine, airspeed, the one
LocalStack uses for API Gateway, and API Gateway's ``$context``), and ``BodyLimit`` is the web
ACL's body rule. Every route's integration is a Lambda proxy, which the local runner plays by
invoking the function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import airspeed

# Gateway response types of this API: the status and message API Gateway gives each.
GATEWAY_ERRORS = {
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "INVALID_API_KEY": (403, "Forbidden"),
    "INVALID_SIGNATURE": (403, "Forbidden"),
    "ACCESS_DENIED": (403, "Forbidden"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "THROTTLED": (429, "Too Many Requests"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "DEFAULT_5XX": (502, "Internal server error"),  # a Lambda error behind a proxy integration
}


@dataclass(frozen=True)
class Answer:
    """What the caller of the route gets."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


# API Gateway's own template for a type no gateway response shapes.
_AWS_BODY = '{"message":$context.error.messageString}'


class GatewayResponses:
    """The API's ``x-amazon-apigateway-gateway-responses``: API Gateway's own answers.

    A type named there answers with its template (and its status, else the type's own); any
    other type with DEFAULT_4XX's or DEFAULT_5XX's, keeping its status; without either, with
    API Gateway's default body ``{"message": ...}``.
    """

    def __init__(self, responses: Mapping[str, Any] | None = None) -> None:
        self.responses = dict(responses or {})

    @classmethod
    def of(cls, translated: Mapping[str, Any]) -> GatewayResponses:
        body = translated["Resources"]["Api"]["Properties"]["Body"]
        return cls(body.get("x-amazon-apigateway-gateway-responses"))

    def answer(self, response_type: str, message: str | None = None) -> Answer:
        status, default_message = GATEWAY_ERRORS.get(response_type, (500, "Internal server error"))
        message = default_message if message is None else message
        fallback = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
        chosen = self.responses.get(response_type) or self.responses.get(fallback) or {}
        status = int(chosen.get("statusCode") or status)
        templates = chosen.get("responseTemplates") or {}
        content_type, template = next(iter(templates.items()), ("application/json", _AWS_BODY))
        error = {"message": message, "messageString": json.dumps(message)}
        error["responseType"] = response_type
        rendered = render(template, {"error": error})
        headers = {
            name.removeprefix("gatewayresponse.header."): str(value).strip("'")
            for name, value in (chosen.get("responseParameters") or {}).items()
            if name.startswith("gatewayresponse.header.")
        }
        return Answer(status, rendered.encode(), content_type, headers)


@dataclass(frozen=True)
class BodyLimit:
    """The web ACL's body rule as deployed (``ApiWebAcl``'s ``BodyTooLarge``): a body over
    ``limit`` bytes is refused with ``answer``; ``limit`` None when the rule is off
    (``MaxRequestBodyBytes=0``)."""

    limit: int | None
    answer: Answer

    @classmethod
    def of(cls, translated: Mapping[str, Any], parameters: Mapping[str, str]) -> BodyLimit:
        """The rule for these stack parameters (the template's defaults filled in)."""
        defaults = {k: str(p.get("Default")) for k, p in translated["Parameters"].items()}
        limit = int({**defaults, **parameters}["MaxRequestBodyBytes"])
        acl = translated["Resources"]["ApiWebAcl"]["Properties"]
        rule = next(
            r["Fn::If"][1]
            for r in acl["Rules"]
            if "Fn::If" in r and r["Fn::If"][1].get("Name") == "BodyTooLarge"
        )
        response = rule["Action"]["Block"]["CustomResponse"]
        body = acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]
        content = " ".join(str(body["Content"]).split())
        answer = Answer(int(response["ResponseCode"]), content.encode(), "application/json")
        return cls(limit or None, answer)

    def refuses(self, size: int) -> bool:
        return self.limit is not None and size > self.limit


def render(template: str, context: Mapping[str, Any]) -> str:
    """A gateway response's template rendered as API Gateway does, with ``$context``."""
    return str(airspeed.Template(template).merge({"context": dict(context)}))
