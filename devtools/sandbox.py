"""The sandbox the local tools run the functions in, without Docker or an AWS account.

Klaviyo is the local emulator (``devtools.klaviyo_emulator``, seeded with the demo data); AWS is
moto's server with template.yaml deployed in it (``devtools.aws.deploy_local_stack``): the
stack's queues, dead-letter queues, event bus and idempotency table, and the key's secret.
HTTP requests and queue messages become the Lambda events AWS would build
(``devtools.lambda_events``) and the functions' handlers run in this process, with the
environment the deployed functions have. ``POST /<route>/async`` runs the route's mapping
template from template.yaml (``devtools.api_gateway``) and sends the SQS message it gives.
``make demo``, ``make serve``, ``make invoke``, ``make import`` and the tests use it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
ROUTES = {ACTIONS[name].route: name for name in ACTIONS}
ASYNC_SUFFIX = "/async"  # POST <route>/async queues the lead, as the deployed API does


def seed_demo_data(emulator: Any) -> dict[str, Any]:
    """The emulator's ``--seed-demo`` data, plus the demo profile (in the VIP segment)."""
    from devtools.klaviyo_emulator.__main__ import seed_demo

    seeded = dict(seed_demo(emulator))
    profile = dict(samples.DEMO_PROFILE)
    demo_id = emulator.create_profile(**profile)
    emulator.add_to_segment(samples.DEMO_SEGMENT_ID, demo_id)
    seeded["demo_profile"] = demo_id
    return seeded


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
