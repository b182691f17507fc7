"""Subscribe reports the consent Klaviyo holds after the job, and carries its evidence.

Against the emulator: the job is read back (one ``any()`` search with ``subscriptions``), each
channel ends subscribed, pending (double opt-in) or not applied (a bounced address, a refused
SMS), a consent not seen applied brings the lead back (and is not sent again), evidence goes on
the consent record and as one "Consent Captured" event however often the lead is sent, and a
historical import fires no confirmation. Track Event's ``klaviyo.backfill`` is Klaviyo's
``backfill``.
"""

from __future__ import annotations

import json

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.actions.subscribe.consent import CONFIRM_WINDOW_SECONDS, READ_BACK_AFTER
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.outcomes import Kind

SUBSCRIBE = ACTIONS["subscribe_profile_to_list"]
TRACK = ACTIONS["track_event"]
CERT = "https://cert.trustedform.com/" + "0123456789abcdef0123456789abcdef01234567"
TOKEN = "E0A4E5F1-2B3C-4D5E-8F90-0123456789AB"
EVIDENCE = {
    "trustedform_cert_url": CERT,
    "leadid_token": TOKEN.lower(),
    "consent_language": "I agree to receive marketing emails from Acme.",
    "consent_timestamp": "2026-11-30T14:03:00Z",
    "ip_address": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "landing_page_url": "https://acme.example/offer",
}


@pytest.fixture
def single(klaviyo_emulator):
    return klaviyo_emulator.create_list("Newsletter", opt_in="single")


@pytest.fixture
def double(klaviyo_emulator):
    return klaviyo_emulator.create_list("Confirmed", opt_in="double")


@pytest.fixture
def subscribe(runtime):
    def send(lead: dict, origin: str | None = None):
        processed = runtime.process(SUBSCRIBE, lead, remaining_seconds=None, origin_id=origin)
        send.last = processed.result  # type: ignore[attr-defined]
        return processed.fields

    return send


def jobs(emulator):
    return [r for r in emulator.requests if r.operation_id == "bulk_subscribe_profiles"]


def reads(emulator):
    return [r for r in emulator.requests if r.operation_id == "get_profiles"]


def consent_events(emulator):
    return emulator.events(metric="Consent Captured")


class TestReadBack:
    def test_success_is_what_the_profile_shows_after_the_job(
        self, subscribe, klaviyo_emulator, single
    ):
        fields = subscribe({"email": "ann@example.com", "klaviyo.list_id": single})
        assert (fields["outcome"], fields["reason"]) == ("success", None)
        assert fields["email_consent"] == "subscribed"
        assert fields["email_marketing_consent_status"] == "SUBSCRIBED"
        assert fields["id"] and fields["list_name"] == "Newsletter"
        (read,) = reads(klaviyo_emulator)
        query = read.query
        assert query["additional-fields[profile]"] == ["subscriptions"]
        assert query["filter"] == ['any(email,["ann@example.com"])']
        assert klaviyo_emulator.requests.index(read) > klaviyo_emulator.requests.index(
            jobs(klaviyo_emulator)[0]
        )

    @pytest.mark.parametrize("reason", ["HARD_BOUNCE", "INVALID_EMAIL"])
    def test_a_suppressed_address_that_stays_suppressed_is_not_applied(
        self, subscribe, klaviyo_emulator, single, reason
    ):
        pid = klaviyo_emulator.create_profile(email="gone@example.com")
        klaviyo_emulator.suppress(pid, reason)
        fields = subscribe({"email": "gone@example.com", "klaviyo.list_id": single})
        assert fields["outcome"] == "failure"
        assert fields["reason"] == (
            f"Klaviyo did not apply the email consent: the address is suppressed ({reason}), "
            "which no subscribe lifts"
        )
        assert fields["email_consent"] == "suppressed"
        assert fields["email_marketing_subscription_suppression_reason"] == reason
        assert fields["email_marketing_subscription_suppression_timestamp"]
        assert fields["id"] == pid
        assert not subscribe.last.retryable

    def test_a_double_opt_in_list_reports_pending_for_each_channel(
        self, subscribe, klaviyo_emulator, double
    ):
        fields = subscribe(
            {
                "email": "dee@example.com",
                "phone_1": "512 555 0123",
                "klaviyo.channels": "email,sms",
                "klaviyo.list_id": double,
            }
        )
        assert (fields["outcome"], fields["reason"]) == (
            "success",
            "The list uses double opt-in: the consent waits for the person's confirmation",
        )
        assert (fields["email_consent"], fields["sms_consent"]) == ("pending", "pending")
        assert fields["email_marketing_consent_status"] == "NEVER_SUBSCRIBED"

    def test_not_applied_within_the_budget_comes_back_to_be_confirmed(
        self, subscribe, klaviyo_emulator, single
    ):
        klaviyo_emulator.configure(subscribe_delay=3600)
        fields = subscribe({"email": "slow@example.com", "klaviyo.list_id": single}, "m-1")
        assert fields["outcome"] == "error" and subscribe.last.kind is Kind.UNCONFIRMED
        assert subscribe.last.retryable
        assert fields["reason"].startswith("Klaviyo accepted the consent but had not applied it")
        assert fields["email_consent"] == "not_confirmed"
        assert len(reads(klaviyo_emulator)) <= len(READ_BACK_AFTER)

    def test_another_attempt_of_the_lead_reads_back_instead_of_sending_again(
        self, subscribe, klaviyo_emulator, single
    ):
        lead = {"email": "again@example.com", "klaviyo.list_id": single}
        klaviyo_emulator.faults.add(Fault(operation_id="get_profiles", status=503, times=None))
        first = subscribe(lead, "m-2")
        assert first["email_consent"] == "not_confirmed" and subscribe.last.retryable
        klaviyo_emulator.faults.clear()
        second = subscribe(lead, "m-2")  # the redelivery: the same origin
        assert (second["outcome"], second["email_consent"]) == ("success", "subscribed")
        assert len(jobs(klaviyo_emulator)) == 1
        other = subscribe(lead, "m-3")  # another request is sent as its own
        assert other["outcome"] == "success" and len(jobs(klaviyo_emulator)) == 2

    def test_a_consent_not_applied_long_after_it_was_accepted_is_a_failure(
        self, subscribe, klaviyo_emulator, single, sleeps
    ):
        klaviyo_emulator.configure(subscribe_delay=3600)
        lead = {"email": "never@example.com", "klaviyo.list_id": single}
        assert subscribe(lead, "m-4")["email_consent"] == "not_confirmed"
        sleeps.elapsed += CONFIRM_WINDOW_SECONDS + 60  # the wall clock of the next delivery
        fields = subscribe(lead, "m-4")
        assert fields["outcome"] == "failure" and not subscribe.last.retryable
        assert fields["reason"].startswith("Klaviyo accepted the consent but had not applied it")
        assert fields["reason"].endswith("minutes later")
        assert len(jobs(klaviyo_emulator)) == 1

    def test_a_batch_is_read_back_100_profiles_a_search(self, runtime, klaviyo_emulator, single):
        leads = [{"email": f"b{i}@example.com", "klaviyo.list_id": single} for i in range(150)]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert {(r.fields["outcome"], r.fields["email_consent"]) for r in results} == {
            ("success", "subscribed")
        }
        assert len(jobs(klaviyo_emulator)) == 1
        assert len(reads(klaviyo_emulator)) == 2


class TestChannels:
    def test_sms_asked_for_without_a_valid_phone_is_refused_naming_the_channel(
        self, subscribe, klaviyo_emulator, single
    ):
        fields = subscribe(
            {
                "email": "ann@example.com",
                "phone_1": "555-01**",
                "klaviyo.channels": "email,sms",
                "klaviyo.list_id": single,
            }
        )
        assert (fields["outcome"], fields["reason"]) == (
            "failure",
            "The sms channel needs a valid phone number: Invalid phone number (read as a US "
            "number)",
        )
        assert jobs(klaviyo_emulator) == []


class TestEvidence:
    def test_evidence_is_on_the_consent_record_and_one_event_however_often_it_is_sent(
        self, subscribe, klaviyo_emulator, single
    ):
        lead = {
            "email": "eve@example.com",
            "klaviyo.list_id": single,
            "klaviyo.custom_source": "Acme form",
            **EVIDENCE,
        }
        for origin in ("request-1", "request-2", "request-1"):
            assert subscribe(lead, origin)["outcome"] == "success"
        profile = klaviyo_emulator.profiles()[0]
        record = profile["attributes"]["subscriptions"]["email"]["marketing"]
        assert record["custom_method_detail"] == (
            "Acme form · evidence: TrustedForm, LeadiD (Consent Captured event)"
        )
        (event,) = consent_events(klaviyo_emulator)
        properties = event["properties"]
        assert properties["trustedform_cert_url"] == CERT
        assert properties["leadid_token"] == TOKEN  # in Jornaya's upper case
        assert properties["consent_language"] == EVIDENCE["consent_language"]
        assert properties["ip_address"] == "203.0.113.9"
        assert properties["landing_page_url"] == "https://acme.example/offer"
        assert properties["channels"] == ["email"] and properties["list_id"] == single
        assert event["time"].startswith("2026-11-30T14:03:00")
        assert event["unique_id"].startswith("consent-") and event["backfill"] is False
        assert event["profile_id"] == profile["id"]

    def test_the_lead_platform_names_of_the_evidence_are_read(
        self, subscribe, klaviyo_emulator, single
    ):
        lead = {
            "email": "eve@example.com",
            "klaviyo.list_id": single,
            "TrustedForm Certificate URL": CERT,
            "universal_leadid": TOKEN,
        }
        fields = subscribe(lead)
        assert fields["outcome"] == "success" and fields["ignored_fields"] == []
        (event,) = consent_events(klaviyo_emulator)
        assert event["properties"]["trustedform_cert_url"] == CERT
        assert event["properties"]["leadid_token"] == TOKEN

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            (
                "trustedform_cert_url",
                "https://example.com/cert/123",
                "TrustedForm Certificate URL must be a TrustedForm certificate "
                "(https://cert.trustedform.com/ and the certificate's id)",
            ),
            (
                "trustedform_cert_url",
                "https://cert.trustedform.com/too-short",
                "TrustedForm Certificate URL must be a TrustedForm certificate "
                "(https://cert.trustedform.com/ and the certificate's id)",
            ),
            (
                "leadid_token",
                "not-a-leadid",
                "LeadiD Token must be a Jornaya LeadiD (36 characters: 8-4-4-4-12 hexadecimal "
                "digits)",
            ),
            ("ip_address", "999.1.1.1", "IP Address must be an IPv4 or IPv6 address"),
            (
                "consent_timestamp",
                "yesterday",
                "Consent Timestamp must be a date and time (ISO 8601)",
            ),
            ("landing_page_url", "acme.example", "Landing Page URL must be an http or https URL"),
        ],
    )
    def test_evidence_of_the_wrong_shape_is_a_failure_before_any_call(
        self, subscribe, klaviyo_emulator, field, value, reason
    ):
        fields = subscribe({"email": "eve@example.com", field: value})
        assert (fields["outcome"], fields["reason"]) == ("failure", reason)
        assert klaviyo_emulator.calls() == 0

    def test_a_batch_records_its_evidence_in_one_bulk_event_job(
        self, runtime, klaviyo_emulator, single
    ):
        leads = [
            {"email": f"e{i}@example.com", "klaviyo.list_id": single, **EVIDENCE} for i in range(3)
        ] + [{"email": "plain@example.com", "klaviyo.list_id": single}]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert [r.fields["outcome"] for r in results] == ["success"] * 4
        assert klaviyo_emulator.calls("bulk_create_events") == 1
        assert len(consent_events(klaviyo_emulator)) == 3
        # One job for all four: the consent record names the kinds of evidence, not its values.
        assert len(jobs(klaviyo_emulator)) == 2
        sources = {
            json.loads(j.body)["data"]["attributes"].get("custom_source")
            for j in jobs(klaviyo_emulator)
        }
        assert sources == {None, "Evidence: TrustedForm, LeadiD (Consent Captured event)"}


class TestHistorical:
    def historical(self, list_id, **more):
        return {
            "email": "old@example.com",
            "klaviyo.list_id": list_id,
            "klaviyo.historical_import": "true",
            "klaviyo.consented_at": "2024-05-01T10:00:00Z",
            **more,
        }

    def test_a_historical_import_fires_no_confirmation_and_is_subscribed(
        self, subscribe, klaviyo_emulator, double
    ):
        fields = subscribe(self.historical(double, trustedform_cert_url=CERT))
        assert (fields["outcome"], fields["reason"], fields["email_consent"]) == (
            "success",
            None,
            "subscribed",
        )
        assert klaviyo_emulator.confirmations() == []
        (job,) = jobs(klaviyo_emulator)
        attributes = json.loads(job.body)["data"]["attributes"]
        assert attributes["historical_import"] is True
        marketing = attributes["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]
        assert marketing["marketing"]["consented_at"] == "2024-05-01T10:00:00+00:00"
        assert fields["email_marketing_consent_status"] == "SUBSCRIBED"
        (event,) = consent_events(klaviyo_emulator)
        assert event["backfill"] is True  # a past consent's event starts no flow

    def test_the_same_subscribe_now_sends_a_confirmation(self, subscribe, klaviyo_emulator, double):
        subscribe({"email": "old@example.com", "klaviyo.list_id": double})
        assert len(klaviyo_emulator.confirmations()) == 1

    @pytest.mark.parametrize(
        ("consented_at", "reason"),
        [
            (
                None,
                "Klaviyo Consented At is missing: a historical import needs when the consent "
                "was given",
            ),
            ("2999-01-01T00:00:00Z", "Klaviyo Consented At must not be in the future"),
            ("soon", "Klaviyo Consented At must be a date and time (ISO 8601)"),
        ],
    )
    def test_a_historical_import_needs_a_past_consented_at(
        self, subscribe, klaviyo_emulator, single, consented_at, reason
    ):
        lead = self.historical(single)
        lead.pop("klaviyo.consented_at")
        if consented_at:
            lead["klaviyo.consented_at"] = consented_at
        fields = subscribe(lead)
        assert (fields["outcome"], fields["reason"]) == ("failure", reason)
        assert jobs(klaviyo_emulator) == []

    def test_historical_import_must_be_true_or_false(self, subscribe, single):
        fields = subscribe(self.historical(single, **{"klaviyo.historical_import": "maybe"}))
        assert (fields["outcome"], fields["reason"]) == (
            "error",
            "Klaviyo Historical Import must be true or false",
        )


class TestBackfill:
    def test_track_event_sends_backfill(self, run, klaviyo_emulator):
        fields = run("track_event", {"email": "b@example.com", "klaviyo.backfill": True})
        assert fields["outcome"] == "success"
        (sent,) = [r for r in klaviyo_emulator.requests if r.operation_id == "create_event"]
        assert json.loads(sent.body)["data"]["attributes"]["backfill"] is True
        (event,) = klaviyo_emulator.events()
        assert event["backfill"] is True

    def test_a_batch_sends_backfill_per_event(self, runtime, klaviyo_emulator):
        leads = [
            {"email": "now@example.com"},
            {"email": "then@example.com", "klaviyo.backfill": "yes"},
        ]
        results = runtime.process_batch(TRACK, leads, remaining_seconds=300)
        assert [r.fields["outcome"] for r in results] == ["success", "success"]
        recorded = {e["properties"]["email"]: e["backfill"] for e in klaviyo_emulator.events()}
        assert recorded == {"now@example.com": False, "then@example.com": True}
