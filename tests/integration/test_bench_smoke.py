"""The benchmark, small: the facts its figures rest on must hold.

Runs ``python -m bench.run`` on 300 leads of four actions (coalesced events of 150, per-lead
events of 50) with the batch-size part, a one-minute steady run and a few overhead requests;
no real-time check, cold start, memory or fleet (they take minutes of real time). Then reads
its JSON. The four actions are the ones that stay on the virtual clock and cover each kind:
a list call, a consent job, an import job, and one with no bulk endpoint.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEADS = 300
BATCH = 150  # more than the batch-size part's events of 100
ACTIONS = ("add_profile_to_list", "subscribe_profile_to_list", "update_profile", "delete_profile")
BULK = ACTIONS[:3]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--actions",
            ",".join(ACTIONS),
            "--leads",
            str(LEADS),
            "--batch-size",
            str(BATCH),
            "--per-lead-batch-size",
            "50",
            "--skip-crosscheck",
            "--steady-minutes",
            "1",
            "--overhead-requests",
            "40",
            "--skip-cold",
            "--memory-records",
            "0",
            "--fleet-seconds",
            "0",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "THROUGHPUT" in done.stdout and "OVERHEAD" in done.stdout
    return json.loads(out.read_text())


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("action", ACTIONS)
def test_each_lead_gets_the_same_outcome_in_both_modes(figures: dict, action: str) -> None:
    per = figures["throughput"][action]["per_lead"]
    co = figures["throughput"][action]["coalesced"]
    assert per["outcomes"] == co["outcomes"]
    # The mix: mostly good leads, 2 % that cannot be sent.
    assert sum(per["outcomes"].values()) == LEADS
    assert per["outcomes"]["success"] >= 0.9 * LEADS
    assert per["dead_lettered"] == co["dead_lettered"] == 0


@pytest.mark.parametrize("action", BULK)
def test_coalescing_uses_far_fewer_calls(figures: dict, action: str) -> None:
    per = figures["throughput"][action]["per_lead"]
    co = figures["throughput"][action]["coalesced"]
    assert per["calls"] >= 0.95 * LEADS  # at least a call per lead that can be sent
    assert co["calls"] * 10 < per["calls"]
    assert co["sustained"]["leads_per_minute"] > 5 * per["sustained"]["leads_per_minute"]
    assert co["drain"]["unbounded"]["hours"] < per["drain"]["unbounded"]["hours"]


def test_delete_has_no_bulk_path(figures: dict) -> None:
    per = figures["throughput"]["delete_profile"]["per_lead"]
    co = figures["throughput"]["delete_profile"]["coalesced"]
    assert co["calls"] == per["calls"]
    assert set(co["endpoints"]) == {"request_profile_deletion"}
    # 60 a minute: the leads that can be sent take about five virtual minutes.
    assert per["sustained"]["leads_per_minute"] == pytest.approx(61, rel=0.05)


def test_per_lead_is_held_to_the_steady_limits(figures: dict) -> None:
    subscribe = figures["throughput"]["subscribe_profile_to_list"]["per_lead"]
    add = figures["throughput"]["add_profile_to_list"]["per_lead"]
    assert subscribe["sustained"]["limited_by"] == "bulk_subscribe_profiles"
    assert add["sustained"]["limited_by"] == "add_profiles_to_list"
    assert add["sustained"]["leads_per_minute"] == pytest.approx(150 / 0.95, rel=0.02)
    # 300 Add leads at 150/min cannot finish in under one virtual minute, and Klaviyo's
    # latency shows: a per-lead container is slower than the limit alone would allow.
    assert add["virtual_seconds"] > 60
    assert subscribe["leads_per_minute"] < subscribe["sustained"]["leads_per_minute"]


def test_one_subscribe_job_per_event(figures: dict) -> None:
    co = figures["throughput"]["subscribe_profile_to_list"]["coalesced"]
    assert co["endpoints"]["bulk_subscribe_profiles"]["calls"] == math.ceil(LEADS / BATCH)


def test_import_jobs_take_their_time(figures: dict) -> None:
    co = figures["throughput"]["update_profile"]["coalesced"]
    assert co["endpoints"]["bulk_import_profiles"]["calls"] == math.ceil(LEADS / BATCH)
    # 10 s queued, then 100 profiles a second: every event waits for its job.
    assert co["virtual_seconds_per_invocation"] > 10
    assert co["endpoints"]["get_bulk_import_profiles_job"]["calls"] >= 3


def test_batch_size_part_finds_the_fixed_cost(figures: dict) -> None:
    for action in BULK:
        entry = figures["sweep"][action]
        assert entry["fixed_calls"] >= 0 and entry["calls_per_lead"] > 0
        # fixed + per lead x records gives back the main run's calls per event
        main = figures["throughput"][action]["coalesced"]
        per_event = entry["fixed_calls"] + entry["calls_per_lead"] * BATCH
        assert per_event == pytest.approx(main["calls"] / main["invocations"], rel=0.01)
    # A list call and a consent job reach 50x with events of a few hundred leads. Update
    # never does: a lead whose change is a new phone is a PATCH of its own (2 % of the mix).
    assert figures["sweep"]["add_profile_to_list"]["min_batch_for_50x"] < 1000
    assert figures["sweep"]["subscribe_profile_to_list"]["min_batch_for_50x"] < 1000


def test_no_429_at_90_percent_of_the_steady_limit(figures: dict) -> None:
    runs = figures["steady"]
    assert {run["action"] for run in runs} == {"add_profile_to_list", "subscribe_profile_to_list"}
    for run in runs:
        assert run["throttled"] == 0, run
        assert run["outcomes"].get("success", 0) >= 0.9 * run["leads"]
        assert run["leads_per_minute"] == pytest.approx(run["arrival_per_minute"], rel=0.05)


def test_overhead_is_measured_for_each_action(figures: dict) -> None:
    overhead = figures["overhead"]["actions"]
    assert set(overhead) == set(ACTIONS)
    for entry in overhead.values():
        assert 0 < entry["p50_ms"] < 20  # the target is p99 <= 5 ms; CI machines are noisy
        assert entry["http_mean_ms"] > 0
