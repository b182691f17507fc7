"""Events: ``POST /api/events`` (create_event) and ``POST /api/event-bulk-create-jobs``.

Bodies are the spec's ``EventCreateQueryV2`` and ``EventsBulkCreateJob``: a metric by name,
a profile by identifiers and attributes, ``properties``, and optional ``time``, ``value``,
``value_currency``, ``unique_id`` and ``backfill``. Both answer 202 with no body once the
request is valid; the events are recorded ``event_delay`` seconds later (the spec: "does not
guarantee that processing is complete"). Recording finds the profile (by id, email, phone
number, external_id, anonymous_id), creates it when none matches, writes the profile
attributes sent with the event, and keeps only the first event per metric, profile and
``unique_id`` ("If the unique_id is repeated for the same profile and metric, only the first
processed event will be recorded. If this is not present, this will use the time to the
second", spec ``EventCreateQueryV2``). In a bulk request the same repetition refuses the
whole request ("the request will fail and no events will be processed", spec
``BaseEventCreateQueryBulkEntryResourceObject``).

Klaviyo's ingestion limits are enforced with 400s. Two sources disagree:

* the rate limits and error handling guide (developers.klaviyo.com/en/docs/
  rate_limits_and_error_handling, "Ingestion limits") and the earlier Create Event reference:
  at most 300 event properties, 100 kB per field, 4,000 items per array, 10 levels of nested
  objects, timestamps between 2000 and now + 1 year;
* the 2026-07-15 document: "must not exceed 400 properties", time "after the year 1990".

``event_limits="docs"`` (default, the stricter) applies the guide's figures; ``"spec"`` the
document's property count and earliest year (the other limits are the guide's either way).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .attributes import clean_attributes, clean_patch_meta
from .errors import NO_IDENTIFIER, invalid
from .model import STRING_ATTRIBUTES, Event
from .protocol import Context, Reply
from .state import Store

EVENT_TYPE = "event"
BULK_TYPE = "event-bulk-create-job"
BULK_ENTRY_TYPE = "event-bulk-create"
BULK_EVENTS = "/data/attributes/events-bulk-create/data"
METRIC_NAME_LIMIT = 128  # "Name of the event. Must be less than 128 characters." (spec)
STRING_LIMIT = 100 * 1024  # "each string cannot be larger than 100 KB" (spec), guide: 100 kB
ARRAY_LIMIT = 4000  # guide: "Max number of items in arrays"
NESTING_LIMIT = 10  # guide: "Max levels of nested objects"
FUTURE_LIMIT = timedelta(days=365)  # "can only be up to 1 year in the future"
IDENTIFYING = ("email", "phone_number", "external_id", "anonymous_id")
_EVENT_KEYS = ("properties", "time", "value", "value_currency", "unique_id", "backfill", "metric")
_PROFILE_ATTRIBUTES = (*STRING_ATTRIBUTES, "location", "properties", "anonymous_id", "_kx")


@dataclass(frozen=True)
class IngestionLimits:
    properties: int
    earliest: datetime


LIMITS = {
    "docs": IngestionLimits(300, datetime(2000, 1, 1, tzinfo=UTC)),
    "spec": IngestionLimits(400, datetime(1990, 1, 1, tzinfo=UTC)),
}


@dataclass
class EventProfile:
    id: str | None
    attributes: dict[str, Any]
    meta: dict[str, Any]
    anonymous_id: str | None


@dataclass
class EventRequest:
    pointer: str  # where the event is in the body
    metric: str
    service: str | None
    properties: dict[str, Any]
    time: datetime
    value: float | int | None
    value_currency: str | None
    unique_id: str | None
    backfill: bool
    profile: EventProfile

    @property
    def unique_key(self) -> str:
        return self.unique_id if self.unique_id is not None else self.time.isoformat()


def _object(value: Any, pointer: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object.", pointer=pointer)
    return value


def _only(mapping: dict[str, Any], allowed: tuple[str, ...], pointer: str, kind: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise invalid(f"'{key}' is not a valid field for '{kind}'.", pointer=f"{pointer}/{key}")


def _required(mapping: dict[str, Any], name: str, pointer: str) -> Any:
    if mapping.get(name) is None:
        raise invalid(f"'{name}' is a required field.", pointer=f"{pointer}/{name}")
    return mapping[name]


# ---- parsing ----------------------------------------------------------------------------------


def parse_event(ctx: Context) -> EventRequest:
    """``create_event``: the one event, checked; 400 otherwise."""
    body = ctx.body
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != EVENT_TYPE:
        raise invalid(f"'type' must be '{EVENT_TYPE}'.", pointer="/data/type")
    where = "/data/attributes"
    attributes = _object(data.get("attributes"), where, "attributes")
    _only(attributes, (*_EVENT_KEYS, "profile"), where, EVENT_TYPE)
    profile = _object(_required(attributes, "profile", where), f"{where}/profile", "profile")
    ref = _parse_profile(
        profile.get("data"), f"{where}/profile/data", ctx.store, meta_in_attributes=True
    )
    _check_strings(body, "", STRING_LIMIT)
    return _parse_one(ctx, attributes, where, ref, default_backfill=False)


def parse_bulk(ctx: Context) -> list[EventRequest]:
    """``bulk_create_events``: every event, checked; the request fails as a whole."""
    body = ctx.body
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != BULK_TYPE:
        raise invalid(f"'type' must be '{BULK_TYPE}'.", pointer="/data/type")
    attributes = _object(data.get("attributes"), "/data/attributes", "attributes")
    _only(attributes, ("events-bulk-create",), "/data/attributes", BULK_TYPE)
    container = _object(
        attributes.get("events-bulk-create"),
        "/data/attributes/events-bulk-create",
        "events-bulk-create",
    )
    entries = container.get("data")
    if not isinstance(entries, list) or not entries:
        raise invalid("At least one entry is required.", pointer=BULK_EVENTS)
    _check_strings(body, "", ctx.rules.string_limit or STRING_LIMIT)
    requests: list[EventRequest] = []
    for i, raw in enumerate(entries):
        where = f"{BULK_EVENTS}/{i}"
        entry = _object(raw, where, "entry")
        if entry.get("type") != BULK_ENTRY_TYPE:
            raise invalid(f"'type' must be '{BULK_ENTRY_TYPE}'.", pointer=f"{where}/type")
        entry_attributes = _object(entry.get("attributes"), f"{where}/attributes", "attributes")
        at = f"{where}/attributes"
        _only(entry_attributes, ("backfill", "profile", "events"), at, BULK_ENTRY_TYPE)
        backfill = bool(_boolean(entry_attributes.get("backfill"), f"{at}/backfill"))
        profile = _object(_required(entry_attributes, "profile", at), f"{at}/profile", "profile")
        ref = _parse_profile(
            profile.get("data"), f"{at}/profile/data", ctx.store, meta_in_attributes=False
        )
        events = _object(_required(entry_attributes, "events", at), f"{at}/events", "events")
        items = events.get("data")
        if not isinstance(items, list) or not items:
            raise invalid("At least one event is required.", pointer=f"{at}/events/data")
        for j, item in enumerate(items):
            event_at = f"{at}/events/data/{j}"
            event = _object(item, event_at, "event")
            if event.get("type") != EVENT_TYPE:
                raise invalid(f"'type' must be '{EVENT_TYPE}'.", pointer=f"{event_at}/type")
            event_attributes = _object(
                event.get("attributes"), f"{event_at}/attributes", "attributes"
            )
            _only(event_attributes, _EVENT_KEYS, f"{event_at}/attributes", EVENT_TYPE)
            requests.append(
                _parse_one(
                    ctx, event_attributes, f"{event_at}/attributes", ref, default_backfill=backfill
                )
            )
    most = ctx.rules.item_limit
    if most is not None and len(requests) > most:
        raise invalid(f"A request can contain at most {most} events.", pointer=BULK_EVENTS)
    _refuse_repeats(ctx.store, requests)
    return requests


def _parse_profile(raw: Any, where: str, store: Store, *, meta_in_attributes: bool) -> EventProfile:
    data = _object(raw, where, "data")
    if data.get("type") != "profile":
        raise invalid("'type' must be 'profile'.", pointer=f"{where}/type")
    profile_id = data.get("id")
    if profile_id is not None and not isinstance(profile_id, str):
        raise invalid("'id' must be a string.", pointer=f"{where}/id")
    if profile_id:
        with store.lock:
            known = profile_id in store.profiles
        if not known:  # inferred: refused like an unknown id in a subscribe job
            raise invalid(f"A profile with id {profile_id} does not exist.", pointer=f"{where}/id")
    attributes = dict(_object(data.get("attributes", {}), f"{where}/attributes", "attributes"))
    allowed = (*_PROFILE_ATTRIBUTES, "meta") if meta_in_attributes else _PROFILE_ATTRIBUTES
    _only(attributes, allowed, f"{where}/attributes", "profile")
    if meta_in_attributes:  # create_event's schema puts meta among the attributes
        meta = clean_patch_meta(attributes.pop("meta", None), f"{where}/attributes/meta")
    else:
        meta = clean_patch_meta(data.get("meta"), f"{where}/meta")
    cleaned = clean_attributes(
        attributes, pointer=f"{where}/attributes", extra=("anonymous_id", "_kx")
    )
    anonymous_id = cleaned.pop("anonymous_id", None)
    cleaned.pop("_kx", None)  # an exchange id; the emulator cannot resolve it
    if not profile_id and not anonymous_id and not any(cleaned.get(k) for k in IDENTIFYING):
        # Klaviyo also identifies by _kx; the emulator cannot decrypt one, so it refuses.
        raise invalid(NO_IDENTIFIER, pointer=f"{where}/attributes")
    return EventProfile(profile_id or None, cleaned, meta, anonymous_id)


def _parse_one(
    ctx: Context,
    attributes: dict[str, Any],
    where: str,
    profile: EventProfile,
    *,
    default_backfill: bool,
) -> EventRequest:
    limits = LIMITS[ctx.store.config.event_limits]
    metric = _object(_required(attributes, "metric", where), f"{where}/metric", "metric")
    metric_data = _object(metric.get("data"), f"{where}/metric/data", "data")
    if metric_data.get("type") != "metric":
        raise invalid("'type' must be 'metric'.", pointer=f"{where}/metric/data/type")
    metric_at = f"{where}/metric/data/attributes"
    metric_attributes = _object(metric_data.get("attributes"), metric_at, "attributes")
    _only(metric_attributes, ("name", "service"), metric_at, "metric")
    name = metric_attributes.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("'name' is a required field.", pointer=f"{metric_at}/name")
    if len(name) >= METRIC_NAME_LIMIT:
        raise invalid(
            f"The metric name must be less than {METRIC_NAME_LIMIT} characters.",
            pointer=f"{metric_at}/name",
        )
    service = _string(metric_attributes.get("service"), f"{metric_at}/service")
    properties = _object(
        _required(attributes, "properties", where), f"{where}/properties", "properties"
    )
    _check_properties(properties, f"{where}/properties", limits)
    value = attributes.get("value")
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise invalid("'value' must be a number.", pointer=f"{where}/value")
    backfill = _boolean(attributes.get("backfill"), f"{where}/backfill")
    now = ctx.store.now()
    return EventRequest(
        pointer=where,
        metric=name,
        service=service,
        properties=properties,
        time=_time(attributes.get("time"), f"{where}/time", now, limits),
        value=value,
        value_currency=_string(attributes.get("value_currency"), f"{where}/value_currency"),
        unique_id=_string(attributes.get("unique_id"), f"{where}/unique_id"),
        backfill=default_backfill if backfill is None else backfill,
        profile=profile,
    )


def _string(value: Any, pointer: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{pointer.rsplit('/', 1)[1]}' must be a string.", pointer=pointer)
    return value


def _boolean(value: Any, pointer: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise invalid("'backfill' must be a boolean.", pointer=pointer)
    return value


def _time(raw: Any, pointer: str, now: datetime, limits: IngestionLimits) -> datetime:
    """The event's time truncated to the second ("The time is truncated to the second");
    the time the request was received when none is given."""
    if raw is None:
        return now.replace(microsecond=0)
    moment: datetime | None = None
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            moment = None
    if moment is None:
        raise invalid("'time' must be an ISO-8601 datetime.", pointer=pointer)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not limits.earliest <= moment <= now + FUTURE_LIMIT:
        raise invalid(
            f"'time' must be after {limits.earliest.year} and at most one year in the future.",
            pointer=pointer,
        )
    return moment.astimezone(UTC).replace(microsecond=0)


def _check_properties(properties: dict[str, Any], pointer: str, limits: IngestionLimits) -> None:
    if len(properties) > limits.properties:
        raise invalid(f"An event can have at most {limits.properties} properties.", pointer=pointer)
    for where, value, depth in _walk(properties, pointer, 0):
        if depth > NESTING_LIMIT:
            raise invalid(
                f"Event properties cannot be nested more than {NESTING_LIMIT} levels.",
                pointer=where,
            )
        if isinstance(value, list) and len(value) > ARRAY_LIMIT:
            raise invalid(
                f"An array in event properties can have at most {ARRAY_LIMIT} items.",
                pointer=where,
            )


def _walk(value: Any, pointer: str, depth: int) -> Iterator[tuple[str, Any, int]]:
    """Every value under ``value`` with its pointer and nesting level (objects and arrays
    each count as a level; the properties object itself is level 0)."""
    yield pointer, value, depth
    if isinstance(value, dict):
        for key, item in value.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from _walk(item, f"{pointer}/{escaped}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{pointer}/{index}", depth + 1)


def _check_strings(document: Any, pointer: str, limit: int) -> None:
    for where, value, _ in _walk(document, pointer, 0):
        if isinstance(value, str) and len(value.encode()) > limit:
            raise invalid(f"A single string cannot exceed {limit // 1024} KB.", pointer=where)


def _refuse_repeats(store: Store, requests: list[EventRequest]) -> None:
    seen: set[tuple[str, str, str]] = set()
    with store.lock:
        for request in requests:
            key = (request.metric, _identity(store, request.profile), request.unique_key)
            if key in seen:
                field = "unique_id" if request.unique_id is not None else "time"
                raise invalid(
                    "The request repeats an event for the same profile and metric "
                    f"(same {field}); no events were processed.",
                    pointer=f"{request.pointer}/{field}",
                )
            seen.add(key)


def _identity(store: Store, profile: EventProfile) -> str:
    """Who the event is for, as far as the request and the account tell now."""
    attributes = profile.attributes
    found = (
        profile.id
        or store.find_by_email(attributes.get("email"))
        or store.find_by_phone(attributes.get("phone_number"))
        or store.find_by_external_id(attributes.get("external_id"))
    )
    if found:
        return found
    email = attributes.get("email")
    return repr(
        (
            email.casefold() if isinstance(email, str) else None,
            attributes.get("phone_number"),
            attributes.get("external_id"),
            profile.anonymous_id,
        )
    )


# ---- recording --------------------------------------------------------------------------------


def ingest(store: Store, requests: list[EventRequest]) -> None:
    for request in requests:
        profile = store.event_profile(
            request.profile.id,
            request.profile.attributes,
            request.profile.meta,
            request.profile.anonymous_id,
        )
        event = Event(
            id=store.new_ulid(),
            metric=request.metric,
            service=request.service,
            profile_id=profile.id,
            properties=request.properties,
            time=request.time,
            value=request.value,
            value_currency=request.value_currency,
            unique_id=request.unique_id,
            backfill=request.backfill,
            received=store.now(),
        )
        store.record_event(event, request.unique_key)


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "metric": event.metric,
        "service": event.service,
        "profile_id": event.profile_id,
        "properties": event.properties,
        "time": event.time.isoformat(),
        "value": event.value,
        "value_currency": event.value_currency,
        "unique_id": event.unique_id,
        "backfill": event.backfill,
    }


# ---- handlers -------------------------------------------------------------------------------


def create_event(ctx: Context) -> Reply:
    request = parse_event(ctx)
    store = ctx.store
    store.later(store.config.event_delay, functools.partial(ingest, store, [request]))
    return Reply(202)


def bulk_create_events(ctx: Context) -> Reply:
    requests = parse_bulk(ctx)
    store = ctx.store
    store.later(store.config.event_delay, functools.partial(ingest, store, requests))
    return Reply(202)
