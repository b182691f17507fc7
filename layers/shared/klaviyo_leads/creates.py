"""Create Profile, one lead at a time: a new profile, or the duplicate it would be.

With the stack's table (``Context.ledger``), what a found profile means is decided from the
create's record (``claims``): a profile this lead's earlier attempt made is its own, reported
created; one made by anyone else is a duplicate; a create another lead is still making is "in
progress". A write whose effect is unknown is never followed by a second write before the
first is found or Klaviyo's search has settled (``settle_seconds``).

Without a table (local runs, tests of the bare client) the older judgement stands: a
redelivered lead owns a profile made after its first delivery, less a clock skew.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from . import fields as fieldmap
from . import outcomes
from .claims import Claim, ClaimLost, LedgerUnavailable, identity_of
from .config import Settings
from .context import Context
from .klaviyo import CLOCK_SKEW_SECONDS, Response
from .lead import Lead
from .outcomes import KlaviyoError, Result, success
from .profiles import WITH_SUBSCRIPTIONS, get_profile, resource, search_profiles

logger = Logger(service="klaviyo-lead-actions")

# How long Klaviyo's profile search may lag behind a create, unless the stack says otherwise
# (``Settings.search_settle_seconds``, the KlaviyoSearchSettleSeconds parameter).
SEARCH_SETTLE_SECONDS = Settings().search_settle_seconds
# How soon a create that found another request creating the same person tries again, and
# by how much that grows with each delivery of a queued lead.
CLAIM_RETRY_SECONDS = 2.0
CLAIM_BACKOFF = 4.0
MAX_CLAIM_RETRY_SECONDS = 30.0  # Klaviyo's own longest Retry-After
# The longest a create holds a person for one attempt; renewed before every write.
MAX_HOLD_SECONDS = 60.0
# How soon a lead comes back when the bundle's own table could not be reached.
RECORD_RETRY_SECONDS = 5.0


def create_profile(ctx: Context, lead: Lead) -> Result:
    """Create a new profile in your Klaviyo account."""
    attributes = new_profile(ctx, lead)
    if ctx.ledger is None:
        return _create_unrecorded(ctx, attributes)
    return _create_recorded(ctx, attributes)


def new_profile(ctx: Context, lead: Lead) -> dict[str, Any]:
    """The attributes of the profile to create; at least one identifier."""
    attributes = lead.profile_attributes(ctx.settings.default_phone_region)
    if not any(attributes.get(k) for k in ("email", "phone_number", "external_id")):
        raise outcomes.NO_IDENTIFIER()
    return attributes


def klaviyo_refuses_duplicates(attributes: dict[str, Any]) -> bool:
    """Klaviyo answers 409 for an email or phone it knows; an external id can repeat."""
    return bool(attributes.get("email") or attributes.get("phone_number"))


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
    attributes: dict[str, Any],
    existing: dict[str, Any] | str | None,
    errors: list[KlaviyoError] | None = None,
) -> Result:
    """The lead is a duplicate of ``existing`` (the profile, or only its id): the reason says
    which of the lead's identifiers the profile has, when that is known."""
    if isinstance(existing, dict):
        profile: dict[str, Any] | None = existing
        existing_id: str | None = str(existing["id"])
    else:
        profile, existing_id = None, existing
    if not klaviyo_refuses_duplicates(attributes):
        return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, existing_id, errors)
    identifier = matched_identifier(attributes, profile)
    return duplicate(outcomes.DUPLICATE_PROFILE, existing_id, errors, identifier=identifier)


def matched_identifier(attributes: dict[str, Any], profile: dict[str, Any] | None) -> str:
    """Which of the lead's email and phone number the existing profile has, in words."""
    email = bool(attributes.get("email"))
    phone = bool(attributes.get("phone_number"))
    known = (profile or {}).get("attributes") or {}
    if email and phone and known:
        same_email = str(known.get("email") or "").lower() == str(attributes["email"]).lower()
        same_phone = known.get("phone_number") == attributes["phone_number"]
        if same_email or same_phone:
            email, phone = same_email, same_phone
        else:
            known = {}
    if email and phone:
        return "email and phone number" if known else "email or phone number"
    return "email" if email else "phone number"


def identified_duplicate(
    ctx: Context, attributes: dict[str, Any], existing_id: str | None, errors: list[KlaviyoError]
) -> Result:
    """Klaviyo's 409 names the profile, not the identifier it matched: when the lead has both,
    one read of the profile tells (without it, the reason says "email or phone number")."""
    profile = None
    if existing_id and attributes.get("email") and attributes.get("phone_number"):
        try:
            profile = get_profile(ctx, existing_id)
        except Result:
            profile = None  # the duplicate stands; only which identifier stays unsaid
    return duplicate_of(attributes, profile or existing_id, errors)


def owner_of(ctx: Context) -> str:
    """Who a create record belongs to: what the lead arrived as, the same on each retry."""
    return ctx.origin_id or f"attempt:{uuid.uuid4()}"


def hold_seconds(ctx: Context) -> float:
    """How long others wait for this attempt before they look for themselves: while it may
    still write (its budget, at most ``MAX_HOLD_SECONDS``: it renews the hold before each
    write), then until the search shows what it wrote."""
    return min(ctx.budget.remaining(), MAX_HOLD_SECONDS) + settle_seconds(ctx)


def settle_seconds(ctx: Context) -> float:
    """How long Klaviyo's search may take to show a write, as the stack is told."""
    return ctx.settings.search_settle_seconds


def record_unavailable() -> Result:
    return outcomes.RECORD_UNAVAILABLE(
        seconds=int(RECORD_RETRY_SECONDS), retry_after=RECORD_RETRY_SECONDS
    )


def in_progress(ctx: Context, claim: Claim, now: float, job_running: bool = False) -> Result:
    """Another lead is creating the person: come back soon, and later each time (a queued
    lead has five deliveries to outwait a holder that went away), never after a hold still
    running (unless a job of its is running: that ends when Klaviyo is done with it). Once
    the hold has passed, the back-off alone: a holder that is still at work (it keeps its
    record) is outwaited over the deliveries, not in five one-second hand-backs."""
    wait = min(MAX_CLAIM_RETRY_SECONDS, CLAIM_RETRY_SECONDS * CLAIM_BACKOFF ** (ctx.delivery - 1))
    if not job_running and claim.held(now):
        wait = min(wait, max(1.0, claim.hold_until - now))
    return outcomes.CREATE_IN_PROGRESS(retry_after=wait)


# -- with the create's record ---------------------------------------------------------------


def _create_recorded(ctx: Context, attributes: dict[str, Any]) -> Result:
    assert ctx.ledger is not None
    identity = identity_of(attributes)
    assert identity is not None  # new_profile guarantees one
    owner = owner_of(ctx)
    try:
        claim = ctx.ledger.take(identity, owner, hold_seconds(ctx))
        if not claim.mine:
            claim = _after_another(ctx, claim, attributes, owner)
    except LedgerUnavailable:
        raise record_unavailable() from None
    return _create_as_owner(ctx, claim, attributes)


def _after_another(ctx: Context, claim: Claim, attributes: dict[str, Any], owner: str) -> Claim:
    """Another lead's record stands: its profile is a duplicate, its create in progress; one
    whose holder went away is ours once the search shows it made nothing."""
    assert ctx.ledger is not None
    now = ctx.ledger.clock()
    if claim.profile_id:
        raise duplicate_of(attributes, claim.profile_id)
    known = others_job_outcome(ctx, claim, attributes)
    if known is not None:
        raise known
    if claim.held(now):
        raise in_progress(ctx, claim, now)
    _wait_until_settled(ctx, claim.written_at or claim.started_at)
    existing = newest_profile(ctx, attributes)
    if existing is not None:
        raise duplicate_of(attributes, existing)
    taken = ctx.ledger.take_over(claim, owner, hold_seconds(ctx))
    if taken is None:
        raise in_progress(ctx, claim, now)
    return taken


def _create_as_owner(ctx: Context, claim: Claim, attributes: dict[str, Any]) -> Result:
    """This lead's create: a retry first finds what its earlier attempts made."""
    assert ctx.ledger is not None
    refuses = klaviyo_refuses_duplicates(attributes)
    wrote_before = claim.written_at is not None or claim.job_ref is not None
    if claim.profile_id:
        return success(get_profile(ctx, claim.profile_id) or _reference(claim.profile_id))
    if wrote_before:
        if claim.job_ref:
            found = earlier_job_outcome(ctx, claim, attributes)
            if found is not None:
                return found
        if not refuses:
            # Nothing would stop a second profile: the search must have caught up first.
            _wait_until_settled(ctx, claim.written_at or claim.started_at)
            ours = _created_since(ctx, attributes, claim.started_at)
            if ours is not None:
                return own(ctx, claim, ours)
        # An email or phone: sent again, Klaviyo's 409 names the profile an earlier write made.
        _mark_writing(ctx, claim)
    elif not refuses:
        # Klaviyo would make a second profile for an external id: look for it first.
        existing = newest_profile(ctx, attributes)
        if existing is not None:
            ctx.ledger.release(claim)
            return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, existing["id"])
    return _write(ctx, claim, attributes, wrote_before)


def _write(ctx: Context, claim: Claim, attributes: dict[str, Any], wrote_before: bool) -> Result:
    assert ctx.ledger is not None
    refuses = klaviyo_refuses_duplicates(attributes)
    try:
        sent_at = ctx.wall()
        response = _post_profile(ctx, attributes)
    except Result as problem:
        if not problem.effect_unknown:
            if not wrote_before:
                ctx.ledger.release(claim)  # nothing reached Klaviyo, or it refused the lead
            raise
        # The create may have reached Klaviyo before its answer was lost. Look before
        # sending it again; the record says a write was sent, should this attempt stop.
        ours = _created_since(ctx, attributes, claim.started_at)
        if ours is None and not refuses:
            _wait_until_settled(ctx, sent_at)
            ours = _created_since(ctx, attributes, claim.started_at)
        if ours is not None:
            return own(ctx, claim, ours)
        wrote_before = True
        _mark_writing(ctx, claim)
        response = _post_profile(ctx, attributes)
    if response.status == 201:
        return own(ctx, claim, resource(response))
    existing_id = duplicate_profile_id(response.errors)
    if wrote_before and existing_id:
        existing = get_profile(ctx, existing_id)
        if existing and created_after(existing, claim.started_at - CLOCK_SKEW_SECONDS):
            return own(ctx, claim, existing)  # an earlier write of this lead made it
    ctx.ledger.release(claim)
    return identified_duplicate(ctx, attributes, existing_id, response.errors)


def own(ctx: Context, claim: Claim, profile: dict[str, Any]) -> Result:
    """This lead made the profile: recorded, so every later look at the person agrees."""
    assert ctx.ledger is not None
    ctx.ledger.created(claim, profile["id"])
    return success(profile)


def _mark_writing(ctx: Context, claim: Claim) -> None:
    assert ctx.ledger is not None
    try:
        ctx.ledger.writing(claim, hold_seconds(ctx))
    except ClaimLost:
        raise in_progress(ctx, claim, ctx.wall()) from None
    except LedgerUnavailable:
        raise record_unavailable() from None


def _wait_until_settled(ctx: Context, written_at: float) -> None:
    """Wait until a write sent at ``written_at`` shows in the search; too long goes back."""
    now = ctx.wall()
    wait = written_at + settle_seconds(ctx) - now
    if wait <= 0:
        return
    if wait + 1.0 > ctx.budget.remaining():
        raise outcomes.CREATE_UNSETTLED(seconds=int(wait) + 1, retry_after=wait)
    ctx.client.sleep(wait)


def earlier_job_outcome(
    ctx: Context, claim: Claim, attributes: dict[str, Any], cache: dict[str, Any] | None = None
) -> Result | None:
    """What the import job an earlier attempt sent did for this lead; None when it cannot be
    told (its answer was lost, or the job did not report the lead): the search decides."""
    from . import imports  # the bulk path's module; a one-lead create rarely needs it

    assert ctx.ledger is not None and claim.job_ref is not None
    try:
        job_ids = ctx.ledger.jobs_of(claim.job_ref)
    except LedgerUnavailable:
        raise record_unavailable() from None
    for job_id in job_ids:
        try:
            done = cache.get(job_id) if cache is not None else None
            if done is None:
                done = imports.read_earlier_job(ctx, job_id)
                if cache is not None:
                    cache[job_id] = done
        except Result:
            raise  # unfinished: others see the job running and wait for it
        answer = done.outcome_for(attributes)
        if answer is None:
            continue
        if isinstance(answer, Result):
            return answer
        if created_after(answer, claim.started_at - CLOCK_SKEW_SECONDS):
            return own(ctx, claim, answer)
        return duplicate_of(attributes, answer)
    return None


def others_job_outcome(
    ctx: Context, claim: Claim, attributes: dict[str, Any], cache: dict[str, Any] | None = None
) -> Result | None:
    """What another lead's import job says about the person: the profile it made (a
    duplicate, with its id), or, while the job is still to finish, "in progress" however long
    ago its holder went away. None when no job of the record tells."""
    from . import imports

    assert ctx.ledger is not None
    if not claim.job_ref:
        return None
    for job_id in ctx.ledger.jobs_of(claim.job_ref):
        done = cache.get(job_id) if cache is not None else None
        if done is None:
            if not imports.finished(ctx, job_id):
                return in_progress(ctx, claim, ctx.wall(), job_running=True)
            done = imports.read_earlier_job(ctx, job_id)
            if cache is not None:
                cache[job_id] = done
        answer = done.outcome_for(attributes)
        if isinstance(answer, dict):
            return duplicate_of(attributes, answer)
    return None


def _reference(profile_id: str) -> dict[str, Any]:
    return {"type": "profile", "id": profile_id}


# -- without a record ---------------------------------------------------------------------


def _create_unrecorded(ctx: Context, attributes: dict[str, Any]) -> Result:
    # Since when a profile for this lead could be one we made: this attempt, or the lead's
    # first delivery when this is a redelivery.
    now = ctx.wall()
    since = min(now, ctx.first_seen_at or now)
    maybe_ours = ctx.redelivered
    if not klaviyo_refuses_duplicates(attributes):
        # Klaviyo would make a second profile for an external id: look for it first.
        existing = newest_profile(ctx, attributes)
        if existing is not None:
            if maybe_ours and created_after(existing, since - CLOCK_SKEW_SECONDS):
                return success(existing)
            return duplicate(outcomes.DUPLICATE_EXTERNAL_ID, existing["id"])
    try:
        sent_at = ctx.wall()
        response = _post_profile(ctx, attributes)
    except Result as problem:
        if not problem.effect_unknown:
            raise
        ours = _created_since(ctx, attributes, since)
        if ours is None and not klaviyo_refuses_duplicates(attributes):
            wait = sent_at + settle_seconds(ctx) - ctx.wall()
            if wait > 0:
                if wait + 1.0 > ctx.budget.remaining():
                    raise outcomes.CREATE_UNCONFIRMED() from None
                ctx.client.sleep(wait)
            ours = _created_since(ctx, attributes, since)
        if ours is not None:
            return success(ours)
        maybe_ours = True
        response = _post_profile(ctx, attributes)
    if response.status == 201:
        return success(resource(response))
    existing_id = duplicate_profile_id(response.errors)
    if maybe_ours and existing_id:
        existing = get_profile(ctx, existing_id)
        if existing and created_after(existing, since - CLOCK_SKEW_SECONDS):
            return success(existing)
    return identified_duplicate(ctx, attributes, existing_id, response.errors)


# -- Klaviyo -------------------------------------------------------------------------------


def _post_profile(ctx: Context, attributes: dict[str, Any]) -> Response:
    try:
        return ctx.call(
            "POST",
            "/api/profiles",
            query=WITH_SUBSCRIPTIONS,
            body={"data": {"type": "profile", "attributes": attributes}},
            expect=(201,),
            handled=(409,),
            idempotent=False,
        )
    except Result as problem:
        raise phone_only_refused(attributes, problem) from None


def newest_profile(ctx: Context, attributes: dict[str, Any]) -> dict[str, Any] | None:
    """The newest profile Klaviyo has for the person (its first identifier), if any."""
    for identifier in ("email", "phone_number", "external_id"):
        value = attributes.get(identifier)
        if value:
            newest = search_profiles(ctx, identifier, value, "-created", limit=1)
            return newest[0] if newest else None
    return None


def _created_since(ctx: Context, attributes: dict[str, Any], since: float) -> dict[str, Any] | None:
    """The profile an earlier attempt made, if Klaviyo has it: same identifier, born since."""
    newest = newest_profile(ctx, attributes)
    if newest is not None and created_after(newest, since - CLOCK_SKEW_SECONDS):
        return newest
    return None


def duplicate_profile_id(errors: list[KlaviyoError]) -> str | None:
    for error in errors:
        value = error.meta.get("duplicate_profile_id")
        if isinstance(value, str) and value:
            return value
    return None


def created_after(profile: dict[str, Any], timestamp: float) -> bool:
    created = fieldmap.read_path(profile, "attributes.created")
    try:
        return datetime.fromisoformat(str(created)).timestamp() >= timestamp
    except ValueError:
        return False


def phone_only_refused(attributes: dict[str, Any], problem: Result) -> Result:
    """A phone alone is an identifier only in accounts with SMS set up: say so."""
    phone_only = set(attributes) & {"email", "phone_number", "external_id"} == {"phone_number"}
    if phone_only and problem.reason == outcomes.NO_IDENTIFIER.text:
        return outcomes.PHONE_ONLY_REFUSED(errors=problem.errors, klaviyo_status=400)
    return problem
