"""Klaviyo calls and leads per minute, one lead at a time vs coalesced, at Klaviyo's limits.

- ``virtual_run``: N leads of an action's mix through the SQS handler in events, every wait
  (rate limits, Klaviyo's latency, import jobs) on a virtual clock, so an hour of waiting
  takes seconds. Calls per operation, 429s, outcomes, the leads per minute one container
  reached, and what a queue can sustain (``drain``).
- ``crosscheck``: the same N leads once on the real clock and once on a virtual one: the
  virtual clock must tell the time the real one does.
- ``steady_run``: leads arriving at a fixed rate (90 % of the steady limit) for some virtual
  minutes, one lead per invocation, counting 429s.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.harness import ADD, Bench, call_counts, new_emulator, steady_limit
from bench.harness import drain as deliver
from bench.virtual_clock import VirtualClock

# The template's MaximumConcurrency default: invocations one queue may drive at once.
DEFAULT_CONCURRENCY = 2
DRAIN_LEADS = 100_000
# Existing profiles in the account: enough that leads rarely meet the same person twice.
MAX_ACCOUNT_PROFILES = 2_000


def _calls_summary(counts: dict[str, dict[str, int]], leads: int) -> dict[str, Any]:
    total = sum(c["calls"] for c in counts.values())
    throttled = sum(c["throttled"] for c in counts.values())
    per_endpoint = {
        op: {
            "calls": c["calls"],
            "throttled": c["throttled"],
            "calls_per_1000_leads": 1000.0 * c["calls"] / leads,
            "accepted_per_1000_leads": 1000.0 * (c["calls"] - c["throttled"]) / leads,
        }
        for op, c in sorted(counts.items())
    }
    return {
        "calls": total,
        "throttled": throttled,
        "calls_per_1000_leads": 1000.0 * total / leads,
        "endpoints": per_endpoint,
    }


def sustained_leads_per_minute(endpoints: dict[str, Any], leads: int) -> dict[str, Any]:
    """min over endpoints of steady limit / accepted calls per lead (429s use no quota)."""
    bounds = {}
    for op, entry in endpoints.items():
        accepted = entry["calls"] - entry["throttled"]
        if accepted:
            bounds[op] = steady_limit(op) / (accepted / leads)
    if not bounds:
        return {"leads_per_minute": math.inf, "limited_by": None, "bounds": {}}
    limiting = min(bounds, key=bounds.__getitem__)
    return {"leads_per_minute": bounds[limiting], "limited_by": limiting, "bounds": bounds}


def drain(run: dict[str, Any], concurrency: int | None) -> dict[str, Any]:
    """Time to drain ``DRAIN_LEADS`` queued leads with ``concurrency`` invocations at once.

    Rate = min(the account's bound: steady limit / calls per lead on the binding endpoint,
    ``concurrency`` x what one container moved in this run). None: as many containers as
    it takes, so the rate limit alone decides.
    """
    bound = run["sustained"]["leads_per_minute"]
    one = run["leads_per_minute"]
    rate = bound if concurrency is None else min(bound, concurrency * one)
    by = run["sustained"]["limited_by"] if rate == bound else "latency"
    return {
        "concurrency": concurrency,
        "leads_per_minute": rate,
        "limited_by": by,
        "hours": DRAIN_LEADS / rate / 60.0,
        # An action that made no call in the run (every lead refused) has no bound to reach.
        "containers_to_reach_bound": math.ceil(bound / one)
        if one and math.isfinite(bound)
        else None,
    }


def _run(
    action: str,
    mode: str,
    leads: int,
    batch_size: int,
    clock: Any,
    sleep: Any,
) -> tuple[Bench, Any, dict[str, dict[str, int]], float, float, int]:
    emulator, account = new_emulator(min(leads, MAX_ACCOUNT_PROFILES), clock, sleep)
    try:
        bench = Bench(action, mode, emulator, account, clock, sleep)
        messages = [bench.message(i) for i in range(leads)]
        with bench.active() as sink:
            wall_started = time.perf_counter()
            started = clock()
            stats = deliver(bench, messages, batch_size)
            elapsed = clock() - started
            wall = time.perf_counter() - wall_started
        counts = call_counts(emulator)
    finally:
        emulator.stop()
    return bench, stats, counts, elapsed, wall, sink.chars


def virtual_run(action: str, mode: str, leads: int, batch_size: int) -> dict[str, Any]:
    """``leads`` leads in events of ``batch_size`` until each is done, on a virtual clock."""
    clock = VirtualClock()
    bench, stats, counts, virtual_seconds, wall, log_chars = _run(
        action,
        mode,
        leads,
        batch_size,
        clock.now,
        clock.sleep,
    )
    outcomes = bench.results.outcomes()
    calls = _calls_summary(counts, leads)
    sustained = sustained_leads_per_minute(calls["endpoints"], leads)
    run = {
        "action": action,
        "mode": mode,
        "leads": leads,
        "batch_size": batch_size,
        "invocations": stats.invocations,
        "handed_back": stats.handed_back,
        "handed_back_after_starting": dict(bench.runtime.retryable),
        "dead_lettered": stats.dead_lettered,
        "outcomes": dict(outcomes),
        "successes": outcomes.get("success", 0),
        **calls,
        "clock": "virtual",
        "virtual_seconds": virtual_seconds,
        "virtual_seconds_per_invocation": virtual_seconds / max(1, stats.invocations),
        "virtual_seconds_slept": clock.slept,
        "wall_seconds": wall,
        "leads_per_minute": leads / (virtual_seconds / 60.0),
        "sustained": sustained,
        "cpu_seconds": stats.cpu_seconds,
        "cpu_ms_per_lead": 1000.0 * stats.cpu_seconds / leads,
        "log_bytes_per_lead": log_chars / leads,
    }
    run["drain"] = {
        "default_concurrency": drain(run, DEFAULT_CONCURRENCY),
        "unbounded": drain(run, None),
    }
    return run


def crosscheck(action: str, mode: str, leads: int, batch_size: int) -> dict[str, Any]:
    """The same leads on the real clock, then on a virtual one: elapsed seconds of each."""
    real_bench, _, real_counts, real_seconds, _, _ = _run(
        action, mode, leads, batch_size, time.time, time.sleep
    )
    clock = VirtualClock()
    virtual_bench, _, virtual_counts, virtual_seconds, wall, _ = _run(
        action, mode, leads, batch_size, clock.now, clock.sleep
    )
    return {
        "action": action,
        "mode": mode,
        "leads": leads,
        "batch_size": batch_size,
        "real_seconds": real_seconds,
        "virtual_seconds": virtual_seconds,
        "virtual_wall_seconds": wall,
        "ratio": virtual_seconds / real_seconds,
        "real_calls": sum(c["calls"] for c in real_counts.values()),
        "virtual_calls": sum(c["calls"] for c in virtual_counts.values()),
        "real_outcomes": dict(real_bench.results.outcomes()),
        "virtual_outcomes": dict(virtual_bench.results.outcomes()),
    }


def steady_run(action: str, fraction: float, minutes: float, batch_window: float = 0.0):
    """Leads arriving evenly at ``fraction`` of the action's steady limit, one by one.

    With ``batch_window`` 0 each lead is its own invocation as soon as it arrives; otherwise
    the leads that arrived within each window are delivered together (SQS batching window),
    and the per-lead handler sends them back to back. Klaviyo answers at once here (no
    latency model): the run is about the pacer meeting the limit, not about latency.
    """
    limiting = "add_profiles_to_list" if action == ADD else "bulk_subscribe_profiles"
    rate = fraction * steady_limit(limiting)
    leads = math.ceil(rate * minutes) + 1  # the last one arrives after ``minutes``
    interval = 60.0 / rate
    clock = VirtualClock()
    emulator, account = new_emulator(
        min(leads, MAX_ACCOUNT_PROFILES), clock.now, clock.sleep, latency=None
    )
    lags = []
    try:
        bench = Bench(action, "per_lead", emulator, account, clock.now, clock.sleep)
        with bench.active():
            started = clock.now()
            index = 0
            while index < leads:
                arrival = started + index * interval
                clock.wait_until(arrival + batch_window)
                batch = []
                while index < leads and started + index * interval <= clock.now():
                    batch.append(bench.message(index))
                    index += 1
                handed_back, _ = bench.invoke(batch, bench.context())
                if handed_back:
                    raise RuntimeError("the steady run handed records back")
                lags.append(clock.now() - arrival)
            elapsed = clock.now() - started
        counts = call_counts(emulator)
    finally:
        emulator.stop()
    outcomes = bench.results.outcomes()
    return {
        "action": action,
        "mode": "per_lead",
        "fraction_of_limit": fraction,
        "limiting_endpoint": limiting,
        "arrival_per_minute": rate,
        "batch_window_seconds": batch_window,
        "leads": leads,
        "virtual_minutes": elapsed / 60.0,
        "leads_per_minute": leads / (elapsed / 60.0),
        "outcomes": dict(outcomes),
        "throttled": sum(c["throttled"] for c in counts.values()),
        "throttled_by_endpoint": {op: c["throttled"] for op, c in counts.items()},
        "max_lag_seconds": max(lags) if lags else 0.0,
    }
