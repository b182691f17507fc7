"""Track Event: the lead as a metric event on its profile, so a Klaviyo flow can start from it.

The event's properties are the lead's own fields (its settings aside). Klaviyo's ingestion
limits are checked before any call, so an event Klaviyo would refuse fails clearly, alone.
``unique_id`` (the variable, else the lead's ``id``, else what it came in: the SQS message,
the EventBridge event, the webhook's Idempotency-Key or request) makes a retried lead one
event: Klaviyo records the first of an event's repeats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Batch
from klaviyo_leads.actions.create.adding import hold_back, touch
from klaviyo_leads.actions.lookup import profile_reference, require_search_value
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import KlaviyoError, Result, from_klaviyo_answer, success

# Klaviyo's ingestion limits (developers.klaviyo.com, rate limits and error handling guide:
# "Ingestion limits"); the stricter where the OpenAPI document says otherwise (400 properties).
MAX_PROPERTIES = 300
MAX_NESTING = 10
MAX_ARRAY_ITEMS = 4000
MAX_STRING_BYTES = 100 * 1024
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=365)
MAX_EVENTS_PER_JOB = 1000
MAX_JOB_BYTES = 5 * 1024 * 1024 - 64 * 1024  # 5 MB, less a margin for the envelope
_BULK_POINTER = re.compile(
    r"^/data/attributes/events-bulk-create/data/(\d+)"
    r"(?:/attributes/events/data/(\d+))?(?:/|$)"
)

Results = list[Result | None]


@dataclass(frozen=True)
class Event:
    """One lead's event, checked and ready to send."""

    metric: str
    profile: dict[str, Any]  # the profile resource the event is for: identifiers only
    properties: dict[str, Any]
    value: float | None
    time: datetime | None
    unique_id: str | None
    # A historical event: Klaviyo records it without starting flows (``backfill``, since
    # revision 2026-07-15).
    backfill: bool = False
    delivery: int = 1  # the lead's delivery: a lead held back comes back later each time

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "properties": self.properties,
            "metric": {"data": {"type": "metric", "attributes": {"name": self.metric}}},
        }
        if self.value is not None:
            attributes["value"] = self.value
        if self.time is not None:
            attributes["time"] = self.time.isoformat()
        if self.unique_id is not None:
            attributes["unique_id"] = self.unique_id
        if self.backfill:
            attributes["backfill"] = True
        return attributes

    def identifier(self) -> tuple[str, str | None]:
        """The identifier by which Klaviyo may make the event's profile (none for an id)."""
        if "id" in self.profile:
            return "id", None
        name, value = next(iter(self.profile["attributes"].items()))
        return name, value

    def identity(self) -> tuple[str, str]:
        """How Klaviyo tells the event's profile: its id, else its first identifier."""
        if "id" in self.profile:
            return "id", self.profile["id"]
        name, value = next(iter(self.profile["attributes"].items()))
        return name, value.lower() if name == "email" else value


def prepare(ctx: Context, lead: Lead) -> Event:
    metric = lead.metric_name()
    identifier, value = require_search_value(ctx, lead)
    profile = profile_reference(identifier, value)
    properties = lead.event_properties()
    _check_limits(properties)
    time = lead.event_time()
    if time is not None and not EARLIEST <= time <= datetime.now(UTC) + LATEST_AHEAD:
        raise outcomes.EVENT_TIME_OUT_OF_RANGE(earliest=EARLIEST.year)
    unique_id = lead.unique_id() or ctx.origin_id
    return Event(
        metric,
        profile,
        properties,
        lead.event_value(),
        time,
        unique_id,
        lead.backfill(),
        delivery=ctx.delivery,
    )


def _check_limits(properties: dict[str, Any]) -> None:
    if len(properties) > MAX_PROPERTIES:
        raise outcomes.EVENT_TOO_MANY_PROPERTIES(limit=MAX_PROPERTIES)
    for value, depth in _walk(properties, 0):
        if depth > MAX_NESTING:
            raise outcomes.EVENT_TOO_DEEP(limit=MAX_NESTING)
        if isinstance(value, list) and len(value) > MAX_ARRAY_ITEMS:
            raise outcomes.EVENT_ARRAY_TOO_LONG(limit=MAX_ARRAY_ITEMS)
        if isinstance(value, str) and len(value.encode()) > MAX_STRING_BYTES:
            raise outcomes.EVENT_STRING_TOO_LONG(limit=MAX_STRING_BYTES // 1024)


def _walk(value: Any, depth: int) -> Iterator[tuple[Any, int]]:
    """Every value with its nesting level (the properties object itself is level 0)."""
    yield value, depth
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        yield from _walk(child, depth + 1)


def track_event(ctx: Context, lead: Lead) -> Result:
    """Record a metric event on the lead's profile (Klaviyo creates the profile if needed)."""
    event = prepare(ctx, lead)
    for held in hold_back(ctx, {0: [event.identifier()]}, {0: event.delivery}).values():
        raise held  # a create's import on its way would take the event's profile for its own
    return _create(ctx, event)


def _create(ctx: Context, event: Event) -> Result:
    """One event by Create Event (350 a second: one lead's event never waits on bulk jobs)."""
    response = ctx.call(
        "POST",
        "/api/events",
        body={
            "data": {
                "type": "event",
                "attributes": {**event.attributes(), "profile": {"data": event.profile}},
            }
        },
        expect=(202,),
        handled=(400,),
    )
    if response.status == 400:
        raise from_klaviyo_answer(400, response.errors)
    return success()


# -- in bulk -------------------------------------------------------------------------------

Item = tuple[int, Event]


def record(ctx: Context, items: list[Item], results: Results) -> None:
    """Events of other actions (Subscribe's consent evidence): one alone by Create Event,
    several in bulk jobs; one result per lead."""
    if len(items) != 1:
        send_jobs(ctx, items, results)
        return
    index, event = items[0]
    touch(ctx, [event.identifier()])
    try:
        results[index] = _create(ctx, event)
    except Result as problem:
        results[index] = problem


def send_jobs(ctx: Context, items: list[Item], results: Results, marked: bool = False) -> None:
    """Up to 1,000 events to a bulk job, grouped by profile; one result per lead.

    A job must not repeat an event (same metric, profile and unique id): Klaviyo would refuse
    all of it. A repeat would be dropped by Klaviyo anyway, so it succeeds without being sent.
    """
    seen: set[tuple[str, tuple[str, str], str]] = set()
    unique: list[Item] = []
    later: list[Item] = []  # no unique id: Klaviyo keys them by the second they arrive
    for index, event in items:
        repeat_key = (event.metric, event.identity(), event.unique_id or "")
        if repeat_key in seen:
            if event.unique_id is not None:
                results[index] = success()
            else:
                later.append((index, event))
            continue
        seen.add(repeat_key)
        unique.append((index, event))
    if not marked:  # evidence events (Track Event's own batch marked them as it held back)
        touch(ctx, [event.identifier() for _, event in unique])
    for chunk in chunks(unique):
        _send(ctx, chunk, results)
    if later:
        send_jobs(ctx, later, results, marked=True)


def chunks(items: list[Item]) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item[1].attributes(), default=str)) + 200
        if chunk and (len(chunk) >= MAX_EVENTS_PER_JOB or size + item_size > MAX_JOB_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def _job(chunk: list[Item]) -> tuple[dict[str, Any], list[list[int]]]:
    """The bulk body, and for each of its entries (one per profile) the leads it carries."""
    entries: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]], list[int]]] = {}
    for index, event in chunk:
        entry = entries.setdefault(event.identity(), (event.profile, [], []))
        entry[1].append({"type": "event", "attributes": event.attributes()})
        entry[2].append(index)
    body = {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": profile},
                                "events": {"data": events},
                            },
                        }
                        for profile, events, _ in entries.values()
                    ]
                }
            },
        }
    }
    return body, [indexes for _, _, indexes in entries.values()]


def _send(ctx: Context, chunk: list[Item], results: Results) -> None:
    body, carried = _job(chunk)
    try:
        response = ctx.call(
            "POST", "/api/event-bulk-create-jobs", body=body, expect=(202,), handled=(400,)
        )
    except Result as problem:
        for index, _ in chunk:
            results[index] = problem
        return
    if response.status == 202:
        for index, _ in chunk:
            results[index] = success()
        return
    named: dict[int, list[KlaviyoError]] = {}
    for error in response.errors:
        found = _BULK_POINTER.match(error.pointer or "")
        if not found or int(found.group(1)) >= len(carried):
            continue
        leads = carried[int(found.group(1))]
        if found.group(2) is not None and int(found.group(2)) < len(leads):
            leads = [leads[int(found.group(2))]]  # the one event the error points at
        for index in leads:
            named.setdefault(index, []).append(error)
    if named:
        for index, errors in named.items():
            results[index] = from_klaviyo_answer(400, errors)
        rest = [item for item in chunk if item[0] not in named]
        if rest:
            _send(ctx, rest, results)
        return
    if len(chunk) == 1:
        results[chunk[0][0]] = from_klaviyo_answer(400, response.errors)
        return
    middle = len(chunk) // 2
    _send(ctx, chunk[:middle], results)
    _send(ctx, chunk[middle:], results)


# -- A batch ------------------------------------------------------------------------------------


def track_event_batch(batch: Batch) -> None:
    """Bulk event jobs of up to 1,000 events; a retried lead keeps its message id as key."""
    items: list[tuple[int, Event]] = []
    for index, lead in batch.leads.items():
        try:
            items.append((index, prepare(batch.lead_ctx(index), lead)))
        except Result as problem:
            batch.fail(index, problem)
    # A lead whose person a create is still making waits for it (its import would take the
    # event's profile for its own); the rest are marked, and the jobs mark them again.
    held = hold_back(
        batch.ctx,
        {index: [event.identifier()] for index, event in items},
        {index: event.delivery for index, event in items},
    )
    for index, result in held.items():
        batch.fail(index, result)
    going = [item for item in items if item[0] not in held]
    send_jobs(batch.ctx, going, batch.results, marked=True)
