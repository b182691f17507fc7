"""Fault injection: every action, through its handler, against each of Klaviyo's bad days.

For each fault the table says what the lead platform must see: outcome, reason, whether a
retry could help, and the HTTP status a webhook sender gets.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import LambdaContext, api_gateway_event, load_handler
from klaviyo_leads.actions.table import ACTIONS

SEEDED_EMAIL = "seeded@example.com"


@pytest.fixture
def world(klaviyo_emulator, runtime):
    runtime.settings = replace(runtime.settings, profile_deletion_enabled=True)
    emu = klaviyo_emulator
    list_id = emu.create_list("Newsletter", opt_in="single")  # success says nothing more
    segment_id = emu.create_segment("VIP customers")
    seeded = emu.create_profile(email=SEEDED_EMAIL, first_name="Seed")
    emu.add_to_segment(segment_id, seeded)
    emu.add_to_list(list_id, seeded)
    return {"list": list_id, "segment": segment_id}


def lead_for(action: str, world: dict, timeout: float | None = None) -> dict:
    lead = {
        "create_profile": {"email": "brand.new@example.com"},
        "get_profiles": {"email": SEEDED_EMAIL},
        "get_segment_profiles": {"email": SEEDED_EMAIL, "klaviyo.segment_id": world["segment"]},
        "update_profile": {"email": SEEDED_EMAIL, "title": "Director"},
        "add_profile_to_list": {"email": SEEDED_EMAIL, "klaviyo.list_id": world["list"]},
        "subscribe_profile_to_list": {"email": SEEDED_EMAIL, "klaviyo.list_id": world["list"]},
        "unsubscribe_profile": {"email": SEEDED_EMAIL},
        "remove_profile_from_list": {"email": SEEDED_EMAIL, "klaviyo.list_id": world["list"]},
        "upsert_profile": {"email": SEEDED_EMAIL, "title": "Director"},
        "track_event": {"email": SEEDED_EMAIL, "id": "lead-1"},
        "delete_profile": {"email": SEEDED_EMAIL},
    }[action]
    if timeout is not None:
        lead["timeout_seconds"] = timeout
    return lead


def post(action: str, lead: dict) -> tuple[int, dict, dict]:
    route = ACTIONS[action].route
    event = api_gateway_event("POST", route, {"Content-Type": "application/json"}, json.dumps(lead))
    response = load_handler(action)(event, LambdaContext.for_action(action))
    return response["statusCode"], json.loads(response["body"]), response["headers"]


ALL = sorted(ACTIONS)
OK = ("success", None, False, 200)
# What a success says, for the actions whose success has something to tell.
SUCCESS_REASONS = {
    "delete_profile": "Deletion requested: Klaviyo deletes the profile and its data asynchronously"
}

# fault -> (outcome, reason, retryable, HTTP status)
FAULTS = {
    "429 short Retry-After": (Fault(status=429, retry_after=1, times=1), OK),
    "429 long Retry-After": (
        Fault(status=429, retry_after=600, times=None),
        ("error", "Klaviyo returned HTTP 429 (rate limited)", True, 503),
    ),
    "500 once": (Fault(status=500, times=1), OK),
    "500": (Fault(status=500, times=None), ("error", "Klaviyo returned HTTP 500", True, 502)),
    "503": (Fault(status=503, times=None), ("error", "Klaviyo returned HTTP 503", True, 502)),
    "504": (Fault(status=504, times=None), ("error", "Klaviyo returned HTTP 504", True, 502)),
    "drop once": (Fault(drop=True, times=1), OK),
    "drop": (
        Fault(drop=True, times=None),
        ("error", "Could not reach Klaviyo (connection failed)", True, 502),
    ),
    "challenge": (
        Fault(challenge=True, times=None),
        ("error", "Klaviyo's firewall challenged the request (HTTP 403)", True, 502),
    ),
    "invalid JSON": (
        Fault(status=200, body=b"{oops", content_type="application/vnd.api+json", times=None),
        ("error", "Klaviyo returned an unreadable response (HTTP 200)", False, 502),
    ),
    "HTML page": (
        Fault(status=200, body=b"<html></html>", content_type="text/html", times=None),
        ("error", "Klaviyo returned an unreadable response (HTTP 200)", False, 502),
    ),
    "empty body": (
        Fault(status=200, body=b"", times=None),
        ("error", "Klaviyo returned an unreadable response (HTTP 200)", False, 502),
    ),
    "200 without data": (
        Fault(status=200, body=b'{"links": {}}', times=None),
        ("error", "Klaviyo returned an unreadable response (HTTP 200)", False, 502),
    ),
}


@pytest.fixture
def recorded(runtime, monkeypatch):
    """The classified results the runtime recorded, to read their retry class."""
    seen = []
    original = runtime.record

    def record(action, result, seconds):
        seen.append(result)
        original(action, result, seconds)

    monkeypatch.setattr(runtime, "record", record)
    return seen


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("action", ALL)
def test_fault(action, fault_name, world, recorded, klaviyo_emulator):
    fault, (outcome, reason, can_retry, status) = FAULTS[fault_name]
    if outcome == "success":
        reason = SUCCESS_REASONS.get(action)
    klaviyo_emulator.faults.add(Fault(**{**fault.__dict__, "hits": 0}))
    got_status, body, headers = post(action, lead_for(action, world))
    assert (body["outcome"], body["reason"], got_status) == (outcome, reason, status)
    assert [r.retryable for r in recorded] == [can_retry]
    if status == 503:
        assert int(headers["Retry-After"]) >= 1


@pytest.mark.parametrize("action", ALL)
def test_slow_beyond_budget_is_a_timeout(action, world, runtime, klaviyo_emulator):
    klaviyo_emulator.faults.add(Fault(latency=2.0, times=None))
    status, body, _ = post(action, lead_for(action, world, timeout=1))
    assert (body["outcome"], body["reason"], status) == (
        "error",
        "Klaviyo did not respond within 1 seconds",
        504,
    )


@pytest.mark.parametrize("action", ALL)
def test_401_then_rotated_key(action, world, runtime, klaviyo_emulator, monkeypatch):
    def rotating_key(force: bool) -> str:
        return "pk_new" if force else "pk_old"  # the secret was rotated since it was read

    monkeypatch.setattr(runtime.client, "_api_key", rotating_key)
    klaviyo_emulator.set_api_keys({"pk_new": None})
    status, body, _ = post(action, lead_for(action, world))
    assert (body["outcome"], status) == ("success", 200)
    assert 401 in [r.status for r in klaviyo_emulator.requests]


@pytest.mark.parametrize("action", ALL)
def test_revoked_key(action, world, runtime, klaviyo_emulator):
    klaviyo_emulator.set_api_keys({"pk_someone_else": None})
    status, body, _ = post(action, lead_for(action, world))
    assert (body["outcome"], body["reason"], status) == (
        "error",
        "Klaviyo rejected the API key",
        502,
    )
