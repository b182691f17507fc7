"""Create Profile, one lead at a time: a new profile, or the duplicate it would be.

Every create is recorded in the ledger before Klaviyo is called (``aws.ledger``: every identifier
of the lead, atomically), and what a record or a found profile means follows ``identity``'s
rule. A write whose effect is unknown (an answer lost, a 5xx after the write, an unreadable
201) is decided by facts before anything else is written: sent again, Klaviyo's 201 says it
was not made, or its 409 names a profile whose mark says whether this request made it; a
lead known by its external id alone (which Klaviyo does not refuse twice) first waits until
the search shows what the lost write made.

Upsert Profile creates through the same steps, and updates the profile instead of failing
as a duplicate (``upsert``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.create.identity import (
    Person,
    duplicate_of,
    in_progress,
    made_by,
    marked,
    verdict,
)
from klaviyo_leads.actions.lookup import WITH_SUBSCRIPTIONS, get_profile, resource, search_profiles
from klaviyo_leads.aws.ledger_records import (
    CLOCK_TOLERANCE_SECONDS,
    Holder,
    HoldLost,
    LedgerUnavailable,
    Record,
)
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context
from klaviyo_leads.klaviyo.client import Response
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import KlaviyoError, Result, success

# How long Klaviyo's profile search may lag behind a create, unless the stack says otherwise
# (``Settings.search_settle_seconds``, the KlaviyoSearchSettleSeconds parameter).
SEARCH_SETTLE_SECONDS = Settings().search_settle_seconds
# The longest a create holds a person for one attempt; renewed right before every write.
MAX_HOLD_SECONDS = 60.0
# How soon a lead comes back when the bundle's own table could not be reached.
RECORD_RETRY_SECONDS = 5.0
# The longest a create waits in line for Klaviyo's search to show a write; longer, and the
# lead comes back then (a webhook's caller, or the queue), rather than hold the function.
MAX_INLINE_WAIT_SECONDS = 15.0
# Candidates read when a lost write's profile is looked for by its external id.
MAX_CANDIDATES = 100


def create_profile(ctx: Context, lead: Lead) -> Result:
    """Create a new profile in your Klaviyo account."""
    return create(ctx, new_profile(ctx, lead))


def new_profile(ctx: Context, lead: Lead) -> dict[str, Any]:
    """The attributes of the profile to create; at least one identifier."""
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    if not any(attributes.get(k) for k in ("email", "phone_number", "external_id")):
        raise outcomes.NO_IDENTIFIER()
    return attributes


def owner_of(ctx: Context) -> str:
    """Who a create record belongs to: what the lead arrived as, the same on each retry."""
    return ctx.origin_id or f"attempt:{uuid.uuid4()}"


def hold_seconds(ctx: Context) -> float:
    """How long others wait for this attempt: while it may still write (its budget, at most
    ``MAX_HOLD_SECONDS``; it renews the hold right before each write)."""
    return max(1.0, min(ctx.budget.remaining(), MAX_HOLD_SECONDS))


def settle_seconds(ctx: Context) -> float:
    """How long Klaviyo's search may take to show a write, as the stack is told."""
    return ctx.settings.search_settle_seconds


def record_unavailable() -> Result:
    return outcomes.RECORD_UNAVAILABLE(
        seconds=int(RECORD_RETRY_SECONDS), retry_after=RECORD_RETRY_SECONDS
    )


@dataclass
class Attempt:
    """One attempt at one lead's create: its person, what it writes, its record so far."""

    ctx: Context
    person: Person
    attributes: dict[str, Any]  # as written: the request's mark among the properties
    owner: str
    record: Record
    recorded: bool = False  # the profile it made is in the record

    @property
    def ledger(self) -> Any:
        return self.ctx.ledger

    def renew_for_write(self) -> None:
        """Right before a write goes out: the hold is renewed and the write recorded, or
        nothing is sent (``HoldLost``: another request took the person over)."""
        self.record = self.ledger.renew(self.record, hold_seconds(self.ctx), writing=True)

    def own(self, profile: dict[str, Any]) -> Result:
        """This request made the profile: recorded, so every later look agrees."""
        self.recorded = self.ledger.created(self.record, profile["id"])
        return success(profile)

    def end(self) -> None:
        """The attempt stops without a profile of its own: nobody need wait out its hold. Its
        record goes when it wrote nothing, and stays (unsure what it wrote) when it did."""
        if self.recorded:
            return
        if self.record.wrote:
            self.ledger.pause(self.record)
        else:
            self.ledger.release(self.record)


# -- the create ------------------------------------------------------------------------------


def create(ctx: Context, attributes: dict[str, Any]) -> Result:
    """The lead's create, recorded: its own profile (created), or the one it duplicates."""
    if ctx.would_send is not None:
        return would_create(ctx, attributes)
    if ctx.ledger is None:
        raise outcomes.LEDGER_NOT_CONFIGURED()
    person = Person.of(attributes)
    owner = owner_of(ctx)
    attempt = Attempt(ctx, person, marked(attributes, owner), owner, take(ctx, person, owner))
    try:
        return _as_owner(attempt)
    except Result:
        attempt.end()
        raise


def would_create(ctx: Context, attributes: dict[str, Any]) -> Result:
    """A dry run's create: the write a real run sends, and what Klaviyo's search says it
    would answer (a profile holding one of the lead's identifiers makes it a duplicate).
    The ledger is neither read nor written: only another request still creating the person
    would make the real answer differ (in progress, then the same duplicate)."""
    person = Person.of(attributes)
    if person.external_id:
        # As a real run: a known external id is refused before anything is written.
        existing = search_profiles(ctx, "external_id", person.external_id, "-created", limit=1)
        if existing:
            raise duplicate_of(person, existing[0], identifier="external_id")
    holder = None
    for name, value in person.values():
        if name == "external_id":
            continue
        found = search_profiles(ctx, name, value, "-created", limit=1)
        if found:
            holder = (name, found[0])
            break
    response = ctx.call(
        "POST",
        "/api/profiles",
        query=WITH_SUBSCRIPTIONS,
        body={"data": {"type": "profile", "attributes": marked(attributes, owner_of(ctx))}},
        expect=(201,),
        handled=(409,),
        idempotent=False,
    )
    if holder is not None:  # Klaviyo would answer 409, naming that profile
        raise duplicate_of(person, holder[1], identifier=holder[0])
    return success(resource(response))


class HeldByPeer(Exception):
    """Another lead of the same batch holds the person: wait for it (``owner``)."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def take(
    ctx: Context,
    person: Person,
    owner: str,
    job_ref: str | None = None,
    *,
    peers: frozenset[str] = frozenset(),
) -> Record:
    """The request's record for the person, or the result that stops it: a duplicate of
    another request's profile, or "in progress" while another is at work. ``peers``: the
    owners of the leads of the same batch (``HeldByPeer`` when one of them holds it)."""
    ledger = ctx.ledger
    assert ledger is not None
    try:
        taken = ledger.take(person.identities(), owner, ctx.attempt, hold_seconds(ctx), job_ref)
        if taken.mine is not None:
            return taken.mine
        now = ledger.clock()
        if taken.busy:
            raise in_progress(ctx, None, now)
        peer = next((h.owner for h in taken.others if h.owner in peers), None)
        if peer is not None:
            raise HeldByPeer(peer)
        found = verdict(ctx, person, taken.others, now)
        if found.result is not None:
            raise found.result
        known = others_jobs(ctx, person, found.jobs)
        if known is not None:
            raise known
        _look_behind(ctx, person, found.abandoned, found.settle_from)
        record = ledger.take_over(
            person.identities(), owner, ctx.attempt, hold_seconds(ctx), found.abandoned, job_ref
        )
    except LedgerUnavailable:
        let_go(ctx, person, owner)
        raise record_unavailable() from None
    if record is None:
        raise in_progress(ctx, None, ctx.wall())
    return record


def let_go(ctx: Context, person: Person, owner: str) -> None:
    """A take or takeover whose answer failed may have taken effect: whatever this attempt
    holds, it holds no longer, or the lead's own next try would wait out the hold (best
    effort, like every clean-up; nothing when the attempt holds nothing)."""
    assert ctx.ledger is not None
    ctx.ledger.pause(Record(owner, ctx.attempt, person.identities(), 0.0, 0.0))


def _look_behind(
    ctx: Context, person: Person, abandoned: tuple[Holder, ...], written_at: float | None
) -> None:
    """Requests that went away without recording a profile: what they wrote shows in the
    search once it has settled; a profile holding one of the shared identifiers makes the
    lead its duplicate."""
    wrote = any(h.record is None or h.record.wrote for h in abandoned)
    if not wrote:
        return  # they never sent a write: nothing to look for
    try:
        wait_until_settled(ctx, written_at if written_at is not None else ctx.wall())
    except Result as unsettled:
        until = ctx.wall() + (unsettled.retry_after or 0.0)
        raise in_progress(ctx, until, ctx.wall()) from None
    for name, value in dict.fromkeys(person.value_of(h.identity) for h in abandoned):
        found = search_profiles(ctx, name, value, "-created", limit=1)
        if found:
            raise duplicate_of(person, found[0], identifier=name)


def others_jobs(ctx: Context, person: Person, holders: tuple[Holder, ...]) -> Result | None:
    """What other requests' import jobs made of the person: a duplicate of the profile a job
    left for it, or "in progress" while a job of theirs is still running."""
    from klaviyo_leads.actions import (
        imports,  # the bulk path's module; a one-lead create rarely needs it
    )

    ledger = ctx.ledger
    assert ledger is not None
    for holder in holders:
        assert holder.record is not None and holder.record.job_ref is not None
        for job_id in ledger.jobs_of(holder.record.job_ref):
            if not imports.finished(ctx, job_id):
                return in_progress(ctx, None, ctx.wall(), job_running=True)
            answer = imports.read_earlier_job(ctx, job_id).outcome_for_person(person)
            if isinstance(answer, dict):
                return duplicate_of(person, answer, identifier=None)
    return None


def _as_owner(attempt: Attempt) -> Result:
    """This request's create: a retry first finds what its earlier attempts made."""
    ctx, record, person = attempt.ctx, attempt.record, attempt.person
    if record.profile_id:
        return success(get_profile(ctx, record.profile_id) or _reference(record.profile_id))
    if record.job_ref:
        found = earlier_job_outcome(attempt)
        if found is not None:
            return found
    if record.wrote and not person.policed:
        # Sent again, a lost write's profile would get a second one: look first.
        wait_until_settled(ctx, record.written_at or record.started_at)
        ours = find_marked(ctx, person, attempt.owner)
        if ours is not None:
            return attempt.own(ours)
    if person.external_id:
        # Klaviyo makes a second profile for a known external id: the bundle refuses it.
        existing = search_profiles(ctx, "external_id", person.external_id, "-created", limit=1)
        if existing:
            if made_by(existing[0], attempt.owner):
                return attempt.own(existing[0])
            if not record.wrote:
                ctx.ledger.release(record)  # type: ignore[union-attr]
            raise duplicate_of(person, existing[0], identifier="external_id")
    return _write(attempt)


def _write(attempt: Attempt) -> Result:
    ctx, person = attempt.ctx, attempt.person
    wrote_before = attempt.record.wrote
    try:
        response = _post(attempt)
    except Result as problem:
        if not problem.effect_unknown:
            if not attempt.record.wrote:
                ctx.ledger.release(attempt.record)  # type: ignore[union-attr]
            raise
        # The write may have made the profile. Find out before anything is written again.
        if not person.policed:
            # The write, if it took, took before its answer went missing: before now.
            wait_until_settled(ctx, ctx.wall(), other_clock=False)
            ours = find_marked(ctx, person, attempt.owner)
            if ours is not None:
                return attempt.own(ours)
        wrote_before = True
        response = _post(attempt)
    if response.status == 201:
        return attempt.own(resource(response))
    existing_id = duplicate_profile_id(response.errors)
    existing = None
    if existing_id and wrote_before:
        # Whose is it? Its mark says; without reading it, nothing is known yet.
        existing = get_profile(ctx, existing_id)
        if existing is None:
            raise outcomes.CREATE_UNSETTLED(seconds=1, retry_after=1.0)
        if made_by(existing, attempt.owner):
            return attempt.own(existing)  # an earlier write of this request made it
    elif existing_id and person.email and person.phone_number:
        try:
            existing = get_profile(ctx, existing_id)
        except Result:
            existing = None  # the duplicate stands; only which identifier stays unsaid
    # Klaviyo holds an email or phone to one profile: a profile that holds ours and is not
    # marked by us means no write of ours made one.
    ctx.ledger.release(attempt.record)  # type: ignore[union-attr]
    return duplicate_of(person, existing or existing_id, response.errors)


def _post(attempt: Attempt) -> Response:
    """POST the profile; the hold is renewed right before every attempt goes out."""
    try:
        return attempt.ctx.call(
            "POST",
            "/api/profiles",
            query=WITH_SUBSCRIPTIONS,
            body={"data": {"type": "profile", "attributes": attempt.attributes}},
            expect=(201,),
            handled=(409,),
            idempotent=False,
            before_send=attempt.renew_for_write,
        )
    except HoldLost:
        raise in_progress(attempt.ctx, None, attempt.ctx.wall()) from None
    except LedgerUnavailable:
        raise record_unavailable() from None
    except Result as problem:
        raise phone_only_refused(attempt.attributes, problem) from None


def earlier_job_outcome(attempt: Attempt, cache: dict[str, Any] | None = None) -> Result | None:
    """What the import job an earlier attempt sent did for this lead: its profile (the
    job carried the lead after a clean search: this request made it), or the result that
    says why Klaviyo refused it. None when the job did not report the lead."""
    from klaviyo_leads.actions import imports

    ctx, record = attempt.ctx, attempt.record
    assert record.job_ref is not None
    try:
        job_ids = ctx.ledger.jobs_of(record.job_ref)  # type: ignore[union-attr]
    except LedgerUnavailable:
        raise record_unavailable() from None
    for job_id in job_ids:
        done = cache.get(job_id) if cache is not None else None
        if done is None:
            done = imports.read_earlier_job(ctx, job_id)  # unfinished: raises, comes back
            if cache is not None:
                cache[job_id] = done
        answer = done.outcome_for_person(attempt.person)
        if answer is None:
            continue
        if isinstance(answer, Result):
            return answer
        return attempt.own(answer)
    return None


def find_marked(ctx: Context, person: Person, owner: str) -> dict[str, Any] | None:
    """The profile this request's write made, if the search shows it (an external id's)."""
    name, value = person.values()[0]
    for profile in search_profiles(ctx, name, value, "-created", limit=MAX_CANDIDATES):
        if made_by(profile, owner):
            return profile
    return None


def wait_until_settled(ctx: Context, written_at: float, *, other_clock: bool = True) -> None:
    """Wait until a write sent at ``written_at`` shows in the search. A time another
    container wrote may be ahead of this one's clock by the ledger's tolerance, so that much
    is waited too. A wait longer than ``MAX_INLINE_WAIT_SECONDS`` (or the budget) is not
    slept through: the lead comes back when the search has settled."""
    wait = written_at + settle_seconds(ctx) - ctx.wall()
    if other_clock:
        wait += CLOCK_TOLERANCE_SECONDS
    if wait <= 0:
        return
    if wait > MAX_INLINE_WAIT_SECONDS or wait + 1.0 > ctx.budget.remaining():
        raise outcomes.CREATE_UNSETTLED(seconds=int(wait) + 1, retry_after=wait)
    ctx.client.sleep(wait)


def _reference(profile_id: str) -> dict[str, Any]:
    return {"type": "profile", "id": profile_id}


def duplicate_profile_id(errors: list[KlaviyoError]) -> str | None:
    for error in errors:
        value = error.meta.get("duplicate_profile_id")
        if isinstance(value, str) and value:
            return value
    return None


def phone_only_refused(attributes: dict[str, Any], problem: Result) -> Result:
    """A phone alone is an identifier only in accounts with SMS set up: say so."""
    phone_only = set(attributes) & {"email", "phone_number", "external_id"} == {"phone_number"}
    if phone_only and problem.reason == outcomes.NO_IDENTIFIER.text:
        return outcomes.PHONE_ONLY_REFUSED(errors=problem.errors, klaviyo_status=400)
    return problem
