"""Auth, scopes, revision, media types, paths and the error envelope."""

from __future__ import annotations

import json
import uuid

import pytest
from emulator_http import JSON_API, Api

from devtools.klaviyo_emulator import KlaviyoEmulator

pytestmark = pytest.mark.usefixtures("bad_requests_ok")


def test_missing_key_is_401_with_jsonapi_error(api: Api) -> None:
    reply = api.get("/api/profiles", key=None)
    assert reply.status == 401
    assert reply.headers["content-type"] == JSON_API
    err = reply.error
    assert err["code"] == "not_authenticated"
    assert err["status"] == 401
    assert uuid.UUID(err["id"]).version == 4
    assert set(err) == {"id", "status", "code", "title", "detail", "source", "links", "meta"}


@pytest.mark.parametrize(
    "authorization",
    ["Klaviyo-API-Key pk_wrong", "Bearer pk_test_emulator", "pk_test_emulator", ""],
)
def test_bad_key_or_scheme_is_401(api: Api, authorization: str) -> None:
    reply = api.get("/api/profiles", key=None, headers={"Authorization": authorization})
    assert reply.status == 401
    assert reply.error["code"] == "not_authenticated"


def test_key_without_scope_is_403(emu: KlaviyoEmulator, api: Api) -> None:
    emu.set_api_keys({"pk_read": {"profiles:read"}})
    assert api.get("/api/profiles", key="pk_read").status == 200
    reply = api.post(
        "/api/profiles",
        {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}},
        key="pk_read",
    )
    assert reply.status == 403
    assert reply.error["code"] == "permission_denied"
    assert "profiles:write" in reply.error["detail"]


def test_write_scope_implies_read_and_all_scopes_are_needed(emu: KlaviyoEmulator, api: Api) -> None:
    emu.set_api_keys({"pk_w": {"profiles:write", "lists:write"}})
    assert api.get("/api/profiles", key="pk_w").status == 200
    emu.create_segment("S", segment_id="S1")
    reply = api.get("/api/segments/S1/profiles", key="pk_w")
    assert reply.status == 403
    assert "segments:read" in reply.error["detail"]


def test_key_rotation(emu: KlaviyoEmulator, api: Api) -> None:
    emu.set_api_keys({"pk_new": None})
    assert api.get("/api/profiles").status == 401
    assert api.get("/api/profiles", key="pk_new").status == 200


def test_reset_restores_constructor_keys(emu: KlaviyoEmulator, api: Api) -> None:
    emu.set_api_keys({"pk_new": None})
    emu.reset()
    assert api.get("/api/profiles").status == 200


def test_missing_revision_is_400(api: Api) -> None:
    reply = api.get("/api/profiles", revision=None)
    assert reply.status == 400
    assert reply.error["source"] == {"parameter": "revision"}


@pytest.mark.parametrize("revision", ["2026-7-15", "yesterday", "2026-02-30"])
def test_malformed_revision_is_400(api: Api, revision: str) -> None:
    assert api.get("/api/profiles", revision=revision).status == 400


@pytest.mark.parametrize("revision", ["2026-10-15", "2022-12-31", "2026-07-15.beta", "2099-01-01"])
def test_unknown_or_future_revision_is_404(api: Api, revision: str) -> None:
    reply = api.get("/api/profiles", revision=revision)
    assert reply.status == 404
    assert reply.error["detail"] == "No valid revisions found for method"


@pytest.mark.parametrize("revision", ["2026-07-15", "2024-10-15", "2023-01-01", "2026-04-15.pre"])
def test_known_revisions_are_accepted(api: Api, revision: str) -> None:
    assert api.get("/api/profiles", revision=revision).status == 200


def test_revision_ceiling_is_configurable() -> None:
    with KlaviyoEmulator(revision="2025-01-15") as emu:
        api = Api(emu.base_url)
        assert api.get("/api/profiles", revision="2025-01-15").status == 200
        assert api.get("/api/profiles", revision="2026-07-15").status == 404


def test_trailing_slash_is_accepted(api: Api) -> None:
    assert api.get("/api/profiles/").status == 200
    created = api.post(
        "/api/profiles/", {"data": {"type": "profile", "attributes": {"email": "s@example.com"}}}
    )
    assert created.status == 201


def test_unknown_api_path_is_404_and_wrong_method_405(api: Api) -> None:
    assert api.get("/api/nothing-here").status == 404
    reply = api.request("PUT", "/api/profiles", {"data": {}})
    assert reply.status == 405
    assert reply.error["code"] == "method_not_allowed"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(api: Api, content_type: str | None) -> None:
    body = {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}
    reply = api.post("/api/profiles", body, content_type=content_type)
    assert reply.status == 415
    assert reply.error["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type", ["application/json", JSON_API, "application/vnd.api+json; charset=utf-8"]
)
def test_json_media_types_are_accepted(api: Api, content_type: str) -> None:
    body = {"data": {"type": "profile", "attributes": {"email": "ct@example.com"}}}
    assert api.post("/api/profiles", body, content_type=content_type).status == 201


def test_profile_body_over_100kb_is_413(api: Api) -> None:
    body = {
        "data": {
            "type": "profile",
            "attributes": {"email": "big@example.com", "properties": {"blob": "x" * 110_000}},
        }
    }
    reply = api.post("/api/profiles", body)
    assert reply.status == 413
    assert api.post("/api/profile-import", body).status == 413


def test_malformed_json_is_400(api: Api) -> None:
    reply = api.post("/api/profiles", b'{"data": {')
    assert reply.status == 400
    assert reply.error["code"] == "parse_error"


def test_non_api_paths_are_404(api: Api) -> None:
    assert api.get("/favicon.ico").status == 404


def test_fault_after_processing_loses_the_answer_but_keeps_the_effect():
    from devtools.klaviyo_emulator import Fault, KlaviyoEmulator

    with KlaviyoEmulator() as emu:
        emu.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        import urllib3

        with pytest.raises(urllib3.exceptions.ProtocolError):
            urllib3.request(
                "POST",
                emu.base_url + "/api/profiles",
                body=b'{"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}',
                headers={
                    "Authorization": "Klaviyo-API-Key pk_test_emulator",
                    "revision": "2026-07-15",
                    "Content-Type": "application/vnd.api+json",
                },
                retries=False,
            )
        assert [p["attributes"]["email"] for p in emu.profiles()] == ["a@example.com"]


def test_request_line_over_16_kb_gets_the_cdns_414_html(emu: KlaviyoEmulator, api: Api) -> None:
    """The CDN refuses before auth and routing: no key, no JSON, not even a real path."""
    padding = "a" * (16 * 1024)
    reply = api.get(f"/api/nowhere?filter={padding}", key=None, revision=None)
    assert reply.status == 414
    assert reply.headers["content-type"].startswith("text/html")
    assert b"414 Request-URI Too Large" in reply.body
    assert not any(h.startswith("ratelimit-") for h in reply.headers)
    assert [r.status for r in emu.requests] == [414]


def test_request_line_just_under_the_cap_is_served(api: Api) -> None:
    line_overhead = len("GET /api/profiles?x= HTTP/1.1")
    reply = api.get("/api/profiles", raw_query="x=" + "a" * (16 * 1024 - line_overhead))
    assert reply.status == 200


def test_profiles_carry_no_anonymous_id(api: Api, emu: KlaviyoEmulator) -> None:
    """``anonymous_id`` left server-side profile payloads in 2026-01-15 (SDK changelog)."""
    pid = emu.create_profile(email="a@example.com")
    reply = api.get(f"/api/profiles/{pid}", query={"additional-fields[profile]": "subscriptions"})
    assert "anonymous_id" not in json.dumps(reply.json())
