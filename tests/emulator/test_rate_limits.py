"""Klaviyo's limits as Klaviyo counts them: per account, fixed windows, headers, 429s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator
from devtools.klaviyo_emulator.ratelimit import Bucket, RateLimiter

RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[KlaviyoEmulator]:
    keys = {"pk_a": None, "pk_b": None, DEFAULT_API_KEY: None}
    with KlaviyoEmulator(keys, rate_limits=True, clock=clock) as emu:
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
    assert [_add(api, list_id, pid) for _ in range(10)] == [204] * 10  # 10/s for this operation
    clock.advance(0.4)
    reply = api.post(
        f"/api/lists/{list_id}/relationships/profiles",
        {"data": [{"type": "profile", "id": pid}]},
        key="pk_a",
    )
    assert reply.status == 429
    assert reply.headers["retry-after"] == "1"
    assert not any(h in reply.headers for h in RATE_HEADERS)
    err = reply.error
    assert err["code"] == "throttled"
    assert err["title"] == "Request was throttled."
    assert err["detail"] == "Request was throttled. Expected available in 1 second."
    assert err["source"] == {"pointer": "/data"}
    clock.advance(0.6)  # a second after the burst window opened: a new one
    assert _add(api, list_id, pid) == 204


def test_every_answer_but_429_carries_the_steady_window(
    limited: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(limited.base_url)
    pid = limited.create_profile(email="a@example.com")
    answers = [
        api.get("/api/profiles"),  # 200
        api.create_profile(email="b@example.com"),  # 201
        api.create_profile(email="a@example.com"),  # 409
        api.create_profile(email="bad"),  # 400
        api.get("/api/profiles/01ZZZZZZZZZZZZZZZZZZZZZZZZ"),  # 404
        api.post(f"/api/lists/{limited.create_list('L')}/relationships/profiles", {"data": []}),
        api.post("/api/profiles", b"{}", content_type="text/plain"),  # 415
        api.get("/api/profiles", revision="2099-01-01"),  # 404 unknown revision
    ]
    assert [a.status for a in answers] == [200, 201, 409, 400, 404, 400, 415, 404]
    for answer in answers:
        assert all(h in answer.headers for h in RATE_HEADERS), answer
    assert pid


@pytest.mark.usefixtures("bad_requests_ok")
def test_headers_are_sent_with_enforcement_off(emu: KlaviyoEmulator, api: Api) -> None:
    """The switch only decides whether over-limit requests are refused."""
    emu.set_rate_limits(False, {"get_profiles": (2, 3)})
    replies = [api.get("/api/profiles") for _ in range(5)]
    assert [r.status for r in replies] == [200] * 5
    assert [r.headers["ratelimit-limit"] for r in replies] == ["3"] * 5
    assert [r.headers["ratelimit-remaining"] for r in replies] == ["2", "1", "0", "0", "0"]


def test_steady_window_headers_and_reset(limited: KlaviyoEmulator, clock: FakeClock) -> None:
    api = Api(limited.base_url)
    first = api.get("/api/profiles", key="pk_a")
    assert first.status == 200
    assert first.headers["ratelimit-limit"] == "750"  # the spec's steady limit (docs say 700)
    assert first.headers["ratelimit-remaining"] == "749"
    assert first.headers["ratelimit-reset"] == "60"
    clock.advance(15.2)
    second = api.get("/api/profiles", key="pk_b")
    assert second.headers["ratelimit-remaining"] == "748"  # both keys count for the account
    assert second.headers["ratelimit-reset"] == "45"  # whole seconds, rounded up
    clock.advance(44.8)  # a minute after the window opened: a new one
    third = api.get("/api/profiles", key="pk_a")
    assert (third.headers["ratelimit-remaining"], third.headers["ratelimit-reset"]) == ("749", "60")


def test_windows_open_with_the_first_request_not_on_the_clocks_minute(
    limited: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(limited.base_url)
    clock.advance(59.5)
    assert api.get("/api/profiles").headers["ratelimit-reset"] == "60"
    clock.advance(1)
    assert api.get("/api/profiles").headers["ratelimit-reset"] == "59"


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


def test_one_account_two_keys_share_the_windows(limited: KlaviyoEmulator) -> None:
    api = Api(limited.base_url)
    list_id = limited.create_list("L")
    pid = limited.create_profile(email="a@example.com")
    assert [_add(api, list_id, pid, key=k) for k in ["pk_a", "pk_b"] * 5] == [204] * 10
    assert _add(api, list_id, pid, key="pk_b") == 429
    assert _add(api, list_id, pid, key="pk_a") == 429
    # Each operation has its own windows.
    assert api.get("/api/profiles", key="pk_a").status == 200


def test_parameter_limits_from_the_operations_prose(limited: KlaviyoEmulator) -> None:
    """get_profile: "Rate limits when using the `include=list` parameter ...: 1/s, 15/m"."""
    api = Api(limited.base_url)
    pid = limited.create_profile(email="a@example.com")
    with_lists = {"include": "lists"}
    assert api.get(f"/api/profiles/{pid}", query=with_lists).status == 200
    assert api.get(f"/api/profiles/{pid}", query=with_lists).status == 429
    assert api.get(f"/api/profiles/{pid}").status == 200


def test_daily_window_from_the_spec(limited: KlaviyoEmulator, clock: FakeClock) -> None:
    """create_list declares 150/d as well as 10/s and 150/m."""
    api = Api(limited.base_url)
    body = {"data": {"type": "list", "attributes": {"name": "L"}}}
    created = 0
    for _ in range(16):
        for _ in range(10):
            created += api.post("/api/lists", body).status == 201
        clock.advance(60)
    assert created == 150
    blocked = api.post("/api/lists", body)
    assert blocked.status == 429
    assert int(blocked.headers["retry-after"]) > 60


def test_overrides_and_switching_off(limited: KlaviyoEmulator) -> None:
    api = Api(limited.base_url)
    limited.set_rate_limits(True, {"get_profiles": (2, 3)})
    assert [api.get("/api/profiles", key="pk_a").status for _ in range(3)] == [200, 200, 429]
    limited.set_rate_limits(False)
    reply = api.get("/api/profiles", key="pk_a")
    assert reply.status == 200
    assert reply.headers["ratelimit-limit"] == "3"


def test_reset_restores_enforcement(limited: KlaviyoEmulator) -> None:
    limited.configure(rate_limits=False)
    limited.reset()
    assert limited.config.rate_limits is True


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
    bucket = [Bucket("op", {"burst": 2, "steady": 5})]
    assert not limiter.check(bucket, enforce=True).refused
    assert not limiter.check(bucket, enforce=True).refused
    denied = limiter.check(bucket, enforce=True)
    assert (denied.refused, denied.retry_after, denied.headers) == (True, 1, {})
    clock.advance(1.0)
    allowed = limiter.check(bucket, enforce=True)
    assert allowed.headers["RateLimit-Remaining"] == "2"
    assert allowed.headers["RateLimit-Reset"] == "59"
    counted = limiter.check(bucket, enforce=False)
    over = limiter.check(bucket, enforce=False)
    assert not over.refused and counted.headers["RateLimit-Remaining"] == "1"
    assert over.headers["RateLimit-Remaining"] == "0"
