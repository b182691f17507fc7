"""POST /api/data-privacy-deletion-jobs (request_profile_deletion)."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_http import Api
from fake_clock import FakeClock

from devtools.klaviyo_emulator import KlaviyoEmulator

JOBS = "/api/data-privacy-deletion-jobs"


def deletion(profile_id: str | None = None, **attributes: str) -> dict[str, Any]:
    profile: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        profile["id"] = profile_id
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": profile}},
        }
    }


def test_deletes_the_profile_and_its_memberships(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="gone@example.com", phone_number="+15005550006")
    keep = emu.create_profile(email="kept@example.com")
    list_id = emu.create_list("L")
    segment = emu.create_segment("S")
    emu.add_to_list(list_id, pid, keep)
    emu.add_to_segment(segment, pid)
    reply = api.post(JOBS, deletion(email="GONE@example.com"))
    assert (reply.status, reply.body) == (202, b"")
    assert [p["id"] for p in emu.profiles()] == [keep]
    assert emu.list_members(list_id) == {keep}
    assert emu.segment_members(segment) == set()
    assert api.get(f"/api/profiles/{pid}").status == 404
    # Its identifiers are free again.
    assert api.create_profile(email="gone@example.com", phone_number="+15005550006").status == 201


@pytest.mark.parametrize(
    "identify", [lambda pid: deletion(pid), lambda pid: deletion(phone_number="+15005550006")]
)
def test_by_id_or_phone(api: Api, emu: KlaviyoEmulator, identify: Any) -> None:
    pid = emu.create_profile(email="a@example.com", phone_number="+15005550006")
    assert api.post(JOBS, identify(pid)).status == 202
    assert emu.profiles() == []


def test_every_profile_with_the_identifier_goes(api: Api, emu: KlaviyoEmulator) -> None:
    """ "All profiles that match the provided identifier will be deleted" (spec)."""
    emu.create_profile(email="twin@example.com")
    emu.create_profile(email="twin@example.com")  # seeding allows duplicates
    assert api.post(JOBS, deletion(email="twin@example.com")).status == 202
    assert emu.profiles() == []


def test_deletion_applies_after_the_delay() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(deletion_delay=10, clock=clock) as emu:
        pid = emu.create_profile(email="later@example.com")
        assert Api(emu.base_url).post(JOBS, deletion(pid)).status == 202
        clock.advance(9)
        assert len(emu.profiles()) == 1
        clock.advance(1)
        assert emu.profiles() == []


def test_unknown_identifier_is_accepted_and_changes_nothing(api: Api, emu: KlaviyoEmulator) -> None:
    emu.create_profile(email="a@example.com")
    assert api.post(JOBS, deletion(email="nobody@example.com")).status == 202
    assert api.post(JOBS, deletion("01ZZZZZZZZZZZZZZZZZZZZZZZZ")).status == 202
    assert api.post(JOBS, deletion(phone_number="+15005550099")).status == 202
    assert len(emu.profiles()) == 1


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    "body",
    [
        deletion("01ZZZZZZZZZZZZZZZZZZZZZZZZ", email="a@example.com"),
        deletion(email="a@example.com", phone_number="+15005550006"),
        deletion(),
    ],
)
def test_exactly_one_identifier(api: Api, body: dict[str, Any]) -> None:
    reply = api.post(JOBS, body)
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert reply.error["source"] == {"pointer": "/data/attributes/profile/data"}


def test_invalid_email_is_400(api: Api) -> None:
    reply = api.post(JOBS, deletion(email="not-an-email"))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/attributes/profile/data/attributes/email"}


@pytest.mark.usefixtures("bad_requests_ok")
def test_needs_the_data_privacy_scope(api: Api, emu: KlaviyoEmulator) -> None:
    emu.set_api_keys({"pk_profiles": {"profiles:write"}})
    reply = api.post(JOBS, deletion(email="a@example.com"), key="pk_profiles")
    assert reply.status == 403
    assert "data-privacy:write" in reply.error["detail"]
