"""The Klaviyo client against the emulator: headers, errors, retries, budget, key rotation."""

from __future__ import annotations

import socket

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.budget import Budget
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.outcomes import Kind, Outcome, Result

KEY = "pk_test_emulator"


@pytest.fixture
def client(klaviyo_emulator, sleeps):
    return KlaviyoClient(
        klaviyo_emulator.base_url,
        "2026-07-15",
        lambda force: KEY,
        sleep=sleeps,
        pacer=Pacer(clock=sleeps.clock),
    )


def create(client, email="a@example.com", budget=30.0):
    return client.call(
        "POST",
        "/api/profiles",
        Budget(budget),
        body={"data": {"type": "profile", "attributes": {"email": email}}},
        expect=(201,),
        handled=(409,),
        idempotent=False,
    )


def problem_of(fn, *args, **kwargs) -> Result:
    with pytest.raises(Result) as caught:
        fn(*args, **kwargs)
    return caught.value


def test_sends_auth_revision_and_json_api_headers(client, klaviyo_emulator):
    assert create(client).status == 201
    (request,) = klaviyo_emulator.requests
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["authorization"] == f"Klaviyo-API-Key {KEY}"
    assert headers["revision"] == "2026-07-15"
    assert headers["content-type"] == "application/vnd.api+json"


def test_duplicate_comes_back_with_errors(client):
    create(client)
    response = create(client)
    assert response.status == 409
    assert [e.code for e in response.errors] == ["duplicate_profile"]
    assert response.errors[0].meta["duplicate_profile_id"]


def test_invalid_key_is_an_error_after_one_reread(klaviyo_emulator, sleeps):
    reads = []

    def key(force):
        reads.append(force)
        return "pk_wrong"

    client = KlaviyoClient(klaviyo_emulator.base_url, "2026-07-15", key, sleep=sleeps)
    problem = problem_of(create, client)
    assert (problem.outcome, problem.kind, problem.reason) == (
        Outcome.ERROR,
        Kind.UPSTREAM,
        "Klaviyo rejected the API key",
    )
    assert reads == [False, True]
    assert not problem.retryable


def test_rotated_key_is_read_again_once(klaviyo_emulator, sleeps):
    keys = iter(["pk_old", "pk_new"])
    current = {"key": next(keys)}

    def key(force):
        if force:
            current["key"] = next(keys)
        return current["key"]

    klaviyo_emulator.set_api_keys({"pk_new": None})
    client = KlaviyoClient(klaviyo_emulator.base_url, "2026-07-15", key, sleep=sleeps)
    assert create(client).status == 201
    assert [r.status for r in klaviyo_emulator.requests] == [401, 201]


def test_missing_scope_is_403_error(klaviyo_emulator, sleeps):
    klaviyo_emulator.set_api_keys({"pk_readonly": {"profiles:read"}})
    client = KlaviyoClient(klaviyo_emulator.base_url, "2026-07-15", lambda f: "pk_readonly")
    problem = problem_of(create, client)
    assert problem.reason == "The Klaviyo API key lacks a required scope (HTTP 403)"
    assert not problem.retryable


def test_429_waits_retry_after_then_succeeds(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(status=429, retry_after=2, times=1))
    assert create(client).status == 201
    assert sleeps == [2.0]


def test_429_longer_than_budget_is_reported_at_once(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(status=429, retry_after=60, times=None))
    problem = problem_of(create, client, budget=10.0)
    assert (problem.kind, problem.retry_after) == (Kind.THROTTLED, 60.0)
    assert sleeps == []
    assert klaviyo_emulator.calls() == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 423])
def test_retryable_statuses_back_off_then_succeed(client, klaviyo_emulator, sleeps, status):
    klaviyo_emulator.faults.add(Fault(status=status, times=2))
    response = client.call("GET", "/api/profiles", Budget(30))
    assert response.status == 200
    assert len(sleeps) == 2 and all(0.2 <= s <= 1.2 for s in sleeps)


def test_persistent_5xx_gives_up_after_max_attempts(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(status=503, times=None))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(30))
    assert (problem.reason, problem.retryable) == ("Klaviyo returned HTTP 503", True)
    assert klaviyo_emulator.calls() == client.retry.max_attempts


def test_501_is_not_retried(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(status=501, times=None))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(30))
    assert not problem.retryable and klaviyo_emulator.calls() == 1


def test_challenge_page_is_retried_as_transient(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(challenge=True, times=None))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(30))
    assert problem.reason == "Klaviyo's firewall challenged the request (HTTP 403)"
    assert problem.retryable and len(sleeps) == client.retry.max_attempts - 1


def test_dropped_connection_is_network_error(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(drop=True, times=None))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(30))
    assert problem.reason == "Could not reach Klaviyo (connection failed)"
    assert problem.retryable


def test_slow_klaviyo_times_out_within_the_budget(client, klaviyo_emulator):
    klaviyo_emulator.faults.add(Fault(latency=3.0, times=None))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(1.0))
    assert problem.reason == "Klaviyo did not respond within 1 seconds"
    assert (problem.kind, problem.retryable) == (Kind.TIMEOUT, True)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/vnd.api+json"),
        (b"<html>oops</html>", "text/html"),
        (b"", "application/vnd.api+json"),
        (b'{"links": {}}', "application/vnd.api+json"),
    ],
)
def test_unreadable_success_is_an_error_not_a_crash(client, klaviyo_emulator, body, content_type):
    klaviyo_emulator.faults.add(Fault(status=200, body=body, content_type=content_type))
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(5))
    assert problem.reason == "Klaviyo returned an unreadable response (HTTP 200)"
    assert problem.outcome is Outcome.ERROR


def test_html_500_is_retryable_with_status_in_reason(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(
        Fault(status=500, body=b"<html>down</html>", content_type="text/html", times=None)
    )
    problem = problem_of(client.call, "GET", "/api/profiles", Budget(5))
    assert problem.reason == "Klaviyo returned HTTP 500" and problem.retryable


def test_create_is_not_repeated_once_it_may_have_reached_klaviyo(client, klaviyo_emulator):
    klaviyo_emulator.faults.add(Fault(method="POST", drop=True, times=1))
    problem = problem_of(create, client)
    assert problem.effect_unknown and problem.retryable
    assert klaviyo_emulator.calls() == 1


def test_reads_are_repeated_after_a_drop(client, klaviyo_emulator, sleeps):
    klaviyo_emulator.faults.add(Fault(method="GET", drop=True, times=1))
    assert client.call("GET", "/api/profiles", Budget(5)).status == 200
    assert len(sleeps) == 1


def test_email_with_plus_is_percent_encoded(client, klaviyo_emulator):
    create(client, email="a+b@example.com")
    response = client.call(
        "GET",
        "/api/profiles",
        Budget(5),
        query={"filter": 'equals(email,"a+b@example.com")'},
    )
    assert len(response.data) == 1


def test_pacer_spaces_calls_by_the_burst_limit():
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.wait_for("add_profiles_to_list") == 0.0
    pacer.sent("add_profiles_to_list")
    assert pacer.wait_for("add_profiles_to_list") == pytest.approx(
        0.11
    )  # 10 per second, with a margin
    assert pacer.wait_for("unknown") == 0.0
    now[0] = 0.11
    assert pacer.wait_for("add_profiles_to_list") == pytest.approx(0.0)


def test_check_pace_refuses_a_wait_beyond_the_budget(client):
    client.pacer.observe(
        "add_profiles_to_list", 200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "50"}
    )
    assert 49 <= client.check_pace("add_profiles_to_list", Budget(70)) <= 60  # the next window
    problem = problem_of(client.check_pace, "add_profiles_to_list", Budget(10))
    assert (problem.kind, problem.retryable) == (Kind.THROTTLED, True)


def test_list_add_pace_is_checked_before_the_profile_search(run, klaviyo_emulator, runtime):
    list_id = klaviyo_emulator.create_list("Newsletter")
    klaviyo_emulator.create_profile(email="a@example.com")
    runtime.client.pacer.observe(
        "add_profiles_to_list", 200, {"RateLimit-Remaining": "0", "RateLimit-Reset": "500"}
    )
    fields = run(
        "add_profile_to_list",
        {"email": "a@example.com", "klaviyo.list_id": list_id, "timeout_seconds": 20},
    )
    assert fields["outcome"] == "error" and run.last.retryable
    assert klaviyo_emulator.calls("get_profiles") == 0


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
