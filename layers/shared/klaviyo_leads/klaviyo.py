"""The Klaviyo client: one pooled HTTP client per container, the lead's budget per call.

It owns everything about talking to Klaviyo: the key and ``revision`` headers, JSON:API
bodies and error envelopes, retries with backoff that never outlive the budget, honouring
``Retry-After``, pacing by the ``RateLimit-*`` headers, and re-reading a rotated key once.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

from . import outcomes
from .budget import Budget
from .outcomes import KlaviyoError, Result

JSON_API = "application/vnd.api+json"
CONNECT_TIMEOUT_SECONDS = 5.0
USER_AGENT = "klaviyo-lead-actions/0.1"
# Time a call needs at the least; a retry that leaves less than this is not worth starting.
MINIMUM_CALL_SECONDS = 0.25


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]
    errors: list[KlaviyoError] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None


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


# Klaviyo's per-second (burst) limits by bucket. No header reports the burst window, so
# calls are spaced to stay inside it; the per-minute window comes from the headers.
BURST_PER_SECOND = {
    "list_add": 10,
    "profile_import": 10,
    "profiles": 75,
    "subscribe": 75,
    "segment_profiles": 75,
}
# Calls are spaced a little wider than 1/limit: arrival times jitter, and eleven calls
# spaced exactly 100 ms apart can land in one fixed one-second window.
SPACING_MARGIN = 1.1


class Pacer:
    """Keeps calls within what Klaviyo's limits leave, instead of running into 429s.

    Klaviyo limits per account and endpoint, per second and per minute. Calls to a bucket
    are spaced by its burst limit; when the ``RateLimit-*`` headers say the minute has
    nothing left, or a 429 says when to come back, the next call waits for that.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        burst_per_second: Mapping[str, float] | None = None,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._blocked_until: dict[str, float] = {}
        self._burst = BURST_PER_SECOND if burst_per_second is None else burst_per_second
        self._last_sent: dict[str, float] = {}

    def wait_for(self, bucket: str) -> float:
        with self._lock:
            now = self._clock()
            wait = self._blocked_until.get(bucket, 0.0) - now
            burst = self._burst.get(bucket)
            if burst and bucket in self._last_sent:
                wait = max(wait, self._last_sent[bucket] + SPACING_MARGIN / burst - now)
            return max(0.0, wait)

    def sent(self, bucket: str) -> None:
        with self._lock:
            self._last_sent[bucket] = self._clock()

    def observe(self, bucket: str, status: int, headers: Mapping[str, str]) -> None:
        headers = {name.lower(): value for name, value in headers.items()}
        now = self._clock()
        until = None
        if status == 429:
            until = now + (retry_after_seconds(headers.get("retry-after")) or 1.0)
        else:
            remaining = _number(headers.get("ratelimit-remaining"))
            reset = _number(headers.get("ratelimit-reset"))
            if remaining is not None and remaining <= 0 and reset is not None:
                until = now + reset
        with self._lock:
            if until is not None:
                self._blocked_until[bucket] = max(until, self._blocked_until.get(bucket, 0.0))
            elif self._blocked_until.get(bucket, 0.0) <= now:
                self._blocked_until.pop(bucket, None)


def _number(value: str | None) -> float | None:
    """A non-negative number header (the first of a comma-separated list), or None."""
    if value is None:
        return None
    try:
        number = float(value.split(",")[0].strip())
    except ValueError:
        return None
    return max(0.0, number) if number == number else None


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds, or an HTTP date (RFC 9110)."""
    seconds = _number(value)
    if seconds is not None or value is None:
        return seconds
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT even when it does not say so
        return None
    return max(0.0, moment.timestamp() - now())


ApiKeySource = Callable[[bool], str]
"""Returns the API key; called with True to re-read it after a 401 (key rotation)."""

CallObserver = Callable[[str, int | None], None]
"""Told about every attempt: the bucket and Klaviyo's status (None when there was none)."""


class KlaviyoClient:
    def __init__(
        self,
        base_url: str,
        revision: str,
        api_key: ApiKeySource,
        *,
        pool: urllib3.PoolManager | None = None,
        max_attempts: int = 4,
        backoff: Backoff | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        observer: CallObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self._api_key = api_key
        self._pool = pool or urllib3.PoolManager(num_pools=4, maxsize=10)
        self.max_attempts = max_attempts
        self._backoff = backoff or Backoff()
        self.pacer = pacer or Pacer()
        self.sleep = sleep
        self._observer = observer

    # -- the one way to call Klaviyo -----------------------------------------------------

    def call(
        self,
        method: str,
        path_or_url: str,
        budget: Budget,
        *,
        bucket: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        handled: tuple[int, ...] = (),
        idempotent: bool = True,
    ) -> Response:
        """Send one request, retrying what a retry can fix while the budget allows.

        Statuses in ``expect`` and ``handled`` come back as a ``Response``; any other answer
        (or no answer) is raised as a classified ``Result``. A request that is not
        ``idempotent`` is not repeated once it may have reached Klaviyo: the ``Result``
        then says ``effect_unknown`` and the caller decides (see Create Profile).
        """
        url = self.url(path_or_url, query)
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        key = self._api_key(False)
        key_reread = False
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_pacer(bucket, budget)
            remaining = budget.remaining()
            if remaining < MINIMUM_CALL_SECONDS / 5:
                raise outcomes.TIMEOUT(seconds=budget.describe())
            try:
                raw = self._pool.request(
                    method,
                    url,
                    body=payload,
                    headers=self._headers(key, payload is not None),
                    timeout=urllib3.Timeout(
                        connect=min(CONNECT_TIMEOUT_SECONDS, remaining), read=remaining
                    ),
                    retries=False,
                    redirect=False,
                )
            except (ConnectTimeoutError, NewConnectionError) as exc:
                # Nothing reached Klaviyo: safe to repeat, whatever the method.
                self._observe(bucket, None)
                problem = self._no_answer(exc, budget)
            except (ReadTimeoutError, HTTPError) as exc:
                self._observe(bucket, None)
                problem = self._no_answer(exc, budget)
                # It may have reached Klaviyo: repeating it is the caller's decision.
                problem.effect_unknown = not idempotent
            else:
                status = raw.status
                # Header names are case-insensitive; keep them lower-case from here on.
                headers = {k.lower(): v for k, v in raw.headers.items()}
                self.pacer.observe(bucket, status, headers)
                self._observe(bucket, status)
                if status == 401 and not key_reread:
                    # Rotated key: read the secret again once, then try once more.
                    key_reread = True
                    fresh = self._api_key(True)
                    if fresh != key:
                        key = fresh
                        attempt -= 1
                        continue
                parsed, errors = _parse(raw.data, status, headers)
                if 200 <= status < 300 and status not in (202, 204) and parsed is _UNREADABLE:
                    unreadable = outcomes.unreadable_response(status)
                    # It worked, but we cannot see what it made: the caller decides.
                    unreadable.effect_unknown = not idempotent
                    raise unreadable
                if status in expect or status in handled:
                    return Response(
                        status=status,
                        body=None if parsed is _UNREADABLE else parsed,
                        headers=headers,
                        errors=errors,
                    )
                problem = outcomes.from_klaviyo_answer(
                    status,
                    errors,
                    challenge=_is_challenge(status, headers),
                    retry_after=retry_after_seconds(headers.get("retry-after")),
                )
                problem.effect_unknown = status >= 500 and not idempotent
            if not problem.retryable or problem.effect_unknown or attempt >= self.max_attempts:
                raise problem
            wait = (
                problem.retry_after
                if problem.retry_after is not None
                else self._backoff.delay(attempt)
            )
            if wait + MINIMUM_CALL_SECONDS > budget.remaining():
                # The wait would not fit the budget: report now, let the queue redeliver.
                raise problem
            self.sleep(wait)

    # -- helpers -------------------------------------------------------------------------

    def url(self, path_or_url: str, query: Mapping[str, str] | None) -> str:
        if path_or_url.startswith(("http://", "https://")):
            # Pagination links come back as full URLs; follow only our own host.
            if urlsplit(path_or_url).netloc != urlsplit(self.base_url).netloc:
                raise outcomes.unreadable_response(200)
            url = path_or_url
        else:
            url = self.base_url + path_or_url
        if query:
            # urlencode quotes "+" as %2B: an email with "+" would otherwise become a space.
            url += ("&" if "?" in url else "?") + urlencode(query)
        return url

    def _headers(self, key: str, has_body: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Klaviyo-API-Key {key}",
            "revision": self.revision,
            "Accept": JSON_API,
            "User-Agent": USER_AGENT,
        }
        if has_body:
            headers["Content-Type"] = JSON_API
        return headers

    def check_pace(self, bucket: str, budget: Budget) -> float:
        """How long a call to ``bucket`` must wait; throttled when that outlives the budget.

        Actions that end in a scarce endpoint (a list add) ask first, so a lead that could
        not be added anyway does not spend a profile search on the way.
        """
        wait = self.pacer.wait_for(bucket)
        if wait > 0 and wait + MINIMUM_CALL_SECONDS > budget.remaining():
            raise outcomes.PACED(seconds=math.ceil(wait), retry_after=wait)
        return wait

    def _wait_for_pacer(self, bucket: str, budget: Budget) -> None:
        wait = self.check_pace(bucket, budget)
        if wait > 0:
            self.sleep(wait)
        self.pacer.sent(bucket)

    def _no_answer(self, exc: Exception, budget: Budget) -> Result:
        # urllib3's NewConnectionError (refused, DNS) is a kind of ConnectTimeoutError.
        if isinstance(exc, NewConnectionError) and not budget.expired:
            return outcomes.UNREACHABLE()
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError) or budget.expired:
            return outcomes.TIMEOUT(seconds=budget.describe())
        return outcomes.UNREACHABLE()

    def _observe(self, bucket: str, status: int | None) -> None:
        if self._observer is not None:
            self._observer(bucket, status)


_UNREADABLE: Any = object()


def _parse(data: bytes, status: int, headers: Mapping[str, str]) -> tuple[Any, list[KlaviyoError]]:
    """The JSON body (or ``_UNREADABLE``) and its JSON:API errors."""
    if not data:
        return _UNREADABLE, []
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return _UNREADABLE, []
    errors: list[KlaviyoError] = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        errors = [KlaviyoError.from_json(item) for item in body["errors"]]
    if (
        200 <= status < 300
        and status not in (202, 204)
        and not (isinstance(body, dict) and "data" in body)
    ):
        return _UNREADABLE, errors
    return body, errors


def _is_challenge(status: int, headers: Mapping[str, str]) -> bool:
    """Cloudflare's bot challenge: an HTML 403 that says nothing about the API key."""
    if status != 403:
        return False
    mitigated = headers.get("cf-mitigated", "").lower() == "challenge"
    return mitigated or "text/html" in headers.get("content-type", "").lower()


def filter_value(value: str) -> str:
    """A string literal for Klaviyo's filter syntax: double-quoted, JSON escapes.

    Quotes and backslashes inside the value are escaped as Klaviyo's own SDK writes them
    (``json.dumps``), so an identifier ending in ``\\`` or holding quotes stays searchable.
    """
    return json.dumps(value, ensure_ascii=False)
