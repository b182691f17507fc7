"""Run the functions locally, without Docker or an AWS account.

    python -m devtools.runner demo                      # every trigger, every action, checked
    python -m devtools.runner serve [--port 8080]       # the API on 127.0.0.1, for curl
    python -m devtools.runner invoke ACTION EVENT.json   # one event file, like `sam local invoke`

Klaviyo is the local emulator (``devtools.klaviyo_emulator``, seeded with the demo data); AWS is
moto's server with template.yaml deployed in it (``devtools.aws.deploy_local_stack``): the
stack's queues, dead-letter queues, event bus and idempotency table, and the key's secret.
HTTP requests and queue messages become the Lambda events AWS would build
(``devtools.lambda_events``) and the functions' handlers run in this process, with the
environment the deployed functions have. ``POST /<route>/async`` runs the route's mapping
template from template.yaml (``devtools.api_gateway``) and sends the SQS message it gives.
``serve`` talks to the real Klaviyo instead when ``KLAVIYO_API_KEY`` is set.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools import api_gateway, aws
from devtools import events as samples
from devtools import lambda_events as le
from devtools.trail import LocalTrail

# One process runs every function here, each with its own "action" metric dimension;
# in Lambda a container runs one. Powertools warns on every switch.
warnings.filterwarnings("ignore", message="Dimension 'action' has already been added")
warnings.filterwarnings("ignore", message="No application metrics to publish")

le.ensure_layer_on_path()

from klaviyo_leads.actions.table import ACTIONS  # noqa: E402  (the layer is on the path now)

REAL_KLAVIYO_URL = "https://a.klaviyo.com"
SQS_BATCH_SIZE = 10  # messages per invocation (SQS hands out at most 10 per receive)
# Order the demo runs the actions in: later samples look up the people earlier ones create.
DEMO_ORDER = (
    "create_profile",
    "get_profiles",
    "get_segment_profiles",
    "update_profile",
    "add_profile_to_list",
    "subscribe_profile_to_list",
    "unsubscribe_profile",
    "remove_profile_from_list",
    "upsert_profile",
    "track_event",
    "delete_profile",
)
ROUTES = {ACTIONS[name].route: name for name in ACTIONS}
ASYNC_SUFFIX = "/async"  # POST <route>/async queues the lead, as the deployed API does
RESULTS_ROUTE_PREFIX = "/results/"  # GET /results/<message_id>: a queued lead's result, as deployed
# Local only (the deployed API has no such route): the last 100 result events published on the bus.
LOCAL_RESULTS_ROUTE = "/_local/results"
# Local only: POST /_local/invoke/<action> runs an event file's event in the served stack.
LOCAL_INVOKE_PREFIX = "/_local/invoke/"
# Local only: POST /_local/import/<action> sends a lead file through the served stack.
LOCAL_IMPORT_PREFIX = "/_local/import/"
# What the local-only routes take (a lead file up to LeadFileMaxBytes' default).
MAX_LOCAL_BODY_BYTES = 64 * 1024 * 1024
# Where a running `make serve` says where it listens, so that `make invoke` uses its state.
SERVE_STATE_ENV = "LOCAL_SERVE_STATE_FILE"
DEFAULT_SERVE_STATE = le.ROOT / ".tools" / "serve.json"


def serve_state_path() -> Path:
    return Path(os.environ.get(SERVE_STATE_ENV) or DEFAULT_SERVE_STATE)


def seed_demo_data(emulator: Any) -> dict[str, Any]:
    """The emulator's ``--seed-demo`` data, plus the demo profile (in the VIP segment)."""
    from devtools.klaviyo_emulator.__main__ import seed_demo

    seeded = dict(seed_demo(emulator))
    profile = dict(samples.DEMO_PROFILE)
    demo_id = emulator.create_profile(**profile)
    emulator.add_to_segment(samples.DEMO_SEGMENT_ID, demo_id)
    seeded["demo_profile"] = demo_id
    return seeded


# -- The sandbox: Klaviyo, moto, resources, environment ------------------------------------


@dataclass
class ApiAnswer:
    """An API Gateway response, as the caller sees it."""

    status: int
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Batch:
    """One invocation of a queue's function: the event, its answer, what was deleted."""

    action: str
    event: dict[str, Any]
    failed: list[str] = field(default_factory=list)  # batchItemFailures (message ids)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None  # the handler raised: nothing deleted, the batch comes back

    @property
    def message_ids(self) -> list[str]:
        return [r["messageId"] for r in self.event["Records"]]


class Sandbox:
    """Klaviyo (emulator, or the real one with ``real_api_key``), the stack in moto, and the
    functions' environment.

    ``start()`` applies the functions' environment to this process (restored by ``stop()``)
    and forgets the layer's per-container runtime, so the first invocation builds it from
    that environment, as a cold start would.
    """

    def __init__(
        self,
        *,
        real_api_key: str | None = None,
        log_level: str = "WARNING",
        seed: int | None = 7,
        openapi_path: Path | None = None,
        metrics: bool = False,
        latency: str | None = None,
        trail_dir: Path | None = LocalTrail.DEFAULT_DIR,
    ) -> None:
        self.real_api_key = real_api_key
        self.latency = latency  # the emulator's latency model ("realistic": Klaviyo-like)
        self.openapi_path = openapi_path  # the emulator checks traffic against this document
        self.log_level = log_level
        self.metrics = metrics  # print the functions' metric documents (EMF) on stdout
        self.seed = seed
        self.emulator: Any = None
        self.seeded: dict[str, Any] = {}
        self.moto: aws.MotoServer | None = None
        self.local_stack: aws.LocalStack | None = None
        self.results_queue: aws.Queue | None = None  # a rule copies published results here
        self.environment: dict[str, str] = {}
        self.published: list[dict[str, Any]] = []  # result events read from the results queue
        self._saved_env: dict[str, str | None] = {}
        self._sqs: Any = None
        self._invoke_lock = threading.Lock()  # one invocation at a time
        self._runtimes: dict[str, Any] = {}  # per function, as each has its own containers
        self._queue_lock = threading.Lock()
        self.gateway = api_gateway.GatewayResponses()  # the API's own answers, as deployed
        self._retry_settings: dict[str, tuple[int, int | None]] = {}
        self.trail_dir = trail_dir  # where the local stack's trail is mirrored (make trail)
        self.trail: LocalTrail | None = None  # CloudWatch Logs' part of the trail, locally

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.real_api_key:
            api_key, base_url = self.real_api_key, None
        else:
            from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator

            self.emulator = KlaviyoEmulator(
                {DEFAULT_API_KEY: None},
                rate_limits=False,
                seed=self.seed,
                openapi_path=self.openapi_path,
                latency=self.latency,
            ).start()
            self.seeded = seed_demo_data(self.emulator)
            api_key, base_url = DEFAULT_API_KEY, self.emulator.base_url

        # moto's werkzeug server logs every request at INFO; keep warnings only.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto = aws.MotoServer().start()
        parameters = aws.local_parameters(klaviyo_base_url=base_url, log_level=self.log_level)
        self.local_stack = aws.deploy_local_stack(
            api_key, endpoint_url=self.moto.endpoint_url, parameters=parameters
        )
        self.results_queue = aws.add_results_queue(self.local_stack)
        self.trail = LocalTrail(
            aws.client("s3", self.moto.endpoint_url),
            self.local_stack.physical_ids.get("TrailBucket"),
            self.trail_dir,
        )
        translated = aws.translated_template()
        self.gateway = api_gateway.GatewayResponses.of(translated)
        # moto has no WAF: the web ACL's body rule is applied by the local API itself.
        self.body_limit = api_gateway.BodyLimit.of(translated, parameters)
        # Metrics off unless asked for: CloudWatch reads the EMF lines in Lambda, here they
        # would only bury the output.
        self.environment = {
            **aws.lambda_environment(self.local_stack),
            "POWERTOOLS_METRICS_DISABLED": "false" if self.metrics else "true",
        }
        self._apply_environment()
        self._sqs = aws.client("sqs", self.moto.endpoint_url)

    def stop(self) -> None:
        self._restore_environment()
        if self.local_stack is not None and self.moto is not None:
            try:
                aws.remove_local_stack(self.local_stack)
            except Exception as problem:  # stopping must not hide the run's own error
                print(f"Could not remove the local stack: {problem}", file=sys.stderr)
            self.local_stack = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _apply_environment(self) -> None:
        for name in (*aws.CONFLICTING_ENV, *self.environment):
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in aws.CONFLICTING_ENV:
            os.environ.pop(name, None)
        os.environ.update(self.environment)
        self._fresh_container()

    def _restore_environment(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        self._fresh_container()

    def _fresh_container(self) -> None:
        """Forget what a container keeps between invocations (runtime, secret, clients)."""
        from aws_lambda_powertools.utilities import parameters
        from aws_lambda_powertools.utilities.parameters import base

        from klaviyo_leads.handlers import actions as entrypoint
        from klaviyo_leads.observability import logger

        entrypoint.reset_runtime()
        self._runtimes.clear()
        parameters.clear_caches()
        base.DEFAULT_PROVIDERS.clear()
        logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL") or self.log_level)
        if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            # Powertools prints the ColdStart metric (single_metric) even with metrics
            # disabled; count the cold start as done so no EMF line reaches stdout.
            from aws_lambda_powertools.metrics.provider import cold_start

            cold_start.is_cold_start = False

    @property
    def klaviyo_url(self) -> str:
        return self.emulator.base_url if self.emulator is not None else REAL_KLAVIYO_URL

    def stack(self) -> aws.LocalStack:
        if self.local_stack is None:
            raise RuntimeError("the sandbox is not started")
        return self.local_stack

    # invoking ----------------------------------------------------------------------------

    def invoke(self, action: str, event: Any, timeout_seconds: float | None = None) -> Any:
        """Run the action's handler on the event, with a fresh context."""
        context = le.LambdaContext.for_action(
            action, timeout_seconds=timeout_seconds or le.FUNCTION_TIMEOUT_SECONDS
        )
        handler = le.load_handler(action)
        with self._invoke_lock:
            from klaviyo_leads.handlers import actions as entrypoint

            entrypoint.reset_runtime(self._runtime_for(action))
            try:
                return handler(event, context)
            finally:
                if self.trail is not None:
                    self.trail.flush()

    def _runtime_for(self, action: str) -> Any:
        """The function's container state, built with its own variables (its queue's URL), so
        that it hands records back and queues retryable leads as the deployed function does."""
        from klaviyo_leads.runtime import Runtime

        runtime = self._runtimes.get(action)
        if runtime is None:
            own = {
                name: value
                for name, value in aws.lambda_environment(self.stack(), action).items()
                if name not in self.environment
            }
            saved = {name: os.environ.get(name) for name in own}
            os.environ.update(own)
            try:
                runtime = self._runtimes[action] = Runtime.from_env()
                if runtime.trail is not None and self.trail is not None:
                    runtime.trail.write = self.trail.writer(action)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        return runtime

    def call_api(
        self,
        action: str,
        body: str | bytes | None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        query: str | None = None,
        path: str | None = None,
        source_ip: str = "127.0.0.1",
    ) -> ApiAnswer:
        """An HTTP request through API Gateway's Lambda proxy integration to the function."""
        if headers is None:
            headers = {"Content-Type": "application/json"}
        event = le.api_gateway_event(
            method,
            path or ACTIONS[action].route,
            headers,
            body,
            query,
            resource=path or ACTIONS[action].route,
            source_ip=source_ip,
        )
        try:
            response = self.invoke(action, event)
        except Exception as exc:  # Lambda error: API Gateway answers 502 with its own body
            print(f"{action}: the handler raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return self.gateway_answer("DEFAULT_5XX", event)
        return _api_answer(response, event)

    def gateway_answer(self, response_type: str, event: dict[str, Any]) -> ApiAnswer:
        """API Gateway's own answer of this type, shaped by the template's gateway responses."""
        answer = self.gateway.answer(response_type)
        headers = {"Content-Type": answer.content_type, **answer.headers}
        return ApiAnswer(answer.status, headers, answer.body, event)

    def get_result(self, message_id: str) -> ApiAnswer:
        """GET /results/{message_id} through the proxy integration to the get_result function."""
        from urllib.parse import unquote

        message_id = unquote(message_id)
        event = le.api_gateway_event("GET", f"/results/{message_id}", {}, None)
        event["resource"] = "/results/{message_id}"
        event["pathParameters"] = {"message_id": message_id}
        context = le.LambdaContext.for_action("get_result")
        handler = le.load_handler("get_result")
        try:
            with self._invoke_lock:
                response = handler(event, context)
        except Exception as exc:  # Lambda error: API Gateway answers 502 with its own body
            print(f"get_result: the handler raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return self.gateway_answer("DEFAULT_5XX", event)
        return _api_answer(response, event)

    def call_async_api(
        self,
        action: str,
        body: str | bytes | None,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        query: str | None = None,
        source_ip: str = "127.0.0.1",
    ) -> ApiAnswer:
        """``POST <route>/async``: the function queues the request and answers 202."""
        route = ACTIONS[action].route + ASYNC_SUFFIX
        return self.call_api(
            action, body, headers=headers, query=query, path=route, source_ip=source_ip
        )

    # queues ------------------------------------------------------------------------------

    def send_to_queue(
        self, action: str, body: str, attributes: Mapping[str, str] | None = None
    ) -> str:
        """SendMessage to the action's queue; returns the message id."""
        kwargs: dict[str, Any] = {}
        if attributes:
            kwargs["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            }
        queue = self.stack().actions[action].queue
        return str(
            self._sqs.send_message(QueueUrl=queue.url, MessageBody=body, **kwargs)["MessageId"]
        )

    def receive(self, action: str, limit: int = SQS_BATCH_SIZE) -> list[dict[str, Any]]:
        """What the event source mapping's poller gets: visible messages, made invisible."""
        queue = self.stack().actions[action].queue
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            answer = self._sqs.receive_message(
                QueueUrl=queue.url,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            got = answer.get("Messages") or []
            if not got:
                break
            messages.extend(got)
        return messages

    def process_queue(self, action: str, *, max_batches: int = 100) -> list[Batch]:
        """Poll the action's queue as Lambda's event source mapping does, until it is empty.

        Each batch becomes one SQS event and one invocation; the messages not reported in
        ``batchItemFailures`` are deleted, the others stay invisible until their visibility
        timeout ends (and move to the dead-letter queue after ``maxReceiveCount``).
        """
        queue = self.stack().actions[action].queue
        batches: list[Batch] = []
        with self._queue_lock:
            for _ in range(max_batches):
                messages = self.receive(action)
                if not messages:
                    break
                batch = Batch(action, le.sqs_event(messages, queue.arn))
                batches.append(batch)
                try:
                    response = self.invoke(action, batch.event)
                except Exception as exc:
                    batch.error = f"{type(exc).__name__}: {exc}"
                    continue
                failures = (response or {}).get("batchItemFailures") or []
                batch.failed = [str(f.get("itemIdentifier")) for f in failures]
                done = [m for m in messages if m["MessageId"] not in batch.failed]
                for start in range(0, len(done), 10):
                    chunk = done[start : start + 10]
                    self._sqs.delete_message_batch(
                        QueueUrl=queue.url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(chunk)
                        ],
                    )
                batch.deleted = [m["MessageId"] for m in done]
        return batches

    def redeliver_now(self, batches: Iterable[Batch]) -> int:
        """End the visibility timeout of the messages handed back in these batches now.

        SQS would deliver them again once their visibility timeout (6 x the function timeout)
        has passed; this skips the wait. Returns how many messages were released.
        """
        released = 0
        for batch in batches:
            queue = self.stack().actions[batch.action].queue
            for record in batch.event["Records"]:
                if record["messageId"] in batch.failed:
                    self._sqs.change_message_visibility(
                        QueueUrl=queue.url,
                        ReceiptHandle=record["receiptHandle"],
                        VisibilityTimeout=0,
                    )
                    released += 1
        return released

    def retry_settings(self, action: str) -> tuple[int, int | None]:
        """(visibility timeout in seconds, maxReceiveCount) of the action's queue."""
        if action not in self._retry_settings:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.stack().actions[action].queue.url,
                AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
            )["Attributes"]
            redrive = json.loads(attributes.get("RedrivePolicy") or "{}")
            max_receives = redrive.get("maxReceiveCount")
            self._retry_settings[action] = (
                int(attributes["VisibilityTimeout"]),
                int(max_receives) if max_receives is not None else None,
            )
        return self._retry_settings[action]

    def queue_depth(self, action: str, dead_letter: bool = False) -> tuple[int, int]:
        """(visible, in flight) messages of the action's queue or dead-letter queue."""
        resources = self.stack().actions[action]
        queue = resources.dead_letter_queue if dead_letter else resources.queue
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=queue.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def collect_results(self) -> list[dict[str, Any]]:
        """Move the result events the rule copied to the results queue into ``published``."""
        if self.results_queue is None:
            raise RuntimeError("the sandbox is not started")
        queue = self.results_queue
        collected: list[dict[str, Any]] = []
        while True:
            answer = self._sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = answer.get("Messages") or []
            if not messages:
                break
            for message in messages:
                collected.append(json.loads(message["Body"]))
            self._sqs.delete_message_batch(
                QueueUrl=queue.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        self.published.extend(collected)
        return collected


def _api_answer(response: Any, event: dict[str, Any]) -> ApiAnswer:
    """API Gateway's reading of a proxy integration's return value."""
    if not isinstance(response, Mapping) or not isinstance(response.get("statusCode"), int):
        return ApiAnswer(
            502,
            {"Content-Type": "application/json"},
            b'{"message": "Internal server error"}',
            event,
        )
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    body = response.get("body") or ""
    raw = (
        base64.b64decode(body)
        if response.get("isBase64Encoded")
        else (body if isinstance(body, bytes) else str(body).encode("utf-8"))
    )
    return ApiAnswer(int(response["statusCode"]), headers, raw, event)


# -- Output --------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Rows as aligned text columns; None shows as '-'."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


# -- demo ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One lead's way through one trigger, what came out, and what the demo expected."""

    case: str
    action: str
    trigger: str
    expected: str  # outcome, or "handed back"
    expected_status: int | None = None
    status: int | None = None
    outcome: str | None = None
    reason: str | None = None
    profile_id: str | None = None
    list_name: str | None = None
    problems: list[str] = field(default_factory=list)
    message_id: str | None = None
    lead: Any = None

    def take(self, fields: Mapping[str, Any]) -> None:
        self.outcome = fields.get("outcome")
        self.reason = fields.get("reason")
        self.profile_id = fields.get("id")
        self.list_name = fields.get("list_name")

    @property
    def ok(self) -> bool:
        if self.problems:
            return False
        if self.expected_status is not None and self.status != self.expected_status:
            return False
        return self.outcome == self.expected

    def cells(self) -> list[Any]:
        verdict = "ok" if self.ok else "UNEXPECTED"
        if not self.ok:
            wanted = self.expected + (f" {self.expected_status}" if self.expected_status else "")
            verdict += f" (wanted {wanted}" + "".join(f"; {p}" for p in self.problems) + ")"
        return [
            self.case,
            self.action,
            self.trigger,
            self.status,
            self.outcome,
            self.reason,
            self.profile_id,
            self.list_name,
            verdict,
        ]


DEMO_COLUMNS = [
    "case",
    "action",
    "trigger",
    "http",
    "outcome",
    "reason",
    "id",
    "list_name",
    "check",
]

NEW_LEAD = {
    "email": "nia.okafor@example.com",
    "phone_1": "(512) 555-0123",
    "first_name": "Nia",
    "last_name": "Okafor",
    "company": {"name": "Tailspin Toys"},
    "klaviyo": {"custom": {"lead_source": "pricing page"}},
}
INVALID_EMAIL_FORM = "email=nia.okafor%40example&first_name=Nia&company.name=Tailspin+Toys"
THROTTLED_LEAD = {"email": "ravi.patel@example.com", "first_name": "Ravi", "timeout_seconds": 5}
RETRIED_LEAD = {
    "email": "jordan.blake@example.com",
    "phone_1": "415-555-0199",
    "timeout_seconds": 2,
}

# The outcome each sample lead (devtools.events) has when the demo runs it through its queue.
SQS_EXPECTED = {
    "create_profile": ("success", "success"),
    "get_profiles": ("success", "success"),
    "get_segment_profiles": ("success", "failure"),
    "update_profile": ("success", "success"),
    "add_profile_to_list": ("success", "success"),
    "subscribe_profile_to_list": ("success", "success"),
    "unsubscribe_profile": ("success", "success"),
    "remove_profile_from_list": ("success", "success"),
    "upsert_profile": ("success", "success"),
    "track_event": ("success", "success"),
    "delete_profile": ("success", "success"),
}


def _api_row(sandbox: Sandbox, row: Row, body: str, content_type: str) -> ApiAnswer:
    answer = sandbox.call_api(row.action, body, headers={"Content-Type": content_type})
    row.status = answer.status
    try:
        row.take(answer.json())
    except ValueError:
        row.problems.append("the body is not JSON")
    return answer


def demo_api(sandbox: Sandbox) -> list[Row]:
    """Create Profile over the synchronous API: new, duplicate, invalid email."""
    rows = []
    new = Row("new lead", "create_profile", "api", "success", 200)
    _api_row(sandbox, new, json.dumps(NEW_LEAD), "application/json")
    if not new.profile_id:
        new.problems.append("no profile id")
    rows.append(new)

    again = Row("same lead again", "create_profile", "api", "failure", 422)
    _api_row(sandbox, again, json.dumps(NEW_LEAD), "application/json")
    if new.profile_id and again.profile_id != new.profile_id:
        again.problems.append("id is not the existing profile's")
    rows.append(again)

    invalid = Row("invalid email", "create_profile", "api (form)", "failure", 422)
    _api_row(sandbox, invalid, INVALID_EMAIL_FORM, "application/x-www-form-urlencoded")
    if invalid.reason != "Invalid email address":
        invalid.problems.append("reason")
    rows.append(invalid)
    return rows


def demo_throttled(sandbox: Sandbox) -> Row:
    """Klaviyo answers 429 with a Retry-After longer than the lead's budget."""
    from devtools.klaviyo_emulator import Fault

    sandbox.emulator.faults.add(
        Fault(status=429, retry_after=30, times=1, method="POST", path=r"^/api/profiles/?$")
    )
    row = Row("throttled", "create_profile", "api", "error", 503)
    answer = _api_row(sandbox, row, json.dumps(THROTTLED_LEAD), "application/json")
    if answer.headers.get("Retry-After") != "30":
        row.problems.append(f"Retry-After {answer.headers.get('Retry-After')!r}")
    sandbox.emulator.faults.clear()
    return row


def demo_queues(sandbox: Sandbox) -> list[Row]:
    """Every action's sample leads through its queue, as the event source mapping runs them."""
    rows: list[Row] = []
    for action in DEMO_ORDER:
        leads = samples.SAMPLE_LEADS[action]
        sent = []
        for index, lead in enumerate(leads):
            row = Row(f"sample {index + 1}", action, "sqs", SQS_EXPECTED[action][index])
            row.lead = lead
            row.message_id = sandbox.send_to_queue(action, json.dumps(lead))
            sent.append(row)
        batches = sandbox.process_queue(action)
        seen = {m for b in batches for m in b.message_ids}
        for row in sent:
            if row.message_id not in seen:
                row.problems.append("never delivered")
            for batch in batches:
                if batch.error and row.message_id in batch.message_ids:
                    row.problems.append(f"the handler raised {batch.error}")
                if row.message_id in batch.failed:
                    row.outcome = "handed back"
        rows.extend(sent)
    return rows


def demo_retry(sandbox: Sandbox) -> list[Row]:
    """A Klaviyo outage: the record goes back to the queue, and succeeds when delivered again."""
    from devtools.klaviyo_emulator import Fault

    action = "create_profile"
    sandbox.emulator.faults.add(
        Fault(status=503, times=None, method="POST", path=r"^/api/profiles")
    )
    first = Row("Klaviyo down", action, "sqs", "handed back")
    first.lead = RETRIED_LEAD
    first.message_id = sandbox.send_to_queue(action, json.dumps(RETRIED_LEAD))
    batches = sandbox.process_queue(action)
    sandbox.emulator.faults.clear()
    if first.message_id in {m for b in batches for m in b.failed}:
        first.outcome = "handed back"
        first.reason = "in batchItemFailures: stays on the queue"
    if sandbox.queue_depth(action) != (0, 1):
        first.problems.append(f"queue (visible, in flight) = {sandbox.queue_depth(action)}")
    # The visibility timeout (6 x the function timeout) would pass here; skip the wait.
    sandbox.redeliver_now(batches)

    second = Row("delivered again", action, "sqs", "success")
    second.lead = RETRIED_LEAD
    second.message_id = first.message_id
    batches = sandbox.process_queue(action)
    counts = [
        r["attributes"].get("ApproximateReceiveCount")
        for b in batches
        for r in b.event["Records"]
        if r["messageId"] == second.message_id
    ]
    if counts != ["2"]:
        second.problems.append(f"receive counts {counts}")
    if sandbox.queue_depth(action) != (0, 0):
        second.problems.append("message left on the queue")
    return [first, second]


def match_published(rows: list[Row], published: list[dict[str, Any]]) -> list[str]:
    """Fill the SQS rows from the published results; return what is wrong with publishing."""
    problems = []
    by_message: dict[str, list[dict[str, Any]]] = {}
    for event in published:
        detail = event.get("detail") or {}
        by_message.setdefault(str(detail.get("message_id")), []).append(event)
    queued = [r for r in rows if r.trigger == "sqs"]
    finished = [r for r in queued if r.outcome != "handed back"]
    for row in finished:
        events = by_message.get(str(row.message_id), [])
        if len(events) != 1:
            row.problems.append(f"published {len(events)} times")
            continue
        event = events[0]
        detail = event["detail"]
        row.take(detail.get("result") or {})
        if event.get("detail-type") != f"{row.action} result" or detail.get("action") != row.action:
            row.problems.append("published under the wrong action")
        if detail.get("lead") != row.lead:
            row.problems.append("the published lead is not the one sent")
    expected = len(finished)
    if len(published) != expected:
        problems.append(f"{len(published)} results published, expected {expected}")
    return problems


def run_demo(verbose: bool = False) -> int:
    from devtools.klaviyo_emulator.contract import default_spec_path

    started = time.monotonic()
    print("Starting the Klaviyo emulator and moto ...", flush=True)
    spec = default_spec_path()
    spec = spec if spec.is_file() else None
    # Klaviyo's answers take as long as the emulator's realistic model says (its figures are
    # assumptions, see devtools/klaviyo_emulator/latency.py).
    with Sandbox(
        log_level="INFO" if verbose else "WARNING", openapi_path=spec, latency="realistic"
    ) as sandbox:
        stack = sandbox.stack()
        print(f"  Klaviyo emulator  {sandbox.klaviyo_url}  (list Y6nRLr, segment VIPseg)")
        print(
            f"  moto              {stack.endpoint_url}  (template.yaml deployed as {stack.name}: "
            f"{len(stack.physical_ids)} resources)"
        )
        print()
        rows = demo_api(sandbox)
        rows += demo_queues(sandbox)
        rows += demo_retry(sandbox)
        rows.append(demo_throttled(sandbox))
        published = sandbox.collect_results()
        problems = match_published(rows, published)

        print("Create Profile through API Gateway (REST, proxy) and every action through SQS:")
        print()
        print(table(DEMO_COLUMNS, [r.cells() for r in rows]))
        print()
        print("  (sqs rows show the result each record published on the event bus, read back")
        print("   from the results queue. A record is 'handed back' when the function reports it")
        print("   in batchItemFailures: SQS delivers it again after the visibility timeout, so it")
        print("   publishes nothing yet. The demo covers the webhook (API Gateway) and queue (SQS)")
        print("   paths, and a lead file below; EventBridge and direct invocation are covered by")
        print("   the tests, not here.)")
        print()
        file_ok = demo_lead_file(sandbox)
        dead = sum(sandbox.queue_depth(a, dead_letter=True)[0] for a in ACTIONS)
        left = sum(sum(sandbox.queue_depth(a)) for a in ACTIONS)
        checks = [
            ("a lead file: every row in the results file, with the outcome expected", file_ok),
            (
                f"{len(published)} results published on the bus (one per finished SQS record, "
                "none for the handed-back delivery)",
                not problems,
            ),
            (
                f"{left} messages left on the action queues, {dead} in dead-letter queues",
                left == 0 and dead == 0,
            ),
        ]
        if spec is not None:
            violations = sandbox.emulator.contract_violations
            checks.append(
                (f"{len(violations)} violations of Klaviyo's OpenAPI document", not violations)
            )
            problems += [f"contract: {v}" for v in violations]
        else:
            print(
                f"  --  Klaviyo's OpenAPI document not found at {default_spec_path()}: the"
                " emulator's requests and answers were not checked against it (the demo still ran)"
            )
        for text, good in checks:
            print(f"  {'ok' if good else 'FAILED'}  {text}")
        for problem in problems:
            print(f"  FAILED  {problem}")
        failed = [r for r in rows if not r.ok]
        good = not failed and all(ok for _, ok in checks)
        elapsed = time.monotonic() - started
        print()
        print(
            f"{len(rows) - len(failed)}/{len(rows)} cases as expected in {elapsed:.1f} s: "
            + ("demo passed" if good else "DEMO FAILED")
        )
        print()
        print(NEXT_STEPS)
        return 0 if good else 1


DEMO_FILE = (
    "Email,First Name,Klaviyo List Id\n"
    "grace@example.com,Grace,Y6nRLr\n"
    "not-an-email,Alan,Y6nRLr\n"
    "edsger@example.com,Edsger,Y6nRLr\n"
)
DEMO_FILE_OUTCOMES = ["success", "failure", "success"]


def demo_lead_file(sandbox: Sandbox) -> bool:
    """A three-row file through the lead-files bucket, as `make import` sends it."""
    import csv
    import tempfile

    from devtools import lead_file_import

    print("A lead file through S3 (make import FILE=... ACTION=...):")
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        path = Path(tmp) / "trade-show.csv"
        path.write_text(DEMO_FILE, encoding="utf-8")
        code, _, results = lead_file_import.import_file(
            sandbox, path, "subscribe_profile_to_list", out=lambda line: None
        )
        print(f"  {path.name}: 3 rows, queued on subscribe_profile_to_list; its results file:")
        rows = list(csv.DictReader(results.open(encoding="utf-8"))) if results else []
    sandbox.collect_results()  # the rows' results and the file's event, shown by the file
    print(
        table(
            ["row", "First Name", "outcome", "reason"],
            [[i, r["First Name"], r["outcome"], r["reason"]] for i, r in enumerate(rows, 1)],
        )
    )
    print()
    return code == 0 and [r["outcome"] for r in rows] == DEMO_FILE_OUTCOMES


NEXT_STEPS = """Next: `make serve` keeps the same stack running on http://127.0.0.1:8080, then try
  curl -s -X POST http://127.0.0.1:8080/create-profile -d 'email=ada@example.com'
  curl -s -X POST http://127.0.0.1:8080/subscribe-profile-to-list/async \\
       -d 'email=ada@example.com&klaviyo.list_id=Y6nRLr'     # 202 with a message_id
  curl -s http://127.0.0.1:8080/results/<message_id>         # its result, once the queue ran it
(README.md "Try it"; make invoke ACTION=... EVENT=... runs one event file; make import
FILE=leads.csv ACTION=... sends a file of leads, docs/lead-files.md.)"""


# -- serve ---------------------------------------------------------------------------------


class LocalApi(ThreadingHTTPServer):
    """The API on a local port, bound before the stack starts: a busy port fails at once."""

    daemon_threads = True
    sandbox: Sandbox
    poller: QueuePoller

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, ApiRequestHandler)

    def attach(self, sandbox: Sandbox, poller: QueuePoller) -> None:
        self.sandbox = sandbox
        self.poller = poller


class QueuePoller:
    """The event source mappings: drains every action's queue when woken, and every second."""

    def __init__(self, sandbox: Sandbox, report: Callable[[str], None]) -> None:
        self.sandbox = sandbox
        self.report = report
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-poller", daemon=True)

    def start(self) -> QueuePoller:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            for action in ACTIONS:
                if self._stop.is_set():
                    return
                try:
                    self.poll(action)
                except Exception as exc:  # keep polling; say what went wrong
                    self.report(f"[queue] {action}: {type(exc).__name__}: {exc}")

    def poll(self, action: str) -> None:
        for batch in self.sandbox.process_queue(action):
            records = batch.event["Records"]
            if batch.error:
                self.report(
                    f"[queue] {action}: the handler raised {batch.error}; the batch "
                    + self.comes_back(action, records[0])
                )
            for record in records:
                if record["messageId"] in batch.failed:
                    self.report(
                        f"[queue] {action} {record['messageId']}: handed back; "
                        + self.comes_back(action, record)
                    )
        for event in self.sandbox.collect_results():
            detail = event.get("detail") or {}
            result = detail.get("result") or {}
            parts = [str(result.get("outcome"))]
            parts += [f"({result['reason']})"] if result.get("reason") else []
            parts += [f"id {result['id']}"] if result.get("id") else []
            self.report(
                f"[queue] {detail.get('action')} {detail.get('message_id') or '-'}: "
                + " ".join(parts)
            )

    def comes_back(self, action: str, record: Mapping[str, Any]) -> str:
        """When a record handed back to its queue is delivered again, and the how-manieth time.

        SQS decides: the record stays invisible for the queue's visibility timeout, then comes
        back, until ``maxReceiveCount`` deliveries move it to the dead-letter queue.
        """
        timeout, max_receives = self.sandbox.retry_settings(action)
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + timeout))
        when = f"in {timeout} s (at {at}, the queue's visibility timeout)"
        receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        if max_receives is None:
            return f"retried {when}"
        if receives >= max_receives:
            return (
                f"that was delivery {receives} of {max_receives}: "
                f"it moves to the dead-letter queue {when}"
            )
        return f"retried {when}; that was delivery {receives} of {max_receives}"


# API Gateway's own limit on a request's payload.
MAX_BODY_BYTES = 10 * 1024 * 1024


class ApiRequestHandler(BaseHTTPRequestHandler):
    server: LocalApi
    protocol_version = "HTTP/1.1"
    server_version = "klaviyo-lead-actions-local"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[api] {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        sent = {k.lower() for k in headers or {}}
        for name, value in (headers or {}).items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request whose body could not be read; the rest of it is not read, so the
        connection closes."""
        self.close_connection = True
        self._json(status, {"message": message})

    def _too_large(self) -> None:
        """What the deployed stack answers a body over its limit: the web ACL's 413 (over
        ``MaxRequestBodyBytes``), else API Gateway's REQUEST_TOO_LARGE gateway response; the
        rest is not read."""
        self.close_connection = True
        sandbox = self.server.sandbox
        limit = sandbox.body_limit
        answer = (
            limit.answer if limit.limit is not None else sandbox.gateway.answer("REQUEST_TOO_LARGE")
        )
        self._send(answer.status, answer.body, {"Content-Type": answer.content_type})

    def _over_limit(self, size: int) -> bool:
        if self._local_route() is not None:  # not deployed: no gateway, no web ACL
            return size > MAX_LOCAL_BODY_BYTES
        return size > MAX_BODY_BYTES or self.server.sandbox.body_limit.refuses(size)

    def _local_route(self) -> tuple[str, str] | None:
        """(local route prefix, action) of a local-only POST route."""
        path = urlsplit(self.path).path
        for prefix in (LOCAL_INVOKE_PREFIX, LOCAL_IMPORT_PREFIX):
            if path.startswith(prefix) and path[len(prefix) :] in ACTIONS:
                return prefix, path[len(prefix) :]
        return None

    def _body(self) -> bytes | None:
        """The request body (chunked or with a Content-Length); None when it could not be read,
        and the answer saying why is sent. A request with neither has no body (RFC 9112,
        section 6.3): it is answered as an empty one. Malformed framing (400) is answered by
        API Gateway's front end before it knows the API, with its own ``{"message": ...}``: no
        gateway response type exists for it, so the stack cannot shape it, and neither does
        this."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not re.fullmatch(r"\s*\d+\s*", length, re.ASCII):
            self._refuse(400, f"Content-Length must be a number of bytes, not {length!r}")
            return None
        size = int(length)
        if self._over_limit(size):
            self._too_large()
            return None
        return self.rfile.read(size) if size else b""

    def _chunked_body(self) -> bytes | None:
        """A ``Transfer-Encoding: chunked`` body: hex size lines, chunks, a last empty chunk."""
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", size_text):
                self._refuse(400, "Bad chunked body: a chunk size is not a hexadecimal number")
                return None
            size = int(size_text, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: nothing here needs them
                return bytes(body)
            if self._over_limit(len(body) + size):
                self._too_large()
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self._refuse(400, "Bad chunked body: a chunk is shorter than its size says")
                return None
            body += chunk

    def _not_found(self) -> None:
        self._json(
            404,
            {
                "message": f"No route for {self.command} {urlsplit(self.path).path}",
                "routes": [f"POST {r}" for r in ROUTES]
                + [f"POST {r}{ASYNC_SUFFIX}" for r in ROUTES]
                + [f"GET {RESULTS_ROUTE_PREFIX}<message_id>", f"GET {LOCAL_RESULTS_ROUTE}"],
            },
        )

    def _route(self) -> tuple[str | None, bool]:
        """(action, queued) for the request path."""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path in ROUTES:
            return ROUTES[path], False
        if path.endswith(ASYNC_SUFFIX) and path.removesuffix(ASYNC_SUFFIX) in ROUTES:
            return ROUTES[path.removesuffix(ASYNC_SUFFIX)], True
        return None, False

    def do_POST(self) -> None:
        action, queued = self._route()
        body = self._body()
        if body is None:
            return
        local = self._local_route()
        if local is not None:
            prefix, name = local
            (self._invoke if prefix == LOCAL_INVOKE_PREFIX else self._import)(name, body)
            return
        if action is None:
            self._not_found()
            return
        split = urlsplit(self.path)
        if queued:
            self._queue(action, body, split.query)
            return
        answer = self.server.sandbox.call_api(
            action,
            body,
            headers=self.headers.items(),
            query=split.query or None,
            path=split.path,
            source_ip=self.client_address[0],
        )
        self._send(answer.status, answer.body, answer.headers)

    def _invoke(self, action: str, body: bytes) -> None:
        """`make invoke` against this server's stack and emulator (local only)."""
        sandbox = self.server.sandbox
        try:
            event = json.loads(body)
        except ValueError as exc:
            self._json(400, {"message": f"The event is not JSON: {exc}"})
            return
        sandbox.collect_results()
        seen = len(sandbox.published)
        try:
            response = sandbox.invoke(action, event)
        except Exception as exc:
            self._json(200, {"error": f"{type(exc).__name__}: {exc}"})
            return
        sandbox.collect_results()
        self._json(200, {"response": response, "published": sandbox.published[seen:]})

    def _import(self, action: str, body: bytes) -> None:
        """`make import` against this server's stack and emulator (local only): the file in
        the body's JSON (``name``, ``data`` in base64, ``dry_run``, ``metadata``)."""
        import tempfile

        from devtools import lead_file_import

        try:
            request = json.loads(body)
            data = base64.b64decode(request["data"])
            name = Path(str(request["name"])).name
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"message": f"The import request is not readable: {exc}"})
            return
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="lead-file-import-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                code, report, results = lead_file_import.import_file(
                    self.server.sandbox,
                    path,
                    action,
                    dry_run=bool(request.get("dry_run")),
                    metadata=request.get("metadata") or {},
                    out=lines.append,
                )
            except Exception as exc:
                self._json(200, {"error": f"{type(exc).__name__}: {exc}"})
                return
            answer = {
                "code": code,
                "lines": lines,
                "report": report,
                "results": base64.b64encode(results.read_bytes()).decode() if results else None,
            }
        self._json(200, answer)

    def _queue(self, action: str, body: bytes, query: str) -> None:
        """The async route: the function queues the request; the poller is woken for it."""
        answer = self.server.sandbox.call_async_api(
            action,
            body,
            headers=self.headers.items(),
            query=query or None,
            source_ip=self.client_address[0],
        )
        if 200 <= answer.status < 300:
            self.server.poller.wake()
        self._send(answer.status, answer.body, answer.headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == LOCAL_RESULTS_ROUTE:
            self.server.sandbox.collect_results()
            self._json(200, {"results": self.server.sandbox.published[-100:]})
            return
        if path.startswith(RESULTS_ROUTE_PREFIX) and "/" not in path[len(RESULTS_ROUTE_PREFIX) :]:
            answer = self.server.sandbox.get_result(path[len(RESULTS_ROUTE_PREFIX) :])
            self._send(answer.status, answer.body, answer.headers)
            return
        action, _ = self._route()
        if action is not None:
            self._json(405, {"message": "Use POST"}, {"Allow": "POST"})
            return
        self._not_found()

    def do_PUT(self) -> None:
        self._other()

    def do_DELETE(self) -> None:
        self._other()

    def do_PATCH(self) -> None:
        self._other()

    def _other(self) -> None:
        if self._body() is None:
            return
        action, _ = self._route()
        if action is not None:
            self._json(405, {"message": "Use POST"}, {"Allow": "POST"})
        else:
            self._not_found()


def curl_examples(base: str) -> str:
    lead = json.dumps({"email": "new.lead@example.com", "first_name": "Nia", "city": "Austin"})
    found = json.dumps(samples.SAMPLE_LEADS["get_segment_profiles"][0])
    lines = [
        "Try (curl's -d sends a form content type; JSON under it is read as JSON):",
        f"  curl -s -X POST {base}/create-profile -d '{lead}'",
        f"  curl -s -X POST {base}/create-profile \\",
        "       -d 'email=form.lead@example.com&phone_1=(512) 555-0188&company.name=Acme'",
        f"  curl -s -X POST {base}/get-segment-profiles -H 'Content-Type: application/json' \\",
        f"       -d '{found}'",
        f"  curl -s -X POST {base}/subscribe-profile-to-list{ASYNC_SUFFIX} \\",
        f"       -d 'email=queued.lead@example.com&klaviyo.list_id={samples.DEMO_LIST_ID}'",
        f"  curl -s {base}/results/<message_id>   # a queued lead's result (the 202's message_id)",
        f"  curl -s {base}{LOCAL_RESULTS_ROUTE}   # local only: the last results published",
        "",
        "Routes: " + ", ".join(f"POST {r}" for r in ROUTES),
        f"        and POST <route>{ASYNC_SUFFIX} (202, then the queue runs the lead)",
    ]
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cannot_listen(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use: stop what listens there, or choose "
            "another port (make serve PORT=8081; --port 0 takes any free one)"
        )
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def run_serve(port: int, host: str = "127.0.0.1", verbose: bool = False) -> int:
    try:
        server = LocalApi((host, port))
    except OSError as error:
        print(f"serve: {_cannot_listen(host, port, error)}", file=sys.stderr)
        return 1
    # SIGTERM stops like Ctrl-C: the server, the poller, moto and the emulator shut down.
    signal.signal(signal.SIGTERM, _interrupt)
    real_key = (os.environ.get("KLAVIYO_API_KEY") or "").strip() or None
    if real_key:
        print(
            "WARNING: KLAVIYO_API_KEY is set: requests go to the REAL Klaviyo account at "
            f"{REAL_KLAVIYO_URL}. Profiles, list members and consents you create are real.",
            file=sys.stderr,
            flush=True,
        )
    try:
        return _serve(server, real_key, verbose)
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()


def _serve(server: LocalApi, real_key: str | None, verbose: bool) -> int:
    log_level = "INFO" if verbose else "WARNING"
    with Sandbox(
        real_api_key=real_key, log_level=log_level, metrics=verbose, latency="realistic"
    ) as sandbox:
        poller = QueuePoller(sandbox, lambda text: print(text, file=sys.stderr, flush=True))
        server.attach(sandbox, poller)
        host, port = server.server_address[:2]
        base = f"http://{host}:{port}"
        klaviyo = "REAL Klaviyo" if real_key else "Klaviyo emulator"
        print(f"{klaviyo}: {sandbox.klaviyo_url}")
        print(f"moto: {sandbox.stack().endpoint_url} (dummy credentials, us-east-1)")
        if not verbose:
            print("(the functions' INFO logs and metrics: serve --verbose, make serve VERBOSE=1)")
        print()
        print(curl_examples(base))
        print()
        state = _write_serve_state(base)
        print(f"Listening on {base}  (Ctrl-C to stop)", flush=True)
        poller.start()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            poller.stop()
            _remove_serve_state(state)
    return 0


def _write_serve_state(base: str) -> Path | None:
    """Say where this server listens, for `make invoke` (None when it cannot be written)."""
    path = serve_state_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"base_url": base, "pid": os.getpid()}), "utf-8")
    except OSError:
        return None
    return path


def _remove_serve_state(path: Path | None) -> None:
    """Remove the state file if it is still this process's (another serve may have replaced it)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text("utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def running_serve() -> str | None:
    """The base URL of a running `make serve`, from its state file, if it answers."""
    import urllib.request

    try:
        base = str(json.loads(serve_state_path().read_text("utf-8"))["base_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with urllib.request.urlopen(f"{base}{LOCAL_RESULTS_ROUTE}", timeout=2):
            return base
    except OSError:
        return None


# -- invoke --------------------------------------------------------------------------------


def _print_published(published: list[dict[str, Any]]) -> None:
    if published:
        print(f"\nPublished {len(published)} result event(s):", file=sys.stderr)
        for item in published:
            print(json.dumps(item.get("detail", {}).get("result")), file=sys.stderr)


def _invoke_on_serve(base: str, action: str, event: Any) -> int:
    import urllib.request

    print(f"(against the running make serve at {base}: its emulator and stack)", file=sys.stderr)
    request = urllib.request.Request(
        f"{base}{LOCAL_INVOKE_PREFIX}{action}",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=le.FUNCTION_TIMEOUT_SECONDS + 30) as answer:
        done = json.loads(answer.read())
    if "error" in done:
        print(f"invoke: the handler raised {done['error']}", file=sys.stderr)
        return 1
    print(json.dumps(done["response"], indent=2))
    _print_published(done.get("published") or [])
    return 0


def run_invoke(action: str, event_path: Path, timeout_seconds: float | None) -> int:
    try:
        event = json.loads(event_path.read_text("utf-8"))
    except FileNotFoundError:
        print(
            f"invoke: no event file {event_path} (the samples are in events/<action>/, "
            "e.g. make invoke ACTION=create_profile EVENT=events/create_profile/sqs.json)",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as exc:
        print(f"invoke: cannot read {event_path} as JSON: {exc}", file=sys.stderr)
        return 2
    base = running_serve() if timeout_seconds is None else None
    if base is not None:
        return _invoke_on_serve(base, action, event)
    with Sandbox() as sandbox:
        response = sandbox.invoke(action, event, timeout_seconds)
        print(json.dumps(response, indent=2))
        published = sandbox.collect_results()
        if published:
            print(f"\nPublished {len(published)} result event(s):", file=sys.stderr)
            for item in published:
                print(json.dumps(item.get("detail", {}).get("result")), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.runner",
        description="Run the Lambda functions locally against the Klaviyo emulator and moto.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run every trigger and action; exit 1 if unexpected")
    demo.add_argument("--verbose", action="store_true", help="show the functions' INFO logs")
    serve = commands.add_parser("serve", help="serve the API on 127.0.0.1 for curl")
    serve.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--verbose", action="store_true", help="also show the functions' INFO logs and metrics"
    )
    invoke = commands.add_parser("invoke", help="run one event file through a function")
    invoke.add_argument("action", choices=sorted(ACTIONS))
    invoke.add_argument("event", type=Path, help="event JSON, e.g. events/create_profile/sqs.json")
    invoke.add_argument("--timeout", type=float, default=None, help="function timeout (s)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.verbose)
    if args.command == "serve":
        return run_serve(args.port, args.host, args.verbose)
    return run_invoke(args.action, args.event, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
