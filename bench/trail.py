"""What the lead trail adds to a lead on the webhook path, measured against no trail in one run.

    python -m bench.trail [--requests 400] [--rounds 4] [--json f]

As ``bench.overhead``: API Gateway events of an action's lead mix through the function's real
handler, one at a time, against the emulator in its own process (no latency, no limits); a
request's own time is its wall time less the time inside urllib3 (Klaviyo's). Each round runs
the same requests three times, in turn: without a trail, with the trail keeping hashes only
(the stack's default), with the trail keeping the whole lead. The trail writes its two lines
per lead to a real file descriptor (``/dev/null``), flushed as in Lambda, where they go to the
function's standard output. The figures: each mode's mean of our own time per lead, the
trail's added milliseconds per lead (the target: under 1 ms), and the ratio to no trail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.emulator_process import EmulatorProcess
from bench.harness import build_runtime, quiet_lambda_output
from bench.mixes import Account
from bench.mixes import lead as mixed_lead
from bench.overhead import WARM_UP, TimedPool
from devtools.lambda_events import LambdaContext, api_gateway_event, function_name, load_handler
from klaviyo_leads.actions.table import ACTIONS as ACTION_TABLE
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.trail.records import HASHED, WHOLE_LEAD, Trail

ACTIONS = ("create_profile", "subscribe_profile_to_list", "track_event")
MODES = ("none", HASHED, WHOLE_LEAD)
TARGET_MS = 1.0


def measure_action(
    action: str, requests: int, rounds: int, emulator: EmulatorProcess
) -> dict[str, Any]:
    pool = TimedPool()
    runtime = build_runtime(
        emulator.base_url,
        coalesce=False,
        clock=time.monotonic,
        sleep=lambda seconds: None,
        results=None,
        pool=pool,
    )
    sink = open(os.devnull, "w")  # noqa: SIM115 - held for the run

    def write(line: str) -> None:
        sink.write(line + "\n")
        sink.flush()

    trails = {
        "none": None,
        HASHED: Trail(HASHED, "vendor", write=write),
        WHOLE_LEAD: Trail(WHOLE_LEAD, "vendor", write=write),
    }
    handler = load_handler(action)
    account = Account(**emulator.account)
    route = ACTION_TABLE[action].route
    ours: dict[str, list[float]] = {mode: [] for mode in MODES}
    index = 0
    entrypoint.reset_runtime(runtime)
    try:
        with quiet_lambda_output():
            for round_number in range(rounds):
                for mode in MODES:
                    runtime.trail = trails[mode]
                    for request in range(requests + (WARM_UP if round_number == 0 else 0)):
                        index += 1
                        lead = {**mixed_lead(action, index, account), "vendor": "acme"}
                        body = json.dumps(lead)
                        headers = {"Content-Type": "application/json"}
                        event = api_gateway_event("POST", route, headers, body)
                        context = LambdaContext(function_name=function_name(action))
                        before = pool.seconds
                        started = time.perf_counter()
                        handler(event, context)
                        elapsed = time.perf_counter() - started
                        if round_number == 0 and request < WARM_UP:
                            continue
                        ours[mode].append(elapsed - (pool.seconds - before))
    finally:
        entrypoint.reset_runtime()
        sink.close()
    means = {mode: 1000 * statistics.fmean(values) for mode, values in ours.items()}
    medians = {mode: 1000 * statistics.median(values) for mode, values in ours.items()}
    return {
        "action": action,
        "leads_per_mode": len(ours["none"]),
        "mean_ms": means,
        "median_ms": medians,
        "added_ms": {mode: means[mode] - means["none"] for mode in (HASHED, WHOLE_LEAD)},
        "ratio": {mode: means[mode] / means["none"] for mode in (HASHED, WHOLE_LEAD)},
    }


def measure(requests: int = 400, rounds: int = 4) -> dict[str, Any]:
    emulator = EmulatorProcess(profiles=WARM_UP + 3 * requests * rounds, seed=7, unlimited=True)
    try:
        per_action = {a: measure_action(a, requests, rounds, emulator) for a in ACTIONS}
    finally:
        emulator.stop()
    worst = max(a["added_ms"][m] for a in per_action.values() for m in (HASHED, WHOLE_LEAD))
    return {"actions": per_action, "worst_added_ms": worst, "target_ms": TARGET_MS}


def report(figures: dict[str, Any]) -> str:
    lines = ["The lead trail on the webhook path (our own time per lead, Klaviyo's taken out):"]
    for entry in figures["actions"].values():
        mean, added, ratio = entry["mean_ms"], entry["added_ms"], entry["ratio"]
        lines.append(
            f"  {entry['action']}: no trail {mean['none']:.3f} ms; hashed "
            f"{mean[HASHED]:.3f} ms (+{added[HASHED]:.3f} ms, x{ratio[HASHED]:.3f}); whole lead "
            f"{mean[WHOLE_LEAD]:.3f} ms (+{added[WHOLE_LEAD]:.3f} ms, x{ratio[WHOLE_LEAD]:.3f}); "
            f"{entry['leads_per_mode']} leads a mode"
        )
    verdict = "under" if figures["worst_added_ms"] < figures["target_ms"] else "OVER"
    lines.append(
        f"  worst added: {figures['worst_added_ms']:.3f} ms per lead, {verdict} the "
        f"{figures['target_ms']:g} ms target"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trail", description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = measure(args.requests, args.rounds)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if figures["worst_added_ms"] < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
