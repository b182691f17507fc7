"""Lambda events and contexts, built the way AWS builds them, for running handlers in process.

- ``api_gateway_event``: what API Gateway's REST API (Lambda proxy integration, payload v1)
  hands the function for an HTTP request.
- ``http_api_event``: the same request as an HTTP API (payload v2) event.
- ``sqs_message`` / ``sqs_event``: messages as SQS ``ReceiveMessage`` returns them, and the
  event Lambda's event source mapping builds from them.
- ``eventbridge_event``: an event as an EventBridge rule delivers it.
- ``LambdaContext``: the context object, with a clock that runs down from the timeout.
- ``load_handler``: a function's ``lambda_handler``, imported from ``functions/<action>/app.py``.

The local runner, the sample-event generator, tests and benchmarks all build events here, so
there is one idea of what an event looks like.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = ROOT / "layers" / "shared"
FUNCTIONS_DIR = ROOT / "functions"

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_ID = "a1b2c3d4e5"
STAGE = "v1"  # the REST API's stage in template.yaml
HTTP_API_STAGE = "$default"
FUNCTION_TIMEOUT_SECONDS = 360  # template.yaml's TimeoutSeconds default
FUNCTION_MEMORY_MB = 256  # template.yaml's MemorySize default
STACK_NAME = "klaviyo-lead-actions"

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Query = str | Mapping[str, str | list[str]] | None

# Media types whose bodies API Gateway passes as text; any other body arrives base64-encoded
# (as for an API whose binaryMediaTypes match it).
_TEXT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/javascript",
)


def ensure_layer_on_path() -> None:
    """Make ``klaviyo_leads`` importable, as the layer is on the Lambda runtime's path."""
    layer = str(LAYER_DIR)
    if layer not in sys.path:
        sys.path.insert(0, layer)


# -- API Gateway ---------------------------------------------------------------------------


def is_text_media_type(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";")[0].strip().lower()
    return (
        not media_type
        or media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def _header_pairs(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    items = getattr(headers, "items", None)  # email.message.Message (http.server's headers)
    pairs = items() if callable(items) else headers
    return [(str(k), str(v)) for k, v in pairs]


def _group_headers(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Header values by name, names compared without case, spelled as first sent."""
    grouped: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for name, value in pairs:
        key = spelling.setdefault(name.lower(), name)
        grouped.setdefault(key, []).append(value)
    return grouped


def _find(grouped: Mapping[str, list[str]], name: str) -> str | None:
    for key, values in grouped.items():
        if key.lower() == name.lower():
            return values[-1]
    return None


def _query_pairs(query: Query) -> list[tuple[str, str]]:
    if query is None:
        return []
    if isinstance(query, str):
        return parse_qsl(query.removeprefix("?"), keep_blank_values=True)
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((str(name), str(item)))
    return pairs


def _body_text(body: str | bytes | None, content_type: str | None) -> tuple[str | None, bool]:
    """The event's ``body`` and ``isBase64Encoded``."""
    if body is None:
        return None, False
    if isinstance(body, str):
        if is_text_media_type(content_type):
            return body, False
        body = body.encode("utf-8")
    if is_text_media_type(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _trace_id(epoch: float, request_id: str) -> str:
    digest = hashlib.sha256(request_id.encode()).hexdigest()
    return f"Root=1-{int(epoch):08x}-{digest[:24]}"


def _request_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def api_gateway_event(
    method: str,
    path: str,
    headers: Headers | None = None,
    body: str | bytes | None = None,
    query: Query = None,
    *,
    resource: str | None = None,
    stage: str = STAGE,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    now: float | None = None,
    api_key_id: str | None = None,
) -> dict[str, Any]:
    """The REST API proxy event (payload v1) API Gateway builds for one HTTP request.

    ``path`` is the resource path without the stage (``/create-profile``) and may carry a
    query string; ``query`` adds parameters (a raw string or a mapping). Single-value fields
    hold the last value of a repeated header or parameter, the ``multiValue`` ones all of them;
    both are ``null`` when there are none, as API Gateway sends them. Bodies of non-text media
    types are base64-encoded.
    """
    epoch = time.time() if now is None else now
    request_id = request_id or str(uuid.uuid4())
    split = urlsplit(path)
    path = split.path or "/"
    query_pairs = _query_pairs(split.query) + _query_pairs(query)

    grouped = _group_headers(_header_pairs(headers))
    user_agent = _find(grouped, "User-Agent")
    forwarded = _find(grouped, "X-Forwarded-For")
    added = {
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "X-Amzn-Trace-Id": _trace_id(epoch, request_id),
        "X-Forwarded-For": f"{forwarded}, {source_ip}" if forwarded else source_ip,
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    for name, value in added.items():
        existing = next((k for k in grouped if k.lower() == name.lower()), None)
        if existing is None:
            grouped[name] = [value]
        elif name == "X-Forwarded-For":
            grouped[existing] = [value]
    body_text, is_base64 = _body_text(body, _find(grouped, "Content-Type"))

    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        multi_query.setdefault(name, []).append(value)

    identity: dict[str, Any] = {
        "cognitoIdentityPoolId": None,
        "accountId": None,
        "cognitoIdentityId": None,
        "caller": None,
        "sourceIp": source_ip,
        "principalOrgId": None,
        "accessKey": None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": None,
        "userAgent": user_agent,
        "user": None,
    }
    if api_key_id:
        identity["apiKeyId"] = api_key_id
    resource = resource or path
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": {name: values[-1] for name, values in grouped.items()} or None,
        "multiValueHeaders": grouped or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": hashlib.sha256(resource.encode()).hexdigest()[:6],
            "resourcePath": resource,
            "httpMethod": method.upper(),
            "extendedRequestId": base64.b32encode(request_id.encode()[:10]).decode()[:16],
            "requestTime": _request_time(epoch),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(epoch * 1000),
            "requestId": request_id,
            "identity": identity,
            "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
            "deploymentId": "d3pl0y",
            "apiId": API_ID,
        },
        "body": body_text,
        "isBase64Encoded": is_base64,
    }


def http_api_event(
    method: str,
    path: str,
    headers: Headers | None = None,
    body: str | bytes | None = None,
    query: Query = None,
    *,
    route_key: str | None = None,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The HTTP API event (payload v2) for one request.

    Header names are lower-cased and repeated values joined with commas; cookies move to
    ``cookies``; absent parts (query, body, cookies) are left out, as API Gateway does.
    """
    epoch = time.time() if now is None else now
    request_id = request_id or str(uuid.uuid4())
    split = urlsplit(path)
    path = split.path or "/"
    if query is None or isinstance(query, str):
        extra = (query or "").removeprefix("?")
    else:
        extra = urlencode(_query_pairs(query))
    raw_query = "&".join(q for q in (split.query, extra) if q)
    query_pairs = _query_pairs(split.query) + _query_pairs(query)

    lowered: dict[str, list[str]] = {}
    cookies: list[str] = []
    for name, value in _header_pairs(headers):
        if name.lower() == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            lowered.setdefault(name.lower(), []).append(value)
    lowered.setdefault("host", [f"{API_ID}.execute-api.{REGION}.amazonaws.com"])
    lowered.setdefault("x-amzn-trace-id", [_trace_id(epoch, request_id)])
    forwarded = lowered.get("x-forwarded-for")
    lowered["x-forwarded-for"] = [f"{forwarded[-1]}, {source_ip}" if forwarded else source_ip]
    lowered.setdefault("x-forwarded-port", ["443"])
    lowered.setdefault("x-forwarded-proto", ["https"])
    joined = {name: ",".join(values) for name, values in lowered.items()}
    body_text, is_base64 = _body_text(body, joined.get("content-type"))

    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        multi_query.setdefault(name, []).append(value)

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or f"{method.upper()} {path}",
        "rawPath": path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if multi_query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in multi_query.items()}
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "domainPrefix": API_ID,
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key or f"{method.upper()} {path}",
        "stage": HTTP_API_STAGE,
        "time": _request_time(epoch),
        "timeEpoch": int(epoch * 1000),
    }
    if body_text is not None:
        event["body"] = body_text
    event["isBase64Encoded"] = is_base64
    return event


# -- SQS -----------------------------------------------------------------------------------

# The system attributes Lambda's event source mapping copies into a record.
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "AWSTraceHeader",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "DeadLetterQueueSourceArn",
)


def queue_arn(queue_name: str, region: str = REGION, account_id: str = ACCOUNT_ID) -> str:
    return f"arn:aws:sqs:{region}:{account_id}:{queue_name}"


def sqs_message(
    body: str,
    *,
    message_id: str | None = None,
    receive_count: int = 1,
    sent_timestamp: float | None = None,
    sender_id: str = "AIDAIENQZJOLO23YVJ4VO",
    message_attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A message as ``ReceiveMessage`` returns it (all attributes asked for), without a queue."""
    sent = time.time() if sent_timestamp is None else sent_timestamp
    message_id = message_id or str(uuid.uuid4())
    message: dict[str, Any] = {
        "MessageId": message_id,
        "ReceiptHandle": base64.b64encode(
            hashlib.sha256(f"{message_id}/{receive_count}".encode()).digest() * 3
        ).decode("ascii"),
        "MD5OfBody": hashlib.md5(body.encode("utf-8")).hexdigest(),
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(int(sent * 1000)),
            "SenderId": sender_id,
            "ApproximateFirstReceiveTimestamp": str(int(sent * 1000) + 7),
        },
    }
    if message_attributes:
        message["MD5OfMessageAttributes"] = md5_of_message_attributes(message_attributes)
        message["MessageAttributes"] = {
            name: {"StringValue": value, "DataType": "String"}
            for name, value in message_attributes.items()
        }
    return message


def md5_of_message_attributes(attributes: Mapping[str, str]) -> str:
    """SQS's digest of string message attributes (names sorted, each part length-prefixed)."""

    def part(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    digest = hashlib.md5()
    for name in sorted(attributes):
        digest.update(part(name.encode()) + part(b"String") + b"\x01")
        digest.update(part(attributes[name].encode()))
    return digest.hexdigest()


def _record_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    binary = value.get("BinaryValue")
    attribute: dict[str, Any] = {}
    if value.get("StringValue") is not None:
        attribute["stringValue"] = value["StringValue"]
    if binary is not None:
        raw = binary if isinstance(binary, bytes | bytearray) else str(binary).encode()
        attribute["binaryValue"] = base64.b64encode(raw).decode("ascii")
    attribute["stringListValues"] = list(value.get("StringListValues") or [])
    attribute["binaryListValues"] = [
        base64.b64encode(b).decode("ascii") for b in value.get("BinaryListValues") or []
    ]
    attribute["dataType"] = value.get("DataType", "String")
    return attribute


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages.

    ``messages`` are ``ReceiveMessage``'s ``Messages`` (ask for ``MessageSystemAttributeNames``
    and ``MessageAttributeNames`` ``["All"]``) or ``sqs_message`` results.
    """
    region = queue_arn.split(":")[3]
    records = []
    for message in messages:
        attributes = message.get("Attributes") or {}
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {k: attributes[k] for k in _RECORD_ATTRIBUTES if k in attributes},
            "messageAttributes": {
                name: _record_attribute(value)
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record.update(eventSource="aws:sqs", eventSourceARN=queue_arn, awsRegion=region)
        records.append(record)
    return {"Records": records}


# -- EventBridge ---------------------------------------------------------------------------


def eventbridge_event(
    detail_type: str,
    detail: Any,
    *,
    source: str,
    event_id: str | None = None,
    now: float | None = None,
    rule_arn: str | None = None,
    region: str = REGION,
    account_id: str = ACCOUNT_ID,
) -> dict[str, Any]:
    """An event as a rule delivers it to its Lambda target."""
    epoch = time.time() if now is None else now
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account_id,
        "time": datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn] if rule_arn else [],
        "detail": detail,
    }


# -- Context and handlers ------------------------------------------------------------------


def function_name(action: str) -> str:
    """The deployed function's name (``<stack>-<action with dashes>``, as template.yaml has it)."""
    return f"{STACK_NAME}-{action.replace('_', '-')}"


@dataclass
class LambdaContext:
    """The context argument: names, memory, request id, and the time left to run."""

    function_name: str = f"{STACK_NAME}-local"
    timeout_seconds: float = FUNCTION_TIMEOUT_SECONDS
    memory_limit_in_mb: int = FUNCTION_MEMORY_MB
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None
    clock: Callable[[], float] = time.monotonic
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._deadline = self.clock() + self.timeout_seconds
        if not self.invoked_function_arn:
            self.invoked_function_arn = (
                f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"
            )
        if not self.log_group_name:
            self.log_group_name = f"/aws/lambda/{self.function_name}"
        if not self.log_stream_name:
            day = datetime.now(UTC).strftime("%Y/%m/%d")
            self.log_stream_name = f"{day}/[{self.function_version}]{uuid.uuid4().hex}"

    @classmethod
    def for_action(
        cls, action: str, timeout_seconds: float = FUNCTION_TIMEOUT_SECONDS
    ) -> LambdaContext:
        return cls(function_name=function_name(action), timeout_seconds=timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self.clock()) * 1000))


Handler = Callable[[Any, Any], Any]
_handlers: dict[str, Handler] = {}
_handlers_lock = threading.Lock()


def load_handler(action: str) -> Handler:
    """``functions/<action>/app.py``'s ``lambda_handler``, imported once under its own name.

    Every function's module is called ``app``, so each is loaded from its file under a
    distinct module name (``functions.<action>.app`` would need packages that Lambda lacks).
    """
    with _handlers_lock:
        if action in _handlers:
            return _handlers[action]
        path = FUNCTIONS_DIR / action / "app.py"
        if not action.isidentifier() or not path.is_file():
            raise KeyError(f"no function for action {action!r} ({path.relative_to(ROOT)})")
        ensure_layer_on_path()
        name = f"_lambda_function_{action}_app"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        handler: Handler = module.lambda_handler
        _handlers[action] = handler
        return handler


def invoke(action: str, event: Any, context: LambdaContext | None = None) -> Any:
    """Call the action's handler with the event, as Lambda would (a fresh context per call)."""
    return load_handler(action)(event, context or LambdaContext.for_action(action))
