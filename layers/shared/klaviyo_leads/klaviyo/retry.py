"""The in-call retry policy: what a retry can fix, how long to wait before it, and when the
lead's budget says to stop and hand the lead back instead."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from klaviyo_leads.outcomes import Result


class Backoff:
    """Jittered exponential backoff, as Klaviyo's own SDK does it (0.5 s x 1.5^n, +-50 %)."""

    def __init__(
        self,
        base: float = 0.5,
        factor: float = 1.5,
        cap: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base, self.factor, self.cap = base, factor, cap
        self._rng = rng or random.Random()

    def delay(self, retry_number: int) -> float:
        raw = min(self.cap, self.base * self.factor ** (retry_number - 1))
        return raw * self._rng.uniform(0.5, 1.5)


# Time a call needs at the least; a retry that leaves less than this is not worth starting.
MINIMUM_CALL_SECONDS = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_attempts`` attempts of one call. A retry waits as Klaviyo said
    (``Retry-After``) or by ``backoff``; none is made for what a retry cannot fix, for a
    request that may have had its effect (``effect_unknown``), or when the wait would not
    leave the lead's budget time for the call (the queue redelivers it instead)."""

    max_attempts: int = 4
    backoff: Backoff = field(default_factory=Backoff)

    def wait_before_retry(self, problem: Result, attempt: int, remaining: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``; None: do not retry."""
        if not problem.retryable or problem.effect_unknown or attempt >= self.max_attempts:
            return None
        wait = (
            problem.retry_after if problem.retry_after is not None else self.backoff.delay(attempt)
        )
        if wait + MINIMUM_CALL_SECONDS > remaining:
            return None
        return wait
