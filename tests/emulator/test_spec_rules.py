"""The rules read from Klaviyo's OpenAPI document, the packaged table, and their use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator, spec_rules
from devtools.klaviyo_emulator.operations import HANDLERS, SERVED_OPERATIONS
from devtools.klaviyo_emulator.spec_rules import TABLE_PATH, default_spec_path

SPEC = default_spec_path()
needs_spec = pytest.mark.skipif(
    not SPEC.exists(),
    reason=f"Klaviyo's OpenAPI document is missing (../shared/klaviyo/{SPEC.name})",
)


@needs_spec
def test_packaged_table_is_not_stale() -> None:
    """Fails when the document changed and ``make spec-rules`` was not run."""
    fresh = spec_rules.render(spec_rules.extract(json.loads(SPEC.read_text()), SERVED_OPERATIONS))
    assert TABLE_PATH.read_text() == fresh, "spec_rules.json is stale: run make spec-rules"


@needs_spec
def test_stale_check_notices_a_changed_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = json.loads(TABLE_PATH.read_text())
    stale["get_profiles_for_segment"]["filters"]["email"]["single"] = ["equals"]
    copy = tmp_path / "spec_rules.json"
    copy.write_text(json.dumps(stale))
    monkeypatch.setattr(spec_rules, "TABLE_PATH", copy)
    assert spec_rules.main(SERVED_OPERATIONS, ["--check", "--spec", str(SPEC)]) == 1
    assert spec_rules.main(SERVED_OPERATIONS, ["--spec", str(SPEC)]) == 0
    assert spec_rules.main(SERVED_OPERATIONS, ["--check", "--spec", str(SPEC)]) == 0


def test_table_covers_every_served_operation() -> None:
    assert set(spec_rules.from_table()) == set(HANDLERS)


@needs_spec
def test_without_the_document_the_table_gives_the_same_rules(tmp_path: Path) -> None:
    from_document = spec_rules.load(SPEC, SERVED_OPERATIONS)
    without = spec_rules.load(tmp_path / "absent.json", SERVED_OPERATIONS)
    assert without.source == str(TABLE_PATH)
    assert without.to_json() == from_document.to_json()


def test_what_the_table_says_about_the_served_operations() -> None:
    rules = spec_rules.from_table()
    segment = rules["get_profiles_for_segment"].filters
    assert segment is not None
    assert segment["email"].single == frozenset() and segment["email"].listed == {"any", "equals"}
    profiles = rules["get_profiles"]
    assert profiles.filters is not None and profiles.filters["email"].single == {"equals"}
    assert profiles.limits == {"burst": 75, "steady": 750}
    assert rules["add_profiles_to_list"].limits == {"burst": 10, "steady": 150}
    assert rules["create_list"].limits == {"burst": 10, "steady": 150, "daily": 150}
    assert rules["request_profile_deletion"].scopes == ("data-privacy:write",)
    assert rules["get_lists"].page_size == spec_rules.PageSize(10, 1, 10)
    assert rules["create_profile"].body_limit == 100 * 1024
    # Caps the prose states for the bulk operations.
    assert rules["bulk_import_profiles"].item_limit == 10_000
    assert rules["bulk_import_profiles"].item_body_limit == 100 * 1024
    assert rules["bulk_import_profiles"].body_limit == 5 * 1024 * 1024
    assert rules["bulk_create_events"].item_limit == 1000
    assert rules["bulk_create_events"].string_limit == 100 * 1024
    assert rules["bulk_unsubscribe_profiles"].item_limit == 100
    assert rules["bulk_subscribe_profiles"].item_limit == 1000
    assert rules["add_profiles_to_list"].item_limit == 1000
    assert rules["remove_profiles_from_list"].item_limit == 1000
    assert rules["create_event"].item_limit is None
    assert rules["get_bulk_import_profiles_jobs"].filters is not None
    assert rules["get_bulk_import_profiles_jobs"].filters["status"].enum == (
        "queued",
        "processing",
        "complete",
    )
    assert rules["get_errors_for_bulk_import_profiles_job"].page_size == spec_rules.PageSize(
        20, 1, 100
    )
    assert "opt_in_process" in rules["get_list"].enums["fields[list]"]
    assert [p.bucket for p in rules["get_profile"].parameter_limits] == [
        "include=lists",
        "include=segments",
    ]


def test_emulator_without_the_document_is_as_strict(tmp_path: Path) -> None:
    with KlaviyoEmulator(openapi_path=None, rules=spec_rules.from_table()) as emu:
        emu.create_segment("S", segment_id="S1")
        emu.create_profile(email="a@example.com")
        reply = Api(emu.base_url).get(
            "/api/segments/S1/profiles", query={"filter": 'equals(email,"a@example.com")'}
        )
        assert reply.status == 400
        assert reply.error["source"] == {"parameter": "filter"}


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("fields[profile]", "email,shoe_size"),
        ("additional-fields[profile]", "subscriptions,everything"),
        ("include", "profiles"),
        ("sort", "first_name"),
        ("page[size]", "101"),
    ],
)
def test_enum_and_bound_violations_are_400_naming_the_parameter(
    api: Api, name: str, value: str
) -> None:
    reply = api.get("/api/profiles", query={name: value})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert reply.error["title"] == "Invalid input."
    assert reply.error["source"] == {"parameter": name}


def test_include_error_uses_klaviyos_documented_wording(api: Api, emu: KlaviyoEmulator) -> None:
    emu.clear_contract_violations()
    reply = api.get("/api/profiles", query={"include": "profiless"})
    emu.clear_contract_violations()
    assert (
        reply.error["detail"]
        == "'profiless' is not an allowed include parameter for this resource."
    )


def test_sparse_fieldsets_on_lists(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Leads")
    reply = api.get(f"/api/lists/{list_id}", query={"fields[list]": "name,opt_in_process"})
    assert reply.json()["data"]["attributes"] == {
        "name": "Leads",
        "opt_in_process": "double_opt_in",
    }
    listed = api.get("/api/lists", query={"fields[list]": "opt_in_process"}).json()["data"]
    assert [item["attributes"] for item in listed] == [{"opt_in_process": "double_opt_in"}]


def test_sparse_fieldsets_on_included_lists(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="a@example.com")
    emu.add_to_list(emu.create_list("Leads"), pid)
    reply = api.get(
        f"/api/profiles/{pid}",
        query={"include": "lists", "fields[list]": "name", "fields[profile]": "email"},
    ).json()
    assert reply["data"]["attributes"] == {"email": "a@example.com"}
    assert [item["attributes"] for item in reply["included"]] == [{"name": "Leads"}]


def test_sparse_fieldsets_on_segment_members(api: Api, emu: KlaviyoEmulator) -> None:
    emu.create_segment("S", segment_id="S1")
    emu.add_to_segment("S1", emu.create_profile(email="a@example.com", first_name="A"))
    reply = api.get(
        "/api/segments/S1/profiles", query={"fields[profile]": "email,joined_group_at"}
    ).json()
    assert set(reply["data"][0]["attributes"]) == {"email", "joined_group_at"}


def test_sparse_fieldsets_on_a_segment_meet_the_contract(api: Api, emu: KlaviyoEmulator) -> None:
    """The document marks is_active etc. required; a sparse fieldset leaves them out, and
    the contract check accepts that (the fixture fails this test on a violation)."""
    emu.create_segment("VIP", segment_id="VIPseg")
    reply = api.get("/api/segments/VIPseg", query={"fields[segment]": "name"})
    assert reply.json()["data"]["attributes"] == {"name": "VIP"}


@needs_spec
def test_the_document_has_no_anonymous_id_in_profile_responses() -> None:
    schemas = json.loads(SPEC.read_text())["components"]["schemas"]
    for name in ("ProfileResponseObjectResource", "GetProfileResponse", "PostProfileResponse"):
        assert "anonymous_id" not in json.dumps(schemas[name]), name
