"""A clock whose sleeps cost no real time, so hours of rate-limit waits run in seconds.

``now()`` is the real clock plus every sleep taken so far (read as wall-clock seconds, so the
emulator's timestamps look like today's, but moving as the monotonic clock does); ``sleep(s)``
only adds ``s``. Work done between sleeps (our code, the emulator, the HTTP round trips) still takes
real time and shows on this clock; only the waiting is skipped. The emulator's rate-limit
windows, the client's pacer and retries, the runtime's budgets and the Lambda context all
read the same clock, so each sees the time the others think has passed.
"""

from __future__ import annotations

import threading
import time


class VirtualClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._origin = time.time() - time.monotonic()
        self._slept = 0.0
        self.sleeps = 0

    def now(self) -> float:
        return time.monotonic() + self._origin + self._slept

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._slept += seconds
            self.sleeps += 1

    def wait_until(self, moment: float) -> None:
        """Sleep (virtually) until ``now()`` reaches ``moment``."""
        self.sleep(moment - self.now())

    @property
    def slept(self) -> float:
        """Virtual seconds spent sleeping so far."""
        return self._slept
