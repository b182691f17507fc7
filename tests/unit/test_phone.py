"""Phone numbers to E.164, as lead platforms send them."""

import pytest

from klaviyo_leads.lead.phone import InvalidPhone, to_e164


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(512) 555-0100", "US", "+15125550100"),
        ("512.555.0100 x12", "US", "+15125550100"),
        ("512-555-0100 ext. 4", "US", "+15125550100"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("5125550100c", "US", "+15125550100"),
        ("5125550100 H", "US", "+15125550100"),
        ("1-512-555-0100", "US", "+15125550100"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+15125550100", "GB", "+15125550100"),
    ],
)
def test_normalises(raw, region, e164):
    assert to_e164(raw, region) == e164


@pytest.mark.parametrize("raw", ["555-0100", "512-555-01**", "hello", "123", "+1 000 000 0000"])
def test_rejects(raw):
    with pytest.raises(InvalidPhone):
        to_e164(raw, "US")
