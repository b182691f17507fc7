"""The async routes' AWS integrations as API Gateway runs them, for the local stack and the tests.

moto keeps no API Gateway integrations, so nothing local would run the mapping templates that
template.yaml gives each ``POST /<route>/async``. ``Integration`` does what API Gateway does with
one request: it picks the request template by the request's media type (``application/json``
when the request has no Content-Type; 415 when no template matches and passthrough is
``never``), renders it with a Velocity engine (airspeed, the one LocalStack uses for API Gateway)
and API Gateway's ``$input``, ``$util`` and ``$context``, hands the SQS request it gives to the
caller, and maps SQS's answer through the integration responses.

The local runner's ``/async`` routes and the template tests both go through it, so the message the
local stack queues is the message the deployed template builds. What airspeed cannot show is how
API Gateway's own (Java) Velocity differs from it; the templates keep to plain ``#set``, ``#if``,
string literals and ``$util`` calls for that reason.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote_plus

import airspeed

# What API Gateway takes a request without a Content-Type to be.
DEFAULT_CONTENT_TYPE = "application/json"
UNSUPPORTED_MEDIA_TYPE = 415
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


@dataclass(frozen=True)
class SqsRequest:
    """The integration request a template gave: parameters of SQS's query protocol."""

    parameters: dict[str, str]

    @classmethod
    def parse(cls, rendered: str) -> SqsRequest:
        return cls(dict(parse_qsl(rendered, keep_blank_values=True)))

    @property
    def action(self) -> str:
        return self.parameters.get("Action", "")

    @property
    def message_body(self) -> str:
        return self.parameters.get("MessageBody", "")

    @property
    def message_attributes(self) -> dict[str, str]:
        """String attributes by name (``MessageAttribute.N.Name`` / ``.Value.StringValue``)."""
        attributes = {}
        for key, name in self.parameters.items():
            found = re.fullmatch(r"MessageAttribute\.(\d+)\.Name", key)
            if found:
                value = f"MessageAttribute.{found.group(1)}.Value.StringValue"
                attributes[name] = self.parameters.get(value, "")
        return attributes


# SendMessage, as the integration would call it: (HTTP status, SQS's JSON answer).
SendToSqs = Callable[[SqsRequest], tuple[int, Mapping[str, Any]]]


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
        rendered = render(template, body="", parameters={}, context={"error": error})
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


class Integration:
    """One route's ``x-amazon-apigateway-integration`` of type ``aws`` (SQS)."""

    def __init__(
        self, integration: Mapping[str, Any], gateway: GatewayResponses | None = None
    ) -> None:
        self.integration = integration
        self.gateway = gateway or GatewayResponses()
        self.templates = {
            media_type.lower(): template
            for media_type, template in (integration.get("requestTemplates") or {}).items()
        }

    def request_template(self, content_type: str | None) -> str | None:
        """The template API Gateway applies to a request of this Content-Type, if any."""
        media_type = (content_type or "").split(";")[0].strip().lower() or DEFAULT_CONTENT_TYPE
        return self.templates.get(media_type)

    @property
    def passes_through(self) -> bool:
        """Whether a body no template matches goes to SQS as it is (else: 415)."""
        behaviour = str(self.integration.get("passthroughBehavior", "when_no_match")).lower()
        return behaviour == "when_no_match" or (
            behaviour == "when_no_templates" and not self.templates
        )

    def sqs_request(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        request_id: str,
        query: Mapping[str, str] | None = None,
    ) -> SqsRequest | None:
        """The SQS request the route sends for this HTTP request; None when it answers 415."""
        text = body.decode("utf-8", "replace")
        template = self.request_template(_header(headers, "Content-Type"))
        if template is not None:
            text = render(
                template,
                body=text,
                parameters={**(query or {}), **headers},
                context={"requestId": request_id},
            )
        elif not self.passes_through:
            return None
        return SqsRequest.parse(text)

    def call(
        self,
        body: bytes,
        headers: Mapping[str, str],
        send: SendToSqs,
        *,
        request_id: str,
        query: Mapping[str, str] | None = None,
    ) -> Answer:
        request = self.sqs_request(body, headers, request_id=request_id, query=query)
        if request is None:
            return self.gateway.answer("UNSUPPORTED_MEDIA_TYPE")
        status, answer = send(request)
        return self.response(status, answer)

    def response(self, status: int, answer: Mapping[str, Any]) -> Answer:
        """The integration response whose selection pattern matches SQS's status."""
        responses = self.integration.get("responses") or {}
        chosen = next(
            (
                response
                for pattern, response in responses.items()
                if pattern != "default" and re.fullmatch(pattern, str(status))
            ),
            responses.get("default") or {},
        )
        templates = chosen.get("responseTemplates") or {}
        content_type, template = next(iter(templates.items()), ("application/json", ""))
        rendered = render(template, body=json.dumps(answer), parameters={}, context={})
        return Answer(int(chosen.get("statusCode", status)), rendered.encode(), content_type)


def async_integrations(translated: Mapping[str, Any]) -> dict[str, Integration]:
    """Every route of the stack's REST API that has an ``aws`` integration, by path."""
    body = translated["Resources"]["Api"]["Properties"]["Body"]
    gateway = GatewayResponses.of(translated)
    found = {}
    for path, item in body["paths"].items():
        integration = (item.get("post") or {}).get("x-amazon-apigateway-integration") or {}
        if integration.get("type") == "aws":
            found[path] = Integration(integration, gateway)
    return found


def render(
    template: str, *, body: str, parameters: Mapping[str, str], context: Mapping[str, Any]
) -> str:
    """A mapping template rendered as API Gateway does, with ``$input``, ``$util``, ``$context``."""
    namespace = {"input": _Input(body, parameters), "util": _Util(), "context": dict(context)}
    return str(airspeed.Template(template).merge(namespace))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


class _Input:
    """``$input``: the request body, its parameters, and JSONPath into the body."""

    def __init__(self, body: str, parameters: Mapping[str, str]) -> None:
        self.body = body
        self._parameters = dict(parameters)

    def params(self, name: str | None = None) -> Any:
        if name is None:
            return dict(self._parameters)
        return _header(self._parameters, name) or ""

    def path(self, expression: str) -> Any:
        value: Any = json.loads(self.body) if self.body else None
        for part in [p for p in expression.removeprefix("$").split(".") if p]:
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else value

    def json(self, expression: str) -> str:
        return json.dumps(self.path(expression))


class _Util:
    """``$util``, with the Java behaviour API Gateway's functions have (and their VTL names)."""

    def escapeJavaScript(self, text: Any) -> str:
        """Apache Commons' escapeJavaScript: quotes (single too), \\, / and non-ASCII escaped."""
        escaped = []
        units = str(text).encode("utf-16-be", "surrogatepass")
        for index in range(0, len(units), 2):
            code = int.from_bytes(units[index : index + 2], "big")
            char = chr(code)
            if char in "'\"\\/":
                escaped.append("\\" + char)
            elif char in _SHORT_ESCAPES:
                escaped.append(_SHORT_ESCAPES[char])
            elif code < 0x20 or code > 0x7E:
                escaped.append(f"\\u{code:04X}")
            else:
                escaped.append(char)
        return "".join(escaped)

    def urlEncode(self, text: Any) -> str:
        """java.net.URLEncoder in UTF-8: space as +, only letters, digits and .-*_ kept."""
        return quote_plus(str(text), safe="*").replace("~", "%7E")

    def urlDecode(self, text: Any) -> str:
        return unquote_plus(str(text))

    def base64Encode(self, text: Any) -> str:
        return base64.b64encode(str(text).encode("utf-8")).decode("ascii")

    def base64Decode(self, text: Any) -> str:
        return base64.b64decode(str(text)).decode("utf-8", "replace")

    def parseJson(self, text: Any) -> Any:
        return json.loads(str(text))


_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
