"""The time budget of one lead: every Klaviyo call and retry comes out of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

DEFAULT_TIMEOUT_SECONDS = 360.0
# API Gateway gives an integration 29 s; answer before it gives up on us.
API_GATEWAY_LIMIT_SECONDS = 29.0
API_GATEWAY_MARGIN_SECONDS = 2.0
# Time kept back from the invocation's deadline to build and return the result.
INVOCATION_MARGIN_SECONDS = 3.0
MINIMUM_BUDGET_SECONDS = 0.5


def effective_budget_seconds(
    requested: float | None,
    remaining_invocation_seconds: float | None = None,
    via_api_gateway: bool = False,
) -> float:
    """The smallest of the lead's own timeout, the invocation's time left and the gateway's."""
    candidates = [requested if requested and requested > 0 else DEFAULT_TIMEOUT_SECONDS]
    if remaining_invocation_seconds is not None:
        candidates.append(remaining_invocation_seconds - INVOCATION_MARGIN_SECONDS)
    if via_api_gateway:
        candidates.append(API_GATEWAY_LIMIT_SECONDS - API_GATEWAY_MARGIN_SECONDS)
    return max(MINIMUM_BUDGET_SECONDS, min(candidates))


class Budget:
    """A deadline. ``seconds`` is what the lead was given, for the timeout reason."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._deadline = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def describe(self) -> str:
        """The budget as the timeout reason shows it: whole seconds when whole."""
        rounded = round(self.seconds, 1)
        return str(int(rounded)) if rounded == int(rounded) else str(rounded)


# A lead of a batch (SQS records, several-lead events) is not started with less than this
# left in the invocation: better a retry than a Lambda timeout that loses the batch's results.
MIN_SECONDS_PER_LEAD = 10.0


class HasRemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def remaining_seconds(lambda_context: HasRemainingTime | None) -> float | None:
    """Seconds left in the invocation, or None outside Lambda (no deadline to respect)."""
    getter = getattr(lambda_context, "get_remaining_time_in_millis", None)
    return getter() / 1000.0 if callable(getter) else None
