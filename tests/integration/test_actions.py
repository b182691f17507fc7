"""Each action against the emulator: its success, each failure, each error."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.outcomes import Kind

LIST_NAME = "Newsletter"


@pytest.fixture
def seeded(klaviyo_emulator):
    emu = klaviyo_emulator
    ids = {
        "list": emu.create_list(LIST_NAME, opt_in="single"),
        "segment": emu.create_segment("VIP customers"),
        "sarah": emu.create_profile(
            email="sarah.mason@example.com",
            phone_number="+15125550100",
            external_id="crm-1",
            first_name="Sarah",
            properties={"tier": "silver"},
        ),
    }
    emu.add_to_segment(ids["segment"], ids["sarah"])
    return ids


def outcome(fields):
    return fields["outcome"], fields["reason"]


# -- Create Profile ------------------------------------------------------------------------


class TestCreateProfile:
    LEAD = {
        "email": "new.lead@example.com",
        "phone_1": "(512) 555-0123",
        "reference": "crm-9",
        "first_name": "Nia",
        "company": {"name": "Acme"},
        "city": "Austin",
        "latitude": "30.2",
        "klaviyo": {"custom": {"source": "webform"}, "timezone": "America/Chicago"},
    }

    def test_success_maps_every_field(self, run, klaviyo_emulator):
        fields = run("create_profile", self.LEAD)
        assert outcome(fields) == ("success", None)
        stored = klaviyo_emulator.profile(fields["id"])["attributes"]
        assert stored["email"] == "new.lead@example.com"
        assert stored["phone_number"] == "+15125550123"
        assert stored["organization"] == "Acme"
        assert stored["location"]["city"] == "Austin"
        assert stored["location"]["timezone"] == "America/Chicago"
        # The lead's own properties, and the mark of the request that made the profile.
        assert stored["properties"].pop("lead_actions_created_by")
        assert stored["properties"] == {"source": "webform"}
        assert fields["reference"] == "crm-9"
        assert fields["custom"] == {"source": "webform"}  # the mark is the bundle's, not shown
        assert fields["type"] == "profile"
        assert fields["self_links"].endswith(fields["id"] + "/")
        assert fields["email_marketing_consent_status"] == "NEVER_SUBSCRIBED"
        assert fields["errors"] == {"id": [], "code": [], "title": [], "detail": []}

    def test_duplicate_is_failure_with_existing_id(self, run, seeded):
        fields = run("create_profile", {"email": "sarah.mason@example.com"})
        assert outcome(fields) == ("failure", "A profile with this email already exists")
        assert fields["id"] == seeded["sarah"]
        assert fields["duplicate_profile_id"] == seeded["sarah"]
        assert fields["errors"]["code"] == ["duplicate_profile"]

    @pytest.mark.parametrize(
        ("existing", "lead", "matched"),
        [
            ({"phone_number": "+15125550101"}, {"phone_1": "512 555 0101"}, "phone number"),
            (
                {"email": "both@example.com", "phone_number": "+15125550102"},
                {"email": "Both@example.com", "phone_1": "512 555 0102"},
                "email and phone number",
            ),
            (
                {"email": "mail@example.com"},
                {"email": "mail@example.com", "phone_1": "512 555 0103"},
                "email",
            ),
            (
                {"phone_number": "+15125550104"},
                {"email": "other@example.com", "phone_1": "512 555 0104"},
                "phone number",
            ),
        ],
        ids=["phone only", "both match", "email of two", "phone of two"],
    )
    def test_a_duplicate_names_the_identifier_that_matched(
        self, run, klaviyo_emulator, existing, lead, matched
    ):
        profile_id = klaviyo_emulator.create_profile(**existing)
        fields = run("create_profile", lead)
        assert outcome(fields) == ("failure", f"A profile with this {matched} already exists")
        assert fields["duplicate_profile_id"] == profile_id

    def test_a_duplicate_whose_profile_cannot_be_read_is_still_a_duplicate(
        self, run, klaviyo_emulator
    ):
        profile_id = klaviyo_emulator.create_profile(email="gone@example.com")
        klaviyo_emulator.faults.add(Fault(operation_id="get_profile", status=503, times=None))
        fields = run(
            "create_profile",
            {"email": "gone@example.com", "phone_1": "512 555 0105", "timeout_seconds": 2},
        )
        assert outcome(fields) == (
            "failure",
            "A profile with this email or phone number already exists",
        )
        assert fields["duplicate_profile_id"] == profile_id

    def test_a_reference_already_in_klaviyo_is_a_duplicate_not_a_second_profile(
        self, run, klaviyo_emulator
    ):
        existing = klaviyo_emulator.create_profile(
            external_id="crm-77", created="2025-01-01T00:00:00+00:00"
        )
        fields = run("create_profile", {"reference": "crm-77", "first_name": "Again"})
        assert outcome(fields) == ("failure", "A profile with this external id already exists")
        assert fields["id"] == fields["duplicate_profile_id"] == existing
        assert klaviyo_emulator.calls("create_profile") == 0

    def test_invalid_email_fails_before_any_call(self, run, klaviyo_emulator):
        fields = run("create_profile", {"email": "not-an-email"})
        assert outcome(fields) == ("failure", "Invalid email address")
        assert klaviyo_emulator.calls() == 0

    def test_no_identifier(self, run, klaviyo_emulator):
        fields = run("create_profile", {"first_name": "Sam"})
        assert outcome(fields) == ("failure", "The lead has no usable identifier")
        assert klaviyo_emulator.calls() == 0

    def test_throttled_beyond_budget_is_retryable_error(self, run, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(status=429, retry_after=30, times=None))
        fields = run("create_profile", {"email": "a@example.com", "timeout_seconds": 5})
        assert outcome(fields) == ("error", "Klaviyo returned HTTP 429 (rate limited)")
        assert run.last.retryable and run.last.kind is Kind.THROTTLED
        assert fields["errors"]["code"] == ["throttled"]

    def test_a_lead_held_back_by_the_pacer_says_so_and_is_not_sent(self, run, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(status=429, retry_after=30))
        run("create_profile", {"email": "a@example.com", "timeout_seconds": 5})
        calls = klaviyo_emulator.calls()
        fields = run("create_profile", {"email": "b@example.com", "timeout_seconds": 5})
        assert fields["reason"].startswith("Klaviyo asked to wait ")
        assert fields["reason"].endswith(" s before the next call; not sent")
        assert run.last.kind is Kind.THROTTLED and 25 < run.last.retry_after <= 30
        assert klaviyo_emulator.calls() == calls


# -- Get Profiles --------------------------------------------------------------------------


class TestGetProfiles:
    @pytest.mark.parametrize(
        "lead",
        [
            {"email": "sarah.mason@example.com"},
            {"phone_1": "512-555-0100", "klaviyo.identifier": "phone_number"},
            {"klaviyo.external_id": "crm-1", "klaviyo.identifier": "external_id"},
            {"reference": "crm-1"},
        ],
    )
    def test_found_by_each_identifier(self, run, seeded, lead):
        fields = run("get_profiles", lead)
        assert outcome(fields) == ("success", None)
        assert fields["id"] == seeded["sarah"]
        assert fields["custom"] == {"tier": "silver"}
        assert fields["email_marketing_consent_status"] == "NEVER_SUBSCRIBED"

    def test_found_by_klaviyo_id(self, run, seeded):
        fields = run("get_profiles", {"klaviyo": {"id": seeded["sarah"]}})
        assert fields["id"] == seeded["sarah"]

    def test_not_found(self, run, seeded):
        assert outcome(run("get_profiles", {"email": "nobody@example.com"})) == (
            "failure",
            "No profile found",
        )
        assert outcome(run("get_profiles", {"klaviyo.id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"})) == (
            "failure",
            "No profile found",
        )

    def test_email_with_plus_is_found(self, run, klaviyo_emulator):
        pid = klaviyo_emulator.create_profile(email="a+b@example.com")
        assert run("get_profiles", {"email": "a+b@example.com"})["id"] == pid

    @pytest.mark.parametrize(
        ("handling", "pick"),
        [
            ("earliest creation date", "first"),
            ("newest creation date", "second"),
            ("earliest update date", "second"),
            ("newest update date", "first"),
        ],
    )
    def test_profile_handling_picks_among_matches(self, run, klaviyo_emulator, handling, pick):
        ids = {
            "first": klaviyo_emulator.create_profile(
                external_id="dup",
                created="2026-01-01T00:00:00+00:00",
                updated="2026-03-01T00:00:00+00:00",
            ),
            "second": klaviyo_emulator.create_profile(
                external_id="dup",
                created="2026-02-01T00:00:00+00:00",
                updated="2026-02-15T00:00:00+00:00",
            ),
        }
        fields = run("get_profiles", {"reference": "dup", "klaviyo.profile_handling": handling})
        assert fields["id"] == ids[pick]

    def test_configured_identifier_missing_from_lead(self, run, seeded):
        fields = run("get_profiles", {"email": "a@example.com", "klaviyo.identifier": "phone"})
        assert outcome(fields) == ("failure", "The lead has no phone number to search by")

    def test_no_identifier_at_all(self, run, klaviyo_emulator):
        assert outcome(run("get_profiles", {"first_name": "x"})) == (
            "failure",
            "The lead has no usable identifier",
        )
        assert klaviyo_emulator.calls() == 0


# -- Get Segment Profiles ------------------------------------------------------------------


class TestGetSegmentProfiles:
    def lead(self, seeded, **extra):
        return {"klaviyo": {"segment_id": seeded["segment"]}, **extra}

    @pytest.mark.parametrize(
        "identity",
        [
            {"email": "sarah.mason@example.com"},
            {"phone_1": "+1 512 555 0100"},
            {"reference": "crm-1"},
        ],
    )
    def test_member(self, run, seeded, identity):
        fields = run("get_segment_profiles", self.lead(seeded, **identity))
        assert outcome(fields) == ("success", None)
        assert fields["id"] == seeded["sarah"]
        assert fields["list_name"] == "VIP customers"

    def test_member_by_klaviyo_id(self, run, seeded):
        lead = self.lead(seeded)
        lead["klaviyo"]["id"] = seeded["sarah"]
        assert run("get_segment_profiles", lead)["id"] == seeded["sarah"]

    @pytest.mark.parametrize(
        "lead",
        [
            {"email": "sarah.mason@example.com"},
            {"phone_1": "512-555-0100"},
            {"klaviyo.id": "{sarah}"},
            {"reference": "crm-1"},
        ],
        ids=["email", "phone", "klaviyo id", "external id"],
    )
    def test_filters_are_in_list_form_as_the_endpoint_requires(
        self, run, seeded, klaviyo_emulator, lead
    ):
        lead = {k: v.format(**seeded) for k, v in lead.items()}
        fields = run("get_segment_profiles", {**lead, "klaviyo.segment_id": seeded["segment"]})
        assert outcome(fields) == ("success", None)
        asked = [
            r.query["filter"][0]
            for r in klaviyo_emulator.requests
            if r.operation_id == "get_profiles_for_segment"
        ]
        assert asked and all(f.startswith("any(") and f.endswith("])") for f in asked)

    def test_not_member(self, run, seeded, klaviyo_emulator):
        klaviyo_emulator.create_profile(email="outsider@example.com")
        fields = run("get_segment_profiles", self.lead(seeded, email="outsider@example.com"))
        assert outcome(fields) == ("failure", "The profile is not in the segment")

    def test_external_id_not_found(self, run, seeded):
        fields = run("get_segment_profiles", self.lead(seeded, reference="nope"))
        assert outcome(fields) == ("failure", "No profile found")

    def test_unknown_segment_is_error(self, run, seeded):
        fields = run(
            "get_segment_profiles",
            {"klaviyo.segment_id": "Nope12", "email": "sarah.mason@example.com"},
        )
        assert outcome(fields) == (
            "error",
            "Klaviyo has no segment with this Klaviyo Segment Id (HTTP 404)",
        )
        assert not run.last.retryable

    def test_missing_segment_id(self, run, klaviyo_emulator):
        fields = run("get_segment_profiles", {"email": "sarah.mason@example.com"})
        assert outcome(fields) == ("error", "Klaviyo Segment Id is missing")
        assert run.last.kind is Kind.CONFIGURATION
        assert klaviyo_emulator.calls() == 0

    def test_segment_name_is_cached(self, run, seeded, klaviyo_emulator):
        for _ in range(3):
            run("get_segment_profiles", self.lead(seeded, email="sarah.mason@example.com"))
        assert klaviyo_emulator.calls("get_segment") == 1


# -- Update Profile ------------------------------------------------------------------------


class TestUpdateProfile:
    def test_updates_only_what_the_lead_carries(self, run, seeded, klaviyo_emulator):
        fields = run(
            "update_profile",
            {"email": "sarah.mason@example.com", "title": "CTO", "klaviyo.custom.score": 9},
        )
        assert outcome(fields) == ("success", None)
        stored = klaviyo_emulator.profile(seeded["sarah"])["attributes"]
        assert stored["title"] == "CTO"
        assert stored["first_name"] == "Sarah"  # absent fields never erase data
        assert stored["properties"] == {"tier": "silver", "score": 9}
        assert fields["custom"] == {"tier": "silver", "score": 9}

    def test_not_found(self, run, seeded):
        fields = run("update_profile", {"email": "nobody@example.com", "title": "x"})
        assert outcome(fields) == ("failure", "No profile found")

    def test_new_email_belonging_to_another_profile(self, run, seeded, klaviyo_emulator):
        other = klaviyo_emulator.create_profile(email="other@example.com")
        fields = run(
            "update_profile",
            {
                "reference": "crm-1",
                "klaviyo.identifier": "external_id",
                "email": "other@example.com",
                "title": "x",
            },
        )
        assert outcome(fields) == ("failure", "The lead's email belongs to another profile")
        assert fields["id"] == seeded["sarah"]
        assert fields["duplicate_profile_id"] == other
        assert "other@example.com" not in fields["reason"]

    @pytest.mark.parametrize(
        "lead",
        [{"klaviyo.id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}, {"email": "sarah.mason@example.com"}],
        ids=["klaviyo id", "only the email it is found by"],
    )
    def test_nothing_to_update_sends_nothing(self, run, seeded, klaviyo_emulator, lead):
        fields = run("update_profile", lead)
        assert outcome(fields) == ("failure", "The lead has no profile fields to update")
        assert klaviyo_emulator.calls() == 0

    def test_the_identifier_it_is_found_by_is_not_sent_again(self, run, seeded, klaviyo_emulator):
        fields = run("update_profile", {"email": "sarah.mason@example.com", "title": "CTO"})
        assert outcome(fields) == ("success", None)
        patch = next(r for r in klaviyo_emulator.requests if r.operation_id == "update_profile")
        assert patch.json()["data"]["attributes"] == {"title": "CTO"}


# -- Add Profile to List -------------------------------------------------------------------


class TestAddProfileToList:
    def test_adds_member(self, run, seeded, klaviyo_emulator):
        fields = run(
            "add_profile_to_list",
            {"email": "sarah.mason@example.com", "klaviyo": {"list_id": seeded["list"]}},
        )
        assert fields == {
            "outcome": "success",
            "reason": None,
            "list_name": LIST_NAME,
            "message_id": None,
            "ignored_fields": [],
            "errors": {"id": [], "code": [], "title": [], "detail": []},
        }
        assert seeded["sarah"] in klaviyo_emulator.list_members(seeded["list"])

    def test_by_klaviyo_id_the_profile_is_found_first(self, run, seeded, klaviyo_emulator):
        run(
            "add_profile_to_list",
            {"klaviyo.id": seeded["sarah"], "klaviyo.list_id": seeded["list"]},
        )
        assert run.last.outcome.value == "success"
        assert klaviyo_emulator.calls("get_profile") == 1
        assert seeded["sarah"] in klaviyo_emulator.list_members(seeded["list"])

    def test_an_unknown_klaviyo_id_is_no_profile_never_the_list(
        self, run, seeded, klaviyo_emulator
    ):
        fields = run(
            "add_profile_to_list",
            {"klaviyo.id": "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "klaviyo.list_id": seeded["list"]},
        )
        assert outcome(fields) == ("failure", "No profile found")
        assert klaviyo_emulator.calls("add_profiles_to_list") == 0

    def test_profile_not_found(self, run, seeded):
        fields = run(
            "add_profile_to_list", {"email": "x@example.com", "klaviyo.list_id": seeded["list"]}
        )
        assert outcome(fields) == ("failure", "No profile found")

    def test_unknown_list(self, run, seeded):
        fields = run(
            "add_profile_to_list", {"email": "sarah.mason@example.com", "klaviyo.list_id": "Nope12"}
        )
        assert outcome(fields) == (
            "error",
            "Klaviyo has no list with this Klaviyo List Id (HTTP 404)",
        )

    def test_missing_list_id(self, run, seeded):
        fields = run("add_profile_to_list", {"email": "sarah.mason@example.com"})
        assert outcome(fields) == ("error", "Klaviyo List Id is missing")
        assert run.last.kind is Kind.CONFIGURATION


# -- Subscribe Profile to List -------------------------------------------------------------


class TestSubscribe:
    def consent(self, emu, pid):
        subs = emu.profile(pid)["attributes"]["subscriptions"]
        return subs["email"]["marketing"]["consent"], subs["sms"]["marketing"]["consent"]

    def test_without_channels_email_only_never_sms_silently(self, run, seeded, klaviyo_emulator):
        fields = run(
            "subscribe_profile_to_list",
            {
                "email": "sarah.mason@example.com",
                "phone_1": "512 555 0100",
                "klaviyo": {"list_id": seeded["list"], "custom_source": "Webform"},
            },
        )
        assert outcome(fields) == ("success", None)
        assert fields["list_name"] == LIST_NAME
        job = [r for r in klaviyo_emulator.requests if r.operation_id == "bulk_subscribe_profiles"]
        assert len(job) == 1
        sent = job[0].json()["data"]["attributes"]["profiles"]["data"][0]["attributes"]
        assert set(sent["subscriptions"]) == {"email"}
        assert "phone_number" not in sent

    def test_both_channels_when_asked(self, run, seeded, klaviyo_emulator):
        fields = run(
            "subscribe_profile_to_list",
            {
                "email": "sarah.mason@example.com",
                "phone_1": "512 555 0100",
                "klaviyo": {"list_id": seeded["list"], "channels": "email, sms"},
            },
        )
        assert outcome(fields) == ("success", None)
        assert self.consent(klaviyo_emulator, seeded["sarah"]) == ("SUBSCRIBED", "SUBSCRIBED")

    @pytest.mark.parametrize("channels", [None, "email"], ids=["default", "email asked for"])
    def test_an_unusable_phone_does_not_fail_an_email_subscription(
        self, run, seeded, klaviyo_emulator, channels
    ):
        lead = {
            "email": "sarah.mason@example.com",
            "phone_1": "555-01**",
            "klaviyo.list_id": seeded["list"],
        }
        if channels:
            lead["klaviyo.channels"] = channels
        fields = run("subscribe_profile_to_list", lead)
        assert outcome(fields) == ("success", None)

    def test_without_an_email_the_phone_goes_to_sms(self, run, seeded, klaviyo_emulator):
        fields = run(
            "subscribe_profile_to_list",
            {"phone_1": "512 555 0100", "klaviyo.list_id": seeded["list"]},
        )
        assert outcome(fields) == ("success", None)
        job = next(
            r for r in klaviyo_emulator.requests if r.operation_id == "bulk_subscribe_profiles"
        )
        sent = job.json()["data"]["attributes"]["profiles"]["data"][0]["attributes"]
        assert set(sent["subscriptions"]) == {"sms"}

    @pytest.mark.parametrize(
        ("opt_in", "reason"),
        [
            ("single", None),
            (
                "double",
                "The list uses double opt-in: the consent waits for the person's confirmation",
            ),
        ],
    )
    def test_says_what_happens_next(self, run, klaviyo_emulator, opt_in, reason):
        list_id = klaviyo_emulator.create_list("Opt-in", opt_in=opt_in)
        fields = run(
            "subscribe_profile_to_list", {"email": "new@example.com", "klaviyo.list_id": list_id}
        )
        assert outcome(fields) == ("success", reason)
        assert fields["opt_in_process"] == f"{opt_in}_opt_in"
        assert fields["email_consent"] == ("subscribed" if opt_in == "single" else "pending")

    def test_sms_refused_by_klaviyo_fails_naming_sms_and_still_subscribes_the_email(
        self, run, seeded, klaviyo_emulator
    ):
        # Klaviyo's observed answer for a number the account cannot text: the whole job.
        refused = {
            "errors": [
                {
                    "id": "e1",
                    "status": 400,
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": "'phone_number' must not be empty when the sms channel is "
                    "included in 'subscriptions'.",
                    "source": {},
                }
            ]
        }
        klaviyo_emulator.faults.add(
            Fault(
                operation_id="bulk_subscribe_profiles",
                status=400,
                body=json.dumps(refused).encode(),
            )
        )
        fields = run(
            "subscribe_profile_to_list",
            {
                "email": "sarah.mason@example.com",
                "phone_1": "+44 20 7946 0958",
                "klaviyo.channels": "email,sms",
            },
        )
        # Refused, not narrowed: the lead asked for SMS and does not get it.
        assert fields["outcome"] == "failure"
        assert fields["reason"].startswith("SMS not applied: Klaviyo refused SMS")
        assert (fields["email_consent"], fields["sms_consent"]) == ("pending", "not_applied")
        jobs = [r for r in klaviyo_emulator.requests if r.operation_id == "bulk_subscribe_profiles"]
        resent = jobs[-1].json()["data"]["attributes"]["profiles"]["data"][0]["attributes"]
        assert set(resent["subscriptions"]) == {"email"} and "phone_number" not in resent

    def test_only_the_channels_asked_for(self, run, seeded, klaviyo_emulator):
        run(
            "subscribe_profile_to_list",
            {
                "email": "sarah.mason@example.com",
                "phone_1": "5125550100",
                "klaviyo.channels": "email",
                "klaviyo.list_id": seeded["list"],  # single opt-in: consent at once
            },
        )
        assert run.last.outcome.value == "success"
        assert self.consent(klaviyo_emulator, seeded["sarah"]) == ("SUBSCRIBED", "NEVER_SUBSCRIBED")

    def test_reads_the_profile_for_a_missing_identifier(self, run, seeded, klaviyo_emulator):
        fields = run(
            "subscribe_profile_to_list",
            {
                "klaviyo.id": seeded["sarah"],
                "klaviyo.channels": ["sms"],
                "klaviyo.list_id": seeded["list"],
            },
        )
        assert outcome(fields) == ("success", None)
        assert self.consent(klaviyo_emulator, seeded["sarah"])[1] == "SUBSCRIBED"

    def test_a_lead_with_only_a_klaviyo_id_subscribes_the_profile_s_email(
        self, run, seeded, klaviyo_emulator
    ):
        fields = run(
            "subscribe_profile_to_list",
            {"klaviyo.id": seeded["sarah"], "klaviyo.list_id": seeded["list"]},
        )
        assert outcome(fields) == ("success", None)
        assert self.consent(klaviyo_emulator, seeded["sarah"]) == ("SUBSCRIBED", "NEVER_SUBSCRIBED")

    def test_channel_without_its_identifier(self, run, seeded):
        fields = run(
            "subscribe_profile_to_list", {"email": "a@example.com", "klaviyo.channels": "sms"}
        )
        assert outcome(fields) == ("failure", "The sms channel needs a phone number")

    def test_nothing_to_subscribe(self, run, klaviyo_emulator):
        fields = run("subscribe_profile_to_list", {"first_name": "x"})
        assert outcome(fields) == (
            "failure",
            "The lead has no email address or phone number to subscribe",
        )
        assert klaviyo_emulator.calls() == 0

    def test_unknown_list(self, run, seeded):
        fields = run(
            "subscribe_profile_to_list", {"email": "a@example.com", "klaviyo.list_id": "Nope12"}
        )
        assert outcome(fields)[0] == "error"
        assert outcome(fields)[1].startswith("Klaviyo has no list with this Klaviyo List Id")

    def test_without_list_uses_account_default(self, run, klaviyo_emulator):
        fields = run("subscribe_profile_to_list", {"email": "fresh@example.com"})
        assert outcome(fields) == (
            "success",
            "Without a list the account's opt-in process applies, double opt-in: the consent "
            "waits for the person's confirmation",
        )
        assert fields["email_consent"] == "pending" and fields["opt_in_process"] is None
        job = next(
            r for r in klaviyo_emulator.requests if r.operation_id == "bulk_subscribe_profiles"
        )
        assert b'"relationships"' not in job.body

    def test_an_account_set_to_single_opt_in_subscribes_without_a_list(
        self, run, runtime, klaviyo_emulator
    ):
        klaviyo_emulator.configure(default_opt_in="single")
        runtime.settings = replace(runtime.settings, account_opt_in_process="single_opt_in")
        fields = run("subscribe_profile_to_list", {"email": "fresh@example.com"})
        assert outcome(fields) == ("success", None)
        assert fields["email_consent"] == "subscribed"


class TestCreateWhenTheAnswerIsLost:
    """A create that reached Klaviyo but whose answer was lost is neither repeated nor a dup."""

    @pytest.mark.parametrize(
        "fault",
        [
            Fault(operation_id="create_profile", drop=True, after=True),
            Fault(operation_id="create_profile", status=500, after=True),
            Fault(operation_id="create_profile", drop=True),  # lost before Klaviyo saw it
        ],
        ids=["dropped after", "500 after", "dropped before"],
    )
    @pytest.mark.parametrize(
        "lead",
        [{"email": "lost@example.com"}, {"reference": "only-external-id"}],
        ids=["email", "external id only"],
    )
    def test_one_profile_and_success(self, run, klaviyo_emulator, fault, lead):
        klaviyo_emulator.faults.add(fault)
        fields = run("create_profile", lead)
        assert outcome(fields) == ("success", None)
        assert [p["id"] for p in klaviyo_emulator.profiles()] == [fields["id"]]

    def test_a_real_duplicate_is_still_a_failure(self, run, klaviyo_emulator):
        old = klaviyo_emulator.create_profile(
            email="old@example.com", created="2025-01-01T00:00:00+00:00"
        )
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        fields = run("create_profile", {"email": "old@example.com"})
        assert outcome(fields)[0] == "failure"
        assert fields["id"] == old


class TestCreateOnRedelivery:
    """A redelivered lead whose earlier delivery may have created the profile before it
    failed: what its write made is decided by its record and its mark on the profile, never
    by when a profile was made."""

    def process(self, runtime, lead, origin="m-1"):
        processed = runtime.process(
            ACTIONS["create_profile"], lead, remaining_seconds=None, origin_id=origin
        )
        return processed.fields

    def lose_the_answer_then_fail(self, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", status=503, after=True))

    def test_the_redelivery_finds_its_own_profile_by_its_mark(self, runtime, klaviyo_emulator):
        self.lose_the_answer_then_fail(klaviyo_emulator)
        first = self.process(runtime, {"email": "mine@example.com"})
        assert first["outcome"] == "error"  # unsure: the lead comes back
        made = [p["id"] for p in klaviyo_emulator.profiles()]
        again = self.process(runtime, {"email": "mine@example.com"})
        assert (again["outcome"], [again["id"]]) == ("success", made)
        other = self.process(runtime, {"email": "mine@example.com"}, origin="m-2")
        assert (other["outcome"], other["id"]) == ("failure", made[0])

    def test_an_older_profile_is_still_a_duplicate(self, runtime, klaviyo_emulator):
        old = klaviyo_emulator.create_profile(email="old@example.com")
        self.lose_the_answer_then_fail(klaviyo_emulator)  # the lost answer was a 409
        assert self.process(runtime, {"email": "old@example.com"})["outcome"] == "error"
        again = self.process(runtime, {"email": "old@example.com"})
        assert (again["outcome"], again["id"]) == ("failure", old)

    def test_external_id_only_is_looked_for_not_created_again(
        self, runtime, klaviyo_emulator, sleeps
    ):
        self.lose_the_answer_then_fail(klaviyo_emulator)
        lead = {"reference": "ext-9", "timeout_seconds": 3}
        assert self.process(runtime, lead)["outcome"] == "error"  # cannot wait out the search
        made = [p["id"] for p in klaviyo_emulator.profiles()]
        sleeps(30.0)
        again = self.process(runtime, {"reference": "ext-9"})
        assert (again["outcome"], [again["id"]]) == ("success", made)
        assert klaviyo_emulator.calls("create_profile") == 1


def test_unreadable_201_on_create_finds_the_profile_it_made(run, klaviyo_emulator):
    klaviyo_emulator.faults.add(
        Fault(operation_id="create_profile", after=True, status=201, body=b"")
    )
    fields = run("create_profile", {"email": "made@example.com"})
    assert fields["outcome"] == "success"
    assert [p["id"] for p in klaviyo_emulator.profiles()] == [fields["id"]]


# -- What the bundle reads, and what it refuses before calling Klaviyo ---------------------


class TestNothingSilentlyDropped:
    def test_unknown_keys_are_named_and_display_name_custom_properties_are_stored(
        self, run, klaviyo_emulator
    ):
        fields = run(
            "create_profile",
            {
                "email": "ada@example.com",
                "frist_name": "Ada",
                "Klaviyo Custom Favorite Color": "blue",
                "klaviyo": {"lsit_id": "Y6nRLr"},
            },
        )
        assert outcome(fields) == ("success", None)
        assert fields["ignored_fields"] == ["frist_name", "klaviyo.lsit_id"]
        stored = klaviyo_emulator.profile(fields["id"])["attributes"]
        assert stored["properties"]["favorite_color"] == "blue"
        assert stored["first_name"] is None

    def test_a_lead_read_in_full_ignores_nothing(self, run, seeded):
        fields = run("get_profiles", {"email": "sarah.mason@example.com", "id": "lead-1"})
        assert fields["ignored_fields"] == []

    def test_track_event_sends_the_leads_own_keys_and_names_unknown_variables(
        self, run, klaviyo_emulator
    ):
        fields = run(
            "track_event", {"email": "ev@example.com", "plan": "pro", "klaviyo.metrc": "x"}
        )
        assert fields["outcome"] == "success"
        assert fields["ignored_fields"] == ["klaviyo.metrc"]


class TestLocalPhones:
    @pytest.mark.parametrize("country", ["GB", "United Kingdom"])
    def test_a_local_number_is_read_in_the_leads_country(self, run, klaviyo_emulator, country):
        fields = run(
            "create_profile",
            {"email": "uk@example.com", "phone_1": "020 7946 0958", "country": country},
        )
        assert outcome(fields) == ("success", None)
        assert klaviyo_emulator.profile(fields["id"])["attributes"]["phone_number"] == (
            "+442079460958"
        )

    def test_the_reason_names_the_region_tried(self, run, klaviyo_emulator):
        fields = run("create_profile", {"email": "us@example.com", "phone_1": "020 7946 0958"})
        assert outcome(fields) == ("failure", "Invalid phone number (read as a US number)")
        assert klaviyo_emulator.calls() == 0


class TestRefusedLocally:
    @pytest.mark.parametrize(
        ("lead", "reason"),
        [
            ({"latitude": float("nan")}, "Latitude must be a finite number"),
            (
                {"klaviyo.custom.score": float("inf")},
                "A custom property must be a finite number",
            ),
            (
                {"klaviyo.custom.note": "x" * 100_001},
                "A custom property value is longer than 100000 characters",
            ),
            (
                {"klaviyo": {"custom": {"n" * 256: "v"}}},
                "A custom property name is longer than 255 characters",
            ),
        ],
    )
    def test_refused_before_klaviyo_is_called(self, run, klaviyo_emulator, lead, reason):
        fields = run("create_profile", {"email": "lim@example.com"} | lead)
        assert outcome(fields) == ("failure", reason)
        assert klaviyo_emulator.calls() == 0
        json.dumps(fields, allow_nan=False)  # the result is valid JSON

    def test_deep_custom_properties_are_refused(self, run, klaviyo_emulator):
        value: object = "leaf"
        for _ in range(950):
            value = {"k": value}
        fields = run("update_profile", {"email": "x@example.com", "klaviyo.custom": {"d": value}})
        assert outcome(fields) == ("failure", "A custom property is nested more than 10 levels")
        assert klaviyo_emulator.calls() == 0

    def test_a_long_custom_source_is_a_configuration_error(self, run, seeded, klaviyo_emulator):
        fields = run(
            "subscribe_profile_to_list",
            {
                "email": "s@example.com",
                "klaviyo.list_id": seeded["list"],
                "klaviyo.custom_source": "s" * 256,
            },
        )
        assert outcome(fields) == ("error", "Klaviyo Custom Source is longer than 255 characters")
        assert run.last.kind is Kind.CONFIGURATION

    def test_ids_in_paths_are_ascii(self, run, seeded, klaviyo_emulator):
        fields = run(
            "get_segment_profiles",
            {"email": "sarah.mason@example.com", "klaviyo.segment_id": "\uff39\uff16\uff4e\uff32"},
        )
        assert outcome(fields) == ("error", "Klaviyo Segment Id is not a valid id")
        assert klaviyo_emulator.calls() == 0
