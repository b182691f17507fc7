"""``bench/fleet_limits.py``, small: its fixed windows count as documented, and short runs
on the virtual clock give the figures the fleet section of docs/performance.md reads."""

from __future__ import annotations

import pytest

from bench.fleet_limits import START, FixedWindows, Run, line, meets_targets, run


def test_fixed_windows_count_per_window_at_their_phase():
    limits = FixedWindows(phase=30.0, burst=2, steady=3)
    opened = START + 30.0  # a steady window (and a burst second) starts here
    assert limits.call(opened - 0.5, "a")[0] == 200  # the window before
    status, headers = limits.call(opened + 0.1, "a")
    assert status == 200
    assert headers == {"RateLimit-Limit": "3", "RateLimit-Remaining": "2", "RateLimit-Reset": "60"}
    assert limits.call(opened + 0.2, "a")[0] == 200
    status, headers = limits.call(opened + 0.3, "a")  # third call of the burst second
    assert (status, headers) == (429, {"Retry-After": "1"})
    assert limits.call(opened + 1.0, "a")[0] == 200  # a new second; the minute's last call
    status, headers = limits.call(opened + 20.5, "b")
    assert (status, headers) == (429, {"Retry-After": "40"})
    assert [(r["windows"], r["second"]) for r in limits.refusals] == [("burst", 0), ("steady", 20)]
    assert limits.call(opened + 60.0, "b")[0] == 200  # the next window


def test_a_short_run_against_fixed_windows():
    figures = run(Run(containers=4, senders="wait", phase=23.4, latency=0.08, seconds=130))
    assert figures["fleet_calls"] > 1000 and figures["other_calls"] > 600
    assert figures["whole_windows"] == 1
    assert meets_targets(figures), line(figures)
    assert figures["leads_created"] > 0 and "429/1000" not in line(figures)


@pytest.mark.parametrize(
    "spec",
    [
        # A fast Klaviyo and a window with room left near its end (10 s into the run): four
        # containers each spending all of it made 77 calls a second, 14 429s per 1,000.
        Run(containers=4, trigger="webhook", phase=10.0, latency=0.005, seconds=130, seed=2),
        # Sixty-four queue containers, coalescing off: 116 429s per 1,000 calls.
        Run(containers=64, trigger="queue", phase=23.4, latency=0.005, seconds=130),
        # Sixty-four webhook containers at 250 ms sat windows out: 58 % of the room used.
        Run(containers=64, trigger="webhook", phase=0.0, latency=0.25, seconds=130),
    ],
    ids=["4-fast-webhook", "64-fast-queue", "64-webhook-250ms"],
)
def test_the_fleet_meets_the_targets_at_the_sizes_that_broke_them(spec):
    """Senders that wait as told, another integration at 40 % of the minute; fixed windows."""
    figures = run(spec)
    assert meets_targets(figures), line(figures)
    assert figures["busiest_second_account"] <= 75, line(figures)


def test_a_fresh_container_alone_answers_its_first_leads_within_about_a_second():
    """One webhook container not told the fleet's size, an account nobody else calls: its
    second lead waits for the count (a second after its first call), the next ones do not
    wait (before, each of its first leads waited 3.9 s for one 45th of the minute's pace)."""
    figures = run(Run(containers=1, other_per_minute=0, latency=0.05, seconds=20))
    assert figures["other_calls"] == 0 and figures["leads_created"] > 100, line(figures)
    assert figures["first_leads_slowest_seconds"] <= 1.5, line(figures)
