"""What Klaviyo holds after a subscribe: the consent read back, channel by channel.

Klaviyo answers a subscribe job 202 and applies it later, and may apply less than was
asked: a double opt-in list leaves the consent pending until the person confirms, and a
hard-bounced or invalid address stays suppressed (no subscribe lifts that). So a subscribe's
result is not the job's 202 but what the profile shows afterwards, read back in bulk (one
``any()`` search of up to 100 profiles with their ``subscriptions``) until every channel has
settled or the lead's time is up:

- **subscribed**: Klaviyo holds the consent and can send;
- **pending**: a double opt-in waits for the person (Klaviyo shows nothing of it on the
  profile: known from the list's, or the account's, opt-in process);
- **suppressed**: the email consent was not applied (``HARD_BOUNCE``, ``INVALID_EMAIL``);
- **not confirmed**: accepted, not seen applied yet. The lead comes back to look again (a
  webhook is answered "accepted, not yet confirmed" and its confirmation is queued), and a
  consent still not applied ``CONFIRM_WINDOW_SECONDS`` after Klaviyo took it is not applied.

A lead's job is remembered (``remember``) so that its next attempt looks instead of sending
the job again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.aws.ledger_records import LedgerUnavailable
from klaviyo_leads.context import Context
from klaviyo_leads.lead.fields import (
    NOT_APPLIED,
    NOT_CONFIRMED,
    PENDING,
    SUBSCRIBED,
    SUPPRESSED,
    consent_state,
    read_path,
)
from klaviyo_leads.outcomes import Result

if TYPE_CHECKING:
    from klaviyo_leads.actions.subscribe.jobs import Subscription

# Seconds before each read after Klaviyo took the job: at once (a job may be applied by the
# time its answer is read; one search for a whole batch), then 1, 1, 2, 3, 5... s apart; at
# most MAX_READ_BACK_SECONDS in all, within the budget.
READ_BACK_AFTER = (0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 15.0, 20.0, 20.0, 20.0)
MAX_READ_BACK_SECONDS = 120.0
# Kept back from the budget for the last read and the answer.
READ_MARGIN_SECONDS = 1.5
# A consent not seen applied this long after Klaviyo took it is reported not applied. (A
# queued lead comes back 30 s, 2 min, 10 min and 30 min later: its fourth return ends it.)
CONFIRM_WINDOW_SECONDS = 30 * 60.0
# Suppressions no subscribe lifts (Klaviyo lifts UNSUBSCRIBE, SPAM_REPORT, USER_SUPPRESSED).
KEPT_SUPPRESSIONS = frozenset({"HARD_BOUNCE", "INVALID_EMAIL"})
DOUBLE_OPT_IN = "double_opt_in"
JOB_REF = "subscribe:"  # the ledger's record of a lead's accepted job: JOB_REF + its origin


@dataclass(frozen=True)
class Accepted:
    """A lead's consent as Klaviyo took it: the subscription sent, and when."""

    subscription: Subscription
    at: float  # wall-clock seconds


# -- one attempt after another ------------------------------------------------------------------


def remember(ctx: Context, accepted: Accepted) -> None:
    """Keep that the lead's job was taken, so another attempt of it looks rather than sends.
    Best effort: without the record a later attempt sends the job again (the same consent)."""
    origin = accepted.subscription.origin
    if ctx.ledger is None or not origin:
        return
    channels = ",".join(accepted.subscription.channels)
    ctx.ledger.job_taken(JOB_REF + origin, f"{accepted.at:.3f} {channels}")


def earlier(ctx: Context, subscription: Subscription) -> Accepted | None:
    """The job an earlier attempt of this lead got Klaviyo to take, if one did."""
    if ctx.ledger is None or not subscription.origin:
        return None
    try:
        recorded = ctx.ledger.jobs_of(JOB_REF + subscription.origin)
    except LedgerUnavailable:
        return None  # not known: the job goes again, which changes nothing Klaviyo holds
    times: list[float] = []
    channels: set[str] = set()
    for entry in recorded:
        at, _, sent = entry.partition(" ")
        try:
            times.append(float(at))
        except ValueError:
            continue
        channels.update(c for c in sent.split(",") if c)
    if not times:
        return None
    kept = tuple(c for c in subscription.channels if c in channels)
    refused = "sms" in subscription.channels and "sms" not in channels
    return Accepted(replace(subscription, channels=kept, sms_refused=refused), min(times))


# -- reading it back -----------------------------------------------------------------------------


def confirm(ctx: Context, accepted: dict[int, Accepted], results: list[Result | None]) -> None:
    """Read the accepted leads' profiles back until each channel has settled or the time
    allotted has run out; give each lead its result."""
    if ctx.would_send is not None:
        _as_if_applied(ctx, accepted, results)
        return
    profiles: dict[int, dict[str, Any] | None] = dict.fromkeys(accepted)
    open_ = set(accepted)
    limit = min(MAX_READ_BACK_SECONDS, ctx.budget.remaining() - READ_MARGIN_SECONDS)
    waited = 0.0
    for number, wait in enumerate(READ_BACK_AFTER):
        if number and waited + wait > limit:
            break  # the first read is made however short the time
        if wait:
            ctx.client.sleep(wait)
        waited += wait
        found = _read(ctx, {i: accepted[i] for i in open_})
        for index, answer in found.items():
            if isinstance(answer, Result):
                if not answer.retryable:
                    results[index] = answer  # a read Klaviyo refuses will not be let later
                    open_.discard(index)
                continue
            profiles[index] = answer
            subscription = accepted[index].subscription
            if all(_settled(subscription, c, answer) for c in subscription.channels):
                open_.discard(index)
        if not open_:
            break
    now = ctx.wall()
    for index, taken in accepted.items():
        if results[index] is None:
            results[index] = result_of(taken, profiles[index], now, waited)


def _as_if_applied(
    ctx: Context, accepted: dict[int, Accepted], results: list[Result | None]
) -> None:
    """A dry run sent no job, so there is nothing to read back: each lead's result is what the
    job would give it once applied, as its profile stands now (a suppression Klaviyo keeps, a
    double opt-in's wait)."""
    now = ctx.wall()
    for index, answer in _read(ctx, accepted).items():
        if results[index] is not None:
            continue
        if isinstance(answer, Result):
            results[index] = answer
        else:
            results[index] = result_of(accepted[index], answer, now, 0.0, applied=True)


def _read(ctx: Context, open_: dict[int, Accepted]) -> dict[int, dict[str, Any] | Result]:
    """Each lead's profile as the search shows it now (absent: not made yet), in bulk."""
    by_kind: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index, taken in open_.items():
        kind, value = read_key(taken.subscription)
        by_kind[kind].append((index, value))
    answers: dict[int, dict[str, Any] | Result] = {}
    for kind, wanted in by_kind.items():
        found = lookup.search(ctx, kind, "-updated", [value for _, value in wanted])
        for index, value in wanted:
            value_key = lookup.key(kind, value)
            if value_key in found.problems:
                answers[index] = found.problems[value_key]
            else:
                answers[index] = found.first(value_key) or {}
    return answers


def read_key(subscription: Subscription) -> tuple[str, str]:
    """How the subscription's profile is found: its id, else its email, else its phone."""
    if subscription.profile_id:
        return "klaviyo_id", subscription.profile_id
    if subscription.email:
        return "email", subscription.email
    assert subscription.phone_number, "a subscription names an email or a phone"
    return "phone_number", subscription.phone_number


def kept_suppression(profile: dict[str, Any] | None) -> str | None:
    """The suppression that keeps the email consent from being applied, if there is one."""
    suppression = read_path(profile, "attributes.subscriptions.email.marketing.suppression")
    for item in suppression if isinstance(suppression, list) else []:
        if isinstance(item, dict) and item.get("reason") in KEPT_SUPPRESSIONS:
            return str(item["reason"])
    return None


def double_opt_in(subscription: Subscription) -> bool:
    """Whether Klaviyo asks the person to confirm before the marketing consent counts."""
    return not subscription.historical and subscription.opt_in_process == DOUBLE_OPT_IN


def channel_state(
    subscription: Subscription,
    channel: str,
    profile: dict[str, Any] | None,
    applied: bool = False,
) -> str:
    """One asked channel: subscribed, pending, suppressed, or not confirmed (yet); ``applied``:
    as it would be once Klaviyo applied the job (a dry run's answer)."""
    if consent_state(profile, channel) == SUBSCRIBED:
        return SUBSCRIBED
    if channel == "email" and kept_suppression(profile):
        return SUPPRESSED
    if double_opt_in(subscription):
        return PENDING
    return SUBSCRIBED if applied else NOT_CONFIRMED


def _settled(subscription: Subscription, channel: str, profile: dict[str, Any]) -> bool:
    return channel_state(subscription, channel, profile) != NOT_CONFIRMED


def result_of(
    taken: Accepted,
    profile: dict[str, Any] | None,
    now: float,
    waited: float,
    applied: bool = False,
) -> Result:
    """The lead's result from what its profile shows: a channel not applied fails it, one
    not confirmed yet brings it back (or, past the window, is not applied), a pending one
    is a success that says so."""
    subscription = taken.subscription
    states = {c: channel_state(subscription, c, profile, applied) for c in subscription.channels}
    if subscription.sms_refused:
        states["sms"] = NOT_APPLIED
    details: dict[str, Any] = {
        "profile": profile or None,
        "list_name": subscription.group.name if subscription.group else None,
        "opt_in_process": subscription.group.opt_in_process if subscription.group else None,
        "consent": states,
    }
    if SUPPRESSED in states.values():
        return outcomes.CONSENT_SUPPRESSED(suppression=kept_suppression(profile), **details)
    if subscription.sms_refused:
        return outcomes.SMS_NOT_APPLIED(**details)
    if NOT_CONFIRMED in states.values():
        if now - taken.at >= CONFIRM_WINDOW_SECONDS:
            minutes = int((now - taken.at) // 60)
            return outcomes.CONSENT_NOT_APPLIED(minutes=minutes, **details)
        return outcomes.SUBSCRIBE_APPLYING(seconds=round(waited), **details)
    if PENDING in states.values():
        reason = (
            outcomes.CONSENT_PENDING if subscription.group else outcomes.CONSENT_PENDING_ACCOUNT
        )
        return reason(**details)
    return outcomes.success(**details)
