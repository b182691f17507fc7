"""Klaviyo's fixed-window rate limits, counted per account as Klaviyo counts them.

"All new API endpoints are rate limited on a per-account basis, and use a fixed-window rate
limiting algorithm with two distinct windows: burst (1-second window) and steady (1-minute
window)"; "private key integrations share the same rate limit quota per account"
(developers.klaviyo.com/en/docs/rate_limits_and_error_handling). One emulator is one
account: every key and every client shares its windows, one set per operation (plus the
daily window where the spec declares one, and the stricter windows an operation's prose
adds for some parameter values).

Windows align to the clock's boundaries (the burst window is the current whole second, the
steady window the current whole minute), as a fixed window keyed by time does. Klaviyo does
not say where its windows start: that part is an assumption. Under an injected clock the
boundaries are that clock's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .spec_rules import WINDOW_SECONDS


@dataclass(frozen=True)
class Bucket:
    """One set of windows: ``name`` is what is counted, ``limits`` window -> requests."""

    name: str
    limits: Mapping[str, int]


@dataclass(frozen=True)
class Decision:
    refused: bool
    retry_after: int  # refused: whole seconds until every full window has reset
    headers: dict[str, str]  # counted: RateLimit-* for the first bucket's steady window


class RateLimiter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (bucket, window) -> (window index, requests counted in it)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def check(self, buckets: Sequence[Bucket], enforce: bool) -> Decision:
        """Count one request against every bucket, unless ``enforce`` refuses it.

        An over-limit request is refused (and not counted) only when ``enforce`` is set;
        otherwise it is counted like any other, and the headers still tell the truth.
        """
        now = self._clock()
        with self._lock:
            full = []
            for bucket in buckets:
                for window, limit in bucket.limits.items():
                    if self._count(bucket.name, window, now) >= limit:
                        full.append(window)
            if full and enforce:
                wait = max(_left(w, now) for w in full)
                return Decision(True, max(1, math.ceil(wait)), {})
            for bucket in buckets:
                for window in bucket.limits:
                    index = _index(window, now)
                    self._counts[(bucket.name, window)] = (
                        index,
                        self._count(bucket.name, window, now) + 1,
                    )
            return Decision(False, 0, self._headers(buckets[0], now))

    def _count(self, bucket: str, window: str, now: float) -> int:
        index, count = self._counts.get((bucket, window), (-1, 0))
        return count if index == _index(window, now) else 0

    def _headers(self, bucket: Bucket, now: float) -> dict[str, str]:
        # Klaviyo: the headers "indicate the state of the steady rate limit window".
        limit = bucket.limits["steady"]
        remaining = max(0, limit - self._count(bucket.name, "steady", now))
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(_left("steady", now))),
        }


def _index(window: str, now: float) -> int:
    return math.floor(now / WINDOW_SECONDS[window])


def _left(window: str, now: float) -> float:
    """Seconds until the current ``window`` ends (in (0, length])."""
    length = WINDOW_SECONDS[window]
    return (_index(window, now) + 1) * length - now
