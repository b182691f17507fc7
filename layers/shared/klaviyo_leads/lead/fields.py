"""The field mapping: one table for lead fields, one for the fields a result appends.

Both directions use these tables: building Klaviyo payloads from a lead, and reading a
Klaviyo profile back into the flat result. The README's tables are checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LeadField:
    """A lead-platform field (or configuration variable) that becomes a profile attribute."""

    key: str  # the lead's key, dotted
    seed_name: str  # the name the lead platform shows
    attribute: str  # the Klaviyo profile attribute, dotted for location.*
    kind: str = "text"  # text | email | phone | number | url
    max_length: int | None = None  # only where Klaviyo documents a limit


# Contract section 3, "Lead fields", then the variables that are profile attributes too.
LEAD_FIELDS: tuple[LeadField, ...] = (
    LeadField("email", "Email", "email", kind="email", max_length=100),
    LeadField("phone_1", "Phone 1", "phone_number", kind="phone"),
    LeadField("reference", "Reference", "external_id", max_length=255),
    LeadField("first_name", "First Name", "first_name"),
    LeadField("last_name", "Last Name", "last_name"),
    LeadField("company.name", "Company Name", "organization"),
    LeadField("title", "Title", "title"),
    LeadField("address_1", "Address 1", "location.address1"),
    LeadField("address_2", "Address 2", "location.address2"),
    LeadField("city", "City", "location.city"),
    LeadField("state", "State", "location.region"),
    LeadField("postal_code", "Postal Code", "location.zip"),
    LeadField("country", "Country", "location.country"),
    LeadField("latitude", "Latitude", "location.latitude", kind="number"),
    LeadField("longitude", "Longitude", "location.longitude", kind="number"),
    LeadField("klaviyo.photo_url", "Klaviyo Photo Url", "image", kind="url", max_length=2048),
    LeadField("klaviyo.timezone", "Klaviyo Timezone", "location.timezone", max_length=64),
)

CUSTOM_PREFIX = "klaviyo.custom."


@dataclass(frozen=True)
class Variable:
    """A configuration variable: steers an action, is not sent as a profile attribute."""

    key: str
    seed_name: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "klaviyo.list_id",
        "Klaviyo List Id",
        "list for Add, Remove, Subscribe and Unsubscribe (optional for the last two)",
    ),
    Variable("klaviyo.segment_id", "Klaviyo Segment Id", "segment for Get Segment Profiles"),
    Variable("klaviyo.id", "Klaviyo Id", "Klaviyo profile id"),
    Variable("klaviyo.external_id", "Klaviyo External Id", "external id to search by"),
    Variable("klaviyo.identifier", "Klaviyo Identifier", "which identifier finds the profile"),
    Variable(
        "klaviyo.profile_handling",
        "Klaviyo Profile Handling",
        "which profile to act on when several match",
    ),
    Variable("klaviyo.custom.<name>", "Klaviyo Custom", "custom profile property <name>"),
    Variable("klaviyo.channels", "Klaviyo Channels", "consent channels: email, sms"),
    Variable("klaviyo.metric_name", "Klaviyo Metric Name", "Track Event's metric (Lead Received)"),
    Variable("klaviyo.event_value", "Klaviyo Event Value", "Track Event's numeric value"),
    Variable("klaviyo.event_time", "Klaviyo Event Time", "when the event happened (ISO 8601)"),
    Variable("klaviyo.unique_id", "Klaviyo Unique Id", "Track Event's de-duplication key"),
    Variable("klaviyo.custom_source", "Klaviyo Custom Source", "consent source"),
    Variable(
        "klaviyo.historical_import",
        "Klaviyo Historical Import",
        "Subscribe: consent given in the past (no confirmation message, no flow)",
    ),
    Variable(
        "klaviyo.consented_at",
        "Klaviyo Consented At",
        "with a historical import: when the consent was given (ISO 8601)",
    ),
    Variable(
        "klaviyo.backfill",
        "Klaviyo Backfill",
        "Track Event: a historical event that starts no flow",
    ),
    Variable("timeout_seconds", "Timeout Seconds", "time budget for this lead (default 360)"),
)


@dataclass(frozen=True)
class EvidenceField:
    """Proof of consent a lead may carry. Subscribe records it (docs/actions.md, "Consent
    evidence"); it is never a profile attribute."""

    key: str
    seed_name: str
    meaning: str
    # Other names lead forms and platforms send it under (TrustedForm's and Jornaya's own
    # hidden fields), read as this field.
    aliases: tuple[str, ...] = ()


EVIDENCE_FIELDS: tuple[EvidenceField, ...] = (
    EvidenceField(
        "trustedform_cert_url",
        "TrustedForm Certificate URL",
        "the TrustedForm certificate of the form the person filled in",
        aliases=("xxTrustedFormCertUrl",),
    ),
    EvidenceField(
        "leadid_token",
        "LeadiD Token",
        "the Jornaya LeadiD of the session",
        aliases=("universal_leadid", "jornaya_leadid"),
    ),
    EvidenceField(
        "consent_language", "Consent Language", "the disclosure text the person agreed to"
    ),
    EvidenceField("consent_timestamp", "Consent Timestamp", "when they agreed (ISO 8601)"),
    EvidenceField("ip_address", "IP Address", "where: the person's IP address"),
    EvidenceField("user_agent", "User Agent", "how: the person's browser"),
    EvidenceField("landing_page_url", "Landing Page URL", "where: the page of the form"),
)


@dataclass(frozen=True)
class ResultField:
    """A field a result appends, and where it comes from in Klaviyo's profile resource."""

    key: str
    seed_name: str
    source: str  # dotted path into the resource; [0] picks the first item of a list


_EMAIL = "attributes.subscriptions.email.marketing"
_SMS = "attributes.subscriptions.sms.marketing"

# Contract section 5; outcome, reason and errors are set by every action.
PROFILE_RESULT_FIELDS: tuple[ResultField, ...] = (
    ResultField("type", "Type", "type"),
    ResultField("id", "Id", "id"),
    ResultField("reference", "Reference", "attributes.external_id"),
    ResultField("anonymous_id", "Anonymous Id", "attributes.anonymous_id"),
    ResultField("list_name", "List Name", ""),  # the list or segment the action used
    ResultField("created_time", "Created Time", "attributes.created"),
    ResultField("updated_time", "Updated Time", "attributes.updated"),
    ResultField("last_event_date", "Last Event Date", "attributes.last_event_date"),
    ResultField("custom", "Custom *", "attributes.properties"),
    ResultField(
        "email_marketing_consent_status", "Email Marketing Consent Status", f"{_EMAIL}.consent"
    ),
    ResultField(
        "email_marketing_subscription_method",
        "Email Marketing Subscription Method",
        f"{_EMAIL}.method",
    ),
    ResultField(
        "email_marketing_subscription_suppression_reason",
        "Email Marketing Subscription Suppression Reason",
        f"{_EMAIL}.suppression[0].reason",
    ),
    ResultField(
        "email_marketing_subscription_suppression_timestamp",
        "Email Marketing Subscription Suppression Timestamp",
        f"{_EMAIL}.suppression[0].timestamp",
    ),
    ResultField(
        "email_marketing_suppression_list_id",
        "Email Marketing Suppression List Id",
        f"{_EMAIL}.list_suppressions[0].list_id",
    ),
    ResultField(
        "email_marketing_suppression_list_reason",
        "Email Marketing Suppression List Reason",
        f"{_EMAIL}.list_suppressions[0].reason",
    ),
    ResultField(
        "email_marketing_suppression_list_timestamp",
        "Email Marketing Suppression List Timestamp",
        f"{_EMAIL}.list_suppressions[0].timestamp",
    ),
    ResultField("sms_marketing_consent_status", "Sms Marketing Consent Status", f"{_SMS}.consent"),
    ResultField("sms_marketing_timestamp", "Sms Marketing Timestamp", f"{_SMS}.consent_timestamp"),
    ResultField("sms_marketing_method", "Sms Marketing Method", f"{_SMS}.method"),
    ResultField(
        "sms_marketing_method_details", "Sms Marketing Method Details", f"{_SMS}.method_detail"
    ),
    # Each channel's consent in one word (``consent_state``); Subscribe says what its
    # request came to (pending, not applied, not confirmed yet) where the profile cannot.
    ResultField("email_consent", "Email Consent", ""),
    ResultField("sms_consent", "Sms Consent", ""),
    ResultField("self_links", "Self Links", "links.self"),
)

COMMON_RESULT_FIELDS: tuple[ResultField, ...] = (
    ResultField("outcome", "Outcome", ""),
    ResultField("reason", "Reason", ""),
    ResultField("errors", "Errors Id / Code / Title / Detail", "errors[]"),
    ResultField("message_id", "Message Id", ""),  # the queue message of a lead queued for retry
    ResultField("ignored_fields", "Ignored Fields", ""),  # the lead's keys the action did not read
)


def read_path(resource: Any, path: str) -> Any:
    """Follow a dotted path (``a.b[0].c``) into a JSON value; None where it leads nowhere."""
    value = resource
    for part in path.split("."):
        index = None
        if part.endswith("[0]"):
            part, index = part[:-3], 0
        if not isinstance(value, dict):
            return None
        value = value.get(part)
        if index is not None:
            value = value[index] if isinstance(value, list) and value else None
    return value


# A channel's consent in one word, as the results and the consent report show it.
SUBSCRIBED = "subscribed"
PENDING = "pending"  # double opt-in waiting for the person (Subscribe knows; a profile cannot)
SUPPRESSED = "suppressed"  # email: a suppression keeps marketing from it
UNSUBSCRIBED = "unsubscribed"
NEVER_SUBSCRIBED = "never_subscribed"
NOT_APPLIED = "not_applied"  # Subscribe: Klaviyo refused the channel
NOT_CONFIRMED = "not_confirmed"  # Subscribe: accepted, not yet seen applied
CONSENT_CHANNELS = ("email", "sms")


def consent_state(resource: dict[str, Any] | None, channel: str) -> str | None:
    """What a profile read with its ``subscriptions`` says of one channel's marketing: can it
    be sent to (subscribed), is it held back (email: suppressed), or what its consent is."""
    marketing = read_path(resource, f"attributes.subscriptions.{channel}.marketing")
    if not isinstance(marketing, dict):
        return None
    if channel == "email" and marketing.get("suppression"):
        return SUPPRESSED
    consent = marketing.get("consent")
    return consent.lower() if isinstance(consent, str) and consent else None


# The custom property a profile the bundle created carries (which request made it): the
# bundle's own bookkeeping, left out of the ``custom`` field a result appends.
BOOKKEEPING_PROPERTIES = frozenset({"lead_actions_created_by"})


def profile_fields(resource: dict[str, Any] | None, list_name: str | None) -> dict[str, Any]:
    """The profile part of a result: every profile field, None where Klaviyo has no value."""
    fields: dict[str, Any] = {}
    for field in PROFILE_RESULT_FIELDS:
        if field.key == "list_name":
            fields[field.key] = list_name
        elif field.key.endswith("_consent"):
            fields[field.key] = consent_state(resource, field.key.removesuffix("_consent"))
        else:
            fields[field.key] = read_path(resource, field.source) if resource else None
    custom = fields.get("custom")
    if isinstance(custom, dict) and BOOKKEEPING_PROPERTIES & custom.keys():
        fields["custom"] = {k: v for k, v in custom.items() if k not in BOOKKEEPING_PROPERTIES}
    return fields


def set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``location.city`` style paths in a nested attributes dict."""
    *parents, leaf = dotted.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value
