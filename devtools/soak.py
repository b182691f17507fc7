"""Soak: thousands of leads through moto's SQS with Klaviyo failing at random, then the books.

    python -m devtools.soak [--leads 5000] [--fault-rate 0.06] [--seed 7]

Create Profile leads (most new, some with an invalid email, some that really are duplicates,
some known only by an external id) go on the action's queue of the stack deployed in moto's
server (template.yaml, with a short visibility timeout and few deliveries so that a run takes
minutes; moto does not hold parameters to their template minimums). A poller does
what Lambda's event source mapping does: receive batches, call the handler, delete what it
finished, and leave what it handed back to become visible again, until the queue's
``maxReceiveCount`` moves a message to the dead-letter queue. Meanwhile the emulator answers
a share of Klaviyo calls with 429s, 5xx, dropped connections (before and after doing the
work) and slow answers.

At the end every lead must be accounted for: a published result or the dead-letter queue.
Lost leads and duplicate profiles must both be 0; the script exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
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
from devtools.klaviyo_emulator import Fault, KlaviyoEmulator
from devtools.lambda_events import LambdaContext, ensure_layer_on_path, load_handler, sqs_event

ACTION = "create_profile"
API_KEY = "pk_soak"


class Outage:
    """Klaviyo refusing everything for a while, a third of the way in (429s whose Retry-After
    outlasts every lead's budget): the records caught in it are handed back at once, again
    and again, until the queue's maxReceiveCount moves them to the dead-letter queue."""

    def __init__(self, emulator: KlaviyoEmulator, args: argparse.Namespace) -> None:
        self.emulator, self.args = emulator, args
        self.ends: float | None = None
        self.over = args.outage_seconds <= 0

    def tick(self, sent: int, total: int) -> None:
        if self.over:
            return
        if self.ends is None and sent >= total // 3:
            print(f"Klaviyo throttling everything for {self.args.outage_seconds:g} s")
            self.emulator.faults.clear()
            retry_after = int(self.args.outage_seconds) + 5
            self.emulator.faults.add(Fault(status=429, retry_after=retry_after, times=None))
            self.ends = time.monotonic() + self.args.outage_seconds
        elif self.ends is not None and time.monotonic() >= self.ends:
            self.emulator.faults.clear()
            inject_faults(self.emulator, self.args.fault_rate)
            self.over = True


@dataclass
class Books:
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> lead
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> result
    dead_lettered: set[str] = field(default_factory=set)
    deliveries: int = 0
    invocations: int = 0
    klaviyo_calls: int = 0
    faults: int = 0


def make_leads(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Mostly new leads; ~3 % invalid emails, ~2 % repeats of an earlier lead, ~10 % external id
    only (Klaviyo allows duplicate external ids, so a careless retry would make two profiles)."""
    leads: list[dict[str, Any]] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.03:
            lead = {"email": f"broken-{i}.example.com", "first_name": "Broken"}
        elif roll < 0.05 and leads:
            lead = dict(rng.choice([x for x in leads if "email" in x] or leads))
        elif roll < 0.15:
            lead = {"reference": f"ext-{i}", "first_name": "External"}
        else:
            lead = {"email": f"soak-{i}@example.com", "reference": f"crm-{i}", "city": "Austin"}
        lead["timeout_seconds"] = 5
        leads.append(lead)
    return leads


def inject_faults(emulator: KlaviyoEmulator, rate: float) -> None:
    """Random faults on Klaviyo calls; shares of ``rate`` (each checked in turn)."""
    shares = [
        (0.30, Fault(status=429, retry_after=1)),
        (0.20, Fault(status=503)),
        (0.10, Fault(status=500)),
        (0.15, Fault(drop=True)),
        (0.15, Fault(operation_id="create_profile", drop=True, after=True)),
        (0.10, Fault(latency=1.5)),
    ]
    for share, fault in shares:
        fault.times = None
        fault.probability = rate * share
        emulator.faults.add(fault)


def send(
    sqs: Any, url: str, leads: list[dict[str, Any]], start: int, count: int, books: Books
) -> int:
    """Send up to ``count`` leads from ``start``; the index of the next one to send."""
    end = min(len(leads), start + count)
    for first in range(start, end, 10):
        chunk = leads[first : min(end, first + 10)]
        entries = [{"Id": str(i), "MessageBody": json.dumps(lead)} for i, lead in enumerate(chunk)]
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        for item in answer["Successful"]:
            books.sent[item["MessageId"]] = chunk[int(item["Id"])]
        if answer.get("Failed"):
            raise RuntimeError("moto refused a send")
    return end


def collect_results(sqs: Any, url: str, books: Books) -> None:
    """Read the published results as they come (moto slows down as a queue grows)."""
    for message in drain(url, sqs):
        detail = json.loads(message["Body"])["detail"]
        books.results[detail["message_id"]] = detail["result"]


def drain(queue_url: str, sqs: Any) -> list[dict[str, Any]]:
    messages = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return messages
        messages.extend(got)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def run(args: argparse.Namespace) -> int:
    ensure_layer_on_path()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    rng = random.Random(args.seed)
    started = time.monotonic()
    books = Books()
    with KlaviyoEmulator({API_KEY: None}, seed=args.seed) as emulator, MotoServer() as moto:
        stack = deploy_local_stack(
            API_KEY,
            endpoint_url=moto.endpoint_url,
            parameters={
                **local_parameters(klaviyo_base_url=emulator.base_url, log_level="ERROR"),
                "QueueVisibilityTimeoutSeconds": str(args.visibility),
                "MaxReceiveCount": str(args.max_receive_count),
            },
        )
        results_queue = add_results_queue(stack)
        for name in CONFLICTING_ENV:
            os.environ.pop(name, None)
        os.environ.update(lambda_environment(stack))
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        handler = load_handler(ACTION)  # the layer reads its environment from here on
        sqs = client("sqs", moto.endpoint_url)
        queue = stack.actions[ACTION].queue

        leads = make_leads(args.leads, rng)
        print(f"{len(leads)} leads; Klaviyo faults on ~{args.fault_rate:.0%} of calls")

        inject_faults(emulator, args.fault_rate)
        deadline = started + args.max_minutes * 60
        next_lead = 0
        outage = Outage(emulator, args)
        while time.monotonic() < deadline:
            outage.tick(next_lead, len(leads))
            # Leads arrive as a stream, a few hundred ahead of the poller, as they would
            # from a lead platform (and moto's receive slows down with the queue's length).
            if next_lead < len(leads) and queue_depth(sqs, queue.url) < args.ahead:
                next_lead = send(sqs, queue.url, leads, next_lead, args.ahead, books)
                continue
            messages = []
            while len(messages) < args.batch_size:
                got = sqs.receive_message(
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=min(10, args.batch_size - len(messages)),
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if not got:
                    break
                messages.extend(got)
            if not messages:
                if next_lead >= len(leads) and queue_depth(sqs, queue.url) == 0:
                    break
                time.sleep(0.2)  # the rest is invisible until its visibility timeout ends
                continue
            books.deliveries += len(messages)
            books.invocations += 1
            response = handler(sqs_event(messages, queue.arn), LambdaContext.for_action(ACTION))
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                sqs.delete_message_batch(
                    QueueUrl=queue.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(done[start : start + 10])
                    ],
                )
            if books.invocations % 20 == 0:
                collect_results(sqs, results_queue.url, books)
        emulator.faults.clear()

        collect_results(sqs, results_queue.url, books)
        for message in drain(stack.actions[ACTION].dead_letter_queue.url, sqs):
            books.dead_lettered.add(message["MessageId"])
        remaining = queue_depth(sqs, queue.url)
        books.klaviyo_calls = len(emulator.requests)
        books.faults = sum(1 for r in emulator.requests if r.fault is not None)
        duplicates = duplicate_profiles(emulator)
        false_duplicates = false_duplicate_failures(books)

    return report(books, remaining, duplicates, false_duplicates, time.monotonic() - started)


def duplicate_profiles(emulator: KlaviyoEmulator) -> int:
    """Extra profiles for one lead: the same external id (or email) on several profiles."""
    seen: Counter[str] = Counter()
    for profile in emulator.profiles():
        attributes = profile["attributes"]
        key = attributes.get("email") or attributes.get("external_id")
        if key:
            seen[key] += 1
    return sum(count - 1 for count in seen.values() if count > 1)


def false_duplicate_failures(books: Books) -> int:
    """Leads reported as duplicates although no other lead had their email."""
    emails = Counter(lead.get("email") for lead in books.sent.values() if lead.get("email"))
    count = 0
    for message_id, result in books.results.items():
        lead = books.sent.get(message_id, {})
        reported_duplicate = "already exists" in (result.get("reason") or "")
        if reported_duplicate and lead.get("email") and emails[lead["email"]] == 1:
            count += 1
    return count


def report(
    books: Books, remaining: int, duplicates: int, false_duplicates: int, seconds: float
) -> int:
    finished = set(books.results)
    lost = set(books.sent) - finished - books.dead_lettered
    outcomes = Counter(r["outcome"] for r in books.results.values())
    reasons = Counter(
        (r["outcome"], r["reason"]) for r in books.results.values() if r["outcome"] != "success"
    )
    print(
        f"\nSoak finished in {seconds:.0f} s: {books.invocations} invocations, "
        f"{books.deliveries} deliveries for {len(books.sent)} leads; "
        f"{books.klaviyo_calls} Klaviyo calls, {books.faults} of them faulted "
        f"({books.faults / max(1, books.klaviyo_calls):.1%})"
    )
    rows = [
        ("leads sent", len(books.sent)),
        ("succeeded", outcomes["success"]),
        ("failed (final)", outcomes["failure"]),
        ("errored (final, not retryable)", outcomes["error"]),
        ("in the dead-letter queue", len(books.dead_lettered)),
        ("still queued at the time limit", remaining),
        ("lost", len(lost)),
        ("duplicate profiles created", duplicates),
        ("own creates reported as duplicates", false_duplicates),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>6}")
    if reasons:
        print("\n  reasons:")
        for (outcome, reason), count in reasons.most_common():
            print(f"    {count:>5}  {outcome:<8} {reason}")
    ok = not lost and not duplicates and not false_duplicates and not remaining
    print("\nOK: every lead accounted for." if ok else "\nFAILED: see the figures above.")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--fault-rate", type=float, default=0.06)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--visibility", type=int, default=2, help="queue visibility timeout, s")
    parser.add_argument("--ahead", type=int, default=200, help="leads queued ahead of the poller")
    parser.add_argument("--outage-seconds", type=float, default=20.0)
    parser.add_argument("--max-receive-count", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
