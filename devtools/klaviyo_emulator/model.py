"""The emulator's records: profiles, lists, segments and their timestamps."""

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
    is_active: bool = True
    is_processing: bool = False
    is_starred: bool = False
