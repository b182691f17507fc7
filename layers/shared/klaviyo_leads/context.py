"""What an action needs for one lead: Klaviyo, the lead's time budget, settings and caches."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.budget import Budget
from klaviyo_leads.config import Settings
from klaviyo_leads.dry_run import WouldSend
from klaviyo_leads.klaviyo.client import KlaviyoClient, Response


class NameCache:
    """List and segment details per container: they rarely change and lookups cost rate limit."""

    def __init__(self, ttl_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], tuple[float, Any]] = {}

    def get(self, kind: str, item_id: str, fetch: Callable[[], Any]) -> Any:
        key = (kind, item_id)
        with self._lock:
            cached = self._values.get(key)
        if cached and cached[0] > self._clock():
            return cached[1]
        value = fetch()
        with self._lock:
            self._values[key] = (self._clock() + self._ttl, value)
        return value


@dataclass
class Context:
    """One lead's view of the container: the client, its budget, settings and caches."""

    client: KlaviyoClient
    budget: Budget
    settings: Settings
    names: NameCache = field(default_factory=NameCache)
    delivery: int = 1  # which delivery of a queued lead this is (SQS's receive count)
    # What the lead arrived as (an SQS message id, an EventBridge event id): the same on a
    # retry, so a retried event is not recorded twice.
    origin_id: str | None = None
    # The record of every create, shared by the fleet (None: no table to keep it in; a
    # create then stops with a configuration error rather than go ahead unrecorded).
    ledger: CreateLedger | None = None
    # This attempt at the lead (one invocation's run of it): a record another attempt of
    # the same lead still holds is not this one's to write on.
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Wall-clock seconds, as Klaviyo's timestamps and the records read them.
    wall: Callable[[], float] = time.time
    # A dry run: its writes are kept here instead of sent (``dry_run``); its reads are sent.
    would_send: WouldSend | None = None

    def call(self, method: str, path: str, **kwargs: Any) -> Response:
        if self.would_send is None:
            return self.client.call(method, path, self.budget, **kwargs)
        if method.upper() != "GET":
            return self.would_send.keep(method.upper(), path, kwargs)
        response = self.client.call(method, path, self.budget, **kwargs)
        self.would_send.saw(response)
        return response
