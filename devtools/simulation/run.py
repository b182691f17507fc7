"""One seed: the scenario played on the simulated fleet, then the invariants checked.

Everything the code under test could read from the real world is the simulation's: time
(each container's clock, Powertools' idempotency records included), identifiers
(``uuid.uuid4``), jitter (the layer's random generators), Klaviyo (the emulator, in
process), AWS (in memory). A seed therefore replays exactly, and a failing one can be
shrunk: leads dropped, then kinds of fault turned off, while it still fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import random
import sys
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator import state as emulator_state
from devtools.memory_dynamodb import MemoryDynamoDB
from klaviyo_leads.actions.create.identity import MARKER_PROPERTY
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.aws.queue import LEAD_FILE_ROW, LEAD_FILE_RUN, ORIGIN, lead_file_row_key
from klaviyo_leads.lead_files.checks import NO_RESULT, unanswered

from . import checks
from .aws import SimulatedAws, injected
from .fleet import RESULTS_TABLE, TABLE, Container, Fleet, Splitter
from .scheduler import Scheduler, Stalled, Task
from .transport import InProcessKlaviyo
from .world import LIST_ID, Scenario

START = 1_800_000_000.0  # 2027-01-15, a moment no test's real clock is near
TIME_LIMIT = 6 * 3600.0  # a run whose leads are not all done by then has stalled
KLAVIYO_FAULTS = (  # (kind, weight)
    ("lost", 4),
    ("503 after", 2),
    ("503", 1),
    ("429", 2),
    ("refused", 1),
    ("unreadable", 2),
)


@dataclass
class Outcome:
    seed: int
    violations: list[str]
    steps: int = 0
    calls: int = 0
    trace: list[str] = field(default_factory=list)
    leads: int = 0


class _Clock:
    """The emulator's clock, pointed at the running simulation's scheduler."""

    def __init__(self) -> None:
        self.sched: Scheduler | None = None

    def __call__(self) -> float:
        return self.sched.now if self.sched is not None else START


_EMULATOR: tuple[KlaviyoEmulator, _Clock] | None = None


def _emulator() -> tuple[KlaviyoEmulator, _Clock]:
    """One emulator a process, reset for every seed (its rules load once)."""
    global _EMULATOR
    if _EMULATOR is None:
        clock = _Clock()
        emulator = KlaviyoEmulator(clock=clock, sleep=lambda seconds: None, seed=1)
        _EMULATOR = (emulator, clock)
    return _EMULATOR


def play(
    scenario: Scenario,
    *,
    planted: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    tracing: bool = False,
) -> Outcome:
    """Play one scenario; ``planted``: a defect to plant in the code under test for it."""
    emulator, clock = _emulator()
    seed = scenario.seed
    rng = random.Random(f"schedule-{seed}")
    sched = Scheduler(rng, START)
    sched.tracing = tracing
    clock.sched = sched
    emulator.reset()
    b = scenario.behaviour
    emulator.configure(
        search_lag=b.search_lag,
        import_delay=b.import_delay,
        subscribe_delay=b.apply_delay,
        unsubscribe_delay=b.apply_delay,
        event_delay=b.apply_delay,
    )
    ids = _Ids(sched)
    aws = SimulatedAws(lambda: sched.now, ids)
    aws.dynamodb.ensure_table(TABLE)
    aws.dynamodb.ensure_table(RESULTS_TABLE, key="message_id")
    klaviyo = checks.Klaviyo()
    faults = _Faults(seed, sched, scenario)
    transport = InProcessKlaviyo(emulator, sched.point, sched.sleep, faults.latency, faults.klaviyo)
    functions = tuple(dict.fromkeys(lead.action for lead in scenario.leads))
    fleet = Fleet(
        sched,
        aws,
        transport,
        random.Random(f"fleet-{seed}"),
        functions=functions,
        containers=b.containers,
        coalesce=b.coalesce,
        settle_seconds=scenario.settle_seconds,
        visibility=b.visibility,
        clock_spread=b.clock_spread,
        ids=ids,
    )
    fleet.split_deaths = b.kill * 10
    aws.hooks.append(lambda service, operation, when: faults.aws_point(service, operation, when))
    sched.on_point = faults.kill
    results = _Results(fleet, aws)
    with (
        _patched(sched, ids, seed),
        _watching(emulator, klaviyo),
        planted() if planted else contextlib.nullcontext(),
    ):
        emulator.create_list("Sim leads", list_id=LIST_ID, opt_in="single")
        for person in scenario.existing:
            seeded = emulator.create_profile(
                created="2025-06-01T00:00:00+00:00", **_attributes(person)
            )
            klaviyo.seeded.add(seeded)
            if person.bounced:
                emulator.suppress(seeded, "HARD_BOUNCE")
        for lead in scenario.leads:
            fleet.start(lead)
        for function in functions:
            for number in range(2):
                sched.spawn(f"poller {function} {number}", fleet.poller(function, number))
        stalled: str | None = None
        try:
            sched.run(until=TIME_LIMIT)
        except Stalled as exc:
            stalled = str(exc)
        finally:
            sched.close()
        sched.now += 3600.0  # every delayed effect (jobs, events) applied by now
        profiles = emulator.profiles()
        klaviyo.events = emulator.events()
        klaviyo.members = emulator.list_members(LIST_ID)
        klaviyo.requests = [
            (r.operation_id, r.status, r.body) for r in emulator.requests if r.operation_id
        ]
    results.dead_letters()
    results.reports()
    in_flight = [
        f"{m.message_id} on {q.name}" for q in aws.queues.values() for m in q.messages.values()
    ]
    if stalled:
        in_flight.append(stalled)
    in_flight += [
        f"{t.name}: {type(t.error).__name__}: {t.error}" for t in sched.tasks if t.error is not None
    ]
    found = checks.check(scenario, fleet.sends, profiles, klaviyo, fleet.escaped, in_flight)
    return Outcome(
        seed,
        found,
        steps=sched.steps,
        calls=emulator.calls(),
        trace=sched.trace,
        leads=len(scenario.leads),
    )


def _attributes(person: Any) -> dict[str, str]:
    values = {"email": person.email, "phone_number": person.phone, "external_id": person.reference}
    return {k: v for k, v in values.items() if v}


class _Ids:
    """Every id the run makes (message ids, request ids, keys, uuid4s): from the seed, by
    the task that makes it."""

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched

    def __call__(self) -> str:
        return str(self.uuid())

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._sched.random().getrandbits(128), version=4)


class _Faults:
    """What goes wrong where: each draw keyed by the task and how many calls it made, so a
    scenario with fewer leads keeps the others' faults."""

    def __init__(self, seed: int, sched: Scheduler, scenario: Scenario) -> None:
        self.seed = seed
        self.sched = sched
        self.behaviour = scenario.behaviour
        self.counts: dict[str, int] = {}

    def _draw(self, what: str) -> float:
        task = self.sched.current
        name = task.name if task is not None else "-"
        key = f"{name}/{what}"
        n = self.counts[key] = self.counts.get(key, 0) + 1
        digest = hashlib.sha256(f"{self.seed}/{key}/{n}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _in_invocation(self) -> bool:
        task = self.sched.current
        return task is not None and isinstance(task.context, (Container, Splitter))

    def klaviyo(self, method: str, path: str) -> str | None:
        chance = self.behaviour.klaviyo_faults
        if not chance or self._draw("klaviyo") >= chance:
            return None
        pick = self._draw("klaviyo kind") * sum(w for _, w in KLAVIYO_FAULTS)
        for kind, weight in KLAVIYO_FAULTS:
            if pick < weight:
                if kind == "429":
                    seconds = int(self._draw("retry-after") * 31)
                    return f"429:{seconds}" if seconds else "429"
                return kind
            pick -= weight
        return None

    def latency(self) -> float:
        if self.behaviour.slow and self._draw("slow") < self.behaviour.slow:
            return 20.0 + 40.0 * self._draw("slow seconds")
        return 0.005 + 0.345 * self._draw("latency")

    def aws_point(self, service: str, operation: str, when: str) -> None:
        """Every AWS call is a scheduling point, and may fail before or after it took effect."""
        if when == "before":
            self.sched.point(f"{service} {operation}")
        self.aws(service, operation, when)

    def aws(self, service: str, operation: str, when: str) -> None:
        chance = self.behaviour.aws_faults
        if not chance or not self._in_invocation():
            return
        if self._draw(f"{service} {operation} {when}") < chance / 2:
            raise injected(service, operation, when)

    def kill(self, task: Task, label: str) -> None:
        chance = self.behaviour.kill
        if chance and isinstance(task.context, Container) and self._draw("kill") < chance:
            task.killed = True


class _Results:
    """Results as callers see them: published on the bus (queued leads), answered (webhooks,
    direct), or dead-lettered."""

    def __init__(self, fleet: Fleet, aws: SimulatedAws) -> None:
        self.fleet = fleet
        self.aws = aws
        aws.on_publish = self.published

    def owner_of(self, message_id: str) -> str:
        """Whose send a message's result answers: a lead file's row (as its report reads
        it, whichever message carried the row), else the lead's origin, else the message."""
        for queue in self.aws.queues.values():
            found = [queue.messages.get(message_id), queue.deleted.get(message_id)]
            found += [m for m in queue.dead_letters if m.message_id == message_id]
            for message in found:
                if message is not None:
                    return _owner(message.attributes) or message_id
        return message_id

    def published(self, detail: dict[str, Any]) -> None:
        message_id = detail.get("message_id")
        if not message_id:
            return  # an EventBridge lead's own result: its invoker keeps the answer
        send = self.fleet.by_owner.get(self.owner_of(message_id))
        if send is not None:
            result = dict(detail.get("result") or {})
            send.answers.append({**result, "_status": None})

    def reports(self) -> None:
        """A lead file row's last answer: its line in the run's report, the result kept for
        the row (unless its last sending was refused, which the report says instead); for a
        row SQS never answered for and does not have, the report's "no result" after its
        deadline."""
        carried = {self.owner_of(m) for q in self.aws.queues.values() for m in q.deleted}
        carried |= {self.owner_of(m) for q in self.aws.queues.values() for m in q.messages}
        carried |= {_owner(m.attributes) for q in self.aws.queues.values() for m in q.dead_letters}
        for owner, send in self.fleet.by_owner.items():
            if send.lead.path != "lead_file" or owner in self.fleet.rows_refused:
                continue
            item = MemoryDynamoDB.get_item(
                self.aws.dynamodb, TableName=RESULTS_TABLE, Key={"message_id": {"S": owner}}
            ).get("Item")
            if item:
                send.answers.append({**json.loads(item["result"]["S"]), "_status": None})
            elif owner in self.fleet.rows_in_doubt and owner not in carried:
                action = ACTIONS[send.lead.action]
                fields = unanswered(action, NO_RESULT)
                send.answers.append({**fields, "_status": None})

    def dead_letters(self) -> None:
        for queue in self.aws.queues.values():
            for message in queue.dead_letters:
                send = self.fleet.by_owner.get(self.owner_of(message.message_id))
                if send is not None:
                    send.dead_lettered = True


def _owner(attributes: dict[str, dict[str, str]]) -> str | None:
    run = (attributes.get(LEAD_FILE_RUN) or {}).get("StringValue")
    row = (attributes.get(LEAD_FILE_ROW) or {}).get("StringValue")
    if run and row:
        return lead_file_row_key(run, row)
    return (attributes.get(ORIGIN) or {}).get("StringValue")


@contextlib.contextmanager
def _patched(sched: Scheduler, ids: _Ids, seed: int) -> Iterator[None]:
    """Time, ids and jitter from the simulation; the handlers' logs and metrics muted."""
    from aws_lambda_powertools.utilities.idempotency.persistence import base, datarecord, dynamodb

    from klaviyo_leads import observability
    from klaviyo_leads.aws import queue as queueing
    from klaviyo_leads.klaviyo import pacing, retry

    def wall() -> float:
        task = sched.current
        container = task.context if task is not None else None
        return container.wall() if isinstance(container, Container) else sched.now

    class VirtualDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return dt.datetime.fromtimestamp(wall(), tz)

    shim = types.SimpleNamespace(
        datetime=VirtualDatetime, timedelta=dt.timedelta, timezone=dt.timezone
    )
    seeded = types.SimpleNamespace(  # jitter: the running task's draws
        Random=lambda *args: random.Random(sched.random().getrandbits(64)),
        uniform=lambda low, high: sched.random().uniform(low, high),
        random=lambda: sched.random().random(),
    )
    saved: list[tuple[Any, str, Any]] = []

    def swap(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    for module in (base, datarecord, dynamodb):
        swap(module, "dt", shim)
    swap(uuid, "uuid4", ids.uuid)
    swap(queueing, "random", seeded)
    swap(pacing, "random", seeded)  # a fresh container's first moments
    swap(retry, "random", seeded)  # the back-off's jitter
    sink = io.StringIO()
    levels = []
    for logger in _layer_loggers():
        levels.append((logger, logger.level))
        logger.setLevel(logging.CRITICAL)
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.environ.pop("POWERTOOLS_METRICS_DISABLED", None)
        for logger, level in levels:
            logger.setLevel(level)
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        observability._counts.clear()


def _layer_loggers() -> list[logging.Logger]:
    return [logging.getLogger(name) for name in ("klaviyo-lead-actions", "aws_lambda_powertools")]


@contextlib.contextmanager
def _watching(emulator: KlaviyoEmulator, klaviyo: checks.Klaviyo) -> Iterator[None]:
    """Who made each profile (the mark its creation carried) and every identifier changed."""
    store = emulator._store
    original_index = store._index
    original_import = store.bulk_import_profile
    importing = [False]

    def bulk_import_profile(item: Any, *, match_external_id: bool) -> Any:
        importing[0] = True
        try:
            return original_import(item, match_external_id=match_external_id)
        finally:
            importing[0] = False

    def index(profile: Any, before: Any = None, *, present: bool = True) -> None:
        if profile.id not in klaviyo.made_by:
            # First indexed when it is made: the mark its creating write carried, if any.
            properties = profile.properties if isinstance(profile.properties, dict) else {}
            mark = properties.get(MARKER_PROPERTY)
            klaviyo.made_by[profile.id] = mark if isinstance(mark, str) else None
        elif before is not None and present:
            now = emulator_state.identifiers(profile)
            for name, old in before.items():
                new = now.get(name)
                if old and new and str(old).casefold() != str(new).casefold():
                    by = "import" if importing[0] else "request"
                    klaviyo.renames.append((profile.id, name, str(old), str(new), by))
        original_index(profile, before, present=present)

    original_subscribe = store.apply_subscribe_job
    original_unsubscribe = store.apply_unsubscribe_job

    def applied(kind: str, items: list[Any]) -> None:
        klaviyo.consent_jobs.append(
            (
                kind,
                [
                    {
                        "id": getattr(item, "profile_id", None),
                        "email": item.email,
                        "phone_number": item.phone_number,
                        "channels": sorted(
                            {c.channel for c in item.consents}
                            if kind == "subscribe"
                            else {channel for channel, _ in item.channels}
                        ),
                    }
                    for item in items
                ],
            )
        )

    def apply_subscribe_job(job: Any) -> None:
        applied("subscribe", job.profiles)
        original_subscribe(job)

    def apply_unsubscribe_job(job: Any) -> None:
        applied("unsubscribe", job.profiles)
        original_unsubscribe(job)

    store._index = index  # type: ignore[method-assign]
    store.bulk_import_profile = bulk_import_profile  # type: ignore[method-assign]
    store.apply_subscribe_job = apply_subscribe_job  # type: ignore[method-assign]
    store.apply_unsubscribe_job = apply_unsubscribe_job  # type: ignore[method-assign]
    try:
        yield
    finally:
        del store._index, store.bulk_import_profile
        del store.apply_subscribe_job, store.apply_unsubscribe_job


def shrink(scenario: Scenario, planted: Any = None, budget: int = 60) -> tuple[Scenario, Outcome]:
    """The scenario with as few leads and kinds of fault as still fail, and its run."""
    best = play(scenario, planted=planted)
    assert best.violations, "shrink a failing scenario"
    tries = 0
    for lead in list(scenario.leads):
        if tries >= budget:
            break
        tries += 1
        smaller = scenario.without({lead.number})
        if not smaller.leads:
            continue
        outcome = play(smaller, planted=planted)
        if outcome.violations:
            scenario, best = smaller, outcome
    for knob in ("kill", "slow", "aws_faults", "klaviyo_faults", "clock_spread"):
        if getattr(scenario.behaviour, knob) == 0:
            continue
        calmer = replace(scenario, behaviour=replace(scenario.behaviour, **{knob: 0.0}))
        outcome = play(calmer, planted=planted)
        if outcome.violations:
            scenario, best = calmer, outcome
    return scenario, play(scenario, planted=planted, tracing=True)


def replay_command(seed: int, kept: list[int] | None = None) -> str:
    command = f"make simulate SEED={seed}"
    if kept is not None:
        command += f" LEADS={','.join(map(str, kept))}"
    return command


def report(outcome: Outcome, scenario: Scenario, shrunk: Scenario | None = None) -> str:
    lines = [f"seed {outcome.seed}: {len(outcome.violations)} violation(s)"]
    lines += [f"  ! {v}" for v in outcome.violations[:10]]
    shown = shrunk or scenario
    lines += ["", "scenario" + (" (shrunk)" if shrunk else "") + ":", *shown.describe()]
    if outcome.trace:
        lines += ["", f"schedule ({len(outcome.trace)} steps):", *outcome.trace[-400:]]
    kept = [lead.number for lead in shown.leads] if shrunk else None
    lines += ["", "replay: " + replay_command(outcome.seed, kept)]
    return "\n".join(lines)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    failing = [o for o in outcomes if o.violations]
    return {
        "seeds": len(outcomes),
        "violations": sum(len(o.violations) for o in failing),
        "failing_seeds": [o.seed for o in failing],
        "leads": sum(o.leads for o in outcomes),
        "klaviyo_calls": sum(o.calls for o in outcomes),
        "steps": sum(o.steps for o in outcomes),
    }


def dump(outcomes: list[Outcome]) -> str:
    return json.dumps(summary(outcomes), indent=1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run python -m devtools.simulation")
