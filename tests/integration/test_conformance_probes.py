"""The behaviour probes: they measure the emulator's configured lags and import timing, write
conformance.json, and a planted difference (the other reading of a rule) is reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from devtools import conformance
from devtools.klaviyo_emulator import KlaviyoEmulator, calibration

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
    code, _, data = run(tmp_path, search_lag=3, import_delay=7, import_rate=20)
    output = capsys.readouterr().out
    assert code == 0, output
    assert all(3 <= lag < 3.5 for lag in data["search_lag_seconds"].values())
    assert data["import_queue_seconds"] == 7
    assert data["import_profiles_per_second"] == 20
    assert data["import_all_or_nothing"] is True
    assert data["import_matches_external_id"] is False
    assert data["segment_lag_seconds"] is None and data["notes"]["segment_lag_seconds"]
    assert data["revision"] == "2026-07-15"
    assert {"p50", "p90", "p99"} <= set(next(iter(data["latency_ms"].values())))
    assert all(row[-1] == "same" for row in probe_rows(output).values())
    # The emulator takes the file back: the same settings.
    assert calibration.load(tmp_path / "conformance.json") == {
        "search_lag": max(data["search_lag_seconds"].values()),
        "import_delay": 7.0,
        "import_rate": 20.0,
        "import_all_or_nothing": True,
        "import_external_id_match": False,
    }


@pytest.mark.parametrize(
    ("switch", "key"),
    [
        ({"import_all_or_nothing": False}, "import_all_or_nothing"),
        ({"import_external_id_match": True}, "import_matches_external_id"),
    ],
)
def test_a_planted_difference_is_found_by_its_probe(tmp_path, capsys, switch, key):
    # The "real account" is a second emulator reading the rule the other way.
    clock = FakeClock()
    with KlaviyoEmulator(clock=clock, **switch) as other:
        env = {
            "KLAVIYO_API_KEY": "pk_test_emulator",
            "KLAVIYO_LIST_ID": other.create_list("Scratch"),
            "KLAVIYO_SEGMENT_ID": other.create_segment("Scratch"),
            "KLAVIYO_BASE_URL": other.base_url,
            "CONFIRM": "1",
            "OUT": str(tmp_path),
        }
        code = conformance.main(SIZES, env=env, clock=clock, sleep=clock.sleep)
    output = capsys.readouterr().out
    assert code == 1
    marked = [name for name, row in probe_rows(output).items() if row[-1] == "DIFFERS"]
    assert marked == [key]
    data = json.loads((tmp_path / "conformance.json").read_text())
    assert data[key] is not KlaviyoEmulator().config.to_json()[next(iter(switch))]


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
