"""Bulk profile import: POST /api/profile-bulk-import-jobs and the job's read routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from bulk_bodies import IMPORT_JOBS, import_job, profile
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator, spec_rules
from devtools.klaviyo_emulator.contract import default_spec_path
from devtools.klaviyo_emulator.operations import SERVED_OPERATIONS
from devtools.klaviyo_emulator.spec_rules import SpecRules

SPEC = default_spec_path()


def _submit(api: Api, body: dict[str, Any]) -> str:
    reply = api.post(IMPORT_JOBS, body)
    assert reply.status == 202, reply.body
    return str(reply.json()["data"]["id"])


def _ids(reply: Any) -> list[str]:
    return [item["id"] for item in reply.json()["data"]]


def test_job_is_queued_in_the_answer_and_complete_later(api: Api, emu: KlaviyoEmulator) -> None:
    reply = api.post(IMPORT_JOBS, import_job(profile(email="a@example.com")))
    assert reply.status == 202
    job = reply.json()["data"]
    assert job["type"] == "profile-bulk-import-job"
    assert job["attributes"] == {
        **job["attributes"],
        "status": "queued",
        "total_count": 1,
        "completed_count": 0,
        "failed_count": 0,
        "started_at": None,
        "completed_at": None,
    }
    assert job["links"]["self"] == f"{api.base_url}{IMPORT_JOBS}/{job['id']}/"
    got = api.get(f"{IMPORT_JOBS}/{job['id']}").json()["data"]["attributes"]
    assert (got["status"], got["completed_count"], got["failed_count"]) == ("complete", 1, 0)
    assert got["created_at"] <= got["started_at"] <= got["completed_at"]


def test_profiles_are_matched_by_email_then_phone_else_created(
    api: Api, emu: KlaviyoEmulator
) -> None:
    by_email = emu.create_profile(email="known@example.com", first_name="Old")
    by_phone = emu.create_profile(phone_number="+15005550006")
    job_id = _submit(
        api,
        import_job(
            profile(email="KNOWN@example.com", first_name="New"),
            profile(phone_number="+15005550006", last_name="Phone"),
            profile(email="fresh@example.com", properties={"source": "import"}),
        ),
    )
    listed = _ids(api.get(f"{IMPORT_JOBS}/{job_id}/profiles"))
    assert listed[:2] == [by_email, by_phone]
    fresh = listed[2]
    assert emu.profile(by_email)["attributes"]["first_name"] == "New"
    assert emu.profile(by_phone)["attributes"]["last_name"] == "Phone"
    assert emu.profile(fresh)["attributes"]["properties"] == {"source": "import"}
    assert len(emu.profiles()) == 3
    assert _ids(api.get(f"{IMPORT_JOBS}/{job_id}/relationships/profiles")) == listed


def test_the_same_person_twice_in_one_job_is_one_profile(api: Api, emu: KlaviyoEmulator) -> None:
    job_id = _submit(
        api,
        import_job(
            profile(email="twice@example.com", first_name="A"),
            profile(email="twice@example.com", last_name="B"),
        ),
    )
    assert emu.import_job(job_id)["attributes"]["completed_count"] == 2
    assert len(emu.import_job(job_id)["profile_ids"]) == 1
    (only,) = emu.profiles()
    assert (only["attributes"]["first_name"], only["attributes"]["last_name"]) == ("A", "B")


def test_null_values_clear_nothing(api: Api, emu: KlaviyoEmulator) -> None:
    """The import guide: only fields with non-null values are updated."""
    pid = emu.create_profile(
        email="keep@example.com",
        first_name="Kept",
        location={"city": "Boston"},
        properties={"tier": "gold"},
    )
    _submit(
        api,
        import_job(
            profile(
                email="keep@example.com",
                first_name=None,
                location={"city": None, "zip": "02110"},
                properties={"tier": None, "plan": "pro"},
            )
        ),
    )
    attributes = emu.profile(pid)["attributes"]
    assert attributes["first_name"] == "Kept"
    assert (attributes["location"]["city"], attributes["location"]["zip"]) == ("Boston", "02110")
    assert attributes["properties"] == {"tier": "gold", "plan": "pro"}


@pytest.mark.usefixtures("bad_requests_ok")
def test_one_profile_failing_validation_refuses_the_whole_job(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """All or nothing (rudderlabs/rudder-server PR #7107): one malformed email makes the
    request a 400 and nothing is imported; the errors name every refused profile."""
    emu.configure(sms_enabled=False)
    good = [profile(email=f"good{i}@example.com") for i in range(60)]
    refused = {
        3: profile(email="john..doe@example.com"),
        10: profile(email=".lead@example.com"),
        17: profile(email="lead.@example.com"),
        24: profile(email="be\x07ll@example.com"),
        31: profile(email="line@example.com\n"),
        38: profile(email="ok@example.com", phone_number="555-0100"),
        45: profile(first_name="Nobody"),
        52: profile(phone_number="+15005550006"),  # a phone alone is no identifier without SMS
    }
    sent = list(good)
    for position, item in sorted(refused.items()):
        sent.insert(position, item)
    assert [sent[i] for i in refused] == list(refused.values())
    sent.append(profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ", first_name="By id"))  # no identifier needed
    reply = api.post(IMPORT_JOBS, import_job(*sent))
    assert reply.status == 400
    where = "/data/attributes/profiles/data"
    email = "Invalid email address"
    phone = "Invalid phone number format (Example of a valid format: +12345678901)"
    found = [(e["code"], e["source"]["pointer"], e["detail"]) for e in reply.json()["errors"]]
    assert found == [
        ("invalid", f"{where}/3/attributes/email", email),
        ("invalid", f"{where}/10/attributes/email", email),
        ("invalid", f"{where}/17/attributes/email", email),
        ("invalid", f"{where}/24/attributes/email", email),
        ("invalid", f"{where}/31/attributes/email", email),
        ("invalid", f"{where}/38/attributes/phone_number", phone),
        ("invalid", f"{where}/45/attributes", "One or more identifiers is required"),
        ("invalid", f"{where}/52/attributes", "One or more identifiers is required"),
    ]
    assert api.get(IMPORT_JOBS).json()["data"] == []
    assert emu.profiles() == []

    # Without the refused profiles the same request goes through, every profile imported.
    rest = [item for i, item in enumerate(sent[:-1]) if i not in refused]
    job_id = _submit(api, import_job(*rest))
    job = api.get(f"{IMPORT_JOBS}/{job_id}").json()["data"]["attributes"]
    assert (job["total_count"], job["completed_count"], job["failed_count"]) == (60, 60, 0)
    assert len(emu.profiles()) == 60


def test_what_the_job_decides_is_an_import_error_and_the_others_go_through(
    api: Api, emu: KlaviyoEmulator
) -> None:
    owner = emu.create_profile(email="owner@example.com")
    other = emu.create_profile(email="other@example.com")
    phone_owner = emu.create_profile(phone_number="+15005550007")
    sent = [
        profile(email="good@example.com"),
        profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ", first_name="Ghost"),
        profile(other, email="owner@example.com"),
        profile(email="other@example.com", phone_number="+15005550007"),
    ]
    job_id = _submit(api, import_job(*sent))
    job = api.get(f"{IMPORT_JOBS}/{job_id}").json()["data"]["attributes"]
    assert (job["total_count"], job["completed_count"], job["failed_count"]) == (4, 1, 3)
    errors = api.get(f"{IMPORT_JOBS}/{job_id}/import-errors").json()["data"]
    assert all(e["type"] == "import-error" for e in errors)
    found = [
        (e["attributes"]["code"], e["attributes"]["source"]["pointer"], e["attributes"]["detail"])
        for e in errors
    ]
    where = "/data/attributes/profiles/data"
    assert found == [
        (
            "not_found",
            f"{where}/1/id",
            "A profile with id 01ZZZZZZZZZZZZZZZZZZZZZZZZ does not exist.",
        ),
        (
            "duplicate_profile",
            f"{where}/2/attributes/email",
            "A profile already exists with one of these identifiers.",
        ),
        (
            "duplicate_profile",
            f"{where}/3/attributes/phone_number",
            "A profile already exists with one of these identifiers.",
        ),
    ]
    assert [e["attributes"]["original_payload"] for e in errors] == sent[1:]
    assert emu.profile(other)["attributes"]["email"] == "other@example.com"
    assert emu.profile(phone_owner)["attributes"]["email"] is None
    assert {p["attributes"]["email"] for p in emu.profiles()} == {
        "owner@example.com",
        "other@example.com",
        None,
        "good@example.com",
    }
    assert owner in {p["id"] for p in emu.profiles()}


def test_external_id_does_not_match_unless_configured(api: Api, emu: KlaviyoEmulator) -> None:
    existing = emu.create_profile(external_id="crm-1", first_name="Old")
    first = _submit(api, import_job(profile(external_id="crm-1", first_name="New")))
    (created,) = emu.import_job(first)["profile_ids"]
    assert created != existing
    emu.configure(import_external_id_match=True)
    second = _submit(api, import_job(profile(external_id="crm-1", last_name="Matched")))
    (matched,) = emu.import_job(second)["profile_ids"]
    assert matched == existing  # the oldest holder, as for Create or Update Profile
    assert emu.profile(existing)["attributes"]["last_name"] == "Matched"


def test_profiles_and_errors_page_with_full_next_links(api: Api, emu: KlaviyoEmulator) -> None:
    good = [profile(email=f"p{i}@example.com") for i in range(130)]
    bad = [profile(f"01NOSUCHPROFILE{i:011d}", first_name="Ghost") for i in range(25)]
    job_id = _submit(api, import_job(*good, *bad))
    first = api.get(f"{IMPORT_JOBS}/{job_id}/profiles").json()
    assert len(first["data"]) == 20  # the spec's default page size
    seen: list[str] = []
    page = api.get(f"{IMPORT_JOBS}/{job_id}/profiles", query={"page[size]": "100"}).json()
    while True:
        seen += [p["id"] for p in page["data"]]
        if page["links"]["next"] is None:
            break
        assert page["links"]["next"].startswith(f"{api.base_url}{IMPORT_JOBS}/{job_id}/profiles")
        page = api.get(page["links"]["next"]).json()
    assert seen == emu.import_job(job_id)["profile_ids"] and len(seen) == 130
    errors = api.get(f"{IMPORT_JOBS}/{job_id}/import-errors", query={"page[size]": "10"}).json()
    assert len(errors["data"]) == 10 and errors["links"]["next"] is not None
    assert len(api.get(errors["links"]["next"]).json()["data"]) == 10


def test_additional_fields_and_sparse_fieldsets_on_job_profiles(
    api: Api, emu: KlaviyoEmulator
) -> None:
    job_id = _submit(api, import_job(profile(email="f@example.com", first_name="F")))
    plain = api.get(f"{IMPORT_JOBS}/{job_id}/profiles").json()["data"][0]["attributes"]
    assert "subscriptions" not in plain
    full = api.get(
        f"{IMPORT_JOBS}/{job_id}/profiles", query={"additional-fields[profile]": "subscriptions"}
    ).json()["data"][0]["attributes"]
    assert full["subscriptions"]["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    sparse = api.get(
        f"{IMPORT_JOBS}/{job_id}/profiles", query={"fields[profile]": "first_name"}
    ).json()["data"][0]["attributes"]
    assert sparse == {"first_name": "F"}
    job = api.get(
        f"{IMPORT_JOBS}/{job_id}", query={"fields[profile-bulk-import-job]": "status"}
    ).json()["data"]
    assert job["attributes"] == {"status": "complete"}


def test_imported_profiles_join_the_jobs_lists_without_consent(
    api: Api, emu: KlaviyoEmulator
) -> None:
    list_id = emu.create_list("Imported", list_id="IMPRTD")
    job_id = _submit(
        api,
        import_job(
            profile(email="in@example.com"),
            profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ", first_name="Ghost"),
            list_ids=(list_id,),
        ),
    )
    (member,) = emu.import_job(job_id)["profile_ids"]
    assert emu.list_members(list_id) == {member}
    consent = emu.profile(member)["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
    assert consent == "NEVER_SUBSCRIBED"
    ids = api.get(f"{IMPORT_JOBS}/{job_id}/relationships/lists").json()["data"]
    assert ids == [{"type": "list", "id": list_id}]
    lists = api.get(f"{IMPORT_JOBS}/{job_id}/lists").json()["data"]
    assert [(item["id"], item["attributes"]["name"]) for item in lists] == [(list_id, "Imported")]
    included = api.get(f"{IMPORT_JOBS}/{job_id}", query={"include": "lists"}).json()
    assert included["data"]["relationships"]["lists"]["data"] == ids
    assert [item["id"] for item in included["included"]] == [list_id]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def slow(clock: FakeClock) -> Iterator[KlaviyoEmulator]:
    openapi = SPEC if SPEC.exists() else None
    with KlaviyoEmulator(clock=clock, import_delay=10, import_rate=2, openapi_path=openapi) as emu:
        yield emu
        assert emu.contract_violations == []


def test_a_job_starts_after_the_delay_and_takes_time_per_profile(
    slow: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(slow.base_url)
    job_id = _submit(api, import_job(*[profile(email=f"s{i}@example.com") for i in range(4)]))

    def state() -> tuple[str, int, int]:
        job = api.get(f"{IMPORT_JOBS}/{job_id}").json()["data"]["attributes"]
        listed = api.get(f"{IMPORT_JOBS}/{job_id}/profiles").json()["data"]
        return job["status"], job["completed_count"], len(listed)

    assert state() == ("queued", 0, 0)
    assert slow.profiles() == []
    clock.advance(10)
    assert state() == ("processing", 0, 0)
    clock.advance(0.5)  # import_rate=2: half a second per profile
    assert state() == ("processing", 1, 1)
    clock.advance(1.5)
    assert state() == ("complete", 4, 4)
    job = api.get(f"{IMPORT_JOBS}/{job_id}").json()["data"]["attributes"]
    assert job["started_at"] == "2027-01-15T08:00:10+00:00"
    assert job["completed_at"] == "2027-01-15T08:00:12+00:00"
    assert job["created_at"] == "2027-01-15T08:00:00+00:00"


def test_jobs_are_listed_filtered_by_status_and_sorted(
    slow: KlaviyoEmulator, clock: FakeClock
) -> None:
    api = Api(slow.base_url)
    done = _submit(api, import_job(profile(email="d@example.com")))
    clock.advance(20)
    waiting = _submit(api, import_job(profile(email="w@example.com")))
    assert _ids(api.get(IMPORT_JOBS)) == [done, waiting]
    assert _ids(api.get(IMPORT_JOBS, query={"sort": "-created_at"})) == [waiting, done]
    assert _ids(api.get(IMPORT_JOBS, query={"filter": "equals(status,'queued')"})) == [waiting]
    both = api.get(IMPORT_JOBS, query={"filter": "any(status,['queued','complete'])"})
    assert _ids(both) == [done, waiting]
    first = api.get(IMPORT_JOBS, query={"page[size]": "1"}).json()
    assert _ids_of(first) == [done]
    assert _ids_of(api.get(first["links"]["next"]).json()) == [waiting]


def _ids_of(document: dict[str, Any]) -> list[str]:
    return [item["id"] for item in document["data"]]


def test_imported_profiles_reach_search_after_the_search_lag(clock: FakeClock) -> None:
    with KlaviyoEmulator(clock=clock, search_lag=5) as emu:
        api = Api(emu.base_url)
        job_id = _submit(api, import_job(profile(email="lagged@example.com")))
        (pid,) = emu.import_job(job_id)["profile_ids"]
        query = {"filter": 'equals(email,"lagged@example.com")'}
        assert api.get("/api/profiles", query=query).json()["data"] == []
        assert api.get(f"/api/profiles/{pid}").status == 200
        clock.advance(5)
        assert _ids(api.get("/api/profiles", query=query)) == [pid]


def test_unknown_job_is_404(api: Api) -> None:
    for path in ("nope", "nope/profiles", "nope/import-errors", "nope/relationships/lists"):
        reply = api.get(f"{IMPORT_JOBS}/{path}")
        assert reply.status == 404
        assert reply.error["code"] == "not_found"


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"data": {"type": "profile-import-job", "attributes": {}}}, "/data/type"),
        (import_job(), "/data/attributes/profiles/data"),
        (
            import_job(profile(email="a@example.com", shoe_size="9")),
            "/data/attributes/profiles/data/0/attributes/shoe_size",
        ),
        (
            import_job(profile(email=["a@example.com"])),
            "/data/attributes/profiles/data/0/attributes/email",
        ),
        (
            import_job(profile(email="a@example.com"), list_ids=("NOLIST",)),
            "/data/relationships/lists/data/0/id",
        ),
        (
            import_job(profile(email="a@example.com"), {"type": "list", "attributes": {}}),
            "/data/attributes/profiles/data/1/type",
        ),
    ],
)
def test_what_refuses_the_whole_request(
    api: Api, emu: KlaviyoEmulator, body: dict[str, Any], pointer: str
) -> None:
    reply = api.post(IMPORT_JOBS, body)
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": pointer}
    assert api.get(IMPORT_JOBS).json()["data"] == []
    assert emu.profiles() == []


@pytest.mark.usefixtures("bad_requests_ok")
def test_at_most_10000_profiles_per_job(api: Api, emu: KlaviyoEmulator) -> None:
    """The spec: "Accepts up to 10,000 profiles per request"."""
    assert emu.rules["bulk_import_profiles"].item_limit == 10_000
    many = [profile(email=f"m{i}@example.com") for i in range(10_001)]
    reply = api.post(IMPORT_JOBS, import_job(*many))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/attributes/profiles/data"}
    assert emu.profiles() == []


def test_the_profile_cap_is_the_rules_one() -> None:
    rules = spec_rules.load(SPEC, SERVED_OPERATIONS)
    capped = replace(rules["bulk_import_profiles"], item_limit=2)
    loose = SpecRules([*(rules[op] for op in rules if op != capped.operation_id), capped], "test")
    with KlaviyoEmulator(rules=loose) as emu:
        api = Api(emu.base_url)
        two = [profile(email=f"t{i}@example.com") for i in range(3)]
        assert api.post(IMPORT_JOBS, import_job(*two[:2])).status == 202
        assert api.post(IMPORT_JOBS, import_job(*two)).status == 400


@pytest.mark.usefixtures("bad_requests_ok")
def test_at_most_100_kb_per_profile(api: Api) -> None:
    """The spec: "The maximum allowed payload size per-profile is 100KB"."""
    fits = profile(email="a@example.com", properties={"notes": "x" * 100_000})
    too_big = profile(email="b@example.com", properties={"notes": "x" * 103_000})
    assert api.post(IMPORT_JOBS, import_job(fits)).status == 202
    reply = api.post(IMPORT_JOBS, import_job(fits, too_big))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/attributes/profiles/data/1"}


@pytest.mark.usefixtures("bad_requests_ok")
def test_scopes_come_from_the_document(api: Api, emu: KlaviyoEmulator) -> None:
    emu.set_api_keys({"pk_profiles": {"profiles:write"}})
    reply = api.post(IMPORT_JOBS, import_job(profile(email="a@example.com")), key="pk_profiles")
    assert reply.status == 403
    assert "lists:write" in reply.error["detail"]
    assert api.get(IMPORT_JOBS, key="pk_profiles").status == 403  # needs lists:read too
