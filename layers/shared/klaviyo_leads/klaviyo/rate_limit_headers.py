"""Klaviyo's rate-limit headers read as numbers to trust or ignore, never to be held by:
``RateLimit-Limit``/``-Remaining``/``-Reset`` and ``Retry-After``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

STEADY_WINDOW_SECONDS = 60.0


# Headers are numbers to trust or ignore, never to be held by. The longest Retry-After
# believed: one that asks for more (a date in 9999) holds an endpoint for an hour at most.
MAX_RETRY_AFTER_SECONDS = 3600.0


# A RateLimit-Limit or -Remaining above this counts no calls Klaviyo grants: ignored.
MAX_RATE_LIMIT_COUNT = 1e9


# A RateLimit-Reset above this is a moment (Unix time, from 2001 on), not seconds.
RESET_AS_UNIX_TIME_FROM = 1e9


def _number(value: str | None) -> float | None:
    """A finite number header (the first of a comma-separated list), or None.

    ``inf``, ``nan`` and ``1e400`` (which reads as infinity) are no number of seconds or
    calls: a wait for ever cannot be rounded, and would hold an endpoint for good.
    """
    if value is None:
        return None
    try:
        number = float(value.split(",")[0].strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _count(value: str | None) -> float | None:
    """``RateLimit-Limit`` or ``-Remaining``; None for what counts no calls (negative, or
    beyond any limit Klaviyo sets)."""
    number = _number(value)
    return number if number is not None and 0 <= number <= MAX_RATE_LIMIT_COUNT else None


def _bounded(seconds: float) -> float:
    """A wait within [0, MAX_RETRY_AFTER_SECONDS] (NaN: no wait), safe to round and sleep."""
    return min(MAX_RETRY_AFTER_SECONDS, seconds) if seconds > 0 else 0.0


def reset_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``RateLimit-Reset`` as seconds from now, within the steady window it counts down.

    Klaviyo sends seconds; a value only a Unix time can be is read as that moment, so a
    server that sends one does not hold the endpoint for decades.
    """
    seconds = _number(value)
    if seconds is None:
        return None
    if seconds > RESET_AS_UNIX_TIME_FROM:
        seconds -= now()
    return min(STEADY_WINDOW_SECONDS, max(0.0, seconds))


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds, or an HTTP date (RFC 9110).

    None for what is no wait (negative, non-finite, a date no datetime holds): the caller
    waits as if nothing was said. At most ``MAX_RETRY_AFTER_SECONDS``.
    """
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        seconds = _seconds_until(value, now)
    if seconds is None or seconds < 0:
        return None
    return min(MAX_RETRY_AFTER_SECONDS, seconds)


def _seconds_until(http_date: str, now: Callable[[], float]) -> float | None:
    """Seconds until an HTTP date (0 once it has passed), or None when it is no date."""
    try:
        moment = parsedate_to_datetime(http_date.strip())
        if moment.tzinfo is None:  # an HTTP date is GMT even when it does not say so
            return None
        seconds = moment.timestamp() - now()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
