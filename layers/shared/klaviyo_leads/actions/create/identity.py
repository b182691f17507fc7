"""Who a lead is, and what another request's record or a found profile means for its create.

The one rule, for every path that creates (Create Profile and Upsert Profile; one lead or a
batch; webhook, queue, EventBridge, direct, lead-file rows):

- **A person is every identifier the lead carries**: its email (without regard to case), its
  phone number (E.164) and its external id. Klaviyo holds an email or a phone number to one
  profile; the bundle holds an external id to one profile too (Klaviyo would make a second).
- **A lead any of whose identifiers belongs to another request's profile is a duplicate** of
  that profile ("already exists", naming the identifier that matched, with the profile's id);
  one that meets another request still creating waits ("in progress", retryable).
- **Only the request whose own write made a profile is told it created it.** That is a fact,
  never a guess from timestamps: Klaviyo's 201; the request's mark on the profile
  (``MARKER_PROPERTY``, a hash of what the request arrived as, written with the profile), read
  back when Klaviyo's answer to the write was lost; or the import job the request recorded.

``aws.ledger`` keeps the records; ``one`` (one lead) and ``batch`` (a queued batch) follow
these rules through Klaviyo's calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.aws.ledger_records import Holder
from klaviyo_leads.context import Context
from klaviyo_leads.lead.fields import BOOKKEEPING_PROPERTIES
from klaviyo_leads.outcomes import KlaviyoError, Result

# Klaviyo matches a new profile by these, in this order.
IDENTIFIERS = ("email", "phone_number", "external_id")
# How a reason names each identifier.
LABELS = {"email": "email", "phone_number": "phone number", "external_id": "external id"}
# The custom property a created profile carries: which request made it (a hash of the
# request's origin; no lead data). It lets a retry tell its own profile from anyone else's.
MARKER_PROPERTY = "lead_actions_created_by"
assert MARKER_PROPERTY in BOOKKEEPING_PROPERTIES  # results leave it out of ``custom``

# How soon a lead that met another request still creating its person comes back, and by how
# much that grows with each delivery of a queued lead (Klaviyo's longest Retry-After caps it).
CLAIM_RETRY_SECONDS = 2.0
CLAIM_BACKOFF = 4.0
MAX_CLAIM_RETRY_SECONDS = 30.0


def normalised(identifier: str, value: str) -> str:
    """How values are compared: emails without regard to case."""
    return value.lower() if identifier == "email" else value


def identity_key(identifier: str, value: str) -> str:
    """The ledger's key for one identifier: its kind and a hash of its value (no lead data
    in the table's keys, and a fixed length whatever the value)."""
    digest = hashlib.sha256(normalised(identifier, value).encode()).hexdigest()[:40]
    return f"{identifier}:{digest}"


def identifier_of(key: str) -> str:
    return key.partition(":")[0]


@dataclass(frozen=True)
class Person:
    """The identifiers of a new profile's lead, normalised as Klaviyo stores them."""

    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None

    @classmethod
    def of(cls, attributes: dict[str, Any]) -> Person:
        values = {
            name: value
            for name in IDENTIFIERS
            if isinstance(value := attributes.get(name), str) and value
        }
        return cls(**values)

    def values(self) -> list[tuple[str, str]]:
        """(identifier, value) for each identifier the person has, in Klaviyo's order."""
        return [(name, value) for name in IDENTIFIERS if (value := getattr(self, name))]

    def identities(self) -> tuple[str, ...]:
        return tuple(identity_key(name, value) for name, value in self.values())

    def value_of(self, key: str) -> tuple[str, str]:
        for name, value in self.values():
            if identity_key(name, value) == key:
                return name, value
        raise KeyError(key)

    @property
    def policed(self) -> bool:
        """Klaviyo refuses a second profile for an email or phone (409); not for an external id."""
        return bool(self.email or self.phone_number)

    def shares(self, profile: dict[str, Any] | None) -> list[str]:
        """The identifiers the profile holds with this person's values."""
        held = (profile or {}).get("attributes") or {}
        return [
            name
            for name, value in self.values()
            if isinstance(held.get(name), str)
            and normalised(name, held[name]) == normalised(name, value)
        ]

    def is_other_person(self, profile: dict[str, Any] | None) -> bool:
        """Whether a profile found by one of this person's identifiers is someone else's:
        it holds a different email (or, between two leads without one, a different phone)."""
        held = (profile or {}).get("attributes") or {}
        for name in ("email", "phone_number"):
            mine, theirs = getattr(self, name), held.get(name)
            if mine and isinstance(theirs, str) and theirs:
                return normalised(name, mine) != normalised(name, theirs)
            if mine or theirs:
                return False
        return False


# -- what a request made ----------------------------------------------------------------------


def token(owner: str) -> str:
    """The mark a request puts on the profile it creates (a hash of its origin)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:24]


def marked(attributes: dict[str, Any], owner: str) -> dict[str, Any]:
    """The attributes to write, with the request's mark among the custom properties."""
    properties = dict(attributes.get("properties") or {})
    properties[MARKER_PROPERTY] = token(owner)
    return {**attributes, "properties": properties}


def made_by(profile: dict[str, Any] | None, owner: str) -> bool:
    """Whether this request's write made the profile: it carries the request's mark."""
    properties = ((profile or {}).get("attributes") or {}).get("properties") or {}
    return isinstance(properties, dict) and properties.get(MARKER_PROPERTY) == token(owner)


# -- what the lead is told ----------------------------------------------------------------------


def duplicate(
    reason: outcomes.Reason,
    existing_id: str | None,
    errors: list[KlaviyoError] | None = None,
    **values: Any,
) -> Result:
    """Create's failure for a profile that exists: its id in ``id`` and in the duplicate field."""
    return reason(
        profile={"type": "profile", "id": existing_id} if existing_id else None,
        errors=errors or [],
        duplicate_profile_id=existing_id,
        **values,
    )


def duplicate_of(
    person: Person,
    existing: dict[str, Any] | str | None,
    errors: list[KlaviyoError] | None = None,
    identifier: str | list[str] | None = None,
) -> Result:
    """The lead is a duplicate of ``existing`` (the profile, or only its id). The reason
    names the identifiers that matched: ``identifier`` when the ledger or a search says,
    else the ones the profile holds, else what Klaviyo's 409 can have matched (its email or
    phone number)."""
    if isinstance(existing, dict):
        profile: dict[str, Any] | None = existing
        existing_id: str | None = str(existing["id"])
    else:
        profile, existing_id = None, existing
    named = [identifier] if isinstance(identifier, str) else list(identifier or [])
    policed_names = [n for n in named if n != "external_id"]
    if (named and not policed_names) or not person.policed:
        return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, existing_id, errors)
    if policed_names:
        label = " and ".join(LABELS[n] for n in IDENTIFIERS if n in policed_names)
    elif shared := [n for n in person.shares(profile) if n != "external_id"]:
        label = " and ".join(LABELS[n] for n in shared)
    else:
        label = " or ".join(LABELS[n] for n in ("email", "phone_number") if getattr(person, n))
    return duplicate(outcomes.DUPLICATE_PROFILE, existing_id, errors, identifier=label)


def in_progress(
    ctx: Context, holder_until: float | None, now: float, job_running: bool = False
) -> Result:
    """Another request is creating the person: come back soon, and later each time (a queued
    lead has five deliveries to outwait a holder that went away), never after a hold still
    running (unless a job of its is running: that ends when Klaviyo is done with it)."""
    wait = min(MAX_CLAIM_RETRY_SECONDS, CLAIM_RETRY_SECONDS * CLAIM_BACKOFF ** (ctx.delivery - 1))
    if not job_running and holder_until and holder_until > now:
        wait = min(wait, max(1.0, holder_until - now))
    return outcomes.CREATE_IN_PROGRESS(retry_after=wait)


@dataclass(frozen=True)
class Verdict:
    """What the other requests in a lead's way mean: a result (stop), or the ones that went
    away without a profile, to look behind (the search shows what they made)."""

    result: Result | None = None
    abandoned: tuple[Holder, ...] = ()
    jobs: tuple[Holder, ...] = ()  # went away while an import job of theirs may run

    @property
    def settle_from(self) -> float | None:
        """Since when the search shows what the abandoned requests wrote (None: not known)."""
        times = [h.record.settle_from() for h in self.abandoned if h.record and h.record.wrote]
        return max(times) if times else None


def verdict(ctx: Context, person: Person, holders: tuple[Holder, ...], now: float) -> Verdict:
    """The rule for the requests holding some of the lead's identifiers, in this order: one
    that made a profile makes the lead a duplicate (the first by Klaviyo's order of
    identifiers); one still running makes it wait; the rest went away."""
    ordered = sorted(holders, key=lambda h: IDENTIFIERS.index(identifier_of(h.identity)))
    for holder in ordered:
        if holder.record and holder.record.profile_id:
            names = [identifier_of(h.identity) for h in ordered if h.owner == holder.owner]
            return Verdict(duplicate_of(person, holder.record.profile_id, identifier=names))
    running = [h for h in ordered if h.record and h.record.running(now)]
    if running:
        until = max(h.record.hold_until for h in running if h.record)
        return Verdict(in_progress(ctx, until, now))
    jobs = tuple(h for h in ordered if h.record and h.record.job_ref)
    return Verdict(abandoned=tuple(ordered), jobs=jobs)
