"""What a result event carries of its lead (klaviyo_leads.aws.bus, ResultEventLead)."""

from __future__ import annotations

import hashlib
import json

from klaviyo_leads.aws.bus import KEYS_AND_HASHES, Publication, keys_and_hashes
from klaviyo_leads.config import Settings

LEAD = {
    "Email": " Ann@Example.com ",
    "Phone 1": "+14155550100",
    "first_name": "Ann",
    "klaviyo": {"list_id": "Y6nRLr", "external_id": "crm-7"},
    "reference": "r-1",
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_keys_and_hashes_keep_the_keys_and_hash_the_identifiers() -> None:
    assert keys_and_hashes(LEAD) == {
        "keys": [
            "email",
            "first_name",
            "klaviyo.external_id",
            "klaviyo.list_id",
            "phone_1",
            "reference",
        ],
        "identifiers": {
            "email": sha256("ann@example.com"),
            "phone_1": sha256("+14155550100"),
            "reference": sha256("r-1"),
            "klaviyo.external_id": sha256("crm-7"),
        },
    }
    assert keys_and_hashes("not a lead") == {"keys": [], "identifiers": {}}


def test_a_result_event_carries_the_whole_lead_or_only_keys_and_hashes() -> None:
    publication = Publication("create_profile", LEAD, {"outcome": "success"}, "m-1")
    full = json.loads(publication.entry("bus")["Detail"])
    assert full["lead"] == LEAD
    hashed = publication.entry("bus", KEYS_AND_HASHES)["Detail"]
    assert "Ann" not in hashed and "Example.com" not in hashed and "crm-7" not in hashed
    assert json.loads(hashed)["lead"] == keys_and_hashes(LEAD)
    assert json.loads(hashed)["result"] == {"outcome": "success"}


def test_the_setting_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).result_event_lead == "full"
    setting = Settings.from_env({"RESULT_EVENT_LEAD": "Keys-And-Hashes"}).result_event_lead
    assert setting == KEYS_AND_HASHES
