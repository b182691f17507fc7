"""Events: POST /api/events (create_event) and POST /api/event-bulk-create-jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bulk_bodies import EVENT_JOBS, EVENTS, bulk_events, event, event_attributes
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator


def test_an_event_is_recorded_for_a_new_profile(api: Api, emu: KlaviyoEmulator) -> None:
    body = event(
        {"email": "lead@example.com", "first_name": "Lee", "properties": {"source": "form"}},
        properties={"form": "Acme", "answers": [1, 2]},
        value=12.5,
        value_currency="USD",
        time="2026-07-01T12:00:00.750+00:00",
        unique_id="lead-1",
    )
    reply = api.post(EVENTS, body)
    assert (reply.status, reply.body) == (202, b"")
    (profile,) = emu.profiles()
    assert profile["attributes"]["first_name"] == "Lee"
    assert profile["attributes"]["properties"] == {"source": "form"}
    assert profile["attributes"]["last_event_date"] == "2026-07-01T12:00:00+00:00"
    (recorded,) = emu.events()
    assert recorded == {
        **recorded,
        "metric": "Lead Received",
        "profile_id": profile["id"],
        "properties": {"form": "Acme", "answers": [1, 2]},
        "time": "2026-07-01T12:00:00+00:00",  # "The time is truncated to the second"
        "value": 12.5,
        "value_currency": "USD",
        "unique_id": "lead-1",
        "backfill": False,
    }


def test_the_event_finds_and_updates_an_existing_profile(api: Api, emu: KlaviyoEmulator) -> None:
    by_email = emu.create_profile(email="known@example.com", first_name="Old")
    by_phone = emu.create_profile(phone_number="+15005550006")
    by_external = emu.create_profile(external_id="crm-9")
    assert (
        api.post(EVENTS, event({"email": "KNOWN@example.com", "first_name": "New"})).status == 202
    )
    assert api.post(EVENTS, event({"phone_number": "+15005550006"}, metric="Called")).status == 202
    assert api.post(EVENTS, event({"external_id": "crm-9"}, metric="Synced")).status == 202
    assert api.post(EVENTS, event({}, profile_id=by_email, metric="By id")).status == 202
    assert [(e["metric"], e["profile_id"]) for e in emu.events()] == [
        ("Lead Received", by_email),
        ("Called", by_phone),
        ("Synced", by_external),
        ("By id", by_email),
    ]
    assert emu.profile(by_email)["attributes"]["first_name"] == "New"
    assert len(emu.profiles()) == 3


def test_an_identifier_another_profile_holds_stays_where_it_is(
    api: Api, emu: KlaviyoEmulator
) -> None:
    mail = emu.create_profile(email="mail@example.com")
    phone = emu.create_profile(phone_number="+15005550006")
    body = event({"email": "mail@example.com", "phone_number": "+15005550006", "title": "CTO"})
    assert api.post(EVENTS, body).status == 202
    assert [e["profile_id"] for e in emu.events()] == [mail]
    assert emu.profile(mail)["attributes"]["phone_number"] is None
    assert emu.profile(mail)["attributes"]["title"] == "CTO"
    assert emu.profile(phone)["attributes"]["phone_number"] == "+15005550006"


def test_same_unique_id_for_the_same_metric_and_profile_is_recorded_once(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """The spec: "only the first processed event will be recorded"."""
    first = event(unique_id="order-1", properties={"n": 1})
    again = event(unique_id="order-1", properties={"n": 2})
    other_metric = event(unique_id="order-1", metric="Order Shipped")
    other_profile = event({"email": "someone@example.com"}, unique_id="order-1")
    for body in (first, again, other_metric, other_profile):
        assert api.post(EVENTS, body).status == 202
    recorded = [(e["metric"], e["properties"]) for e in emu.events()]
    assert recorded == [
        ("Lead Received", {"n": 1}),
        ("Order Shipped", {"form": "Acme"}),
        ("Lead Received", {"form": "Acme"}),
    ]


def test_without_unique_id_the_time_to_the_second_deduplicates(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """The spec: "If this is not present, this will use the time to the second"."""
    at = "2026-07-01T12:00:00.100+00:00"
    same_second = "2026-07-01T12:00:00.900+00:00"
    next_second = "2026-07-01T12:00:01+00:00"
    for moment in (at, same_second, next_second):
        assert api.post(EVENTS, event(time=moment)).status == 202
    assert [e["time"] for e in emu.events()] == [
        "2026-07-01T12:00:00+00:00",
        "2026-07-01T12:00:01+00:00",
    ]


def test_events_are_recorded_after_the_event_delay() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(clock=clock, event_delay=2) as emu:
        api = Api(emu.base_url)
        assert api.post(EVENTS, event()).status == 202
        assert emu.events() == [] and emu.profiles() == []
        clock.advance(2)
        (recorded,) = emu.events()
        assert recorded["time"] == "2027-01-15T08:00:00+00:00"  # received, on the clock


def test_event_profiles_reach_search_after_the_search_lag() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(clock=clock, search_lag=5) as emu:
        api = Api(emu.base_url)
        assert api.post(EVENTS, event({"email": "found@example.com"})).status == 202
        query = {"filter": 'equals(email,"found@example.com")'}
        assert api.get("/api/profiles", query=query).json()["data"] == []
        clock.advance(5)
        assert len(api.get("/api/profiles", query=query).json()["data"]) == 1


def test_bulk_events_for_several_profiles(api: Api, emu: KlaviyoEmulator) -> None:
    body = bulk_events(
        (
            {"email": "one@example.com"},
            [event_attributes(unique_id="a"), event_attributes(unique_id="b")],
        ),
        ({"phone_number": "+15005550006"}, [event_attributes(metric="Called")]),
    )
    reply = api.post(EVENT_JOBS, body)
    assert (reply.status, reply.body) == (202, b"")
    assert [(e["metric"], e["unique_id"]) for e in emu.events()] == [
        ("Lead Received", "a"),
        ("Lead Received", "b"),
        ("Called", None),
    ]
    assert len(emu.profiles()) == 2


@pytest.mark.usefixtures("bad_requests_ok")
def test_a_repeated_event_in_a_bulk_request_refuses_the_whole_request(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """The spec (bulk): "the request will fail and no events will be processed"."""
    body = bulk_events(
        ({"email": "one@example.com"}, [event_attributes(unique_id="x")]),
        ({"email": "ONE@example.com"}, [event_attributes(unique_id="x")]),
    )
    reply = api.post(EVENT_JOBS, body)
    assert reply.status == 400
    assert reply.error["source"] == {
        "pointer": "/data/attributes/events-bulk-create/data/1/attributes/events/data/0"
        "/attributes/unique_id"
    }
    assert emu.events() == [] and emu.profiles() == []


@pytest.mark.usefixtures("bad_requests_ok")
def test_at_most_1000_events_per_bulk_request(api: Api, emu: KlaviyoEmulator) -> None:
    """The spec: "Accepts up to 1,000 events per request"."""
    many = [event_attributes(unique_id=str(i)) for i in range(1001)]
    reply = api.post(EVENT_JOBS, bulk_events(({"email": "m@example.com"}, many)))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/attributes/events-bulk-create/data"}
    fits = bulk_events(({"email": "m@example.com"}, many[:1000]))
    assert api.post(EVENT_JOBS, fits).status == 202
    assert len(emu.events()) == 1000


PROPERTIES = "/data/attributes/properties"


def _from_now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"in": value}
    return value


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (event(properties={f"p{i}": i for i in range(301)}), PROPERTIES),
        (event(properties={"big": "x" * (100 * 1024 + 1)}), f"{PROPERTIES}/big"),
        (event(properties={"list": list(range(4001))}), f"{PROPERTIES}/list"),
        (event(properties=_nested(11)), PROPERTIES + "/in" * 10 + "/leaf"),
        (event(time="1999-12-31T23:59:59+00:00"), "/data/attributes/time"),
        (event(time=_from_now(days=367)), "/data/attributes/time"),
        (event(metric="M" * 128), "/data/attributes/metric/data/attributes/name"),
        (event(value="9.99"), "/data/attributes/value"),
        (event({"first_name": "No identifier"}), "/data/attributes/profile/data/attributes"),
        (event({"email": "not-an-email"}), "/data/attributes/profile/data/attributes/email"),
        (event({}, profile_id="01ZZZZZZZZZZZZZZZZZZZZZZZZ"), "/data/attributes/profile/data/id"),
    ],
)
def test_ingestion_limits_and_bad_events_are_400(
    api: Api, emu: KlaviyoEmulator, body: dict[str, Any], pointer: str
) -> None:
    reply = api.post(EVENTS, body)
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert reply.error["source"] == {"pointer": pointer}
    assert emu.events() == []


def test_the_limits_at_their_edges_are_fine(api: Api, emu: KlaviyoEmulator) -> None:
    for body in (
        event(properties={f"p{i}": i for i in range(300)}),
        event(properties={"big": "x" * (100 * 1024)}, metric="Big"),
        event(properties={"list": list(range(4000))}, metric="List"),
        event(properties=_nested(10), metric="Deep"),
        event(time="2000-01-01T00:00:00+00:00", metric="Old"),
        event(time=_from_now(days=364), metric="Planned"),
        event(metric="M" * 127),
    ):
        assert api.post(EVENTS, body).status == 202
    assert len(emu.events()) == 7


@pytest.mark.usefixtures("bad_requests_ok")
def test_the_spec_limits_are_looser(api: Api, emu: KlaviyoEmulator) -> None:
    """event_limits="spec": the document's 400 properties and year 1990."""
    four_hundred = event(properties={f"p{i}": i for i in range(400)})
    from_1995 = event(time="1995-06-01T00:00:00+00:00", metric="Old")
    assert api.post(EVENTS, four_hundred).status == 400
    emu.configure(event_limits="spec")
    assert api.post(EVENTS, four_hundred).status == 202
    assert api.post(EVENTS, from_1995).status == 202
    assert api.post(EVENTS, event(properties={f"p{i}": i for i in range(401)})).status == 400


@pytest.mark.usefixtures("bad_requests_ok")
def test_needs_the_events_scope(api: Api, emu: KlaviyoEmulator) -> None:
    emu.set_api_keys({"pk_profiles": {"profiles:write"}})
    reply = api.post(EVENTS, event(), key="pk_profiles")
    assert reply.status == 403
    assert "events:write" in reply.error["detail"]
