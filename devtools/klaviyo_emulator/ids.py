"""Identifier factories: ULID-like profile ids and short list/segment ids."""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Callable

CROCKFORD32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SHORT_ALPHABET = string.ascii_letters + string.digits


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(CROCKFORD32[rem])
    return "".join(reversed(chars))


class UlidFactory:
    """Monotonic ULIDs, so sorting profiles by id equals sorting them by creation order. Their
    time part is the emulator's clock (a ULID encodes when it was made)."""

    def __init__(self, rng: random.Random, clock: Callable[[], float] = time.time) -> None:
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            now_ms = int(self._clock() * 1000)
            if now_ms <= self._last_ms:
                # Same (or an earlier, after a clock step) millisecond: bump the random part
                # instead of drawing a new one, as the ULID spec's monotonic mode does.
                now_ms = self._last_ms
                self._last_random += 1
            else:
                self._last_random = self._rng.getrandbits(79)
            self._last_ms = now_ms
            return _encode(now_ms, 10) + _encode(self._last_random, 16)


def short_id(rng: random.Random, length: int = 6) -> str:
    """A list/segment id shaped like Klaviyo's (for example ``Y6nRLr``)."""
    return "".join(rng.choice(_SHORT_ALPHABET) for _ in range(length))
