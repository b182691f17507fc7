"""The lead: parsing request bodies, flattening, and reading typed values out of it.

A lead is a flat record whose keys are the lead platform's field names. Nested objects and
dotted keys are the same thing; blank strings count as absent; unknown keys are ignored.
Reading a value checks its type, so a wrong type becomes a clear result, never a crash.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.budget import DEFAULT_TIMEOUT_SECONDS
from klaviyo_leads.lead import fields as fieldmap
from klaviyo_leads.lead.body import (
    CUSTOM_OBJECT_KEY,
    MAX_LEAD_NESTING,
    _squash,
    canonical_key,
    flatten,
    is_known,
    non_finite,
)
from klaviyo_leads.lead.phone import InvalidPhone, region_of, to_e164

# Limits on custom properties and the consent source. Klaviyo's OpenAPI document gives none for
# profiles; these follow its event limits (10 levels, 100 KB strings, docs/actions.md) so a lead
# Klaviyo would refuse, or store cut, is refused here with a reason that says which limit.
MAX_PROPERTY_NAME = 255
MAX_PROPERTY_TEXT = 100_000
MAX_PROPERTY_NESTING = 10
MAX_CUSTOM_SOURCE = 255
MAX_EXTERNAL_ID = 255  # Klaviyo's external_id: refused here, for every action, before any call

_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# Besides spaces and specials, Klaviyo refuses a leading, trailing or doubled dot in the local
# part (``john..doe@``) and control characters. One such profile refuses a whole bulk import
# (actions/imports.py strips what still gets through), so they are stopped here.
_LOCAL_WORD = r"[^@\s\"<>(),;:\\\[\].\x00-\x1f\x7f-\x9f]+"
_EMAIL = re.compile(rf"{_LOCAL_WORD}(?:\.{_LOCAL_WORD})*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")

IDENTIFIERS = ("email", "phone_number", "klaviyo_id", "external_id")
# Squashed (see ``_squash``) spellings of each identifier: "PhoneNumber", "E-Mail", "ExternalId".
_IDENTIFIER_ALIASES = {
    "email": "email",
    "phonenumber": "phone_number",
    "phone": "phone_number",
    "phone1": "phone_number",
    "klaviyoid": "klaviyo_id",
    "id": "klaviyo_id",
    "externalid": "external_id",
    "reference": "external_id",
}

# Variables that steer the action: a bad one is a configuration error (400). Everything else
# in a lead describes the person (fields, identifiers, custom properties): a bad value there
# is a failure of that lead (422).
CONFIGURATION_KEYS = frozenset(
    {
        "klaviyo.list_id",
        "klaviyo.segment_id",
        "klaviyo.identifier",
        "klaviyo.profile_handling",
        "klaviyo.channels",
        "klaviyo.custom_source",
        "klaviyo.metric_name",
        "klaviyo.historical_import",
        "klaviyo.backfill",
        "timeout_seconds",
    }
)


# Profile handling -> Klaviyo's sort, so Klaviyo picks the profile (exact, one call).
PROFILE_HANDLING_SORT = {
    "earliest creation date": "created",
    "earliest update date": "updated",
    "newest creation date": "-created",
    "newest update date": "-updated",
}
DEFAULT_PROFILE_HANDLING = "newest update date"
DEFAULT_METRIC = "Lead Received"
# Consent evidence: a TrustedForm certificate is https://cert.trustedform.com/ and its id (40 or
# 80 letters, digits, "-" and "_"; a Facebook lead-ad certificate's starts "0."); a Jornaya
# LeadiD is 36 characters, 8-4-4-4-12 hexadecimal digits (Jornaya's implementation FAQ).
_TRUSTEDFORM_URL = re.compile(
    r"https?://cert\.trustedform\.com/(?:[A-Za-z0-9_-]{40}|[A-Za-z0-9_-]{80}|0\.[A-Za-z0-9._-]+)/?"
)
_LEADID_TOKEN = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
MAX_CONSENT_LANGUAGE = 10_000  # a disclosure is a paragraph; an event string may be 100 KB
MAX_USER_AGENT = 2048
MAX_URL = 2048
# How far ahead of this clock a lead's own consent time may be (the form's clock is not ours).
CONSENT_CLOCK_SKEW = timedelta(minutes=5)
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
MAX_METRIC_NAME = 128  # Klaviyo's limit for a metric name
CHANNELS = ("email", "sms")


def _nested_too_deep(lead: Mapping[str, Any]) -> bool:
    """Whether the lead nests more than MAX_LEAD_NESTING levels outside its custom properties
    (which have their own limit and reason, ``_check_properties``). Iterative: any depth."""
    stack: list[tuple[Any, str, int]] = [(lead, "", 0)]
    while stack:
        item, prefix, level = stack.pop()
        if level > MAX_LEAD_NESTING:
            return True
        if isinstance(item, Mapping):
            for key, value in item.items():
                name = canonical_key(f"{prefix}{key}".strip())
                if name == CUSTOM_OBJECT_KEY or name.startswith(fieldmap.CUSTOM_PREFIX):
                    continue
                if isinstance(value, Mapping | list):
                    stack.append((value, f"{name}.", level + 1))
        elif isinstance(item, list):
            stack.extend((value, prefix, level + 1) for value in item)
    return False


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True)
class Lead:
    """One lead, flattened. Accessors return normalised values or raise a ``Problem``."""

    values: Mapping[str, Any]
    # Keys the lead carried that the bundle does not read, as written (contract: ignored, and
    # named in the result's ``ignored_fields``).
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Lead:
        if _nested_too_deep(obj):
            raise outcomes.LEAD_TOO_DEEP(limit=MAX_LEAD_NESTING)
        dropped: list[str] = []
        flat = flatten(obj, dropped=dropped)
        for key, value in flat.items():
            if non_finite(value):
                config = key in CONFIGURATION_KEYS
                raise (outcomes.VARIABLE_NOT_FINITE if config else outcomes.NOT_FINITE)(
                    field=_label(key)
                )
        for key, label in (
            ("klaviyo.external_id", "Klaviyo External Id"),
            ("reference", "Reference"),
        ):
            value = flat.get(key)
            if isinstance(value, str) and len(value.strip()) > MAX_EXTERNAL_ID:
                raise outcomes.TOO_LONG(field=label, limit=MAX_EXTERNAL_ID)
        unknown = [k for k in flat if not is_known(k)]
        return cls({k: v for k, v in flat.items() if not _is_blank(v)}, tuple(dropped + unknown))

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def text(self, key: str, label: str) -> str | None:
        """A single text value; numbers are accepted and written out as text."""
        value = self.values.get(key)
        if value is None:
            return None
        config = key in CONFIGURATION_KEYS
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise (outcomes.VARIABLE_NOT_TEXT if config else outcomes.NOT_TEXT)(field=label)
        if isinstance(value, float) and not math.isfinite(value):
            raise (outcomes.VARIABLE_NOT_FINITE if config else outcomes.NOT_FINITE)(field=label)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value).strip()

    # Identifiers -------------------------------------------------------------------------

    def email(self) -> str | None:
        email = self.text("email", "Email")
        if email is None:
            return None
        if len(email) > 100 or not _EMAIL.fullmatch(email):
            raise outcomes.INVALID_EMAIL()
        return email

    def phone(self, region: str) -> str | None:
        """Phone 1 in E.164; a local number is read in the lead's country, else ``region``."""
        raw = self.text("phone_1", "Phone 1")
        if raw is None:
            return None
        country = self.values.get("country")
        region = (region_of(country) if isinstance(country, str) else None) or region
        try:
            return to_e164(raw, region)
        except InvalidPhone as exc:
            if raw.lstrip().startswith(("+", "00")):
                raise outcomes.INVALID_PHONE() from exc
            raise outcomes.INVALID_PHONE_FOR_REGION(region=region) from exc

    def reference(self) -> str | None:
        return self._external_id("reference", "Reference")

    def external_id(self) -> str | None:
        """``klaviyo.external_id``, else the lead's ``reference`` (contract section 3)."""
        return self._external_id("klaviyo.external_id", "Klaviyo External Id") or self.reference()

    def _external_id(self, key: str, label: str) -> str | None:
        value = self.text(key, label)
        if value is not None and len(value) > MAX_EXTERNAL_ID:
            raise outcomes.TOO_LONG(field=label, limit=MAX_EXTERNAL_ID)
        return value

    def klaviyo_id(self) -> str | None:
        value = self.text("klaviyo.id", "Klaviyo Id")
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]{1,64}", value):
            raise outcomes.INVALID_PROFILE_ID()
        return value

    def identifier(self) -> str:
        """The identifier that finds the profile: configured, else the first the lead has."""
        configured = self.text("klaviyo.identifier", "Klaviyo Identifier")
        if configured is not None:
            name = _IDENTIFIER_ALIASES.get(_squash(configured))
            if name is None:
                raise outcomes.NOT_ONE_OF(
                    field="Klaviyo Identifier", choices=", ".join(IDENTIFIERS)
                )
            return name
        if "klaviyo.id" in self:
            return "klaviyo_id"
        if "email" in self:
            return "email"
        if "phone_1" in self:
            return "phone_number"
        return "external_id"

    def profile_sort(self) -> str:
        """Klaviyo's ``sort`` for the configured profile handling."""
        configured = self.text("klaviyo.profile_handling", "Klaviyo Profile Handling")
        key = " ".join(
            (configured or DEFAULT_PROFILE_HANDLING)
            .lower()
            .replace("_", " ")
            .replace("-", " ")
            .split()
        )
        if key not in PROFILE_HANDLING_SORT:
            raise outcomes.NOT_ONE_OF(
                field="Klaviyo Profile Handling", choices=", ".join(PROFILE_HANDLING_SORT)
            )
        return PROFILE_HANDLING_SORT[key]

    # Configuration -----------------------------------------------------------------------

    def list_id(self) -> str | None:
        return self.text("klaviyo.list_id", "Klaviyo List Id")

    def segment_id(self) -> str | None:
        return self.text("klaviyo.segment_id", "Klaviyo Segment Id")

    def custom_source(self) -> str | None:
        source = self.text("klaviyo.custom_source", "Klaviyo Custom Source")
        if source is not None and len(source) > MAX_CUSTOM_SOURCE:
            raise outcomes.CUSTOM_SOURCE_TOO_LONG(limit=MAX_CUSTOM_SOURCE)
        return source

    def channels(self) -> tuple[str, ...] | None:
        """The consent channels asked for (commas, semicolons, spaces, a list), or None."""
        value = self.values.get("klaviyo.channels")
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise outcomes.INVALID_CHANNELS()
        channels = {item.lower() for v in values for item in re.split(r"[\s,;]+", v) if item}
        if not channels or not channels <= set(CHANNELS):
            raise outcomes.INVALID_CHANNELS()
        return tuple(c for c in CHANNELS if c in channels)

    def flag(self, key: str, label: str) -> bool:
        """A yes/no variable: a JSON boolean, or true/false, yes/no, 1/0, on/off as text."""
        value = self.values.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise outcomes.NOT_TRUE_OR_FALSE(field=label)

    def historical_import(self) -> bool:
        return self.flag("klaviyo.historical_import", "Klaviyo Historical Import")

    def consented_at(self) -> datetime | None:
        """When a historically imported consent was given: required with
        ``klaviyo.historical_import``, in the past (Klaviyo's rule for ``consented_at``)."""
        moment = self._time("klaviyo.consented_at", "Klaviyo Consented At")
        if moment is not None and moment >= datetime.now(UTC):
            raise outcomes.TIME_IN_FUTURE(field="Klaviyo Consented At")
        return moment

    def consent_evidence(self) -> dict[str, str]:
        """The consent evidence the lead carries, checked and normalised (a TrustedForm URL
        as https without a trailing slash, a LeadiD in upper case, the time in ISO 8601)."""
        evidence: dict[str, str] = {}
        for field in fieldmap.EVIDENCE_FIELDS:
            value = self.text(field.key, field.seed_name)
            if value is not None:
                evidence[field.key] = _evidence_value(self, field, value)
        return evidence

    def _time(self, key: str, label: str) -> datetime | None:
        text = self.text(key, label)
        if text is None:
            return None
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise outcomes.NOT_A_TIME(field=label) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def timeout_seconds(self) -> float:
        value = self.values.get("timeout_seconds")
        if value is None:
            return DEFAULT_TIMEOUT_SECONDS
        try:
            seconds = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise outcomes.INVALID_TIMEOUT()
        return seconds

    # Track Event -------------------------------------------------------------------------

    def metric_name(self) -> str:
        name = self.text("klaviyo.metric_name", "Klaviyo Metric Name") or DEFAULT_METRIC
        if len(name) > MAX_METRIC_NAME:
            raise outcomes.METRIC_NAME_TOO_LONG(limit=MAX_METRIC_NAME)
        return name

    def event_value(self) -> float | None:
        value = self.values.get("klaviyo.event_value")
        if value is None:
            return None
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise outcomes.NOT_A_NUMBER(field="Klaviyo Event Value")
        return number

    def event_time(self) -> datetime | None:
        return self._time("klaviyo.event_time", "Klaviyo Event Time")

    def backfill(self) -> bool:
        """``klaviyo.backfill``: a historical event, recorded without starting flows."""
        return self.flag("klaviyo.backfill", "Klaviyo Backfill")

    def unique_id(self) -> str | None:
        """``klaviyo.unique_id``, else the lead's own id: a retried lead is one event."""
        return self.text("klaviyo.unique_id", "Klaviyo Unique Id") or self.text("id", "Id")

    def event_properties(self) -> dict[str, Any]:
        """The lead as it came, less the settings that steer the action."""
        return {
            key: value
            for key, value in self.values.items()
            if not key.startswith("klaviyo.") and key != "timeout_seconds"
        }

    # Profile attributes ------------------------------------------------------------------

    def profile_attributes(self, region: str) -> dict[str, Any]:
        """Klaviyo profile attributes for every mapped field the lead carries."""
        attributes: dict[str, Any] = {}
        for field in fieldmap.LEAD_FIELDS:
            value = self._field_value(field, region)
            if value is not None:
                fieldmap.set_path(attributes, field.attribute, value)
        properties = self.custom_properties()
        if properties:
            attributes["properties"] = properties
        return attributes

    def custom_properties(self) -> dict[str, Any]:
        prefix = fieldmap.CUSTOM_PREFIX
        properties = {
            key[len(prefix) :]: value
            for key, value in self.values.items()
            if key.startswith(prefix) and len(key) > len(prefix)
        }
        _check_properties(properties)
        return properties

    def _field_value(self, field: fieldmap.LeadField, region: str) -> Any:
        if field.kind == "email":
            return self.email()
        if field.kind == "phone":
            return self.phone(region)
        if field.key == "reference":
            return self.reference()
        value = self.text(field.key, field.seed_name)
        if value is None:
            return None
        if field.kind == "number":
            return _coordinate(field, value)
        if field.kind == "url" and not re.match(r"^https?://\S+$", value):
            raise outcomes.NOT_A_URL(field=field.seed_name)
        if field.max_length is not None and len(value) > field.max_length:
            raise outcomes.TOO_LONG(field=field.seed_name, limit=field.max_length)
        return value


def _evidence_value(lead: Lead, field: fieldmap.EvidenceField, value: str) -> str:
    """One evidence value as recorded, or the failure of a value of the wrong shape."""
    if field.key == "trustedform_cert_url":
        if not _TRUSTEDFORM_URL.fullmatch(value):
            raise outcomes.NOT_A_TRUSTEDFORM_URL()
        return "https://" + value.split("://", 1)[1].rstrip("/")
    if field.key == "leadid_token":
        if not _LEADID_TOKEN.fullmatch(value):
            raise outcomes.NOT_A_LEADID_TOKEN()
        return value.upper()
    if field.key == "consent_timestamp":
        moment = lead._time(field.key, field.seed_name)
        assert moment is not None
        if moment > datetime.now(UTC) + CONSENT_CLOCK_SKEW:
            raise outcomes.TIME_IN_FUTURE(field=field.seed_name)
        return moment.isoformat()
    if field.key == "ip_address":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise outcomes.NOT_AN_IP_ADDRESS() from None
    if field.key == "landing_page_url" and not re.match(r"^https?://\S+$", value):
        raise outcomes.NOT_A_URL(field=field.seed_name)
    limit = {
        "consent_language": MAX_CONSENT_LANGUAGE,
        "user_agent": MAX_USER_AGENT,
        "landing_page_url": MAX_URL,
    }[field.key]
    if len(value) > limit:
        raise outcomes.TOO_LONG(field=field.seed_name, limit=limit)
    return value


def _label(key: str) -> str:
    """A lead key as a reason names it: its display name; other keys are not quoted (a reason
    is the same text for the same cause, and a key the sender made up could hold anything)."""
    for field in fieldmap.LEAD_FIELDS:
        if field.key == key:
            return field.seed_name
    for variable in fieldmap.VARIABLES:
        if variable.key == key:
            return variable.seed_name
    for evidence in fieldmap.EVIDENCE_FIELDS:
        if evidence.key == key:
            return evidence.seed_name
    return "A custom property" if key.startswith(fieldmap.CUSTOM_PREFIX) else "A lead value"


def _check_properties(properties: Mapping[str, Any]) -> None:
    """Custom properties within the limits above; levels count as for events (the properties
    object is level 0). Iterative, so a deeply nested value cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(properties, 0)]
    while stack:
        item, level = stack.pop()
        if level > MAX_PROPERTY_NESTING:
            raise outcomes.PROPERTY_TOO_DEEP(limit=MAX_PROPERTY_NESTING)
        if isinstance(item, Mapping):
            for name, child in item.items():
                if len(str(name)) > MAX_PROPERTY_NAME:
                    raise outcomes.PROPERTY_NAME_TOO_LONG(limit=MAX_PROPERTY_NAME)
                stack.append((child, level + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, str) and len(item) > MAX_PROPERTY_TEXT:
            raise outcomes.PROPERTY_TOO_LONG(limit=MAX_PROPERTY_TEXT)


def _coordinate(field: fieldmap.LeadField, value: str) -> float:
    limit = 90.0 if field.key == "latitude" else 180.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or abs(number) > limit:
        raise outcomes.OUT_OF_RANGE(field=field.seed_name, limit=f"{limit:g}")
    return number
