"""The five actions beyond the product sheet, one lead at a time, against the emulator."""

from __future__ import annotations

import pytest

from devtools.klaviyo_emulator import Fault

LIST = "Newsletter"


@pytest.fixture
def seeded(klaviyo_emulator):
    emu = klaviyo_emulator
    ids = {
        "list": emu.create_list(LIST, opt_in="single"),
        "sarah": emu.create_profile(
            email="sarah@example.com", phone_number="+15125550100", external_id="crm-1"
        ),
        "sam": emu.create_profile(email="sam@example.com"),
    }
    emu.add_to_list(ids["list"], ids["sarah"])
    return ids


def outcome(fields):
    return fields["outcome"], fields["reason"]


def consent(emulator, profile_id):
    subs = emulator.profile(profile_id)["attributes"]["subscriptions"]
    return subs["email"]["marketing"]["consent"], subs["sms"]["marketing"]["consent"]


# -- Unsubscribe Profile -------------------------------------------------------------------


class TestUnsubscribeProfile:
    def test_every_channel_the_lead_names_when_none_are_asked_for(
        self, run, seeded, klaviyo_emulator
    ):
        fields = run(
            "unsubscribe_profile", {"email": "sarah@example.com", "phone_1": "512 555 0100"}
        )
        assert outcome(fields) == ("success", None)
        assert consent(klaviyo_emulator, seeded["sarah"]) == ("UNSUBSCRIBED", "UNSUBSCRIBED")

    def test_only_the_channels_asked_for_and_only_what_they_use_is_checked(
        self, run, seeded, klaviyo_emulator
    ):
        lead = {"email": "sarah@example.com", "phone_1": "555-01**", "klaviyo.channels": "email"}
        assert outcome(run("unsubscribe_profile", lead)) == ("success", None)
        assert consent(klaviyo_emulator, seeded["sarah"])[1] != "UNSUBSCRIBED"

    def test_from_one_list_the_profile_must_be_on_it(self, run, seeded, klaviyo_emulator):
        on_list = run(
            "unsubscribe_profile", {"email": "sarah@example.com", "klaviyo.list_id": seeded["list"]}
        )
        assert outcome(on_list) == ("success", None) and on_list["list_name"] == LIST
        # Klaviyo would unsubscribe a profile that is not on the list from everything.
        off_list = run(
            "unsubscribe_profile", {"email": "sam@example.com", "klaviyo.list_id": seeded["list"]}
        )
        assert off_list["outcome"] == "failure"
        assert off_list["reason"].startswith("The profile is not in the list")
        assert consent(klaviyo_emulator, seeded["sam"])[0] != "UNSUBSCRIBED"
        assert klaviyo_emulator.calls("bulk_unsubscribe_profiles") == 1

    def test_double_opt_in_does_not_hold_an_unsubscribe(self, run, klaviyo_emulator):
        double = klaviyo_emulator.create_list("Double")  # lists are double opt-in by default
        profile = klaviyo_emulator.create_profile(email="dee@example.com")
        klaviyo_emulator.add_to_list(double, profile)
        fields = run("unsubscribe_profile", {"email": "dee@example.com", "klaviyo.list_id": double})
        assert outcome(fields) == ("success", None)

    def test_by_klaviyo_id_the_profile_gives_its_identifiers(self, run, seeded, klaviyo_emulator):
        fields = run("unsubscribe_profile", {"klaviyo.id": seeded["sam"]})
        assert outcome(fields) == ("success", None)
        assert consent(klaviyo_emulator, seeded["sam"])[0] == "UNSUBSCRIBED"

    def test_nothing_to_unsubscribe(self, run, seeded):
        fields = run("unsubscribe_profile", {"first_name": "Nobody"})
        assert outcome(fields) == (
            "failure",
            "The lead has no email address or phone number to unsubscribe",
        )


# -- Remove Profile from List --------------------------------------------------------------


class TestRemoveProfileFromList:
    def test_removes_a_member_and_leaves_its_consent(self, run, seeded, klaviyo_emulator):
        before = consent(klaviyo_emulator, seeded["sarah"])
        fields = run(
            "remove_profile_from_list",
            {"email": "sarah@example.com", "klaviyo.list_id": seeded["list"]},
        )
        assert outcome(fields) == ("success", None) and fields["list_name"] == LIST
        assert seeded["sarah"] not in klaviyo_emulator.list_members(seeded["list"])
        assert consent(klaviyo_emulator, seeded["sarah"]) == before  # not an unsubscribe

    def test_a_profile_not_on_the_list_is_a_success_that_says_so(
        self, run, seeded, klaviyo_emulator
    ):
        fields = run(
            "remove_profile_from_list",
            {"email": "sam@example.com", "klaviyo.list_id": seeded["list"]},
        )
        assert outcome(fields) == ("success", "The profile was not in the list")
        assert klaviyo_emulator.calls("remove_profiles_from_list") == 0

    @pytest.mark.parametrize(
        ("lead", "expected"),
        [
            ({"email": "nobody@example.com"}, ("failure", "No profile found")),
            (
                {"email": "sarah@example.com", "klaviyo.list_id": None},
                ("error", "Klaviyo List Id is missing"),
            ),
        ],
    )
    def test_failures_and_errors(self, run, seeded, lead, expected):
        lead = {"klaviyo.list_id": seeded["list"], **lead}
        assert outcome(run("remove_profile_from_list", lead)) == expected


# -- Upsert Profile ------------------------------------------------------------------------


class TestUpsertProfile:
    def test_creates_a_new_profile_and_says_so(self, run, klaviyo_emulator):
        fields = run("upsert_profile", {"email": "new@example.com", "first_name": "Nia"})
        assert outcome(fields) == ("success", None)
        assert fields["created"] is True
        assert klaviyo_emulator.profile(fields["id"])["attributes"]["first_name"] == "Nia"

    def test_updates_the_profile_klaviyo_matches(self, run, seeded, klaviyo_emulator):
        fields = run("upsert_profile", {"email": "sarah@example.com", "title": "CTO"})
        assert (fields["outcome"], fields["created"], fields["id"]) == (
            "success",
            False,
            seeded["sarah"],
        )
        assert klaviyo_emulator.profile(seeded["sarah"])["attributes"]["title"] == "CTO"

    def test_email_and_phone_of_two_profiles_change_nothing(self, run, seeded, klaviyo_emulator):
        before = {p["id"]: p["attributes"] for p in klaviyo_emulator.profiles()}
        fields = run("upsert_profile", {"email": "sam@example.com", "phone_1": "512 555 0100"})
        assert outcome(fields) == ("failure", "The lead's phone number belongs to another profile")
        assert fields["duplicate_profile_id"] == seeded["sarah"]  # who holds the phone
        after = {p["id"]: p["attributes"] for p in klaviyo_emulator.profiles()}
        assert after == before

    def test_a_phone_of_another_persons_profile_does_not_rename_it(
        self, run, seeded, klaviyo_emulator
    ):
        """A new email with the phone of someone else's profile: Klaviyo's import would match
        that profile by the phone and give it the new email; the upsert refuses instead."""
        before = klaviyo_emulator.profile(seeded["sarah"])["attributes"]
        lead = {"email": "household@example.com", "phone_1": "512 555 0100"}
        fields = run("upsert_profile", lead)
        assert outcome(fields) == ("failure", "The lead's phone number belongs to another profile")
        assert fields["duplicate_profile_id"] == seeded["sarah"]
        assert klaviyo_emulator.profile(seeded["sarah"])["attributes"] == before


# -- Track Event ---------------------------------------------------------------------------


class TestTrackEvent:
    def test_the_lead_becomes_an_event_on_its_profile(self, run, seeded, klaviyo_emulator):
        lead = {
            "email": "sarah@example.com",
            "first_name": "Sarah",
            "id": "lead-77",
            "klaviyo.event_value": "12.5",
            "klaviyo.event_time": "2026-11-01T10:00:00Z",
        }
        assert outcome(run("track_event", lead)) == ("success", None)
        (event,) = klaviyo_emulator.events(metric="Lead Received")
        assert event["profile_id"] == seeded["sarah"]
        assert event["properties"]["first_name"] == "Sarah"
        assert "klaviyo.event_value" not in event["properties"]
        assert (event["value"], event["unique_id"]) == (12.5, "lead-77")

    def test_a_retried_lead_is_one_event(self, run, seeded, klaviyo_emulator):
        lead = {"email": "sarah@example.com", "id": "lead-78", "klaviyo.metric_name": "Form Sent"}
        run("track_event", lead)
        run("track_event", lead)
        assert len(klaviyo_emulator.events(metric="Form Sent")) == 1

    @pytest.mark.parametrize(
        ("extra", "reason"),
        [
            ({f"p{i}": i for i in range(301)}, "The event has more than 300 properties"),
            ({"big": "x" * (100 * 1024 + 1)}, "An event property is longer than 100 KB"),
            ({"items": list(range(4001))}, "An event property holds more than 4000 items"),
            (
                {"klaviyo.event_time": "1999-12-31T00:00:00Z"},
                "Klaviyo Event Time must be after 2000 and at most a year from now",
            ),
            ({"klaviyo.event_value": "a lot"}, "Klaviyo Event Value must be a number"),
        ],
        ids=["properties", "string", "array", "time", "value"],
    )
    def test_klaviyo_s_ingestion_limits_fail_before_any_call(
        self, run, seeded, klaviyo_emulator, extra, reason
    ):
        fields = run("track_event", {"email": "sarah@example.com", **extra})
        assert outcome(fields) == ("failure", reason)
        assert klaviyo_emulator.calls("create_event") == 0

    def test_an_overlong_metric_name_is_a_configuration_error(self, run, seeded):
        fields = run(
            "track_event", {"email": "sarah@example.com", "klaviyo.metric_name": "m" * 129}
        )
        assert fields["outcome"] == "error"


# -- Delete Profile ------------------------------------------------------------------------


class TestDeleteProfile:
    @pytest.fixture
    def allowed(self, runtime, monkeypatch):
        from dataclasses import replace

        runtime.settings = replace(runtime.settings, profile_deletion_enabled=True)
        return runtime

    def test_off_by_default(self, run, seeded, klaviyo_emulator):
        fields = run("delete_profile", {"email": "sam@example.com"})
        assert outcome(fields) == (
            "error",
            "Profile deletion is switched off for this stack (parameter EnableProfileDeletion)",
        )
        assert klaviyo_emulator.calls() == 0

    @pytest.mark.parametrize("by", ["email", "klaviyo.id"])
    def test_requests_a_deletion_by_one_identifier(
        self, run, seeded, klaviyo_emulator, allowed, by
    ):
        lead = {"email": "sam@example.com"} if by == "email" else {"klaviyo.id": seeded["sam"]}
        fields = run("delete_profile", lead)
        assert outcome(fields) == (
            "success",
            "Deletion requested: Klaviyo deletes the profile and its data asynchronously",
        )
        assert seeded["sam"] not in {p["id"] for p in klaviyo_emulator.profiles()}

    @pytest.mark.parametrize(
        ("lead", "reason"),
        [
            (
                {"email": "sarah@example.com", "phone_1": "512 555 0100"},
                "Delete Profile takes exactly one identifier (email, phone number or Klaviyo Id)",
            ),
            (
                {"reference": "crm-1"},
                "Klaviyo deletes by email, phone number or Klaviyo Id, not external id",
            ),
        ],
    )
    def test_several_identifiers_or_an_external_id_fail(
        self, run, seeded, klaviyo_emulator, allowed, lead, reason
    ):
        assert outcome(run("delete_profile", lead)) == ("failure", reason)
        assert klaviyo_emulator.calls() == 0

    def test_the_identifier_variable_picks_one(self, run, seeded, klaviyo_emulator, allowed):
        lead = {
            "email": "sarah@example.com",
            "phone_1": "512 555 0100",
            "klaviyo.identifier": "phone",
        }
        assert run("delete_profile", lead)["outcome"] == "success"
        (request,) = [
            r for r in klaviyo_emulator.requests if r.operation_id == "request_profile_deletion"
        ]
        sent = request.json()["data"]["attributes"]["profile"]["data"]["attributes"]
        assert sent == {"phone_number": "+15125550100"}

    def test_klaviyo_refusing_is_reported(self, run, seeded, klaviyo_emulator, allowed):
        klaviyo_emulator.faults.add(Fault(operation_id="request_profile_deletion", status=403))
        fields = run("delete_profile", {"email": "sam@example.com"})
        assert outcome(fields) == ("error", "The Klaviyo API key lacks a required scope (HTTP 403)")
