"""POST /api/profile-subscription-bulk-delete-jobs (bulk_unsubscribe_profiles)."""

from __future__ import annotations

from typing import Any

import pytest
from bulk_bodies import EMAIL_OUT, SMS_OUT, UNSUBSCRIBE_JOBS, leaving, unsubscribe_job
from emulator_http import Api
from fake_clock import FakeClock
from subscribe_jobs import EMAIL, JOBS, job, marketing, person

from devtools.klaviyo_emulator import KlaviyoEmulator


def _subscribed(api: Api, emu: KlaviyoEmulator, email: str, **more: Any) -> str:
    """A profile subscribed to email (and SMS when given a phone) on a single opt-in list."""
    list_id = emu.create_list("Single", opt_in="single")
    subscriptions = dict(EMAIL)
    if "phone_number" in more:
        subscriptions["sms"] = {"marketing": {"consent": "SUBSCRIBED"}}
    body = job(person(subscriptions, email=email, **more), list_id=list_id)
    assert api.post(JOBS, body).status == 202
    (pid,) = [p["id"] for p in emu.profiles() if p["attributes"]["email"] == email]
    return pid


def test_without_a_list_email_is_unsubscribed_account_wide(api: Api, emu: KlaviyoEmulator) -> None:
    pid = _subscribed(api, emu, "out@example.com")
    reply = api.post(UNSUBSCRIBE_JOBS, unsubscribe_job(leaving(email="OUT@example.com")))
    assert (reply.status, reply.body) == (202, b"")
    email = marketing(emu, pid)
    assert email["consent"] == "UNSUBSCRIBED"
    assert email["can_receive_email_marketing"] is False
    assert [s["reason"] for s in email["suppression"]] == ["UNSUBSCRIBE"]
    assert email["list_suppressions"] == []


def test_a_member_of_the_given_list_is_unsubscribed_from_that_list(
    api: Api, emu: KlaviyoEmulator
) -> None:
    pid = _subscribed(api, emu, "member@example.com")
    newsletter = emu.create_list("Newsletter", list_id="NEWSLT")
    emu.add_to_list(newsletter, pid)
    body = unsubscribe_job(leaving(email="member@example.com"), list_id=newsletter)
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    email = marketing(emu, pid)
    assert email["consent"] == "UNSUBSCRIBED"
    assert email["suppression"] == []
    assert [(s["list_id"], s["reason"]) for s in email["list_suppressions"]] == [
        (newsletter, "UNSUBSCRIBE")
    ]
    assert pid not in emu.list_members(newsletter)  # "All profiles will be removed from the list"


def test_a_profile_not_in_the_given_list_is_unsubscribed_globally(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """The spec: "Profiles not in the specified list will be globally unsubscribed"."""
    pid = _subscribed(api, emu, "outsider@example.com")
    other = emu.create_list("Other", list_id="OTHERL")
    body = unsubscribe_job(leaving(email="outsider@example.com"), list_id=other)
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    email = marketing(emu, pid)
    assert [s["reason"] for s in email["suppression"]] == ["UNSUBSCRIBE"]
    assert email["list_suppressions"] == []


def test_global_scope_makes_every_unsubscribe_account_wide(api: Api, emu: KlaviyoEmulator) -> None:
    emu.configure(unsubscribe_scope="global")
    pid = _subscribed(api, emu, "member@example.com")
    newsletter = emu.create_list("Newsletter", list_id="NEWSLT")
    emu.add_to_list(newsletter, pid)
    body = unsubscribe_job(leaving(email="member@example.com"), list_id=newsletter)
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    email = marketing(emu, pid)
    assert [s["reason"] for s in email["suppression"]] == ["UNSUBSCRIBE"]
    assert email["list_suppressions"] == []
    assert pid not in emu.list_members(newsletter)


def test_sms_and_email_together(api: Api, emu: KlaviyoEmulator) -> None:
    pid = _subscribed(api, emu, "both@example.com", phone_number="+15005550006")
    assert marketing(emu, pid, "sms")["consent"] == "SUBSCRIBED"
    body = unsubscribe_job(
        leaving({**EMAIL_OUT, **SMS_OUT}, email="both@example.com", phone_number="+15005550006")
    )
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    sms = marketing(emu, pid, "sms")
    assert (sms["consent"], sms["can_receive_sms_marketing"]) == ("UNSUBSCRIBED", False)
    assert marketing(emu, pid)["consent"] == "UNSUBSCRIBED"


def test_sms_only_leaves_email_as_it_was(api: Api, emu: KlaviyoEmulator) -> None:
    pid = _subscribed(api, emu, "keep@example.com", phone_number="+15005550006")
    body = unsubscribe_job(leaving(SMS_OUT, phone_number="+15005550006"))
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    assert marketing(emu, pid, "sms")["consent"] == "UNSUBSCRIBED"
    assert marketing(emu, pid)["consent"] == "SUBSCRIBED"


def test_an_unknown_person_is_created_then_unsubscribed(api: Api, emu: KlaviyoEmulator) -> None:
    """The spec: "a new profile will be created and then unsubscribed"."""
    body = unsubscribe_job(leaving(email="stranger@example.com"))
    assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
    (created,) = emu.profiles()
    assert created["attributes"]["email"] == "stranger@example.com"
    assert marketing(emu, created["id"])["consent"] == "UNSUBSCRIBED"


def test_a_pending_double_opt_in_is_dropped(api: Api, emu: KlaviyoEmulator) -> None:
    double = emu.create_list("Double")
    assert api.post(JOBS, job(person(email="p@example.com"), list_id=double)).status == 202
    (pid,) = [p["id"] for p in emu.profiles()]
    assert api.post(UNSUBSCRIBE_JOBS, unsubscribe_job(leaving(email="p@example.com"))).status == 202
    with pytest.raises(ValueError, match="no pending double opt-in"):
        emu.confirm_double_opt_in(pid, double)
    assert marketing(emu, pid)["consent"] == "UNSUBSCRIBED"


def test_applies_after_the_unsubscribe_delay() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(clock=clock, unsubscribe_delay=30) as emu:
        api = Api(emu.base_url)
        pid = emu.create_profile(email="later@example.com")
        body = unsubscribe_job(leaving(email="later@example.com"))
        assert api.post(UNSUBSCRIBE_JOBS, body).status == 202
        clock.advance(29)
        assert marketing(emu, pid)["consent"] == "NEVER_SUBSCRIBED"
        clock.advance(1)
        assert marketing(emu, pid)["consent"] == "UNSUBSCRIBED"


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (unsubscribe_job(leaving(phone_number="+15005550006")), "/attributes/email"),
        (unsubscribe_job(leaving(SMS_OUT, email="a@example.com")), "/attributes/phone_number"),
        (
            unsubscribe_job(
                leaving({"email": {"marketing": {"consent": "SUBSCRIBED"}}}, email="a@example.com")
            ),
            "/attributes/subscriptions/email/marketing/consent",
        ),
        (unsubscribe_job(leaving({}, email="a@example.com")), "/attributes/subscriptions"),
        (unsubscribe_job(leaving(email="not-an-email")), "/attributes/email"),
        (
            unsubscribe_job(
                leaving({"push": {"marketing": {"consent": "UNSUBSCRIBED"}}}, email="a@example.com")
            ),
            "/attributes/subscriptions/push/tokens",
        ),
    ],
)
def test_profile_errors_point_at_the_profile(
    api: Api, emu: KlaviyoEmulator, body: dict[str, Any], pointer: str
) -> None:
    reply = api.post(UNSUBSCRIBE_JOBS, body)
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": f"/data/attributes/profiles/data/0{pointer}"}
    assert emu.profiles() == []


@pytest.mark.usefixtures("bad_requests_ok")
def test_unknown_list_is_400(api: Api) -> None:
    reply = api.post(UNSUBSCRIBE_JOBS, unsubscribe_job(leaving(email="a@example.com"), list_id="X"))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/relationships/list/data/id"}


@pytest.mark.usefixtures("bad_requests_ok")
def test_at_most_100_profiles(api: Api, emu: KlaviyoEmulator) -> None:
    """The spec: "Maximum number of profiles per call: 100"."""
    people = [leaving(email=f"u{i}@example.com") for i in range(101)]
    reply = api.post(UNSUBSCRIBE_JOBS, unsubscribe_job(*people))
    assert reply.status == 400
    assert reply.error["source"] == {"pointer": "/data/attributes/profiles/data"}
    assert api.post(UNSUBSCRIBE_JOBS, unsubscribe_job(*people[:100])).status == 202
    assert len(emu.profiles()) == 100
