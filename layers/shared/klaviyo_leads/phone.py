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
