"""Injected faults: statuses, latency, dropped connections, challenges, garbage bodies."""

from __future__ import annotations

import http.client
import time

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import Fault, KlaviyoEmulator


def test_status_fault_sends_klaviyos_error_body(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(operation_id="get_profiles", status=503))
    reply = api.get("/api/profiles")
    assert reply.status == 503
    assert reply.headers["content-type"] == "application/vnd.api+json"
    assert reply.error["code"] == "service_unavailable"
    assert reply.error["status"] == 503
    assert api.get("/api/profiles").status == 200  # times=1 by default


def test_429_fault_carries_retry_after(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(path=r"^/api/profiles/?$", status=429, retry_after=7))
    reply = api.get("/api/profiles")
    assert reply.status == 429
    assert reply.headers["retry-after"] == "7"
    assert reply.error["detail"] == "Request was throttled. Expected available in 7 seconds."
    default = Fault(status=429)
    emu.faults.add(default)
    assert api.get("/api/profiles").headers["retry-after"] == "1"


def test_faults_apply_before_auth(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(status=500))
    reply = api.get("/api/profiles", key="pk_not_a_key")
    assert reply.status == 500
    assert reply.error["code"] == "error"


def test_latency_then_normal_answer(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(method="POST", latency=0.3))
    started = time.monotonic()
    reply = api.create_profile(email="slow@example.com")
    elapsed = time.monotonic() - started
    assert reply.status == 201
    assert elapsed >= 0.3
    assert len(emu.profiles()) == 1


def test_latency_can_exceed_a_client_timeout(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(latency=0.5))
    with pytest.raises(TimeoutError):
        api.get("/api/profiles", timeout=0.1)


def test_drop_closes_the_connection_without_an_answer(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(operation_id="create_profile", drop=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        api.create_profile(email="dropped@example.com")
    assert emu.profiles() == []  # dropped before processing
    assert emu.requests[-1].status == 0
    assert api.create_profile(email="dropped@example.com").status == 201


def test_cloudflare_challenge(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(challenge=True))
    reply = api.get("/api/profiles")
    assert reply.status == 403
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.headers["cf-mitigated"] == "challenge"
    assert b"<html" in reply.body


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "body"),
    [
        (Fault(body=b'{"data": [', status=200), 200, "application/vnd.api+json", b'{"data": ['),
        (
            Fault(
                body=b"<html><body>Server Error</body></html>", status=500, content_type="text/html"
            ),
            500,
            "text/html",
            b"<html><body>Server Error</body></html>",
        ),
        (Fault(body=b""), 200, "application/vnd.api+json", b""),
        (Fault(body=b'{"links": {}}'), 200, "application/vnd.api+json", b'{"links": {}}'),
    ],
)
def test_raw_bodies(
    api: Api, emu: KlaviyoEmulator, fault: Fault, status: int, content_type: str, body: bytes
) -> None:
    emu.faults.add(fault)
    reply = api.get("/api/profiles")
    assert reply.status == status
    assert reply.headers["content-type"].startswith(content_type)
    assert reply.body == body


def test_times_counts_hits_and_none_is_forever(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(status=502, times=2))
    assert [api.get("/api/profiles").status for _ in range(3)] == [502, 502, 200]
    emu.faults.add(Fault(status=504, times=None))
    assert {api.get("/api/profiles").status for _ in range(5)} == {504}
    emu.faults.clear()
    assert api.get("/api/profiles").status == 200


def test_faults_match_in_order_and_by_fields(api: Api, emu: KlaviyoEmulator) -> None:
    emu.faults.add(Fault(method="POST", status=500, times=None))
    emu.faults.add(Fault(path="/api/lists/", status=404, times=None))
    emu.faults.add(Fault(status=503, times=None))
    assert api.create_profile(email="x@example.com").status == 500
    assert api.get("/api/lists/abc").status == 404
    assert api.get("/api/profiles").status == 503


def _pattern(seed: int) -> list[int]:
    with KlaviyoEmulator(seed=seed) as emu:
        emu.faults.add(Fault(status=500, times=None, probability=0.3))
        api = Api(emu.base_url)
        return [api.get("/api/profiles").status for _ in range(40)]


def test_probability_is_random_but_seeded() -> None:
    first = _pattern(1234)
    assert first == _pattern(1234)
    failures = first.count(500)
    assert 3 <= failures <= 25
    assert set(first) == {200, 500}


def test_fault_requests_are_recorded(api: Api, emu: KlaviyoEmulator) -> None:
    fault = emu.faults.add(Fault(status=500))
    api.get("/api/profiles")
    recorded = emu.requests[-1]
    assert (recorded.status, recorded.operation_id, recorded.fault) == (500, "get_profiles", fault)
    assert recorded.response_json()["errors"][0]["code"] == "error"
    assert recorded.headers["revision"] == recorded.headers["Revision"] == "2026-07-15"
    assert recorded.response_headers["content-type"] == "application/vnd.api+json"
    assert recorded.query == {}


def test_invalid_fault_path_is_rejected_at_registration(emu: KlaviyoEmulator) -> None:
    with pytest.raises(Exception, match=r"unterminated|missing"):
        emu.faults.add(Fault(path="(unclosed"))


def test_fault_headers_replace_the_answers_own(api: Api, emu: KlaviyoEmulator) -> None:
    """Values no well-behaved server sends, verbatim: on the fault's own answer, and on the
    normal answer when the fault replaces nothing (its ``RateLimit-*`` headers included)."""
    emu.faults.add(Fault(status=429, headers={"Retry-After": "inf"}))
    throttled = api.get("/api/profiles")
    assert (throttled.status, throttled.headers["retry-after"]) == (429, "inf")
    emu.faults.add(Fault(headers={"RateLimit-Reset": "1700000030"}))
    normal = api.get("/api/profiles")
    assert (normal.status, normal.headers["ratelimit-reset"]) == (200, "1700000030")
    assert normal.headers["ratelimit-remaining"].isdigit()
    posted = Fault.from_json({"status": 503, "headers": {"Retry-After": "-5"}})
    assert Fault.from_json(posted.to_json()) == posted
