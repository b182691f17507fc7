"""The product against what Klaviyo does later and what an account's settings refuse.

Each test switches the emulator to one behaviour Klaviyo has and the earlier product did not
survive: SMS refused for a number's country, age gating or an account without SMS; list adds
of unknown ids answered three plausible ways; search lagging behind creates.
"""

from __future__ import annotations

import time

import pytest

from devtools.klaviyo_emulator import DEFAULT_API_KEY, Fault, KlaviyoEmulator
from devtools.klaviyo_emulator.contract import default_spec_path
from devtools.memory_dynamodb import memory_ledger
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.config import Settings
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.runtime import Runtime

UK = "+44 20 7946 0958"
SMS_NOT_APPLIED = "SMS not applied: Klaviyo refused SMS for this phone number"
SUBSCRIBE = ACTIONS["subscribe_profile_to_list"]
ADD = ACTIONS["add_profile_to_list"]


@pytest.fixture
def single_list(klaviyo_emulator):
    return klaviyo_emulator.create_list("Newsletter", opt_in="single")


def consent(emulator, email):
    profile = next(p for p in emulator.profiles() if p["attributes"]["email"] == email)
    subs = profile["attributes"]["subscriptions"]
    return subs["email"]["marketing"]["consent"], subs["sms"]["marketing"]["consent"]


class TestSmsRefusals:
    @pytest.mark.parametrize(
        ("setting", "phone"),
        [
            ({"sms_countries": ["US"]}, UK),
            ({"age_gated_sms": True}, "512 555 0100"),
            ({"sms_enabled": False}, "512 555 0100"),
        ],
        ids=["country", "age gating", "no sms"],
    )
    def test_the_email_consent_still_goes_through_and_the_lead_fails_naming_sms(
        self, run, klaviyo_emulator, single_list, setting, phone
    ):
        klaviyo_emulator.configure(**setting)
        lead = {
            "email": "both@example.com",
            "phone_1": phone,
            "klaviyo.channels": "email,sms",
            "klaviyo.list_id": single_list,
        }
        fields = run("subscribe_profile_to_list", lead)
        assert fields["outcome"] == "failure"  # asked for SMS: refused, not narrowed
        assert fields["reason"].startswith(SMS_NOT_APPLIED)
        assert (fields["email_consent"], fields["sms_consent"]) == ("subscribed", "not_applied")
        assert consent(klaviyo_emulator, "both@example.com") == ("SUBSCRIBED", "NEVER_SUBSCRIBED")

    def test_sms_alone_refused_is_a_failure_that_says_why(self, run, klaviyo_emulator, single_list):
        klaviyo_emulator.configure(sms_countries=["US"])
        fields = run("subscribe_profile_to_list", {"phone_1": UK, "klaviyo.list_id": single_list})
        assert fields["outcome"] == "failure"
        assert fields["reason"].startswith("Klaviyo refused SMS for this phone number")

    def test_in_bulk_only_the_refused_numbers_lose_sms(
        self, runtime, klaviyo_emulator, single_list
    ):
        klaviyo_emulator.configure(sms_countries=["US"])
        leads = [
            {
                "email": f"lead{i}@example.com",
                "phone_1": UK if i in (7, 30, 31) else f"512555{i:04}",
                "klaviyo.channels": "email sms",
                "klaviyo.list_id": single_list,
            }
            for i in range(40)
        ]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        refused = [i for i, p in enumerate(results) if p.fields["outcome"] == "failure"]
        assert refused == [7, 30, 31]
        assert {p.fields["outcome"] for p in results} == {"success", "failure"}
        for i in range(40):
            expected = "NEVER_SUBSCRIBED" if i in refused else "SUBSCRIBED"
            assert consent(klaviyo_emulator, f"lead{i}@example.com") == ("SUBSCRIBED", expected)
        # Split, not sent one by one: far fewer jobs than leads.
        assert klaviyo_emulator.calls("bulk_subscribe_profiles") < 25

    def test_a_phone_only_create_in_an_account_without_sms_says_so(self, run, klaviyo_emulator):
        klaviyo_emulator.configure(sms_enabled=False)
        fields = run("create_profile", {"phone_1": "512 555 0100"})
        assert (fields["outcome"], fields["reason"]) == (
            "failure",
            "Klaviyo refused a profile with only a phone number "
            "(SMS is not set up for the account)",
        )


class TestDoubleOptIn:
    def test_the_consent_waits_until_the_person_confirms(self, run, klaviyo_emulator):
        list_id = klaviyo_emulator.create_list("Newsletter")  # double opt-in, as Klaviyo makes it
        fields = run(
            "subscribe_profile_to_list", {"email": "new@example.com", "klaviyo.list_id": list_id}
        )
        assert fields["opt_in_process"] == "double_opt_in"
        assert "waits for the person's confirmation" in fields["reason"]
        assert consent(klaviyo_emulator, "new@example.com")[0] != "SUBSCRIBED"
        profile_id = klaviyo_emulator.profiles()[0]["id"]
        klaviyo_emulator.confirm_double_opt_in(profile_id, list_id)
        assert consent(klaviyo_emulator, "new@example.com")[0] == "SUBSCRIBED"


@pytest.mark.parametrize("answer", ["400", "404", "ignore"])
class TestListAddOfAnUnknownKlaviyoId:
    """Klaviyo's answer is undocumented; every plausible one ends the same way."""

    UNKNOWN = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"

    def test_one_lead(self, run, klaviyo_emulator, single_list, answer):
        klaviyo_emulator.configure(unknown_profile_in_list_add=answer)
        fields = run(
            "add_profile_to_list", {"klaviyo.id": self.UNKNOWN, "klaviyo.list_id": single_list}
        )
        assert (fields["outcome"], fields["reason"]) == ("failure", "No profile found")

    def test_in_bulk(self, runtime, klaviyo_emulator, single_list, answer):
        klaviyo_emulator.configure(unknown_profile_in_list_add=answer)
        known = klaviyo_emulator.create_profile(email="known@example.com")
        leads = [
            {"klaviyo.id": known, "klaviyo.list_id": single_list},
            {"klaviyo.id": self.UNKNOWN, "klaviyo.list_id": single_list},
        ]
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert [(p.fields["outcome"], p.fields["reason"]) for p in results] == [
            ("success", None),
            ("failure", "No profile found"),
        ]
        assert klaviyo_emulator.list_members(single_list) == {known}


class VirtualClock:
    """One clock for the emulator's lags and the client's waits."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TestCreateWhileSearchLags:
    """A create whose answer is lost, for a lead Klaviyo would not stop a second profile of."""

    @pytest.fixture
    def lagging(self):
        clock = VirtualClock()
        spec = default_spec_path()
        with KlaviyoEmulator(
            clock=clock, search_lag=3.0, openapi_path=spec if spec.exists() else None
        ) as emulator:
            client = KlaviyoClient(
                emulator.base_url,
                "2026-07-15",
                lambda force: DEFAULT_API_KEY,
                sleep=clock.advance,
                pacer=Pacer(clock=clock),
            )
            runtime = Runtime(
                settings=Settings(base_url=emulator.base_url),
                client=client,
                ledger=memory_ledger(clock),
                clock=clock,
                wall=clock,
            )
            emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
            yield emulator, runtime, clock
            assert emulator.contract_violations == []

    def test_it_waits_for_the_search_instead_of_creating_again(self, lagging):
        emulator, runtime, _ = lagging
        fields = runtime.process(
            ACTIONS["create_profile"], {"reference": "lagged"}, remaining_seconds=None
        ).fields
        assert fields["outcome"] == "success"
        assert [p["id"] for p in emulator.profiles()] == [fields["id"]]

    def test_without_time_to_wait_it_goes_back_and_is_found_on_redelivery(self, lagging):
        emulator, runtime, clock = lagging
        lead = {"reference": "lagged", "timeout_seconds": 5}
        create = ACTIONS["create_profile"]
        first = runtime.process(create, lead, remaining_seconds=None, origin_id="m-1")
        assert first.result.retryable
        assert first.fields["reason"].startswith(
            "An earlier attempt's create cannot be confirmed until Klaviyo's search catches up"
        )
        clock.advance(60)  # the queue delivers it again later
        again = runtime.process(create, lead, remaining_seconds=None, origin_id="m-1")
        assert again.fields["outcome"] == "success"
        assert [p["id"] for p in emulator.profiles()] == [again.fields["id"]]
