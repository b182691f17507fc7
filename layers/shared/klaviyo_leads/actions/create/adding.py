"""Writes other than a create that give a profile an identifier: held or marked in the ledger.

Klaviyo holds an email or a phone number to one profile. A create's record (``one.take``)
keeps two creates of one person apart; two other writes can give a profile one of its
identifiers meanwhile, and a queued batch's import on its way (its lagging search showed no
one) would match that profile and tell its lead it created it:

- **An update's PATCH that adds an identifier** (Update and Upsert Profile) takes it in the
  ledger first, under the request's own owner (with ``OWNER_SUFFIX``: the create an Upsert
  tried first keeps its own record), and records the profile as its holder once Klaviyo
  answered. A create that meets it while the PATCH is on its way waits; one that meets it after
  is that profile's duplicate. A PATCH that meets a create still at work on the identifier
  waits for it; one that meets a profile recorded for it goes ahead (Klaviyo's 409 names it).
- **A subscribe or unsubscribe job, or an event**, makes the profile it does not find, later
  (Klaviyo applies them after its 202). Its identifiers are marked first (``touch``: a batch
  that reads the mark sends that lead one by one, where Klaviyo's 409 and the request's mark
  decide), and then the write waits while a create is still at work on one of them.
"""

from __future__ import annotations

from typing import Any

from klaviyo_leads.actions.create.identity import (
    IDENTIFIERS,
    Person,
    identity_key,
    in_progress,
    normalised,
)
from klaviyo_leads.actions.create.one import Attempt, hold_seconds, owner_of, record_unavailable
from klaviyo_leads.aws.ledger_records import HoldLost, LedgerUnavailable, Record
from klaviyo_leads.context import Context
from klaviyo_leads.outcomes import Result

OWNER_SUFFIX = "#update"
# How long after Klaviyo accepts a subscribe or unsubscribe job, or an event, it may still make
# a profile (it applies them later; not documented: a generous assumption, see the docs).
SIDE_EFFECT_SECONDS = 600.0


def added(profile: dict[str, Any], attributes: dict[str, Any]) -> Person:
    """The identifiers the attributes give the profile that it does not hold yet."""
    held = profile.get("attributes") or {}
    values = {
        name: value
        for name in IDENTIFIERS
        if isinstance(value := attributes.get(name), str)
        and value
        and not (
            isinstance(held.get(name), str)
            and normalised(name, held[name]) == normalised(name, value)
        )
    }
    return Person.of(values)


def hold_added(ctx: Context, profile: dict[str, Any], attributes: dict[str, Any]) -> Attempt | None:
    """The hold on what the PATCH adds, renewed for the write that goes out next (None: nothing
    to hold, no ledger, or the identifiers are another profile's already: Klaviyo decides).
    Raises the result that stops the update: "in progress" while another request creates with
    one of them, "record unavailable" when the ledger cannot be reached."""
    ledger = ctx.ledger
    person = added(profile, attributes)
    if ledger is None or not person.values():
        return None
    owner = owner_of(ctx) + OWNER_SUFFIX
    try:
        try:
            taken = ledger.take(person.identities(), owner, ctx.attempt, hold_seconds(ctx))
        except LedgerUnavailable:
            ledger.pause(Record(owner, ctx.attempt, person.identities(), 0.0, 0.0))
            raise
        now = ledger.clock()
        if taken.mine is None:
            running = [
                h.record
                for h in taken.others
                if h.record and not h.record.profile_id and h.record.running(now)
            ]
            if taken.busy or running:
                until = max((r.hold_until for r in running), default=None)
                raise in_progress(ctx, until, now)
            return None  # recorded for a profile, or left by a request that went away
        attempt = Attempt(ctx, person, attributes, owner, taken.mine)
        attempt.renew_for_write()
    except HoldLost:
        raise in_progress(ctx, None, ctx.wall()) from None
    except LedgerUnavailable:
        raise record_unavailable() from None
    return attempt


# -- profiles made on the side ---------------------------------------------------------------


def touch(ctx: Context, values: list[tuple[str, str | None]]) -> bool:
    """A write about to go out may make a profile for these identifiers as a side effect: a
    queued batch's import must not take that profile for its own create (``batch``). False
    when the mark could not be kept."""
    keys = [identity_key(name, value) for name, value in values if value]
    if ctx.ledger is None or not keys:
        return True
    return bool(ctx.ledger.touch(keys, SIDE_EFFECT_SECONDS + ctx.settings.search_settle_seconds))


def hold_back(ctx: Context, people: dict[int, list[tuple[str, str | None]]]) -> dict[int, Result]:
    """Each lead's identifiers marked (``touch``); the leads that must not go out yet, each
    with its result: "in progress" while a create is at work on one of its identifiers, "records
    unavailable" when the mark or the look could not be made.

    Marked first, looked after: a batch takes its records, then reads the marks; a write marks,
    then reads the records. Whichever comes second sees the first: the batch sends the lead
    one by one, or the write waits until the batch's import is done."""
    keys = {
        lead: [identity_key(name, value) for name, value in values if value]
        for lead, values in people.items()
    }
    every = [key for lead_keys in keys.values() for key in lead_keys]
    if ctx.ledger is None or not every:
        return {}
    try:
        if not ctx.ledger.touch(every, SIDE_EFFECT_SECONDS + ctx.settings.search_settle_seconds):
            raise LedgerUnavailable("mark not kept")
        creating = ctx.ledger.creating(every)
    except LedgerUnavailable:
        return {lead: record_unavailable() for lead, lead_keys in keys.items() if lead_keys}
    now = ctx.wall()
    return {
        lead: in_progress(ctx, None, now)
        for lead, lead_keys in keys.items()
        if creating.intersection(lead_keys)
    }
