"""Burst and steady windows, headers and 429 bodies, driven by a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[KlaviyoEmulator]:
    with KlaviyoEmulator({"pk_a": None, "pk_b": None}, rate_limits=True, clock=clock) as emu:
        yield emu


def _add(api: Api, list_id: str, pid: str, key: str = "pk_a") -> int:
    body = {"data": [{"type": "profile", "id": pid}]}
    return api.post(f"/api/lists/{list_id}/relationships/profiles", body, key=key).status


def test_burst_limit_429_with_retry_after_and_klaviyo_body(
    limited: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(limited.base_url)
    list_id = limited.create_list("L")
    pid = limited.create_profile(email="a@example.com")
    assert [_add(api, list_id, pid) for _ in range(10)] == [204] * 10  # tier M burst: 10/s
    clock.advance(0.4)
    reply = api.post(
        f"/api/lists/{list_id}/relationships/profiles",
        {"data": [{"type": "profile", "id": pid}]},
        key="pk_a",
    )
    assert reply.status == 429
    assert reply.headers["retry-after"] == "1"
    assert not any(h.startswith("ratelimit-") for h in reply.headers)
    err = reply.error
    assert err["code"] == "throttled"
    assert err["title"] == "Request was throttled."
    assert err["detail"] == "Request was throttled. Expected available in 1 second."
    assert err["source"] == {"pointer": "/data"}
    clock.advance(0.6)  # the burst window has passed
    assert _add(api, list_id, pid) == 204


def test_success_headers_describe_the_steady_window(
    limited: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(limited.base_url)
    first = api.get("/api/profiles", key="pk_a")
    assert first.status == 200
    assert first.headers["ratelimit-limit"] == "750"
    assert first.headers["ratelimit-remaining"] == "749"
    assert first.headers["ratelimit-reset"] == "60"
    clock.advance(15.2)
    second = api.get("/api/profiles", key="pk_a")
    assert second.headers["ratelimit-remaining"] == "748"
    assert second.headers["ratelimit-reset"] == "45"


def test_steady_limit_and_retry_after(limited: KlaviyoEmulator, clock: FakeClock) -> None:
    api = Api(limited.base_url)
    list_id = limited.create_list("L")
    pid = limited.create_profile(email="a@example.com")
    statuses = []
    for _ in range(15):  # 15 bursts of 10 = the steady 150/m
        statuses += [_add(api, list_id, pid) for _ in range(10)]
        clock.advance(1.0)
    assert statuses == [204] * 150
    blocked = api.post(
        f"/api/lists/{list_id}/relationships/profiles",
        {"data": [{"type": "profile", "id": pid}]},
        key="pk_a",
    )
    assert blocked.status == 429
    assert blocked.headers["retry-after"] == "45"  # the minute began 15 s ago
    assert blocked.error["detail"] == "Request was throttled. Expected available in 45 seconds."
    clock.advance(45)
    assert _add(api, list_id, pid) == 204


def test_limits_are_per_key_and_per_operation(limited: KlaviyoEmulator) -> None:
    api = Api(limited.base_url)
    list_id = limited.create_list("L")
    pid = limited.create_profile(email="a@example.com")
    for _ in range(10):
        _add(api, list_id, pid, key="pk_a")
    assert _add(api, list_id, pid, key="pk_a") == 429
    assert _add(api, list_id, pid, key="pk_b") == 204
    assert api.get("/api/profiles", key="pk_a").status == 200


def test_overrides_and_switching_off(limited: KlaviyoEmulator) -> None:
    api = Api(limited.base_url)
    limited.set_rate_limits(True, {"get_profiles": (2, 3)})
    assert [api.get("/api/profiles", key="pk_a").status for _ in range(3)] == [200, 200, 429]
    limited.set_rate_limits(False)
    reply = api.get("/api/profiles", key="pk_a")
    assert reply.status == 200
    assert "ratelimit-limit" not in reply.headers


def test_rate_limited_requests_are_recorded(limited: KlaviyoEmulator) -> None:
    api = Api(limited.base_url)
    limited.set_rate_limits(True, {"get_profiles": (1, 10)})
    api.get("/api/profiles", key="pk_a")
    api.get("/api/profiles", key="pk_a")
    assert [r.status for r in limited.requests] == [200, 429]
    assert limited.calls("get_profiles") == 2


def test_fixture_emulator_has_limits_off(api: Api) -> None:
    statuses = {api.get("/api/profiles").status for _ in range(80)}
    assert statuses == {200}


def test_limiter_window_arithmetic() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.check("k", "op", 2, 5).allowed
    assert limiter.check("k", "op", 2, 5).allowed
    denied = limiter.check("k", "op", 2, 5)
    assert not denied.allowed
    assert denied.headers == {"Retry-After": "1"}
    clock.advance(1.0)
    allowed = limiter.check("k", "op", 2, 5)
    assert allowed.headers["RateLimit-Remaining"] == "2"
    assert allowed.headers["RateLimit-Reset"] == "59"
