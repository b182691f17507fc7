"""POST /api/profile-subscription-bulk-create-jobs: validation and consent effects."""

from __future__ import annotations

import pytest
from emulator_http import Api
from fake_clock import FakeClock
from subscribe_jobs import EMAIL, JOBS, SMS, job, marketing, person

from devtools.klaviyo_emulator import KlaviyoEmulator


def only_profile(emu: KlaviyoEmulator) -> str:
    profiles = emu.profiles()
    assert len(profiles) == 1
    return profiles[0]["id"]


@pytest.fixture
def single_opt_in_account(emu: KlaviyoEmulator) -> KlaviyoEmulator:
    """An account whose default for jobs without a list was changed to single opt-in."""
    emu.configure(default_opt_in="single")
    return emu


def test_single_opt_in_list_subscribes_and_adds(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Newsletter", list_id="Y6nRLr", opt_in="single")
    reply = api.post(JOBS, job(person(email="new@example.com"), list_id=list_id))
    assert reply.status == 202
    assert reply.body == b""
    pid = only_profile(emu)
    consent = marketing(emu, pid)
    assert consent["consent"] == "SUBSCRIBED"
    assert consent["can_receive_email_marketing"] is True
    assert consent["method"] == "API"
    assert isinstance(consent["method_detail"], str) and consent["method_detail"]
    assert consent["custom_method_detail"] == "Lead router: Acme form"
    assert consent["double_optin"] is False
    assert consent["consent_timestamp"] and consent["last_updated"]
    assert emu.list_members(list_id) == {pid}
    # SMS was not asked for, so it stays untouched.
    assert marketing(emu, pid, "sms")["consent"] == "NEVER_SUBSCRIBED"


@pytest.mark.usefixtures("single_opt_in_account")
def test_visible_through_get_with_additional_fields(api: Api, emu: KlaviyoEmulator) -> None:
    api.post(JOBS, job(person(email="seen@example.com")))
    reply = api.get(
        "/api/profiles",
        query={
            "filter": 'equals(email,"seen@example.com")',
            "additional-fields[profile]": "subscriptions",
        },
    )
    consent = reply.json()["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]
    assert consent["consent"] == "SUBSCRIBED"


@pytest.mark.usefixtures("single_opt_in_account")
def test_existing_profile_is_found_by_email_and_suppressions_lifted(
    api: Api, emu: KlaviyoEmulator
) -> None:
    pid = emu.create_profile(email="back@example.com", first_name="Back")
    emu.suppress(pid, "UNSUBSCRIBE")
    emu.suppress(pid, "SPAM_COMPLAINT")
    before = marketing(emu, pid)
    assert before["consent"] == "UNSUBSCRIBED"
    api.post(JOBS, job(person(email="BACK@example.com")))
    after = marketing(emu, pid)
    assert only_profile(emu) == pid
    assert after["consent"] == "SUBSCRIBED"
    assert after["suppression"] == []
    assert after["can_receive_email_marketing"] is True


@pytest.mark.parametrize("reason", ["HARD_BOUNCE", "INVALID_EMAIL"])
@pytest.mark.parametrize("opt_in", ["single", "double"])
def test_a_bounced_or_invalid_address_stays_as_it_was(
    api: Api, emu: KlaviyoEmulator, reason: str, opt_in: str
) -> None:
    """Accepted (202), and nothing changes: no consent, no confirmation, no list."""
    list_id = emu.create_list("Newsletter", opt_in=opt_in)
    pid = emu.create_profile(email="bounced@example.com")
    emu.suppress(pid, "UNSUBSCRIBE")
    emu.suppress(pid, reason)
    before = marketing(emu, pid)
    assert api.post(JOBS, job(person(email="bounced@example.com"), list_id=list_id)).status == 202
    assert marketing(emu, pid) == before
    assert before["consent"] == "UNSUBSCRIBED" and before["can_receive_email_marketing"] is False
    assert emu.confirmations() == []
    assert emu.list_members(list_id) == set()


def test_a_bounce_that_comes_before_the_confirmation_keeps_the_consent_off(
    api: Api, emu: KlaviyoEmulator
) -> None:
    list_id = emu.create_list("Double")
    api.post(JOBS, job(person(email="late@example.com"), list_id=list_id))
    pid = only_profile(emu)
    emu.suppress(pid, "HARD_BOUNCE")
    emu.confirm_double_opt_in(pid, list_id)
    assert marketing(emu, pid)["consent"] == "NEVER_SUBSCRIBED"


@pytest.mark.usefixtures("single_opt_in_account")
def test_user_suppression_is_lifted(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="sup@example.com")
    emu.suppress(pid, "USER_SUPPRESSED")
    api.post(JOBS, job(person(email="sup@example.com")))
    assert marketing(emu, pid)["suppression"] == []
    assert marketing(emu, pid)["can_receive_email_marketing"] is True


@pytest.mark.usefixtures("single_opt_in_account")
def test_sms_consent_and_profile_by_id(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="sms@example.com")
    reply = api.post(JOBS, job(person(SMS, id=pid, phone_number="+15005550006")))
    assert reply.status == 202
    subscriptions = emu.profile(pid)["attributes"]["subscriptions"]
    assert subscriptions["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["sms"]["marketing"]["can_receive_sms_marketing"] is True
    assert subscriptions["sms"]["transactional"]["can_receive_sms_transactional"] is True
    assert subscriptions["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert emu.profile(pid)["attributes"]["phone_number"] == "+15005550006"


def test_double_opt_in_waits_for_confirmation(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Confirmed", opt_in="double")
    api.post(JOBS, job(person(email="dbl@example.com"), list_id=list_id))
    pid = only_profile(emu)
    assert marketing(emu, pid)["consent"] == "NEVER_SUBSCRIBED"
    (sent,) = emu.confirmations()
    assert (sent["profile_id"], sent["list_id"], sent["channel"]) == (pid, list_id, "email")
    assert emu.list_members(list_id) == set()
    emu.confirm_double_opt_in(pid, list_id)
    consent = marketing(emu, pid)
    assert consent["consent"] == "SUBSCRIBED"
    assert consent["double_optin"] is True
    assert emu.list_members(list_id) == {pid}
    with pytest.raises(ValueError):
        emu.confirm_double_opt_in(pid, list_id)


def test_historical_import_skips_double_opt_in(api: Api, emu: KlaviyoEmulator) -> None:
    list_id = emu.create_list("Confirmed", opt_in="double")
    subscriptions = {
        "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-05-01T10:00:00Z"}}
    }
    body = job(
        person(subscriptions, email="old@example.com"), list_id=list_id, historical_import=True
    )
    assert api.post(JOBS, body).status == 202
    consent = marketing(emu, only_profile(emu))
    assert consent["consent"] == "SUBSCRIBED"
    assert consent["consent_timestamp"].startswith("2024-05-01T10:00:00")
    assert emu.confirmations() == []  # "bypass double opt-in emails"


def test_account_default_is_double_opt_in(api: Api, emu: KlaviyoEmulator) -> None:
    api.post(JOBS, job(person(email="acct@example.com")))
    pid = only_profile(emu)
    assert marketing(emu, pid)["consent"] == "NEVER_SUBSCRIBED"
    emu.confirm_double_opt_in(pid, None)
    assert marketing(emu, pid)["consent"] == "SUBSCRIBED"
    assert marketing(emu, pid)["double_optin"] is True


def test_new_lists_are_double_opt_in(api: Api, emu: KlaviyoEmulator) -> None:
    seeded = emu.create_list("Seeded")
    created = api.post("/api/lists", {"data": {"type": "list", "attributes": {"name": "HTTP"}}})
    assert created.status == 201
    assert created.json()["data"]["attributes"]["opt_in_process"] == "double_opt_in"
    shown = api.get(f"/api/lists/{seeded}").json()["data"]["attributes"]
    assert shown["opt_in_process"] == "double_opt_in"
    api.post(JOBS, job(person(email="dbl@example.com"), list_id=seeded))
    pid = only_profile(emu)
    assert marketing(emu, pid)["consent"] == "NEVER_SUBSCRIBED"
    assert emu.list_members(seeded) == set()


def test_pending_consent_keeps_what_the_profile_had(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="was@example.com")
    emu.suppress(pid, "UNSUBSCRIBE")
    api.post(JOBS, job(person(email="was@example.com"), list_id=emu.create_list("Double")))
    assert marketing(emu, pid)["consent"] == "UNSUBSCRIBED"


def test_double_opt_in_covers_sms_and_confirming_by_email_confirms_email_only(
    api: Api, emu: KlaviyoEmulator
) -> None:
    list_id = emu.create_list("Double")
    both = {**EMAIL, **SMS}
    api.post(
        JOBS,
        job(person(both, email="two@example.com", phone_number="+15005550006"), list_id=list_id),
    )
    pid = only_profile(emu)
    subscriptions = emu.profile(pid)["attributes"]["subscriptions"]
    assert subscriptions["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    assert subscriptions["sms"]["transactional"]["consent"] == "SUBSCRIBED"  # no opt-in step
    emu.confirm_double_opt_in(pid, list_id, via="email")
    assert marketing(emu, pid)["consent"] == "SUBSCRIBED"
    assert marketing(emu, pid, "sms")["consent"] == "NEVER_SUBSCRIBED"
    emu.confirm_double_opt_in(pid, list_id, via="sms")
    assert marketing(emu, pid, "sms")["consent"] == "SUBSCRIBED"


def test_subscribe_delay_applies_later() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(subscribe_delay=5, default_opt_in="single", clock=clock) as emu:
        api = Api(emu.base_url)
        assert api.post(JOBS, job(person(email="later@example.com"))).status == 202
        clock.advance(4.5)
        assert emu.profiles() == []
        clock.advance(0.5)
        assert marketing(emu, only_profile(emu))["consent"] == "SUBSCRIBED"


def test_reset_discards_delayed_jobs() -> None:
    clock = FakeClock()
    with KlaviyoEmulator(subscribe_delay=1, clock=clock) as emu:
        Api(emu.base_url).post(JOBS, job(person(email="gone@example.com")))
        emu.reset()
        clock.advance(2)
        assert emu.profiles() == []


def test_sms_without_phone_is_400_with_klaviyos_text(api: Api, emu: KlaviyoEmulator) -> None:
    reply = api.post(JOBS, job(person(SMS, email="nophone@example.com")))
    assert reply.status == 400
    assert reply.error["detail"] == (
        "'phone_number' must not be empty when the sms channel is included in 'subscriptions'."
    )
    assert reply.error["source"]["pointer"] == (
        "/data/attributes/profiles/data/0/attributes/phone_number"
    )
    assert emu.profiles() == []


def test_email_channel_without_email_is_400(api: Api) -> None:
    reply = api.post(JOBS, job(person(EMAIL, phone_number="+15005550006")))
    assert reply.status == 400
    assert reply.error["detail"] == (
        "'email' must not be empty when the email channel is included in 'subscriptions'."
    )


def test_unknown_list_is_400(api: Api) -> None:
    reply = api.post(JOBS, job(person(email="x@example.com"), list_id="nope"))
    assert reply.status == 400
    assert reply.error["source"]["pointer"] == "/data/relationships/list/data/id"


def test_invalid_email_and_phone(api: Api) -> None:
    bad_email = api.post(JOBS, job(person(email="bad")))
    assert (bad_email.status, bad_email.error["detail"]) == (400, "Invalid email address")
    bad_phone = api.post(JOBS, job(person(SMS, phone_number="555")))
    assert bad_phone.status == 400
    assert bad_phone.error["detail"].startswith("Invalid phone number format")


def test_consented_at_needs_historical_import(api: Api) -> None:
    subscriptions = {
        "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-05-01T10:00:00Z"}}
    }
    reply = api.post(JOBS, job(person(subscriptions, email="c@example.com")))
    assert reply.status == 400
    assert "historical_import" in reply.error["detail"]
    missing = api.post(JOBS, job(person(EMAIL, email="c@example.com"), historical_import=True))
    assert missing.status == 400
    assert "consented_at" in missing.error["detail"]
    future = {
        "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2999-01-01T00:00:00Z"}}
    }
    ahead = api.post(JOBS, job(person(future, email="c@example.com"), historical_import=True))
    assert ahead.status == 400


@pytest.mark.usefixtures("bad_requests_ok")
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (
            job(person(None, email="a@example.com")),
            "/data/attributes/profiles/data/0/attributes/subscriptions",
        ),
        (
            job(
                person({"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}, email="a@example.com")
            ),
            "/data/attributes/profiles/data/0/attributes/subscriptions/email/marketing/consent",
        ),
        (
            {
                "data": {
                    "type": "profile-subscription-job",
                    "attributes": {"profiles": {"data": []}},
                }
            },
            "/data/type",
        ),
        (job(), "/data/attributes/profiles/data"),
    ],
)
def test_malformed_jobs(api: Api, body: dict, pointer: str) -> None:
    reply = api.post(JOBS, body)
    assert reply.status == 400
    assert reply.error["source"]["pointer"] == pointer


def test_job_size_limit(api: Api) -> None:
    profiles = [person(email=f"p{i}@example.com") for i in range(1001)]
    reply = api.post(JOBS, job(*profiles))
    assert reply.status == 400
    assert reply.error["source"]["pointer"] == "/data/attributes/profiles/data"
    assert api.post(JOBS, job(*profiles[:1000])).status == 202
