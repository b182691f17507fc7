"""One function per Klaviyo operation: parsed request in, status and JSON:API document out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from . import filters, query
from .attributes import clean_attributes, clean_patch_meta
from .errors import ApiError, invalid
from .filters import COMPARISONS, FieldRule, datetime_field, string_field
from .model import KlaviyoList, Profile, Segment, parse_timestamp
from .query import Paging
from .resources import identifier, list_resource, profile_resource, segment_resource
from .state import Store, SubscribeJob
from .subscribe import parse_job

MAX_LIST_ADD = 1000
PROFILE_SORTS = (
    "created",
    "email",
    "id",
    "updated",
    "subscriptions.email.marketing.list_suppressions.timestamp",
    "subscriptions.email.marketing.suppression.timestamp",
)
_SUPPRESSION = "subscriptions.email.marketing.suppression"
_LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions"
PROFILE_FILTERS: dict[str, FieldRule] = {
    "id": string_field(["equals"], ["any", "equals"]),
    "email": string_field(["equals"], ["any", "equals"]),
    "phone_number": string_field(["equals"], ["any", "equals"]),
    "external_id": string_field(["equals"], ["any", "equals"]),
    "_kx": string_field(["equals"]),
    "created": datetime_field(["greater-than", "less-than"]),
    "updated": datetime_field(["greater-than", "less-than"]),
    f"{_LIST_SUPPRESSION}.reason": string_field(["equals"]),
    f"{_LIST_SUPPRESSION}.timestamp": datetime_field(COMPARISONS),
    f"{_LIST_SUPPRESSION}.list_id": string_field(["equals"]),
    f"{_SUPPRESSION}.reason": string_field(["equals"]),
    f"{_SUPPRESSION}.timestamp": datetime_field(COMPARISONS),
}
# Klaviyo's spec lists these as list-only operators; the emulator also takes a scalar equals.
LIST_MEMBER_FILTERS: dict[str, FieldRule] = {
    "email": string_field(["equals"], ["any", "equals"]),
    "phone_number": string_field(["equals"], ["any", "equals"]),
    "push_token": string_field(["equals"], ["any", "equals"]),
    "_kx": string_field(["equals"]),
    "joined_group_at": datetime_field(COMPARISONS),
}
SEGMENT_MEMBER_FILTERS: dict[str, FieldRule] = {
    "profile_id": string_field(["equals"], ["any", "equals"]),
    **LIST_MEMBER_FILTERS,
}
LIST_FILTERS: dict[str, FieldRule] = {
    "name": string_field(["equals"], ["any", "equals"]),
    "id": string_field(["equals"], ["any", "equals"]),
    "created": datetime_field(["greater-than"]),
    "updated": datetime_field(["greater-than"]),
}
PROFILE_ADDITIONAL = ("subscriptions", "predictive_analytics")
PROFILES_PAGING = Paging(20, 100)
LISTS_PAGING = Paging(10, 10)


@dataclass
class Context:
    store: Store
    base_url: str
    args: MultiDict[str, str]
    params: dict[str, str]
    body: Any
    submit_subscribe_job: Callable[[SubscribeJob], None]


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


def _profile_options(ctx: Context) -> dict[str, Any]:
    extra = query.comma_list(ctx.args, "additional-fields[profile]", PROFILE_ADDITIONAL)
    raw_fields = ctx.args.get("fields[profile]")
    return {
        "subscriptions": "subscriptions" in extra,
        "predictive": "predictive_analytics" in extra,
        "fields": [f for f in raw_fields.split(",") if f] if raw_fields is not None else None,
    }


def _single(ctx: Context, resource: dict[str, Any], status: int = 200) -> Reply:
    return Reply(status, {"data": resource, "links": {"self": resource["links"]["self"]}})


def _url(ctx: Context, path: str) -> str:
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
    options = _profile_options(ctx)
    include = query.include(ctx.args, ("conversations", "push-tokens"))
    sort_field, descending = query.sort_key(ctx.args, PROFILE_SORTS)
    raw_filter = ctx.args.get("filter")
    conditions = filters.parse_for(raw_filter, PROFILE_FILTERS) if raw_filter is not None else []
    with ctx.store.lock:
        items = [
            p for p in ctx.store.profiles.values() if filters.matches(p, conditions, _profile_field)
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
        page, links = query.paginate(items, ctx.args, PROFILES_PAGING, _url(ctx, "/api/profiles"))
        related: dict[str, list[dict[str, str]]] = {name: [] for name in include}
        data = [
            profile_resource(p, ctx.base_url, **options, relationship_data=related) for p in page
        ]
    document: dict[str, Any] = {"data": data, "links": links}
    if include:
        document["included"] = []
    return Reply(200, document)


def get_profile(ctx: Context) -> Reply:
    options = _profile_options(ctx)
    include = query.include(ctx.args, ("conversations", "lists", "push-tokens", "segments"))
    with ctx.store.lock:
        profile = ctx.store.profile(ctx.params["id"])
        related: dict[str, list[dict[str, str]]] = {}
        included: list[dict[str, Any]] = []
        for name in include:
            if name == "lists":
                lists = ctx.store.lists_of(profile.id)
                related[name] = [identifier("list", lst.id) for lst in lists]
                included += [list_resource(lst, ctx.base_url) for lst in lists]
            elif name == "segments":
                segments = ctx.store.segments_of(profile.id)
                related[name] = [identifier("segment", seg.id) for seg in segments]
                included += [segment_resource(seg, ctx.base_url) for seg in segments]
            else:
                related[name] = []
        resource = profile_resource(profile, ctx.base_url, **options, relationship_data=related)
    reply = _single(ctx, resource)
    if include:
        assert reply.document is not None
        reply.document["included"] = included
    return reply


def create_profile(ctx: Context) -> Reply:
    options = _profile_options(ctx)
    data = _data_object(ctx, "profile")
    attributes = clean_attributes(data.get("attributes"))
    with ctx.store.lock:
        profile = ctx.store.create_profile(attributes)
        resource = profile_resource(profile, ctx.base_url, **options)
    return _single(ctx, resource, 201)


def update_profile(ctx: Context) -> Reply:
    options = _profile_options(ctx)
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
    return _single(ctx, resource)


def create_or_update_profile(ctx: Context) -> Reply:
    options = _profile_options(ctx)
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
    return _single(ctx, resource, 201 if created else 200)


def get_segment_ids_for_profile(ctx: Context) -> Reply:
    with ctx.store.lock:
        profile = ctx.store.profile(ctx.params["id"])
        data = [identifier("segment", s.id) for s in ctx.store.segments_of(profile.id)]
    url = _url(ctx, f"/api/profiles/{profile.id}/relationships/segments")
    return Reply(200, {"data": data, "links": {"self": url, "next": None, "prev": None}})


def bulk_subscribe_profiles(ctx: Context) -> Reply:
    job = parse_job(ctx.body, ctx.store)
    ctx.submit_subscribe_job(job)
    return Reply(202)


# ---- lists ----------------------------------------------------------------------------------


def _list_field(klaviyo_list: KlaviyoList, name: str) -> Any:
    return getattr(klaviyo_list, name, None)


def get_lists(ctx: Context) -> Reply:
    include = query.include(ctx.args, ("flow-triggers", "tags"))
    sort_field, descending = query.sort_key(ctx.args, ("created", "id", "name", "updated"))
    raw_filter = ctx.args.get("filter")
    conditions = filters.parse_for(raw_filter, LIST_FILTERS) if raw_filter is not None else []
    with ctx.store.lock:
        items = [
            lst for lst in ctx.store.lists.values() if filters.matches(lst, conditions, _list_field)
        ]
        items = query.sort_items(
            items, lambda lst: _list_field(lst, sort_field or "id"), lambda lst: lst.id, descending
        )
        page, links = query.paginate(items, ctx.args, LISTS_PAGING, _url(ctx, "/api/lists"))
        data = [list_resource(lst, ctx.base_url) for lst in page]
    document: dict[str, Any] = {"data": data, "links": links}
    if include:
        document["included"] = []
    return Reply(200, document)


def get_list(ctx: Context) -> Reply:
    extra = query.comma_list(ctx.args, "additional-fields[list]", ("profile_count",))
    include = query.include(ctx.args, ("flow-triggers", "tags"))
    with ctx.store.lock:
        klaviyo_list = ctx.store.klaviyo_list(ctx.params["id"])
        resource = list_resource(klaviyo_list, ctx.base_url, profile_count=bool(extra))
    reply = _single(ctx, resource)
    if include:
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
        process = opt_in.split("_")[0] if opt_in else ctx.store.default_opt_in
        list_id = ctx.store.create_list(name, opt_in=process)
        resource = list_resource(ctx.store.lists[list_id], ctx.base_url)
    return _single(ctx, resource, 201)


def _profile_identifiers(ctx: Context) -> list[str]:
    data = ctx.body.get("data") if isinstance(ctx.body, dict) else None
    if not isinstance(data, list):
        raise invalid("'data' must be an array of profile identifiers.", pointer="/data")
    if not data:
        raise invalid("At least one profile is required.", pointer="/data")
    if len(data) > MAX_LIST_ADD:
        raise invalid(f"At most {MAX_LIST_ADD} profiles can be sent at once.", pointer="/data")
    ids: list[str] = []
    with ctx.store.lock:
        for i, item in enumerate(data):
            if not isinstance(item, dict) or item.get("type") != "profile":
                raise invalid("'type' must be 'profile'.", pointer=f"/data/{i}/type")
            profile_id = item.get("id")
            if not isinstance(profile_id, str) or profile_id not in ctx.store.profiles:
                raise invalid(
                    f"A profile with id {profile_id} does not exist.", pointer=f"/data/{i}/id"
                )
            ids.append(profile_id)
    return ids


def add_profiles_to_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        ctx.store.klaviyo_list(ctx.params["id"])
        ctx.store.add_list_members(ctx.params["id"], _profile_identifiers(ctx))
    return Reply(204)


def remove_profiles_from_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        ctx.store.klaviyo_list(ctx.params["id"])
        ctx.store.remove_list_members(ctx.params["id"], _profile_identifiers(ctx))
    return Reply(204)


# ---- group membership (lists and segments) --------------------------------------------------


def _members(
    ctx: Context, group: KlaviyoList | Segment, rules: dict[str, FieldRule], view: str
) -> tuple[list[tuple[Profile, datetime]], dict[str, str | None]]:
    _sort_field, descending = query.sort_key(ctx.args, ("joined_group_at",))
    raw_filter = ctx.args.get("filter")
    conditions = filters.parse_for(raw_filter, rules) if raw_filter is not None else []

    def member_field(item: tuple[Profile, datetime], name: str) -> Any:
        return item[1] if name == "joined_group_at" else _profile_field(item[0], name)

    items = [
        (ctx.store.profiles[pid], joined)
        for pid, joined in group.members.items()
        if pid in ctx.store.profiles
    ]
    items = [i for i in items if filters.matches(i, conditions, member_field)]
    items = query.sort_items(items, lambda i: i[1], lambda i: i[0].id, descending)
    kind = "lists" if isinstance(group, KlaviyoList) else "segments"
    url = _url(ctx, f"/api/{kind}/{group.id}/{view}")
    return query.paginate(items, ctx.args, PROFILES_PAGING, url)


def _member_profiles(
    ctx: Context, group: KlaviyoList | Segment, rules: dict[str, FieldRule]
) -> Reply:
    options = _profile_options(ctx)
    page, links = _members(ctx, group, rules, "profiles")
    data = [
        profile_resource(p, ctx.base_url, **options, joined_group_at=joined) for p, joined in page
    ]
    return Reply(200, {"data": data, "links": links})


def _member_ids(ctx: Context, group: KlaviyoList | Segment, rules: dict[str, FieldRule]) -> Reply:
    page, links = _members(ctx, group, rules, "relationships/profiles")
    return Reply(200, {"data": [identifier("profile", p.id) for p, _ in page], "links": links})


def get_profiles_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_profiles(ctx, ctx.store.klaviyo_list(ctx.params["id"]), LIST_MEMBER_FILTERS)


def get_profile_ids_for_list(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_ids(ctx, ctx.store.klaviyo_list(ctx.params["id"]), LIST_MEMBER_FILTERS)


def get_segment(ctx: Context) -> Reply:
    extra = query.comma_list(ctx.args, "additional-fields[segment]", ("profile_count",))
    include = query.include(ctx.args, ("flow-triggers", "tags"))
    with ctx.store.lock:
        segment = ctx.store.segment(ctx.params["id"])
        resource = segment_resource(segment, ctx.base_url, profile_count=bool(extra))
    reply = _single(ctx, resource)
    if include:
        assert reply.document is not None
        reply.document["included"] = []
    return reply


def get_profiles_for_segment(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_profiles(ctx, ctx.store.segment(ctx.params["id"]), SEGMENT_MEMBER_FILTERS)


def get_profile_ids_for_segment(ctx: Context) -> Reply:
    with ctx.store.lock:
        return _member_ids(ctx, ctx.store.segment(ctx.params["id"]), SEGMENT_MEMBER_FILTERS)
