"""Where a conformance scenario and its probes run: a target (Klaviyo or the emulator) and
what one of its answers is reduced to.

``conformance.py`` (the scenario, the report, the command line) and ``conformance_probes.py``
(the behaviour probes) both build on it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from devtools.memory_dynamodb import memory_ledger  # noqa: E402
from klaviyo_leads.aws.ledger import CreateLedger  # noqa: E402
from klaviyo_leads.budget import Budget  # noqa: E402
from klaviyo_leads.klaviyo.client import KlaviyoClient, Response  # noqa: E402
from klaviyo_leads.klaviyo.routes import operation_of  # noqa: E402
from klaviyo_leads.outcomes import Result  # noqa: E402

EVERY_STATUS = tuple(range(100, 600))
RATE_LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after")
ACTION_SECONDS = 150.0


@dataclass(frozen=True)
class Observation:
    """What a target answered to one step, reduced to what should match across targets: a
    request's status, error codes and body shape; an action's outcome, calls and reason."""

    status: int | str | None
    codes: tuple[str, ...] = ()
    shape: str = ""

    def cells(self) -> list[str]:
        return [str(self.status or "-"), ",".join(self.codes) or "-", self.shape or "-"]


@dataclass
class Target:
    """Where a scenario runs: a Klaviyo (or the emulator), a scratch list and segment."""

    name: str
    client: KlaviyoClient
    list_id: str
    segment_id: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    created: list[str] = field(default_factory=list)
    # The emulator's contract check: requests outside Klaviyo's OpenAPI document.
    violations: Callable[[], list[str]] = list
    clock: Callable[[], float] = time.time
    # Seconds each answer took, per operation; the rate-limit headers answers carried.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    limit_headers: set[str] = field(default_factory=set)
    # Every call the client made (the operation, Klaviyo's status): what an action sent.
    calls: list[tuple[str, int | None]] = field(default_factory=list)
    # Against a live account: at least this long between two calls of one operation, so the
    # run stays a small share of every limit (the smallest steady one, deletion's, included).
    spacing: float = 0.0
    last_sent: dict[str, float] = field(default_factory=dict)
    # When the last call went out (after the spacing's wait): what a timing probe measures to.
    sent_at: float = 0.0
    # The create ledger the actions record their creates in (the production code, in memory).
    ledger: CreateLedger = field(default_factory=memory_ledger)

    def send(self, method: str, path: str, **kwargs: Any) -> Response | Observation:
        operation = re.sub(
            r"/[A-Za-z0-9]*[0-9][A-Za-z0-9]{5,}(?=/|$)", "/{id}", operation_of(method, path)
        )
        if self.spacing:
            gap = self.spacing
            wait = self.last_sent.get(operation, -gap) + gap - self.clock()
            if wait > 0:
                self.client.sleep(wait)
            self.last_sent[operation] = self.clock()
        started = self.sent_at = self.clock()
        try:
            # Against a live account the pacer keeps each operation's bucket within its
            # published limits; the emulator (limits counted, not enforced) is not held back.
            bucket = f"conformance {operation}" if self.spacing else f"conformance {uuid.uuid4()}"
            answer = self.client.call(
                method, path, Budget(ACTION_SECONDS), bucket=bucket, handled=EVERY_STATUS, **kwargs
            )
        except Result as problem:  # no answer at all: a connection or a timeout
            return Observation(None, (), problem.reason or "no answer")
        self.latencies.setdefault(operation, []).append(self.clock() - started)
        self.limit_headers |= {h for h in answer.headers if h.lower() in RATE_LIMIT_HEADERS}
        return answer
