"""Subscribing and unsubscribing profiles: consent jobs, and a result for each profile.

One lead or a thousand go through the same ``subscribe_all`` (and ``send_jobs``): Klaviyo
refuses a job as a whole when one of its profiles is wrong, so the job is split until the
wrong one stands alone. SMS is where Klaviyo says no most often (a number whose country the
account cannot text, age gating, SMS not set up), and its answer names no profile. A profile
whose SMS Klaviyo refuses still gets its email consent (it is sent again without SMS), and
the lead fails saying SMS was not applied. A subscribe's result is what Klaviyo shows after
the job (``consent``), not the job's 202; its consent evidence goes with it (``evidence``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.create.identity import touch
from klaviyo_leads.actions.profiles import Group, find_profile, klaviyo_list
from klaviyo_leads.actions.subscribe import consent, evidence
from klaviyo_leads.actions.subscribe.consent import Accepted
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
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


def prepare(ctx: Context, lead: Lead) -> Subscription:
    """Check the lead and work out channels and identifiers (may read the profile).

    Only what the chosen channels use is checked: an unusable phone does not fail an email
    subscription, and fails one that asks for SMS (naming the channel; never narrowed to
    email). Without ``klaviyo.channels`` the lead subscribes its email, or else its phone
    to SMS; SMS marketing needs its own consent and is never added silently.
    """
    list_id = lead.list_id()
    # An unknown list is a configuration error, said clearly before anything is sent.
    group = klaviyo_list(ctx, list_id) if list_id is not None else None
    historical = lead.historical_import()
    consented_at = lead.consented_at()
    if historical and consented_at is None:
        raise outcomes.CONSENTED_AT_MISSING()
    proof = lead.consent_evidence()
    custom_source = evidence.consent_source(lead.custom_source(), proof)
    region = ctx.settings.default_phone_region
    readers: dict[str, Callable[[], str | None]] = {
        "email": lead.email,
        "sms": lambda: _phone_for_sms(lead, region),
    }
    wanted = lead.channels() or _default_channels("email" in lead, "phone_1" in lead)
    known = {channel: readers[channel]() for channel in wanted}
    profile_id = None
    lacking = not wanted or not all(known.values())
    if lacking and ("klaviyo.id" in lead or lead.external_id()):
        profile = find_profile(ctx, lead)
        if profile is None:
            raise outcomes.NO_PROFILE()
        profile_id = profile["id"]
        stored = profile.get("attributes") or {}
        wanted = wanted or _default_channels(
            bool(stored.get("email")), bool(stored.get("phone_number"))
        )
        known = {c: known.get(c) or stored.get(CHANNEL_NEEDS[c][0]) for c in wanted}
    if not wanted:
        raise outcomes.NOTHING_TO_SUBSCRIBE()
    for channel in wanted:
        if not known[channel]:
            raise outcomes.CHANNEL_NEEDS(channel=channel, needs=CHANNEL_NEEDS[channel][1])
    email = known.get("email") or _usable_email(lead)  # identifies the profile for SMS too
    return Subscription(
        wanted,
        email,
        known.get("sms"),
        profile_id,
        group,
        custom_source,
        opt_in_process=group.opt_in_process if group else ctx.settings.account_opt_in_process,
        historical=historical,
        consented_at=consented_at,
        evidence=proof,
        origin=ctx.origin_id,
    )


def _phone_for_sms(lead: Lead, region: str) -> str | None:
    """The lead's phone for the SMS channel; a bad one fails naming the channel."""
    try:
        return lead.phone(region)
    except Result as problem:
        raise outcomes.CHANNEL_NEEDS_VALID(
            channel="sms", needs="phone number", problem=problem.reason
        ) from None


def _default_channels(has_email: bool, has_phone: bool) -> tuple[str, ...]:
    return ("email",) if has_email else ("sms",) if has_phone else ()


def _usable_email(lead: Lead) -> str | None:
    """The lead's email when it is valid; an SMS-only subscription does not fail on it."""
    try:
        return lead.email()
    except Result:
        return None


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


def subscribe_all(ctx: Context, items: list[Item], results: Results) -> None:
    """Subscribe each lead, one or a batch: its job sent once however often the lead comes
    (an earlier attempt's job is read back, not sent again), its evidence recorded, then
    its result from what Klaviyo shows (``consent.confirm``)."""
    accepted: dict[int, Accepted] = {}
    groups: dict[tuple[str | None, str | None, bool], list[Item]] = defaultdict(list)
    for index, subscription in items:
        before = consent.earlier(ctx, subscription)
        if before is not None:
            accepted[index] = before
        else:
            key = (subscription.list_id, subscription.custom_source, subscription.historical)
            groups[key].append((index, subscription))
    sent: dict[int, Subscription] = {}
    for members in groups.values():
        _send_all(ctx, members, _Sink(results, sent))
    now = ctx.wall()
    for index, subscription in sent.items():
        accepted[index] = Accepted(subscription, now)
        consent.remember(ctx, accepted[index])
    evidence.record(ctx, [(i, a.subscription) for i, a in accepted.items()], results)
    consent.confirm(ctx, {i: a for i, a in accepted.items() if results[i] is None}, results)


@dataclass
class _Sink:
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
    _send_all(ctx, items, _Sink(results))


def _send_all(ctx: Context, items: list[Item], sink: _Sink) -> None:
    """Every item (one kind, list and source) in as few jobs as allowed. A job makes the
    profiles it does not find: the identifiers are marked as touched first."""
    size = items[0][1].jobs.max_profiles if items else 1
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        touch(ctx, [pair for _, s in chunk for pair in (("email", s.email), _phone_of(s))])
        _send(ctx, chunk, sink)


def _phone_of(subscription: Subscription) -> tuple[str, str | None]:
    return ("phone_number", subscription.phone_number if "sms" in subscription.channels else None)


def _send(ctx: Context, chunk: list[Item], sink: _Sink) -> None:
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


def _rejected(ctx: Context, chunk: list[Item], errors: list[KlaviyoError], sink: _Sink) -> None:
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


def _alone(ctx: Context, item: Item, errors: list[KlaviyoError], sink: _Sink) -> None:
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


def subscribe_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Subscribe a profile to email and/or SMS marketing, optionally through a list: the
    result says what Klaviyo holds once the job has applied."""
    results: Results = [None]
    subscribe_all(ctx, [(0, prepare(ctx, lead))], results)
    assert results[0] is not None
    return results[0]


# -- Unsubscribe Profile -------------------------------------------------------------------


def prepare_unsubscribe(ctx: Context, lead: Lead) -> Subscription:
    """Channels to unsubscribe: those asked for, else every one the lead names (no default
    that could surprise); only what they use is checked."""
    list_id = lead.list_id()
    group = klaviyo_list(ctx, list_id) if list_id is not None else None
    region = ctx.settings.default_phone_region
    readers: dict[str, Callable[[], str | None]] = {
        "email": lead.email,
        "sms": lambda: lead.phone(region),
    }
    wanted = lead.channels() or _named_channels("email" in lead, "phone_1" in lead)
    known = {channel: readers[channel]() for channel in wanted}
    lacking = not wanted or not all(known.values())
    if lacking and ("klaviyo.id" in lead or lead.external_id()):
        profile = find_profile(ctx, lead)
        if profile is None:
            raise outcomes.NO_PROFILE()
        stored = profile.get("attributes") or {}
        wanted = wanted or _named_channels(
            bool(stored.get("email")), bool(stored.get("phone_number"))
        )
        known = {c: known.get(c) or stored.get(CHANNEL_NEEDS[c][0]) for c in wanted}
    if not wanted:
        raise outcomes.NOTHING_TO_UNSUBSCRIBE()
    for channel in wanted:
        if not known[channel]:
            raise outcomes.CHANNEL_NEEDS(channel=channel, needs=CHANNEL_NEEDS[channel][1])
    return Subscription(
        wanted, known.get("email"), known.get("sms"), None, group, None, jobs=UNSUBSCRIBE
    )


def _named_channels(has_email: bool, has_phone: bool) -> tuple[str, ...]:
    return tuple(c for c, named in (("email", has_email), ("sms", has_phone)) if named)


def only_list_members(ctx: Context, items: list[Item], results: Results) -> list[Item]:
    """Items whose profile is on their list, each with its profile's id. Klaviyo unsubscribes
    a profile that is not on the list from everything, so those fail instead of being sent."""
    by_list: dict[str, list[Item]] = {}
    for item in items:
        if item[1].list_id:
            by_list.setdefault(item[1].list_id, []).append(item)
    keep = [item for item in items if not item[1].list_id]
    for list_id, on_list in by_list.items():
        members = {
            name: lookup.list_members_by(ctx, list_id, name, [v for v, _ in asked])
            for name, asked in _asked_by(on_list).items()
            if asked
        }
        for index, subscription in on_list:
            name, value = _identity(subscription)
            profile_id = members.get(name, {}).get(lookup.key(name, value)) if value else None
            if profile_id:
                keep.append((index, replace(subscription, profile_id=profile_id)))
            else:
                results[index] = outcomes.NOT_A_LIST_MEMBER(
                    list_name=subscription.group.name if subscription.group else None
                )
    return keep


def _identity(subscription: Subscription) -> tuple[str, str | None]:
    if subscription.email:
        return "email", subscription.email
    return "phone_number", subscription.phone_number


def _asked_by(items: list[Item]) -> dict[str, list[tuple[str, int]]]:
    asked: dict[str, list[tuple[str, int]]] = {"email": [], "phone_number": []}
    for index, subscription in items:
        name, value = _identity(subscription)
        if value:
            asked[name].append((value, index))
    return asked


def unsubscribe_profile(ctx: Context, lead: Lead) -> Result:
    """Revoke email and/or SMS marketing consent, for one list or the whole account."""
    results: Results = [None]
    items = only_list_members(ctx, [(0, prepare_unsubscribe(ctx, lead))], results)
    if items:
        send_jobs(ctx, items, results)
    assert results[0] is not None
    return results[0]
