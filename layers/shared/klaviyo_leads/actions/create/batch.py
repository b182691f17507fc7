"""Create Profile for a queued batch: the one-lead rule (``identity``), one import job.

Every lead's create is recorded in the ledger before anything is written, exactly as one lead
would be (``one.take``). The batch then looks its leads up in bulk (``any()`` searches by
email, phone number and external id, 100 values a call): a lead any of whose identifiers
Klaviyo already holds is that profile's duplicate and stays out of the job, so the job never
updates, or re-identifies, someone else's profile. The rest go into one import job; what the
job left for a lead it carried is that lead's create (the search showed nothing before, and
the ledger kept every other request off its identifiers since).

- A redelivered lead reads what its earlier attempt recorded (the profile, or the job and
  every job that may have been it) before anything is imported again.
- Two leads of one batch that share an identifier: the second waits for the first, then is
  its duplicate, or goes on alone when the first made nothing.
- A lead known by its external id alone goes one by one: Klaviyo would give a second import
  of it a second profile, and only the one-lead path can wait out the search for a lost write.

- A lead a subscribe, unsubscribe or event may be making a profile for (its identifiers
  marked: ``create.adding``) goes one by one, whether marked before the batch looked or before
  its import goes out (the marks are read again, after the records are renewed for it).

What this path assumes beyond the one-lead path: no profile for a lead's email, phone number or
external id is made outside the bundle (another integration) between the batch's look and its
job; the job would match it, and the lead be reported created.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import imports, lookup
from klaviyo_leads.actions.batch import BULK_IMPORT_MIN_LEADS
from klaviyo_leads.actions.create.identity import Person, duplicate_of, in_progress, made_by, marked
from klaviyo_leads.actions.create.one import (
    Attempt,
    HeldByPeer,
    earlier_job_outcome,
    hold_seconds,
    new_profile,
    owner_of,
    record_unavailable,
    take,
)
from klaviyo_leads.actions.lookup import get_profile
from klaviyo_leads.aws.ledger_records import HoldLost, LedgerUnavailable
from klaviyo_leads.outcomes import Outcome, Result, success

if TYPE_CHECKING:
    from klaviyo_leads.actions.action import Batch

# Rounds of a job whose submission found some records taken over meanwhile.
MAX_SUBMISSIONS = 3


@dataclass
class _Lead:
    attempt: Attempt
    index: int


class _HeldBack(Exception):
    """Leads of a submission that must not go into its job (the rest are sent)."""

    def __init__(self, indexes: set[int]) -> None:
        super().__init__(f"{len(indexes)} leads held back")
        self.indexes = indexes


class _RecordsLost(_HeldBack):
    """Their records were taken over while the batch waited (their holds ran out)."""


class _Touched(_HeldBack):
    """A subscribe, unsubscribe or event marked them since the batch last looked: they go one
    by one (the write on the side, marked first, did not see the batch's hold)."""


def create_all(batch: Batch, wanted: dict[int, dict[str, Any]]) -> None:
    """Each lead's result in ``batch.results``; every created profile recorded. A lead that
    cannot be imported goes the one-lead way of the batch's action (Create or Upsert
    Profile)."""
    ctx = batch.ctx
    if ctx.ledger is None:
        for index in wanted:
            batch.fail(index, outcomes.LEDGER_NOT_CONFIGURED())
        return
    leads, waiting, alone = _take_records(batch, wanted)
    _send_touched_alone(batch, leads, alone)
    jobs: dict[str, imports.Job] = {}
    for index, lead in list(leads.items()):
        answer = _from_earlier_attempts(lead, jobs)
        if answer is not None:
            batch.results[index] = answer
            del leads[index]
    _drop_existing(batch, leads)
    alone += _import(batch, leads)
    for index, first in waiting.items():
        made = batch.results[first]
        if made is not None and made.outcome is Outcome.SUCCESS and made.profile:
            batch.fail(index, duplicate_of(Person.of(wanted[index]), made.profile))
        else:
            batch.one_by_one(index)
    for index in alone:
        batch.one_by_one(index)


def _take_records(
    batch: Batch, wanted: dict[int, dict[str, Any]]
) -> tuple[dict[int, _Lead], dict[int, int], list[int]]:
    """Each lead's record, taken as one lead's would be; a lead whose person an earlier lead
    of the batch holds waits for it (``waiting``: lead -> that lead)."""
    leads: dict[int, _Lead] = {}
    waiting: dict[int, int] = {}
    alone: list[int] = []
    owners: dict[str, int] = {}
    for index, attributes in wanted.items():
        person = Person.of(attributes)
        if not person.policed:
            alone.append(index)
            continue
        ctx = batch.lead_ctx(index)
        owner = batch.origins[index] or owner_of(ctx)
        try:
            record = take(ctx, person, owner, peers=frozenset(owners))
        except HeldByPeer as peer:
            waiting[index] = owners[peer.owner]
            continue
        except Result as problem:
            batch.fail(index, problem)
            continue
        owners[owner] = index
        leads[index] = _Lead(Attempt(ctx, person, marked(attributes, owner), owner, record), index)
    return leads, waiting, alone


def _send_touched_alone(batch: Batch, leads: dict[int, _Lead], alone: list[int]) -> None:
    """Leads whose person a subscribe job or an event may be making a profile for: an import
    would take that profile for the lead's own. They go one by one, where Klaviyo's 409 and the
    request's mark tell (their records, taken by this attempt, go with them)."""
    ledger = batch.ctx.ledger
    assert ledger is not None
    identities = {i for lead in leads.values() for i in lead.attempt.person.identities()}
    if not identities:
        return
    try:
        touched = ledger.touched(identities)
    except LedgerUnavailable:
        touched = identities  # not known: the safe way for all
    for index, lead in list(leads.items()):
        if touched & set(lead.attempt.person.identities()):
            alone.append(index)
            del leads[index]


def _from_earlier_attempts(lead: _Lead, jobs: dict[str, imports.Job]) -> Result | None:
    """What an earlier attempt of the lead recorded: the profile it made, or what its job did."""
    record = lead.attempt.record
    ctx = lead.attempt.ctx
    if record.profile_id:
        found = get_profile(ctx, record.profile_id)
        return success(found or {"type": "profile", "id": record.profile_id})
    if record.job_ref:
        try:
            return earlier_job_outcome(lead.attempt, cache=jobs)
        except Result as problem:
            return problem  # its job is not done: the lead comes back for it
    return None


def _drop_existing(batch: Batch, leads: dict[int, _Lead]) -> None:
    """Leads whose email, phone number or external id Klaviyo already holds: the duplicates
    they are (or, for a lead whose earlier attempt's job may have made it, its own)."""
    wanted = {index: dict(lead.attempt.person.values()) for index, lead in leads.items()}
    found, problems = lookup.people(batch.ctx, wanted)
    for index, problem in problems.items():
        _give_up(batch, leads.pop(index), problem)
    for index, (name, profile) in found.items():
        lead = leads.pop(index)
        if lead.attempt.record.wrote and made_by(profile, lead.attempt.owner):
            batch.results[index] = lead.attempt.own(profile)  # its earlier job made it
        else:
            _give_up(batch, lead, duplicate_of(lead.attempt.person, profile, identifier=name))


def _give_up(batch: Batch, lead: _Lead, result: Result) -> None:
    """The lead is not imported: its record is released (nothing of it was written) or,
    when an earlier attempt may have written, left for its retry."""
    ledger = lead.attempt.ledger
    if lead.attempt.record.wrote:
        ledger.pause(lead.attempt.record)
    else:
        ledger.release(lead.attempt.record)
    batch.fail(lead.index, result)


def _import(batch: Batch, leads: dict[int, _Lead]) -> list[int]:
    """One job (or more, by Klaviyo's limits) for the leads; every record renewed, with the
    job's reference, right before each submission goes out, and the marks read again after.
    A lead whose record was taken over meanwhile (its hold ran out while the batch waited) is
    held back; one marked meanwhile is returned, to go one by one; the rest are sent."""
    ctx = batch.ctx
    job_ref = uuid.uuid4().hex
    alone: list[int] = []
    for _ in range(MAX_SUBMISSIONS):
        order = list(leads)
        items = [{"type": "profile", "attributes": leads[i].attempt.attributes} for i in order]
        try:
            for job in imports.batches(items):
                _run_job(batch, leads, [order[i] for i in job], job_ref)
            return alone
        except _RecordsLost as lost:
            for index in lost.indexes:
                lead = leads.pop(index)
                batch.fail(index, in_progress(lead.attempt.ctx, None, ctx.wall()))
        except _Touched as touched:
            for index in touched.indexes:
                leads.pop(index)
                alone.append(index)
        except LedgerUnavailable:
            for index in list(leads):
                _give_up(batch, leads.pop(index), record_unavailable())
            return alone
    for index in list(leads):
        lead = leads.pop(index)
        lead.attempt.ledger.pause(lead.attempt.record)
        batch.fail(index, in_progress(lead.attempt.ctx, None, ctx.wall()))
    return alone


def _run_job(batch: Batch, leads: dict[int, _Lead], order: list[int], job_ref: str) -> None:
    ctx = batch.ctx
    ledger = ctx.ledger
    assert ledger is not None

    def renew_all() -> None:
        lost: set[int] = set()
        for index in order:
            attempt = leads[index].attempt
            try:
                attempt.record = ledger.renew(
                    attempt.record, hold_seconds(ctx), writing=True, job_ref=job_ref
                )
            except HoldLost:
                lost.add(index)
        if lost:
            raise _RecordsLost(lost)
        # Renewed first, read after: a write on the side that marked before this read is
        # seen here; one that marks after it sees the renewed holds and waits.
        mine = {i for index in order for i in leads[index].attempt.person.identities()}
        touched = ledger.touched(mine)
        if touched:
            raise _Touched(
                {i for i in order if touched & set(leads[i].attempt.person.identities())}
            )

    items = [{"type": "profile", "attributes": leads[i].attempt.attributes} for i in order]
    try:
        imported = imports.run(
            ctx,
            items,
            repeatable=False,
            taken=lambda job_id: ledger.job_taken(job_ref, job_id),
            before_send=renew_all,
        )
    except Result as problem:
        for index in order:
            lead = leads.pop(index)
            if problem.retryable or problem.effect_unknown:
                ledger.pause(lead.attempt.record)
                batch.fail(index, problem)
            else:  # refused as a whole: nothing of it was imported
                _give_up(batch, lead, problem)
        return
    for position, index in enumerate(order):
        lead = leads.pop(index)
        answer = imports.outcome(imported, position)
        if not isinstance(answer, Result):
            batch.results[index] = lead.attempt.own(answer)
        elif answer.retryable:
            ledger.pause(lead.attempt.record)
            batch.fail(index, answer)
        else:  # refused: nothing of it was imported
            ledger.release(lead.attempt.record)
            batch.fail(index, answer)


def create_profile_batch(batch: Batch) -> None:
    """Recorded creates, duplicates found in bulk, the rest in one import job (this module)."""
    wanted: dict[int, dict[str, Any]] = {}
    for index, lead in batch.leads.items():
        try:
            wanted[index] = new_profile(batch.ctx, lead)
        except Result as problem:
            batch.fail(index, problem)
    if len(wanted) < BULK_IMPORT_MIN_LEADS:
        for index in wanted:
            batch.one_by_one(index)
        return
    create_all(batch, wanted)
