"""Soak: ten thousand leads through four consumer processes while Klaviyo misbehaves.

    python -m devtools.soak [--leads 10000] [--consumers 4] [--fault-rate 0.06] [--json F]

The stack is deployed in moto's server (template.yaml as it is, with its own queue, dead-letter
queue, idempotency table and results bus; the queue's visibility timeout 120 s and
``MaxReceiveCount`` 5). Klaviyo is the emulator: rate limits per account, its realistic
latency, import jobs that take seconds, a search that lags ``--search-lag`` (5 s) behind a
create.

- Create Profile leads stream onto the action's queue (most new; some invalid, some repeats
  of an earlier lead, some known only by an external id). ``--consumers`` OS processes
  (``devtools.soak_roles consumer``) take them as Lambda containers would, each with its own
  pacer.
- Klaviyo answers ``--fault-rate`` of calls with 429s, 5xx, dropped connections (before and
  after doing the work) and slow answers; a third of the way in, it throttles everything for
  ``--throttle-seconds`` with a ``Retry-After`` longer than a lead's time budget, so records
  are handed back to the queue.
- SQS delivers some messages twice: after they were done, and while another consumer works on
  them.
- A webhook caller (``devtools.soak_roles webhook``) posts more leads to the sync route, with
  and without an ``Idempotency-Key``, loses some first answers and retries.
- The vendor sends some leads twice, as two messages: ``--double-send-share`` of the queued
  leads again 0 to 3.5 s later, ``--span-share`` once queued and once by webhook 0.5 s apart
  (``devtools.soak_roles twins`` posts those).

The books at the end, each of which must be 0 (the exit status says whether they are): leads
lost (neither a result nor a dead letter), duplicate profiles, records that came back later
than they were asked to (``Retry-After`` plus jitter, or the back-off), leads dead-lettered,
webhook leads without a final answer, repeats with a key that were not answered with the first
answer; and, per person the generator made (all of its leads, queued and by webhook), counted
per path: own creates reported as duplicates, repeats reported as created, second profiles and
duplicates naming another profile.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.aws import (
    CONFLICTING_ENV,
    MotoServer,
    add_results_queue,
    client,
    deploy_local_stack,
    lambda_environment,
    local_parameters,
)
from devtools.klaviyo_emulator import Fault, KlaviyoEmulator, calibration
from devtools.lambda_events import ROOT
from devtools.soak_books import (
    PATHS,
    PERSON_TARGETS,
    Books,
    duplicate_profiles,
    late_records,
    lead_sends,
    person,
    person_books,
    span_gaps,
    webhook_books,
)
from devtools.soak_roles import SPAN_ATTRIBUTE

ACTION = "create_profile"
API_KEY = "pk_soak"
VISIBILITY_TIMEOUT = 120  # what a record left to the queue would wait
MAX_RECEIVE_COUNT = 5  # the stack's default
LEAD_TIMEOUT_SECONDS = 20  # each lead's budget: the throttle's Retry-After does not fit in it
IMPORT_DELAY_SECONDS = 2.0
IMPORT_RATE_PER_SECOND = 100.0
SEARCH_LAG_SECONDS = 5.0  # lagging, within the 10 s the stack assumes (KlaviyoSearchSettleSeconds)
# How much later the vendor sends a lead again, as another message (a double send).
DOUBLE_SEND_DELAYS = (0.0, 0.5, 1.0, 2.0, 3.5)


def make_leads(
    count: int, rng: random.Random, prefix: str = "soak", timeout: int = LEAD_TIMEOUT_SECONDS
) -> list[dict[str, Any]]:
    """Mostly new leads; ~3 % invalid emails, ~2 % repeats of an earlier lead, ~10 % external id
    only (Klaviyo allows duplicate external ids, so a careless retry would make two profiles)."""
    leads: list[dict[str, Any]] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.03:
            lead = {"email": f"broken-{prefix}-{i}.example.com", "first_name": "Broken"}
        elif roll < 0.05 and leads:
            lead = dict(rng.choice([x for x in leads if "email" in x] or leads))
        elif roll < 0.15:
            lead = {"reference": f"{prefix}-ext-{i}", "first_name": "External"}
        else:
            lead = {"email": f"{prefix}-{i}@example.com", "reference": f"{prefix}-crm-{i}"}
        lead["timeout_seconds"] = timeout
        leads.append(lead)
    return leads


def inject_faults(emulator: KlaviyoEmulator, rate: float) -> None:
    """Random faults on Klaviyo calls; shares of ``rate`` (each checked in turn)."""
    shares = [
        (0.30, Fault(status=429, retry_after=1)),
        (0.20, Fault(status=503)),
        (0.10, Fault(status=500)),
        (0.15, Fault(drop=True)),
        (0.10, Fault(operation_id="create_profile", drop=True, after=True)),
        (0.05, Fault(operation_id="bulk_import_profiles", drop=True, after=True)),
        (0.10, Fault(latency=1.5)),
    ]
    for share, fault in shares:
        fault.times = None
        fault.probability = rate * share
        emulator.faults.add(fault)


class Throttle:
    """Klaviyo refusing everything for a while, a third of the way in, with a ``Retry-After``
    that outlasts a lead's budget: the records caught in it are handed back to the queue."""

    def __init__(self, emulator: KlaviyoEmulator, args: argparse.Namespace) -> None:
        self.emulator, self.args = emulator, args
        self.started: float | None = None
        self.over = args.throttle_seconds <= 0

    def tick(self, sent: int, total: int) -> None:
        if self.over:
            return
        if self.started is None and sent >= total // 3:
            print(
                f"Klaviyo throttles every call for {self.args.throttle_seconds:g} s "
                f"(Retry-After: {self.args.throttle_retry_after} s)",
                flush=True,
            )
            self.emulator.faults.clear()
            self.emulator.faults.add(
                Fault(status=429, retry_after=self.args.throttle_retry_after, times=None)
            )
            self.started = time.monotonic()
        elif self.started is not None and (
            time.monotonic() >= self.started + self.args.throttle_seconds
        ):
            self.emulator.faults.clear()
            inject_faults(self.emulator, self.args.fault_rate)
            self.over = True


@dataclass
class DoubleSends:
    """Leads the vendor sends twice, as two messages with their own ids (not a redelivery).

    ``again``: queued lead -> seconds after it that the same lead is queued again;
    ``spans``: queued lead -> its webhook twin (``key``: the twin's ``Idempotency-Key`` or
    None; ``webhook_first``), posted ``SPAN_GAP_SECONDS`` before or after the consumer runs
    the queued one."""

    again: dict[int, float] = field(default_factory=dict)
    spans: dict[int, dict[str, Any]] = field(default_factory=dict)


def plan_double_sends(
    leads: list[dict[str, Any]], rng: random.Random, share: float, span_share: float
) -> DoubleSends:
    """``share`` of the leads sent again on the queue, ``span_share`` also by webhook; half of
    them leads known only by an external id (Klaviyo does not keep those unique), half email
    leads."""
    valid = [i for i, lead in enumerate(leads) if person(lead)]
    external = [i for i in valid if (person(leads[i]) or "").startswith("external_id:")]
    emails = [i for i in valid if not (person(leads[i]) or "").startswith("external_id:")]
    again, spans = round(share * len(leads)), round(span_share * len(leads))
    chosen = rng.sample(external, min(len(external), (again + spans) // 2))
    chosen += rng.sample(emails, min(len(emails), again + spans - len(chosen)))
    rng.shuffle(chosen)
    return DoubleSends(
        again={i: rng.choice(DOUBLE_SEND_DELAYS) for i in chosen[spans:]},
        spans={
            i: {
                "key": f"soak-span-key-{i}" if rng.random() < 0.5 else None,
                "webhook_first": rng.random() < 0.5,
            }
            for i in chosen[:spans]
        },
    )


class Sender:
    """Puts the leads on the queue in order, as many as asked; a lead the vendor sends twice
    goes again when its delay is up (at once: right behind the first)."""

    def __init__(
        self, sqs: Any, url: str, leads: list[dict[str, Any]], plan: DoubleSends, books: Books
    ) -> None:
        self.sqs, self.url, self.leads, self.plan, self.books = sqs, url, leads, plan, books
        self.next = 0
        self.due: list[tuple[float, int]] = []  # (when, lead index) of second messages

    @property
    def done(self) -> bool:
        return self.next >= len(self.leads) and not self.due

    def seconds_to_next_due(self) -> float | None:
        return self.due[0][0] - time.monotonic() if self.due else None

    def top_up(self, count: int) -> int:
        """Send up to ``count`` more leads (and the second messages that are due)."""
        end = min(len(self.leads), self.next + count)
        batch: list[int] = []
        now = time.monotonic()
        for index in range(self.next, end):
            batch.append(index)
            delay = self.plan.again.get(index)
            if delay == 0:
                batch.append(-index - 1)  # a second message, right behind the first
            elif delay is not None:
                heapq.heappush(self.due, (now + delay, index))
        self.next = end
        return self._send(batch) + self.flush()

    def flush(self) -> int:
        """Send the second messages whose delay is up."""
        batch: list[int] = []
        while self.due and self.due[0][0] <= time.monotonic():
            batch.append(-heapq.heappop(self.due)[1] - 1)
        return self._send(batch)

    def _send(self, batch: list[int]) -> int:
        """Send leads by index; a negative one, ``-index - 1``, is a lead's second message."""
        for first in range(0, len(batch), 10):
            chunk = batch[first : first + 10]
            entries = []
            for position, code in enumerate(chunk):
                index = code if code >= 0 else -code - 1
                entry: dict[str, Any] = {
                    "Id": str(position),
                    "MessageBody": json.dumps(self.leads[index]),
                }
                twin = self.plan.spans.get(index)
                if twin is not None and code >= 0:
                    entry["MessageAttributes"] = {
                        SPAN_ATTRIBUTE: {"DataType": "String", "StringValue": json.dumps(twin)}
                    }
                entries.append(entry)
            answer = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
            for item in answer["Successful"]:
                code = chunk[int(item["Id"])]
                self.books.sent[item["MessageId"]] = self.leads[code if code >= 0 else -code - 1]
                self.books.double_sent += code < 0
            if answer.get("Failed"):
                raise RuntimeError("moto refused a send")
        return len(batch)


def drain(queue_url: str, sqs: Any) -> list[dict[str, Any]]:
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return messages
        messages.extend(got)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def collect_results(sqs: Any, url: str, books: Books) -> None:
    for message in drain(url, sqs):
        detail = json.loads(message["Body"])["detail"]
        books.results[detail["message_id"]].append(detail["result"])


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def spawn(role: str, config: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.soak_roles", role, json.dumps(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    rng = random.Random(args.seed)
    started = time.monotonic()
    books = Books()
    behaviour: dict[str, Any] = {
        "import_delay": IMPORT_DELAY_SECONDS,
        "import_rate": IMPORT_RATE_PER_SECOND,
        "search_lag": args.search_lag,
    }
    if getattr(args, "calibration", None):  # a real account's measured behaviour
        behaviour |= calibration.load(args.calibration)
    emulator = KlaviyoEmulator(
        {API_KEY: None}, seed=args.seed, rate_limits=True, latency="realistic", **behaviour
    )
    with emulator, MotoServer() as moto, tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = deploy_local_stack(
            API_KEY,
            endpoint_url=moto.endpoint_url,
            parameters={
                **local_parameters(klaviyo_base_url=emulator.base_url, log_level="ERROR"),
                "QueueVisibilityTimeoutSeconds": str(VISIBILITY_TIMEOUT),
                "MaxReceiveCount": str(MAX_RECEIVE_COUNT),
            },
        )
        results_queue = add_results_queue(stack)
        sqs = client("sqs", moto.endpoint_url)
        queue = stack.actions[ACTION].queue
        env = {k: v for k, v in os.environ.items() if k not in CONFLICTING_ENV}
        spans_dir = Path(tmp) / "spans"
        spans_dir.mkdir()
        common = {
            "env": lambda_environment(stack, ACTION),
            "endpoint_url": moto.endpoint_url,
            "stop_file": str(Path(tmp) / "stop"),
            "spans_dir": str(spans_dir),
        }
        leads = make_leads(args.leads, rng, timeout=args.lead_timeout)
        hooks = [
            {"lead": lead, "key": f"soak-key-{i}" if i % 2 == 0 else None}
            for i, lead in enumerate(
                make_leads(args.webhook_leads, rng, prefix="hook", timeout=args.lead_timeout)
            )
        ]
        # Its own generator: the leads above stay what they are for a seed.
        plan = plan_double_sends(
            leads, random.Random(args.seed * 1000 + 1), args.double_send_share, args.span_share
        )
        sender = Sender(sqs, queue.url, leads, plan, books)
        children = [
            spawn(
                "consumer",
                {
                    **common,
                    "queue_url": queue.url,
                    "queue_arn": queue.arn,
                    "batch_size": args.batch_size,
                    "redeliver_share": args.redeliver_share,
                    "concurrent_share": args.concurrent_share,
                    "seed": args.seed * 100 + index,
                    "out": str(Path(tmp) / f"consumer-{index}.json"),
                },
                env,
            )
            for index in range(args.consumers)
        ]
        webhook = spawn(
            "webhook",
            {
                **common,
                "leads": hooks,
                "start": time.time() + 5,
                "per_second": args.webhook_per_second,
                "lose_share": args.lose_share,
                "seed": args.seed,
                "out": str(Path(tmp) / "webhook.json"),
            },
            env,
        )
        twins = spawn(
            "twins",
            {
                **common,
                "lose_share": args.lose_share,
                "seed": args.seed,
                "out": str(Path(tmp) / "twins.json"),
            },
            env,
        )
        print(
            f"{len(leads)} leads on the queue for {args.consumers} consumers, {len(hooks)} by "
            f"webhook; {len(plan.again)} queued twice, {len(plan.spans)} also by webhook; "
            f"Klaviyo faults on ~{args.fault_rate:.0%} of calls, search lags "
            f"{args.search_lag:g} s",
            flush=True,
        )
        inject_faults(emulator, args.fault_rate)
        throttle = Throttle(emulator, args)
        deadline = started + args.max_minutes * 60
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            throttle.tick(sender.next, len(leads))
            depth = queue_depth(sqs, queue.url)
            was_done = sender.done  # nothing sent since the depth was read
            if sender.next < len(leads) and depth < args.ahead:
                sender.top_up(args.ahead - depth)
            sender.flush()
            collect_results(sqs, results_queue.url, books)
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(
                    f"  {time.monotonic() - started:4.0f} s: {sender.next} sent, "
                    f"{len(books.results)} finished, {depth} queued",
                    flush=True,
                )
            done = was_done and depth == 0 and webhook.poll() is not None
            if done and throttle.over:
                break
            due = sender.seconds_to_next_due()
            time.sleep(0.5 if due is None else min(0.5, max(0.05, due)))
        Path(common["stop_file"]).touch()
        for child in [*children, webhook, twins]:
            try:
                child.wait(timeout=600)
            except subprocess.TimeoutExpired:
                child.kill()
        emulator.faults.clear()
        collect_results(sqs, results_queue.url, books)
        for message in drain(stack.actions[ACTION].dead_letter_queue.url, sqs):
            books.dead_lettered.add(message["MessageId"])
        remaining = queue_depth(sqs, queue.url)
        for index in range(args.consumers):
            out = Path(tmp) / f"consumer-{index}.json"
            if out.exists():
                books.consumers.append(json.loads(out.read_text()))
            else:  # it died: its traceback is on stderr
                books.crashed += 1
        webhook_out = Path(tmp) / "webhook.json"
        books.webhook = json.loads(webhook_out.read_text())["calls"] if webhook_out.exists() else []
        twins_out = Path(tmp) / "twins.json"
        books.twins = json.loads(twins_out.read_text())["calls"] if twins_out.exists() else []
        books.crashed += not twins_out.exists()
        requests = emulator.requests
        books.klaviyo_calls = len(requests)
        books.faults = sum(1 for r in requests if r.fault is not None)
        books.throttled = sum(1 for r in requests if r.status == 429)
        books.longest_retry_after = max(
            (int(r.response_headers.get("Retry-After") or 0) for r in requests if r.status == 429),
            default=0,
        )
        profiles = emulator.profiles()
        if args.books:  # everything the figures come from, to look into one that is not 0
            args.books.write_text(
                json.dumps(
                    {
                        "sent": books.sent,
                        "results": books.results,
                        "dead_lettered": sorted(books.dead_lettered),
                        "consumers": books.consumers,
                        "webhook": books.webhook,
                        "twins": books.twins,
                        "profiles": profiles,
                        "klaviyo": [
                            {
                                "method": r.method,
                                "path": r.path,
                                "query": r.query,
                                "status": r.status,
                                "operation": r.operation_id,
                                "fault": repr(r.fault) if r.fault else None,
                                "body": r.body.decode("utf-8", "replace")[:2000],
                                "response": r.response_body.decode("utf-8", "replace")[:2000],
                            }
                            for r in requests
                        ],
                    }
                )
            )
    return figures(books, remaining, profiles, time.monotonic() - started, args)


def figures(
    books: Books,
    remaining: int,
    profiles: list[dict[str, Any]],
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    lost = set(books.sent) - set(books.results) - books.dead_lettered
    outcomes = Counter(r[0]["outcome"] for r in books.results.values())
    changed = sum(1 for r in books.results.values() if len({x["outcome"] for x in r}) > 1)
    people = person_books(lead_sends(books), profiles)
    gaps = span_gaps(books)
    reasons = Counter(
        f"{r[0]['outcome']}: {r[0]['reason']}"
        for r in books.results.values()
        if r[0]["outcome"] != "success"
    )
    deliveries = sum(len(c["receives"]) for c in books.consumers)
    late, hooked = late_records(books), webhook_books(books)
    return {
        "seconds": round(seconds),
        "consumers": args.consumers,
        "leads_queued": len(books.sent),
        "deliveries": deliveries,
        "invocations": sum(c["invocations"] for c in books.consumers),
        "klaviyo_calls": books.klaviyo_calls,
        "klaviyo_faults": books.faults,
        "fault_share": round(books.faults / max(1, books.klaviyo_calls), 4),
        "klaviyo_429s": books.throttled,
        "longest_retry_after": books.longest_retry_after,
        "throttle_seconds": args.throttle_seconds,
        "redelivered_after_done": sum(len(c["redelivered_after_done"]) for c in books.consumers),
        "redelivered_while_running": sum(
            len(c["redelivered_while_running"]) for c in books.consumers
        ),
        "outcomes": dict(outcomes),
        "reasons": dict(reasons.most_common()),
        "published_more_than_once": sum(1 for r in books.results.values() if len(r) > 1),
        "profiles": len(profiles),
        "search_lag_seconds": args.search_lag,
        "queued_twice": books.double_sent,
        "queued_and_by_webhook": len(books.twins),
        "webhook_twin_after_its_queued_lead_seconds": (
            f"{min(gaps):+.2f} to {max(gaps):+.2f}" if gaps else "-"
        ),
        "invalid_leads": people["invalid_leads"],
        "invalid_leads_answered_failure": people["invalid_leads_answered_failure"],
        "paths": people["paths"],
        "person_examples": people["person_examples"],
        **late,
        **hooked,
        "targets": {
            "lost": len(lost),
            "consumers_crashed": books.crashed,
            "duplicate_profiles": duplicate_profiles(profiles),
            **{target: people["paths"]["all"][target] for target in PERSON_TARGETS},
            "profiles_for_no_lead": people["profiles_for_no_lead"],
            "outcome_changed_on_redelivery": changed,
            "dead_lettered": len(books.dead_lettered),
            "still_queued": remaining,
            "received_later_than_asked": late["received_later_than_asked"],
            "visibility_longer_than_asked": late["visibility_longer_than_asked"],
            "webhook_without_final_answer": hooked["webhook_without_final_answer"],
            "keyed_repeats_not_answered_with_the_first_answer": hooked[
                "keyed_repeats_not_answered_with_the_first_answer"
            ],
        },
    }


def report(result: dict[str, Any]) -> bool:
    print(
        f"\nSoak finished in {result['seconds']} s: {result['leads_queued']} queued leads, "
        f"{result['deliveries']} deliveries in {result['invocations']} invocations by "
        f"{result['consumers']} consumers; {result['webhook_leads']} webhook leads in "
        f"{result['webhook_calls']} calls; {result['klaviyo_calls']} Klaviyo calls, "
        f"{result['klaviyo_faults']} faulted ({result['fault_share']:.1%}), "
        f"{result['klaviyo_429s']} answered 429"
    )
    skip = {
        "targets",
        "outcomes",
        "reasons",
        "seconds",
        "late_examples",
        "hand_back_reasons",
        "paths",
        "person_examples",
    }
    rows = [(k, v) for k, v in result.items() if k not in skip]
    rows += [(f"outcome {k}", v) for k, v in result["outcomes"].items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.replace('_', ' '):<{width}}  {value}")
    print("\n  reasons (first result of each queued lead):")
    for reason, count in result["reasons"].items():
        print(f"    {count:>5}  {reason}")
    print("\n  why records were handed back:")
    for reason, count in result["hand_back_reasons"].items():
        print(f"    {count:>5}  {reason}")
    print_paths(result["paths"])
    print("\n  targets (each must be 0):")
    for key, value in result["targets"].items():
        print(f"    {key.replace('_', ' '):<{width}}  {value}")
    for example in result["late_examples"]:
        print("\n  a record that came back late:\n    " + "\n    ".join(example))
    for example in result["person_examples"]:
        print("\n  a person whose books are not right:\n    " + json.dumps(example))
    ok = not any(result["targets"].values())
    print("\nOK: every target met." if ok else "\nFAILED: see the targets above.")
    return ok


def print_paths(paths: dict[str, dict[str, int]]) -> None:
    """The people books per path, the generator's expected counts next to the measured."""
    columns = [*PATHS, "all"]
    labels = {
        "people": "people",
        "leads": "leads (sends)",
        "success": "success: expected / measured",
        "repeats": "repeats: expected / measured",
        "other_answers": "other answers",
        **{t: t.replace("_", " ") for t in PERSON_TARGETS},
    }

    def cell(column: str, row: str) -> str:
        values = paths[column]
        if row in ("success", "repeats"):
            return f"{values[row + '_expected']:,} / {values[row]:,}"
        return f"{values[row]:,}"

    width = max(len(label) for label in labels.values())
    sizes = [max(len(c), *(len(cell(c, r)) for r in labels)) for c in columns]
    print("\n  people (a person's leads on every path; 'across paths': a person on several):")
    print(
        "    " + " " * width + "".join(f"  {c:>{n}}" for c, n in zip(columns, sizes, strict=True))
    )
    for row, label in labels.items():
        cells = "".join(f"  {cell(c, row):>{n}}" for c, n in zip(columns, sizes, strict=True))
        print(f"    {label:<{width}}{cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leads", type=int, default=10_000, help="leads put on the queue")
    parser.add_argument("--consumers", type=int, default=4, help="consumer processes")
    parser.add_argument("--webhook-leads", type=int, default=600)
    parser.add_argument("--webhook-per-second", type=float, default=2.0)
    parser.add_argument("--fault-rate", type=float, default=0.06)
    parser.add_argument("--throttle-seconds", type=float, default=45.0)
    parser.add_argument("--throttle-retry-after", type=int, default=30)
    parser.add_argument(
        "--lead-timeout", type=int, default=LEAD_TIMEOUT_SECONDS, help="each lead's budget, s"
    )
    parser.add_argument("--redeliver-share", type=float, default=0.01)
    parser.add_argument("--concurrent-share", type=float, default=0.01)
    parser.add_argument("--lose-share", type=float, default=0.3, help="webhook answers lost")
    parser.add_argument(
        "--search-lag",
        type=float,
        default=SEARCH_LAG_SECONDS,
        help="seconds before a written profile shows in Klaviyo's search",
    )
    parser.add_argument(
        "--double-send-share",
        type=float,
        default=0.02,
        help="queued leads the vendor queues again, 0 to 3.5 s later, as another message",
    )
    parser.add_argument(
        "--span-share",
        type=float,
        default=0.005,
        help="queued leads the vendor also posts by webhook, 0.5 s apart",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--ahead", type=int, default=400, help="leads queued ahead")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-minutes", type=float, default=40.0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--calibration",
        type=Path,
        help="a conformance.json from `make conformance`: run on that account's measured lags "
        "and import timing and rules",
    )
    parser.add_argument("--books", type=Path, help="write every lead, result and call here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if report(result) else 1


if __name__ == "__main__":
    sys.exit(main())
