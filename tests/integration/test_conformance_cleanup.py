"""Finishing an interrupted conformance run: ``--cleanup <tag>`` finds the run's profiles by
its tag, lists them, and with CONFIRM=1 takes them off the scratch list and requests their
deletion; nothing else in the account is touched."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from devtools import conformance
from devtools import conformance_probes as probes
from devtools.conformance_target import Target
from klaviyo_leads.klaviyo.routes import operation_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from fake_clock import FakeClock

CLEANING = {"remove_profiles_from_list", "request_profile_deletion"}


def interrupted(target: Target, steps: int | None, deletion: bool = True) -> None:
    """A run that stopped (a killed process: no clean-up) after ``steps`` of the scenario,
    or, with None, after the whole scenario and every probe, just before its clean-up."""
    scenario = conformance.scenario(target, deletion)
    if steps is not None:
        list(itertools.islice(scenario, steps))
        return
    list(scenario)
    conformance.run_probes(target, (10,))


# 14 steps: through the bulk import (the scenario's profile and the three it imports).
@pytest.mark.parametrize("steps", [14, None], ids=["half-way", "before-clean-up"])
def test_cleanup_finishes_an_interrupted_run_and_touches_nothing_else(capsys, steps):
    clock = FakeClock()
    with conformance.ScratchAccount(clock=clock) as account:
        env = account.live_env()
        target = conformance.klaviyo_target(env, clock.sleep, clock)
        assert target is not None
        # Profiles the run did not make, on the same list: one of another run's.
        others = [
            account.create_profile(email="someone@example.com"),
            account.create_profile(
                email="conformance+0ther0ther0@example.com",
                properties={"conformance_tag": "0ther0ther0"},
            ),
        ]
        account.add_to_list(account.list_id, *others)
        interrupted(target, steps)
        made = set(target.created)
        assert made and account.list_members(account.list_id) - set(others)

        # Without CONFIRM=1 it lists the run's profiles and changes nothing.
        seen = len(account.requests)
        argv = ["--cleanup", target.tag]
        assert conformance.main(argv, env=env, clock=clock, sleep=clock.sleep) == 0
        listed = capsys.readouterr().out
        assert f"{len(made)} profile(s) tagged {target.tag}" in listed
        assert all(profile_id in listed for profile_id in made)
        assert "CONFIRM=1" in listed
        asked = {operation_of(r.method, r.path) for r in account.requests[seen:]}
        assert asked == {"get_profiles"}

        # With it, they leave the list and their deletion is requested; the others stay.
        seen = len(account.requests)
        confirmed = {**env, "CONFIRM": "1"}
        assert conformance.main(argv, env=confirmed, clock=clock, sleep=clock.sleep) == 0
        cleaning = [
            r for r in account.requests[seen:] if operation_of(r.method, r.path) in CLEANING
        ]
        deleted = {
            r.json()["data"]["attributes"]["profile"]["data"]["id"]
            for r in cleaning
            if operation_of(r.method, r.path) == "request_profile_deletion"
        }
        removed = {
            item["id"]
            for r in cleaning
            if operation_of(r.method, r.path) == "remove_profiles_from_list"
            for item in r.json()["data"]
        }
        assert deleted == removed == made
        assert account.list_members(account.list_id) == set(others)
        assert sorted(p["id"] for p in account.profiles()) == sorted(others)


def test_every_profile_a_run_makes_carries_its_tag_and_an_address_cleanup_looks_for():
    # The profiles of a whole run (scenario, probes, imports of 10) before its clean-up: each
    # has the tag in the conformance_tag property, and an address (or, for the one imported
    # by external id alone, that id) the clean-up searches.
    clock = FakeClock()
    target, emulator = conformance.emulator_target(sleep=clock.sleep, clock=clock)
    try:
        interrupted(target, None, deletion=False)
        made = emulator.profiles()
    finally:
        emulator.stop()
    assert len(made) > 20
    tags = {(p["attributes"].get("properties") or {}).get("conformance_tag") for p in made}
    assert tags == {target.tag}
    searched = set(probes.tagged_emails(target.tag, (10,)))
    unfound = [
        p["attributes"]
        for p in made
        if p["attributes"].get("email") not in searched
        and p["attributes"].get("external_id") != f"conformance-{target.tag}-match"
    ]
    assert unfound == []


def test_cleanup_that_cannot_search_cleans_nothing(capsys):
    """Invariant: a search that gets no answer stops the clean-up before it touches anything
    (it would leave that search's profiles behind), and says to run it again."""
    from devtools.klaviyo_emulator import Fault

    clock = FakeClock()
    with conformance.ScratchAccount(clock=clock) as account:
        account.faults.add(Fault(operation_id="get_profiles", status=500))
        env = account.live_env(CONFIRM="1")
        argv = ["--cleanup", "abcdef0123"]
        assert conformance.main(argv, env=env, clock=clock, sleep=clock.sleep) == 1
        asked = {operation_of(r.method, r.path) for r in account.requests}
    assert asked == {"get_profiles"}
    assert "Run --cleanup abcdef0123 again" in capsys.readouterr().out
