"""Phone numbers in, E.164 out: lead platforms send US numbers in every shape."""

from __future__ import annotations

import re

# Lead platforms mark the line type with a trailing letter: home, work, cell, mobile.
_TYPE_SUFFIX = re.compile(r"(?<=\d)\s*[hwcmHWCM]$")


class InvalidPhone(ValueError):
    """The number cannot be a real phone number (masked, too short, unknown area)."""


def to_e164(raw: str, default_region: str = "US") -> str:
    """``(512) 555-0100 x12`` -> ``+15125550100``; extensions and type suffixes are dropped."""
    text = raw.strip()
    if "*" in text:
        raise InvalidPhone("masked")
    text = _TYPE_SUFFIX.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]

    # Imported here: the library's metadata is large and only phone leads need it.
    import phonenumbers

    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone("unparseable") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("invalid")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Country names lead platforms send, for the regions most leads come from; any other country is
# understood by its ISO 3166 alpha-2 code ("GB", "de"). A name not listed here is no hint, and
# ``DEFAULT_PHONE_REGION`` applies.
_COUNTRY_NAMES = {
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "america": "US",
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "canada": "CA",
    "australia": "AU",
    "new zealand": "NZ",
    "ireland": "IE",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "spain": "ES",
    "espana": "ES",
    "italy": "IT",
    "italia": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "belgium": "BE",
    "switzerland": "CH",
    "austria": "AT",
    "sweden": "SE",
    "norway": "NO",
    "denmark": "DK",
    "finland": "FI",
    "poland": "PL",
    "portugal": "PT",
    "greece": "GR",
    "czech republic": "CZ",
    "czechia": "CZ",
    "hungary": "HU",
    "romania": "RO",
    "mexico": "MX",
    "brazil": "BR",
    "argentina": "AR",
    "chile": "CL",
    "colombia": "CO",
    "peru": "PE",
    "india": "IN",
    "japan": "JP",
    "china": "CN",
    "south korea": "KR",
    "korea": "KR",
    "singapore": "SG",
    "hong kong": "HK",
    "philippines": "PH",
    "indonesia": "ID",
    "malaysia": "MY",
    "thailand": "TH",
    "vietnam": "VN",
    "israel": "IL",
    "turkey": "TR",
    "turkiye": "TR",
    "united arab emirates": "AE",
    "uae": "AE",
    "saudi arabia": "SA",
    "south africa": "ZA",
    "nigeria": "NG",
    "kenya": "KE",
    "egypt": "EG",
}


def region_of(country: str | None) -> str | None:
    """A country as a lead gives it (``GB``, ``United Kingdom``, ``uk``) -> its region code."""
    if not country:
        return None
    import phonenumbers

    text = " ".join(country.replace(".", "").split()).lower()
    code = _COUNTRY_NAMES.get(text) or text.upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None
