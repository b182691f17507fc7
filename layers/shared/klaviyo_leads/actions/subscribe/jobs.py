"""Consent jobs: one profile's subscription or unsubscription, and the jobs that carry up to
1,000 (100 to unsubscribe) of them, split until a profile Klaviyo refuses stands alone."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.create.adding import hold_back
from klaviyo_leads.actions.lookup import Group
from klaviyo_leads.context import Context
from klaviyo_leads.outcomes import KlaviyoError, Result, from_klaviyo_answer, unknown_target

SUBSCRIBED, UNSUBSCRIBED = "SUBSCRIBED", "UNSUBSCRIBED"


@dataclass(frozen=True)
class Jobs:
    """A kind of consent job: where it goes, what it is called, how many profiles it takes."""

    path: str
    type: str
    max_profiles: int
    consent: str


SUBSCRIBE = Jobs(
    "/api/profile-subscription-bulk-create-jobs",
    "profile-subscription-bulk-create-job",
    1000,
    SUBSCRIBED,
)


UNSUBSCRIBE = Jobs(
    "/api/profile-subscription-bulk-delete-jobs",
    "profile-subscription-bulk-delete-job",
    100,
    UNSUBSCRIBED,
)


# channel -> (the profile attribute it needs, how a reason calls it)
CHANNEL_NEEDS = {"email": ("email", "an email address"), "sms": ("phone_number", "a phone number")}


_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")


Results = list[Result | None]


@dataclass(frozen=True)
class Subscription:
    """One profile's part of a subscribe job, checked and ready to send."""

    channels: tuple[str, ...]
    email: str | None
    phone_number: str | None
    profile_id: str | None
    group: Group | None
    custom_source: str | None
    sms_refused: bool = False
    jobs: Jobs = SUBSCRIBE
    # The opt-in process that applies: the list's, else the account's (``Settings``).
    opt_in_process: str | None = None
    # Consent given in the past (Klaviyo's historical import): no confirmation, no flow.
    historical: bool = False
    consented_at: datetime | None = None
    evidence: Mapping[str, str] = field(default_factory=dict)
    origin: str | None = None  # what the lead arrived as: its job is remembered by it
    delivery: int = 1  # the lead's delivery: a lead held back comes back later each time

    @property
    def list_id(self) -> str | None:
        return self.group.id if self.group else None

    def payload(self) -> dict[str, Any]:
        marketing: dict[str, Any] = {"consent": self.jobs.consent}
        if self.historical and self.consented_at is not None:
            marketing["consented_at"] = self.consented_at.isoformat()
        attributes: dict[str, Any] = {
            "subscriptions": {c: {"marketing": marketing} for c in self.channels}
        }
        if self.email:
            attributes["email"] = self.email
        if "sms" in self.channels:
            attributes["phone_number"] = self.phone_number
        item: dict[str, Any] = {"type": "profile", "attributes": attributes}
        if self.profile_id and self.jobs is SUBSCRIBE:  # an unsubscribe names no profile id
            item["id"] = self.profile_id
        return item

    def without_sms(self) -> Subscription:
        return replace(
            self, channels=tuple(c for c in self.channels if c != "sms"), sms_refused=True
        )

    def accepted(self) -> Result:
        """An unsubscribe's result once Klaviyo accepted the job."""
        return outcomes.success(list_name=self.group.name if self.group else None)


def job(subscriptions: list[Subscription]) -> dict[str, Any]:
    """One consent job for profiles that share a list (and, to subscribe, a custom source
    and whether the consent is historical)."""
    first = subscriptions[0]
    attributes: dict[str, Any] = {"profiles": {"data": [s.payload() for s in subscriptions]}}
    if first.jobs is SUBSCRIBE:
        attributes["historical_import"] = first.historical
        if first.custom_source:
            attributes["custom_source"] = first.custom_source
    body: dict[str, Any] = {"type": first.jobs.type, "attributes": attributes}
    if first.list_id:
        body["relationships"] = {"list": {"data": {"type": "list", "id": first.list_id}}}
    return {"data": body}


Item = tuple[int, Subscription]


@dataclass
class Sink:
    """Where a job's answer goes: a result per lead, or (a subscribe Klaviyo took) the
    subscription as it was sent, to be read back."""

    results: Results
    sent: dict[int, Subscription] | None = None

    def taken(self, index: int, subscription: Subscription) -> None:
        if subscription.jobs is SUBSCRIBE and self.sent is not None:
            self.sent[index] = subscription
        else:
            self.results[index] = subscription.accepted()


def send_jobs(ctx: Context, items: list[Item], results: Results) -> None:
    """Send every unsubscribe item (one list) in as few jobs as allowed; one result each."""
    send_all(ctx, items, Sink(results))


def send_all(ctx: Context, items: list[Item], sink: Sink) -> None:
    """Every item (one kind, list and source) in as few jobs as allowed. A job makes the
    profiles it does not find: the identifiers are marked as touched first, and a lead whose
    person a create is still making waits for it (its import would take the job's profile
    for its own)."""
    size = items[0][1].jobs.max_profiles if items else 1
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        held = hold_back(
            ctx,
            {index: [("email", s.email), _phone_of(s)] for index, s in chunk},
            {index: s.delivery for index, s in chunk},
        )
        for index, result in held.items():
            sink.results[index] = result
        if going := [(index, s) for index, s in chunk if index not in held]:
            _send(ctx, going, sink)


def _phone_of(subscription: Subscription) -> tuple[str, str | None]:
    return ("phone_number", subscription.phone_number if "sms" in subscription.channels else None)


def _send(ctx: Context, chunk: list[Item], sink: Sink) -> None:
    try:
        response = ctx.call(
            "POST",
            chunk[0][1].jobs.path,
            body=job([s for _, s in chunk]),
            expect=(202,),
            handled=(400,),
        )
    except Result as problem:
        for index, _ in chunk:
            sink.results[index] = problem
        return
    if response.status == 202:
        for index, subscription in chunk:
            sink.taken(index, subscription)
        return
    _rejected(ctx, chunk, response.errors, sink)


def _rejected(ctx: Context, chunk: list[Item], errors: list[KlaviyoError], sink: Sink) -> None:
    """A 400 for a job: give the profiles it names their own result, send the rest again."""
    named: dict[int, list[KlaviyoError]] = {}
    for error in errors:
        found = _PROFILE_POINTER.match(error.pointer or "")
        if found and int(found.group(1)) < len(chunk):
            named.setdefault(int(found.group(1)), []).append(error)
    if named:
        for position, own in named.items():
            _alone(ctx, chunk[position], own, sink)
        rest = [item for position, item in enumerate(chunk) if position not in named]
        if rest:
            _send(ctx, rest, sink)
        return
    if chunk[0][1].list_id and any("list" in (e.detail or "").lower() for e in errors):
        for index, _ in chunk:
            sink.results[index] = unknown_target("list", 400, errors)
        return
    if _refuses_sms(errors):
        with_sms = [item for item in chunk if "sms" in item[1].channels]
        others = [item for item in chunk if "sms" not in item[1].channels]
        if others and with_sms:
            _send(ctx, others, sink)
            chunk = with_sms
    if len(chunk) == 1:
        _alone(ctx, chunk[0], errors, sink)
        return
    middle = len(chunk) // 2
    _send(ctx, chunk[:middle], sink)
    _send(ctx, chunk[middle:], sink)


def _alone(ctx: Context, item: Item, errors: list[KlaviyoError], sink: Sink) -> None:
    """The profile Klaviyo refused: without SMS if SMS was the trouble, else its failure."""
    index, subscription = item
    if _refuses_sms(errors) and "sms" in subscription.channels:
        if len(subscription.channels) > 1:
            _send(ctx, [(index, subscription.without_sms())], sink)
        else:
            sink.results[index] = outcomes.SMS_REFUSED(errors=errors, klaviyo_status=400)
        return
    sink.results[index] = from_klaviyo_answer(400, errors)


def _refuses_sms(errors: list[KlaviyoError]) -> bool:
    """Klaviyo's refusal of SMS consent: the number's country, age gating, SMS not set up.

    Observed: "'phone_number' must not be empty when the sms channel is included in
    'subscriptions'." for a valid number the account cannot text.
    """
    details = " ".join(e.detail or "" for e in errors).lower()
    return "sms" in details or "age_gated" in details
