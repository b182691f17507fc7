"""Create, get, filter, sort, page, update and import profiles."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
PROFILE_ATTRIBUTES = {
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "created",
    "updated",
    "last_event_date",
    "location",
    "properties",
}
LOCATION_KEYS = {
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "ip",
    "latitude",
    "longitude",
}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")


def _ids(reply_json: dict) -> list[str]:
    return [item["id"] for item in reply_json["data"]]


# ---- create ------------------------------------------------------------------------------


def test_create_returns_201_and_the_full_resource(api: Api, emu: KlaviyoEmulator) -> None:
    reply = api.create_profile(
        email="sarah@example.com",
        phone_number="+15005550006",
        external_id="crm-1",
        first_name="Sarah",
        location={"city": "New York", "latitude": 40.7},
        properties={"lead_source": "router"},
    )
    assert reply.status == 201
    assert reply.headers["content-type"] == "application/vnd.api+json"
    data = reply.json()["data"]
    assert data["type"] == "profile"
    assert ULID.match(data["id"])
    attributes = data["attributes"]
    assert set(attributes) == PROFILE_ATTRIBUTES  # no subscriptions, no anonymous_id
    assert set(attributes["location"]) == LOCATION_KEYS
    assert attributes["location"]["city"] == "New York"
    assert attributes["location"]["latitude"] == 40.7
    assert attributes["properties"] == {"lead_source": "router"}
    assert ISO_UTC.match(attributes["created"])
    assert attributes["updated"] == attributes["created"]
    assert data["links"]["self"] == f"{emu.base_url}/api/profiles/{data['id']}/"
    assert set(data["relationships"]) == {"lists", "segments"}
    assert data["relationships"]["lists"]["links"]["related"].endswith(f"/{data['id']}/lists/")
    assert reply.json()["links"]["self"] == data["links"]["self"]
    assert emu.profile(data["id"])["attributes"]["email"] == "sarah@example.com"


def test_profile_ids_are_time_ordered(api: Api) -> None:
    ids = [api.create_profile(email=f"p{i}@example.com").json()["data"]["id"] for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_create_can_return_subscriptions(api: Api) -> None:
    reply = api.post(
        "/api/profiles",
        {"data": {"type": "profile", "attributes": {"email": "s@example.com"}}},
        query={"additional-fields[profile]": "subscriptions"},
    )
    marketing = reply.json()["data"]["attributes"]["subscriptions"]["email"]["marketing"]
    assert marketing["consent"] == "NEVER_SUBSCRIBED"
    assert marketing["can_receive_email_marketing"] is False
    assert marketing["suppression"] == [] and marketing["list_suppressions"] == []
    assert marketing["method"] is None and marketing["double_optin"] is None


@pytest.mark.parametrize(
    ("attributes", "detail", "pointer"),
    [
        ({}, "One or more identifiers is required", "/data/attributes"),
        ({"first_name": "Only"}, "One or more identifiers is required", "/data/attributes"),
        ({"email": "not-an-email"}, "Invalid email address", "/data/attributes/email"),
        ({"email": "a b@example.com"}, "Invalid email address", "/data/attributes/email"),
        ({"email": "x" * 95 + "@example.com"}, "Invalid email address", "/data/attributes/email"),
        (
            {"phone_number": "5005550006"},
            "Invalid phone number format (Example of a valid format: +12345678901)",
            "/data/attributes/phone_number",
        ),
        (
            {"phone_number": "+1 500 555 0006"},
            "Invalid phone number format (Example of a valid format: +12345678901)",
            "/data/attributes/phone_number",
        ),
        (
            {"email": "ok@example.com", "phone_number": "+0123456789"},
            "Invalid phone number format (Example of a valid format: +12345678901)",
            "/data/attributes/phone_number",
        ),
    ],
)
def test_create_validation(api: Api, attributes: dict, detail: str, pointer: str) -> None:
    reply = api.create_profile(**attributes)
    assert reply.status == 400
    err = reply.error
    assert (err["code"], err["title"], err["detail"]) == ("invalid", "Invalid input.", detail)
    assert err["source"] == {"pointer": pointer}


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"data": {"type": "profiles", "attributes": {"email": "a@example.com"}}}, "/data/type"),
        ({"data": {"attributes": {"email": "a@example.com"}}}, "/data/type"),
        ({"data": []}, "/data"),
        ({"data": {"type": "profile", "attributes": {"anonymous_id": "x"}}}, None),
        ({"data": {"type": "profile", "attributes": {"email": 42}}}, "/data/attributes/email"),
        (
            {"data": {"type": "profile", "attributes": {"email": "a@example.com", "location": 1}}},
            "/data/attributes/location",
        ),
    ],
)
def test_create_rejects_malformed_documents(api: Api, body: dict, pointer: str | None) -> None:
    reply = api.post("/api/profiles", body)
    assert reply.status == 400
    if pointer is not None:
        assert reply.error["source"]["pointer"] == pointer


def test_duplicate_email_is_409_with_the_existing_id(api: Api) -> None:
    first = api.create_profile(email="dup@example.com").json()["data"]["id"]
    reply = api.create_profile(email="DUP@Example.com", first_name="Again")
    assert reply.status == 409
    err = reply.error
    assert err["code"] == "duplicate_profile"
    assert err["title"] == "Conflict."
    assert err["detail"] == "A profile already exists with one of these identifiers."
    assert err["source"] == {"pointer": "/data/attributes"}
    assert err["meta"] == {"duplicate_profile_id": first}


def test_duplicate_phone_is_409(api: Api) -> None:
    first = api.create_profile(phone_number="+15005550006").json()["data"]["id"]
    reply = api.create_profile(email="other@example.com", phone_number="+15005550006")
    assert reply.status == 409
    assert reply.error["meta"]["duplicate_profile_id"] == first


def test_external_id_alone_never_conflicts(api: Api) -> None:
    assert api.create_profile(external_id="crm-9").status == 201
    assert api.create_profile(external_id="crm-9").status == 201


def test_external_id_uniqueness_is_configurable() -> None:
    with KlaviyoEmulator(external_id_unique=True) as emu:
        api = Api(emu.base_url)
        first = api.create_profile(external_id="crm-9").json()["data"]["id"]
        reply = api.create_profile(external_id="crm-9")
        assert reply.status == 409
        assert reply.error["meta"]["duplicate_profile_id"] == first


def test_seeding_allows_duplicates(emu: KlaviyoEmulator) -> None:
    a = emu.create_profile(email="same@example.com", external_id="x")
    b = emu.create_profile(email="same@example.com", external_id="x")
    assert a != b
    assert len(emu.profiles()) == 2


def test_concurrent_creates_with_one_email_yield_one_profile(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: api.create_profile(email="race@example.com").status, range(16))
        )
    assert sorted(statuses) == [201] + [409] * 15


# ---- get ---------------------------------------------------------------------------------


def test_get_profile_by_id_and_404(api: Api) -> None:
    pid = api.create_profile(email="g@example.com").json()["data"]["id"]
    reply = api.get(f"/api/profiles/{pid}")
    assert reply.status == 200
    assert reply.json()["data"]["attributes"]["email"] == "g@example.com"
    assert "subscriptions" not in reply.json()["data"]["attributes"]
    missing = api.get("/api/profiles/01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert missing.status == 404
    assert missing.error["code"] == "not_found"


def test_get_profile_with_subscriptions_and_included_lists(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="inc@example.com")
    emu.create_list("Newsletter", list_id="L1")
    emu.add_to_list("L1", pid)
    emu.create_segment("VIP", segment_id="S1")
    emu.add_to_segment("S1", pid)
    reply = api.get(
        f"/api/profiles/{pid}",
        query={"additional-fields[profile]": "subscriptions", "include": "lists,segments"},
    )
    body = reply.json()
    assert "subscriptions" in body["data"]["attributes"]
    assert body["data"]["relationships"]["lists"]["data"] == [{"type": "list", "id": "L1"}]
    assert body["data"]["relationships"]["segments"]["data"] == [{"type": "segment", "id": "S1"}]
    assert {(i["type"], i["id"]) for i in body["included"]} == {("list", "L1"), ("segment", "S1")}


def test_sparse_fieldsets(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="f@example.com", first_name="F", location={"city": "Paris"})
    reply = api.get(f"/api/profiles/{pid}", query={"fields[profile]": "email,location.city"})
    assert reply.json()["data"]["attributes"] == {
        "email": "f@example.com",
        "location": {"city": "Paris"},
    }


@pytest.fixture
def people(emu: KlaviyoEmulator) -> dict[str, str]:
    return {
        "ann": emu.create_profile(
            email="ann@example.com",
            phone_number="+15005550001",
            external_id="crm-1",
            created="2024-01-01T00:00:00Z",
            updated="2024-06-01T00:00:00Z",
        ),
        "bob": emu.create_profile(
            email="bob+news@example.com",
            phone_number="+15005550002",
            external_id="crm-2",
            created="2024-02-01T00:00:00Z",
            updated="2024-03-01T00:00:00Z",
        ),
        "cid": emu.create_profile(
            email="cid@example.com",
            external_id="crm-2",
            created="2024-03-01T00:00:00Z",
            updated="2024-04-01T00:00:00Z",
        ),
    }


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('equals(email,"ann@example.com")', ["ann"]),
        ("equals(email,'ANN@example.com')", ["ann"]),
        ('equals(phone_number,"+15005550002")', ["bob"]),
        ('equals(external_id,"crm-2")', ["bob", "cid"]),
        ('any(email,["ann@example.com","cid@example.com"])', ["ann", "cid"]),
        ("any(external_id,['crm-1','nope'])", ["ann"]),
        ('any(phone_number,["+15005550001","+15005550002"])', ["ann", "bob"]),
        ("greater-than(created,2024-01-15T00:00:00Z)", ["bob", "cid"]),
        ("less-than(created,2024-02-15T00:00:00+00:00)", ["ann", "bob"]),
        ("greater-than(updated,2024-03-15T00:00:00Z)", ["ann", "cid"]),
        ("less-than(updated,2024-05-01)", ["bob", "cid"]),
        ('equals(external_id,"crm-2"),greater-than(created,2024-02-15T00:00:00Z)', ["cid"]),
        ('and(equals(external_id,"crm-2"),less-than(created,2024-02-15T00:00:00Z))', ["bob"]),
        ('equals(email,"nobody@example.com")', []),
    ],
)
def test_get_profiles_filters(
    api: Api, people: dict[str, str], expression: str, expected: list[str]
) -> None:
    reply = api.get("/api/profiles", query={"filter": expression})
    assert reply.status == 200
    assert sorted(_ids(reply.json())) == sorted(people[name] for name in expected)


def test_filter_by_id(api: Api, people: dict[str, str]) -> None:
    reply = api.get("/api/profiles", query={"filter": f'equals(id,"{people["bob"]}")'})
    assert _ids(reply.json()) == [people["bob"]]
    listed = f'any(id,["{people["ann"]}","{people["cid"]}"])'
    assert sorted(_ids(api.get("/api/profiles", query={"filter": listed}).json())) == sorted(
        [people["ann"], people["cid"]]
    )


def test_plus_in_email_must_be_percent_encoded(api: Api, people: dict[str, str]) -> None:
    raw = 'filter=equals(email,"bob+news@example.com")'
    assert api.get("/api/profiles", raw_query=raw).json()["data"] == []
    encoded = api.get("/api/profiles", query={"filter": 'equals(email,"bob+news@example.com")'})
    assert _ids(encoded.json()) == [people["bob"]]


@pytest.mark.usefixtures("people")
@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    "expression",
    [
        'equals(first_name,"Ann")',
        'contains(email,"ann")',
        'or(equals(email,"a@b.co"),equals(email,"c@d.co"))',
        'greater-than(created,"2024-01-01T00:00:00Z")',
        "equals(email,ann@example.com)",
        'any(email,"ann@example.com")',
        'equals(email,"ann@example.com"',
        'equals(email,"ann@example.com"))',
        "greater-than(created,2024-01-01T00:00:00 00:00)",
        "greater-or-equal(created,2024-01-01T00:00:00Z)",
        "",
        'equals(email "x")',
    ],
)
def test_bad_filters_are_400_on_the_filter_parameter(api: Api, expression: str) -> None:
    reply = api.get("/api/profiles", query={"filter": expression})
    assert reply.status == 400
    assert reply.error["source"] == {"parameter": "filter"}


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("created", ["ann", "bob", "cid"]),
        ("-created", ["cid", "bob", "ann"]),
        ("updated", ["bob", "cid", "ann"]),
        ("-updated", ["ann", "cid", "bob"]),
        ("email", ["ann", "bob", "cid"]),
        ("-email", ["cid", "bob", "ann"]),
        ("id", ["ann", "bob", "cid"]),
        ("-id", ["cid", "bob", "ann"]),
    ],
)
def test_sort(api: Api, people: dict[str, str], sort: str, order: list[str]) -> None:
    reply = api.get("/api/profiles", query={"sort": sort})
    assert _ids(reply.json()) == [people[name] for name in order]


@pytest.mark.usefixtures("people", "bad_requests_ok")
@pytest.mark.parametrize("sort", ["first_name", "-name", "created,email"])
def test_bad_sort_is_400(api: Api, sort: str) -> None:
    reply = api.get("/api/profiles", query={"sort": sort})
    assert reply.status == 400
    assert reply.error["source"] == {"parameter": "sort"}


def test_sort_with_page_size_one_picks_newest_external_id_holder(
    api: Api, people: dict[str, str]
) -> None:
    query = {"filter": 'equals(external_id,"crm-2")', "sort": "-created", "page[size]": "1"}
    assert _ids(api.get("/api/profiles", query=query).json()) == [people["cid"]]


def test_paging_follows_links_next_to_the_end(api: Api, emu: KlaviyoEmulator) -> None:
    made = [emu.create_profile(email=f"page{i}@example.com") for i in range(45)]
    first = api.get("/api/profiles")
    assert len(first.json()["data"]) == 20  # default page size
    seen: list[str] = []
    url: str | None = f"{emu.base_url}/api/profiles/?page%5Bsize%5D=7&sort=-created"
    pages = 0
    while url:
        assert url.startswith(emu.base_url)
        body = api.get(url).json()
        seen += _ids(body)
        pages += 1
        url = body["links"]["next"]
        if url:
            assert "page%5Bcursor%5D=" in url
            assert "page%5Bsize%5D=7" in url
    assert pages == 7
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))


def test_prev_link_and_self_link(api: Api, emu: KlaviyoEmulator) -> None:
    for i in range(5):
        emu.create_profile(email=f"pp{i}@example.com")
    first = api.get("/api/profiles", query={"page[size]": "2"}).json()
    assert first["links"]["prev"] is None
    assert first["links"]["self"].startswith(f"{emu.base_url}/api/profiles/")
    second = api.get(first["links"]["next"]).json()
    back = api.get(second["links"]["prev"]).json()
    assert _ids(back) == _ids(first)
    last = api.get(api.get(second["links"]["next"]).json()["links"]["self"]).json()
    assert len(last["data"]) == 1
    assert last["links"]["next"] is None


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("name", "value"),
    [("page[size]", "0"), ("page[size]", "101"), ("page[size]", "ten"), ("page[cursor]", "bogus!")],
)
def test_bad_paging_parameters_are_400(api: Api, name: str, value: str) -> None:
    reply = api.get("/api/profiles", query={name: value})
    assert reply.status == 400
    assert reply.error["source"] == {"parameter": name}


def test_page_size_bounds_are_inclusive(api: Api, emu: KlaviyoEmulator) -> None:
    for i in range(3):
        emu.create_profile(email=f"b{i}@example.com")
    assert len(api.get("/api/profiles", query={"page[size]": "1"}).json()["data"]) == 1
    assert len(api.get("/api/profiles", query={"page[size]": "100"}).json()["data"]) == 3


def test_get_profiles_with_subscriptions(api: Api, emu: KlaviyoEmulator) -> None:
    emu.create_profile(email="s@example.com")
    plain = api.get("/api/profiles").json()["data"][0]["attributes"]
    assert "subscriptions" not in plain
    extra = api.get("/api/profiles", query={"additional-fields[profile]": "subscriptions"})
    assert "subscriptions" in extra.json()["data"][0]["attributes"]


# ---- update ------------------------------------------------------------------------------


def _patch_body(pid: str, attributes: dict, meta: dict | None = None) -> dict:
    data: dict = {"type": "profile", "id": pid, "attributes": attributes}
    if meta is not None:
        data["meta"] = meta
    return {"data": data}


def test_patch_merges_attributes(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(
        email="m@example.com",
        first_name="Mia",
        last_name="Moe",
        location={"city": "Oslo", "zip": "0150"},
        properties={"a": 1, "b": 2},
        updated="2020-01-01T00:00:00Z",
    )
    reply = api.patch(
        f"/api/profiles/{pid}",
        _patch_body(
            pid,
            {
                "first_name": "Maria",
                "last_name": None,
                "location": {"city": "Bergen"},
                "properties": {"b": 3, "c": 4},
            },
        ),
    )
    assert reply.status == 200
    attributes = reply.json()["data"]["attributes"]
    assert attributes["first_name"] == "Maria"
    assert attributes["last_name"] is None
    assert attributes["email"] == "m@example.com"
    assert attributes["location"]["city"] == "Bergen"
    assert attributes["location"]["zip"] == "0150"
    assert attributes["properties"] == {"a": 1, "b": 3, "c": 4}
    assert attributes["updated"] > "2020-01-01T00:00:00+00:00"
    assert emu.profile(pid)["attributes"]["first_name"] == "Maria"


def test_patch_properties_operations(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(
        email="pp@example.com", properties={"skus": ["1", "2"], "tag": "x", "old": True}
    )
    meta = {
        "patch_properties": {
            "append": {"skus": "3", "colors": "red"},
            "unappend": {"skus": "1"},
            "unset": ["old"],
        }
    }
    reply = api.patch(f"/api/profiles/{pid}", _patch_body(pid, {}, meta))
    assert reply.status == 200
    assert reply.json()["data"]["attributes"]["properties"] == {
        "skus": ["2", "3"],
        "tag": "x",
        "colors": ["red"],
    }
    api.patch(f"/api/profiles/{pid}", _patch_body(pid, {}, {"patch_properties": {"unset": "tag"}}))
    assert "tag" not in emu.profile(pid)["attributes"]["properties"]


def test_patch_to_another_profiles_email_is_409(api: Api, emu: KlaviyoEmulator) -> None:
    owner = emu.create_profile(email="taken@example.com")
    pid = emu.create_profile(email="mine@example.com")
    reply = api.patch(f"/api/profiles/{pid}", _patch_body(pid, {"email": "Taken@example.com"}))
    assert reply.status == 409
    assert reply.error["meta"]["duplicate_profile_id"] == owner
    assert emu.profile(pid)["attributes"]["email"] == "mine@example.com"
    # Re-sending one's own identifiers is not a conflict.
    same = api.patch(f"/api/profiles/{pid}", _patch_body(pid, {"email": "mine@example.com"}))
    assert same.status == 200


def test_patch_released_email_can_be_reused(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="old@example.com", external_id="e1")
    api.patch(f"/api/profiles/{pid}", _patch_body(pid, {"email": "new@example.com"}))
    assert api.create_profile(email="old@example.com").status == 201


def test_patch_validation(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="v@example.com")
    bad_phone = api.patch(f"/api/profiles/{pid}", _patch_body(pid, {"phone_number": "12"}))
    assert bad_phone.status == 400
    assert bad_phone.error["source"]["pointer"] == "/data/attributes/phone_number"
    cleared = api.patch(f"/api/profiles/{pid}", _patch_body(pid, {"email": None}))
    assert cleared.status == 400
    assert cleared.error["detail"] == "One or more identifiers is required"


@pytest.mark.usefixtures("bad_requests_ok")
def test_patch_document_rules(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="d@example.com")
    other = emu.create_profile(email="e@example.com")
    no_id = api.patch(
        f"/api/profiles/{pid}", {"data": {"type": "profile", "attributes": {"first_name": "x"}}}
    )
    assert (no_id.status, no_id.error["source"]["pointer"]) == (400, "/data/id")
    wrong_type = api.patch(
        f"/api/profiles/{pid}", {"data": {"type": "list", "id": pid, "attributes": {}}}
    )
    assert (wrong_type.status, wrong_type.error["source"]["pointer"]) == (400, "/data/type")
    mismatch = api.patch(f"/api/profiles/{pid}", _patch_body(other, {"first_name": "x"}))
    assert mismatch.status == 409
    assert mismatch.error["code"] == "conflict"
    unknown = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    assert api.patch(f"/api/profiles/{unknown}", _patch_body(unknown, {})).status == 404


# ---- profile-import ----------------------------------------------------------------------


def _import(api: Api, attributes: dict, profile_id: str | None = None) -> tuple[int, dict]:
    data: dict = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        data["id"] = profile_id
    reply = api.post("/api/profile-import", {"data": data})
    return reply.status, reply.json()


def test_import_creates_then_updates(api: Api, emu: KlaviyoEmulator) -> None:
    status, body = _import(api, {"email": "imp@example.com", "first_name": "A"})
    assert status == 201
    pid = body["data"]["id"]
    status, body = _import(api, {"email": "IMP@example.com", "last_name": "B"})
    assert status == 200
    assert body["data"]["id"] == pid
    assert body["data"]["attributes"]["first_name"] == "A"
    assert body["data"]["attributes"]["last_name"] == "B"
    assert len(emu.profiles()) == 1


def test_import_matches_by_id_phone_and_external_id(api: Api, emu: KlaviyoEmulator) -> None:
    by_id = emu.create_profile(email="id@example.com")
    by_phone = emu.create_profile(phone_number="+15005550009")
    by_ext = emu.create_profile(external_id="crm-77")
    status, body = _import(api, {"first_name": "I"}, by_id)
    assert (status, body["data"]["id"]) == (200, by_id)
    # The same answer again, but for ``updated``, which may cross a second in between.
    again = _import(api, {}, by_id)[1]
    for reply in (body, again):
        del reply["data"]["attributes"]["updated"]
    assert again == body
    assert _import(api, {"phone_number": "+15005550009", "first_name": "P"})[1]["data"]["id"] == (
        by_phone
    )
    status, body = _import(api, {"external_id": "crm-77", "first_name": "E"})
    assert (status, body["data"]["id"]) == (200, by_ext)
    assert emu.profile(by_id)["attributes"]["first_name"] == "I"


def test_import_conflict_between_email_and_phone_owners(api: Api, emu: KlaviyoEmulator) -> None:
    emu.create_profile(email="one@example.com")
    phone_owner = emu.create_profile(phone_number="+15005550010")
    status, body = _import(api, {"email": "one@example.com", "phone_number": "+15005550010"})
    assert status == 409
    assert body["errors"][0]["code"] == "duplicate_profile"
    assert body["errors"][0]["meta"]["duplicate_profile_id"] == phone_owner


def test_import_validates_like_create(api: Api) -> None:
    status, body = _import(api, {"email": "nope"})
    assert status == 400
    assert body["errors"][0]["detail"] == "Invalid email address"
    status, body = _import(api, {"first_name": "No identifiers"})
    assert status == 400
    assert body["errors"][0]["detail"] == "One or more identifiers is required"


def test_updated_timestamps_are_iso(emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="t@example.com", created="2024-01-02T03:04:05")
    attributes = emu.profile(pid)["attributes"]
    assert attributes["created"] == "2024-01-02T03:04:05+00:00"
    assert datetime.fromisoformat(attributes["updated"]).utcoffset() is not None


def test_recorded_requests(api: Api, emu: KlaviyoEmulator) -> None:
    api.get("/api/profiles", query={"filter": 'equals(email,"a+b@example.com")', "page[size]": "5"})
    api.create_profile(email="rec@example.com")
    first, second = emu.requests
    assert (first.method, first.path, first.status) == ("GET", "/api/profiles", 200)
    assert first.query == {"filter": ['equals(email,"a+b@example.com")'], "page[size]": ["5"]}
    assert first.operation_id == "get_profiles"
    assert second.json()["data"]["attributes"]["email"] == "rec@example.com"
    assert second.response_json()["data"]["type"] == "profile"
    assert (emu.calls(), emu.calls("create_profile"), emu.calls("get_profile")) == (2, 1, 0)


# ---- nesting ----------------------------------------------------------------------------


def _deep_profile_body(levels: int) -> bytes:
    """A create body whose property ``deep`` holds ``levels`` nested objects, written by hand
    (``json.dumps`` itself gives up near 1000 levels)."""
    value = '{"k": ' * levels + '"leaf"' + "}" * levels
    return (
        '{"data": {"type": "profile", "attributes": {"email": "deep@example.com", '
        f'"properties": {{"deep": {value}}}}}}}}}'
    ).encode()


@pytest.mark.parametrize(
    "levels",
    # Past Python's recursion limit the contract checker cannot read the body either.
    [10, 950, pytest.param(5000, marks=pytest.mark.klaviyo_contract_violations_allowed)],
)
def test_deeply_nested_properties_are_a_400_not_a_crash(api: Api, levels: int) -> None:
    reply = api.post("/api/profiles", _deep_profile_body(levels))
    assert reply.status == 400
    assert reply.error["code"] in ("invalid", "parse_error")


def test_properties_nested_up_to_the_limit_are_kept(api: Api) -> None:
    reply = api.post("/api/profiles", _deep_profile_body(9))
    assert reply.status == 201
    assert reply.json()["data"]["attributes"]["properties"]["deep"]["k"]["k"]
