"""One function per Klaviyo operation: parsed request in, status and JSON:API document out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from . import errors, filters, query
from .attributes import clean_attributes, clean_patch_meta
from .deletion import parse_deletion
from .errors import ApiError, invalid, not_found
from .model import KlaviyoList, Profile, Segment, parse_timestamp
from .query import Query
from .resources import identifier, list_resource, profile_resource, segment_resource
from .spec_rules import OperationRules
from .state import Store
from .subscribe import parse_job

_SUPPRESSION = "subscriptions.email.marketing.suppression"
_LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions"


@dataclass
class Context:
    store: Store
    base_url: str
    args: MultiDict[str, str]
    query: Query  # ``args`` checked against the operation's rules
    params: dict[str, str]
    body: Any
    # The profile as filtered search sees it (None: not indexed yet); ``store.search_view``.
    search_view: Callable[[Profile], Profile | None]
    rules: OperationRules  # the operation's rules, for limits its prose states


@dataclass
class Reply:
    status: int
    document: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Context], Reply]

# ---- shared helpers -------------------------------------------------------------------------


def _data_object(ctx: Context, resource_type: str) -> dict[str, Any]:
    data = ctx.body.get("data") if isinstance(ctx.body, dict) else None
    if not isinstance(data, dict):
        raise invalid("'data' must be an object.", pointer="/data")
    if data.get("type") != resource_type:
        raise invalid(f"'type' must be '{resource_type}'.", pointer="/data/type")
    return data


def _required_attributes(data: dict[str, Any]) -> Any:
    if "attributes" not in data:
        raise invalid("'attributes' is a required field.", pointer="/data/attributes")
    return data["attributes"]


def profile_options(ctx: Context) -> dict[str, Any]:
    extra = ctx.query.values("additional-fields[profile]")
    return {
        "subscriptions": "subscriptions" in extra,
        "predictive": "predictive_analytics" in extra,
        "fields": ctx.query.fields("profile"),
    }


def single(ctx: Context, resource: dict[str, Any], status: int = 200) -> Reply:
    return Reply(status, {"data": resource, "links": {"self": resource["links"]["self"]}})


def url_for(ctx: Context, path: str) -> str:
    return f"{ctx.base_url}{path}/"


def _ts(value: str | None) -> datetime | None:
    return parse_timestamp(value) if value else None


def _profile_field(profile: Profile, name: str) -> Any:
    if name in ("id", "profile_id"):
        return profile.id
    if name in ("email", "phone_number", "external_id"):
        return profile.attributes.get(name)
    if name == "created":
        return profile.created
    if name == "updated":
        return profile.updated
    marketing = profile.subscriptions["email"]["marketing"]
    if name.startswith(_SUPPRESSION + "."):
        attr = name.rsplit(".", 1)[1]
        entries = marketing["suppression"]
    elif name.startswith(_LIST_SUPPRESSION + "."):
        attr = name.rsplit(".", 1)[1]
        entries = marketing["list_suppressions"]
    else:
        return None  # _kx, push_token: nothing in the emulator carries them
    values = [_ts(e[attr]) if attr == "timestamp" else e[attr] for e in entries]
    return tuple(values) if values else None


def _earliest(values: Any) -> Any:
    return min(values) if values else None


# ---- profiles -------------------------------------------------------------------------------


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
                and filters.matches(seen, conditions, _profile_field)
            ]
        if sort_field is None:
            items.sort(key=lambda p: p.id)
        elif sort_field == "email":
            items = query.sort_items(
                items, lambda p: (p.email or "").casefold() or None, lambda p: p.id, descending
            )
        elif sort_field in ("created", "updated", "id"):
            items = query.sort_items(
                items, lambda p: _profile_field(p, sort_field), lambda p: p.id, descending
            )
        else:
            items = query.sort_items(
                items,
                lambda p: _earliest(_profile_field(p, sort_field)),
                lambda p: p.id,
                descending,
            )
        page, links = query.paginate(
            items, ctx.args, ctx.query.page_size, url_for(ctx, "/api/profiles")
        )
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
    data = _data_object(ctx, "profile")
    attributes = clean_attributes(data.get("attributes"))
    with ctx.store.lock:
        profile = ctx.store.create_profile(attributes)
        resource = profile_resource(profile, ctx.base_url, **options)
    return single(ctx, resource, 201)


def update_profile(ctx: Context) -> Reply:
    options = profile_options(ctx)
    data = _data_object(ctx, "profile")
    if "id" not in data or data["id"] is None:
        raise invalid("'id' is a required field.", pointer="/data/id")
    attributes = clean_attributes(_required_attributes(data))
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
    data = _data_object(ctx, "profile")
    profile_id = data.get("id")
    if profile_id is not None and not isinstance(profile_id, str):
        raise invalid("'id' must be a string.", pointer="/data/id")
    attributes = clean_attributes(_required_attributes(data), extra=("_kx",))
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


def bulk_subscribe_profiles(ctx: Context) -> Reply:
    store = ctx.store
    job = parse_job(ctx.body, store, max_profiles=ctx.rules.item_limit)
    store.later(store.config.subscribe_delay, lambda: store.apply_subscribe_job(job))
    return Reply(202)


def request_profile_deletion(ctx: Context) -> Reply:
    store = ctx.store
    kind, value = parse_deletion(ctx.body)
    # Unknown identifiers are accepted too: the job reveals nothing about who exists
    # (inferred; Klaviyo documents only the 202).
    store.later(store.config.deletion_delay, lambda: store.delete_profiles(kind, value))
    return Reply(202)


# ---- lists ----------------------------------------------------------------------------------


def _list_field(klaviyo_list: KlaviyoList, name: str) -> Any:
    return getattr(klaviyo_list, name, None)


def get_lists(ctx: Context) -> Reply:
    include = ctx.query.values("include")
    conditions = ctx.query.conditions
    with ctx.store.lock:
        items = [
            lst for lst in ctx.store.lists.values() if filters.matches(lst, conditions, _list_field)
        ]
        items = query.sort_items(
            items,
            lambda lst: _list_field(lst, ctx.query.sort or "id"),
            lambda lst: lst.id,
            ctx.query.descending,
        )
        page, links = query.paginate(
            items, ctx.args, ctx.query.page_size, url_for(ctx, "/api/lists")
        )
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
    data = _data_object(ctx, "list")
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


def add_profiles_to_list(ctx: Context) -> Reply:
    """Unknown profile ids: Klaviyo's answer is undocumented, so ``unknown_profile_in_list_add``
    picks one of the plausible ones: "400" (invalid, pointing at the item), "404" (the whole
    call, worded as for an unknown list) or "ignore" (204, unknown ids dropped)."""
    list_id = ctx.params["id"]
    with ctx.store.lock:
        ctx.store.klaviyo_list(list_id)
        ids = _profile_identifiers(ctx)
        known = [pid for pid in ids if pid in ctx.store.profiles]
        if len(known) < len(ids):
            mode = ctx.store.config.unknown_profile_in_list_add
            if mode == "400":
                _unknown_profile_400(ids, ctx.store.profiles)
            if mode == "404":
                raise not_found(errors.UNKNOWN_LIST.format(list_id=list_id))
        ctx.store.add_list_members(list_id, known)
    return Reply(204)


def remove_profiles_from_list(ctx: Context) -> Reply:
    """A known profile that is no member is 204 like a member (removal is idempotent;
    inferred). Unknown profile ids: undocumented, so ``unknown_profile_in_list_remove``
    picks "400" (default, the stricter answer), "404" or "ignore" as for list adds."""
    list_id = ctx.params["id"]
    with ctx.store.lock:
        ctx.store.klaviyo_list(list_id)
        ids = _profile_identifiers(ctx)
        known = [pid for pid in ids if pid in ctx.store.profiles]
        if len(known) < len(ids):
            mode = ctx.store.config.unknown_profile_in_list_remove
            if mode == "400":
                _unknown_profile_400(ids, ctx.store.profiles)
            if mode == "404":
                raise not_found(errors.UNKNOWN_LIST.format(list_id=list_id))
        ctx.store.remove_list_members(list_id, known)
    return Reply(204)


# ---- group membership (lists and segments) --------------------------------------------------


def _members(
    ctx: Context, group: KlaviyoList | Segment, view: str
) -> tuple[list[tuple[Profile, datetime]], dict[str, str | None]]:
    conditions = ctx.query.conditions

    def member_field(item: tuple[Profile, datetime], name: str) -> Any:
        return item[1] if name == "joined_group_at" else _profile_field(item[0], name)

    items = [
        (ctx.store.profiles[pid], joined)
        for pid, joined in group.members.items()
        if pid in ctx.store.profiles
    ]
    items = [i for i in items if filters.matches(i, conditions, member_field)]
    items = query.sort_items(items, lambda i: i[1], lambda i: i[0].id, ctx.query.descending)
    kind = "lists" if isinstance(group, KlaviyoList) else "segments"
    url = url_for(ctx, f"/api/{kind}/{group.id}/{view}")
    return query.paginate(items, ctx.args, ctx.query.page_size, url)


def _member_profiles(ctx: Context, group: KlaviyoList | Segment) -> Reply:
    options = profile_options(ctx)
    page, links = _members(ctx, group, "profiles")
    data = [
        profile_resource(p, ctx.base_url, **options, joined_group_at=joined) for p, joined in page
    ]
    return Reply(200, {"data": data, "links": links})


def _member_ids(ctx: Context, group: KlaviyoList | Segment) -> Reply:
    page, links = _members(ctx, group, "relationships/profiles")
    return Reply(200, {"data": [identifier("profile", p.id) for p, _ in page], "links": links})


def get_profiles_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_profiles(ctx, ctx.store.klaviyo_list(ctx.params["id"]))


def get_profile_ids_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_ids(ctx, ctx.store.klaviyo_list(ctx.params["id"]))


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
        return _member_profiles(ctx, ctx.store.segment(ctx.params["id"]))


def get_profile_ids_for_segment(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_ids(ctx, ctx.store.segment(ctx.params["id"]))
