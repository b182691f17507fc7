"""The deployed system, simulated: functions, their containers, their queues, their callers.

Each function (one per action) has its queue and a few containers; each container is a
``Runtime`` wired as ``Runtime.from_env`` wires one (``Runtime.wired``), with the in-memory
AWS, the in-process Klaviyo, its own clock (up to a few seconds off the others') and the
function's real handler (``handlers.actions.handler_for``, Powertools and all). Around them the
simulation plays what AWS does:

- API Gateway: a webhook sender's request becomes the proxy event; the caller retries a
  5xx, a 409 or a 503 after its ``Retry-After`` (a keyed caller with the same key; an unkeyed
  one sends the request anew), and sometimes loses an answer and sends again;
- the ``/async`` route: the request to the function's async route, which queues it (the
  caller retries as a webhook's does; every message it queued is a send of the lead);
- a lead file's splitter: its rows onto the action's queue, ten to a call, by the splitter's
  own ``_send_batch`` (run, row and origin on each message); a splitter that dies before its
  checkpoint is resumed by the retried notification and queues the rows since the checkpoint
  again, as ``send_rows`` does. A row's answer is what its report reads: the result kept for
  the row (whichever message carried it), or the splitter's own when SQS never took the row;
- the SQS event source mapping: pollers that receive up to ten messages, invoke a container,
  delete what the partial batch response does not hand back, and move a message received too
  often to the dead-letter queue;
- EventBridge and direct invocations: asynchronous invokes, retried twice by Lambda (the same
  event or request id) when the container dies.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import LambdaContext, api_gateway_event, eventbridge_event
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.aws.queue import lead_file_row_key
from klaviyo_leads.config import Settings
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.lead_files import splitter
from klaviyo_leads.lead_files.checks import NOT_QUEUED, unanswered
from klaviyo_leads.lead_files.storage import Services
from klaviyo_leads.runtime import AwsClients, Runtime
from klaviyo_leads.triggers.invocations import LeadNotQueued

from .answers import final
from .aws import Queue, SimulatedAws
from .scheduler import Killed, Scheduler
from .world import Lead

API_KEY = "pk_test_emulator"
TABLE = "klaviyo-lead-actions-records"
RESULTS_TABLE = "klaviyo-lead-actions-results"
BUS = "klaviyo-lead-actions-results"
FUNCTION_TIMEOUT = 360.0
MAX_RECEIVES = 5  # the stack's MaxReceiveCount
SENDER_DEADLINE = 1800.0  # how long a webhook caller keeps retrying
LAMBDA_RETRIES = 2
LAMBDA_RETRY_SECONDS = (60.0, 120.0)
POLL_SECONDS = 1.0
LONG_POLL_SECONDS = 20.0
BATCH = 10
CHECKPOINT_BATCHES = 2  # a splitter writes its manifest and state every this many batches
SPLITTER_RESUME_SECONDS = (60.0, 600.0)  # S3's retried notification, the dead-sender check


@dataclass
class Send:
    """One lead as one owner sent it (an HTTP request or key, a message, an event): what it
    was told, in order."""

    lead: Lead
    owner: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    dead_lettered: bool = False
    superseded: bool = False  # its caller sent the lead again as a new request


class Splitter:
    """A lead file's splitter at work (a task's context: AWS faults reach it, kills do not;
    its deaths are the simulation's own draws)."""


class Container:
    def __init__(self, fleet: Fleet, function: str, index: int, offset: float) -> None:
        self.fleet = fleet
        self.function = function
        self.name = f"{function}#{index}"
        self.offset = offset
        self.busy = False
        sim = fleet.sched
        settings = Settings(
            api_key_secret_id="unused",
            base_url="http://127.0.0.1",
            idempotency_table_name=TABLE,
            results_table_name=RESULTS_TABLE,
            results_event_bus_name=BUS,
            action_queue_url=fleet.queues[function].url,
            coalesce_batches=fleet.coalesce,
            search_settle_seconds=fleet.settle_seconds,
        )
        self.runtime = Runtime.wired(
            settings,
            lambda force: API_KEY,
            aws=AwsClients(
                dynamodb=fleet.aws.dynamodb_client,
                sqs=fleet.aws.sqs_client,
                events=fleet.aws.events_client,
            ),
            pool=fleet.transport,
            sleep=sim.sleep,
            clock=lambda: sim.now,
            wall=self.wall,
            rng=random.Random(f"{fleet.salt}/{self.name}"),
        )
        self.handler = entrypoint.handler_for(function, runtime_of=lambda: self.runtime)

    def wall(self) -> float:
        return self.fleet.sched.now + self.offset

    def invoke(self, event: Any, request_id: str, timeout: float = FUNCTION_TIMEOUT) -> Any:
        """One invocation, in the calling task; raises ``Killed`` when the container dies."""
        task = self.fleet.sched.current
        assert task is not None
        before, task.context = task.context, self
        context = LambdaContext(
            function_name=f"sim-{self.function}", timeout_seconds=timeout, clock=self.wall
        )
        context.aws_request_id = request_id
        try:
            return self.handler(event, context)
        except Killed:
            task.killed = False  # the container died; its caller (API Gateway, SQS) goes on
            self.fleet.replace(self)
            raise
        except LeadNotQueued:
            raise  # the one exception a handler raises on purpose: Lambda retries the event
        except Exception as exc:  # the checks count it: nothing else may leave a handler
            self.fleet.escaped.append(f"{self.name}: {type(exc).__name__}: {exc}")
            raise
        finally:
            task.context = before
            self.busy = False


class Fleet:
    def __init__(
        self,
        sched: Scheduler,
        aws: SimulatedAws,
        transport: Any,
        rng: random.Random,
        *,
        functions: tuple[str, ...],
        containers: int,
        coalesce: bool,
        settle_seconds: float,
        visibility: float,
        clock_spread: float,
        ids: Callable[[], str],
    ) -> None:
        self.sched = sched
        self.aws = aws
        self.transport = transport
        self.salt = rng.getrandbits(64)
        self.coalesce = coalesce
        self.settle_seconds = settle_seconds
        self.clock_spread = clock_spread
        self.per_function = containers
        self.ids = ids
        self.functions = functions
        self.queues: dict[str, Queue] = {
            f: aws.queue(f"{f}-queue", visibility, MAX_RECEIVES) for f in functions
        }
        self.containers: dict[str, list[Container]] = {f: [] for f in functions}
        self.count = 0
        self.escaped: list[str] = []
        self.sends: list[Send] = []
        self.by_owner: dict[str, Send] = {}
        self.pending = 0  # senders and invokers still at work
        self.files: dict[tuple[str, float], list[Lead]] = {}  # a file's rows, by action and time
        self.async_requests: dict[str, Lead] = {}  # by API request id
        self.split_deaths = 0.0  # the chance a splitter dies after a batch, before checkpointing
        self.rows_refused: set[str] = set()  # rows whose last sending SQS refused
        self.rows_in_doubt: set[str] = set()  # rows whose last sending SQS did not answer
        aws.on_send = self._queued

    @property
    def rng(self) -> random.Random:
        """The running task's draws (see ``Scheduler.random``)."""
        return self.sched.random()

    # -- containers ----------------------------------------------------------------------------

    def acquire(self, function: str) -> Container:
        """An idle container of the function, a new one while there is room, else wait."""
        while True:
            pool = self.containers[function]
            idle = [c for c in pool if not c.busy]
            if idle:
                chosen = idle[self.rng.randrange(len(idle))]
            elif len(pool) < self.per_function:
                chosen = self._new(function)
            else:
                self.sched.sleep(0.05)
                continue
            chosen.busy = True
            return chosen

    def _new(self, function: str) -> Container:
        self.count += 1
        offset = self.rng.uniform(-self.clock_spread, self.clock_spread) / 2
        container = Container(self, function, self.count, offset)
        self.containers[function].append(container)
        return container

    def replace(self, dead: Container) -> None:
        pool = self.containers[dead.function]
        if dead in pool:
            pool.remove(dead)

    # -- sends ----------------------------------------------------------------------------------

    def send_of(self, lead: Lead, owner: str) -> Send:
        send = self.by_owner.get(owner)
        if send is None:
            send = self.by_owner[owner] = Send(lead, owner)
            self.sends.append(send)
        return send

    def start(self, lead: Lead) -> None:
        route = ACTIONS[lead.action].route
        body = json.dumps(lead.fields)
        if lead.path == "lead_file":
            rows = self.files.setdefault((lead.action, lead.at), [])
            rows.append(lead)
            if len(rows) > 1:
                return  # the file's splitter, started with its first row, sends it
        self.pending += 1
        if lead.path in ("webhook_keyed", "webhook_unkeyed"):
            run: Callable[[], None] = lambda: self._webhook(lead, route, body)  # noqa: E731
        elif lead.path == "async":
            run = lambda: self._webhook(lead, route + "/async", body)  # noqa: E731
        elif lead.path == "lead_file":
            run = lambda: self._split(lead.action, rows)  # noqa: E731
        elif lead.path == "queue":
            run = lambda: self._enqueue(lead, body)  # noqa: E731
        else:
            run = lambda: self._invoke_async(lead)  # noqa: E731
        self.sched.spawn(
            f"lead {lead.number} {lead.path}", self._counted(run), at=self.sched.now + lead.at
        )

    def _counted(self, run: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                run()
            finally:
                self.pending -= 1

        return body

    def _webhook(self, lead: Lead, route: str, body: str) -> None:
        """A webhook caller; on the async route the answer is a 202 naming the message, and
        the messages it queued are the lead's sends (``_queued``)."""
        queued = route.endswith("/async")
        keyed = lead.path == "webhook_keyed" or (queued and lead.number % 2 == 0)
        key = f"key-{lead.number}-{self.ids()[:8]}"
        deadline = self.sched.now + SENDER_DEADLINE
        wait = 1.0
        previous: Send | None = None
        while self.sched.now < deadline:
            request_id = self.ids()
            headers = {"Content-Type": "application/json"}
            owner = request_id
            if keyed:
                headers["Idempotency-Key"] = key
                owner = f"idempotency-key:{key}"
            if queued:
                self.async_requests[request_id] = lead
            else:
                send = self.send_of(lead, owner)
                if not keyed and previous is not None:
                    previous.superseded = True
                previous = send
            event = api_gateway_event(
                "POST", route, headers, body, request_id=request_id, now=self.sched.now
            )
            container = self.acquire(lead.action)
            started = self.sched.now
            try:
                answer = container.invoke(event, request_id, timeout=FUNCTION_TIMEOUT)
                status = int(answer["statusCode"])
                fields = json.loads(answer["body"]) if answer.get("body") else {}
                retry_after = (answer.get("headers") or {}).get("Retry-After")
            except Killed:
                status, fields, retry_after = 502, {}, None  # API Gateway's own answer
            except Exception:
                status, fields, retry_after = 500, {}, None
            if self.sched.now - started > 29.0:
                status, fields, retry_after = 504, {}, None  # API Gateway gave up waiting
            elif self.rng.random() < 0.03:
                status, fields, retry_after = 0, {}, None  # the answer lost on the way back
            if queued:
                if status == 202 or (400 <= status < 500 and status not in (409, 429)):
                    return  # queued (its results come by the bus), or refused for what it is
            else:
                answer = {**fields, "_status": status}
                send.answers.append(answer)
                if final(answer):
                    return
            self.sched.sleep(float(retry_after) if retry_after else wait)
            wait = min(60.0, wait * 2)

    def _enqueue(self, lead: Lead, body: str) -> None:
        self.sched.point(f"lead {lead.number} onto the queue")
        queue = self.queues[lead.action]
        message_id = self.aws.send(queue, body)
        self.send_of(lead, message_id)

    def _queued(self, message: Any) -> None:
        """A message the async route queued: a send of the request's lead."""
        request = (message.attributes.get("api_request_id") or {}).get("StringValue")
        lead = self.async_requests.get(request or "")
        if lead is not None:
            self.send_of(lead, message.message_id)

    def _split(self, action: str, leads: list[Lead]) -> None:
        """A lead file's splitter (see the module's docstring)."""
        task = self.sched.current
        assert task is not None
        task.context = Splitter()
        run_id = f"run-{self.ids()[:12]}"
        # A row's number is its line in the file, after the header; the file's other rows
        # are other leads of the scenario (so a row keeps its number when one is dropped).
        rows = [(lead.number + 1, lead) for lead in leads]
        for number, lead in rows:
            self.send_of(lead, lead_file_row_key(run_id, number))
        services = Services(s3=None, sqs=self.aws.sqs_client(), sleep=self.sched.sleep)
        url = self.queues[action].url
        checkpoint = index = 0
        while index < len(rows):
            batch = rows[index : index + BATCH]
            entries = [(number, lead.fields, json.dumps(lead.fields)) for number, lead in batch]
            # Read from the module at each call: a planted defect replaces it there.
            ids, in_doubt = splitter._send_batch(services, url, run_id, entries)
            for (number, _), message_id in zip(batch, ids, strict=True):
                row = lead_file_row_key(run_id, number)
                if message_id is None and not in_doubt:
                    not_queued = unanswered(ACTIONS[action], NOT_QUEUED)
                    self.by_owner[row].answers.append({**not_queued, "_status": None})
                    self.rows_refused.add(row)
                else:
                    self.rows_refused.discard(row)
                (self.rows_in_doubt.add if message_id is None else self.rows_in_doubt.discard)(row)
            index += len(batch)
            if self.split_deaths and self.rng.random() < self.split_deaths:
                # Died before writing what it sent: resumed later, from the checkpoint.
                self.sched.sleep(self.rng.choice(SPLITTER_RESUME_SECONDS))
                index = checkpoint
                continue
            if (index // BATCH) % CHECKPOINT_BATCHES == 0:
                checkpoint = index

    def _invoke_async(self, lead: Lead) -> None:
        """EventBridge (a rule's target) or a direct asynchronous invoke: Lambda runs it,
        and runs it again (the same event, the same request id) when the container dies."""
        owner = self.ids()
        send = self.send_of(lead, owner)
        for attempt in range(LAMBDA_RETRIES + 1):
            if lead.path == "eventbridge":
                event: Any = eventbridge_event(
                    f"{lead.action} lead",
                    lead.fields,
                    source="lead.platform",
                    event_id=owner,
                    now=self.sched.now,
                )
                request_id = self.ids()
            else:
                event, request_id = dict(lead.fields), owner
            container = self.acquire(lead.action)
            try:
                answer = container.invoke(event, request_id)
            except (Killed, LeadNotQueued):  # the invocation failed: Lambda tries again
                if attempt < LAMBDA_RETRIES:
                    self.sched.sleep(LAMBDA_RETRY_SECONDS[attempt])
                continue
            except Exception:
                return
            if isinstance(answer, dict):  # a rule ignores it; it is what was published
                send.answers.append({**answer, "_status": None})
            return
        send.dead_lettered = True  # the event's dead-letter queue

    # -- the event source mapping ----------------------------------------------------------

    def poller(self, function: str, number: int) -> Callable[[], None]:
        queue = self.queues[function]

        def poll() -> None:
            while True:
                taken = self.aws.receive(queue, BATCH, self.rng.randrange)
                if not taken:
                    if self.pending == 0 and not queue.messages:
                        return
                    self.sched.sleep(_next_visible(queue, self.sched.now))
                    continue
                if len(taken) < BATCH and self.coalesce and self.rng.random() < 0.5:
                    # The batching window: wait for more before invoking.
                    self.sched.sleep(self.rng.uniform(0.5, 3.0))
                    more = self.aws.receive(queue, BATCH - len(taken), self.rng.randrange)
                    taken += more
                event = {"Records": [self.aws.record(queue, m) for m in taken]}
                container = self.acquire(function)
                try:
                    answer = container.invoke(event, self.ids())
                except Killed:
                    continue  # nothing deleted: the messages come back after the timeout
                except Exception:
                    continue
                failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
                for message in taken:
                    if message.message_id not in failed and message.receipt:
                        try:
                            self.aws.delete(queue, message.receipt)
                        except Killed:
                            raise
                        except Exception:
                            pass  # not deleted: delivered again later, answered from its record

        return poll


def _next_visible(queue: Queue, now: float) -> float:
    """A long poll: until the next message is due, at most 20 s (SQS's longest wait)."""
    upcoming = [m.visible_at for m in queue.messages.values() if m.visible_at > now]
    return min(LONG_POLL_SECONDS, max(POLL_SECONDS, min(upcoming) - now if upcoming else 20.0))
