"""Lists: search, read and create them, and add, remove and page through their members."""

from __future__ import annotations

from typing import Any

from .errors import UNKNOWN_LIST, invalid, not_found
from .filters import matches
from .model import KlaviyoList
from .protocol import Context, Reply, data_object, member_ids, member_profiles, single, url_for
from .query import paginate, sort_items
from .resources import list_resource


def _list_field(klaviyo_list: KlaviyoList, name: str) -> Any:
    return getattr(klaviyo_list, name, None)


def get_lists(ctx: Context) -> Reply:
    include = ctx.query.values("include")
    conditions = ctx.query.conditions
    with ctx.store.lock:
        items = [lst for lst in ctx.store.lists.values() if matches(lst, conditions, _list_field)]
        items = sort_items(
            items,
            lambda lst: _list_field(lst, ctx.query.sort or "id"),
            lambda lst: lst.id,
            ctx.query.descending,
        )
        page, links = paginate(items, ctx.args, ctx.query.page_size, url_for(ctx, "/api/lists"))
        data = [list_resource(lst, ctx.base_url, fields=ctx.query.fields("list")) for lst in page]
    document: dict[str, Any] = {"data": data, "links": links}
    if include:
        document["included"] = []
    return Reply(200, document)


def get_list(ctx: Context) -> Reply:
    counted = "profile_count" in ctx.query.values("additional-fields[list]")
    with ctx.store.lock:
        klaviyo_list = ctx.store.klaviyo_list(ctx.params["id"])
        resource = list_resource(
            klaviyo_list, ctx.base_url, profile_count=counted, fields=ctx.query.fields("list")
        )
    reply = single(ctx, resource)
    if ctx.query.values("include"):
        assert reply.document is not None
        reply.document["included"] = []
    return reply


def create_list(ctx: Context) -> Reply:
    data = data_object(ctx, "list")
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise invalid("'attributes' must be an object.", pointer="/data/attributes")
    name = attributes.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("'name' is a required field.", pointer="/data/attributes/name")
    opt_in = attributes.get("opt_in_process")
    if opt_in not in (None, "single_opt_in", "double_opt_in"):
        raise invalid(
            "'opt_in_process' must be 'single_opt_in' or 'double_opt_in'.",
            pointer="/data/attributes/opt_in_process",
        )
    with ctx.store.lock:
        # "Lists are set to double opt-in by default in all Klaviyo accounts"
        # (help.klaviyo.com, Guide to the Double Opt-In Process).
        process = opt_in.split("_")[0] if opt_in else "double"
        list_id = ctx.store.create_list(name, opt_in=process)
        resource = list_resource(
            ctx.store.lists[list_id], ctx.base_url, fields=ctx.query.fields("list")
        )
    return single(ctx, resource, 201)


def _profile_identifiers(ctx: Context) -> list[str]:
    """The profile ids of a list relationship body (unknown ones included); at most the
    spec's "maximum of 1000 profiles per call"."""
    data = ctx.body.get("data") if isinstance(ctx.body, dict) else None
    if not isinstance(data, list):
        raise invalid("'data' must be an array of profile identifiers.", pointer="/data")
    if not data:
        raise invalid("At least one profile is required.", pointer="/data")
    most = ctx.rules.item_limit
    if most is not None and len(data) > most:
        raise invalid(f"At most {most} profiles can be sent at once.", pointer="/data")
    ids: list[str] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or item.get("type") != "profile":
            raise invalid("'type' must be 'profile'.", pointer=f"/data/{i}/type")
        profile_id = item.get("id")
        if not isinstance(profile_id, str):
            raise invalid("'id' must be a string.", pointer=f"/data/{i}/id")
        ids.append(profile_id)
    return ids


def _unknown_profile_400(ids: list[str], known: dict[str, Any]) -> None:
    for i, profile_id in enumerate(ids):
        if profile_id not in known:
            raise invalid(
                f"A profile with id {profile_id} does not exist.", pointer=f"/data/{i}/id"
            )


def _known_profiles(ctx: Context, list_id: str, unknown: str) -> list[str]:
    """The call's profile ids that exist, once the list is known; ``unknown`` says what an id
    that does not exist does: "400", "404" or "ignore"."""
    ctx.store.klaviyo_list(list_id)
    ids = _profile_identifiers(ctx)
    known = [pid for pid in ids if pid in ctx.store.profiles]
    if len(known) < len(ids):
        if unknown == "400":
            _unknown_profile_400(ids, ctx.store.profiles)
        if unknown == "404":
            raise not_found(UNKNOWN_LIST.format(list_id=list_id))
    return known


def add_profiles_to_list(ctx: Context) -> Reply:
    """Unknown profile ids: Klaviyo's answer is undocumented, so ``unknown_profile_in_list_add``
    picks one of the plausible ones: "400" (invalid, pointing at the item), "404" (the whole
    call, worded as for an unknown list) or "ignore" (204, unknown ids dropped)."""
    list_id = ctx.params["id"]
    with ctx.store.lock:
        known = _known_profiles(ctx, list_id, ctx.store.config.unknown_profile_in_list_add)
        ctx.store.add_list_members(list_id, known)
    return Reply(204)


def remove_profiles_from_list(ctx: Context) -> Reply:
    """A known profile that is no member is 204 like a member (removal is idempotent;
    inferred). Unknown profile ids: undocumented, so ``unknown_profile_in_list_remove``
    picks "400" (default, the stricter answer), "404" or "ignore" as for list adds."""
    list_id = ctx.params["id"]
    with ctx.store.lock:
        known = _known_profiles(ctx, list_id, ctx.store.config.unknown_profile_in_list_remove)
        ctx.store.remove_list_members(list_id, known)
    return Reply(204)


def get_profiles_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return member_profiles(ctx, ctx.store.klaviyo_list(ctx.params["id"]))


def get_profile_ids_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return member_ids(ctx, ctx.store.klaviyo_list(ctx.params["id"]))
