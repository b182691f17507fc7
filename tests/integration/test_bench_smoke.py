"""The benchmark's throughput part, small: the facts its figures rest on must hold.

Runs ``python -m bench.run`` on 300 leads (events of 100 records) without the real-time
check, cold start or memory parts, and a one-minute steady run, then reads its JSON.
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
BATCH = 100
ACTIONS = ("subscribe_profile_to_list", "add_profile_to_list")


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--leads",
            str(LEADS),
            "--batch-size",
            str(BATCH),
            "--real-seconds",
            "0",
            "--steady-minutes",
            "1",
            "--skip-cold",
            "--skip-memory",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "THROUGHPUT" in done.stdout
    return json.loads(out.read_text())


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("action", ACTIONS)
def test_every_lead_succeeds_in_both_modes(figures: dict, action: str) -> None:
    for mode in ("per_lead", "coalesced"):
        run = figures["throughput"][action][mode]
        assert run["outcomes"] == {"success": LEADS}, (mode, run["outcomes"])
        assert run["dead_lettered"] == 0


@pytest.mark.parametrize("action", ACTIONS)
def test_coalescing_uses_fewer_calls_and_moves_more_leads(figures: dict, action: str) -> None:
    per = figures["throughput"][action]["per_lead"]
    co = figures["throughput"][action]["coalesced"]
    assert co["calls"] < per["calls"]
    # Per lead costs at least one call per lead; coalesced a few per event.
    assert per["calls"] >= LEADS
    assert co["calls"] <= 3 * math.ceil(LEADS / BATCH) + 2
    assert co["leads_per_minute"] / per["leads_per_minute"] > 1
    assert co["sustained"]["leads_per_minute"] / per["sustained"]["leads_per_minute"] > 1


def test_per_lead_is_held_to_the_steady_limits(figures: dict) -> None:
    subscribe = figures["throughput"]["subscribe_profile_to_list"]["per_lead"]
    add = figures["throughput"]["add_profile_to_list"]["per_lead"]
    assert subscribe["sustained"]["limited_by"] == "bulk_subscribe_profiles"
    assert subscribe["sustained"]["leads_per_minute"] == pytest.approx(750, rel=0.01)
    assert add["sustained"]["limited_by"] == "add_profiles_to_list"
    assert add["sustained"]["leads_per_minute"] == pytest.approx(150, rel=0.01)
    # 300 Add leads at 150/min cannot finish in under one virtual minute.
    assert add["virtual_seconds"] > 60


def test_one_subscribe_job_per_event(figures: dict) -> None:
    co = figures["throughput"]["subscribe_profile_to_list"]["coalesced"]
    assert co["endpoints"]["bulk_subscribe_profiles"]["calls"] == math.ceil(LEADS / BATCH)


def test_no_429_at_90_percent_of_the_steady_limit(figures: dict) -> None:
    evenly = [run for run in figures["steady"] if run["batch_window_seconds"] == 0]
    assert {run["action"] for run in evenly} == set(ACTIONS)
    for run in evenly:
        assert run["throttled"] == 0, run
        assert run["all_succeeded"], run["outcomes"]
        assert run["virtual_minutes"] >= 1.0 - 1e-6
        assert run["leads_per_minute"] == pytest.approx(run["arrival_per_minute"], rel=0.05)
