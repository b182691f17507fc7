"""Klaviyo's fixed-window rate limits, counted per account as Klaviyo counts them.

"All new API endpoints are rate limited on a per-account basis, and use a fixed-window rate
limiting algorithm with two distinct windows: burst (1-second window) and steady (1-minute
window)"; "private key integrations share the same rate limit quota per account"
(developers.klaviyo.com/en/docs/rate_limits_and_error_handling). One emulator is one
account: every key and every client shares its windows, one set per operation (plus the
daily window where the spec declares one, and the stricter windows an operation's prose
adds for some parameter values).

A window opens with the first request counted after the previous one ended, and lasts its
full length: windows do not align to the clock's whole seconds and minutes. Klaviyo does not
say where its windows start, so this is an assumption, chosen because it does not depend on
the clock's phase: the same requests on a virtual clock always meet the same limits.
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
        # (bucket, window) -> (when the window opened, requests counted in it)
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}

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
                        full.append(self._left(bucket.name, window, now))
            if full and enforce:
                return Decision(True, max(1, math.ceil(max(full))), {})
            for bucket in buckets:
                for window in bucket.limits:
                    key = (bucket.name, window)
                    count = self._count(bucket.name, window, now)
                    opened = self._counts[key][0] if count else now
                    self._counts[key] = (opened, count + 1)
            return Decision(False, 0, self._headers(buckets[0], now))

    def _count(self, bucket: str, window: str, now: float) -> int:
        opened, count = self._counts.get((bucket, window), (-math.inf, 0))
        return count if now - opened < WINDOW_SECONDS[window] else 0

    def _left(self, bucket: str, window: str, now: float) -> float:
        """Seconds until the open ``window`` ends."""
        opened, _ = self._counts[(bucket, window)]
        return opened + WINDOW_SECONDS[window] - now

    def _headers(self, bucket: Bucket, now: float) -> dict[str, str]:
        # Klaviyo: the headers "indicate the state of the steady rate limit window".
        limit = bucket.limits["steady"]
        remaining = max(0, limit - self._count(bucket.name, "steady", now))
        return {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(self._left(bucket.name, "steady", now))),
        }
