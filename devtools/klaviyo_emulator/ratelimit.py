"""Klaviyo's fixed-window rate limits: a 1 s burst window and a 60 s steady window.

Counters are kept per API key and per operation (Klaviyo counts per account and endpoint;
one emulator key stands for one account). A window opens with the first request after the
previous one expired, which keeps the arithmetic exact under an injected clock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0


@dataclass
class _Window:
    length: float
    limit: int
    started: float = 0.0
    count: int = 0

    def roll(self, now: float) -> None:
        if self.count == 0 or now - self.started >= self.length:
            self.started = now
            self.count = 0

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.started + self.length - now)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[_Window, _Window]] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def check(self, key: str, operation_id: str, burst: int, steady: int) -> Decision:
        """Count one request if it fits both windows; otherwise say how long to wait."""
        now = self._clock()
        with self._lock:
            pair = self._windows.get((key, operation_id))
            if pair is None or pair[0].limit != burst or pair[1].limit != steady:
                pair = (_Window(BURST_SECONDS, burst), _Window(STEADY_SECONDS, steady))
                self._windows[(key, operation_id)] = pair
            burst_w, steady_w = pair
            burst_w.roll(now)
            steady_w.roll(now)
            blocked = [w for w in pair if w.count >= w.limit]
            if blocked:
                wait = max(w.seconds_left(now) for w in blocked)
                retry_after = max(1, math.ceil(wait))
                return Decision(False, {"Retry-After": str(retry_after)})
            burst_w.count += 1
            steady_w.count += 1
            return Decision(
                True,
                {
                    "RateLimit-Limit": str(steady_w.limit),
                    "RateLimit-Remaining": str(steady_w.limit - steady_w.count),
                    "RateLimit-Reset": str(max(1, math.ceil(steady_w.seconds_left(now)))),
                },
            )
