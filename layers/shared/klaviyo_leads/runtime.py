"""What lives for a container's life (settings, the Klaviyo client, caches, the AWS
services), wired once; and one lead, or one queued batch, through an action.

Nothing here runs at import time; ``Runtime.from_env()`` builds it on the first invocation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import (
    Action,
    Batch,
    Delivery,
    Results,
    ignored_fields,
    result_fields,
    run_action,
)
from klaviyo_leads.aws.bus import ResultPublisher
from klaviyo_leads.aws.idempotency import Idempotency, Requests
from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.aws.queue import ActionQueue
from klaviyo_leads.aws.result_store import ResultStore
from klaviyo_leads.aws.secrets import ApiKeyProvider
from klaviyo_leads.budget import Budget, effective_budget_seconds
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context, NameCache
from klaviyo_leads.dry_run import WouldSend, in_payload, take_flag
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.klaviyo.retry import Backoff
from klaviyo_leads.lead.body import ensure_object
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.observability import count_klaviyo_call, count_outcome, count_pacer_wait, logger
from klaviyo_leads.outcomes import Result
from klaviyo_leads.trail import records as trail
from klaviyo_leads.trail.records import Arrival, Trail


@dataclass
class Processed:
    """One lead's result: the classified outcome and the flat appended fields."""

    result: Result
    fields: dict[str, Any]
    dry_run: bool = False  # nothing was written: not to be published, queued or kept


@dataclass(frozen=True)
class AwsClients:
    """Where the runtime's AWS clients come from: boto3's defaults unless given (the fleet
    simulation and tests give in-memory ones). Each is a factory, called on first use."""

    dynamodb: Callable[[], Any] | None = None
    sqs: Callable[[], Any] | None = None
    events: Callable[[], Any] | None = None


@dataclass
class Runtime:
    settings: Settings
    client: KlaviyoClient
    names: NameCache = field(default_factory=NameCache)
    publisher: ResultPublisher | None = None
    queue: ActionQueue | None = None
    results: ResultStore | None = None
    ledger: CreateLedger | None = None
    idempotency_by_action: dict[str, Idempotency] = field(default_factory=dict)
    requests_by_action: dict[str, Requests] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    aws: AwsClients = field(default_factory=AwsClients)
    trail: Trail | None = None  # the lead trail (None: not kept)

    @classmethod
    def from_env(cls) -> Runtime:
        settings = Settings.from_env()
        return cls.wired(settings, ApiKeyProvider(settings.api_key_secret_id))

    @classmethod
    def wired(
        cls,
        settings: Settings,
        api_key: Callable[[bool], str],
        *,
        aws: AwsClients | None = None,
        pool: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Runtime:
        """A container's runtime from its settings: every part the stack configures."""
        aws = aws or AwsClients()
        client = KlaviyoClient(
            settings.base_url,
            settings.api_revision,
            api_key,
            pool=pool,
            backoff=Backoff(rng=rng),
            pacer=Pacer(
                max_share=settings.klaviyo_max_share,
                containers=settings.klaviyo_containers,
                clock=clock,
                wall_clock=wall,
                rng=rng,
            ),
            sleep=sleep,
            observer=count_klaviyo_call,
            waited=count_pacer_wait,
        )
        publisher = (
            ResultPublisher(
                settings.results_event_bus_name,
                client_factory=aws.events,
                lead_content=settings.result_event_lead,
            )
            if settings.results_event_bus_name
            else None
        )
        queue = (
            ActionQueue(settings.action_queue_url, client_factory=aws.sqs)
            if settings.action_queue_url
            else None
        )
        results = (
            ResultStore(settings.results_table_name, client_factory=aws.dynamodb, clock=wall)
            if settings.results_table_name
            else None
        )
        table = settings.idempotency_table_name
        ledger = CreateLedger(table, client_factory=aws.dynamodb, clock=wall) if table else None
        lead_trail = (
            Trail(
                settings.trail_pii,
                settings.trail_vendor_field,
                settings.default_phone_region,
                wall=wall,
            )
            if settings.trail_pii
            else None
        )
        return cls(
            settings,
            client,
            names=NameCache(clock=clock),
            publisher=publisher,
            queue=queue,
            results=results,
            ledger=ledger,
            clock=clock,
            wall=wall,
            aws=aws,
            trail=lead_trail,
        )

    def idempotency(self, action: Action) -> Idempotency | None:
        if not self.settings.idempotency_table_name:
            return None
        if action.name not in self.idempotency_by_action:
            self.idempotency_by_action[action.name] = Idempotency(
                self.settings.idempotency_table_name, action.name, boto3_client=self._dynamodb()
            )
        return self.idempotency_by_action[action.name]

    def requests(self, action: Action) -> Requests | None:
        """Idempotency-Key answers for the action's API route, on the idempotency table."""
        if not self.settings.idempotency_table_name:
            return None
        if action.name not in self.requests_by_action:
            self.requests_by_action[action.name] = Requests(
                self.settings.idempotency_table_name, action.name, boto3_client=self._dynamodb()
            )
        return self.requests_by_action[action.name]

    def _dynamodb(self) -> Any:
        return self.aws.dynamodb() if self.aws.dynamodb is not None else None

    def budget(self, seconds: float) -> Budget:
        return Budget(seconds, clock=self.clock)

    def context(self, budget: Budget, *, dry_run: bool = False) -> Context:
        """One lead's context; a dry run's keeps its writes and has no ledger to take records in."""
        if dry_run:
            return Context(
                self.client,
                budget,
                self.settings,
                self.names,
                wall=self.wall,
                would_send=WouldSend(),
            )
        return Context(
            self.client, budget, self.settings, self.names, ledger=self.ledger, wall=self.wall
        )

    def process(
        self,
        action: Action,
        payload: Any,
        *,
        remaining_seconds: float | None,
        via_api_gateway: bool = False,
        origin_id: str | None = None,
        delivery: int = 1,
        arrival: Arrival | None = None,
        dry_run: bool = False,
    ) -> Processed:
        """Run one lead through an action; never raises. ``dry_run`` (or the lead's own
        ``dry_run`` flag): nothing is written, the answer lists what would have been sent.
        With ``arrival`` the attempt goes into the lead trail."""
        started = self.clock()
        dry_run = dry_run or in_payload(payload)
        visit = (
            self.trail.start(
                action.name,
                arrival,
                payload,
                lead_key=origin_id,
                delivery=delivery,
                dry_run=dry_run,
            )
            if self.trail is not None and arrival is not None
            else None
        )
        would_send: WouldSend | None = None
        with trail.collecting(visit.calls if visit is not None else None):
            try:
                payload, _ = take_flag(payload)
                lead = Lead.from_object(ensure_object(payload))
                seconds = effective_budget_seconds(
                    lead.timeout_seconds(), remaining_seconds, via_api_gateway
                )
                ctx = self.context(self.budget(seconds), dry_run=dry_run)
                ctx.origin_id, ctx.delivery = origin_id, delivery
                would_send = ctx.would_send
                result = run_action(action, ctx, lead)
            except Result as stopped:
                result = stopped
            except Exception as exc:
                result = internal_error(exc)
        elapsed = self.clock() - started
        self.record(action, result, elapsed)
        fields = result_fields(action, result)
        if dry_run:
            fields["dry_run"] = True
            fields["would_send"] = would_send.requests if would_send is not None else []
        if visit is not None:
            visit.end(result, elapsed, would_send=fields.get("would_send"))
        return Processed(result, fields, dry_run=dry_run)

    def process_batch(
        self,
        action: Action,
        payloads: list[Any],
        remaining_seconds: float | None,
        correlation_ids: list[str] | None = None,
        deliveries: list[Delivery] | None = None,
    ) -> list[Processed]:
        """A queued batch through an action's batch path (``Action.run_batch``): one result per
        payload, in order, using as few Klaviyo calls as the batch allows; never raises."""
        started = self.clock()
        results: Results = [None] * len(payloads)
        leads: dict[int, Lead] = {}
        timeouts = []
        for index, payload in enumerate(payloads):
            try:
                lead = Lead.from_object(ensure_object(payload))
                timeouts.append(lead.timeout_seconds())
                leads[index] = lead
            except Result as problem:
                results[index] = problem

        if leads:
            seconds = effective_budget_seconds(min(timeouts), remaining_seconds)
            ctx = self.context(self.budget(seconds))
            deliveries = deliveries or [Delivery()] * len(payloads)
            origins: list[str | None] = (
                [*correlation_ids] if correlation_ids else [None] * len(payloads)
            )
            assert action.run_batch is not None, f"{action.name} has no batch path"
            action.run_batch(Batch(ctx, leads, results, deliveries, origins, action))

        elapsed = (self.clock() - started) / max(1, len(payloads))
        out = []
        for index, result in enumerate(results):
            final = result or outcomes.INTERNAL()
            if correlation_ids:
                logger.set_correlation_id(correlation_ids[index])
            self.record(action, final, elapsed)
            done = processed(action, final)
            if index in leads:  # a batch may share one result among leads: each names its own keys
                done.fields["ignored_fields"] = ignored_fields(action, leads[index])
            out.append(done)
        return out

    def record(self, action: Action, result: Result, seconds: float) -> None:
        count_outcome(result.outcome)
        logger.info(
            "Lead processed",
            extra={
                "action": action.name,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "retryable": result.retryable,
                "profile_id": (result.profile or {}).get("id"),
                "duration_ms": round(seconds * 1000, 1),
            },
        )


def processed(action: Action, result: Result) -> Processed:
    return Processed(result, result_fields(action, result))


def internal_error(exc: BaseException) -> Result:
    """A bug: logged without its message (it may quote lead data), retried via the queue."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
    logger.error("Unexpected error", extra={"error_type": type(exc).__name__, "where": where})
    return outcomes.INTERNAL()
