"""The conformance check: the fixed scenario, its table, and how differences are marked."""

from __future__ import annotations

import sys
from pathlib import Path

from devtools import conformance
from devtools.klaviyo_emulator import DEFAULT_API_KEY, Fault, KlaviyoEmulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from fake_clock import FakeClock

STEPS = [
    "create profile",
    "create it again (duplicate)",
    "get by email",
    "get by external_id",
    "get by id",
    "update",
    "add to list",
    "segment check",
    "subscribe email",
    "search any() of 100 emails",
    "search one page",
    "track event",
    "bulk import job",
    "read import job",
    "read import errors",
    "unsubscribe email",
    "remove from list",
    "invalid email",
    "invalid phone",
    "bad filter",
    "bad API key",
]


def rows(output: str) -> dict[str, list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| step "))
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break  # the scenario's table ends; the probes' follows
        table.append(line)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return {row[0]: row for row in cells}


def test_without_a_key_the_emulator_answers_every_step_as_documented(capsys, tmp_path):
    assert conformance.main(["--import-sizes", "10"], env={"OUT": str(tmp_path)}) == 0
    output = capsys.readouterr().out
    table = rows(output)
    assert list(table) == STEPS
    for row in table.values():
        assert row[1] == row[2], row  # expected status == the emulator's
    assert table["create it again (duplicate)"][3] == "duplicate_profile@/data/attributes"
    assert table["bad filter"][3] == "invalid@filter"
    assert "Klaviyo: skipped" in output


def test_differences_from_a_real_account_are_marked(capsys, tmp_path):
    # A stand-in for the real account: a second emulator whose list add answers 404.
    clock = FakeClock()  # both targets on it: the pacing and the job waits take no time
    with KlaviyoEmulator(clock=clock) as other:
        list_id = other.create_list("Scratch")
        segment_id = other.create_segment("Scratch")
        other.faults.add(Fault(operation_id="add_profiles_to_list", status=404))
        env = {
            "KLAVIYO_API_KEY": DEFAULT_API_KEY,
            "KLAVIYO_LIST_ID": list_id,
            "KLAVIYO_SEGMENT_ID": segment_id,
            "KLAVIYO_BASE_URL": other.base_url,
            "CONFIRM": "1",
            "OUT": str(tmp_path),
        }
        argv = ["--import-sizes", "10", "--deletion"]
        assert conformance.main(argv, env=env, clock=clock, sleep=clock.sleep) == 1
        profiles = other.profiles()
    table = rows(capsys.readouterr().out)
    marked = [name for name, row in table.items() if row[-1] == "DIFFERS"]
    assert marked == ["add to list"]
    assert table["deletion job"][2] == "202"
    # It only ever touched the profile it made, and asked for its deletion.
    assert profiles == []
