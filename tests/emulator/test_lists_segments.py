"""Lists, list membership and segment membership queries."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator


def _members_body(*ids: str) -> dict:
    return {"data": [{"type": "profile", "id": pid} for pid in ids]}


def _ids(reply_json: dict) -> list[str]:
    return [item["id"] for item in reply_json["data"]]


def test_get_list(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter", list_id="Y6nRLr", opt_in="double")
    reply = api.get(f"/api/lists/{list_id}")
    assert reply.status == 200
    data = reply.json()["data"]
    assert (data["type"], data["id"]) == ("list", "Y6nRLr")
    assert data["attributes"]["name"] == "Newsletter"
    assert data["attributes"]["opt_in_process"] == "double_opt_in"
    assert data["attributes"]["created"].endswith("+00:00")
    assert data["links"]["self"] == f"{emu.base_url}/api/lists/Y6nRLr/"
    assert "profile_count" not in data["attributes"]
    counted = api.get(f"/api/lists/{list_id}", query={"additional-fields[list]": "profile_count"})
    assert counted.json()["data"]["attributes"]["profile_count"] == 0


def test_unknown_list_and_segment_are_404(api: Api) -> None:
    assert api.get("/api/lists/nope").status == 404
    assert api.get("/api/segments/nope").status == 404
    assert api.get("/api/segments/nope/profiles").status == 404
    assert api.get("/api/segments/nope/relationships/profiles").status == 404
    assert api.get("/api/lists/nope/profiles").status == 404


def test_generated_list_ids_are_short(emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Generated")
    assert len(list_id) == 6 and list_id.isalnum()


def test_get_lists_pages_and_filters(api: Api, emu: KlaviyoEmulator) -> None:
    ids = {emu.create_list(f"List {i:02}") for i in range(12)}
    first = api.get("/api/lists").json()
    assert len(first["data"]) == 10  # this endpoint's default and maximum
    second = api.get(first["links"]["next"]).json()
    assert len(second["data"]) == 2
    assert second["links"]["next"] is None
    assert set(_ids(first) + _ids(second)) == ids
    named = api.get("/api/lists", query={"filter": 'equals(name,["List 03"])'}).json()
    assert [d["attributes"]["name"] for d in named["data"]] == ["List 03"]
    by_name = api.get("/api/lists", query={"sort": "-name", "page[size]": "2"}).json()
    assert [d["attributes"]["name"] for d in by_name["data"]] == ["List 11", "List 10"]


def test_create_list_over_http(api: Api, emu: KlaviyoEmulator) -> None:
    reply = api.post(
        "/api/lists",
        {
            "data": {
                "type": "list",
                "attributes": {"name": "Leads", "opt_in_process": "single_opt_in"},
            }
        },
    )
    assert reply.status == 201
    list_id = reply.json()["data"]["id"]
    assert emu.list_members(list_id) == set()


def test_add_profiles_to_list_is_204_and_idempotent(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    a = emu.create_profile(email="a@example.com")
    b = emu.create_profile(email="b@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(a, b))
    assert reply.status == 204
    assert reply.body == b""
    again = api.post(f"/api/lists/{list_id}/relationships/profiles/", _members_body(a))
    assert again.status == 204
    assert emu.list_members(list_id) == {a, b}
    # Membership alone does not change consent.
    consent = emu.profile(a)["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
    assert consent == "NEVER_SUBSCRIBED"


def test_add_to_unknown_list_is_404(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="a@example.com")
    reply = api.post("/api/lists/nope/relationships/profiles", _members_body(pid))
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


UNKNOWN = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"


def test_add_unknown_profile_is_ignored_by_default(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(pid, UNKNOWN))
    assert reply.status == 204  # a false success: only the known profile was added
    assert emu.list_members(list_id) == {pid}


def test_add_unknown_profile_can_be_400_pointing_at_the_item(
    api: Api, emu: KlaviyoEmulator
) -> None:
    emu.configure(unknown_profile_in_list_add="400")
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(pid, UNKNOWN))
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert reply.error["source"] == {"pointer": "/data/1/id"}
    assert emu.list_members(list_id) == set()  # all or nothing


def test_add_unknown_profile_can_be_404_like_an_unknown_list(
    api: Api, emu: KlaviyoEmulator
) -> None:
    emu.configure(unknown_profile_in_list_add="404")
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(pid, UNKNOWN))
    assert reply.status == 404
    unknown_list = api.post(f"/api/lists/{list_id}x/relationships/profiles", _members_body(pid))
    assert unknown_list.status == 404
    same = {k: v for k, v in reply.error.items() if k != "id"}
    other = {k: v for k, v in unknown_list.error.items() if k != "id"}
    assert same == {**other, "detail": other["detail"].replace(f"{list_id}x", list_id)}
    assert emu.list_members(list_id) == set()


@pytest.mark.parametrize("count", [0, 1001])
def test_add_to_list_needs_1_to_1000_items(api: Api, emu: KlaviyoEmulator, count: int) -> None:
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(*[pid] * count))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data"}


def test_add_1000_items_is_fine(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(f"/api/lists/{list_id}/relationships/profiles", _members_body(*[pid] * 1000))
    assert reply.status == 204


@pytest.mark.usefixtures("bad_requests_ok")
def test_add_to_list_rejects_wrong_item_type(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = api.post(
        f"/api/lists/{list_id}/relationships/profiles", {"data": [{"type": "list", "id": pid}]}
    )
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/0/type"}


def test_remove_and_list_member_queries(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    a = emu.create_profile(email="a@example.com")
    b = emu.create_profile(email="b@example.com", phone_number="+15005550006")
    emu.add_to_list(list_id, a, b)
    members = api.get(f"/api/lists/{list_id}/profiles").json()
    assert sorted(_ids(members)) == sorted([a, b])
    assert "joined_group_at" in members["data"][0]["attributes"]
    filtered = api.get(
        f"/api/lists/{list_id}/relationships/profiles",
        query={"filter": 'equals(phone_number,["+15005550006"])'},
    )
    assert filtered.json()["data"] == [{"type": "profile", "id": b}]
    removed = api.request(
        "DELETE", f"/api/lists/{list_id}/relationships/profiles", _members_body(a)
    )
    assert removed.status == 204
    assert emu.list_members(list_id) == {b}


def _remove(api: Api, list_id: str, *ids: str) -> Any:
    return api.request(
        "DELETE", f"/api/lists/{list_id}/relationships/profiles", _members_body(*ids)
    )


def test_removing_a_known_non_member_is_204(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    member = emu.create_profile(email="m@example.com")
    outsider = emu.create_profile(email="o@example.com")
    emu.add_to_list(list_id, member)
    assert _remove(api, list_id, outsider).status == 204
    assert _remove(api, list_id, member, member).status == 204
    assert emu.list_members(list_id) == set()
    consent = emu.profile(member)["attributes"]["subscriptions"]["email"]["marketing"]
    assert consent["consent"] == "NEVER_SUBSCRIBED"  # removal changes no consent (spec)


@pytest.mark.usefixtures("bad_requests_ok")
def test_removing_an_unknown_profile_is_400_by_default(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    emu.add_to_list(list_id, pid)
    reply = _remove(api, list_id, pid, UNKNOWN)
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/1/id"}
    assert emu.list_members(list_id) == {pid}  # all or nothing


@pytest.mark.parametrize(("mode", "status", "left"), [("ignore", 204, 0), ("404", 404, 1)])
def test_removing_an_unknown_profile_can_be_ignored_or_404(
    api: Api, emu: KlaviyoEmulator, mode: str, status: int, left: int
) -> None:
    emu.configure(unknown_profile_in_list_remove=mode)
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    emu.add_to_list(list_id, pid)
    assert _remove(api, list_id, pid, UNKNOWN).status == status
    assert len(emu.list_members(list_id)) == left


@pytest.mark.parametrize("count", [0, 1001])
def test_remove_from_list_needs_1_to_1000_items(api: Api, emu: KlaviyoEmulator, count: int) -> None:
    """The spec: "This endpoint accepts a maximum of 1000 profiles per call"."""
    list_id = emu.create_list("Newsletter")
    pid = emu.create_profile(email="a@example.com")
    reply = _remove(api, list_id, *[pid] * count)
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data"}
    assert _remove(api, list_id, *[pid] * 1000).status == 204


# ---- segments ----------------------------------------------------------------------------


@pytest.fixture
def vip(emu: KlaviyoEmulator) -> dict[str, str]:
    segment = emu.create_segment("VIP customers", segment_id="VIPseg")
    people = {
        "ann": emu.create_profile(email="ann@example.com", phone_number="+15005550001"),
        "bob": emu.create_profile(email="bob@example.com", phone_number="+15005550002"),
        "cid": emu.create_profile(email="cid@example.com"),
        "out": emu.create_profile(email="out@example.com"),
    }
    emu.add_to_segment(segment, people["ann"], joined_at="2024-01-01T00:00:00Z")
    emu.add_to_segment(segment, people["bob"], joined_at="2024-02-01T00:00:00Z")
    emu.add_to_segment(segment, people["cid"], joined_at="2024-03-01T00:00:00Z")
    return people


def test_get_segment(api: Api, vip: dict[str, str]) -> None:
    reply = api.get("/api/segments/VIPseg")
    assert reply.status == 200
    attributes = reply.json()["data"]["attributes"]
    assert attributes["name"] == "VIP customers"
    assert (attributes["is_active"], attributes["is_processing"], attributes["is_starred"]) == (
        True,
        False,
        False,
    )
    counted = api.get("/api/segments/VIPseg", query={"additional-fields[segment]": "profile_count"})
    assert counted.json()["data"]["attributes"]["profile_count"] == 3


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("equals(profile_id,['{ann}'])", ["ann"]),
        ("any(profile_id,['{ann}','{out}','{cid}'])", ["ann", "cid"]),
        ("equals(profile_id,['{out}'])", []),
        ('equals(email,["BOB@example.com"])', ["bob"]),
        ('any(email,["ann@example.com","cid@example.com"])', ["ann", "cid"]),
        ('any(phone_number,["+15005550002"])', ["bob"]),
        ('equals(phone_number,["+15005550001"])', ["ann"]),
        ("greater-than(joined_group_at,2024-01-01T00:00:00Z)", ["bob", "cid"]),
        ("greater-or-equal(joined_group_at,2024-01-01T00:00:00Z)", ["ann", "bob", "cid"]),
        ("less-than(joined_group_at,2024-03-01T00:00:00Z)", ["ann", "bob"]),
        ("less-or-equal(joined_group_at,2024-02-01T00:00:00Z)", ["ann", "bob"]),
    ],
)
def test_segment_profile_filters(
    api: Api, vip: dict[str, str], expression: str, expected: list[str]
) -> None:
    query = {"filter": expression.format(**vip)}
    full = api.get("/api/segments/VIPseg/profiles", query=query)
    ids_only = api.get("/api/segments/VIPseg/relationships/profiles", query=query)
    assert full.status == ids_only.status == 200
    want = sorted(vip[name] for name in expected)
    assert sorted(_ids(full.json())) == want
    assert sorted(_ids(ids_only.json())) == want
    assert all(item == {"type": "profile", "id": item["id"]} for item in ids_only.json()["data"])


def test_segment_members_carry_joined_group_at(api: Api, vip: dict[str, str]) -> None:
    data = api.get("/api/segments/VIPseg/profiles", query={"sort": "-joined_group_at"}).json()
    assert _ids(data) == [vip["cid"], vip["bob"], vip["ann"]]
    assert data["data"][0]["attributes"]["joined_group_at"] == "2024-03-01T00:00:00+00:00"
    ascending = api.get("/api/segments/VIPseg/profiles", query={"sort": "joined_group_at"}).json()
    assert _ids(ascending) == [vip["ann"], vip["bob"], vip["cid"]]


def test_segment_members_page(api: Api, vip: dict[str, str]) -> None:
    first = api.get("/api/segments/VIPseg/relationships/profiles", query={"page[size]": "2"})
    body = first.json()
    assert len(body["data"]) == 2
    rest = api.get(body["links"]["next"]).json()
    assert len(rest["data"]) == 1
    assert rest["links"]["next"] is None


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("filter", 'equals(external_id,"crm-1")'),
        ("filter", "any(profile_id,'x')"),
        # The spec allows only the list form here (x-klaviyo-filters of
        # get_profiles_for_segment): a single value is a 400 although get_profiles takes it.
        ("filter", "equals(profile_id,'x')"),
        ("filter", 'equals(email,"ann@example.com")'),
        ("filter", 'equals(phone_number,"+15005550001")'),
        ("filter", 'greater-than(joined_group_at,"2024-01-01")'),
        ("sort", "created"),
    ],
)
def test_segment_bad_parameters(api: Api, vip: dict[str, str], name: str, value: str) -> None:
    reply = api.get("/api/segments/VIPseg/profiles", query={name: value})
    assert reply.status == 400
    assert reply.error["source"] == {"parameter": name}


def test_segments_of_a_profile(api: Api, emu: KlaviyoEmulator, vip: dict[str, str]) -> None:
    emu.create_segment("Other", segment_id="Other1")
    emu.add_to_segment("Other1", vip["ann"])
    reply = api.get(f"/api/profiles/{vip['ann']}/relationships/segments")
    assert reply.status == 200
    assert sorted(i["id"] for i in reply.json()["data"]) == ["Other1", "VIPseg"]
    assert api.get(f"/api/profiles/{vip['out']}/relationships/segments").json()["data"] == []
