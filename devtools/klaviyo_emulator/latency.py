"""How long Klaviyo takes to answer: per-operation latency distributions.

Off by default, so unit tests answer at once. ``latency="realistic"`` (or ``--latency
realistic``) draws each answer's delay from a lognormal distribution given by its median and
99th percentile. Draws come from one generator per operation seeded from the emulator's
``seed``, so the same sequence of requests sees the same delays. The emulator waits with the
``sleep`` it was given (``time.sleep`` unless a benchmark passes a virtual clock's).

No public source gives Klaviyo's latency distribution: every figure in ``REALISTIC`` is an
assumption, sized from these facts: the API sits behind a CDN in the US (the 403 challenge
pages seen in klaviyo-api-python #84 are Cloudflare's), writes check identity and 409 before
answering, and list, subscribe and deletion calls only enqueue work. The tail beyond p99
(multi-second hangs during incidents, klaviyo-api-node #62) is left to fault injection.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# z-score of the 99th percentile of the standard normal distribution
_Z99 = 2.3263478740408408


class LatencyModel(Protocol):
    name: str

    def delay(self, operation_id: str | None) -> float:
        """Seconds to wait before answering a request for ``operation_id``."""
        ...


@dataclass(frozen=True)
class Lognormal:
    """A lognormal distribution given by its median and 99th percentile, in seconds."""

    p50: float
    p99: float

    def draw(self, rng: random.Random) -> float:
        sigma = (math.log(self.p99) - math.log(self.p50)) / _Z99
        return rng.lognormvariate(math.log(self.p50), sigma)


# Assumptions (see the module docstring): lookups by id are fastest, searches and writes
# slower, calls that only enqueue a job in between.
_READ_BY_ID = Lognormal(0.12, 0.6)
_SEARCH = Lognormal(0.2, 1.2)
_WRITE = Lognormal(0.25, 1.5)
_ENQUEUE = Lognormal(0.2, 1.0)
REALISTIC: Mapping[str, Lognormal] = {
    "get_profile": _READ_BY_ID,
    "get_list": _READ_BY_ID,
    "get_segment": _READ_BY_ID,
    "get_segment_ids_for_profile": _READ_BY_ID,
    "get_profiles": _SEARCH,
    "get_lists": _SEARCH,
    "get_profiles_for_list": _SEARCH,
    "get_profile_ids_for_list": _SEARCH,
    "get_profiles_for_segment": _SEARCH,
    "get_profile_ids_for_segment": _SEARCH,
    "create_profile": _WRITE,
    "update_profile": _WRITE,
    "create_or_update_profile": _WRITE,
    "create_list": _WRITE,
    "add_profiles_to_list": _ENQUEUE,
    "remove_profiles_from_list": _ENQUEUE,
    "bulk_subscribe_profiles": _ENQUEUE,
    "bulk_unsubscribe_profiles": _ENQUEUE,
    "request_profile_deletion": _ENQUEUE,
    "bulk_import_profiles": _ENQUEUE,
    "get_bulk_import_profiles_job": _READ_BY_ID,
    "get_bulk_import_profiles_jobs": _SEARCH,
    "get_profiles_for_bulk_import_profiles_job": _SEARCH,
    "get_profile_ids_for_bulk_import_profiles_job": _SEARCH,
    "get_errors_for_bulk_import_profiles_job": _SEARCH,
    "get_list_for_bulk_import_profiles_job": _READ_BY_ID,
    "get_list_ids_for_bulk_import_profiles_job": _READ_BY_ID,
    "create_event": _ENQUEUE,
    "bulk_create_events": _ENQUEUE,
}
PROFILES: Mapping[str, Mapping[str, Lognormal]] = {"realistic": REALISTIC}


class PerOperation:
    """Delays drawn per operation; ``default`` covers operations the table lacks."""

    def __init__(
        self,
        table: Mapping[str, Lognormal],
        *,
        seed: int | None = None,
        default: Lognormal = _SEARCH,
        name: str = "custom",
    ) -> None:
        self.name = name
        self._table = dict(table)
        self._default = default
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def delay(self, operation_id: str | None) -> float:
        key = operation_id or ""
        with self._lock:
            rng = self._rngs.get(key)
            if rng is None:
                # A generator per operation: one operation's delays do not shift when
                # requests for another are interleaved differently.
                rng = random.Random(None if self._seed is None else f"{self._seed}/{key}")
                self._rngs[key] = rng
            return self._table.get(key, self._default).draw(rng)


def latency_model(
    latency: str | LatencyModel | None, seed: int | None = None
) -> LatencyModel | None:
    """``None``/``"off"`` (no latency), a profile name such as ``"realistic"``, or a model."""
    if latency is None or latency == "off":
        return None
    if isinstance(latency, str):
        if latency not in PROFILES:
            raise ValueError(f"latency must be 'off', a model or one of {sorted(PROFILES)}")
        return PerOperation(PROFILES[latency], seed=seed, name=latency)
    return latency
