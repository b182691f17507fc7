"""What Klaviyo shows later: filtered search after ``search_lag``, segments after
``segment_lag``, rule-based segments after a profile changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.errors import ApiError


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lagging(clock: FakeClock) -> Iterator[KlaviyoEmulator]:
    with KlaviyoEmulator(clock=clock, search_lag=5, segment_lag=30) as emu:
        yield emu


def _search(api: Api, expression: str) -> list[str]:
    reply = api.get("/api/profiles", query={"filter": expression})
    assert reply.status == 200
    return [item["id"] for item in reply.json()["data"]]


def test_created_profile_is_missing_from_search_until_the_lag(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(lagging.base_url)
    created = api.create_profile(email="new@example.com")
    pid = created.json()["data"]["id"]
    assert _search(api, 'equals(email,"new@example.com")') == []
    assert api.get(f"/api/profiles/{pid}").status == 200  # by id: at once
    duplicate = api.create_profile(email="new@example.com")
    assert duplicate.status == 409  # identity: at once
    assert duplicate.error["meta"] == {"duplicate_profile_id": pid}
    clock.advance(4.5)
    assert _search(api, 'equals(email,"new@example.com")') == []
    clock.advance(0.5)
    assert _search(api, 'equals(email,"new@example.com")') == [pid]


def test_updated_profile_is_found_by_its_old_value_until_the_lag(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(lagging.base_url)
    pid = lagging.create_profile(email="old@example.com")  # seeded: indexed already
    assert _search(api, 'equals(email,"old@example.com")') == [pid]
    patch = {"data": {"type": "profile", "id": pid, "attributes": {"email": "new@example.com"}}}
    assert api.patch(f"/api/profiles/{pid}", patch).status == 200
    assert _search(api, 'equals(email,"old@example.com")') == [pid]
    assert _search(api, 'equals(email,"new@example.com")') == []
    clock.advance(5)
    assert _search(api, 'equals(email,"old@example.com")') == []
    assert _search(api, 'equals(email,"new@example.com")') == [pid]


def test_create_or_update_lags_in_search_like_create(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(lagging.base_url)

    def upsert(**attributes: str) -> str:
        reply = api.post(
            "/api/profile-import", {"data": {"type": "profile", "attributes": attributes}}
        )
        assert reply.status in (200, 201)
        return str(reply.json()["data"]["id"])

    pid = upsert(email="up@example.com")
    assert _search(api, 'equals(email,"up@example.com")') == []
    clock.advance(5)
    assert _search(api, 'equals(email,"up@example.com")') == [pid]
    assert upsert(email="up@example.com", external_id="crm-5") == pid  # an update: 200
    assert _search(api, 'equals(external_id,"crm-5")') == []
    clock.advance(5)
    assert _search(api, 'equals(external_id,"crm-5")') == [pid]


def test_unfiltered_listing_does_not_lag(lagging: KlaviyoEmulator) -> None:
    api = Api(lagging.base_url)
    pid = api.create_profile(email="n@example.com").json()["data"]["id"]
    assert [p["id"] for p in api.get("/api/profiles").json()["data"]] == [pid]


def test_seeded_segment_membership_shows_after_the_lag(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(lagging.base_url)
    segment = lagging.create_segment("VIP", segment_id="VIPseg")
    pid = lagging.create_profile(email="vip@example.com")
    lagging.add_to_segment(segment, pid)
    query = {"filter": f"equals(profile_id,['{pid}'])"}
    assert api.get("/api/segments/VIPseg/profiles", query=query).json()["data"] == []
    assert lagging.segment_members(segment) == set()
    clock.advance(30)
    assert [
        p["id"] for p in api.get("/api/segments/VIPseg/profiles", query=query).json()["data"]
    ] == [pid]
    lagging.remove_from_segment(segment, pid)
    assert lagging.segment_members(segment) == {pid}
    clock.advance(30)
    assert lagging.segment_members(segment) == set()


def test_rule_based_segment_follows_profile_changes_after_the_lag(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(lagging.base_url)
    gold = [{"field": "properties.tier", "operator": "equals", "value": "gold"}]
    segment = lagging.create_segment("Gold", definition=gold)
    pid = api.create_profile(email="g@example.com", properties={"tier": "silver"}).json()["data"][
        "id"
    ]
    patch = {"data": {"type": "profile", "id": pid, "attributes": {"properties": {"tier": "gold"}}}}
    api.patch(f"/api/profiles/{pid}", patch)
    clock.advance(29)
    assert lagging.segment_members(segment) == set()
    clock.advance(1)
    assert lagging.segment_members(segment) == {pid}
    demote = {
        "data": {"type": "profile", "id": pid, "attributes": {"properties": {"tier": "bronze"}}}
    }
    api.patch(f"/api/profiles/{pid}", demote)
    assert lagging.segment_members(segment) == {pid}
    clock.advance(30)
    assert lagging.segment_members(segment) == set()


def test_rule_segment_counts_existing_profiles_and_takes_a_callable(emu: KlaviyoEmulator) -> None:
    us = emu.create_profile(email="us@example.com", location={"country": "US"})
    emu.create_profile(email="fr@example.com", location={"country": "FR"})
    by_rule = emu.create_segment(
        "US", definition=[{"field": "location.country", "operator": "any", "value": ["US"]}]
    )
    by_callable = emu.create_segment(
        "US too", definition=lambda attrs: attrs["location"]["country"] == "US"
    )
    assert emu.segment_members(by_rule) == emu.segment_members(by_callable) == {us}


def test_list_defined_segment_follows_the_list_after_the_lag(
    lagging: KlaviyoEmulator, clock: FakeClock
) -> None:
    """A segment defined as "is in list X" holds list X's members: whoever was on the list
    when it was made, then every add and removal, each ``segment_lag`` seconds later."""
    api = Api(lagging.base_url)
    list_id = lagging.create_list("Scratch", opt_in="single")
    early, late = (
        lagging.create_profile(email=f"{name}@example.com") for name in ("early", "late")
    )
    lagging.add_to_list(list_id, early)
    segment = lagging.create_segment("On the list", member_of_list=list_id)
    other = lagging.create_segment("By hand")
    assert lagging.segment_members(segment) == set()
    clock.advance(30)
    assert lagging.segment_members(segment) == {early}
    body = {"data": [{"type": "profile", "id": late}]}
    assert api.post(f"/api/lists/{list_id}/relationships/profiles", body).status == 204
    clock.advance(29)
    assert lagging.segment_members(segment) == {early}
    clock.advance(1)
    assert lagging.segment_members(segment) == {early, late}
    removed = api.request("DELETE", f"/api/lists/{list_id}/relationships/profiles", body)
    assert removed.status == 204
    clock.advance(30)
    assert lagging.segment_members(segment) == {early}
    assert lagging.segment_members(other) == set()
    listed = api.get(f"/api/segments/{segment}/profiles").json()["data"]
    assert [p["id"] for p in listed] == [early]


def test_list_defined_segment_needs_a_known_list_and_no_rule(emu: KlaviyoEmulator) -> None:
    with pytest.raises(ApiError):
        emu.create_segment("Nowhere", member_of_list="nope")
    list_id = emu.create_list("L")
    with pytest.raises(ValueError):
        emu.create_segment("Both", definition=[], member_of_list=list_id)


def test_lags_are_zero_by_default(api: Api, emu: KlaviyoEmulator) -> None:
    pid = api.create_profile(email="now@example.com").json()["data"]["id"]
    assert _search(api, 'equals(email,"now@example.com")') == [pid]
    segment = emu.create_segment("S")
    emu.add_to_segment(segment, pid)
    assert emu.segment_members(segment) == {pid}


def test_malformed_segment_definition_is_refused(emu: KlaviyoEmulator) -> None:
    with pytest.raises(ValueError):
        emu.create_segment("Bad", definition=[{"field": "email", "operator": "matches"}])


def test_timestamps_follow_the_emulator_clock(lagging: KlaviyoEmulator, clock: FakeClock) -> None:
    """Profiles, list joins and consents are stamped with the clock jobs use, so a test or a
    benchmark on a clock of its own sees one consistent timeline."""
    clock.advance(3 * 86_400)  # three days ahead of the real time
    api = Api(lagging.base_url)
    created = api.create_profile(email="later@example.com").json()["data"]
    stamped = datetime.fromisoformat(created["attributes"]["created"].replace("Z", "+00:00"))
    assert abs(stamped.timestamp() - clock()) < 1
