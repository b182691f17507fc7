"""The schedule sweep: every create path under every fault, delay and search lag we can name.

A reported outcome must be true under the timings Klaviyo and SQS really produce, not only
under one lucky ordering. This runs Create Profile through its real handler (the function's
``app.py``, Powertools and all) against the emulator and the stack in moto, on a virtual clock
that every part reads (the emulator's lags and jobs, the client's sleeps and pacer, budgets,
the Lambda context, the create records and Powertools' idempotency records), and explores:

    path x lead kind x fault point x redelivery or repeat delay x search lag x mode

- paths: webhook with and without an ``Idempotency-Key``, the queue one lead at a time, the
  queue coalesced (a batch of ten: one import job), EventBridge, direct invocation;
- lead kinds: known by email, by phone, by external id only;
- fault points, on the lead's first write to Klaviyo: none; the answer lost after the write; a
  5xx after the write; a 429 on what confirms it (the job's poll, or the confirming search
  after a lost answer); an unreadable success; the bundle's own table failing from the write
  to the end of the attempt; the function killed right after sending;
- modes: ``redelivery`` (the same lead again, ``delay`` seconds after the first: a duplicate
  SQS delivery, a keyed repeat, a retried event; an unkeyed sender can only send it anew) and
  ``repeat`` (a second, distinct send of the same person ``delay`` seconds later: a vendor's
  double send).

Invariants, for every schedule:

1. at most one profile per person;
2. every own create is reported created, with its id (a lead that can be told apart from a
   new send: every path but the unkeyed webhook, whose resend is a new request);
3. every real repeat is reported as the duplicate it is, with the id;
4. every answer that names a profile names the person's profile; at most one send per person
   is told "created";
5. no exception leaves a handler (the injected kill aside), and every send gets a final answer;
6. the container serves the next lead.

The guarantees assume Klaviyo's search shows a write within the stack's
``KlaviyoSearchSettleSeconds`` (10 s unless told); schedules with a longer lag are explored
too and their violations counted apart.

``python -m devtools.sweep`` runs all of it and prints the counts; the tests run it in slices.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import heapq
import itertools
import json
import sys
import time
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import (
    LambdaContext,
    api_gateway_event,
    ensure_layer_on_path,
    eventbridge_event,
    load_handler,
    queue_arn,
    sqs_event,
    sqs_message,
)

ensure_layer_on_path()

from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator  # noqa: E402
from devtools.klaviyo_emulator.faults import Fault  # noqa: E402
from klaviyo_leads import entrypoint  # noqa: E402
from klaviyo_leads.claims import CreateLedger  # noqa: E402
from klaviyo_leads.config import Settings  # noqa: E402
from klaviyo_leads.creates import SEARCH_SETTLE_SECONDS  # noqa: E402
from klaviyo_leads.klaviyo import KlaviyoClient, Pacer  # noqa: E402
from klaviyo_leads.queueing import ActionQueue  # noqa: E402
from klaviyo_leads.results import ResultStore  # noqa: E402
from klaviyo_leads.runtime import Runtime  # noqa: E402

ACTION = "create_profile"
PATHS = (
    "webhook_keyed",
    "webhook_unkeyed",
    "queue_one",
    "queue_batch",
    "eventbridge",
    "direct",
    "webhook_then_batch",  # a repeat across paths: by webhook, then in a queued batch
)
KINDS = ("email", "phone", "external_id")
FAULTS = (
    "none",
    "answer_lost",
    "error_after_write",
    "throttled_confirm",
    "unreadable",
    "persistence",
    "killed",
)
DELAYS = (0.0, 0.5, 1.0, 2.0, 3.5, 5.0, 8.0, 12.0, 30.0)
LAGS = (0.0, 2.0, 8.0, 20.0)
# What the test suite plays of them (every path, kind, fault and mode; a third of the delay
# and lag pairs, the full grid taking some 25 minutes): ``make sweep`` plays them all.
SUITE_DELAYS = (0.0, 1.0, 3.5, 12.0)
SUITE_LAGS = (0.0, 8.0, 20.0)
MODES = ("redelivery", "repeat")
BATCH = 10  # a coalesced batch: the lead and nine others (the bulk path's smallest)
# How long a sender retries an answer it may retry (409, 5xx), each after its Retry-After.
SENDER_DEADLINE_SECONDS = 900.0
# SQS: deliveries of a message before it dead-letters (the stack's MaxReceiveCount, 5),
# plus the duplicate delivery the sweep adds.
MAX_DELIVERIES = 6
# A killed invocation's records come back when the queue's visibility timeout ends; an
# EventBridge or direct event when Lambda retries it (a minute later).
VISIBILITY_SECONDS = 400.0
LAMBDA_RETRY_SECONDS = 60.0
IMPORT_DELAY_SECONDS = 2.0  # the emulator's import jobs: queued this long, then at once
WRITES = ("create_profile", "bulk_import_profiles")


_PEOPLE = itertools.count(1)


class Killed(BaseException):
    """The function's process ends: nothing after this runs, nothing is cleaned up."""


# -- the virtual clock ----------------------------------------------------------------------


class VirtualClock:
    """Moves only when something sleeps or the sweep advances it: every schedule replays."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.t += seconds

    def until(self, moment: float) -> None:
        self.t = max(self.t, moment)


def _powertools_on(clock: VirtualClock) -> Callable[[], None]:
    """Point Powertools' idempotency records (expiry, in progress) at the virtual clock."""
    from aws_lambda_powertools.utilities.idempotency.persistence import base, datarecord, dynamodb

    class VirtualDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return dt.datetime.fromtimestamp(clock.now(), tz)

    shim = types.SimpleNamespace(
        datetime=VirtualDatetime, timedelta=dt.timedelta, timezone=dt.timezone
    )
    modules = (base, datarecord, dynamodb)
    before = [m.dt for m in modules]
    for module in modules:
        module.dt = shim  # type: ignore[attr-defined]

    def restore() -> None:
        for module, original in zip(modules, before, strict=True):
            module.dt = original  # type: ignore[attr-defined]

    return restore


class DynamoDBOutage:
    """Fails every DynamoDB call while ``down`` (the bundle's own table, out of reach)."""

    def __init__(self) -> None:
        self.down = False
        self.failed = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from botocore.client import BaseClient
        from botocore.exceptions import ClientError

        original = BaseClient._make_api_call
        outage = self

        def call(client: Any, operation: str, params: Any) -> Any:
            if outage.down and client.meta.service_model.service_name == "dynamodb":
                outage.failed += 1
                raise ClientError(
                    {"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation
                )
            return original(client, operation, params)

        BaseClient._make_api_call = call
        try:
            yield
        finally:
            BaseClient._make_api_call = original


# -- schedules and what they found ----------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    path: str
    kind: str
    fault: str
    delay: float
    lag: float
    mode: str

    def __str__(self) -> str:
        return (
            f"{self.path}/{self.kind}/{self.fault}/{self.mode}"
            f" delay={self.delay:g}s lag={self.lag:g}s"
        )


def schedules(
    paths: tuple[str, ...] = PATHS,
    kinds: tuple[str, ...] = KINDS,
    faults: tuple[str, ...] = FAULTS,
    delays: tuple[float, ...] = DELAYS,
    lags: tuple[float, ...] = LAGS,
    modes: tuple[str, ...] = MODES,
) -> list[Schedule]:
    return [
        Schedule(*values)
        for values in itertools.product(paths, kinds, faults, delays, lags, modes)
        if values[0] != "webhook_then_batch" or values[-1] == "repeat"
    ]


@dataclass
class Send:
    """One send of a person's lead, as its sender sees it: what it was told, last."""

    name: str
    person: str
    path: str
    own: bool  # whether its retries can be told from new sends (all but the unkeyed webhook)
    key: str = field(default_factory=lambda: f"key-{uuid.uuid4()}")
    origin: str = field(default_factory=lambda: str(uuid.uuid4()))  # message, event, request id
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any] | None:
        return self.answers[-1] if self.answers else None


@dataclass
class Found:
    schedule: Schedule
    violations: list[str] = field(default_factory=list)
    calls: int = 0


# -- the world: emulator, stack, runtime -----------------------------------------------------


class World:
    """The emulator and the stack, shared by every schedule; a fresh container per schedule."""

    def __init__(self, stack: Any, settle_seconds: float = SEARCH_SETTLE_SECONDS) -> None:
        self.stack = stack
        self.settle_seconds = settle_seconds  # the stack's KlaviyoSearchSettleSeconds
        self.clock = VirtualClock(time.time())
        self.emulator = KlaviyoEmulator(
            clock=self.clock.now,
            sleep=self.clock.sleep,
            import_delay=IMPORT_DELAY_SECONDS,
            seed=7,
        ).start()
        self.outage = DynamoDBOutage()
        self.published: list[tuple[str | None, dict[str, Any]]] = []
        self.serial = _PEOPLE  # one count for every world of the process: people never repeat
        self.prefix = uuid.uuid4().hex[:6]
        self.handler = load_handler(ACTION)
        self.queue_url = stack.actions[ACTION].queue.url
        self._runtimes: dict[bool, Runtime] = {}
        self.visibility: dict[str, float] = {}  # message id -> seconds, as the handler set it

    def close(self) -> None:
        self.emulator.stop()

    def runtime(self, coalesce: bool, observer: Callable[[str, int | None], None]) -> Runtime:
        """The container for a schedule: one per mode, kept (as Lambda keeps a warm one),
        its client now telling ``observer`` about every call."""
        if coalesce not in self._runtimes:
            self._runtimes[coalesce] = self._new_runtime(coalesce)
        built = self._runtimes[coalesce]
        built.client._observer = observer
        return built

    def _new_runtime(self, coalesce: bool) -> Runtime:
        settings = Settings(
            base_url=self.emulator.base_url,
            api_key_secret_id="unused",
            idempotency_table_name=self.stack.table_name,
            action_queue_url=self.queue_url,
            results_table_name=self.stack.results_table_name,
            coalesce_batches=coalesce,
            search_settle_seconds=self.settle_seconds,
        )
        client = KlaviyoClient(
            settings.base_url,
            settings.api_revision,
            lambda force: DEFAULT_API_KEY,
            sleep=self.clock.sleep,
            pacer=Pacer(clock=self.clock.now),
        )
        world = self

        class Recorder:
            def publish(self, publications: list[Any], in_time: Any = None) -> list[bool]:
                for publication in publications:
                    world.published.append((publication.message_id, publication.result))
                return [True] * len(publications)

        class Queue(ActionQueue):
            """The action's queue in moto; the visibility a handed-back record is given is
            noted, and the sweep delivers it again then, as SQS would."""

            def delay(self, due: list[Any]) -> list[str]:
                for item in due:
                    world.visibility[item.message_id] = float(item.seconds)
                return []

        return Runtime(
            settings=settings,
            client=client,
            publisher=Recorder(),
            queue=Queue(self.queue_url),
            results=ResultStore(self.stack.results_table_name, clock=self.clock.now),
            ledger=CreateLedger(self.stack.table_name, clock=self.clock.now),
            clock=self.clock.now,
            wall=self.clock.now,
        )


FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def _fake_aws_environment() -> Iterator[None]:
    import os

    before = {name: os.environ.get(name) for name in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def world_in_moto() -> Iterator[World]:
    """A world of its own: moto in this process, the stack deployed into it."""
    from moto import mock_aws

    from devtools.aws import deploy_local_stack

    with _fake_aws_environment(), mock_aws():
        stack = deploy_local_stack(DEFAULT_API_KEY, name="klaviyo-lead-actions-sweep")
        with opened(stack) as world:
            yield world


@contextlib.contextmanager
def opened(stack: Any, settle_seconds: float = SEARCH_SETTLE_SECONDS) -> Iterator[World]:
    """A world on a stack already deployed (the tests' session stack)."""
    world = World(stack, settle_seconds)
    restore = _powertools_on(world.clock)
    try:
        with _fake_aws_environment(), world.outage.installed(), _quiet():
            yield world
    finally:
        restore()
        world.close()
        entrypoint.reset_runtime()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The handlers' logs and metrics (CloudWatch's stdout) would drown the report."""
    import io
    import logging

    from klaviyo_leads import runtime as runtime_module

    sink = io.StringIO()
    handlers = [h for h in runtime_module.logger.handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(sink) for h in handlers]
    with contextlib.redirect_stdout(sink):
        try:
            yield
        finally:
            for handler, stream in zip(handlers, previous, strict=True):
                if stream is not None:
                    handler.setStream(stream)


# -- one schedule ---------------------------------------------------------------------------


class Run:
    """One schedule, played on the world's virtual clock."""

    def __init__(self, world: World, schedule: Schedule) -> None:
        self.world, self.schedule = world, schedule
        self.found = Found(schedule)
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.sends: list[Send] = []
        self.armed = False  # the fault, until the first write it hits
        self.people: dict[str, dict[str, str]] = {}  # person -> lead
        self.by_message: dict[str, Send] = {}
        self.deliveries: Counter[str] = Counter()
        self.current: dict[str, Send] = {}  # person -> the send being run for them now
        self.makers: dict[str, Send] = {}  # person -> the send whose write made the profile
        world.emulator.reset()
        world.emulator.configure(search_lag=schedule.lag)
        world.published.clear()
        world.runtime(False, self._observe)  # the one-by-one container's calls are seen too
        self.runtime = world.runtime(schedule.path != "queue_one", self._observe)
        entrypoint.reset_runtime(self.runtime)
        self.t0 = world.clock.now()

    # -- faults --------------------------------------------------------------------------

    def _arm(self) -> None:
        fault = self.schedule.fault
        self.armed = fault != "none"
        bulk = self.schedule.path == "queue_batch"
        write = "bulk_import_profiles" if bulk else "create_profile"
        faults = self.world.emulator.faults
        if fault == "answer_lost":
            faults.add(Fault(operation_id=write, after=True, drop=True))
        elif fault == "error_after_write":
            faults.add(Fault(operation_id=write, after=True, status=503))
        elif fault == "unreadable":
            status = 202 if bulk else 201
            faults.add(Fault(operation_id=write, after=True, status=status, body=b"<html>"))
        elif fault == "throttled_confirm":
            if bulk:
                confirm = "get_bulk_import_profiles_job"
            else:
                faults.add(Fault(operation_id=write, after=True, drop=True))
                confirm = "get_profiles"
            faults.add(Fault(operation_id=confirm, status=429, retry_after=1, times=8))

    def _observe(self, bucket: str, status: int | None) -> None:
        self.found.calls += 1
        if bucket not in WRITES:
            return
        self._note_makers(bucket)
        if not self.armed:
            return
        self.armed = False
        if self.schedule.fault == "killed" and status in (201, 202):
            raise Killed(bucket)
        if self.schedule.fault == "persistence":
            self.world.outage.down = True

    def _note_makers(self, bucket: str) -> None:
        """Who made each person's profile: the send whose write Klaviyo processed first."""
        request = next(
            (r for r in reversed(self.world.emulator.requests) if r.operation_id == bucket), None
        )
        if request is None:
            return
        processed = request.status in (201, 202) or (
            request.fault is not None and request.fault.after
        )
        if not processed:
            return
        try:
            data = request.json()["data"]
        except (ValueError, KeyError, TypeError):
            return
        if bucket == "create_profile":
            written = [data.get("attributes") or {}]
        else:
            items = (data.get("attributes") or {}).get("profiles", {}).get("data", [])
            written = [item.get("attributes") or {} for item in items]
        for attributes in written:
            person = self._person_of(attributes)
            if person is not None and person not in self.makers and person in self.current:
                self.makers[person] = self.current[person]

    def _person_of(self, attributes: dict[str, Any]) -> str | None:
        for person, lead in self.people.items():
            if _holds({"attributes": attributes}, lead):
                return person
        return None

    # -- the timeline ---------------------------------------------------------------------

    def at(self, moment: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (moment, next(self.order), action))

    def play(self) -> Found:
        schedule = self.schedule
        subject = self.person(schedule.kind)
        first = self.send(subject, "first")
        self._arm()
        self.at(self.t0, lambda: self.attempt(first, fresh=True))
        if schedule.mode == "redelivery":
            self.at(self.t0 + schedule.delay, lambda: self.attempt(first, fresh=False))
        else:
            second = self.send(subject, "repeat")
            self.at(self.t0 + schedule.delay, lambda: self.attempt(second, fresh=True))
        steps = 0
        while self.events and steps < 200:
            moment, _, action = heapq.heappop(self.events)
            self.world.clock.until(moment)
            self.world.outage.down = False
            try:
                action()
            except Exception as exc:
                self.violation(f"an exception left the handler: {type(exc).__name__}: {exc}")
            steps += 1
        self.world.outage.down = False
        self.world.emulator.faults.clear()
        self.check()
        self.next_lead()
        return self.found

    def violation(self, text: str) -> None:
        self.found.violations.append(text)

    # -- people and sends -------------------------------------------------------------------

    def person(self, kind: str) -> str:
        n = next(self.world.serial)
        tag = f"{self.world.prefix}{n:07d}"  # unique in the stack's tables, world by world
        if kind == "email":
            lead = {"email": f"p{tag}@sweep.example.com", "first_name": "Sweep"}
        elif kind == "phone":
            lead = {"phone_1": f"+1212{200 + n // 10000 % 800:03d}{n % 10000:04d}"}
        else:
            lead = {"reference": f"sweep-{tag}"}
        person = f"{kind}:{tag}"
        self.people[person] = lead
        return person

    def send(self, person: str, name: str, path: str | None = None) -> Send:
        path = path or self.schedule.path
        if path == "webhook_then_batch":
            path = "webhook_unkeyed" if name == "first" else "queue_batch"
        made = Send(name, person, path, own=path != "webhook_unkeyed")
        self.sends.append(made)
        return made

    # -- one attempt of a send, by path ----------------------------------------------------

    def attempt(self, send: Send, fresh: bool, tries: int = 0) -> None:
        self.current = {send.person: send}
        path = send.path
        if path.startswith("webhook"):
            self._webhook(send, fresh, tries)
        elif path.startswith("queue"):
            self._queued(send, tries)
        else:
            self._event(send, tries)

    def _webhook(self, send: Send, fresh: bool, tries: int) -> None:
        keyed = send.path == "webhook_keyed"
        headers = {"Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = send.key
        event = api_gateway_event(
            "POST",
            "/create-profile",
            headers,
            json.dumps(self.people[send.person]),
            now=self.world.clock.now(),
        )
        try:
            answer = self.world.handler(event, self._context())
        except Killed:
            answer = {"statusCode": 502, "headers": {}, "body": "{}"}  # the gateway's answer
        status = int(answer["statusCode"])
        body = json.loads(answer["body"]) if answer.get("body") else {}
        send.answers.append({**body, "_status": status})
        retry = status == 409 or status >= 500
        if retry and self.world.clock.now() < self.t0 + SENDER_DEADLINE_SECONDS:
            wait = float((answer.get("headers") or {}).get("Retry-After") or 1)
            self.at(self.world.clock.now() + wait, lambda: self.attempt(send, False, tries + 1))

    def _queued(self, send: Send, tries: int) -> None:
        message_id = send.origin
        self.by_message[message_id] = send
        self.deliveries[message_id] += 1
        count = self.deliveries[message_id]
        if count > MAX_DELIVERIES:
            send.answers.append({"outcome": "dead-lettered", "_status": None})
            return
        body = json.dumps(self.people[send.person])
        message = sqs_message(
            body, message_id=message_id, receive_count=count, sent_timestamp=self.t0
        )
        records = [message]
        if send.path == "queue_batch":
            for _ in range(BATCH - 1):
                filler = self.send(self.person(self.schedule.kind), "filler", send.path)
                records.append(
                    sqs_message(
                        json.dumps(self.people[filler.person]),
                        message_id=filler.origin,
                        sent_timestamp=self.world.clock.now(),
                    )
                )
                self.by_message[filler.origin] = filler
                self.deliveries[filler.origin] += 1
        self._deliver(records)

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        self.current = {
            self.by_message[r["MessageId"]].person: self.by_message[r["MessageId"]] for r in records
        }
        before = len(self.world.published)
        event = sqs_event(records, queue_arn(f"{ACTION}-queue"))
        self.world.visibility.clear()
        try:
            response = self.world.handler(event, self._context())
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Killed:
            failed = {r["MessageId"] for r in records}
            self.world.visibility.clear()  # nothing was set: the queue's timeout holds
        for message_id, fields in self.world.published[before:]:
            if message_id in self.by_message:
                self.by_message[message_id].answers.append({**fields, "_status": None})
        for record in records:
            message_id = record["MessageId"]
            if message_id in failed:
                send = self.by_message[message_id]
                if self.deliveries[message_id] >= MAX_DELIVERIES:
                    send.answers.append({"outcome": "dead-lettered", "_status": None})
                    continue
                wait = self.world.visibility.get(message_id, VISIBILITY_SECONDS)
                self.at(
                    self.world.clock.now() + wait,
                    functools.partial(self._redeliver, record),
                )

    def _redeliver(self, record: dict[str, Any]) -> None:
        message_id = record["MessageId"]
        self.deliveries[message_id] += 1
        again = sqs_message(
            record["Body"],
            message_id=message_id,
            receive_count=self.deliveries[message_id],
            sent_timestamp=int(record["Attributes"]["SentTimestamp"]) / 1000,
            message_attributes={
                name: value["StringValue"]
                for name, value in (record.get("MessageAttributes") or {}).items()
            },
        )
        self._deliver([again])

    def _event(self, send: Send, tries: int) -> None:
        self.current = {send.person: send}
        lead = self.people[send.person]
        origin = send.origin
        before = len(self.world.published)
        if send.path == "eventbridge":
            event: Any = eventbridge_event(
                "Lead", lead, source="lead.platform", event_id=origin, now=self.world.clock.now()
            )
            context = self._context()
        else:
            event, context = dict(lead), self._context(request_id=origin)
        try:
            fields = self.world.handler(event, context)
        except Killed:
            if tries < 3:  # Lambda retries the event twice
                self.at(
                    self.world.clock.now() + LAMBDA_RETRY_SECONDS,
                    lambda: self._event(send, tries + 1),
                )
            return
        if send.path == "direct":
            send.answers.append({**fields, "_status": None})
        else:
            for _, published in self.world.published[before:]:
                send.answers.append({**published, "_status": None})
        if fields.get("reason") == "Queued for retry" and fields.get("message_id"):
            self._take_queued(send, str(fields["message_id"]))

    def _take_queued(self, send: Send, message_id: str) -> None:
        """The lead the event put on the action's queue, delivered as SQS would."""
        import boto3

        sqs = boto3.client("sqs", region_name=self.world.stack.region)
        received = sqs.receive_message(
            QueueUrl=self.world.queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        for message in received:
            sqs.delete_message(
                QueueUrl=self.world.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            if message["MessageId"] != message_id:
                continue
            self.by_message[message_id] = send
            self.deliveries[message_id] += 1
            attributes = {
                name: value["StringValue"]
                for name, value in (message.get("MessageAttributes") or {}).items()
            }
            record = sqs_message(
                message["Body"],
                message_id=message_id,
                sent_timestamp=self.world.clock.now(),
                message_attributes=attributes,
            )
            self.at(self.world.clock.now() + 5.0, functools.partial(self._deliver, [record]))

    def _context(self, request_id: str | None = None) -> LambdaContext:
        context = LambdaContext(
            function_name=f"sweep-{ACTION}", timeout_seconds=360, clock=self.world.clock.now
        )
        if request_id:
            context.aws_request_id = request_id
        return context

    # -- the invariants ---------------------------------------------------------------------

    def check(self) -> None:
        profiles = self.world.emulator.profiles()
        for person, lead in self.people.items():
            made = [p["id"] for p in profiles if _holds(p, lead)]
            sends = [s for s in self.sends if s.person == person]
            if len(made) > 1:
                self.violation(f"{person}: {len(made)} profiles")
            created = [s for s in sends if (s.final or {}).get("outcome") == "success"]
            if len(created) > 1:
                self.violation(f"{person}: {len(created)} sends told 'created'")
            for send in sends:
                self._check_send(send, made, person)

    def _check_send(self, send: Send, made: list[str], person: str) -> None:
        final = send.final
        if final is None:
            self.violation(f"{person} {send.name}: no final answer")
            return
        if final.get("_status") == 409 or (final.get("_status") or 0) >= 500:
            self.violation(f"{person} {send.name}: last answer {final.get('_status')}")
            return
        if final.get("outcome") == "dead-lettered":
            self.violation(f"{person} {send.name}: dead-lettered")
            return
        for answer in send.answers:
            named = answer.get("id")
            if named and made and named not in made:
                self.violation(f"{person} {send.name}: named {named}, not the person's profile")
        outcome, reason = final.get("outcome"), final.get("reason") or ""
        is_duplicate = outcome == "failure" and "already exists" in reason
        maker = self.makers.get(person)
        if send is maker:
            # Its write made the profile: created, unless its sender could only send anew
            # (an unkeyed webhook: the resend is told the truth, that it exists).
            if outcome != "success" and (send.own or not is_duplicate):
                self.violation(f"{person} {send.name}: own create reported {outcome}: {reason}")
        elif outcome == "success":
            self.violation(f"{person} {send.name}: reported created, made by another send")
        elif not is_duplicate:
            self.violation(f"{person} {send.name}: {outcome}: {reason}")
        if is_duplicate and made and final.get("id") != made[0]:
            self.violation(f"{person} {send.name}: duplicate without the profile's id")

    def next_lead(self) -> None:
        """The container serves the next lead (nothing wedged: pacer, records, client)."""
        later = self.send(self.person("email"), "next", self.sends[0].path)
        self.armed = False
        self.attempt(later, fresh=True)
        steps = 0
        while self.events and steps < 50:
            moment, _, action = heapq.heappop(self.events)
            self.world.clock.until(moment)
            action()
            steps += 1
        if (later.final or {}).get("outcome") != "success":
            self.violation(f"the next lead ended {later.final}")


def _holds(profile: dict[str, Any], lead: dict[str, str]) -> bool:
    attributes = profile.get("attributes") or {}
    if "email" in lead:
        return str(attributes.get("email") or "").lower() == lead["email"].lower()
    if "phone_1" in lead:
        return attributes.get("phone_number") == lead["phone_1"]
    return attributes.get("external_id") == lead["reference"] and not attributes.get("email")


# -- many schedules ---------------------------------------------------------------------------


@dataclass
class Report:
    settle_seconds: float = SEARCH_SETTLE_SECONDS
    explored: int = 0
    within_bound: int = 0
    violations: list[Found] = field(default_factory=list)
    beyond_bound: list[Found] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, found: Found) -> None:
        self.explored += 1
        if found.schedule.lag <= self.settle_seconds:  # the search settles as assumed
            self.within_bound += 1
            if found.violations:
                self.violations.append(found)
        elif found.violations:
            self.beyond_bound.append(found)

    def as_json(self) -> dict[str, Any]:
        def listed(found: list[Found]) -> list[dict[str, Any]]:
            return [{"schedule": str(f.schedule), "violations": f.violations} for f in found]

        return {
            "settle_seconds": self.settle_seconds,
            "explored": self.explored,
            "within_bound": self.within_bound,
            "seconds": round(self.seconds, 1),
            "violations": listed(self.violations),
            "beyond_bound": listed(self.beyond_bound),
        }

    def merge(self, part: dict[str, Any]) -> None:
        """Add a report another process wrote (``as_json``)."""
        self.explored += int(part["explored"])
        self.within_bound += int(part["within_bound"])
        self.violations += [_Listed(**f) for f in part["violations"]]  # type: ignore[misc]
        self.beyond_bound += [_Listed(**f) for f in part["beyond_bound"]]  # type: ignore[misc]

    def lines(self, limit: int = 20) -> list[str]:
        out = [
            f"schedules explored: {self.explored} ({self.within_bound} with the search lag within"
            f" {self.settle_seconds:g} s) in {self.seconds:.0f} s",
            f"violations: {len(self.violations)}",
            f"beyond the assumed lag bound: {len(self.beyond_bound)} schedules with a violation",
        ]
        for found in (self.violations + self.beyond_bound)[:limit]:
            out.append(f"  {found.schedule}: {'; '.join(found.violations[:3])}")
        return out


@dataclass
class _Listed:
    """A schedule with violations, as another process reported it."""

    schedule: str
    violations: list[str]


def sweep(world: World, chosen: list[Schedule]) -> Report:
    report = Report(settle_seconds=world.settle_seconds)
    started = time.monotonic()
    for schedule in chosen:
        report.add(Run(world, schedule).play())
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.sweep", description=__doc__)
    parser.add_argument("--path", action="append", choices=PATHS, help="only these paths")
    parser.add_argument("--kind", action="append", choices=KINDS, help="only these lead kinds")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these faults")
    parser.add_argument("--mode", action="append", choices=MODES, help="only these modes")
    parser.add_argument("--suite", action="store_true", help="the test suite's delays and lags")
    parser.add_argument("--jobs", type=int, default=2, help="processes, one path at a time each")
    parser.add_argument("--json", help="write the counts and the violations to this file")
    args = parser.parse_args(argv)
    paths = tuple(args.path or PATHS)
    if args.jobs > 1 and len(paths) > 1:
        report = _in_processes(args, paths)
    else:
        chosen = schedules(
            paths,
            tuple(args.kind or KINDS),
            tuple(args.fault or FAULTS),
            SUITE_DELAYS if args.suite else DELAYS,
            SUITE_LAGS if args.suite else LAGS,
            tuple(args.mode or MODES),
        )
        with world_in_moto() as world:
            report = sweep(world, chosen)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report.as_json(), out, indent=1)
    print("\n".join(report.lines()), file=sys.stderr)
    return 1 if report.violations else 0


def _in_processes(args: argparse.Namespace, paths: tuple[str, ...]) -> Report:
    """One process per path, ``--jobs`` at a time, each with its own moto and emulator."""
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, "-m", "devtools.sweep", "--path", path, "--jobs", "1"]
            for flag, values in (("--kind", args.kind), ("--fault", args.fault)):
                for value in values or ():
                    command += [flag, value]
            for value in args.mode or ():
                command += ["--mode", value]
            if args.suite:
                command.append("--suite")
            subprocess.run([*command, "--json", out.name], check=False, capture_output=True)
            with open(out.name, encoding="utf-8") as written:
                return dict(json.load(written))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        parts = list(pool.map(one, paths))
    report = Report()
    for part in parts:
        report.merge(part)
    report.seconds = time.monotonic() - started
    return report


if __name__ == "__main__":
    raise SystemExit(main())
