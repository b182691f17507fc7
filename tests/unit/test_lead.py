"""The lead: body parsing, flattening, blanks, typed accessors and their problems."""

import base64
import json
import math

import pytest

from klaviyo_leads.lead.body import MAX_BODY_BYTES, flatten, leads_in, parse_body
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Kind, Outcome, Result


def problem_of(fn, *args):
    with pytest.raises(Result) as caught:
        fn(*args)
    return caught.value


class TestParseBody:
    def test_json_object(self):
        assert parse_body('{"email": "a@b.co"}', "application/json", False) == {"email": "a@b.co"}

    def test_form_body(self):
        body = "email=a%2Bx%40b.co&klaviyo.list_id=Y6nRLr&first_name="
        assert parse_body(body, "application/x-www-form-urlencoded; charset=utf-8", False) == {
            "email": "a+x@b.co",
            "klaviyo.list_id": "Y6nRLr",
            "first_name": "",
        }

    def test_base64_body(self):
        raw = base64.b64encode(json.dumps({"email": "a@b.co"}).encode()).decode()
        assert parse_body(raw, "application/json", True) == {"email": "a@b.co"}

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ("", "The request body is empty"),
            (None, "The request body is empty"),
            ("{not json", "The request body is not valid JSON"),
            ("[1, 2]", "The request body must be a JSON object (one lead)"),
            ('"a string"', "The request body must be a JSON object (one lead)"),
            (b"\xff\xfe{}", "The request body is not valid UTF-8"),
            ("[" * 100_000 + "]" * 100_000, "The request body is not valid JSON"),
        ],
    )
    def test_bad_bodies_are_bad_requests(self, body, reason):
        problem = problem_of(parse_body, body, "application/json", False)
        assert (problem.outcome, problem.kind, problem.reason) == (
            Outcome.ERROR,
            Kind.BAD_REQUEST,
            reason,
        )

    @pytest.mark.parametrize(
        "content_type",
        ["application/x-www-form-urlencoded", "text/plain", None, "application/json"],
    )
    def test_json_sent_as_a_form_is_read_as_json(self, content_type):
        # curl -d '{...}' says application/x-www-form-urlencoded.
        body = '{"email": "a@b.co", "klaviyo": {"list_id": "Y6nRLr"}}'
        lead = parse_body(body, content_type, False)
        assert lead == {"email": "a@b.co", "klaviyo": {"list_id": "Y6nRLr"}}

    def test_a_byte_order_mark_before_json_is_accepted(self):
        body = "\ufeff" + json.dumps({"email": "a@b.co"})
        assert parse_body(body.encode("utf-8"), "application/json", False) == {"email": "a@b.co"}

    def test_repeated_form_keys_become_a_list(self):
        body = "email=a%40b.co&klaviyo.channels=email&klaviyo.channels=sms"
        lead = Lead.from_object(parse_body(body, "application/x-www-form-urlencoded", False))
        assert lead.channels() == ("email", "sms")
        repeated = parse_body(
            "email=a%40b.co&email=c%40d.co", "application/x-www-form-urlencoded", False
        )
        problem = problem_of(Lead.from_object(repeated).email)
        assert (problem.outcome, problem.reason) == (
            Outcome.FAILURE,
            "Email must be a single text value",
        )

    @pytest.mark.parametrize(
        "content_type",
        ["multipart/form-data; boundary=x", "application/xml", "text/xml", "application/soap+xml"],
    )
    def test_multipart_and_xml_are_415_naming_what_is_read(self, content_type):
        problem = problem_of(parse_body, "<lead/>", content_type, False)
        assert problem.http_status == 415
        assert "application/json or application/x-www-form-urlencoded" in problem.reason

    def test_huge_body_is_refused(self):
        body = json.dumps({"email": "a@b.co", "pad": "x" * MAX_BODY_BYTES})
        problem = problem_of(parse_body, body, "application/json", False)
        assert problem.reason == "The request body is larger than 256 KB"


class TestFlatten:
    def test_nested_and_dotted_are_the_same(self):
        nested = {"klaviyo": {"list_id": "Y6nRLr"}, "company": {"name": "Acme"}}
        dotted = {"klaviyo.list_id": "Y6nRLr", "company.name": "Acme"}
        assert flatten(nested) == flatten(dotted) == dotted

    def test_custom_object_keeps_values_whole(self):
        flat = flatten({"klaviyo": {"custom": {"tier": "gold", "prefs": {"a": 1}}}})
        assert flat == {"klaviyo.custom.tier": "gold", "klaviyo.custom.prefs": {"a": 1}}

    def test_object_where_a_value_belongs_stays_to_be_reported(self):
        assert flatten({"email": {"x": 1}}) == {"email": {"x": 1}}

    def test_leads_in(self):
        assert leads_in({"leads": [{"email": "a@b.co"}]}) == [{"email": "a@b.co"}]
        assert leads_in({"leads": [], "email": "x"}) is None
        assert leads_in({"email": "a@b.co"}) is None


class TestLead:
    def test_blank_strings_are_absent(self):
        lead = Lead.from_object({"email": "  ", "first_name": "", "city": None})
        assert lead.values == {}

    def test_numbers_are_text_where_text_belongs(self):
        lead = Lead.from_object({"postal_code": 10017, "klaviyo.list_id": 12345.0})
        assert lead.text("postal_code", "Postal Code") == "10017"
        assert lead.list_id() == "12345"

    @pytest.mark.parametrize("value", [["a@b.co"], {"x": 1}, True])
    def test_wrong_types_are_failures_naming_the_field(self, value):
        problem = problem_of(Lead.from_object({"email": value}).email)
        assert problem.outcome is Outcome.FAILURE
        assert problem.reason == "Email must be a single text value"

    def test_wrong_type_in_a_variable_is_a_configuration_error(self):
        problem = problem_of(Lead.from_object({"klaviyo.list_id": ["x"]}).list_id)
        assert (problem.kind, problem.reason) == (
            Kind.CONFIGURATION,
            "Klaviyo List Id must be a single text value",
        )

    @pytest.mark.parametrize("email", ["nope", "a@b", "a b@c.com", "x" * 95 + "@b.com", "@b.com"])
    def test_invalid_email(self, email):
        problem = problem_of(Lead.from_object({"email": email}).email)
        assert (problem.outcome, problem.reason) == (Outcome.FAILURE, "Invalid email address")
        assert email not in problem.reason

    @pytest.mark.parametrize(
        "email",
        [
            "john..doe@example.com",  # a doubled dot: one refuses a whole bulk import
            ".john@example.com",
            "john.@example.com",
            "john...@example.com",
            "jo\x00hn@example.com",
            "jo\x07hn@example.com",
            "jo\x1bhn@example.com",
            "jo\x7fhn@example.com",
            "jo\x9bhn@example.com",
            "john@exam\x00ple.com",
        ],
        ids=repr,
    )
    def test_what_klaviyo_refuses_in_an_email_is_refused_here(self, email):
        problem = problem_of(Lead.from_object({"email": email}).email)
        assert (problem.outcome, problem.reason) == (Outcome.FAILURE, "Invalid email address")

    @pytest.mark.parametrize(
        "email",
        ["john.doe@example.com", "j.o.h.n@example.com", "o'brien+tag@example.co.uk", "_@a.io"],
    )
    def test_dots_between_characters_are_fine(self, email):
        assert Lead.from_object({"email": email}).email() == email

    def test_valid_email_with_plus(self):
        assert Lead.from_object({"email": " Sarah+x@Example.com "}).email() == "Sarah+x@Example.com"

    def test_phone_normalised_and_invalid(self):
        assert Lead.from_object({"phone_1": "(512) 555-0100"}).phone("US") == "+15125550100"
        problem = problem_of(Lead.from_object({"phone_1": "555-01**"}).phone, "US")
        assert problem.reason == "Invalid phone number (read as a US number)"
        problem = problem_of(Lead.from_object({"phone_1": "+1 000 000 0000"}).phone, "US")
        assert problem.reason == "Invalid phone number"

    @pytest.mark.parametrize(
        ("lead", "expected"),
        [
            ({"klaviyo.id": "01ABC", "email": "a@b.co"}, "klaviyo_id"),
            ({"email": "a@b.co", "phone_1": "5125550100"}, "email"),
            ({"phone_1": "5125550100", "reference": "r1"}, "phone_number"),
            ({"reference": "r1"}, "external_id"),
            ({}, "external_id"),
            ({"email": "a@b.co", "klaviyo.identifier": "Phone Number"}, "phone_number"),
            ({"klaviyo.identifier": "klaviyo-id"}, "klaviyo_id"),
            ({"klaviyo.identifier": "PhoneNumber"}, "phone_number"),
            ({"klaviyo.identifier": "ExternalId"}, "external_id"),
            ({"klaviyo.identifier": "KlaviyoId"}, "klaviyo_id"),
            ({"klaviyo.identifier": "E-Mail"}, "email"),
        ],
    )
    def test_identifier_default_and_configured(self, lead, expected):
        assert Lead.from_object(lead).identifier() == expected

    def test_unknown_identifier_is_configuration_error(self):
        problem = problem_of(Lead.from_object({"klaviyo.identifier": "fax"}).identifier)
        assert problem.kind is Kind.CONFIGURATION

    @pytest.mark.parametrize(
        ("value", "sort"),
        [
            (None, "-updated"),
            ("earliest creation date", "created"),
            ("Earliest_Update-Date", "updated"),
            ("NEWEST CREATION DATE", "-created"),
            ("newest-update-date", "-updated"),
        ],
    )
    def test_profile_handling_forgives_case_and_separators(self, value, sort):
        lead = Lead.from_object({"klaviyo.profile_handling": value} if value else {})
        assert lead.profile_sort() == sort

    def test_unknown_profile_handling(self):
        problem = problem_of(Lead.from_object({"klaviyo.profile_handling": "oldest"}).profile_sort)
        assert problem.kind is Kind.CONFIGURATION

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("email", ("email",)),
            ("SMS, email", ("email", "sms")),
            (["sms"], ("sms",)),
            ("email sms", ("email", "sms")),
            ("sms;email", ("email", "sms")),
            (["email, sms"], ("email", "sms")),
        ],
    )
    def test_channels(self, value, expected):
        lead = Lead.from_object({"klaviyo.channels": value} if value else {})
        assert lead.channels() == expected

    @pytest.mark.parametrize("value", ["fax", ["email", 3], 7, ","])
    def test_bad_channels(self, value):
        problem = problem_of(Lead.from_object({"klaviyo.channels": value}).channels)
        assert problem.kind is Kind.CONFIGURATION

    @pytest.mark.parametrize(("value", "seconds"), [(None, 360.0), (30, 30.0), ("12.5", 12.5)])
    def test_timeout_seconds(self, value, seconds):
        lead = Lead.from_object({"timeout_seconds": value} if value is not None else {})
        assert lead.timeout_seconds() == seconds

    @pytest.mark.parametrize("value", ["soon", -1, 0, True, float("nan"), [5]])
    def test_bad_timeout_seconds(self, value):
        problem = problem_of(lambda: Lead.from_object({"timeout_seconds": value}).timeout_seconds())
        assert problem.kind is Kind.CONFIGURATION

    def test_external_id_prefers_the_variable_then_reference(self):
        assert Lead.from_object({"reference": "r1"}).external_id() == "r1"
        both = Lead.from_object({"reference": "r1", "klaviyo.external_id": "x1"})
        assert both.external_id() == "x1"
        # Refused as the lead is read, whatever the action reads of it.
        problem = problem_of(lambda: Lead.from_object({"reference": "r" * 256}))
        assert problem.reason == "Reference is longer than 255 characters"
        problem = problem_of(lambda: Lead.from_object({"klaviyo": {"external_id": "x" * 256}}))
        assert problem.reason == "Klaviyo External Id is longer than 255 characters"
        assert Lead.from_object({"reference": "r" * 255}).external_id() == "r" * 255

    def test_a_lead_nested_past_the_limit_is_refused_at_any_depth(self):
        deep: dict = {"email": "a@example.com"}
        level = deep
        for _ in range(5000):  # deeper than Python's stack: refused without recursing
            level["unknown"] = {}
            level = level["unknown"]
        problem = problem_of(lambda: Lead.from_object(deep))
        assert (problem.reason, problem.http_status) == (
            "The lead is nested more than 32 levels",
            400,
        )
        within = {"klaviyo": {"custom": {"a": [[{"b": {"c": [1]}}]]}}}
        assert Lead.from_object(within).custom_properties() == {"a": [[{"b": {"c": [1]}}]]}


class TestSpellings:
    def test_display_names_of_the_lead_platform_in_any_case(self):
        lead = Lead.from_object(
            {
                "First Name": "Nia",
                "PHONE 1": "512 555 0100",
                "Company Name": "Acme",
                "klaviyo list id": "Y6nRLr",
                "Timeout Seconds": 30,
                "Email": "nia@example.com",
            }
        )
        assert lead.values["first_name"] == "Nia"
        assert lead.phone("US") == "+15125550100"
        assert lead.values["company.name"] == "Acme"
        assert lead.list_id() == "Y6nRLr"
        assert lead.timeout_seconds() == 30
        assert lead.email() == "nia@example.com"

    def test_the_key_as_written_beats_an_alias(self):
        for pair in (
            {"Email": "x@a.co", "email": "y@a.co"},
            {"email": "y@a.co", "Email": "x@a.co"},
        ):
            assert Lead.from_object(pair).email() == "y@a.co"

    def test_custom_property_names_keep_their_spelling(self):
        lead = Lead.from_object(
            {"klaviyo.custom.Lead Source": "web", "Klaviyo.Custom.tier": "gold"}
        )
        assert lead.custom_properties() == {"Lead Source": "web", "tier": "gold"}


class TestOneRuleForBadValues:
    """A bad value that describes the person fails the lead; a bad setting is an error."""

    @pytest.mark.parametrize(
        "lead",
        [
            {"klaviyo.photo_url": "not a url"},
            {"latitude": "north"},
            {"klaviyo.timezone": ["UTC"]},
            {"first_name": {"given": "x"}},
        ],
    )
    def test_lead_data_is_a_failure(self, lead):
        problem = problem_of(Lead.from_object(lead).profile_attributes, "US")
        assert (problem.outcome, problem.http_status) == (Outcome.FAILURE, 422)

    @pytest.mark.parametrize(
        ("lead", "read"),
        [
            ({"klaviyo.list_id": ["a", "b"]}, "list_id"),
            ({"klaviyo.segment_id": {"x": 1}}, "segment_id"),
            ({"klaviyo.custom_source": ["a"]}, "custom_source"),
            ({"timeout_seconds": "soon"}, "timeout_seconds"),
            ({"klaviyo.identifier": "fax"}, "identifier"),
        ],
    )
    def test_configuration_is_an_error(self, lead, read):
        problem = problem_of(getattr(Lead.from_object(lead), read))
        assert (problem.outcome, problem.http_status) == (Outcome.ERROR, 400)


def _nested(levels: int) -> dict:
    """Custom property ``deep`` whose value holds ``levels`` nested objects."""
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return {"klaviyo": {"custom": {"deep": value}}}


class TestIssue19Hardening:
    """Nothing silently dropped, local phones in the lead's country, no NaN, limits."""

    def test_unknown_keys_are_named(self):
        lead = Lead.from_object(
            {"emial": "a@b.co", "first_name": "Ann", "klaviyo": {"lsit_id": "Y6nRLr"}, "id": "7"}
        )
        assert lead.ignored == ("emial", "klaviyo.lsit_id")

    def test_an_alias_beaten_by_the_key_as_written_is_named(self):
        lead = Lead.from_object({"first_name": "Ann", "First Name": "Bob"})
        assert lead.values["first_name"] == "Ann"
        assert lead.ignored == ("First Name",)

    @pytest.mark.parametrize(
        ("key", "name"),
        [
            ("Klaviyo Custom Favorite Color", "favorite_color"),
            ("klaviyo custom Plan", "plan"),
            ("Klaviyo Custom Score 2", "score_2"),
        ],
    )
    def test_display_name_of_a_custom_property(self, key, name):
        lead = Lead.from_object({key: "blue"})
        assert lead.custom_properties() == {name: "blue"}
        assert lead.ignored == ()

    @pytest.mark.parametrize(
        "key", ["Klaviyo Custom Favorite.Color", "Klaviyo Custom  Double Space", "Klaviyo Custom"]
    )
    def test_ambiguous_display_names_are_ignored_not_guessed(self, key):
        lead = Lead.from_object({key: "blue"})
        assert lead.custom_properties() == {}
        assert lead.ignored == (key,)

    def test_the_dotted_custom_key_beats_its_display_name(self):
        lead = Lead.from_object(
            {"klaviyo.custom.favorite_color": "red", "Klaviyo Custom Favorite Color": "blue"}
        )
        assert lead.custom_properties() == {"favorite_color": "red"}
        assert lead.ignored == ("Klaviyo Custom Favorite Color",)

    @pytest.mark.parametrize("country", ["GB", "gb", "United Kingdom", "UK"])
    def test_local_phone_uses_the_leads_country(self, country):
        lead = Lead.from_object({"phone_1": "020 7946 0958", "country": country})
        assert lead.phone("US") == "+442079460958"

    def test_unknown_country_falls_back_to_the_default_region_and_says_so(self):
        lead = Lead.from_object({"phone_1": "020 7946 0958", "country": "Atlantis"})
        assert problem_of(lead.phone, "US").reason == "Invalid phone number (read as a US number)"
        lead = Lead.from_object({"phone_1": "020 7946 0958", "country": "DE"})
        assert problem_of(lead.phone, "US").reason == "Invalid phone number (read as a DE number)"

    @pytest.mark.parametrize(
        ("body", "reason", "outcome"),
        [
            ('{"latitude": NaN}', "Latitude must be a finite number", Outcome.FAILURE),
            (
                '{"klaviyo.custom.score": Infinity}',
                "A custom property must be a finite number",
                Outcome.FAILURE,
            ),
            (
                '{"klaviyo": {"custom": {"x": {"y": [1, -Infinity]}}}}',
                "A custom property must be a finite number",
                Outcome.FAILURE,
            ),
            ('{"timeout_seconds": NaN}', "Timeout Seconds must be a finite number", Outcome.ERROR),
            ('{"scroe": NaN}', "A lead value must be a finite number", Outcome.FAILURE),
        ],
    )
    def test_nan_and_infinity_are_refused(self, body, reason, outcome):
        problem = problem_of(Lead.from_object, parse_body(body, "application/json", False))
        assert (problem.outcome, problem.reason) == (outcome, reason)

    def test_finite_makes_any_value_valid_json(self):
        from klaviyo_leads.lead.body import finite

        value = {"a": [math.nan, 1.5, {"b": math.inf}], "c": "x"}
        assert (
            json.dumps(finite(value), allow_nan=False)
            == '{"a": [null, 1.5, {"b": null}], "c": "x"}'
        )

    @pytest.mark.parametrize(
        ("lead", "reason"),
        [
            (
                {"klaviyo.custom.note": "x" * 100_001},
                "A custom property value is longer than 100000 characters",
            ),
            (
                {"klaviyo.custom.n" + "x" * 255: "v"},
                "A custom property name is longer than 255 characters",
            ),
            (_nested(10), "A custom property is nested more than 10 levels"),
            (
                {"klaviyo": {"custom": {"k": {"n": {"x" * 256: 1}}}}},
                "A custom property name is longer than 255 characters",
            ),
        ],
    )
    def test_custom_property_limits(self, lead, reason):
        problem = problem_of(Lead.from_object(lead).custom_properties)
        assert (problem.outcome, problem.reason) == (Outcome.FAILURE, reason)

    def test_custom_properties_at_the_limits_pass(self):
        lead = Lead.from_object({"klaviyo.custom.note": "x" * 100_000} | _nested(9))
        assert set(lead.custom_properties()) == {"note", "deep"}

    def test_custom_source_limit(self):
        lead = Lead.from_object({"klaviyo.custom_source": "s" * 256})
        problem = problem_of(lead.custom_source)
        assert problem.kind is Kind.CONFIGURATION
        assert problem.reason == "Klaviyo Custom Source is longer than 255 characters"
        assert Lead.from_object({"klaviyo.custom_source": "s" * 255}).custom_source() == "s" * 255


class TestConsentEvidenceAndHistory:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("true", True),
            ("Yes", True),
            ("1", True),
            (True, True),
            (1, True),
            ("false", False),
            ("no", False),
            (0, False),
            (None, False),
        ],
    )
    def test_yes_no_variables(self, value, expected):
        lead = Lead.from_object({"klaviyo.backfill": value, "klaviyo.historical_import": value})
        assert lead.backfill() is expected and lead.historical_import() is expected

    @pytest.mark.parametrize("value", ["maybe", 2.5, ["true"]])
    def test_a_yes_no_variable_of_another_value_is_a_configuration_error(self, value):
        problem = problem_of(Lead.from_object({"klaviyo.backfill": value}).backfill)
        assert problem.kind is Kind.CONFIGURATION
        assert problem.reason == "Klaviyo Backfill must be true or false"

    @pytest.mark.parametrize(
        "url",
        [
            "https://cert.trustedform.com/" + "a1B2_-" * 6 + "abcd",  # 40
            "http://cert.trustedform.com/" + "x" * 80 + "/",  # 80, http and a slash forgiven
            "https://cert.trustedform.com/0.AbC-12_x",  # a lead-ad certificate
        ],
    )
    def test_trustedform_certificates_of_every_shape_are_read_as_https(self, url):
        evidence = Lead.from_object({"trustedform_cert_url": url}).consent_evidence()
        cert = evidence["trustedform_cert_url"]
        assert cert.startswith("https://cert.trustedform.com/") and not cert.endswith("/")

    @pytest.mark.parametrize(
        "url",
        [
            "https://cert.trustedform.com/" + "a" * 39,
            "https://cert.trustedform.com.evil.example/" + "a" * 40,
            "https://cert.trustedform.com/" + "a" * 40 + "/extra",
            "ftp://cert.trustedform.com/" + "a" * 40,
        ],
    )
    def test_other_urls_are_no_certificate(self, url):
        problem = problem_of(Lead.from_object({"trustedform_cert_url": url}).consent_evidence)
        assert problem.outcome is Outcome.FAILURE
        assert problem.reason.startswith("TrustedForm Certificate URL must be")

    def test_evidence_is_normalised(self):
        lead = Lead.from_object(
            {
                "LeadiD Token": "e0a4e5f1-2b3c-4d5e-8f90-0123456789ab",
                "ip_address": "2001:DB8:0:0:0:0:0:1",
                "consent_timestamp": "2026-11-30 14:03:00",
                "user_agent": "Mozilla/5.0",
            }
        )
        assert lead.consent_evidence() == {
            "leadid_token": "E0A4E5F1-2B3C-4D5E-8F90-0123456789AB",
            "consent_timestamp": "2026-11-30T14:03:00+00:00",
            "ip_address": "2001:db8::1",
            "user_agent": "Mozilla/5.0",
        }
        assert lead.ignored == ()

    @pytest.mark.parametrize(
        ("lead", "reason"),
        [
            (
                {"consent_language": "x" * 10_001},
                "Consent Language is longer than 10000 characters",
            ),
            ({"user_agent": "x" * 2049}, "User Agent is longer than 2048 characters"),
            (
                {"consent_timestamp": "2999-01-01T00:00:00Z"},
                "Consent Timestamp must not be in the future",
            ),
        ],
    )
    def test_evidence_limits(self, lead, reason):
        problem = problem_of(Lead.from_object(lead).consent_evidence)
        assert (problem.outcome, problem.reason) == (Outcome.FAILURE, reason)
