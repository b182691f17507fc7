"""Mirror sync: a lead file makes a list's members exactly the file's people. The plan (added,
kept, removed) comes first; removals past the stack's share are refused unless the metadata
confirms them; a dry run plans only; consent is never touched; a file sent twice changes
nothing the second time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from klaviyo_leads.handlers import lead_files as lead_file_handlers
from klaviyo_leads.lead_files.storage import Services
from klaviyo_leads.mirror.files import takes
from klaviyo_leads.mirror.members import SLICES_PER_STREAM, STREAMS, read_members
from klaviyo_leads.mirror.sync import MirrorServices, max_removal_share, stream_contexts, take_file
from klaviyo_leads.runtime import Runtime
from tests.conftest import API_KEY, Sleeps

BUCKET = "lead-files"


@pytest.fixture
def s3(aws_credentials) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def services(s3, streams) -> MirrorServices:
    return MirrorServices(s3, streams)


@pytest.fixture
def streams(runtime: Runtime, sleeps: Sleeps):
    """Stream contexts as the mirror function makes them (a client and pacer each), on the
    emulator and the test's virtual clock."""
    return stream_contexts(
        runtime.settings, lambda force: API_KEY, sleep=sleeps, clock=sleeps.clock, wall=sleeps.clock
    )


@pytest.fixture
def people(klaviyo_emulator) -> dict[str, str]:
    """A list of three (ann, bob, cat), and two people off it (dan, eve), ann subscribed."""
    emu = klaviyo_emulator
    ids = {"list": emu.create_list("Weekly", opt_in="single")}
    for name in ("ann", "bob", "cat", "dan", "eve"):
        ids[name] = emu.create_profile(email=f"{name}@example.com", external_id=f"crm-{name}")
    emu.add_to_list(ids["list"], ids["ann"], ids["bob"], ids["cat"])
    return ids


def upload(s3, key: str, rows: list[str], metadata: dict[str, str] | None = None) -> str:
    body = "email,first_name\n" + "".join(f"{email},X\n" for email in rows)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode(), Metadata=metadata or {})
    return key


def writes(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.requests if r.method != "GET"]


def results_of(s3, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_the_missing_are_added_the_rest_removed_and_the_report_says_so_first(
    services, s3, people, klaviyo_emulator
):
    services.max_removal_share = 0.5
    key = upload(
        s3,
        f"mirror/{people['list']}/weekly.csv",
        ["BOB@example.com", "cat@example.com", "dan@example.com", "nobody@example.com"],
    )
    report = take_file(services, BUCKET, key)
    assert report["accepted"] and not report["dry_run"]
    assert (report["would_add"], report["would_keep"], report["would_remove"]) == (1, 2, 1)
    assert report["members_before"] == 3 and report["rows_read"] == 4
    assert report["rows_without_profile"] == {"count": 1, "first": [4]}
    assert klaviyo_emulator.list_members(people["list"]) == {
        people["bob"],
        people["cat"],
        people["dan"],
    }
    written = results_of(s3, f"results/mirror/{people['list']}/weekly.csv.report.json")
    assert written["would_remove"] == 1  # the report, as written before any change
    done = results_of(s3, report["results"])
    assert (done["added"], done["removed"], done["failed"]) == (1, 1, [])


def test_a_removal_is_never_an_unsubscribe(services, s3, people, klaviyo_emulator):
    before = klaviyo_emulator.profile(people["ann"])["attributes"]["subscriptions"]
    services.max_removal_share = 1.0
    key = upload(s3, f"mirror/{people['list']}/f.csv", ["bob@example.com", "cat@example.com"])
    take_file(services, BUCKET, key)
    assert people["ann"] not in klaviyo_emulator.list_members(people["list"])
    assert klaviyo_emulator.profile(people["ann"])["attributes"]["subscriptions"] == before
    operations = {r.operation_id for r in klaviyo_emulator.requests}
    assert "bulk_unsubscribe_profiles" not in operations
    assert ("DELETE", f"/api/lists/{people['list']}/relationships/profiles") in writes(
        klaviyo_emulator
    )


def test_removing_past_the_share_is_refused_unless_the_metadata_confirms_it(
    services, s3, people, klaviyo_emulator
):
    key = f"mirror/{people['list']}/only-bob.csv"
    upload(s3, key, ["bob@example.com"])  # would remove ann and cat: 67 % of the list
    refused = take_file(services, BUCKET, key)
    assert not refused["accepted"] and refused["would_remove"] == 2
    assert "more than the stack allows (20%" in refused["problem"]
    assert writes(klaviyo_emulator) == [] and refused["results"] is None

    upload(s3, key, ["bob@example.com"], {"mirror-confirm-removals": "1"})  # fewer than planned
    assert not take_file(services, BUCKET, key)["accepted"]
    upload(s3, key, ["bob@example.com"], {"mirror-confirm-removals": "2"})
    confirmed = take_file(services, BUCKET, key)
    assert confirmed["accepted"] and confirmed["removals_confirmed"]
    assert klaviyo_emulator.list_members(people["list"]) == {people["bob"]}


def test_the_dry_run_prefix_shows_the_plan_only(services, s3, people, klaviyo_emulator):
    key = upload(
        s3,
        f"dry-run/mirror/{people['list']}/weekly.csv",
        ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"],
    )
    report = take_file(services, BUCKET, key)
    assert report["dry_run"] and report["accepted"] and report["results"] is None
    assert (report["would_add"], report["would_keep"], report["would_remove"]) == (1, 3, 0)
    assert writes(klaviyo_emulator) == []
    assert people["dan"] not in klaviyo_emulator.list_members(people["list"])


def test_a_file_sent_twice_changes_nothing_the_second_time(services, s3, people, klaviyo_emulator):
    services.max_removal_share = 1.0
    key = upload(s3, f"mirror/{people['list']}/f.csv", ["ann@example.com", "dan@example.com"])
    assert take_file(services, BUCKET, key)["would_remove"] == 2
    after_first = klaviyo_emulator.list_members(people["list"])
    written_first = len(writes(klaviyo_emulator))
    second = take_file(services, BUCKET, key)
    assert (second["would_add"], second["would_keep"], second["would_remove"]) == (0, 2, 0)
    assert len(writes(klaviyo_emulator)) == written_first
    assert klaviyo_emulator.list_members(people["list"]) == after_first


def test_an_add_profile_to_list_file_with_the_setting_is_a_mirror_the_splitter_leaves(
    services, s3, people, klaviyo_emulator, monkeypatch
):
    services.max_removal_share = 1.0
    metadata = {"mirror": "true", "klaviyo.list_id": people["list"]}
    key = upload(s3, "add_profile_to_list/weekly.csv", ["eve@example.com"], metadata)
    assert takes(s3, BUCKET, key)
    assert not takes(s3, BUCKET, upload(s3, "add_profile_to_list/plain.csv", ["x@y.z"]))
    report = take_file(services, BUCKET, key)
    assert report["accepted"] and report["would_add"] == 1 and report["would_remove"] == 3
    assert klaviyo_emulator.list_members(people["list"]) == {people["eve"]}

    # The splitter hears of the same upload and leaves it to the mirror function.
    monkeypatch.setattr(lead_file_handlers, "_services", Services(s3=s3, sqs=None))
    event = {"detail": {"bucket": {"name": BUCKET}, "object": {"key": key}}}
    assert lead_file_handlers.split_handler(event, None) == {"files": []}


def test_people_are_found_by_the_leads_identifier_and_bad_rows_reported(
    services, s3, people, klaviyo_emulator
):
    services.max_removal_share = 1.0
    body = (
        "email,klaviyo.external_id,klaviyo.identifier\n"
        ",crm-bob,external_id\n"
        "not-an-email,,\n"
        "cat@example.com,,\n"
    )
    key = f"mirror/{people['list']}/ids.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    report = take_file(services, BUCKET, key)
    assert (report["would_add"], report["would_keep"], report["would_remove"]) == (0, 2, 1)
    (refused,) = report["rows_refused"]
    assert (refused["reason"], refused["first_rows"]) == ("Invalid email address", [2])


def test_an_unknown_list_plans_nothing(services, s3, people, klaviyo_emulator):
    key = upload(s3, "mirror/NoSuchList/f.csv", ["ann@example.com"])
    report = take_file(services, BUCKET, key)
    assert not report["accepted"] and "list" in report["problem"].lower()
    assert writes(klaviyo_emulator) == []


@pytest.mark.parametrize(
    ("value", "share"), [(None, 0.2), ("35", 0.35), ("0", 0.0), ("150", 0.2), ("x", 0.2)]
)
def test_the_removal_cap_comes_from_the_stack(value, share):
    env = {} if value is None else {"MIRROR_MAX_REMOVAL_PERCENT": value}
    assert max_removal_share(env) == share


def test_a_long_list_is_read_in_slices_of_join_time_and_misses_no_one(
    services, s3, streams, klaviyo_emulator
):
    """Members joined over 30 days (some the same second): the slices read each one once."""
    emu = klaviyo_emulator
    list_id = emu.create_list("Long", opt_in="single")
    ids = [emu.create_profile(email=f"m{i}@example.com") for i in range(450)]
    for index, profile_id in enumerate(ids):
        day, second = divmod(index, 15)
        emu.add_to_list(list_id, profile_id, joined_at=f"2026-11-{1 + day:02d}T10:00:{second:02d}Z")
    members = read_members(lambda: streams(60), list_id)
    assert members.ids == set(ids)
    assert members.find("email", "M7@example.com") == ids[7]
    pages = [r for r in emu.requests if r.operation_id == "get_profiles_for_list"]
    sliced = [r for r in pages if "filter" in r.query]
    assert len(sliced) >= STREAMS  # every slice read
    slices = STREAMS * SLICES_PER_STREAM
    assert len(pages) <= len(ids) // 100 + slices + 2  # no page read twice


def test_a_short_list_is_read_from_both_ends(services, s3, streams, klaviyo_emulator):
    emu = klaviyo_emulator
    list_id = emu.create_list("Short", opt_in="single")
    ids = [emu.create_profile(email=f"s{i}@example.com") for i in range(150)]
    emu.add_to_list(list_id, *ids)
    members = read_members(lambda: streams(60), list_id)
    assert members.ids == set(ids)
    assert len([r for r in emu.requests if r.operation_id == "get_profiles_for_list"]) == 2


# -- through the local stack (make mirror) ----------------------------------------------------


def test_a_mirror_file_through_the_local_stack(tmp_path):
    from devtools.mirror_import import mirror_file
    from devtools.sandbox import Sandbox

    with Sandbox(trail_dir=None) as sandbox:
        emulator = sandbox.emulator
        list_id = emulator.create_list("Mirrored", opt_in="single")
        kept = emulator.create_profile(email="kept@example.com")
        gone = emulator.create_profile(email="gone@example.com")
        new = emulator.create_profile(email="new@example.com")
        emulator.add_to_list(list_id, kept, gone)
        path = tmp_path / "people.csv"
        path.write_text("email\nkept@example.com\nnew@example.com\n")
        # The plan: half the list would go, so the real run would be refused as it stands.
        code, plan = mirror_file(sandbox, path, list_id, dry_run=True, out=lambda line: None)
        assert code == 1 and emulator.list_members(list_id) == {kept, gone}
        assert (plan["would_add"], plan["would_keep"], plan["would_remove"]) == (1, 1, 1)
        assert "MirrorMaxRemovalPercent" in plan["problem"]
        code, _ = mirror_file(sandbox, path, list_id, out=lambda line: None)
        assert code == 1 and emulator.list_members(list_id) == {kept, gone}
        metadata = {"mirror-confirm-removals": "1"}
        code, done = mirror_file(sandbox, path, list_id, metadata=metadata, out=lambda line: None)
        assert code == 0 and done["done"]["removed"] == 1
        assert emulator.list_members(list_id) == {kept, new}
        assert json.loads((tmp_path / "people.csv.mirror.json").read_text())["added"] == 1
