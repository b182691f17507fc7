"""Injected faults: wrong statuses, slow answers, dropped connections, garbage bodies."""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Fault:
    """One injected misbehaviour; the first matching fault in the set wins.

    Matching: ``method`` (case-insensitive), ``path`` (``re.search`` on the request path)
    and ``operation_id``; ``None`` matches anything. With ``probability`` set, a matching
    request is hit only that often (using the emulator's seeded random generator).
    ``times`` counts hits; ``None`` means forever.

    Effect, after sleeping ``latency`` seconds: ``drop`` closes the connection without an
    answer; ``challenge`` sends a Cloudflare-style HTML 403; ``body`` sends those raw bytes
    (with ``status``, default 200, and ``content_type``); ``status`` alone sends Klaviyo's
    JSON:API error for that status. With none of those, the normal answer follows (a slow
    but correct response when only ``latency`` is set). With ``after``, the request is
    processed first and the fault then hits its answer: a create that happened but whose
    answer was lost.

    ``headers`` are set on whatever answer follows (the fault's own or the normal one),
    replacing the emulator's own values: a ``Retry-After`` or ``RateLimit-*`` no
    well-behaved server sends (``inf``, a far date, a reset given as a Unix time).
    """

    method: str | None = None
    path: str | None = None
    operation_id: str | None = None
    status: int | None = None
    retry_after: int | None = None
    latency: float = 0.0
    drop: bool = False
    challenge: bool = False
    body: bytes | None = None
    content_type: str | None = None
    times: int | None = 1
    probability: float | None = None
    after: bool = False
    headers: dict[str, str] | None = None
    hits: int = field(default=0, compare=False)

    @property
    def replaces_answer(self) -> bool:
        return self.drop or self.challenge or self.body is not None or self.status is not None

    def matches(self, method: str, path: str, operation_id: str | None) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.operation_id is not None and self.operation_id != operation_id:
            return False
        return self.path is None or re.search(self.path, path) is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from the control API's JSON; ``body`` is text (encoded as UTF-8)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        values = dict(data)
        values.pop("hits", None)  # accepted so to_json() output can be posted back
        if isinstance(values.get("body"), str):
            values["body"] = values["body"].encode()
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.body is not None:
            data["body"] = self.body.decode("utf-8", "replace")
        return data


class FaultSet:
    """Thread-safe ordered collection of faults."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if fault.path is not None:
            re.compile(fault.path)  # fail at registration, not inside a request
        with self._lock:
            fault.hits = 0  # a Fault object added again starts afresh
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def take(self, method: str, path: str, operation_id: str | None) -> Fault | None:
        """The fault to apply to this request, consuming one of its ``times``."""
        with self._lock:
            for fault in self._faults:
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if not fault.matches(method, path, operation_id):
                    continue
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                return fault
            return None
