"""The conformance check: the fixed scenario, its table, and how differences are marked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devtools import conformance
from devtools.klaviyo_emulator import Fault
from klaviyo_leads.klaviyo.client import USER_AGENT
from klaviyo_leads.klaviyo.routes import OPERATIONS, operation_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from fake_clock import FakeClock

STEPS = [
    "create profile",
    "create it again (duplicate)",
    "get by email",
    "get by external_id",
    "get by id",
    "Get Profiles",
    "Update Profile",
    "Get Segment Profiles",
    "Add Profile to List",
    "list member ids",
    "Subscribe Profile to List",
    "Track Event",
    "bulk events job",
    "bulk import job",
    "list import jobs",
    "read import job",
    "pages of the job's profiles",
    "read import errors",
    "search any() of 100 emails",
    "search one page",
    "Upsert Profile",
    "Create Profile",
    "Remove Profile from List",
    "Add Profile to List again",
    "Unsubscribe Profile",
    "invalid email",
    "invalid phone",
    "bad filter",
    "bad API key",
]
DELETION = "request_profile_deletion"


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
    clock = FakeClock()
    argv = ["--import-sizes", "10"]
    assert conformance.main(argv, env={"OUT": str(tmp_path)}, clock=clock, sleep=clock.sleep) == 0
    output = capsys.readouterr().out
    table = rows(output)
    assert list(table) == STEPS
    for row in table.values():
        assert row[1] == row[2], row  # expected status (or outcome) == the emulator's
    assert table["create it again (duplicate)"][3] == "duplicate_profile@/data/attributes"
    assert table["bad filter"][3] == "invalid@filter"
    # An action's row: the calls it made, operation and status.
    calls = "get_list 200,get_profiles 200,add_profiles_to_list 204"
    assert table["Add Profile to List"][3] == calls
    assert table["pages of the job's profiles"][4] == "3 profiles in 2 pages"
    assert "Klaviyo: skipped" in output


@pytest.mark.parametrize("deletion", [False, True])
def test_the_scenario_calls_every_operation_the_bundle_calls(deletion):
    # The route table names every operation the bundle calls; the scenario (no probes, no
    # clean-up) must send each of them, through the bundle's client. Deletion is asked for
    # only with the flag.
    clock = FakeClock()
    target, emulator = conformance.emulator_target(sleep=clock.sleep, clock=clock)
    try:
        steps = [step.name for step, _ in conformance.scenario(target, deletion)]
        requests = emulator.requests
    finally:
        emulator.stop()
    observed_only = [
        r
        for r in requests
        if any(r.method == m and p.match(r.path) for m, p in conformance.OBSERVED_ONLY)
    ]
    assert observed_only  # the scenario still records the list's member ids
    called = {operation_of(r.method, r.path) for r in requests if r not in observed_only}
    every = {name for _, _, name in OPERATIONS}
    wanted = every if deletion else every - {DELETION}
    assert sorted(wanted - called) == []
    assert sorted(called - every) == []  # nothing the route table does not know
    assert ("Delete Profile" in steps) is deletion
    assert {r.headers.get("User-Agent") for r in requests} == {USER_AGENT}
    assert {r.headers.get("revision") for r in requests} == {target.client.revision}


def test_the_clean_up_deletes_every_profile_the_run_made():
    clock = FakeClock()
    target, emulator = conformance.emulator_target(sleep=clock.sleep, clock=clock)
    try:
        conformance.run(target, (10,))
        left = emulator.profiles()
        made = [r for r in emulator.requests if r.status in (201, 202) and "profile" in r.path]
    finally:
        emulator.stop()
    assert made  # the run did make profiles ...
    assert left == []  # ... and its clean-up deleted every one of them


def test_differences_from_a_real_account_are_marked(capsys, tmp_path):
    # A stand-in for the real account: a second emulator whose list member read answers 404.
    clock = FakeClock()  # both targets on it: the pacing and the job waits take no time
    with conformance.ScratchAccount(clock=clock) as other:
        other.faults.add(Fault(operation_id="get_profile_ids_for_list", status=404))
        env = other.live_env(CONFIRM="1", OUT=str(tmp_path))
        argv = ["--import-sizes", "10", "--deletion"]
        assert conformance.main(argv, env=env, clock=clock, sleep=clock.sleep) == 1
        profiles = other.profiles()
    table = rows(capsys.readouterr().out)
    marked = [name for name, row in table.items() if row[-1] == "DIFFERS"]
    assert marked == ["list member ids"]
    assert table["Delete Profile"][2] == "success"
    assert table["Delete Profile"][3] == "request_profile_deletion 202"
    # It only ever touched the profiles it made, and asked for their deletion.
    assert profiles == []
