"""The behaviour probes: they measure the emulator's configured lags, import timing and
rate-limit windows, write conformance.json, and a planted difference (the other reading of a
rule) is reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from devtools import conformance
from devtools import conformance_probes as probes
from devtools.klaviyo_emulator import Fault, KlaviyoEmulator, calibration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from fake_clock import FakeClock

SIZES = ["--import-sizes", "10,100"]


def probe_rows(output: str) -> dict[str, list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("| probe "))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2 :]]
    return {row[0]: row for row in cells}


def run(tmp_path: Path, **behaviour: object) -> tuple[int, str, dict]:
    clock = FakeClock()
    code = conformance.main(
        SIZES, env={"OUT": str(tmp_path)}, clock=clock, sleep=clock.sleep, **behaviour
    )
    return code, "", json.loads((tmp_path / "conformance.json").read_text())


def test_probes_measure_a_non_default_lag_and_import_timing(tmp_path, capsys):
    code, _, data = run(
        tmp_path, search_lag=3, segment_lag=5, import_delay=7, import_rate=20, subscribe_delay=4
    )
    output = capsys.readouterr().out
    assert code == 0, output
    assert all(3 <= lag < 3.5 for lag in data["search_lag_seconds"].values())
    assert 5 <= data["segment_lag_seconds"] < 6
    assert data["import_queue_seconds"] == 7
    assert data["import_profiles_per_second"] == 20
    assert data["import_all_or_nothing"] is True
    assert data["import_matches_external_id"] is False
    windows = data["rate_limit_windows"]
    assert abs(windows["steady_seconds"] - 60) <= 1
    assert windows["burst_seconds"] is None  # no header tells the burst window
    assert windows["remaining_falls_by_one"] is True
    assert windows["reset_counts_down"] is True
    assert windows["limit"] == 750  # get_list's steady limit in the OpenAPI document
    assert data["revision"] == "2026-07-15"
    subscribing = data["subscribe_rules"]
    assert subscribing["apply_seconds"] == 4  # the job's delay (its profile found first)
    assert subscribing["double_opt_in_pending"] is True
    assert subscribing["sms_refused_outside_sending_countries"] is True
    assert "hard bounce" in data["notes"]["subscribe_rules"]
    assert {"p50", "p90", "p99"} <= set(next(iter(data["latency_ms"].values())))
    assert all(row[-1] == "same" for row in probe_rows(output).values())
    # The emulator takes the file back: the same settings.
    assert calibration.load(tmp_path / "conformance.json") == {
        "search_lag": max(data["search_lag_seconds"].values()),
        "segment_lag": data["segment_lag_seconds"],
        "import_delay": 7.0,
        "import_rate": 20.0,
        "import_all_or_nothing": True,
        "import_external_id_match": False,
        "subscribe_delay": 4.0,
    }


@pytest.mark.parametrize(
    ("switch", "key"),
    [
        ({"import_all_or_nothing": False}, "import_all_or_nothing"),
        ({"import_external_id_match": True}, "import_matches_external_id"),
        ({"segment_lag": 8}, "segment_lag_seconds"),
    ],
)
def test_a_planted_difference_is_found_by_its_probe(tmp_path, capsys, switch, key):
    # The "real account" is a second emulator reading the rule the other way.
    code, data = planted(tmp_path, **switch)
    output = capsys.readouterr().out
    assert code == 1
    marked = [name for name, row in probe_rows(output).items() if row[-1] == "DIFFERS"]
    assert marked == [key]
    assert data[key] != KlaviyoEmulator().config.to_json()[next(iter(switch))]


@pytest.mark.parametrize(
    ("switch", "rule", "measured"),
    [
        ({"subscribe_delay": 20}, "apply_seconds", 20),
        ({"sms_countries": ["US", "GB"]}, "sms_refused_outside_sending_countries", False),
    ],
)
def test_an_account_that_subscribes_otherwise_is_found(tmp_path, capsys, switch, rule, measured):
    code, data = planted(tmp_path, **switch)
    output = capsys.readouterr().out
    assert code == 1
    marked = [name for name, row in probe_rows(output).items() if row[-1] == "DIFFERS"]
    assert marked == ["subscribe_rules"]
    found = data["subscribe_rules"][rule]
    assert found == measured if isinstance(measured, bool) else measured <= found < measured + 5


def planted(tmp_path: Path, fault: Fault | None = None, **settings: object) -> tuple[int, dict]:
    """A run against a stand-in account (a second emulator), with ``fault`` planted there."""
    clock = FakeClock()
    with conformance.ScratchAccount(clock=clock, **settings) as other:
        if fault is not None:
            other.faults.add(fault)
        env = other.live_env(CONFIRM="1", OUT=str(tmp_path))
        code = conformance.main(SIZES, env=env, clock=clock, sleep=clock.sleep)
    return code, json.loads((tmp_path / "conformance.json").read_text())


def test_a_reset_that_does_not_count_down_is_no_60_s_window(tmp_path, capsys):
    # Every list read says 30 s are left: no window that counts down and turns over.
    stuck = Fault(operation_id="get_list", headers={"RateLimit-Reset": "30"}, times=None)
    code, data = planted(tmp_path, stuck)
    output = capsys.readouterr().out
    assert code == 1
    marked = [name for name, row in probe_rows(output).items() if row[-1] == "DIFFERS"]
    assert marked == ["rate_limit_windows"]
    windows = data["rate_limit_windows"]
    assert windows["reset_counts_down"] is False
    assert windows["steady_seconds"] is None and data["notes"]["rate_limit_windows"]


def test_a_segment_that_does_not_follow_the_list_is_reported(tmp_path, capsys):
    # A stand-in whose segment never shows the list's members: no lag to measure.
    never = Fault(operation_id="get_profiles_for_segment", body=b'{"data": []}', times=None)
    code, data = planted(tmp_path, never)
    output = capsys.readouterr().out
    assert code == 1
    assert probe_rows(output)["segment_lag_seconds"][-1] == "DIFFERS"
    assert data["segment_lag_seconds"] is None
    assert "member of the scratch list" in data["notes"]["segment_lag_seconds"]


def test_with_a_key_it_only_says_what_it_would_do_without_confirm(tmp_path, capsys):
    with KlaviyoEmulator() as other:
        env = {
            "KLAVIYO_API_KEY": "pk_test_emulator",
            "KLAVIYO_LIST_ID": other.create_list("Scratch"),
            "KLAVIYO_SEGMENT_ID": other.create_segment("Scratch"),
            "KLAVIYO_BASE_URL": other.base_url,
            "OUT": str(tmp_path),
        }
        assert conformance.main([], env=env) == 0
        assert other.requests == []
    assert "CONFIRM=1" in capsys.readouterr().out
    assert not (tmp_path / "conformance.json").exists()


def test_the_window_probe_reads_in_one_window_when_the_current_one_is_ending():
    clock = FakeClock()
    target, emulator = conformance.emulator_target(sleep=clock.sleep, clock=clock)
    try:
        target.send("GET", f"/api/lists/{target.list_id}")  # opens get_list's window
        clock.advance(57)  # 3 s left: the probe's reads would straddle two windows
        windows, _ = probes.rate_limit_windows(target, clock)
    finally:
        emulator.stop()
    assert windows["remaining_falls_by_one"] is True
    assert windows["reset_counts_down"] is True
    assert abs(windows["steady_seconds"] - 60) <= 1
