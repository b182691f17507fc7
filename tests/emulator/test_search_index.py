"""Exact search (equals/any on id, email, phone_number, external_id) from the store's index:
the same answers as looking at every profile, without looking at every profile."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator, filters
from devtools.klaviyo_emulator.model import Profile

EXPRESSIONS = [
    'equals(email,"a@example.com")',
    'equals(email,"A@EXAMPLE.com")',
    "any(email,['a@example.com','b@example.com','nobody@example.com'])",
    "equals(email,['b@example.com'])",
    'equals(phone_number,"+15005550006")',
    "any(phone_number,['+15005550006','+15005550007'])",
    'equals(external_id,"crm-1")',
    "any(external_id,['crm-1','crm-2'])",
    'equals(email,"a@example.com"),equals(phone_number,"+15005550006")',
    'and(equals(email,"b@example.com"),equals(external_id,"crm-2"))',
    'equals(email,"changed@example.com")',
    'equals(email,"old@example.com")',
    "greater-than(created,2000-01-01T00:00:00Z)",
    'equals(email,"a@example.com"),greater-than(updated,2000-01-01T00:00:00Z)',
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu_lagging(clock: FakeClock) -> Iterator[KlaviyoEmulator]:
    with KlaviyoEmulator(clock=clock, search_lag=5) as emu:
        yield emu


def _populate(emu: KlaviyoEmulator) -> dict[str, str]:
    api = Api(emu.base_url)
    ids = {
        "a": emu.create_profile(email="a@example.com", phone_number="+15005550006"),
        "a_twin": emu.create_profile(email="A@example.com", external_id="crm-1"),  # seeded dup
        "b": emu.create_profile(email="b@example.com", external_id="crm-2"),
        "crm": emu.create_profile(external_id="crm-1", first_name="Second holder"),
        "old": emu.create_profile(email="old@example.com"),
        "gone": emu.create_profile(email="gone@example.com", phone_number="+15005550007"),
    }
    patch = {
        "data": {
            "type": "profile",
            "id": ids["old"],
            "attributes": {"email": "changed@example.com"},
        }
    }
    assert api.patch(f"/api/profiles/{ids['old']}", patch).status == 200
    deletion = {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {
                "profile": {
                    "data": {"type": "profile", "attributes": {"email": "gone@example.com"}}
                }
            },
        }
    }
    assert api.post("/api/data-privacy-deletion-jobs", deletion).status == 202
    ids["new"] = api.create_profile(email="new@example.com", phone_number="+15005550007").json()[
        "data"
    ]["id"]
    return ids


def _answers(api: Api, expression: str, sort: str | None) -> list[str]:
    query = {"filter": expression, "page[size]": "100"}
    if sort is not None:
        query["sort"] = sort
    reply = api.get("/api/profiles", query=query)
    assert reply.status == 200, reply.body
    return [item["id"] for item in reply.json()["data"]]


def test_indexed_answers_equal_a_full_scan(
    emu_lagging: KlaviyoEmulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(emu_lagging.base_url)
    _populate(emu_lagging)
    store = emu_lagging._store
    for moment in (0, 5):  # while the writes lag, and after
        clock.advance(moment)
        for expression, sort in itertools.product(EXPRESSIONS, (None, "-created", "email")):
            indexed = _answers(api, expression, sort)
            with monkeypatch.context() as scan:
                scan.setattr(store, "search_candidates", lambda conditions: None)
                assert _answers(api, expression, sort) == indexed, (moment, expression, sort)


def test_the_index_follows_lagging_versions(emu_lagging: KlaviyoEmulator, clock: FakeClock) -> None:
    api = Api(emu_lagging.base_url)
    ids = _populate(emu_lagging)
    # The patched profile is still found by its old address until the lag has passed.
    assert _answers(api, 'equals(email,"old@example.com")', None) == [ids["old"]]
    assert _answers(api, 'equals(email,"changed@example.com")', None) == []
    assert _answers(api, 'equals(email,"new@example.com")', None) == []
    assert _answers(api, 'equals(phone_number,"+15005550007")', None) == []  # deleted holder
    assert _answers(api, "any(external_id,['crm-1'])", None) == [ids["a_twin"], ids["crm"]]
    assert _answers(api, 'equals(email,"a@example.com")', None) == [ids["a"], ids["a_twin"]]
    clock.advance(5)
    assert _answers(api, 'equals(email,"old@example.com")', None) == []
    assert _answers(api, 'equals(email,"changed@example.com")', None) == [ids["old"]]
    assert _answers(api, 'equals(phone_number,"+15005550007")', None) == [ids["new"]]
    # Versions nobody can see any more leave the index too.
    old = filters.parse('equals(email,"old@example.com")')
    assert emu_lagging._store.search_candidates(old) == []


def test_exact_search_looks_only_at_candidates(
    api: Api, emu: KlaviyoEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3000):
        emu.create_profile(email=f"p{i}@example.com", external_id=f"crm-{i % 1000}")
    store = emu._store
    looked: list[str] = []
    original = store.search_view

    def counting(profile: object) -> object:
        looked.append(getattr(profile, "id", ""))
        return original(profile)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "search_view", counting)
    assert len(_answers(api, "any(email,['p7@example.com','p2999@example.com'])", None)) == 2
    assert len(looked) == 2
    looked.clear()
    assert len(_answers(api, 'equals(external_id,"crm-7")', None)) == 3
    assert len(looked) == 3
    looked.clear()
    _answers(api, "greater-than(created,2000-01-01T00:00:00Z)", None)
    assert len(looked) == 3000  # no exact condition: every profile is looked at


def test_identifier_lookups_do_not_scan(emu: KlaviyoEmulator) -> None:
    """find_by_* and the identity checks use the store's holders, not a pass over profiles."""
    for i in range(2000):
        emu.create_profile(email=f"q{i}@example.com", external_id="shared")
    store = emu._store
    with store.lock:
        profiles = store.profiles
        store.profiles = _NoIteration(profiles)
        try:
            assert store.find_by_email("Q5@example.com") == list(profiles)[5]
            assert store.find_by_external_id("shared") == next(iter(profiles))
            assert store.profiles_matching("email", "q9@example.com") == [list(profiles)[9]]
        finally:
            store.profiles = profiles


class _NoIteration(dict[str, Profile]):
    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the store scanned every profile")

    def values(self) -> Any:
        raise AssertionError("the store scanned every profile")
