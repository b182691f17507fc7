"""What every handler shares: the parsed request, the reply, and the JSON:API helpers.

A handler is one function per Klaviyo operation: a ``Context`` (the parsed request and the
account state) in, a ``Reply`` (status and JSON:API document) out. The resource families
(``profiles``, ``lists``, ``segments``, ``subscribe``, ``unsubscribe``, ``deletion``,
``events``, ``bulk_import``) build on this module and on ``state``, never on each other;
``operations`` pairs each operationId with its handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from .errors import invalid
from .filters import matches
from .model import KlaviyoList, Profile, Segment, parse_timestamp
from .query import Query, paginate, sort_items
from .resources import identifier, profile_resource
from .spec_rules import OperationRules
from .state import Store

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

# ---- request and reply helpers ---------------------------------------------------------


def data_object(ctx: Context, resource_type: str) -> dict[str, Any]:
    data = ctx.body.get("data") if isinstance(ctx.body, dict) else None
    if not isinstance(data, dict):
        raise invalid("'data' must be an object.", pointer="/data")
    if data.get("type") != resource_type:
        raise invalid(f"'type' must be '{resource_type}'.", pointer="/data/type")
    return data


def required_attributes(data: dict[str, Any]) -> Any:
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


def profile_field(profile: Profile, name: str) -> Any:
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


# ---- group membership (lists and segments) --------------------------------------------------


def _members(
    ctx: Context, group: KlaviyoList | Segment, view: str
) -> tuple[list[tuple[Profile, datetime]], dict[str, str | None]]:
    conditions = ctx.query.conditions

    def member_field(item: tuple[Profile, datetime], name: str) -> Any:
        return item[1] if name == "joined_group_at" else profile_field(item[0], name)

    items = [
        (ctx.store.profiles[pid], joined)
        for pid, joined in group.members.items()
        if pid in ctx.store.profiles
    ]
    items = [i for i in items if matches(i, conditions, member_field)]
    items = sort_items(items, lambda i: i[1], lambda i: i[0].id, ctx.query.descending)
    kind = "lists" if isinstance(group, KlaviyoList) else "segments"
    url = url_for(ctx, f"/api/{kind}/{group.id}/{view}")
    return paginate(items, ctx.args, ctx.query.page_size, url)


def member_profiles(ctx: Context, group: KlaviyoList | Segment) -> Reply:
    options = profile_options(ctx)
    page, links = _members(ctx, group, "profiles")
    data = [
        profile_resource(p, ctx.base_url, **options, joined_group_at=joined) for p, joined in page
    ]
    return Reply(200, {"data": data, "links": links})


def member_ids(ctx: Context, group: KlaviyoList | Segment) -> Reply:
    page, links = _members(ctx, group, "relationships/profiles")
    return Reply(200, {"data": [identifier("profile", p.id) for p, _ in page], "links": links})
