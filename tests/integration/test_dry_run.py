"""Dry runs (contract section 10): every action runs up to Klaviyo's writes, sends none of them,
and answers the result the lead would get with ``would_send``: the writes a real run then
sends, the same ones."""

from __future__ import annotations

import dataclasses
import json

import pytest

from devtools.lambda_events import api_gateway_event, queue_arn, sqs_event, sqs_message
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.runtime import Runtime
from klaviyo_leads.triggers.dispatch import handle

LIST = "Newsletter"


@pytest.fixture
def seeded(klaviyo_emulator):
    emu = klaviyo_emulator
    ids = {
        "list": emu.create_list(LIST, opt_in="single"),
        "segment": emu.create_segment("VIP customers"),
        "sarah": emu.create_profile(
            email="sarah@example.com", phone_number="+15125550100", external_id="crm-1"
        ),
        "sam": emu.create_profile(email="sam@example.com"),
    }
    emu.add_to_list(ids["list"], ids["sarah"])
    emu.add_to_segment(ids["segment"], ids["sarah"])
    return ids


def leads(ids: dict[str, str]) -> dict[str, dict]:
    """A lead for each action, chosen so that the real run does what the action is for."""
    return {
        "add_profile_to_list": {"email": "sam@example.com", "klaviyo.list_id": ids["list"]},
        "create_profile": {"email": "ada@example.com", "first_name": "Ada", "reference": "r-7"},
        "get_profiles": {"email": "sarah@example.com"},
        "get_segment_profiles": {
            "email": "sarah@example.com",
            "klaviyo.segment_id": ids["segment"],
        },
        "update_profile": {"email": "sarah@example.com", "first_name": "Sarah", "city": "Austin"},
        "subscribe_profile_to_list": {"email": "new@example.com", "klaviyo.list_id": ids["list"]},
        "unsubscribe_profile": {"email": "sarah@example.com", "klaviyo.list_id": ids["list"]},
        "remove_profile_from_list": {"email": "sarah@example.com", "klaviyo.list_id": ids["list"]},
        "upsert_profile": {"email": "sam@example.com", "first_name": "Sam", "title": "CTO"},
        "track_event": {
            "email": "sarah@example.com",
            "campaign": "Spring webinar",
            "klaviyo": {"metric_name": "Lead Received", "event_value": 250},
        },
        "delete_profile": {"email": "sam@example.com"},
    }


def writes(emulator) -> list[tuple[str, str, object]]:
    """What Klaviyo was asked to change: every request but the reads, in order."""
    return [(r.method, r.path, r.json()) for r in emulator.requests if r.method != "GET"]


@pytest.fixture
def deletions_on(runtime: Runtime) -> Runtime:
    runtime.settings = dataclasses.replace(runtime.settings, profile_deletion_enabled=True)
    return runtime


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_dry_run_sends_no_write_and_lists_what_the_real_run_then_sends(
    action, deletions_on, seeded, klaviyo_emulator
):
    runtime, lead = deletions_on, leads(seeded)[action]
    dry = runtime.process(
        ACTIONS[action], {**lead, "dry_run": True}, remaining_seconds=None, origin_id="o-1"
    )
    assert writes(klaviyo_emulator) == []
    assert dry.dry_run and dry.fields["dry_run"] is True

    real = runtime.process(ACTIONS[action], lead, remaining_seconds=None, origin_id="o-1")
    sent = writes(klaviyo_emulator)
    assert [(w["method"], w["path"], w["body"]) for w in dry.fields["would_send"]] == sent
    assert (dry.fields["outcome"], dry.fields["reason"]) == (
        real.fields["outcome"],
        real.fields["reason"],
    )
    assert "would_send" not in real.fields and not real.dry_run


def test_a_dry_create_says_which_profile_it_would_duplicate(runtime, seeded, klaviyo_emulator):
    lead = {"email": "SARAH@example.com", "first_name": "S", "dry_run": "true"}
    fields = runtime.process(ACTIONS["create_profile"], lead, remaining_seconds=None).fields
    assert fields["outcome"] == "failure"
    assert fields["reason"] == "A profile with this email already exists"
    assert fields["id"] == seeded["sarah"]
    # What a real run sends, and Klaviyo would refuse with a 409.
    assert [w["method"] for w in fields["would_send"]] == ["POST"]
    assert writes(klaviyo_emulator) == []


def test_a_dry_create_claims_nothing_in_the_ledger(runtime, klaviyo_emulator):
    lead = {"email": "ada@example.com", "dry_run": True}
    runtime.process(ACTIONS["create_profile"], lead, remaining_seconds=None, origin_id="o-2")
    # A real create by another request is not held up by the dry run: it creates.
    real = runtime.process(
        ACTIONS["create_profile"], {"email": "ada@example.com"}, remaining_seconds=None
    )
    assert real.fields["outcome"] == "success"


def test_a_dry_update_answers_the_profile_as_the_update_would_leave_it(
    runtime, seeded, klaviyo_emulator
):
    lead = {"email": "sarah@example.com", "first_name": "Sally", "dry_run": True}
    fields = runtime.process(ACTIONS["update_profile"], lead, remaining_seconds=None).fields
    assert fields["outcome"] == "success" and fields["id"] == seeded["sarah"]
    assert fields["reference"] == "crm-1"  # kept from the profile as read
    (patch,) = fields["would_send"]
    assert patch["body"]["data"]["attributes"] == {"first_name": "Sally"}
    assert klaviyo_emulator.profile(seeded["sarah"])["attributes"]["first_name"] is None


@pytest.mark.parametrize("flag", ["maybe", 2, None, ["true"]])
def test_an_unreadable_flag_is_a_configuration_error_and_sends_nothing(
    runtime, seeded, klaviyo_emulator, flag
):
    lead = {"email": "sam@example.com", "klaviyo.list_id": seeded["list"], "dry_run": flag}
    processed = runtime.process(ACTIONS["add_profile_to_list"], lead, remaining_seconds=None)
    assert processed.fields["outcome"] == "error"
    assert processed.fields["reason"] == "dry_run must be one of: true, false"
    assert klaviyo_emulator.requests == []


@pytest.mark.parametrize("flag", [False, "false", "0", "no"])
def test_a_false_flag_is_a_real_run(runtime, seeded, klaviyo_emulator, flag):
    lead = {"email": "sam@example.com", "klaviyo.list_id": seeded["list"], "dry_run": flag}
    processed = runtime.process(ACTIONS["add_profile_to_list"], lead, remaining_seconds=None)
    assert processed.fields["outcome"] == "success" and not processed.dry_run
    assert seeded["sam"] in klaviyo_emulator.list_members(seeded["list"])


# -- the triggers -----------------------------------------------------------------------------


class Publisher:
    def __init__(self) -> None:
        self.published: list = []

    def publish(self, publications: list) -> list[bool]:
        self.published += publications
        return [True] * len(publications)


class Queue:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, lead, first_seen, origin=None) -> str:
        self.sent.append(lead)
        return "m-1"

    def send_batch(self, later) -> list:
        self.sent += later
        return ["m"] * len(later)


def api_event(route: str, body: str, query: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    return api_gateway_event("POST", route, headers, body, query)


def test_the_api_takes_the_flag_from_the_query_string(runtime, seeded, klaviyo_emulator):
    body = json.dumps({"email": "sam@example.com", "klaviyo.list_id": seeded["list"]})
    event = api_event("/add-profile-to-list", body, "dry_run=true")
    answer = handle(runtime, ACTIONS["add_profile_to_list"], event, None)
    fields = json.loads(answer["body"])
    assert answer["statusCode"] == 200 and fields["dry_run"] is True
    assert [w["method"] for w in fields["would_send"]] == ["POST"]
    assert writes(klaviyo_emulator) == []
    assert seeded["sam"] not in klaviyo_emulator.list_members(seeded["list"])


def test_the_api_answers_a_dry_failure_with_the_real_status(runtime, seeded, klaviyo_emulator):
    event = api_event("/get-profiles", json.dumps({"email": "nobody@example.com", "dry_run": True}))
    answer = handle(runtime, ACTIONS["get_profiles"], event, None)
    assert answer["statusCode"] == 422
    assert json.loads(answer["body"])["would_send"] == []


@pytest.mark.parametrize("kind", ["eventbridge", "direct"])
def test_eventbridge_and_direct_dry_runs_are_neither_published_nor_queued(
    runtime, seeded, klaviyo_emulator, kind
):
    runtime.publisher, runtime.queue = Publisher(), Queue()  # type: ignore[assignment]
    lead = {"email": "sam@example.com", "klaviyo.list_id": seeded["list"], "dry_run": True}
    klaviyo_emulator.set_rate_limits(True, {"add_profiles_to_list": (0, 0)})  # a 429 if sent
    event = (
        {"id": "e-1", "detail-type": "x lead", "source": "s", "detail": {"leads": [lead, lead]}}
        if kind == "eventbridge"
        else {"leads": [lead, lead]}
    )
    answer = handle(runtime, ACTIONS["add_profile_to_list"], event, None)
    results = answer["results"] if answer else None
    assert runtime.publisher.published == [] and runtime.queue.sent == []  # type: ignore[union-attr]
    if results is not None:
        assert all(r["dry_run"] for r in results)
    assert writes(klaviyo_emulator) == []


def test_a_queued_dry_run_is_neither_claimed_kept_nor_published(runtime, seeded, klaviyo_emulator):
    runtime.publisher = Publisher()  # type: ignore[assignment]
    real = {"email": "sarah@example.com", "klaviyo.list_id": seeded["list"]}
    dry = {"email": "sam@example.com", "klaviyo.list_id": seeded["list"], "dry_run": True}
    messages = [
        sqs_message(json.dumps(real), message_id="m-real"),
        sqs_message(json.dumps(dry), message_id="m-dry"),
    ]
    event = sqs_event(messages, queue_arn("add-profile-to-list"))
    answer = handle(runtime, ACTIONS["add_profile_to_list"], event, None)
    assert answer == {"batchItemFailures": []}
    published = [p.message_id for p in runtime.publisher.published]  # type: ignore[union-attr]
    assert published == ["m-real"]
    assert seeded["sam"] not in klaviyo_emulator.list_members(seeded["list"])


# -- a dry-run lead file ------------------------------------------------------------------------


def test_a_dry_run_files_report_counts_what_its_rows_would_do(
    runtime, seeded, klaviyo_emulator, aws_credentials
):
    import boto3
    from moto import mock_aws

    from klaviyo_leads.lead_files.splitter import take_file
    from klaviyo_leads.lead_files.storage import Services

    body = (
        "email,first_name\n"
        "sarah@example.com,Sarah\n"  # a profile has it: "already exists"
        "ada@example.com,Ada\n"
        "bo@example.com,Bo\n"
        "not-an-email,Bad\n"  # refused by the check: never run
    )
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lead-files")
        key = "dry-run/create_profile/people.csv"
        s3.put_object(Bucket="lead-files", Key=key, Body=body.encode())
        services = Services(s3=s3, sqs=None, klaviyo=lambda: runtime)
        report = take_file(services, "lead-files", key).as_json()
        written_key = "results/dry-run/create_profile/people.csv.report.json"
        written = json.loads(s3.get_object(Bucket="lead-files", Key=written_key)["Body"].read())
    would = report["would"]
    assert written["would"] == would
    assert (would["rows"], would["of_rows_to_send"]) == (3, 3)
    counted = {(o["outcome"], o["reason"]): o["count"] for o in would["outcomes"]}
    assert counted == {
        ("success", None): 2,
        ("failure", "A profile with this email already exists"): 1,
    }
    assert would["requests"] == {"create_profile": 3}  # a real run sends all three
    assert writes(klaviyo_emulator) == []
    assert report["rows_refused"] == 1


def test_without_klaviyo_a_dry_run_file_is_checked_only(aws_credentials):
    import boto3
    from moto import mock_aws

    from klaviyo_leads.lead_files.splitter import take_file
    from klaviyo_leads.lead_files.storage import Services

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lead-files")
        key = "dry-run/create_profile/people.csv"
        s3.put_object(Bucket="lead-files", Key=key, Body=b"email\nada@example.com\n")
        report = take_file(Services(s3=s3, sqs=None), "lead-files", key)
    assert report.accepted and report.would is None


def test_a_dry_run_with_an_idempotency_key_neither_keeps_nor_replays_its_answer(
    runtime, seeded, klaviyo_emulator
):
    class Untouchable:
        def __getattr__(self, name: str):
            raise AssertionError(f"a dry run used the Idempotency-Key records ({name})")

    runtime.settings = dataclasses.replace(runtime.settings, idempotency_table_name="table")
    runtime.requests_by_action["add_profile_to_list"] = Untouchable()  # type: ignore[assignment]
    lead = {"email": "sam@example.com", "klaviyo.list_id": seeded["list"], "dry_run": True}
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1"}
    event = api_gateway_event("POST", "/add-profile-to-list", headers, json.dumps(lead))
    answer = handle(runtime, ACTIONS["add_profile_to_list"], event, None)
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["dry_run"] is True
    assert writes(klaviyo_emulator) == []


def test_a_dry_subscribe_answers_what_the_job_would_leave_without_waiting_to_read_it_back(
    runtime, klaviyo_emulator, sleeps
):
    """Nothing was sent, so nothing can be read back: a dry run answers the consent the job
    would leave as the profile stands (a double opt-in pending, a bounced address kept
    suppressed, a new one subscribed), at once."""
    emu = klaviyo_emulator
    confirmed = emu.create_list("Confirmed", opt_in="double")
    single = emu.create_list("Single", opt_in="single")
    bounced = emu.create_profile(email="bounced@example.com")
    emu.suppress(bounced, "HARD_BOUNCE")
    cases = [
        ({"email": "new@example.com", "klaviyo.list_id": single}, "success", "subscribed"),
        ({"email": "new@example.com", "klaviyo.list_id": confirmed}, "success", "pending"),
        ({"email": "bounced@example.com", "klaviyo.list_id": single}, "failure", "suppressed"),
    ]
    for lead, outcome, consent in cases:
        dry = runtime.process(
            ACTIONS["subscribe_profile_to_list"], {**lead, "dry_run": True}, remaining_seconds=None
        )
        answered = (dry.fields["outcome"], dry.fields["email_consent"])
        assert answered == (outcome, consent), dry.fields
    assert writes(emu) == [] and max(sleeps, default=0.0) < 1.0  # nothing sent, no look again
