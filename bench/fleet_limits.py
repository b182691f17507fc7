"""Fleet pacing against a second, independent reading of Klaviyo's documented limits.

``bench/fleet.py`` runs the fleet against the project's emulator, whose windows open with the
first call after the last one ended. Klaviyo documents its limits, not where its windows
start; this module is another implementation of what it does document: per account and
operation, fixed 1 s (burst) and 60 s (steady) windows, here aligned to the clock at a chosen
**phase**; ``RateLimit-Limit``/``-Remaining``/``-Reset`` on every answer that is not a 429;
``Retry-After`` (whole seconds until every full window has reset) on a 429. It shares no code
with the emulator (``FixedWindows`` below is the whole of it).

One run: ``containers`` containers of Create Profile, each with the function's own runtime,
client and ``Pacer`` (as ``Runtime.from_env`` builds it, told the fleet's size only when the
stack would: ``known_containers``, its reserved concurrency), behind one trigger:

- ``webhook``: API Gateway requests for one lead each, through the real trigger
  (``triggers.dispatch.handle``), so the answer a sender gets, its status and ``Retry-After``,
  is the function's. Each container has one sender: it sends a new lead when the last one was
  created, and a lead it was told to retry either **at once** (``at_once``) or after the
  answer's ``Retry-After`` (``wait``).
- ``queue``: the action's SQS queue with coalescing off (one lead per call), a backlog that
  never runs out: batches of ``QUEUE_BATCH_SIZE`` records through the real trigger, a record
  handed back visible again when the function asked (its ``ChangeMessageVisibility``).

Another integration spends ``OTHER_PER_MINUTE`` of the operation's 750 calls a minute at an
even pace and ignores what it is told.

Everything runs on a virtual clock: every actor (container, sender, the other integration)
is a thread, but only one runs at a time and every sleep, Klaviyo's latency included, moves
the clock without taking real time. A run of minutes takes a second, and the same seed gives
the same run.

Per run: 429s per 1,000 fleet calls; the share of the room the other integration leaves
(whole steady windows only) that the fleet used; the share of the other integration's calls
refused; how many times a lead was told to retry (webhook: answers that told a sender so;
queue: records handed back); the most calls the fleet, and the whole account, made in one
burst second; which window and which second of the steady window every 429 hit; what
``Retry-After`` the function gave; and (webhook) how long the slowest of each container's
first ``FIRST_LEADS`` leads took, from its sender's first request to its profile, retries
included: what the first senders of a new container wait.

``python -m bench.fleet_limits`` runs the grid: 4, 16, 32 and 64 containers, webhook and
queue, Klaviyo's median latency 5, 50, 150 and 350 ms, three runs each (the window's phase
and how ``RateLimit-Reset`` rounds varied), senders that wait as told, 180 virtual seconds a
run: 96 runs, about a minute (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

OPERATION = "create_profile"
ACTION = "create_profile"
BURST = 75  # create_profile: 75/s, 750/min (the document's x-klaviyo-ratelimit)
STEADY = 750
OTHER_PER_MINUTE = 300
BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0
START = 1_000_020.0  # a multiple of 60: phase 0 puts a steady window's start here
# What a webhook request costs besides the function: the sender to API Gateway to the
# function and back.
GATEWAY_SECONDS = 0.03
# Klaviyo's latency: lognormal; p99 about 5.5 x the median, as the emulator's model assumes.
LATENCY_SIGMA = math.log(5.5) / 2.326
# How far into its latency a call reaches Klaviyo's counters (the one-way trip).
ARRIVAL_SHARE = 0.2
TARGETS = {"per_1000": 5.0, "used": 0.85, "other_refused": 0.01}
# The queue: the stack's BatchSize (one lead per call with coalescing off), the time the
# event source mapping takes to hand the next batch to a container, and the queue's
# visibility timeout (what brings back a record the function asked nothing for).
QUEUE_BATCH_SIZE = 10
QUEUE_POLL_SECONDS = 0.02
QUEUE_VISIBILITY_SECONDS = 2160
# A fresh container's first leads (webhook): the slowest of them is a run's figure.
FIRST_LEADS = 4


# -- the limits ------------------------------------------------------------------------------


@dataclass
class FixedWindows:
    """Klaviyo's documented limits for one operation of one account, windows at ``phase``.

    Window ``k`` of length ``L`` is ``[START + phase + k L, START + phase + (k + 1) L)``: the
    burst second and the steady minute both start ``phase`` seconds after ``START``'s
    minute (the burst at the fraction of it).
    """

    phase: float = 0.0
    reset: str = "ceil"  # how RateLimit-Reset rounds the seconds left: "ceil" or "floor"
    burst: int = BURST
    steady: int = STEADY
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    refusals: list[dict[str, Any]] = field(default_factory=list)

    def index(self, length: float, now: float) -> int:
        return math.floor((now - START - self.phase) / length)

    def opened(self, length: float, now: float) -> float:
        return START + self.phase + self.index(length, now) * length

    def call(self, now: float, who: str) -> tuple[int, dict[str, str]]:
        windows = (("burst", BURST_SECONDS, self.burst), ("steady", STEADY_SECONDS, self.steady))
        full = []
        for name, length, limit in windows:
            if self.counts.get((name, self.index(length, now)), 0) >= limit:
                full.append((name, self.opened(length, now) + length - now))
        if full:
            wait = max(seconds for _, seconds in full)
            self.refusals.append(
                {
                    "who": who,
                    "at": now,
                    "windows": "+".join(name for name, _ in full),
                    "second": int(now - self.opened(STEADY_SECONDS, now)),
                    "retry_after": max(1, math.ceil(wait)),
                }
            )
            return 429, {"Retry-After": str(max(1, math.ceil(wait)))}
        for name, length, _ in windows:
            key = (name, self.index(length, now))
            self.counts[key] = self.counts.get(key, 0) + 1
        steady_key = ("steady", self.index(STEADY_SECONDS, now))
        left = self.opened(STEADY_SECONDS, now) + STEADY_SECONDS - now
        return 200, {
            "RateLimit-Limit": str(self.steady),
            "RateLimit-Remaining": str(max(0, self.steady - self.counts[steady_key])),
            "RateLimit-Reset": str(math.ceil(left) if self.reset == "ceil" else math.floor(left)),
        }


# -- the virtual clock: cooperative threads ----------------------------------------------------


class Stopped(BaseException):
    """Raised in an actor's sleep when the run is over (not an Exception: nothing catches it)."""


class Simulation:
    """Actors are threads; one runs at a time, until it sleeps. Sleeping moves the clock."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._heap: list[tuple[float, int, threading.Event]] = []
        self._seq = 0
        self._turn_over = threading.Event()
        self._stopping = False
        self._local = threading.local()
        self._threads: list[threading.Thread] = []

    def now(self) -> float:
        return self._now

    def _schedule(self, at: float, wake: threading.Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, wake))

    def sleep(self, seconds: float) -> None:
        wake: threading.Event = self._local.wake
        self._schedule(self._now + max(0.0, seconds), wake)
        wake.clear()
        self._turn_over.set()
        wake.wait()
        if self._stopping:
            raise Stopped

    def spawn(self, at: float, body: Callable[[], None]) -> None:
        wake = threading.Event()

        def run() -> None:
            self._local.wake = wake
            wake.wait()
            try:
                if not self._stopping:
                    body()
            except Stopped:
                pass
            finally:
                self._turn_over.set()

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()
        self._schedule(at, wake)

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            at, _, wake = heapq.heappop(self._heap)
            self._now = at
            self._turn_over.clear()
            wake.set()
            self._turn_over.wait()
        self._stopping = True
        for _, _, wake in self._heap:
            wake.set()
        for thread in self._threads:
            thread.join(timeout=10)


# -- Klaviyo's answers, as urllib3 would hand them over ---------------------------------------


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    data: bytes


class KlaviyoStandIn:
    """A pool for the client: ``POST /api/profiles`` answered by ``FixedWindows``."""

    def __init__(
        self,
        sim: Simulation,
        limits: FixedWindows,
        latency: float,
        rng: random.Random,
        who: str,
        calls: list[tuple[float, int]],
    ) -> None:
        self.sim, self.limits, self.latency, self.rng = sim, limits, latency, rng
        self.who, self.calls = who, calls
        self.made = 0

    def request(self, method: str, url: str, **_: Any) -> _Answer:
        took = self.latency * math.exp(self.rng.gauss(0.0, LATENCY_SIGMA))
        self.sim.sleep(ARRIVAL_SHARE * took)
        status, headers = self.limits.call(self.sim.now(), self.who)
        self.calls.append((self.sim.now(), status))
        self.sim.sleep((1.0 - ARRIVAL_SHARE) * took)
        body: dict[str, Any]
        if status == 429:
            body = {"errors": [{"status": 429, "code": "throttled", "title": "Throttled"}]}
        else:
            self.made += 1
            body = {"data": {"type": "profile", "id": f"{self.who}-{self.made}", "attributes": {}}}
            status = 201
        return _Answer(status, {"Content-Type": "application/vnd.api+json", **headers}, _json(body))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- the action's queue ------------------------------------------------------------------------


class VirtualQueue:
    """The action's SQS queue with a backlog that never runs out, as the function meets it.

    A receive gives the records due again first (handed back, visible when the function
    asked: its ``ChangeMessageVisibility`` through ``delay``), then new leads. ``ActionQueue``'s
    ``delay`` is the one call the function makes on it.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._due: list[tuple[float, int, dict[str, Any]]] = []  # (visible at, order, message)
        self._order = 0
        self._asked: dict[str, int] = {}  # message id -> seconds the function asked for
        self.made = 0
        self.handed_back: list[int] = []  # the seconds each hand-back asked for

    def receive(self, most: int) -> list[dict[str, Any]]:
        from devtools.lambda_events import sqs_message

        now = self.sim.now()
        batch = []
        while self._due and self._due[0][0] <= now and len(batch) < most:
            _, _, message = heapq.heappop(self._due)
            count = int(message["Attributes"]["ApproximateReceiveCount"]) + 1
            batch.append(
                sqs_message(
                    message["Body"],
                    message_id=message["MessageId"],
                    receive_count=count,
                    sent_timestamp=now,
                )
            )
        while len(batch) < most:
            self.made += 1
            body = json.dumps({"email": f"queued-{self.made}@example.com", "first_name": "New"})
            batch.append(sqs_message(body, message_id=f"m-{self.made}", sent_timestamp=now))
        return batch

    def delay(self, due: list[Any]) -> list[str]:
        for item in due:
            self._asked[item.message_id] = item.seconds
        return []

    def settle(self, batch: list[dict[str, Any]], failed: set[str]) -> None:
        """After an invocation: a handed-back record is due when the function asked."""
        for message in batch:
            if message["MessageId"] in failed:
                seconds = self._asked.pop(message["MessageId"], QUEUE_VISIBILITY_SECONDS)
                self.handed_back.append(seconds)
                self._order += 1
                heapq.heappush(self._due, (self.sim.now() + seconds, self._order, message))


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    containers: int
    senders: str = "wait"  # "wait": as Retry-After says; "at_once": retry at once
    phase: float = 0.0
    latency: float = 0.25  # median seconds of a Create Profile call
    seconds: float = 300.0
    seed: int = 1
    other_per_minute: float = OTHER_PER_MINUTE
    reset: str = "ceil"
    trigger: str = "webhook"  # "webhook": API Gateway, one lead a request; "queue": SQS
    # What the stack tells the pacer of the fleet's size (KLAVIYO_CONTAINERS: the function's
    # reserved concurrency); None: nothing, as a stack without reserved concurrency.
    known_containers: int | None = None


def fleet_pacer(sim: Simulation, rng: random.Random, spec: Run) -> Any:
    """The client's own Pacer, as ``Runtime.from_env`` gives it, on the virtual clock."""
    from klaviyo_leads.klaviyo.pacing import Pacer

    return Pacer(clock=sim.now, rng=rng, wall_clock=sim.now, containers=spec.known_containers)


def run(spec: Run) -> dict[str, Any]:
    from bench.harness import ResultLog, build_runtime, quiet_lambda_output
    from devtools.lambda_events import (
        LambdaContext,
        api_gateway_event,
        function_name,
        queue_arn,
        sqs_event,
    )
    from klaviyo_leads.actions.table import ACTIONS
    from klaviyo_leads.triggers.dispatch import handle

    sim = Simulation(START)
    limits = FixedWindows(phase=spec.phase, reset=spec.reset)
    end = START + spec.seconds
    action = ACTIONS[ACTION]
    queue = VirtualQueue(sim)
    arn = queue_arn(f"klaviyo-lead-actions-{ACTION.replace('_', '-')}")
    fleet_calls: list[tuple[float, int]] = []
    other_calls: list[tuple[float, int]] = []
    answers: list[dict[str, Any]] = []
    lead_seconds: list[tuple[int, float]] = []  # (the lead's number in its container, seconds)
    results = ResultLog()
    leads_created = 0

    def runtime_of(index: int) -> Any:
        rng = random.Random(f"{spec.seed}-{index}")
        runtime = build_runtime(
            "https://a.klaviyo.com",
            coalesce=False,
            clock=sim.now,
            sleep=sim.sleep,
            results=results,
            pool=KlaviyoStandIn(sim, limits, spec.latency, rng, f"c{index}", fleet_calls),
            observer=lambda bucket, status, seconds: None,
        )
        runtime.client.pacer = fleet_pacer(sim, rng, spec)
        runtime.wall = sim.now
        if spec.trigger == "queue":
            runtime.queue = queue
        return runtime

    def webhook_container(index: int) -> None:
        nonlocal leads_created
        runtime = runtime_of(index)
        sent = 0
        while True:
            sent += 1
            body = json.dumps({"email": f"new-{index}-{sent}@example.com", "first_name": "New"})
            started = sim.now()
            while True:
                sim.sleep(GATEWAY_SECONDS / 2)
                event = api_gateway_event(
                    "POST",
                    "/create-profile",
                    {"Content-Type": "application/json"},
                    body,
                    now=sim.now(),
                )
                context = LambdaContext(function_name=function_name(ACTION), clock=sim.now)
                asked = sim.now()
                answer = handle(runtime, action, event, context)
                sim.sleep(GATEWAY_SECONDS / 2)
                if answer["statusCode"] < 300:
                    leads_created += 1
                    lead_seconds.append((sent, sim.now() - started))
                    break
                retry_after = answer["headers"].get("Retry-After")
                answers.append(
                    {
                        "at": asked,
                        "status": answer["statusCode"],
                        "retry_after": None if retry_after is None else int(retry_after),
                        "reason": json.loads(answer["body"]).get("reason"),
                    }
                )
                if answer["statusCode"] not in (429, 503):
                    break  # not a throttle: a new lead
                if spec.senders == "wait" and retry_after is not None:
                    sim.sleep(float(retry_after))

    def queue_container(index: int) -> None:
        """One container of the queue's event source mapping: a batch, then the next."""
        runtime = runtime_of(index)
        while True:
            batch = queue.receive(QUEUE_BATCH_SIZE)
            context = LambdaContext(function_name=function_name(ACTION), clock=sim.now)
            answer = handle(runtime, action, sqs_event(batch, arn), context)
            failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
            queue.settle(batch, failed)
            sim.sleep(QUEUE_POLL_SECONDS)

    def other() -> None:
        interval = 60.0 / spec.other_per_minute
        while True:
            status, _ = limits.call(sim.now(), "other")
            other_calls.append((sim.now(), status))
            sim.sleep(interval)

    container = queue_container if spec.trigger == "queue" else webhook_container
    rng = random.Random(spec.seed)
    if spec.other_per_minute > 0:
        sim.spawn(START, other)
    for index in range(spec.containers):
        sim.spawn(START + rng.uniform(0.0, 1.0), functools.partial(container, index))
    with quiet_lambda_output():
        sim.run(until=end)
    if spec.trigger == "queue":
        leads_created = results.successes()
        answers = [
            {"at": None, "status": 503, "retry_after": seconds, "reason": "handed back"}
            for seconds in queue.handed_back
        ]
    return figures(spec, limits, fleet_calls, other_calls, answers, leads_created, lead_seconds)


def figures(
    spec: Run,
    limits: FixedWindows,
    fleet_calls: list[tuple[float, int]],
    other_calls: list[tuple[float, int]],
    answers: list[dict[str, Any]],
    leads_created: int,
    lead_seconds: list[tuple[int, float]],
) -> dict[str, Any]:
    end = START + spec.seconds
    # The room left: whole steady windows inside the run only.
    first = limits.index(STEADY_SECONDS, START - 1e-9) + 1
    last = limits.index(STEADY_SECONDS, end) - 1
    whole = range(first, last + 1)

    def in_whole(at: float) -> bool:
        return limits.index(STEADY_SECONDS, at) in whole

    other_ok = sum(1 for at, s in other_calls if s != 429 and in_whole(at))
    fleet_ok = sum(1 for at, s in fleet_calls if s != 429 and in_whole(at))
    left = STEADY * len(whole) - other_ok
    throttled = sum(1 for _, s in fleet_calls if s == 429)
    refusals = [r for r in limits.refusals if r["who"] != "other"]
    told = [a for a in answers if a["status"] in (429, 503)]
    burst_seconds: Counter[int] = Counter()
    account_seconds: Counter[int] = Counter()
    for at, _ in fleet_calls:
        burst_seconds[limits.index(BURST_SECONDS, at)] += 1
    for at, _ in [*fleet_calls, *other_calls]:
        account_seconds[limits.index(BURST_SECONDS, at)] += 1
    return {
        "containers": spec.containers,
        "trigger": spec.trigger,
        "reset": spec.reset,
        "known_containers": spec.known_containers,
        "senders": spec.senders,
        "phase": spec.phase,
        "latency": spec.latency,
        "seconds": spec.seconds,
        "seed": spec.seed,
        "fleet_calls": len(fleet_calls),
        "fleet_429": throttled,
        "fleet_429_per_1000_calls": 1000.0 * throttled / max(1, len(fleet_calls)),
        "whole_windows": len(whole),
        "left_by_other": left,
        "fleet_accepted_in_whole_windows": fleet_ok,
        "share_of_left_used": fleet_ok / left if left > 0 else 0.0,
        "other_calls": len(other_calls),
        "other_429": sum(1 for _, s in other_calls if s == 429),
        "other_refused_fraction": sum(1 for _, s in other_calls if s == 429)
        / max(1, len(other_calls)),
        "leads_created": leads_created,
        # Webhook only (None on the queue): the slowest of every container's first leads.
        "first_leads_slowest_seconds": max(
            (seconds for number, seconds in lead_seconds if number <= FIRST_LEADS), default=None
        ),
        "told_to_retry": len(told),
        # The most calls in one burst second (answered or refused).
        "busiest_second_fleet": max(burst_seconds.values(), default=0),
        "busiest_second_account": max(account_seconds.values(), default=0),
        "retry_after_given": dict(sorted(Counter(_band(a["retry_after"]) for a in told).items())),
        "retry_reasons": dict(Counter(str(a["reason"]) for a in told).most_common(5)),
        "fleet_429_windows": dict(Counter(r["windows"] for r in refusals)),
        "fleet_429_seconds": dict(
            sorted(Counter(_second_band(r["second"]) for r in refusals).items())
        ),
        "other_429_seconds": dict(
            sorted(
                Counter(
                    _second_band(r["second"]) for r in limits.refusals if r["who"] == "other"
                ).items()
            )
        ),
    }


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _band(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    for top, name in ((1, "01 s"), (2, "02 s"), (5, "03-05 s"), (15, "06-15 s"), (30, "16-30 s")):
        if seconds <= top:
            return name
    return "31-60 s" if seconds <= 60 else "> 60 s"


def _second_band(second: int) -> str:
    if second == 0:
        return "s00"
    if second < 10:
        return "s01-09"
    if second < 50:
        return "s10-49"
    if second < 59:
        return "s50-58"
    return "s59"


# -- the benchmark ---------------------------------------------------------------------------


# The three runs of each size, trigger and latency: the window's phase (the fleet arrives 0,
# 50 and 23.4 s into Klaviyo's minute: at a window's start, with 10 s of a window's room
# left, and half-way) and how RateLimit-Reset rounds the seconds left, varied.
VARIATIONS = ((0.0, "ceil"), (10.0, "floor"), (36.6, "ceil"))
SIZES = (4, 16, 32, 64)
TRIGGERS = ("webhook", "queue")
LATENCIES = (0.005, 0.05, 0.15, 0.35)
# Two whole steady windows at any phase, after the fleet's start.
SECONDS = 180.0


def runs(
    containers: tuple[int, ...],
    triggers: tuple[str, ...],
    latencies: tuple[float, ...],
    senders: str,
    seconds: float,
    seed: int,
    known_containers: int | None = None,
    other_per_minute: float = OTHER_PER_MINUTE,
) -> Iterator[Run]:
    """Three runs per fleet size, trigger and latency, window phase and rounding varied."""
    for count in containers:
        for trigger in triggers:
            for latency in latencies:
                for number, (phase, reset) in enumerate(VARIATIONS):
                    yield Run(
                        count,
                        senders,
                        phase,
                        latency,
                        seconds,
                        seed + number,
                        reset=reset,
                        trigger=trigger,
                        known_containers=known_containers,
                        other_per_minute=other_per_minute,
                    )


HEADER = (
    f"{'':34}{'429/1000':>9}{'used':>8}{'other':>8}{'told':>6}{'peak/s':>8}{'leads':>7}"
    f"{'first s':>8}   429s by window / second; Retry-After given"
)


def line(figures: dict[str, Any]) -> str:
    name = (
        f"{figures['containers']} c, {figures['trigger']}, {figures['latency'] * 1000:.0f} ms, "
        f"ph {figures['phase']:.0f} {figures['reset']}"
    )
    return (
        f"{name:34}{figures['fleet_429_per_1000_calls']:9.1f}"
        f"{100 * figures['share_of_left_used']:7.1f}%"
        f"{100 * figures['other_refused_fraction']:7.1f}%"
        f"{figures['told_to_retry']:6d}{figures['busiest_second_fleet']:8d}"
        f"{figures['leads_created']:7d}{_seconds(figures['first_leads_slowest_seconds']):>8}"
        f"   {figures['fleet_429_windows']} {figures['fleet_429_seconds']}; "
        f"{figures['retry_after_given']}"
    )


def meets_targets(figures: dict[str, Any]) -> bool:
    return (
        figures["fleet_429_per_1000_calls"] <= TARGETS["per_1000"]
        and figures["share_of_left_used"] >= TARGETS["used"]
        and figures["other_refused_fraction"] <= TARGETS["other_refused"]
    )


def _numbers(text: str, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    return tuple(kind(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    from devtools.lambda_events import ensure_layer_on_path

    ensure_layer_on_path()
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_limits", description=__doc__)
    parser.add_argument("--containers", default=",".join(map(str, SIZES)), help="fleet sizes")
    parser.add_argument("--triggers", default=",".join(TRIGGERS), help="webhook,queue")
    parser.add_argument(
        "--latencies",
        default=",".join(f"{1000 * latency:g}" for latency in LATENCIES),
        help="Klaviyo's median latencies, milliseconds",
    )
    parser.add_argument("--senders", choices=("wait", "at_once"), default="wait")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="virtual seconds a run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--known-containers",
        type=int,
        default=None,
        help="what the stack tells the pacer of the fleet's size (reserved concurrency); "
        "default: nothing",
    )
    parser.add_argument(
        "--other-per-minute",
        type=float,
        default=OTHER_PER_MINUTE,
        help="the other integration's calls a minute (of 750; 0: an account otherwise idle)",
    )
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args(argv)
    specs = list(
        runs(
            _numbers(args.containers, int),
            _numbers(args.triggers, str),
            tuple(ms / 1000.0 for ms in _numbers(args.latencies, float)),
            args.senders,
            args.seconds,
            args.seed,
            args.known_containers,
            args.other_per_minute,
        )
    )
    print(
        f"FLEET vs FIXED WINDOWS ({OPERATION} {BURST}/s {STEADY}/min; another integration "
        f"{args.other_per_minute:.0f}/min; senders {args.senders}; {args.seconds:.0f} virtual s a "
        f"run; fleet size known to the pacer: {args.known_containers or 'no'})"
    )
    print(HEADER)
    results = []
    for spec in specs:
        figures = run(spec)
        results.append(figures)
        print(line(figures), flush=True)
    met = [meets_targets(f) for f in results]
    print(
        f"  targets: <= {TARGETS['per_1000']:.0f} 429s per 1000 calls, >= "
        f"{100 * TARGETS['used']:.0f} % of the room left used, <= "
        f"{100 * TARGETS['other_refused']:.0f} % of the other integration's calls refused: "
        f"{sum(met)} of {len(met)} runs meet them"
    )
    if results:
        print(
            f"  worst: {max(f['fleet_429_per_1000_calls'] for f in results):.1f} 429s per "
            f"1000 calls, {100 * min(f['share_of_left_used'] for f in results):.1f} % used, "
            f"{100 * max(f['other_refused_fraction'] for f in results):.1f} % of the other's "
            f"refused; busiest second: the fleet {max(f['busiest_second_fleet'] for f in results)}"
            f", the account {max(f['busiest_second_account'] for f in results)} calls"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
