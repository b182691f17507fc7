"""Klaviyo's bulk profile import: one job creates or updates up to 10,000 profiles.

A job is submitted, polled until Klaviyo has processed it (within the lead's budget), and
read back: the profiles it touched, and the import errors of the profiles it refused. Each
submitted item gets its own outcome, matched back by profile id or by the identifier it
was sent with. A job refused because of some of its profiles is sent again without them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.create.identity import Person
from klaviyo_leads.actions.lookup import all_pages, key
from klaviyo_leads.context import Context
from klaviyo_leads.klaviyo.client import CLOCK_SKEW_SECONDS
from klaviyo_leads.outcomes import KlaviyoError, Result

MAX_PROFILES_PER_IMPORT = 10_000
# The job's payload limit is 5 MB and a profile's 100 KB; keep a margin for the envelope.
MAX_IMPORT_BYTES = 5 * 1024 * 1024 - 64 * 1024
MAX_PROFILE_BYTES = 100 * 1024
JOBS = "/api/profile-bulk-import-jobs"
# Polls back off from 1 s to at most 15 s: a job of thousands takes seconds to minutes.
FIRST_POLL_SECONDS = 1.0
LONGEST_POLL_SECONDS = 15.0
# Requests for one job in all: a 400 naming some profiles sends the rest again without them.
MAX_IMPORT_ROUNDS = 3
_ITEM_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")
# Identifiers that find a created profile again, in the order Klaviyo matches them.
IDENTIFIERS = ("email", "phone_number", "external_id")


@dataclass
class Imported:
    """Per submitted item: the profile as the job left it, the errors that refused it, or
    the result of a round that did not import it (an item whose own errors are known keeps
    them when a later round fails for the rest)."""

    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, list[KlaviyoError]] = field(default_factory=dict)
    problems: dict[int, Result] = field(default_factory=dict)
    created_at: str | None = None


def fits(item: dict[str, Any]) -> bool:
    """Whether one profile may go through the import (Klaviyo's 100 KB per profile)."""
    return len(json.dumps(item, separators=(",", ":")).encode()) <= MAX_PROFILE_BYTES


def batches(items: list[dict[str, Any]]) -> list[list[int]]:
    """Positions of ``items`` in jobs that stay within the count and payload limits."""
    jobs: list[list[int]] = []
    current: list[int] = []
    size = 0
    for position, item in enumerate(items):
        item_size = len(json.dumps(item, separators=(",", ":")).encode()) + 1
        if current and (
            len(current) >= MAX_PROFILES_PER_IMPORT or size + item_size > MAX_IMPORT_BYTES
        ):
            jobs.append(current)
            current, size = [], 0
        current.append(position)
        size += item_size
    if current:
        jobs.append(current)
    return jobs


def run(
    ctx: Context,
    items: list[dict[str, Any]],
    *,
    repeatable: bool = True,
    taken: Callable[[str], Any] | None = None,
    before_send: Callable[[], None] | None = None,
) -> Imported:
    """Import ``items`` (profile resources, by id or by identifiers) in one job.

    Raises a retryable result when Klaviyo has not finished the job within the budget: the
    queue brings the leads back. A job that creates profiles is not ``repeatable``: sent
    twice it would make a second profile for a lead known by its external id, and report
    what the first job made as a duplicate. When its answer is lost or unreadable, the job
    Klaviyo took is looked for instead of sending it again; if it cannot be told, the leads
    come back with a retryable result that says so (effect unknown), and their redelivery
    looks for the profiles before it creates any. ``taken`` is told every job Klaviyo may
    have taken for these items (all the candidates when a lost answer leaves several), before
    any poll; ``before_send`` runs right before each submission goes out.

    Klaviyo validates a job all or nothing: one profile that fails validation (a malformed
    email) makes the request a 400 and nothing is imported. When the 400's errors point at
    profiles, those items get their own errors and the rest is sent again without them, for
    at most ``MAX_IMPORT_ROUNDS`` requests (a 400 is a definite "nothing imported", so
    sending again is safe). A 400 about the request as a whole fails every item alike.
    """
    refused: dict[int, list[KlaviyoError]] = {}
    left = list(range(len(items)))  # the positions of ``items`` the next round sends
    try:
        for _ in range(MAX_IMPORT_ROUNDS):
            sent = [items[position] for position in left]
            job, named = _submit(ctx, sent, repeatable, taken, before_send)
            if job is not None:
                if taken is not None:
                    taken(job["id"])  # recorded before the polls: a redelivery reads this job
                imported = _read_job(ctx, job, sent)
                return Imported(
                    profiles={left[i]: profile for i, profile in imported.profiles.items()},
                    errors={**refused, **{left[i]: e for i, e in imported.errors.items()}},
                    created_at=imported.created_at,
                )
            refused.update({left[i]: errors for i, errors in named.items()})
            left = [position for i, position in enumerate(left) if i not in named]
            if not left:
                return Imported(errors=refused)
    except Result as problem:
        if not refused:
            raise
        # The items refused earlier keep their own reasons; the rest share this round's.
        return Imported(errors=refused, problems=dict.fromkeys(left, problem))
    # Every round named other profiles: the rest was never imported, and comes back.
    again = outcomes.IMPORT_REFUSED_FOR_OTHERS(klaviyo_status=400)
    return Imported(errors=refused, problems=dict.fromkeys(left, again))


def _submit(
    ctx: Context,
    items: list[dict[str, Any]],
    repeatable: bool,
    taken: Callable[[str], Any] | None,
    before_send: Callable[[], None] | None,
) -> tuple[dict[str, Any] | None, dict[int, list[KlaviyoError]]]:
    """Send one job: the job Klaviyo took, or no job and the errors of the items a 400
    named. Raises what fails every item alike."""
    sent_at = ctx.wall()
    try:
        response = ctx.call(
            "POST",
            JOBS,
            body={
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": items}},
                }
            },
            expect=(202,),
            handled=(400,),
            idempotent=repeatable,
            before_send=before_send,
        )
    except Result as problem:
        if not problem.effect_unknown:
            raise
        return _job_sent_since(ctx, sent_at, len(items), taken, problem), {}
    if response.status == 400:
        named = _named_items(response.errors, len(items))
        if not named:
            raise outcomes.from_klaviyo_answer(400, response.errors)
        return None, named
    job = response.data if isinstance(response.data, dict) else {}
    if not isinstance(job.get("id"), str):
        # A 202 is a job Klaviyo took and runs: not a final error, and not to be sent again.
        unconfirmed = outcomes.IMPORT_UNCONFIRMED(klaviyo_status=202, effect_unknown=True)
        job = _job_sent_since(ctx, sent_at, len(items), taken, unconfirmed)
    return job, {}


def _named_items(errors: list[KlaviyoError], count: int) -> dict[int, list[KlaviyoError]]:
    """The errors of a refused job by the item each points at; empty when one of them is
    about the request as a whole (or points at no item that was sent)."""
    named: dict[int, list[KlaviyoError]] = {}
    for error in errors:
        found = _ITEM_POINTER.match(error.pointer or "")
        if found is None or int(found.group(1)) >= count:
            return {}
        named.setdefault(int(found.group(1)), []).append(error)
    return named


def _read_job(ctx: Context, job: dict[str, Any], items: list[dict[str, Any]]) -> Imported:
    """Wait for the job Klaviyo took, then read what it did with each item."""
    job_id = job["id"]
    attributes = _wait_until_processed(ctx, job_id, job.get("attributes") or {})
    imported = Imported(created_at=attributes.get("created_at"))
    query = {"additional-fields[profile]": "subscriptions", "page[size]": "100"}
    touched = all_pages(ctx, f"{JOBS}/{job_id}/profiles", query)
    _match_profiles(items, touched, imported)
    if attributes.get("failed_count"):
        errors = all_pages(ctx, f"{JOBS}/{job_id}/import-errors", {"page[size]": "100"})
        _match_errors(items, errors, imported)
    return imported


def _job_sent_since(
    ctx: Context,
    sent_at: float,
    count: int,
    taken: Callable[[str], Any] | None,
    problem: Result,
) -> dict[str, Any]:
    """The job of ``count`` profiles Klaviyo took since ``sent_at``, when its answer was
    lost. Every candidate is recorded (``taken``): a redelivery reads them all and finds the
    one that carried its leads. Raises ``problem`` when no single job can be told."""
    try:
        response = ctx.call("GET", JOBS, query={"sort": "-created_at", "page[size]": "20"})
    except Result:
        raise problem from None
    jobs = response.data if isinstance(response.data, list) else []
    since = sent_at - CLOCK_SKEW_SECONDS  # our clock against Klaviyo's: only a first sieve
    candidates = [
        job
        for job in jobs
        if isinstance(job, dict)
        and isinstance(job.get("id"), str)
        and (job.get("attributes") or {}).get("total_count") == count
        and (created := _seconds((job.get("attributes") or {}).get("created_at"))) is not None
        and created >= since
    ]
    if taken is not None:
        for job in candidates:
            taken(job["id"])
    if len(candidates) != 1:
        # None (it was not taken), or another container's of the same size at the same
        # moment: which one is ours is read from their profiles on the redelivery.
        problem.effect_unknown = bool(candidates) or problem.effect_unknown
        raise problem
    return candidates[0]


def _seconds(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def _wait_until_processed(ctx: Context, job_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
    wait = FIRST_POLL_SECONDS
    while attributes.get("status") not in ("complete", "cancelled"):
        if wait + 1.0 > ctx.budget.remaining():
            raise outcomes.IMPORT_UNFINISHED()
        ctx.client.sleep(wait)
        wait = min(LONGEST_POLL_SECONDS, wait * 2)
        response = ctx.call("GET", f"{JOBS}/{job_id}")
        data = response.data if isinstance(response.data, dict) else {}
        attributes = data.get("attributes") or {}
    if attributes.get("status") == "cancelled":
        raise outcomes.IMPORT_CANCELLED()
    return attributes


def _identity(attributes: dict[str, Any]) -> tuple[str, str] | None:
    for name in IDENTIFIERS:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return name, key(name, value)
    return None


def _match_profiles(
    items: list[dict[str, Any]], touched: list[dict[str, Any]], imported: Imported
) -> None:
    by_id = {p["id"]: p for p in touched}
    by_identity: dict[tuple[str, str], dict[str, Any]] = {}
    for profile in touched:
        attributes = profile.get("attributes") or {}
        for name in IDENTIFIERS:
            value = attributes.get(name)
            if isinstance(value, str) and value:
                by_identity.setdefault((name, key(name, value)), profile)
    for position, item in enumerate(items):
        found = by_id.get(item.get("id") or "")
        identity = _identity(item.get("attributes") or {})
        if found is None and identity is not None:
            found = by_identity.get(identity)
        if found is not None:
            imported.profiles[position] = found


def _match_errors(
    items: list[dict[str, Any]], errors: list[dict[str, Any]], imported: Imported
) -> None:
    by_identity = {
        identity: position
        for position, item in enumerate(items)
        if (identity := _identity(item.get("attributes") or {})) is not None
    }
    by_id = {item["id"]: position for position, item in enumerate(items) if item.get("id")}
    for error in errors:
        attributes = error.get("attributes") or {}
        as_klaviyo = KlaviyoError.from_json({**attributes, "id": error.get("id")})
        found = _ITEM_POINTER.match(as_klaviyo.pointer or "")
        position: int | None = int(found.group(1)) if found else None
        payload = attributes.get("original_payload")
        if position is None and isinstance(payload, dict):
            position = by_id.get(str(payload.get("id") or ""))
            identity = _identity(payload.get("attributes") or payload)
            if position is None and identity is not None:
                position = by_identity.get(identity)
        if position is not None and position < len(items):
            imported.errors.setdefault(position, []).append(as_klaviyo)
            imported.profiles.pop(position, None)


def outcome(imported: Imported, position: int) -> Result | dict[str, Any]:
    """An item's profile, or the result that says why the job did not take it."""
    if position in imported.problems:
        return imported.problems[position]
    if position in imported.errors:
        errors = imported.errors[position]
        if any(e.code == "duplicate_profile" for e in errors):
            # The import matched one profile by one identifier while another holds the
            # other; unlike a 409, its error does not say which profile that is.
            return outcomes.IDENTITIES_SPLIT(errors=errors)
        return outcomes.from_klaviyo_answer(400, errors)
    if position in imported.profiles:
        return imported.profiles[position]
    return outcomes.IMPORT_LOST()


# -- a job sent by an earlier attempt --------------------------------------------------------


@dataclass
class Job:
    """A job read back after the fact (a redelivery finding what its earlier attempt sent)."""

    touched: list[dict[str, Any]]
    errors: list[dict[str, Any]]

    def outcome_for(self, attributes: dict[str, Any]) -> Result | dict[str, Any] | None:
        """The profile the job left for a lead with these attributes, the result that says
        why the job refused it, or None when the job did not carry it."""
        item = {"type": "profile", "attributes": attributes}
        imported = Imported()
        _match_profiles([item], self.touched, imported)
        _match_errors([item], self.errors, imported)
        if 0 in imported.errors or 0 in imported.profiles:
            return outcome(imported, 0)
        return None

    def outcome_for_person(self, person: Person) -> Result | dict[str, Any] | None:
        """As ``outcome_for``, for the lead a person is; else the profile the job left
        holding any of the person's identifiers (another lead's, sharing one with it)."""
        own = self.outcome_for(dict(person.values()))
        if own is not None:
            return own
        for profile in self.touched:
            if person.shares(profile):
                return profile
        return None


def read_earlier_job(ctx: Context, job_id: str) -> Job:
    """An earlier attempt's job: waited for within the budget (``IMPORT_UNFINISHED`` when it
    is not done), then its profiles and its import errors."""
    response = ctx.call("GET", f"{JOBS}/{job_id}")
    data = response.data if isinstance(response.data, dict) else {}
    attributes = _wait_until_processed(ctx, job_id, data.get("attributes") or {})
    query = {"additional-fields[profile]": "subscriptions", "page[size]": "100"}
    touched = all_pages(ctx, f"{JOBS}/{job_id}/profiles", query)
    errors = (
        all_pages(ctx, f"{JOBS}/{job_id}/import-errors", {"page[size]": "100"})
        if attributes.get("failed_count")
        else []
    )
    return Job(touched, errors)


def finished(ctx: Context, job_id: str) -> bool:
    """Whether Klaviyo is done with a job (complete or cancelled; one it does not know)."""
    response = ctx.call("GET", f"{JOBS}/{job_id}", handled=(404,))
    if response.status == 404:
        return True
    data = response.data if isinstance(response.data, dict) else {}
    return (data.get("attributes") or {}).get("status") in ("complete", "cancelled")
