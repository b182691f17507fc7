"""Account settings (SMS countries, SMS off, age gating), configure() and reset()."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_http import Api
from subscribe_jobs import EMAIL, JOBS, SMS, job, marketing, person

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.errors import SMS_WITHOUT_PHONE

UK_MOBILE = "+447700900123"
US_MOBILE = "+15005550006"


def _refused_as_a_whole(reply: Any, detail: str) -> None:
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert reply.error["detail"] == detail
    assert "pointer" not in reply.error["source"]  # the observed body names no profile


@pytest.fixture(autouse=True)
def _single_opt_in(emu: KlaviyoEmulator) -> None:
    emu.configure(default_opt_in="single")  # so granted consent shows at once


def test_sms_for_a_country_the_account_cannot_text_refuses_the_job(
    api: Api, emu: KlaviyoEmulator
) -> None:
    """klaviyo-api-node #95: a valid UK number, an account set up for the US only."""
    body = job(
        person(EMAIL, email="us@example.com"),
        person(SMS, email="uk@example.com", phone_number=UK_MOBILE),
    )
    _refused_as_a_whole(api.post(JOBS, body), SMS_WITHOUT_PHONE)
    assert emu.profiles() == []  # nobody in the job was subscribed
    emu.configure(sms_countries={"US", "GB"})
    assert api.post(JOBS, body).status == 202
    assert len(emu.profiles()) == 2


def test_sms_countries_accept_a_comma_separated_string(emu: KlaviyoEmulator) -> None:
    assert emu.configure(sms_countries="us, ca").sms_countries == {"US", "CA"}


def test_account_without_sms_refuses_any_job_with_sms(api: Api, emu: KlaviyoEmulator) -> None:
    emu.configure(sms_enabled=False)
    body = job(person(SMS, email="a@example.com", phone_number=US_MOBILE))
    _refused_as_a_whole(api.post(JOBS, body), SMS_WITHOUT_PHONE)
    assert api.post(JOBS, job(person(EMAIL, email="a@example.com"))).status == 202


@pytest.mark.parametrize("path", ["/api/profiles", "/api/profile-import"])
def test_account_without_sms_refuses_a_phone_only_create(
    api: Api, emu: KlaviyoEmulator, path: str
) -> None:
    """community.klaviyo.com thread 11955: phone-only creates fail without SMS set up."""
    emu.configure(sms_enabled=False)
    body = {"data": {"type": "profile", "attributes": {"phone_number": US_MOBILE}}}
    reply = api.post(path, body)
    assert reply.status == 400
    assert reply.error["detail"] == "One or more identifiers is required"
    with_email = {
        "data": {
            "type": "profile",
            "attributes": {"phone_number": US_MOBILE, "email": "p@example.com"},
        }
    }
    assert api.post(path, with_email).status == 201
    emu.configure(sms_enabled=True)
    assert (
        api.post(
            path, {"data": {"type": "profile", "attributes": {"phone_number": "+15005550007"}}}
        ).status
        == 201
    )


def test_age_gated_sms_needs_a_date_of_birth(api: Api, emu: KlaviyoEmulator) -> None:
    emu.configure(age_gated_sms=True)
    without = job(person(SMS, email="a@example.com", phone_number=US_MOBILE))
    reply = api.post(JOBS, without)
    assert reply.status == 400
    assert "age_gated_date_of_birth" in reply.error["detail"]
    assert "pointer" not in reply.error["source"]
    born = job(
        person(
            SMS,
            email="a@example.com",
            phone_number=US_MOBILE,
            age_gated_date_of_birth="1990-01-01",
        )
    )
    assert api.post(JOBS, born).status == 202
    pid = emu.profiles()[0]["id"]
    assert marketing(emu, pid, "sms")["consent"] == "SUBSCRIBED"
    # Jobs without SMS do not need it.
    assert api.post(JOBS, job(person(EMAIL, email="b@example.com"))).status == 202


def test_settings_default_to_klaviyos(emu: KlaviyoEmulator) -> None:
    config = emu.config
    assert config.sms_countries == {"US"} and config.sms_enabled and not config.age_gated_sms
    assert config.default_opt_in == "single"  # set by this module's fixture
    assert KlaviyoEmulator().config.default_opt_in == "double"
    assert config.unknown_profile_in_list_add == "ignore"
    assert (config.search_lag, config.segment_lag, config.subscribe_delay) == (0, 0, 0)
    assert (config.import_delay, config.import_rate, config.event_delay) == (0, 0, 0)
    assert config.unsubscribe_delay == 0
    assert config.unknown_profile_in_list_remove == "400"
    assert not config.import_external_id_match
    assert (config.unsubscribe_scope, config.event_limits) == ("list", "docs")


def test_reset_restores_the_constructors_settings() -> None:
    emu = KlaviyoEmulator(search_lag=2, sms_countries={"US", "CA"})
    emu.configure(search_lag=0, sms_enabled=False, unknown_profile_in_list_add="404")
    emu.reset()
    assert emu.config == KlaviyoEmulator(search_lag=2, sms_countries={"US", "CA"}).config


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"search_lags": 1}, TypeError),
        ({"default_opt_in": "triple"}, ValueError),
        ({"unknown_profile_in_list_add": "410"}, ValueError),
        ({"segment_lag": -1}, ValueError),
        ({"latency": "glacial"}, ValueError),
        ({"unknown_profile_in_list_remove": "410"}, ValueError),
        ({"unsubscribe_scope": "planet"}, ValueError),
        ({"event_limits": "none"}, ValueError),
        ({"import_delay": -1}, ValueError),
        ({"import_rate": -0.5}, ValueError),
        ({"event_delay": -1}, ValueError),
        ({"unsubscribe_delay": -1}, ValueError),
    ],
)
def test_configure_refuses_unknown_names_and_values(
    emu: KlaviyoEmulator, changes: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        emu.configure(**changes)
