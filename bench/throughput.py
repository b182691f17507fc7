"""Leads per minute under Klaviyo's rate limits: per lead vs coalesced, on a virtual clock.

Three measurements:

- ``virtual_run``: N leads through the SQS handler in batches, every wait on a virtual
  clock, so an hour of rate-limit waiting takes seconds. Calls per endpoint, 429s, the
  leads per minute reached (N / virtual minutes) and the sustained figure computed from
  calls per lead and each endpoint's steady limit.
- ``window_run``: the handler kept busy for a fixed number of seconds, once on the real
  clock and once on a virtual one, to show the virtual clock tells the truth.
- ``steady_run``: leads arriving at a fixed rate (90 % of the steady limit) for some virtual
  minutes, one lead per invocation, counting 429s.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.emulator_index import indexed_email_search
from bench.harness import (
    ADD,
    MIN_SECONDS_LEFT,
    Bench,
    call_counts,
    drain,
    new_emulator,
    seed_profiles,
    steady_limit,
)
from bench.virtual_clock import VirtualClock
from devtools.lambda_events import sqs_message


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


def virtual_run(action: str, mode: str, leads: int, batch_size: int) -> dict[str, Any]:
    """``leads`` leads in events of ``batch_size`` until each is done, on a virtual clock."""
    clock = VirtualClock()
    emulator, list_id = new_emulator(clock.now)
    try:
        with indexed_email_search():
            if action == ADD:
                seed_profiles(emulator, leads)
            bench = Bench(action, mode, emulator, list_id, clock.now, clock.sleep)
            messages = [bench.message(i) for i in range(leads)]
            with bench.active() as sink:
                wall_started = time.perf_counter()
                started = clock.now()
                stats = drain(bench, messages, batch_size)
                virtual_seconds = clock.now() - started
                wall_seconds = time.perf_counter() - wall_started
            counts = call_counts(emulator)
    finally:
        emulator.stop()
    outcomes = bench.results.outcomes()
    calls = _calls_summary(counts, leads)
    sustained = sustained_leads_per_minute(calls["endpoints"], leads)
    return {
        "action": action,
        "mode": mode,
        "leads": leads,
        "batch_size": batch_size,
        "invocations": stats.invocations,
        "handed_back": stats.handed_back,
        "handed_back_after_starting": dict(bench.runtime.retryable),
        "dead_lettered": stats.dead_lettered,
        "outcomes": dict(outcomes),
        "all_succeeded": outcomes.get("success", 0) == leads,
        **calls,
        "virtual_seconds": virtual_seconds,
        "virtual_seconds_slept": clock.slept,
        "wall_seconds": wall_seconds,
        "leads_per_minute": leads / (virtual_seconds / 60.0),
        "sustained": sustained,
        "cpu_seconds": stats.cpu_seconds,
        "cpu_ms_per_lead": 1000.0 * stats.cpu_seconds / leads,
        "log_bytes_per_lead": sink.chars / leads,
    }


def window_run(
    action: str, mode: str, seconds: float, batch_size: int, pool: int, *, virtual: bool
) -> dict[str, Any]:
    """Leads answered per minute when the handler runs for ``seconds``, real or virtual.

    The same loop on both clocks: full SQS events back to back until the time is up. Each
    invocation's context says the time left until the end (plus the handler's minimum per
    record), so the handler itself stops starting records at the deadline and hands the
    rest back, as it would in Lambda. Add to List leads cycle over ``pool`` seeded
    profiles; Subscribe leads are new people (re-subscribing is slow in the emulator).
    """
    vc = VirtualClock() if virtual else None
    clock = vc.now if vc else time.monotonic
    sleep = vc.sleep if vc else time.sleep
    emulator, list_id = new_emulator(clock)
    try:
        with indexed_email_search():
            if action == ADD:
                seed_profiles(emulator, pool)
            bench = Bench(action, mode, emulator, list_id, clock, sleep)
            sent = 0
            with bench.active():
                started = clock()
                deadline = started + seconds
                while clock() < deadline:
                    messages = [
                        _renamed(bench.message((n % pool) if action == ADD else n), n)
                        for n in range(sent, sent + batch_size)
                    ]
                    sent += batch_size
                    bench.invoke(messages, bench.context(deadline - clock() + MIN_SECONDS_LEFT))
                elapsed = clock() - started
            counts = call_counts(emulator)
    finally:
        emulator.stop()
    done = bench.results.successes()
    return {
        "action": action,
        "mode": mode,
        "clock": "virtual" if virtual else "real",
        "seconds": elapsed,
        "leads_succeeded": done,
        "outcomes": dict(bench.results.outcomes()),
        "throttled": sum(c["throttled"] for c in counts.values()),
        "leads_per_minute": done / (elapsed / 60.0),
    }


def _renamed(message: dict[str, Any], number: int) -> dict[str, Any]:
    """The same lead as a new message (a lead platform sending the same person again)."""
    return sqs_message(message["Body"], message_id=f"msg-{number:08d}")


def steady_run(action: str, fraction: float, minutes: float, batch_window: float = 0.0):
    """Leads arriving evenly at ``fraction`` of the action's steady limit, one by one.

    With ``batch_window`` 0 each lead is its own invocation as soon as it arrives; otherwise
    the leads that arrived within each window are delivered together (SQS batching window),
    and the per-lead handler sends them back to back.
    """
    limiting = "add_profiles_to_list" if action == ADD else "bulk_subscribe_profiles"
    rate = fraction * steady_limit(limiting)
    leads = math.ceil(rate * minutes) + 1  # the last one arrives after ``minutes``
    interval = 60.0 / rate
    clock = VirtualClock()
    emulator, list_id = new_emulator(clock.now)
    lags = []
    try:
        with indexed_email_search():
            if action == ADD:
                seed_profiles(emulator, leads)
            bench = Bench(action, "per_lead", emulator, list_id, clock.now, clock.sleep)
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
        "all_succeeded": outcomes.get("success", 0) == leads,
        "throttled": sum(c["throttled"] for c in counts.values()),
        "throttled_by_endpoint": {op: c["throttled"] for op, c in counts.items()},
        "max_lag_seconds": max(lags) if lags else 0.0,
    }
