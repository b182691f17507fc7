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

from dataclasses import replace
from typing import Any

from klaviyo_leads.actions.create.identity import (
    Person,
    identity_key,
    in_progress,
)
from klaviyo_leads.actions.create.one import (
    Attempt,
    hold_seconds,
    let_go,
    owner_of,
    record_unavailable,
    settle_seconds,
)
from klaviyo_leads.aws.ledger_records import (
    CLOCK_TOLERANCE_SECONDS,
    HoldLost,
    LedgerUnavailable,
    Record,
)
from klaviyo_leads.context import Context
from klaviyo_leads.outcomes import Result

OWNER_SUFFIX = "#update"
# How long after Klaviyo accepts a subscribe or unsubscribe job, or an event, it may still make
# a profile (it applies them later; not documented: a generous assumption, see the docs).
SIDE_EFFECT_SECONDS = 600.0


def added(profile: dict[str, Any], attributes: dict[str, Any]) -> Person:
    """The identifiers the attributes give the profile that it does not hold yet."""
    person = Person.of(attributes)
    held = person.shares(profile)
    return Person.of({name: value for name, value in person.values() if name not in held})


class AddedHold:
    """A PATCH's hold on what it adds: renewed right before the PATCH goes out, recorded as the
    profile's once Klaviyo took it, let go when Klaviyo refused it."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt

    def renew(self) -> None:
        """``before_send``: raises ``HoldLost`` (another request took the identifier over
        while the PATCH waited) or ``LedgerUnavailable``, and the PATCH is not sent."""
        self.attempt.renew_for_write()

    def took(self, profile_id: str) -> None:
        self.attempt.own({"id": profile_id})

    def refused(self) -> None:
        """Klaviyo refused the PATCH: the profile holds nothing new (a record an earlier
        attempt already recorded for it stays, its hold ended)."""
        ledger = self.attempt.ledger
        if self.attempt.record.profile_id:
            ledger.pause(self.attempt.record)
        else:
            ledger.release(self.attempt.record)

    def failed(self, problem: BaseException) -> BaseException:
        """What the PATCH's failure leaves, and what to raise: the hold lost or the ledger
        gone before it went out (nothing sent); a refusal (``refused``); an outcome unknown
        (the record paused: others look behind it once the search has settled)."""
        if isinstance(problem, HoldLost):
            return in_progress(self.attempt.ctx, None, self.attempt.ctx.wall())
        if isinstance(problem, LedgerUnavailable):
            self.refused()
            return record_unavailable()
        # A PATCH is sent again freely, so the client never calls its outcome unknown: any
        # answer but a refusal (a 5xx, a lost answer, a timeout) may follow a PATCH that took.
        if isinstance(problem, Result) and not (problem.retryable or problem.effect_unknown):
            self.refused()
        else:
            self.attempt.end()
        return problem


def hold_added(
    ctx: Context, profile: dict[str, Any], attributes: dict[str, Any]
) -> AddedHold | None:
    """The hold on what the PATCH adds (None: nothing to hold, no ledger, or an identifier is
    another profile's already: Klaviyo's 409 names it). Raises the result that stops the
    update: "in progress" while another request creates with one of them, or until what a
    request that went away wrote shows in the search; "records unavailable"."""
    ledger = ctx.ledger
    person = added(profile, attributes)
    if ledger is None or not person.values():
        return None
    owner = owner_of(ctx) + OWNER_SUFFIX
    try:
        taken = ledger.take(person.identities(), owner, ctx.attempt, hold_seconds(ctx))
        if taken.mine is not None:
            return AddedHold(Attempt(ctx, person, attributes, owner, taken.mine))
        now = ledger.clock()
        if taken.busy:
            raise in_progress(ctx, None, now)
        if any(h.record and h.record.profile_id for h in taken.others):
            return None
        running = [h.record.hold_until for h in taken.others if h.record and h.record.running(now)]
        if running:
            raise in_progress(ctx, max(running), now)
        # Requests that went away without a profile: once what they may have written shows
        # in the search (a create that meets the identifier then looks), the PATCH takes
        # their identifiers over.
        settled = [
            h.record.settle_from() + settle_seconds(ctx) + CLOCK_TOLERANCE_SECONDS
            for h in taken.others
            if h.record and h.record.wrote
        ]
        if settled and max(settled) > now:
            raise in_progress(ctx, max(settled), now)
        record = ledger.take_over(
            person.identities(), owner, ctx.attempt, hold_seconds(ctx), taken.others
        )
    except LedgerUnavailable:
        let_go(ctx, person, owner)
        raise record_unavailable() from None
    if record is None:
        raise in_progress(ctx, None, ctx.wall())
    return AddedHold(Attempt(ctx, person, attributes, owner, record))


# -- profiles made on the side ---------------------------------------------------------------


def touch(ctx: Context, values: list[tuple[str, str | None]]) -> None:
    """A write about to go out may make a profile for these identifiers as a side effect: a
    queued batch's import must not take that profile for its own create (``batch``). Best
    effort, for a write whose leads were held back already or that follows one that was (a
    subscribe's consent evidence: the subscribe's job marked them)."""
    keys = [identity_key(name, value) for name, value in values if value]
    if ctx.ledger is not None and keys:
        ctx.ledger.touch(keys, _mark_seconds(ctx))


def hold_back(
    ctx: Context,
    people: dict[int, list[tuple[str, str | None]]],
    deliveries: dict[int, int],
) -> dict[int, Result]:
    """Each lead's identifiers marked (``touch``); the leads that must not go out yet, each
    with its result: "in progress" while a create is at work on one of its identifiers (its
    hold running, or an import job of its still running at Klaviyo), "records unavailable"
    when the marks or the look could not be made. ``deliveries``: each lead's delivery (a
    lead held back comes back later each time).

    Marked first, looked after: a batch takes its records, then reads the marks (again right
    before its import goes out); a write marks, then reads the records. Whichever comes second
    sees the first: the batch sends the lead one by one, or the write waits for the batch."""
    keys = {
        lead: [identity_key(name, value) for name, value in values if value]
        for lead, values in people.items()
    }
    every = [key for lead_keys in keys.values() for key in lead_keys]
    ledger = ctx.ledger
    if ledger is None or not every:
        return {}
    held: dict[int, Result] = {}
    jobs_running: dict[str, bool] = {}
    try:
        if not ledger.touch(every, _mark_seconds(ctx)):
            raise LedgerUnavailable("marks not kept")
        creating = ledger.creating(every)
        now = ledger.clock()
        for lead, lead_keys in keys.items():
            # An update's PATCH holds a profile that exists: the job finds it, nothing to wait for.
            records = [
                creating[k] for k in lead_keys if k in creating and not _updating(creating[k])
            ]
            waiting = replace(ctx, delivery=deliveries.get(lead, 1))
            running = [r.hold_until for r in records if r.running(now)]
            if running:
                held[lead] = in_progress(waiting, max(running), now)
            elif any(_job_running(ctx, r, jobs_running, now) for r in records):
                held[lead] = in_progress(waiting, None, now, job_running=True)
    except LedgerUnavailable:
        return {lead: record_unavailable() for lead, lead_keys in keys.items() if lead_keys}
    return held


def _mark_seconds(ctx: Context) -> float:
    """How long a mark lasts: the side write may make its profile that late, and the search
    then take its settle time to show it."""
    return SIDE_EFFECT_SECONDS + ctx.settings.search_settle_seconds


def _updating(record: Record) -> bool:
    return record.owner.endswith(OWNER_SUFFIX)


def _job_running(ctx: Context, record: Record, known: dict[str, bool], now: float) -> bool:
    """Whether an import job the record names may still be running: one of its recorded jobs
    is not finished (not known: running), or, when no job was recorded (the job's answer was
    lost and the list of jobs could not tell it), the search has not had time to show what
    it did."""
    from klaviyo_leads.actions import imports  # the bulk path's module, rarely needed here

    if not record.job_ref or not ctx.ledger:
        return False
    if record.job_ref not in known:
        try:
            job_ids = ctx.ledger.jobs_of(record.job_ref)
            if job_ids:
                known[record.job_ref] = not all(imports.finished(ctx, job) for job in job_ids)
            else:
                settled = record.settle_from() + settle_seconds(ctx) + CLOCK_TOLERANCE_SECONDS
                known[record.job_ref] = now < settled
        except Result:
            known[record.job_ref] = True
    return known[record.job_ref]
