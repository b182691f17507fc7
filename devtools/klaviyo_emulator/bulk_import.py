"""Bulk profile import: ``POST /api/profile-bulk-import-jobs`` and the job's read routes.

The body is the spec's ``ProfileImportJobCreateQuery``: up to the operation's "Accepts up to
10,000 profiles per request", each profile at most "100KB" ("The maximum allowed payload size
per-profile is 100KB"), each an upsert object like Create or Update Profile's
(``ProfileUpsertQueryResourceObject``), optionally added to ``relationships.lists``.

What is wrong with the request as a whole (its shape, a type, an unknown attribute, an
unknown list, an oversized profile) is a 400 and no job. Synchronous validation is all or
nothing too: one profile with an invalid email or phone number (the checks Create Profile
makes), or one that could be created and has no identifier, refuses the whole request with
a 400 and nothing is imported; the errors name every such profile (``source.pointer``
``/data/attributes/profiles/data/<i>/...``). Klaviyo does this (rudderlabs/rudder-server PR
#7107, found in production: one malformed email refused the batch; the fix strips the named
profiles and sends the rest again). Only what is decided while the job runs is an
``import-error`` of the job while the others go through: an unknown ``id``, an identifier
that belongs to another profile, or an email and a phone number held by two profiles.

The job answers 202 ``queued``; it starts ``import_delay`` seconds later (``processing``),
takes ``1 / import_rate`` seconds per profile when ``import_rate`` is set, and is
``complete`` when every profile is done. Its profiles and errors show as they are
processed.

"The Bulk Import Profiles API does not support setting fields to null to clear them. Only
fields explicitly provided with non-null values will be updated" (Bulk Import Profiles API
guide), so null values are dropped before the upsert.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from .attributes import check_email, check_phone, clean_attributes, clean_patch_meta
from .errors import ApiError, ApiErrors, invalid, not_found
from .filters import matches
from .model import ImportFailure, ImportItem, ImportJob, iso
from .protocol import Context, Reply, profile_options, single, url_for
from .query import paginate, sort_items
from .resources import identifier, list_resource, profile_resource, relationship, sparse
from .state import IMPORT_PROFILES, Store

JOB_TYPE = "profile-bulk-import-job"
ROUTE = "/api/profile-bulk-import-jobs"
_ATTRIBUTES = ("profiles",)
_PROFILE_KEYS = ("type", "id", "attributes", "meta")


def _object(value: Any, pointer: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object.", pointer=pointer)
    return value


# ---- the request ------------------------------------------------------------------------------


def parse_job(ctx: Context) -> tuple[list[ImportItem], list[str]]:
    """The job's profiles and list ids; 400 for what refuses the whole request."""
    body = ctx.body
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != JOB_TYPE:
        raise invalid(f"'type' must be '{JOB_TYPE}'.", pointer="/data/type")
    attributes = _object(data.get("attributes"), "/data/attributes", "attributes")
    for key in attributes:
        if key not in _ATTRIBUTES:
            raise invalid(
                f"'{key}' is not a valid field for the resource '{JOB_TYPE}'.",
                pointer=f"/data/attributes/{key}",
            )
    profiles = _object(attributes.get("profiles"), "/data/attributes/profiles", "profiles")
    raw = profiles.get("data")
    if not isinstance(raw, list) or not raw:
        raise invalid("At least one profile is required.", pointer=IMPORT_PROFILES)
    most = ctx.rules.item_limit
    if most is not None and len(raw) > most:
        raise invalid(f"A job can contain at most {most} profiles.", pointer=IMPORT_PROFILES)
    items = [_parse_profile(item, i, ctx.rules.item_body_limit) for i, item in enumerate(raw)]
    list_ids = _parse_lists(data.get("relationships"), ctx.store)
    refused = [error for item in items for error in _refusals(item, ctx.store)]
    if refused and ctx.store.config.import_all_or_nothing:
        # All or nothing: one profile that fails validation refuses the whole request.
        raise ApiErrors(refused)
    return items, list_ids


def _refusals(item: ImportItem, store: Store) -> list[ApiError]:
    """What synchronous validation refuses in one profile: its email, its phone number, and,
    for a profile that may be created, having no identifier."""
    at = f"{IMPORT_PROFILES}/{item.index}/attributes"
    found: list[ApiError] = []
    for name, check in (("email", check_email), ("phone_number", check_phone)):
        value = item.attributes.get(name)
        if value is None:
            continue
        try:
            check(value, f"{at}/{name}")
        except ApiError as exc:
            found.append(exc)
    if item.profile_id is None and not found:
        try:
            store.check_create_identifiers(item.attributes, pointer=at)
        except ApiError as exc:
            found.append(exc)
    return found


def _parse_profile(raw: Any, index: int, size_limit: int | None) -> ImportItem:
    where = f"{IMPORT_PROFILES}/{index}"
    item = _object(raw, where, "profile")
    if item.get("type") != "profile":
        raise invalid("'type' must be 'profile'.", pointer=f"{where}/type")
    for key in item:
        if key not in _PROFILE_KEYS:
            raise invalid(f"'{key}' is not a valid member of a profile.", pointer=f"{where}/{key}")
    if size_limit is not None:
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode())
        if size > size_limit:
            raise invalid(
                f"The profile is {size} bytes; the limit per profile is {size_limit} bytes.",
                pointer=where,
            )
    profile_id = item.get("id")
    if profile_id is not None and not isinstance(profile_id, str):
        raise invalid("'id' must be a string.", pointer=f"{where}/id")
    if "attributes" not in item:
        raise invalid("'attributes' is a required field.", pointer=f"{where}/attributes")
    attributes = clean_attributes(
        item["attributes"], pointer=f"{where}/attributes", extra=("_kx",), check_formats=False
    )
    attributes.pop("_kx", None)  # an exchange id; the emulator cannot resolve it
    meta = clean_patch_meta(item.get("meta"), pointer=f"{where}/meta")
    return ImportItem(index, item, profile_id or None, _without_nulls(attributes), meta)


def _without_nulls(attributes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value is not None:
            out[key] = value
    return out


def _parse_lists(relationships: Any, store: Store) -> list[str]:
    if relationships is None:
        return []
    rel = _object(relationships, "/data/relationships", "relationships")
    if rel.get("lists") is None:
        return []
    lists = _object(rel["lists"], "/data/relationships/lists", "lists")
    refs = lists.get("data")
    where = "/data/relationships/lists/data"
    if not isinstance(refs, list):
        raise invalid("'data' must be an array of list identifiers.", pointer=where)
    list_ids: list[str] = []
    for i, ref in enumerate(refs):
        ref = _object(ref, f"{where}/{i}", "list")
        if ref.get("type") != "list":
            raise invalid("'type' must be 'list'.", pointer=f"{where}/{i}/type")
        list_id = ref.get("id")
        with store.lock:
            known = isinstance(list_id, str) and list_id in store.lists
        if not known:
            raise invalid(
                f"Invalid list id: the list '{list_id}' does not exist.", pointer=f"{where}/{i}/id"
            )
        if list_id not in list_ids:
            list_ids.append(str(list_id))
    return list_ids


# ---- the job --------------------------------------------------------------------------------


def schedule(store: Store, job: ImportJob) -> None:
    """Queue the job's work on the timeline: start, each profile, completion."""
    config = store.config
    step = 1 / config.import_rate if config.import_rate > 0 else 0.0
    start = config.import_delay
    match_external_id = config.import_external_id_match

    def begin() -> None:
        job.status = "processing"
        job.started_at = store.now()

    def finish() -> None:
        job.status = "complete"
        job.completed_at = store.now()

    store.later(start, begin)
    for n, item in enumerate(job.items, start=1):
        store.later(
            start + n * step, functools.partial(_process, store, job, item, match_external_id)
        )
    store.later(start + len(job.items) * step, finish)


def _process(store: Store, job: ImportJob, item: ImportItem, match_external_id: bool) -> None:
    try:
        for refusal in _refusals(item, store):  # only left when not all or nothing
            raise refusal
        profile = store.bulk_import_profile(item, match_external_id=match_external_id)
    except ApiError as exc:
        job.failed_count += 1
        job.failures.append(
            ImportFailure(
                id=store.new_uuid(),
                code=exc.code,
                title=exc.title,
                detail=exc.detail,
                pointer=exc.pointer,
                original_payload=item.original,
            )
        )
        return
    job.completed_count += 1
    job.profile_ids[profile.id] = None
    for list_id in job.list_ids:
        if list_id in store.lists:  # membership only: consent stays as it is
            store.add_list_members(list_id, [profile.id])


# ---- resources ------------------------------------------------------------------------------


def job_resource(
    job: ImportJob, base_url: str, fields: Iterable[str] | None = None
) -> dict[str, Any]:
    attributes = {
        "status": job.status,
        "created_at": iso(job.created_at, micro=True),
        "total_count": job.total_count,
        "completed_count": job.completed_count,
        "failed_count": job.failed_count,
        "completed_at": iso(job.completed_at, micro=True),
        # Undocumented how long a job is kept; this one never expires.
        "expires_at": None,
        "started_at": iso(job.started_at, micro=True),
    }
    relationships = {
        name: relationship(base_url, "profile-bulk-import-jobs", job.id, name)
        for name in ("lists", "profiles")
    }
    relationships["lists"]["data"] = [identifier("list", list_id) for list_id in job.list_ids]
    relationships["import-errors"] = {
        "links": {"related": f"{base_url}{ROUTE}/{job.id}/import-errors/"}
    }
    return {
        "type": JOB_TYPE,
        "id": job.id,
        "attributes": sparse(attributes, fields),
        "relationships": relationships,
        "links": {"self": f"{base_url}{ROUTE}/{job.id}/"},
    }


def error_resource(failure: ImportFailure, fields: Iterable[str] | None) -> dict[str, Any]:
    attributes = {
        "code": failure.code,
        "title": failure.title,
        "detail": failure.detail,
        "source": {"pointer": failure.pointer},
        "original_payload": failure.original_payload,
    }
    return {"type": "import-error", "id": failure.id, "attributes": sparse(attributes, fields)}


# ---- handlers -------------------------------------------------------------------------------


def _job(ctx: Context, name: str = "id") -> ImportJob:
    job = ctx.store.import_jobs.get(ctx.params[name])
    if job is None:
        raise not_found(f"A profile bulk import job with id {ctx.params[name]} does not exist.")
    return job


def bulk_import_profiles(ctx: Context) -> Reply:
    items, list_ids = parse_job(ctx)
    store = ctx.store
    with store.lock:
        job = ImportJob(id=store.new_ulid(), created_at=store.now(), items=items, list_ids=list_ids)
        store.import_jobs[job.id] = job
        # The answer shows the job as submitted; the work runs from the timeline.
        resource = job_resource(job, ctx.base_url, ctx.query.fields(JOB_TYPE))
        schedule(store, job)
    return single(ctx, resource, 202)


def get_bulk_import_profiles_job(ctx: Context) -> Reply:
    with ctx.store.lock:
        job = _job(ctx, "job_id")
        reply = single(ctx, job_resource(job, ctx.base_url, ctx.query.fields(JOB_TYPE)))
        if "lists" in ctx.query.values("include"):
            assert reply.document is not None
            reply.document["included"] = [
                list_resource(
                    ctx.store.lists[list_id], ctx.base_url, fields=ctx.query.fields("list")
                )
                for list_id in job.list_ids
                if list_id in ctx.store.lists
            ]
    return reply


def _job_field(job: ImportJob, name: str) -> Any:
    return job.status if name == "status" else None


def get_bulk_import_profiles_jobs(ctx: Context) -> Reply:
    with ctx.store.lock:
        jobs = [
            job
            for job in ctx.store.import_jobs.values()
            if matches(job, ctx.query.conditions, _job_field)
        ]
        jobs = sort_items(
            jobs, lambda job: job.created_at, lambda job: job.id, ctx.query.descending
        )
        page, links = paginate(jobs, ctx.args, ctx.query.page_size, url_for(ctx, ROUTE))
        fields = ctx.query.fields(JOB_TYPE)
        data = [job_resource(job, ctx.base_url, fields) for job in page]
    return Reply(200, {"data": data, "links": links})


def _job_profiles(ctx: Context, view: str) -> tuple[list[Any], dict[str, str | None]]:
    job = _job(ctx)
    profiles = [ctx.store.profiles[pid] for pid in job.profile_ids if pid in ctx.store.profiles]
    url = url_for(ctx, f"{ROUTE}/{job.id}/{view}")
    return paginate(profiles, ctx.args, ctx.query.page_size, url)


def get_profiles_for_bulk_import_profiles_job(ctx: Context) -> Reply:
    options = profile_options(ctx)
    with ctx.store.lock:
        page, links = _job_profiles(ctx, "profiles")
        data = [profile_resource(p, ctx.base_url, **options) for p in page]
    return Reply(200, {"data": data, "links": links})


def get_profile_ids_for_bulk_import_profiles_job(ctx: Context) -> Reply:
    with ctx.store.lock:
        page, links = _job_profiles(ctx, "relationships/profiles")
    return Reply(200, {"data": [identifier("profile", p.id) for p in page], "links": links})


def get_errors_for_bulk_import_profiles_job(ctx: Context) -> Reply:
    with ctx.store.lock:
        job = _job(ctx)
        url = url_for(ctx, f"{ROUTE}/{job.id}/import-errors")
        page, links = paginate(job.failures, ctx.args, ctx.query.page_size, url)
        fields = ctx.query.fields("import-error")
        data = [error_resource(failure, fields) for failure in page]
    return Reply(200, {"data": data, "links": links})


def get_list_for_bulk_import_profiles_job(ctx: Context) -> Reply:
    with ctx.store.lock:
        job = _job(ctx)
        data = [
            list_resource(ctx.store.lists[list_id], ctx.base_url, fields=ctx.query.fields("list"))
            for list_id in job.list_ids
            if list_id in ctx.store.lists
        ]
    return Reply(200, {"data": data, "links": {"self": url_for(ctx, f"{ROUTE}/{job.id}/lists")}})


def get_list_ids_for_bulk_import_profiles_job(ctx: Context) -> Reply:
    with ctx.store.lock:
        job = _job(ctx)
        data = [identifier("list", list_id) for list_id in job.list_ids]
    url = url_for(ctx, f"{ROUTE}/{job.id}/relationships/lists")
    return Reply(200, {"data": data, "links": {"self": url}})
