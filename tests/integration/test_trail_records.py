"""The lead trail's records, as the functions write them: every path's leads, their attempts
with Klaviyo's operations, their final results, in both PII modes; and a trail that cannot be
written fails nothing."""

from __future__ import annotations

import hashlib
import json

import pytest

from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import api_gateway_event, queue_arn, sqs_event, sqs_message
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.runtime import Runtime
from klaviyo_leads.trail.records import Trail
from klaviyo_leads.triggers.dispatch import handle

LEAD = {
    "email": " Ada@Example.com ",
    "phone_1": "(512) 555-0100",
    "vendor": "acme",
    "first_name": "Ada",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def records(runtime: Runtime) -> list[dict]:
    lines: list[str] = []
    runtime.trail = Trail("hashed", "vendor", write=lines.append)

    class Records(list):
        def of(self, event: str) -> list[dict]:
            return [r for r in self if r["event"] == event]

    found = Records()

    def write(line: str) -> None:
        found.append(json.loads(line))

    runtime.trail.write = write
    return found


def api(route: str, lead: dict, key: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return api_gateway_event("POST", route, headers, json.dumps(lead))


def test_a_webhook_lead_is_received_then_attempted_with_its_calls(runtime, records):
    handle(runtime, ACTIONS["create_profile"], api("/create-profile", LEAD, key="k-1"), None)
    received, attempt = records
    assert received["event"] == "received" and attempt["event"] == "attempt"
    # Without an idempotency table the key is only recorded: the request is the lead.
    assert received["lead_key"] == attempt["lead_key"] == received["request_id"]
    assert received["path"] == "api" and received["idempotency_key"] == "k-1"
    assert attempt["outcome"] == "success" and attempt["final"] and not attempt["handed_back"]
    assert attempt["profile_id"]
    assert [(c["operation"], c["status"], c["count"]) for c in attempt["calls"]] == [
        ("create_profile", 201, 1)
    ]
    assert attempt["calls"][0]["ms"] >= 0
    assert received["day"] == received["time"][:10] and received["action"] == "create_profile"


def test_hashed_records_keep_no_lead_data_but_the_hashes_and_the_vendor(runtime, records):
    handle(runtime, ACTIONS["get_profiles"], api("/get-profiles", LEAD), None)
    for record in records:
        assert record["email_sha256"] == sha("ada@example.com")
        assert record["phone_sha256"] == sha("+15125550100")
        assert record["vendor"] == "acme"
        assert record["lead"] is None
        assert "Ada" not in json.dumps(record)


def test_whole_lead_records_keep_the_lead_as_received(runtime, records):
    runtime.trail.pii = "lead"  # type: ignore[union-attr]
    handle(runtime, ACTIONS["get_profiles"], api("/get-profiles", LEAD), None)
    assert json.loads(records[0]["lead"]) == LEAD
    assert records[0]["email_sha256"] == sha("ada@example.com")


def test_a_retryable_result_is_handed_back_and_not_final(runtime, records, klaviyo_emulator):
    klaviyo_emulator.faults.add(Fault(status=503, times=10))
    handle(runtime, ACTIONS["get_profiles"], api("/get-profiles", LEAD), None)
    attempt = records.of("attempt")[0]
    assert attempt["retryable"] and attempt["handed_back"] and not attempt["final"]
    assert {(c["operation"], c["status"]) for c in attempt["calls"]} == {("get_profiles", 503)}


@pytest.mark.parametrize("kind", ["eventbridge", "direct"])
def test_eventbridge_and_direct_leads_each_have_their_records(runtime, records, kind):
    leads = {"leads": [LEAD, {**LEAD, "email": "bo@example.com"}]}
    event = (
        {"id": "ev-1", "detail-type": "get_profiles lead", "source": "s", "detail": leads}
        if kind == "eventbridge"
        else leads
    )
    handle(runtime, ACTIONS["get_profiles"], event, None)
    received = records.of("received")
    assert [r["path"] for r in received] == [kind, kind]
    assert len({r["lead_key"] for r in received}) == 2
    assert len(records.of("attempt")) == 2


def test_queued_leads_coalesced_share_their_batch_calls(runtime, records, klaviyo_emulator):
    klaviyo_emulator.create_profile(email="ada@example.com")
    messages = [
        sqs_message(
            json.dumps({**LEAD, "email": f"p{i}@example.com"}),
            message_id=f"m-{i}",
            message_attributes={"lead_file_run": "run-1", "lead_file_row": str(i + 1)},
        )
        for i in range(3)
    ]
    handle(runtime, ACTIONS["get_profiles"], sqs_event(messages, queue_arn("q")), None)
    received = records.of("received")
    assert [(r["message_id"], r["lead_file"], r["lead_row"]) for r in received] == [
        ("m-0", "run-1", 1),
        ("m-1", "run-1", 2),
        ("m-2", "run-1", 3),
    ]
    attempts = records.of("attempt")
    assert [a["calls_shared_by"] for a in attempts] == [3, 3, 3]
    # One search served the three leads.
    assert attempts[0]["calls"] == attempts[2]["calls"]
    assert attempts[0]["calls"][0]["count"] == 1


def test_a_queued_message_that_is_no_lead_is_in_the_trail_too(runtime, records):
    messages = [sqs_message("not json", message_id="m-x")]
    handle(runtime, ACTIONS["get_profiles"], sqs_event(messages, queue_arn("q")), None)
    assert [r["event"] for r in records] == ["received", "attempt"]
    assert records[1]["reason"] == "The message body is not valid JSON" and records[1]["final"]


def test_a_dry_run_is_in_the_trail_as_one(runtime, records, klaviyo_emulator):
    lead = {**LEAD, "dry_run": True}
    handle(runtime, ACTIONS["create_profile"], api("/create-profile", lead), None)
    attempt = records.of("attempt")[0]
    assert attempt["dry_run"] is True
    assert json.loads(attempt["would_send"]) == [{"method": "POST", "path": "/api/profiles"}]


def test_a_trail_that_cannot_be_written_fails_nothing(runtime, klaviyo_emulator):
    def broken(line: str) -> None:
        raise OSError("the log is gone")

    runtime.trail = Trail("lead", write=broken)
    answer = handle(runtime, ACTIONS["create_profile"], api("/create-profile", LEAD), None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["outcome"] == "success"


def test_an_attempt_records_what_the_identity_and_consent_rules_answered(
    runtime, records, klaviyo_emulator
):
    """Invariant: the trail answers "what happened to this lead" as its result did: a
    subscribe's consent per channel as read back, a create's "already exists" with whose
    profile, an upsert's made or found."""
    newsletter = klaviyo_emulator.create_list("Newsletter", opt_in="single")
    subscribe = {"email": "ann@example.com", "klaviyo.list_id": newsletter}
    handle(
        runtime,
        ACTIONS["subscribe_profile_to_list"],
        api("/subscribe-profile-to-list", subscribe),
        None,
    )
    handle(runtime, ACTIONS["create_profile"], api("/create-profile", LEAD), None)
    handle(runtime, ACTIONS["create_profile"], api("/create-profile", LEAD), None)
    handle(runtime, ACTIONS["upsert_profile"], api("/upsert-profile", LEAD), None)
    subscribed, made, again, upserted = records.of("attempt")
    assert (subscribed["outcome"], subscribed["email_consent"]) == ("success", "subscribed")
    assert subscribed["sms_consent"] is None  # not asked for
    assert made["outcome"] == "success" and made["duplicate_profile_id"] is None
    assert again["outcome"] == "failure"
    assert again["duplicate_profile_id"] == made["profile_id"]
    assert (upserted["created"], upserted["profile_id"]) == (False, made["profile_id"])
