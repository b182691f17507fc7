"""The emulator's records: profiles, lists, segments, events, jobs and their timestamps."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STRING_ATTRIBUTES = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "ip",
    "latitude",
    "longitude",
)
NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"
SUBSCRIBED = "SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None, *, micro: bool = False) -> str | None:
    """Klaviyo's timestamp style: ``2023-06-05T14:49:54+00:00`` (consents keep microseconds)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    if not micro:
        moment = moment.replace(microsecond=0)
    return moment.isoformat()


def parse_timestamp(value: str | datetime) -> datetime:
    """Accept seeding timestamps as ISO strings (``Z`` allowed) or datetimes; naive means UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_subscriptions() -> dict[str, Any]:
    """The ``subscriptions`` block of a profile nobody has consented for yet."""
    return {
        "email": {
            "marketing": {
                "can_receive_email_marketing": False,
                "consent": NEVER_SUBSCRIBED,
                "consent_timestamp": None,
                "last_updated": None,
                "method": None,
                "method_detail": None,
                "custom_method_detail": None,
                "double_optin": None,
                "suppression": [],
                "list_suppressions": [],
            }
        },
        "sms": {
            "marketing": {
                "can_receive_sms_marketing": False,
                "consent": NEVER_SUBSCRIBED,
                "consent_timestamp": None,
                "method": None,
                "method_detail": None,
                "last_updated": None,
            },
            "transactional": {
                "can_receive_sms_transactional": False,
                "consent": NEVER_SUBSCRIBED,
                "consent_timestamp": None,
                "method": None,
                "method_detail": None,
                "last_updated": None,
            },
        },
        "mobile_push": {
            "marketing": {
                "can_receive_push_marketing": False,
                "consent": NEVER_SUBSCRIBED,
                "consent_timestamp": None,
            }
        },
    }


@dataclass
class Profile:
    id: str
    created: datetime
    updated: datetime
    attributes: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(STRING_ATTRIBUTES))
    location: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(LOCATION_FIELDS))
    properties: dict[str, Any] = field(default_factory=dict)
    last_event_date: datetime | None = None
    subscriptions: dict[str, Any] = field(default_factory=new_subscriptions)

    @property
    def email(self) -> str | None:
        value = self.attributes.get("email")
        return value if isinstance(value, str) else None

    @property
    def phone_number(self) -> str | None:
        value = self.attributes.get("phone_number")
        return value if isinstance(value, str) else None

    @property
    def external_id(self) -> str | None:
        value = self.attributes.get("external_id")
        return value if isinstance(value, str) else None

    def has_identifier(self) -> bool:
        return any(self.attributes.get(k) for k in ("email", "phone_number", "external_id"))

    def clone(self) -> Profile:
        return copy.deepcopy(self)

    def search_snapshot(self) -> Profile:
        """A copy of what filtered search reads (``handlers._profile_field``): id, the
        string attributes, created, updated and the email suppressions. Much cheaper than
        :meth:`clone`, which matters when a benchmark seeds 100,000 profiles."""
        marketing = self.subscriptions["email"]["marketing"]
        suppressions = {
            name: [dict(entry) for entry in marketing[name]]
            for name in ("suppression", "list_suppressions")
        }
        return Profile(
            id=self.id,
            created=self.created,
            updated=self.updated,
            attributes=dict(self.attributes),
            location={},
            properties={},
            last_event_date=self.last_event_date,
            subscriptions={"email": {"marketing": suppressions}},
        )


@dataclass
class KlaviyoList:
    id: str
    name: str
    opt_in: str  # "single" or "double"
    created: datetime
    updated: datetime
    members: dict[str, datetime] = field(default_factory=dict)  # profile id -> joined at


@dataclass
class Segment:
    id: str
    name: str
    created: datetime
    updated: datetime
    members: dict[str, datetime] = field(default_factory=dict)
    # Rule-based segments: membership follows this predicate over profile attributes.
    predicate: Callable[[Mapping[str, Any]], bool] | None = None
    # A segment defined as "is in list X" (the spec's ProfileHasGroupMembershipCondition):
    # membership follows that list's.
    member_of_list: str | None = None
    is_active: bool = True
    is_processing: bool = False
    is_starred: bool = False


@dataclass
class ImportItem:
    """One profile of a bulk import job, as sent and as checked at submission."""

    index: int  # position in ``profiles.data``, for import-error pointers
    original: dict[str, Any]  # the profile object as sent (``original_payload``)
    profile_id: str | None
    attributes: dict[str, Any]  # null values already dropped (the import clears nothing)
    meta: dict[str, Any]


@dataclass
class ImportFailure:
    """An ``import-error`` resource: why one profile of a job was not imported."""

    id: str
    code: str
    title: str
    detail: str
    pointer: str | None
    original_payload: dict[str, Any] | None


@dataclass
class ImportJob:
    id: str
    created_at: datetime
    items: list[ImportItem]
    list_ids: list[str]
    status: str = "queued"  # the spec's enum: queued, processing, complete (cancelled unused)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    completed_count: int = 0
    failed_count: int = 0
    profile_ids: dict[str, None] = field(default_factory=dict)  # created/updated, in order
    failures: list[ImportFailure] = field(default_factory=list)

    @property
    def total_count(self) -> int:
        return len(self.items)


@dataclass
class ChannelConsent:
    """One channel/message type a subscribe job asks for, e.g. ("email", "marketing")."""

    channel: str
    message_type: str
    consented_at: datetime | None = None


@dataclass
class ProfileSubscription:
    profile_id: str | None
    email: str | None
    phone_number: str | None
    consents: list[ChannelConsent]
    age_gated_date_of_birth: str | None = None


@dataclass
class SubscribeJob:
    job_number: int
    profiles: list[ProfileSubscription]
    list_id: str | None
    custom_source: str | None
    historical_import: bool


@dataclass
class ProfileUnsubscription:
    """One profile of an unsubscribe job: its identifiers and (channel, message type)s."""

    email: str | None
    phone_number: str | None
    channels: list[tuple[str, str]]


@dataclass
class UnsubscribeJob:
    profiles: list[ProfileUnsubscription]
    list_id: str | None


@dataclass
class Event:
    """An event as Klaviyo recorded it (after de-duplication)."""

    id: str
    metric: str
    service: str | None
    profile_id: str
    properties: dict[str, Any]
    time: datetime
    value: float | int | None
    value_currency: str | None
    unique_id: str | None  # as sent; None when the time stood in for it
    backfill: bool
    received: datetime
