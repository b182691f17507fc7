"""Klaviyo's bulk profile import: one job creates or updates up to 10,000 profiles.

A job is submitted, polled until Klaviyo has processed it (within the lead's budget), and
read back: the profiles it touched, and the import errors of the profiles it refused. Each
submitted item gets its own outcome, matched back by profile id or by the identifier it
was sent with.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import outcomes
from .context import Context
from .klaviyo import CLOCK_SKEW_SECONDS
from .lookup import all_pages, key
from .outcomes import KlaviyoError, Result

MAX_PROFILES_PER_IMPORT = 10_000
# The job's payload limit is 5 MB and a profile's 100 KB; keep a margin for the envelope.
MAX_IMPORT_BYTES = 5 * 1024 * 1024 - 64 * 1024
MAX_PROFILE_BYTES = 100 * 1024
JOBS = "/api/profile-bulk-import-jobs"
# Polls back off from 1 s to at most 15 s: a job of thousands takes seconds to minutes.
FIRST_POLL_SECONDS = 1.0
LONGEST_POLL_SECONDS = 15.0
_ITEM_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")
# Identifiers that find a created profile again, in the order Klaviyo matches them.
IDENTIFIERS = ("email", "phone_number", "external_id")


@dataclass
class Imported:
    """Per submitted item: the profile as the job left it, or the errors that refused it."""

    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, list[KlaviyoError]] = field(default_factory=dict)
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


def run(ctx: Context, items: list[dict[str, Any]], *, repeatable: bool = True) -> Imported:
    """Import ``items`` (profile resources, by id or by identifiers) in one job.

    Raises a retryable result when Klaviyo has not finished the job within the budget: the
    queue brings the leads back. A job that creates profiles is not ``repeatable``: sent
    twice it would make a second profile for a lead known by its external id, and report
    what the first job made as a duplicate. When its answer is lost, the job Klaviyo took
    is looked for instead of sending it again; if it cannot be told, the leads come back
    with a retryable result that says so (effect unknown), and their redelivery looks
    for the profiles before it creates any.
    """
    sent_at = time.time()
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
            idempotent=repeatable,
        )
        job = response.data if isinstance(response.data, dict) else {}
    except Result as problem:
        if not problem.effect_unknown:
            raise
        found = _job_sent_since(ctx, sent_at, len(items))
        if found is None:
            raise
        job = found
    job_id = job.get("id")
    if not isinstance(job_id, str):
        raise outcomes.unreadable_response(202)
    attributes = _wait_until_processed(ctx, job_id, job.get("attributes") or {})
    imported = Imported(created_at=attributes.get("created_at"))
    query = {"additional-fields[profile]": "subscriptions", "page[size]": "100"}
    touched = all_pages(ctx, f"{JOBS}/{job_id}/profiles", query)
    _match_profiles(items, touched, imported)
    if attributes.get("failed_count"):
        errors = all_pages(ctx, f"{JOBS}/{job_id}/import-errors", {"page[size]": "100"})
        _match_errors(items, errors, imported)
    return imported


def _job_sent_since(ctx: Context, sent_at: float, count: int) -> dict[str, Any] | None:
    """The one job of ``count`` profiles Klaviyo took since ``sent_at``, if it can be told."""
    try:
        response = ctx.call("GET", JOBS, query={"sort": "-created_at", "page[size]": "20"})
    except Result:
        return None
    jobs = response.data if isinstance(response.data, list) else []
    since = sent_at - CLOCK_SKEW_SECONDS
    candidates = [
        job
        for job in jobs
        if isinstance(job, dict)
        and (job.get("attributes") or {}).get("total_count") == count
        and (created := _seconds((job.get("attributes") or {}).get("created_at"))) is not None
        and created >= since
    ]
    # Two such jobs (another container's, of the same size, at the same moment): not ours to pick.
    return candidates[0] if len(candidates) == 1 else None


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
