"""What reading consent back costs: Klaviyo calls per 1,000 subscribes, with and without it.

    python -m bench.consent_readback [--leads 1000] [--json out.json]

A subscribe's result is what the profiles show after the job
(``klaviyo_leads.actions.subscribe.consent``):
one ``any()`` search of up to 100 profiles per look, looks at once and then 1, 1, 2, 3 ... s
apart until each lead's consent shows. The same leads run twice in one process, on fresh
accounts, through the function's handler on a virtual clock: with the read-back, and with
it switched off (every accepted job taken as applied: the product before it). The difference
is the read-back's cost, per operation. Cases: a queued batch of 1,000 (the stack's
BulkBatchSize), batches of 10, and one lead at a time (a webhook's lot), each with Klaviyo
applying a job at once and 5 s after taking it (an assumption: ``make conformance`` measures
an account's ``apply_seconds``). The leads: new addresses on a single opt-in list (a double
opt-in list settles at the first look: pending), one in ten with SMS too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from bench.harness import SUBSCRIBE, Bench, call_counts, drain, new_emulator
from bench.virtual_clock import VirtualClock
from devtools.lambda_events import sqs_message
from klaviyo_leads import outcomes
from klaviyo_leads.actions.subscribe import consent

CASES = (  # (name, mode, messages per invocation)
    ("queued batch of 1,000", "coalesced", 1000),
    ("batches of 10", "coalesced", 10),
    ("one lead at a time", "per_lead", 1),
)
APPLY_DELAYS = (0.0, 5.0)
READS = "get_profiles"


@contextlib.contextmanager
def without_read_back() -> Iterator[None]:
    """Every job Klaviyo took counted as applied, nothing read: the product before."""
    original = consent.confirm

    def taken_as_applied(ctx: Any, accepted: dict[int, Any], results: list[Any]) -> None:
        for index, taken in accepted.items():
            states = dict.fromkeys(taken.subscription.channels, "subscribed")
            results[index] = results[index] or outcomes.success(consent=states)

    consent.confirm = taken_as_applied  # type: ignore[assignment]
    try:
        yield
    finally:
        consent.confirm = original  # type: ignore[assignment]


def messages(list_id: str, leads: int) -> list[dict[str, Any]]:
    out = []
    for index in range(leads):
        lead: dict[str, Any] = {"email": f"rb{index:05d}@example.com", "klaviyo.list_id": list_id}
        if index % 10 == 9:
            lead |= {"phone_1": f"+1512555{index % 10000:04d}", "klaviyo.channels": "email,sms"}
        out.append(sqs_message(json.dumps(lead), message_id=f"rb-{index:07d}"))
    return out


def one_run(mode: str, batch_size: int, leads: int, apply_delay: float) -> dict[str, Any]:
    clock = VirtualClock()
    emulator, account = new_emulator(0, clock.now, clock.sleep, latency=None)
    try:
        emulator.configure(subscribe_delay=apply_delay)
        list_id = emulator.create_list("Read-back", opt_in="single")
        bench = Bench(SUBSCRIBE, mode, emulator, account, clock.now, clock.sleep)
        started = clock.now()
        with bench.active():
            drained = drain(bench, messages(list_id, leads), batch_size)
        counts = call_counts(emulator)
    finally:
        emulator.stop()
    return {
        "calls": sum(c["calls"] for c in counts.values()),
        "by_operation": {op: c["calls"] for op, c in sorted(counts.items())},
        "throttled": sum(c["throttled"] for c in counts.values()),
        "outcomes": dict(bench.results.outcomes()),
        "handed_back": drained.handed_back,
        "virtual_seconds": round(clock.now() - started, 1),
    }


def measure(leads: int) -> list[dict[str, Any]]:
    rows = []
    for name, mode, batch_size in CASES:
        for delay in APPLY_DELAYS:
            with_reads = one_run(mode, batch_size, leads, delay)
            with without_read_back():
                without = one_run(mode, batch_size, leads, delay)
            extra = with_reads["calls"] - without["calls"]
            rows.append(
                {
                    "case": name,
                    "apply_delay_seconds": delay,
                    "leads": leads,
                    "calls_with_read_back": with_reads["calls"],
                    "calls_without": without["calls"],
                    "extra_calls_per_1000": round(extra * 1000 / leads, 1),
                    "reads_per_1000": round(
                        with_reads["by_operation"].get(READS, 0) * 1000 / leads, 1
                    ),
                    "ratio": round(with_reads["calls"] / without["calls"], 2),
                    "with": with_reads,
                    "without": without,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | Klaviyo applies | calls without read-back | with | extra per 1,000 | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['apply_delay_seconds']:g} s after the 202 | "
            f"{row['calls_without']} | {row['calls_with_read_back']} | "
            f"{row['extra_calls_per_1000']:g} | {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consent_readback", description=__doc__)
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    rows = measure(args.leads)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
