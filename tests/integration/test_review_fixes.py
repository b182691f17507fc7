"""Defects found in review, each pinned by the test that would have caught it."""

from __future__ import annotations

import socket

import pytest

from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import LambdaContext, eventbridge_event, load_handler
from klaviyo_leads.actions import ACTIONS
from klaviyo_leads.budget import Budget
from klaviyo_leads.coalescing import coalesce
from klaviyo_leads.klaviyo import KlaviyoClient
from klaviyo_leads.outcomes import Kind, Result


def test_pacing_reads_klaviyos_rate_limit_headers_whatever_their_case(runtime, klaviyo_emulator):
    klaviyo_emulator.set_rate_limits(True, overrides={"get_profiles": (50, 2)})
    runtime.client.call("GET", "/api/profiles", Budget(30))
    # One call of two is left this minute: the next waits its share instead of a 429.
    assert runtime.client.pacer.wait_for("get_profiles") > 20.0
    assert [r.status for r in klaviyo_emulator.requests] == [200]


def test_connection_refused_is_a_network_error_not_a_timeout():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens
    client = KlaviyoClient(
        f"http://127.0.0.1:{port}", "2026-07-15", lambda f: "pk", sleep=lambda s: None
    )
    with pytest.raises(Result) as caught:
        client.call("GET", "/api/profiles", Budget(30))
    assert caught.value.reason == "Could not reach Klaviyo (connection failed)"
    assert caught.value.kind is Kind.TRANSIENT


def test_one_unsearchable_external_id_fails_alone_in_a_bulk_add(runtime, klaviyo_emulator):
    list_id = klaviyo_emulator.create_list("Newsletter")
    ids = [klaviyo_emulator.create_profile(external_id=f"x{i}") for i in range(3)]
    leads = [{"reference": f"x{i}", "klaviyo.list_id": list_id} for i in range(3)]
    leads.insert(1, {"reference": "a'b\"c", "klaviyo.list_id": list_id})
    results = coalesce(runtime, ACTIONS["add_profile_to_list"], leads, remaining_seconds=300)
    assert [p.fields["outcome"] for p in results] == ["success", "failure", "success", "success"]
    assert klaviyo_emulator.list_members(list_id) == set(ids)


def test_an_unknown_list_is_looked_up_once_per_batch(runtime, klaviyo_emulator):
    leads = [{"email": f"l{i}@example.com", "klaviyo.list_id": "Nope12"} for i in range(50)]
    results = coalesce(runtime, ACTIONS["subscribe_profile_to_list"], leads, remaining_seconds=300)
    assert {p.fields["outcome"] for p in results} == {"error"}
    assert klaviyo_emulator.calls("get_list") == 1


def test_unreadable_201_on_create_finds_the_profile_it_made(run, klaviyo_emulator):
    klaviyo_emulator.faults.add(
        Fault(operation_id="create_profile", after=True, status=201, body=b"")
    )
    fields = run("create_profile", {"email": "made@example.com"})
    assert fields["outcome"] == "success"
    assert [p["id"] for p in klaviyo_emulator.profiles()] == [fields["id"]]


def test_several_leads_are_not_started_with_too_little_time(runtime, klaviyo_emulator):
    event = {"leads": [{"email": f"t{i}@example.com"} for i in range(3)]}
    handler = load_handler("create_profile")
    answer = handler(event, LambdaContext.for_action("create_profile", timeout_seconds=5))
    assert {r["reason"] for r in answer["results"]} == {
        "Not started: too little time left in the invocation"
    }
    assert klaviyo_emulator.calls() == 0


class RefusingEvents:
    def put_events(self, Entries):
        return {"FailedEntryCount": len(Entries), "Entries": [{"ErrorCode": "X"}] * len(Entries)}


def test_unpublished_eventbridge_results_are_counted_and_logged(runtime, monkeypatch):
    from klaviyo_leads import triggers
    from klaviyo_leads.publishing import ResultPublisher

    counted, logged = [], []
    monkeypatch.setattr(triggers, "count", lambda name, value=1: counted.append((name, value)))
    monkeypatch.setattr(triggers.logger, "error", lambda message, **kw: logged.append(message))
    runtime.publisher = ResultPublisher("bus", client_factory=RefusingEvents)
    event = eventbridge_event("get_profiles lead", {"email": "a@example.com"}, source="crm")
    load_handler("get_profiles")(event, LambdaContext.for_action("get_profiles"))
    assert ("ResultsNotPublished", 1) in counted
    assert logged == ["Results could not be published"]
