"""Segments: read one and page through its members (who is in one: ``state``)."""

from __future__ import annotations

from .protocol import Context, Reply, member_ids, member_profiles, single
from .resources import segment_resource


def get_segment(ctx: Context) -> Reply:
    counted = "profile_count" in ctx.query.values("additional-fields[segment]")
    with ctx.store.lock:
        segment = ctx.store.segment(ctx.params["id"])
        resource = segment_resource(
            segment, ctx.base_url, profile_count=counted, fields=ctx.query.fields("segment")
        )
    reply = single(ctx, resource)
    if ctx.query.values("include"):
        assert reply.document is not None
        reply.document["included"] = []
    return reply


def get_profiles_for_segment(ctx: Context) -> Reply:
    with ctx.store.lock:
        return member_profiles(ctx, ctx.store.segment(ctx.params["id"]))


def get_profile_ids_for_segment(ctx: Context) -> Reply:
    with ctx.store.lock:
        return member_ids(ctx, ctx.store.segment(ctx.params["id"]))
