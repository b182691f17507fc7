"""Unsubscribe Profile: consent withdrawn by channel, from the account or a list it is on;
a batch in jobs of up to 100 profiles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.action import Batch, Results
from klaviyo_leads.actions.batch import check_list_once, settle
from klaviyo_leads.actions.lookup import find_profile, klaviyo_list
from klaviyo_leads.actions.subscribe.jobs import (
    CHANNEL_NEEDS,
    UNSUBSCRIBE,
    Item,
    Subscription,
    send_jobs,
)
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result


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
        wanted,
        known.get("email"),
        known.get("sms"),
        None,
        group,
        None,
        jobs=UNSUBSCRIBE,
        delivery=ctx.delivery,
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


# -- A batch ------------------------------------------------------------------------------------


def unsubscribe_profile_batch(batch: Batch) -> None:
    """Membership checked in bulk where a list is given, then jobs of up to 100 profiles."""
    ctx, results = batch.ctx, batch.results
    groups: dict[str | None, list[tuple[int, Subscription]]] = defaultdict(list)
    list_problems: dict[str, Result | None] = {}
    for index, lead in batch.leads.items():
        try:
            check_list_once(ctx, lead.list_id(), list_problems)
            unsubscription = prepare_unsubscribe(batch.lead_ctx(index), lead)
        except Result as problem:
            results[index] = problem
            continue
        groups[unsubscription.list_id].append((index, unsubscription))
    later: list[int] = []
    for items in groups.values():
        try:
            members = only_list_members(ctx, items, results)
        except Result as problem:
            settle(results, [index for index, _ in items], problem)
            continue
        # A second lead for one profile goes after the job, as one lead after another would:
        # an unsubscribe from a list also takes the profile off it.
        seen: set[str] = set()
        first: list[tuple[int, Subscription]] = []
        for index, item in members:
            identity = item.profile_id or (item.email or item.phone_number or "").lower()
            if identity in seen:
                later.append(index)
                results[index] = None
            else:
                seen.add(identity)
                first.append((index, item))
        send_jobs(ctx, first, results)
    for index in later:
        batch.one_by_one(index)
