"""A clock and a sleep that tests move by hand, so delays, lags and windows need no waiting."""

from __future__ import annotations


class FakeClock:
    """A clock at a fixed, round time; ``sleep`` moves it instead of waiting."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A virtual ``time.sleep``: time passes on this clock only."""
        self.slept.append(seconds)
        self.now += seconds
