"""Profiles: search, read, create, update and upsert one, and the segments it is in."""

from __future__ import annotations

from typing import Any

from .attributes import clean_attributes, clean_patch_meta
from .errors import ApiError, invalid
from .filters import matches
from .protocol import (
    Context,
    Reply,
    data_object,
    profile_field,
    profile_options,
    required_attributes,
    single,
    url_for,
)
from .query import paginate, sort_items
from .resources import identifier, list_resource, profile_resource, segment_resource


def _earliest(values: Any) -> Any:
    return min(values) if values else None


def get_profiles(ctx: Context) -> Reply:
    options = profile_options(ctx)
    include = ctx.query.values("include")
    sort_field, descending = ctx.query.sort, ctx.query.descending
    conditions = ctx.query.conditions
    with ctx.store.lock:
        if not conditions:
            items = list(ctx.store.profiles.values())
        else:
            # Filtered search reads the search view, which may lag behind writes; exact
            # lookups (equals/any on id, email, phone_number, external_id) take their
            # candidates from its index instead of looking at every profile.
            candidates = ctx.store.search_candidates(conditions)
            items = [
                p
                for p in (ctx.store.profiles.values() if candidates is None else candidates)
                if (seen := ctx.search_view(p)) is not None
                and matches(seen, conditions, profile_field)
            ]
        if sort_field is None:
            items.sort(key=lambda p: p.id)
        elif sort_field == "email":
            items = sort_items(
                items, lambda p: (p.email or "").casefold() or None, lambda p: p.id, descending
            )
        elif sort_field in ("created", "updated", "id"):
            items = sort_items(
                items, lambda p: profile_field(p, sort_field), lambda p: p.id, descending
            )
        else:
            items = sort_items(
                items,
                lambda p: _earliest(profile_field(p, sort_field)),
                lambda p: p.id,
                descending,
            )
        page, links = paginate(items, ctx.args, ctx.query.page_size, url_for(ctx, "/api/profiles"))
        related: dict[str, list[dict[str, str]]] = {name: [] for name in include}
        data = [
            profile_resource(p, ctx.base_url, **options, relationship_data=related) for p in page
        ]
    document: dict[str, Any] = {"data": data, "links": links}
    if include:
        document["included"] = []
    return Reply(200, document)


def get_profile(ctx: Context) -> Reply:
    options = profile_options(ctx)
    include = ctx.query.values("include")
    with ctx.store.lock:
        profile = ctx.store.profile(ctx.params["id"])
        related: dict[str, list[dict[str, str]]] = {}
        included: list[dict[str, Any]] = []
        for name in include:
            if name == "lists":
                lists = ctx.store.lists_of(profile.id)
                related[name] = [identifier("list", lst.id) for lst in lists]
                included += [
                    list_resource(lst, ctx.base_url, fields=ctx.query.fields("list"))
                    for lst in lists
                ]
            elif name == "segments":
                segments = ctx.store.segments_of(profile.id)
                related[name] = [identifier("segment", seg.id) for seg in segments]
                included += [
                    segment_resource(seg, ctx.base_url, fields=ctx.query.fields("segment"))
                    for seg in segments
                ]
            else:
                related[name] = []
        resource = profile_resource(profile, ctx.base_url, **options, relationship_data=related)
    reply = single(ctx, resource)
    if include:
        assert reply.document is not None
        reply.document["included"] = included
    return reply


def create_profile(ctx: Context) -> Reply:
    options = profile_options(ctx)
    data = data_object(ctx, "profile")
    attributes = clean_attributes(data.get("attributes"))
    with ctx.store.lock:
        profile = ctx.store.create_profile(attributes)
        resource = profile_resource(profile, ctx.base_url, **options)
    return single(ctx, resource, 201)


def update_profile(ctx: Context) -> Reply:
    options = profile_options(ctx)
    data = data_object(ctx, "profile")
    if "id" not in data or data["id"] is None:
        raise invalid("'id' is a required field.", pointer="/data/id")
    attributes = clean_attributes(required_attributes(data))
    meta = clean_patch_meta(data.get("meta"))
    with ctx.store.lock:
        ctx.store.profile(ctx.params["id"])  # 404 before the id comparison, as routing would
        if data["id"] != ctx.params["id"]:
            raise ApiError(
                409,
                "conflict",
                "Conflict.",
                "The id in the request body does not match the id in the URL.",
                pointer="/data/id",
            )
        profile = ctx.store.update_profile(ctx.params["id"], attributes, meta)
        resource = profile_resource(profile, ctx.base_url, **options)
    return single(ctx, resource)


def create_or_update_profile(ctx: Context) -> Reply:
    options = profile_options(ctx)
    data = data_object(ctx, "profile")
    profile_id = data.get("id")
    if profile_id is not None and not isinstance(profile_id, str):
        raise invalid("'id' must be a string.", pointer="/data/id")
    attributes = clean_attributes(required_attributes(data), extra=("_kx",))
    attributes.pop("_kx", None)  # an exchange id; the emulator cannot resolve it
    meta = clean_patch_meta(data.get("meta"))
    with ctx.store.lock:
        profile, created = ctx.store.import_profile(profile_id, attributes, meta)
        resource = profile_resource(profile, ctx.base_url, **options)
    return single(ctx, resource, 201 if created else 200)


def get_segment_ids_for_profile(ctx: Context) -> Reply:
    with ctx.store.lock:
        profile = ctx.store.profile(ctx.params["id"])
        data = [identifier("segment", s.id) for s in ctx.store.segments_of(profile.id)]
    url = url_for(ctx, f"/api/profiles/{profile.id}/relationships/segments")
    return Reply(200, {"data": data, "links": {"self": url, "next": None, "prev": None}})
