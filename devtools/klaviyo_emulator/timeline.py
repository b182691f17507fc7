"""Effects Klaviyo applies later: subscribe jobs, deletions, segment and search updates.

Each effect is due at a time on the emulator's clock and runs the next time anyone looks
(every API request and every inspection helper settles the timeline first). Nothing runs in
a background thread, so under an injected clock a test moves time forward and sees exactly
what is due, without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class _Entry:
    due: float
    order: int
    effect: Callable[[], None] = field(compare=False)


class Timeline:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._entries: list[_Entry] = []
        self._order = itertools.count()
        self._running_due: float | None = None

    def now(self) -> float:
        """The time an effect happens at: while a due effect runs, when it was due (Klaviyo
        does the work then, not when someone next looks), else the clock's."""
        return self.clock() if self._running_due is None else self._running_due

    def after(self, delay: float, effect: Callable[[], None]) -> None:
        """Run ``effect`` ``delay`` seconds from now (at once when ``delay`` is 0)."""
        if delay <= 0:
            effect()
            return
        with self._lock:
            heapq.heappush(self._entries, _Entry(self.now() + delay, next(self._order), effect))

    def settle(self) -> None:
        """Run every effect that is due, oldest first."""
        now = self.clock()
        with self._lock:
            while self._entries and self._entries[0].due <= now:
                entry = heapq.heappop(self._entries)
                self._running_due = entry.due
                try:
                    entry.effect()
                finally:
                    self._running_due = None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
