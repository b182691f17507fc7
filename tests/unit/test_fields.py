"""The mapping table, both directions."""

import pytest

from klaviyo_leads.lead import fields
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result

FULL_LEAD = {
    "email": "sarah.mason@example.com",
    "phone_1": "512.555.0100 x12",
    "reference": "crm-123",
    "first_name": "Sarah",
    "last_name": "Mason",
    "company": {"name": "Acme"},
    "title": "VP",
    "address_1": "1 Main St",
    "address_2": "Suite 2",
    "city": "Austin",
    "state": "TX",
    "postal_code": "78701",
    "country": "US",
    "latitude": "30.27",
    "longitude": -97.74,
    "klaviyo": {
        "photo_url": "https://example.com/p.png",
        "timezone": "America/Chicago",
        "custom": {"tier": "gold"},
        "list_id": "Y6nRLr",
    },
    "klaviyo.custom.score": 7,
}


def test_every_lead_field_reaches_its_attribute():
    attributes = Lead.from_object(FULL_LEAD).profile_attributes("US")
    assert attributes == {
        "email": "sarah.mason@example.com",
        "phone_number": "+15125550100",
        "external_id": "crm-123",
        "first_name": "Sarah",
        "last_name": "Mason",
        "organization": "Acme",
        "title": "VP",
        "image": "https://example.com/p.png",
        "location": {
            "address1": "1 Main St",
            "address2": "Suite 2",
            "city": "Austin",
            "region": "TX",
            "zip": "78701",
            "country": "US",
            "latitude": 30.27,
            "longitude": -97.74,
            "timezone": "America/Chicago",
        },
        "properties": {"tier": "gold", "score": 7},
    }


def test_table_covers_each_attribute_once():
    attributes = [f.attribute for f in fields.LEAD_FIELDS]
    keys = [f.key for f in fields.LEAD_FIELDS]
    assert len(set(attributes)) == len(attributes)
    assert len(set(keys)) == len(keys)


def test_absent_fields_send_nothing():
    assert Lead.from_object({"email": "a@b.co", "city": " "}).profile_attributes("US") == {
        "email": "a@b.co"
    }


@pytest.mark.parametrize(
    ("lead", "reason"),
    [
        ({"latitude": "north"}, "Latitude must be a number between -90 and 90"),
        ({"longitude": 200}, "Longitude must be a number between -180 and 180"),
        ({"klaviyo.photo_url": "javascript:x"}, "Klaviyo Photo Url must be an http or https URL"),
        ({"first_name": ["a"]}, "First Name must be a single text value"),
    ],
)
def test_bad_values(lead, reason):
    with pytest.raises(Result) as caught:
        Lead.from_object(lead).profile_attributes("US")
    assert caught.value.reason == reason


PROFILE = {
    "type": "profile",
    "id": "01GDDKASAP8TKDDA2GRZDSVP4H",
    "attributes": {
        "email": "a@b.co",
        "external_id": "crm-1",
        "created": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-02T00:00:00+00:00",
        "last_event_date": None,
        "properties": {"tier": "gold"},
        "subscriptions": {
            "email": {
                "marketing": {
                    "consent": "UNSUBSCRIBED",
                    "method": "API",
                    "suppression": [{"reason": "UNSUBSCRIBE", "timestamp": "t1"}],
                    "list_suppressions": [
                        {"list_id": "Y6nRLr", "reason": "USER_SUPPRESSED", "timestamp": "t2"}
                    ],
                }
            },
            "sms": {
                "marketing": {
                    "consent": "SUBSCRIBED",
                    "consent_timestamp": "t3",
                    "method": "API",
                    "method_detail": "5217",
                }
            },
        },
    },
    "links": {"self": "https://a.klaviyo.com/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H/"},
}


def test_profile_reads_back_into_every_result_field():
    assert fields.profile_fields(PROFILE, "Newsletter") == {
        "type": "profile",
        "id": "01GDDKASAP8TKDDA2GRZDSVP4H",
        "reference": "crm-1",
        "anonymous_id": None,
        "list_name": "Newsletter",
        "created_time": "2026-01-01T00:00:00+00:00",
        "updated_time": "2026-01-02T00:00:00+00:00",
        "last_event_date": None,
        "custom": {"tier": "gold"},
        "email_marketing_consent_status": "UNSUBSCRIBED",
        "email_marketing_subscription_method": "API",
        "email_marketing_subscription_suppression_reason": "UNSUBSCRIBE",
        "email_marketing_subscription_suppression_timestamp": "t1",
        "email_marketing_suppression_list_id": "Y6nRLr",
        "email_marketing_suppression_list_reason": "USER_SUPPRESSED",
        "email_marketing_suppression_list_timestamp": "t2",
        "sms_marketing_consent_status": "SUBSCRIBED",
        "sms_marketing_timestamp": "t3",
        "sms_marketing_method": "API",
        "sms_marketing_method_details": "5217",
        "email_consent": "suppressed",  # a suppression holds it back, whatever the consent
        "sms_consent": "subscribed",
        "self_links": "https://a.klaviyo.com/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H/",
    }


@pytest.mark.parametrize(
    ("email", "sms", "expected"),
    [
        (
            {"consent": "SUBSCRIBED", "suppression": []},
            {"consent": "SUBSCRIBED"},
            ("subscribed",) * 2,
        ),
        (
            {"consent": "SUBSCRIBED", "suppression": [{"reason": "HARD_BOUNCE"}]},
            {"consent": "UNSUBSCRIBED"},
            ("suppressed", "unsubscribed"),
        ),
        (
            {"consent": "NEVER_SUBSCRIBED"},
            {"consent": "NEVER_SUBSCRIBED"},
            ("never_subscribed",) * 2,
        ),
        ({}, None, (None, None)),
    ],
)
def test_each_channel_in_one_word(email, sms, expected):
    subscriptions = {"email": {"marketing": email}} if email else {}
    if sms:
        subscriptions["sms"] = {"marketing": sms}
    profile = {"attributes": {"subscriptions": subscriptions}}
    assert (
        fields.consent_state(profile, "email"),
        fields.consent_state(profile, "sms"),
    ) == expected


def test_no_profile_gives_nulls():
    assert set(fields.profile_fields(None, None).values()) == {None}


def test_read_path_tolerates_odd_shapes():
    assert fields.read_path({"a": [{"b": 1}]}, "a[0].b") == 1
    assert fields.read_path({"a": []}, "a[0].b") is None
    assert fields.read_path({"a": "text"}, "a.b") is None
