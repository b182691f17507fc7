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

from collections import defaultdict
from collections.abc import Callable

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Batch, Results
from klaviyo_leads.actions.batch import check_list_once
from klaviyo_leads.actions.lookup import find_profile, klaviyo_list
from klaviyo_leads.actions.subscribe import consent, evidence
from klaviyo_leads.actions.subscribe.consent import Accepted
from klaviyo_leads.actions.subscribe.jobs import CHANNEL_NEEDS, Item, Sink, Subscription, send_all
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result


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
        delivery=ctx.delivery,
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
        send_all(ctx, members, Sink(results, sent))
    now = ctx.wall()
    for index, subscription in sent.items():
        accepted[index] = Accepted(subscription, now)
        consent.remember(ctx, accepted[index])
    evidence.record(ctx, [(i, a.subscription) for i, a in accepted.items()], results)
    consent.confirm(ctx, {i: a for i, a in accepted.items() if results[i] is None}, results)


def subscribe_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Subscribe a profile to email and/or SMS marketing, optionally through a list: the
    result says what Klaviyo holds once the job has applied."""
    results: Results = [None]
    subscribe_all(ctx, [(0, prepare(ctx, lead))], results)
    assert results[0] is not None
    return results[0]


# -- A batch ------------------------------------------------------------------------------------


def subscribe_profile_to_list_batch(batch: Batch) -> None:
    """Jobs of up to 1,000 profiles (by list, source and historical import), one read-back."""
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    items: list[tuple[int, Subscription]] = []
    list_problems: dict[str, Result | None] = {}
    for index, lead in leads.items():
        try:
            check_list_once(ctx, lead.list_id(), list_problems)
            items.append((index, prepare(batch.lead_ctx(index), lead)))
        except Result as problem:
            results[index] = problem
    subscribe_all(ctx, items, results)
