"""Validation of profile attributes as Klaviyo applies it on create, update and import."""

from __future__ import annotations

import re
from typing import Any

from .errors import INVALID_EMAIL, INVALID_PHONE, NO_IDENTIFIER, ApiError, invalid
from .model import LOCATION_FIELDS, STRING_ATTRIBUTES

PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
# Deliberately plain: dot-atom local part and a dotted host name. Klaviyo's real check is
# unpublished; this one rejects what a form-fill bug typically produces (spaces, no host), and
# what Klaviyo is seen to refuse: a leading, trailing or doubled dot in the local part
# (``john..doe@example.com``, rudderlabs/rudder-server PR #7107) and control characters.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
MAX_EMAIL_LENGTH = 100
# Klaviyo documents no nesting limit for profile properties; the emulator applies the one it
# documents for event properties (10 levels, the properties object being level 0), so a deep
# value is a 400 here, never a crash (the bundle refuses the same before sending).
PROPERTIES_NESTING_LIMIT = 10
ATTRIBUTES_POINTER = "/data/attributes"


def check_email(value: Any, pointer: str) -> None:
    if (
        not isinstance(value, str)
        or len(value) > MAX_EMAIL_LENGTH
        or not EMAIL_RE.fullmatch(value)  # fullmatch: "$" alone lets a final newline through
    ):
        raise invalid(INVALID_EMAIL, pointer=pointer)


def check_phone(value: Any, pointer: str) -> None:
    if not isinstance(value, str) or not PHONE_RE.fullmatch(value):
        raise invalid(INVALID_PHONE, pointer=pointer)


def phone_region(phone: str) -> str | None:
    """The region code (``US``, ``GB``...) of an E.164 number, for the account's SMS
    countries; numbers libphonenumber does not know fall back to their calling code's main
    region (``+1 500...`` test numbers count as ``US``)."""
    import phonenumbers  # the shared layer's dependency; its metadata loads on first use

    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    return region or phonenumbers.region_code_for_country_code(number.country_code or 0)


def _not_object(pointer: str, name: str) -> ApiError:
    return invalid(f"'{name}' must be an object.", pointer=pointer)


def clean_attributes(
    raw: Any,
    *,
    pointer: str = ATTRIBUTES_POINTER,
    extra: tuple[str, ...] = (),
    check_formats: bool = True,
) -> dict[str, Any]:
    """Check types and formats of a profile ``attributes`` object and return it.

    Only keys that were sent are returned, so callers can tell "omitted" from "null".
    ``extra`` names further accepted string keys (``_kx`` on profile-import).
    ``check_formats=False`` leaves the email and phone formats to the caller (a bulk import
    checks every profile first, then refuses the request naming each one that fails).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _not_object(pointer, "attributes")
    allowed = {*STRING_ATTRIBUTES, "location", "properties", *extra}
    for key in raw:
        if key not in allowed:
            raise invalid(
                f"'{key}' is not a valid field for the resource 'profile'.",
                pointer=f"{pointer}/{key}",
            )
    for key in (*STRING_ATTRIBUTES, *extra):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise invalid(f"'{key}' must be a string.", pointer=f"{pointer}/{key}")
    if check_formats:
        check_formats_of(raw, pointer)
    location = raw.get("location")
    if location is not None:
        if not isinstance(location, dict):
            raise _not_object(f"{pointer}/location", "location")
        for key, value in location.items():
            where = f"{pointer}/location/{key}"
            if key not in LOCATION_FIELDS:
                raise invalid(f"'{key}' is not a valid location field.", pointer=where)
            numeric_ok = key in ("latitude", "longitude")
            if value is None or isinstance(value, str):
                continue
            if numeric_ok and isinstance(value, int | float) and not isinstance(value, bool):
                continue
            raise invalid(f"'{key}' has an invalid type.", pointer=where)
    properties = raw.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise _not_object(f"{pointer}/properties", "properties")
    if properties is not None:
        check_nesting(properties, f"{pointer}/properties")
    return dict(raw)


def check_nesting(properties: Any, pointer: str) -> None:
    """Properties nested at most ``PROPERTIES_NESTING_LIMIT`` levels. Iterative: a value
    nested thousands of levels deep is refused, not a RecursionError."""
    stack: list[tuple[Any, str, int]] = [(properties, pointer, 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > PROPERTIES_NESTING_LIMIT:
            raise invalid(
                f"Profile properties cannot be nested more than {PROPERTIES_NESTING_LIMIT} levels.",
                pointer=where,
            )
        if isinstance(value, dict):
            stack.extend(
                (item, f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}", depth + 1)
                for key, item in value.items()
            )
        elif isinstance(value, list):
            stack.extend((item, f"{where}/{i}", depth + 1) for i, item in enumerate(value))


def check_formats_of(attributes: dict[str, Any], pointer: str = ATTRIBUTES_POINTER) -> None:
    if attributes.get("email") is not None:
        check_email(attributes["email"], f"{pointer}/email")
    if attributes.get("phone_number") is not None:
        check_phone(attributes["phone_number"], f"{pointer}/phone_number")


def check_identifiers(attributes: dict[str, Any], pointer: str = ATTRIBUTES_POINTER) -> None:
    if not any(attributes.get(k) for k in ("email", "phone_number", "external_id")):
        raise invalid(NO_IDENTIFIER, pointer=pointer)


def clean_patch_meta(raw: Any, pointer: str = "/data/meta") -> dict[str, Any]:
    """Check ``data.meta`` (patch_properties / patch_identifiers) and return it."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _not_object(pointer, "meta")
    for key in raw:
        if key not in ("patch_properties", "patch_identifiers"):
            raise invalid(f"'{key}' is not a valid meta field.", pointer=f"{pointer}/{key}")
    patch = raw.get("patch_properties")
    if patch is not None:
        where = f"{pointer}/patch_properties"
        if not isinstance(patch, dict):
            raise _not_object(where, "patch_properties")
        for key, value in patch.items():
            if key not in ("append", "unappend", "unset"):
                raise invalid(f"'{key}' is not a valid patch operation.", pointer=f"{where}/{key}")
            if key in ("append", "unappend") and value is not None and not isinstance(value, dict):
                raise _not_object(f"{where}/{key}", key)
            if key in ("append", "unappend") and value is not None:
                check_nesting(value, f"{where}/{key}")
            if key == "unset" and not (
                value is None
                or isinstance(value, str)
                or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                raise invalid("'unset' must be a string or a list of strings.", pointer=where)
    identifiers = raw.get("patch_identifiers")
    if identifiers is not None:
        where = f"{pointer}/patch_identifiers"
        if not isinstance(identifiers, dict):
            raise _not_object(where, "patch_identifiers")
        for op, value in identifiers.items():
            if op not in ("append", "unappend") or not isinstance(value, dict):
                raise invalid("Only 'append' and 'unappend' objects are allowed.", pointer=where)
            for key, emails in value.items():
                if key != "email":
                    raise invalid(
                        "Only 'email' is supported in patch_identifiers.",
                        pointer=f"{where}/{op}/{key}",
                    )
                for email in emails if isinstance(emails, list) else [emails]:
                    check_email(email, f"{where}/{op}/email")
    return dict(raw)
