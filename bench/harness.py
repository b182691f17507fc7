"""What every throughput run shares: the emulator, a runtime wired to it, queues, leads.

Leads go through the function's real handler (``functions/<action>/app.py``, Powertools
logger and metrics included) with a ``Runtime`` injected the way the local runner does
(``handlers.actions.reset_runtime``): the same client, pacer, name cache and budgets as in Lambda,
only their clock and sleep may be virtual. No AWS is involved: there is no idempotency
table, and results are kept in memory instead of being published to EventBridge.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import (
    FUNCTION_TIMEOUT_SECONDS,
    LambdaContext,
    ensure_layer_on_path,
    function_name,
    load_handler,
    queue_arn,
    sqs_event,
    sqs_message,
)

ensure_layer_on_path()

from bench.mixes import Account, seed_account  # noqa: E402
from bench.mixes import lead as mixed_lead  # noqa: E402
from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator  # noqa: E402
from devtools.klaviyo_emulator.operations import OPERATIONS_BY_ID  # noqa: E402
from devtools.memory_dynamodb import memory_ledger  # noqa: E402
from klaviyo_leads import observability  # noqa: E402
from klaviyo_leads.actions.table import ACTIONS as ACTION_TABLE  # noqa: E402
from klaviyo_leads.aws.secrets import ApiKeyProvider  # noqa: E402
from klaviyo_leads.budget import MIN_SECONDS_PER_LEAD  # noqa: E402
from klaviyo_leads.config import Settings  # noqa: E402
from klaviyo_leads.context import NameCache  # noqa: E402
from klaviyo_leads.handlers import actions as entrypoint  # noqa: E402
from klaviyo_leads.klaviyo.client import KlaviyoClient  # noqa: E402
from klaviyo_leads.klaviyo.pacing import Pacer  # noqa: E402
from klaviyo_leads.runtime import Runtime  # noqa: E402

SUBSCRIBE = "subscribe_profile_to_list"
ADD = "add_profile_to_list"
# Every action of the bundle, in the order of its table.
ACTIONS = tuple(ACTION_TABLE)
TITLES = {name: action.seed_name for name, action in ACTION_TABLE.items()}
MODES = ("per_lead", "coalesced")
MAX_RECEIVE_COUNT = 5  # template.yaml's MaxReceiveCount default
# The handler starts no record with less than this left in the invocation.
MIN_SECONDS_LEFT = MIN_SECONDS_PER_LEAD
# How long Klaviyo takes with a bulk profile import job: not documented, so an assumption. A
# job waits this long queued, then processes this many profiles a second (a job of 1,000
# takes 20 s in all, one of 10,000 110 s).
IMPORT_DELAY_SECONDS = 10.0
IMPORT_RATE_PER_SECOND = 100.0
# The emulator's seed: ids and latency draws repeat from run to run.
SEED = 20260715

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def steady_limit(operation_id: str) -> int:
    return OPERATIONS_BY_ID[operation_id].steady


class ResultLog:
    """Stands in for the result publisher: counts each published result, publishes nothing.

    Without idempotency a record's result is published once, when it is done (a record
    handed back to the queue publishes nothing), so counting publications counts leads.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def publish(self, publications: list[Any], in_time: Any = None) -> list[bool]:
        for publication in publications:
            self.counts[_outcome_label(publication.result)] += 1
        return [True] * len(publications)

    def outcomes(self) -> Counter[str]:
        return Counter(self.counts)

    def successes(self) -> int:
        return self.counts["success"]


def _outcome_label(fields: dict[str, Any]) -> str:
    outcome = str(fields.get("outcome"))
    return outcome if outcome == "success" else f"{outcome}: {fields.get('reason')}"


class _Sink(io.TextIOBase):
    """Where logs and metrics go during a run (CloudWatch's stdout): counted, then dropped."""

    def __init__(self) -> None:
        self.chars = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


@contextlib.contextmanager
def quiet_lambda_output() -> Iterator[_Sink]:
    """Send the Powertools logger's and metrics' output to a sink (they still do the work)."""
    sink = _Sink()
    handlers = [h for h in observability.logger.handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(sink) for h in handlers]
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            # Powertools warns on every invocation about re-set dimensions and empty metric
            # sets; in Lambda those go to the log too.
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


@dataclass
class BenchRuntime(Runtime):
    """The runtime, also counting the results that send a record back to the queue."""

    retryable: Counter[str] = field(default_factory=Counter)

    def record(self, action: Any, result: Any, seconds: float) -> None:
        if result.retryable:
            self.retryable[str(result.reason)] += 1
        super().record(action, result, seconds)


def build_runtime(
    base_url: str,
    *,
    coalesce: bool,
    clock: Clock,
    sleep: Sleep,
    results: ResultLog | None,
    pacer: Pacer | None = None,
    pool: Any = None,
    api_key: str = DEFAULT_API_KEY,
    observer: Callable[[str, int | None, float], None] | None = None,
) -> BenchRuntime:
    """A runtime as ``Runtime.from_env`` builds it, on the given clock, with a fixed key.

    Delete Profile is switched on (``profile_deletion_enabled``), as a stack that allows it.
    """
    settings = Settings(
        api_key_secret_id="klaviyo/api-key",
        base_url=base_url,
        coalesce_batches=coalesce,
        profile_deletion_enabled=True,
    )
    # What Runtime.from_env gives the client: the KlaviyoCalls / KlaviyoThrottled counter.
    observer = observer or observability.count_klaviyo_call
    client = KlaviyoClient(
        settings.base_url,
        settings.api_revision,
        ApiKeyProvider(settings.api_key_secret_id, fetch=lambda secret_id, force: api_key),
        sleep=sleep,
        pacer=pacer or Pacer(clock=clock),
        observer=observer,
        pool=pool,
    )
    return BenchRuntime(
        settings=settings,
        client=client,
        names=NameCache(clock=clock),
        publisher=results,  # type: ignore[arg-type]
        # The production create ledger, on an in-memory table and the bench's clock.
        ledger=memory_ledger(clock),
        clock=clock,
        wall=clock,
    )


@dataclass
class Bench:
    """One action, one mode, one emulator: the handler with a runtime injected."""

    action: str
    mode: str
    emulator: KlaviyoEmulator
    account: Account
    clock: Clock
    sleep: Sleep
    results: ResultLog = field(default_factory=ResultLog)
    queue: str = ""

    def __post_init__(self) -> None:
        self.runtime = build_runtime(
            self.emulator.base_url,
            coalesce=self.mode == "coalesced",
            clock=self.clock,
            sleep=self.sleep,
            results=self.results,
        )
        with warnings.catch_warnings():
            # Loading a second function in one process re-sets the shared Metrics' default
            # dimension, and Powertools warns about it; a Lambda container loads one.
            warnings.simplefilter("ignore")
            self.handler = load_handler(self.action)
        self.queue = queue_arn(f"klaviyo-lead-actions-{self.action.replace('_', '-')}")

    @contextlib.contextmanager
    def active(self) -> Iterator[_Sink]:
        entrypoint.reset_runtime(self.runtime)
        try:
            with quiet_lambda_output() as sink:
                yield sink
        finally:
            entrypoint.reset_runtime()

    def message(self, index: int) -> dict[str, Any]:
        import json

        body = mixed_lead(self.action, index, self.account)
        return sqs_message(json.dumps(body), message_id=f"msg-{index:07d}")

    def context(self, timeout_seconds: float = FUNCTION_TIMEOUT_SECONDS) -> LambdaContext:
        return LambdaContext(
            function_name=function_name(self.action),
            timeout_seconds=timeout_seconds,
            clock=self.clock,
        )

    def invoke(self, messages: list[dict[str, Any]], ctx: LambdaContext) -> tuple[set[str], float]:
        """One invocation: the message ids handed back, and the CPU time it took here."""
        event = sqs_event(messages, self.queue)
        started = time.thread_time()
        response = self.handler(event, ctx)
        cpu = time.thread_time() - started
        return {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}, cpu


@dataclass
class Drained:
    invocations: int = 0
    cpu_seconds: float = 0.0
    handed_back: int = 0
    dead_lettered: int = 0


def drain(bench: Bench, messages: list[dict[str, Any]], batch_size: int) -> Drained:
    """Deliver the messages in batches until each is done or dead-lettered.

    A record the handler hands back (``batchItemFailures``) is delivered again later with its
    receive count raised, as SQS does after the visibility timeout; here it simply goes to
    the back of the queue.
    """
    stats = Drained()
    pending = deque(messages)
    while pending:
        batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
        failed, cpu = bench.invoke(batch, bench.context())
        stats.invocations += 1
        stats.cpu_seconds += cpu
        for message in batch:
            if message["MessageId"] not in failed:
                continue
            stats.handed_back += 1
            count = int(message["Attributes"]["ApproximateReceiveCount"]) + 1
            if count > MAX_RECEIVE_COUNT:
                stats.dead_lettered += 1
                continue
            pending.append(
                sqs_message(message["Body"], message_id=message["MessageId"], receive_count=count)
            )
    return stats


def new_emulator(
    profiles: int,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    *,
    latency: str | None = "realistic",
) -> tuple[KlaviyoEmulator, Account]:
    """One Klaviyo account as the benchmark meets it, seeded with ``profiles`` people.

    Klaviyo's per-endpoint rate limits on, answers delayed by the emulator's realistic latency
    model (waited on ``sleep``: a virtual clock's costs no real time), bulk import jobs timed
    by ``IMPORT_DELAY_SECONDS`` and ``IMPORT_RATE_PER_SECOND``.
    """
    emulator = KlaviyoEmulator(
        rate_limits=True,
        clock=clock or time.time,
        sleep=sleep or time.sleep,
        latency=latency,
        import_delay=IMPORT_DELAY_SECONDS,
        import_rate=IMPORT_RATE_PER_SECOND,
        seed=SEED,
    )
    account = seed_account(emulator, profiles)
    return emulator.start(), account


def call_counts(emulator: KlaviyoEmulator) -> dict[str, dict[str, int]]:
    """Per operation: every request, and how many of them were answered 429."""
    counts: dict[str, dict[str, int]] = {}
    for request in emulator.requests:
        op = request.operation_id or "unknown"
        entry = counts.setdefault(op, {"calls": 0, "throttled": 0})
        entry["calls"] += 1
        if request.status == 429:
            entry["throttled"] += 1
    return counts
