"""The Klaviyo client: one pooled HTTP client per container, the lead's budget per call.

It owns everything about talking to Klaviyo: the key and ``revision`` headers, JSON:API
bodies and error envelopes, retries with backoff that never outlive the budget, honouring
``Retry-After``, pacing by the ``RateLimit-*`` headers, and re-reading a rotated key once.
"""

from __future__ import annotations

import json
import math
import random
import re
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
# Klaviyo's timestamps vs our clock: allowed difference when judging whether something
# Klaviyo made (a profile, an import job) came from an attempt of ours.
CLOCK_SKEW_SECONDS = 30.0


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


# Klaviyo counts its limits per endpoint (operation). The client paces each operation on its
# own, named as Klaviyo's OpenAPI document names it; the route table below finds it.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("GET", r"/api/profiles", "get_profiles"),
    ("POST", r"/api/profiles", "create_profile"),
    ("GET", r"/api/profiles/[^/]+", "get_profile"),
    ("PATCH", r"/api/profiles/[^/]+", "update_profile"),
    ("POST", r"/api/profile-subscription-bulk-create-jobs", "bulk_subscribe_profiles"),
    ("POST", r"/api/profile-subscription-bulk-delete-jobs", "bulk_unsubscribe_profiles"),
    ("POST", r"/api/profile-bulk-import-jobs", "bulk_import_profiles"),
    ("GET", r"/api/profile-bulk-import-jobs", "get_bulk_import_profiles_jobs"),
    ("GET", r"/api/profile-bulk-import-jobs/[^/]+", "get_bulk_import_profiles_job"),
    (
        "GET",
        r"/api/profile-bulk-import-jobs/[^/]+/profiles",
        "get_profiles_for_bulk_import_profiles_job",
    ),
    (
        "GET",
        r"/api/profile-bulk-import-jobs/[^/]+/import-errors",
        "get_errors_for_bulk_import_profiles_job",
    ),
    ("GET", r"/api/lists/[^/]+", "get_list"),
    ("GET", r"/api/lists/[^/]+/profiles", "get_profiles_for_list"),
    ("GET", r"/api/lists/[^/]+/relationships/profiles", "get_profile_ids_for_list"),
    ("POST", r"/api/lists/[^/]+/relationships/profiles", "add_profiles_to_list"),
    ("DELETE", r"/api/lists/[^/]+/relationships/profiles", "remove_profiles_from_list"),
    ("GET", r"/api/segments/[^/]+", "get_segment"),
    ("GET", r"/api/segments/[^/]+/profiles", "get_profiles_for_segment"),
    ("POST", r"/api/events", "create_event"),
    ("POST", r"/api/event-bulk-create-jobs", "bulk_create_events"),
    ("POST", r"/api/data-privacy-deletion-jobs", "request_profile_deletion"),
)
_ROUTES = [(method, re.compile(f"^{path}/?$"), name) for method, path, name in OPERATIONS]

# Klaviyo's per-second (burst) limits by operation (the document's x-klaviyo-ratelimit). No
# header reports the burst window, so calls are spaced to stay inside it.
BURST_PER_SECOND = {
    "add_profiles_to_list": 10,
    "remove_profiles_from_list": 10,
    "bulk_import_profiles": 10,
    "get_bulk_import_profiles_jobs": 10,
    "get_bulk_import_profiles_job": 10,
    "get_profiles_for_bulk_import_profiles_job": 10,
    "get_errors_for_bulk_import_profiles_job": 10,
    "bulk_create_events": 10,
    "request_profile_deletion": 3,
    "create_event": 350,
}
DEFAULT_BURST_PER_SECOND = 75  # the "L" tier most profile, list and segment reads use


def operation_of(method: str, path_or_url: str) -> str:
    """The Klaviyo operation a request is, for pacing: by method and path."""
    path = urlsplit(path_or_url).path
    for route_method, pattern, name in _ROUTES:
        if route_method == method.upper() and pattern.match(path):
            return name
    return f"{method.upper()} {path}"


# Calls are spaced a little wider than 1/limit: arrival times jitter, and eleven calls
# spaced exactly 100 ms apart can land in one fixed one-second window.
SPACING_MARGIN = 1.1
# Of what the rest of the account leaves in a window, the share one container takes. Below
# 1 so that many containers, each taking this share of what they see left, stay under it.
HEADROOM = 0.9
# How quickly the estimate of the rest of the account's pace follows what it sees, seconds.
OTHERS_TIME_CONSTANT = 5.0
# The pace is read as calls per second over what is left of the window; never less time
# than this, so the last second of a window is not read as an unlimited pace.
MIN_WINDOW_LEFT = 0.5
STEADY_WINDOW_SECONDS = 60.0
# A container with nothing left in a window comes back within this much of the next one.
MAX_WAKE_SPREAD = 10.0
# A container whose share of a window is spent, while Klaviyo's window still has room,
# looks again (one call) this often rather than sitting the window out: what it learnt of
# the rest of the account's pace may be stale (a pace the others spent while the window had
# room to spare), and only an answer can correct it. At most PROBE_SHARE of the limit's pace,
# only while PROBE_ROOM of the limit is left, and only while the last answer found the others
# spending under PROBE_DOUBT of the pace learnt: when the answers bear the pace out, every
# container of a large fleet looking again every few seconds would spend the room itself.
PROBE_SECONDS = 2.0
PROBE_SHARE = 0.05
PROBE_ROOM = 0.2
PROBE_DOUBT = 0.8
# Headers are numbers to trust or ignore, never to be held by. The longest Retry-After
# believed: one that asks for more (a date in 9999) holds an endpoint for an hour at most.
MAX_RETRY_AFTER_SECONDS = 3600.0
# A RateLimit-Limit or -Remaining above this counts no calls Klaviyo grants: ignored.
MAX_RATE_LIMIT_COUNT = 1e9
# A RateLimit-Reset above this is a moment (Unix time, from 2001 on), not seconds.
RESET_AS_UNIX_TIME_FROM = 1e9


@dataclass
class _Window:
    """One endpoint's steady (per-minute) window as this container sees it."""

    limit: float | None = None  # RateLimit-Limit
    remaining: float | None = None  # RateLimit-Remaining when last seen
    ends_at: float = 0.0
    seen_at: float = 0.0
    own_since: int = 0  # our calls since it was last seen
    others_per_second: float = 0.0  # what the rest of the account spends, smoothed
    blocked_until: float = 0.0  # a 429's Retry-After
    last_sent: float | None = None
    own_in_window: int = 0  # our calls in the current window
    wake_at: float = 0.0  # when a container with nothing left in a window comes back
    pace_in_doubt: bool = False  # the last answer found the others slower than learnt


class Pacer:
    """Spends an even share of what Klaviyo's limits leave, instead of running into 429s.

    Klaviyo limits per account and endpoint, in fixed 1 s and 60 s windows, and every
    container of every action shares them with the account's other integrations. No
    coordinator is needed: every answer says how much of the minute is left
    (``RateLimit-Remaining``) and for how long (``RateLimit-Reset``). From how fast that
    falls besides our own calls, a container learns the rest of the account's pace, and
    spreads its calls evenly over the rest of the window at ``HEADROOM`` of what is left
    after that pace. N containers doing the same settle below the limit together. A 429
    blocks the endpoint until its ``Retry-After``; calls are also spaced by the burst limit.
    A container left no share while Klaviyo's window has room looks again within seconds
    (the pace it learnt may be stale), and a lead it cannot send within its budget is told
    when it could be sent (``sendable_in``), not this container's place in a later window.

    ``max_share`` caps the bundle's share of each endpoint's limit: the rest is treated as
    spent by other integrations even when they are quiet.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        burst_per_second: Mapping[str, float] | None = None,
        max_share: float = 1.0,
        headroom: float = HEADROOM,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock  # for a header that names a moment (a date, a Unix time)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._burst = BURST_PER_SECOND if burst_per_second is None else burst_per_second
        self._windows: dict[str, _Window] = {}
        self.max_share = max_share
        self.headroom = headroom

    def _window(self, bucket: str) -> _Window:
        return self._windows.setdefault(bucket, _Window())

    def wait_for(self, bucket: str) -> float:
        """Seconds until the next call to ``bucket`` is within its share of the limits."""
        with self._lock:
            now = self._clock()
            window = self._window(bucket)
            wait = window.blocked_until - now
            burst = self._burst.get(bucket, DEFAULT_BURST_PER_SECOND)
            if window.last_sent is not None and burst:
                wait = max(wait, window.last_sent + SPACING_MARGIN / burst - now)
            pace = self._pace(window, now)
            if pace is not None and pace <= 0:
                # Nothing left for us this window: come back in the next one (or look again
                # sooner while Klaviyo's window has room to spare).
                due = min(self._next_window(window, now), self._look_again_at(window, now))
                wait = max(wait, due - now)
            elif pace is not None and window.last_sent is not None:
                # A pace of next to nothing spaces calls no wider than a window: by then
                # the next one has begun and its pace is read afresh. A call due after
                # this window ends is due in the next one, at our first interval there.
                due = window.last_sent + min(1.0 / pace, STEADY_WINDOW_SECONDS)
                if window.limit and now < window.ends_at < due:
                    due = min(due, self._next_window(window, now))
                wait = max(wait, min(due, self._look_again_at(window, now)) - now)
            return _bounded(wait)

    def _next_window(self, window: _Window, now: float) -> float:
        """When this container calls in the next window: at a random point of its first
        interval there, so containers do not wake together (one moment, kept)."""
        if window.wake_at <= now or window.wake_at < window.ends_at:
            fresh = self._pace(window, window.ends_at)
            spread = min(MAX_WAKE_SPREAD, 1.0 / fresh) if fresh else MAX_WAKE_SPREAD
            window.wake_at = window.ends_at + self._rng.uniform(0.0, spread)
        return window.wake_at

    def _look_again_at(self, window: _Window, now: float) -> float:
        """When a container with no share left calls once more in this window (infinity:
        not before the next one). Only while Klaviyo's window has room to spare: a window
        that is spent is spent, whatever the pace."""
        if not window.limit or window.remaining is None or window.ends_at <= now:
            return math.inf
        # Klaviyo's last count, less our calls since. (Not less the others' pace since: that
        # is the estimate in doubt, and it would keep a container out for good.)
        left = window.remaining - window.own_since - self._kept(window)
        if left < PROBE_ROOM * window.limit:
            return math.inf
        if not window.pace_in_doubt:
            return math.inf
        interval = max(PROBE_SECONDS, STEADY_WINDOW_SECONDS / (PROBE_SHARE * window.limit))
        last = window.seen_at if window.last_sent is None else window.last_sent
        return last + interval

    def _kept(self, window: _Window) -> float:
        """What is kept for the account's other integrations: a part of the window they may
        spend at any moment of it, idle so far or not, so Klaviyo's count never goes below it
        by our calls. (Kept as a pace, it would fall to us as the window ran out.)"""
        return (1.0 - self.max_share) * (window.limit or 0.0)

    def sendable_in(self, bucket: str) -> float:
        """Seconds until Klaviyo could take a call to ``bucket``: a 429's ``Retry-After``,
        else our wait, but no later than the start of the next window when the wait runs
        into it (the moment a lead could be sent, not this container's place in the next
        window). What a sender told to come back later is told."""
        with self._lock:
            now = self._clock()
            window = self._window(bucket)
            blocked = window.blocked_until - now
        wait = self.wait_for(bucket)
        if blocked <= 0 and window.limit and now < window.ends_at < now + wait:
            wait = window.ends_at - now
        return _bounded(max(wait, blocked))

    def told_to_wait(self, bucket: str) -> bool:
        """Whether ``bucket`` is held by a 429's ``Retry-After`` (else by our share of it)."""
        with self._lock:
            return self._window(bucket).blocked_until > self._clock()

    def _pace(self, window: _Window, now: float) -> float | None:
        """Calls per second this container may spend now; None before anything is known."""
        if window.remaining is None:
            return None
        remaining, left = window.remaining - window.own_since, window.ends_at - now
        if left <= 0:
            if not window.limit:
                return None
            # A new window has begun: the whole limit, and the rest of the account keeps
            # its pace. (Waking at full speed would fire every container at once.)
            remaining, left = window.limit, STEADY_WINDOW_SECONDS
        remaining -= self._kept(window)
        available = remaining / max(MIN_WINDOW_LEFT, left) - window.others_per_second
        return max(0.0, self.headroom * available)

    def sent(self, bucket: str) -> None:
        with self._lock:
            window = self._window(bucket)
            window.last_sent = self._clock()
            window.own_since += 1
            window.own_in_window += 1

    def observe(self, bucket: str, status: int, headers: Mapping[str, str]) -> None:
        headers = {name.lower(): value for name, value in headers.items()}
        now = self._clock()
        with self._lock:
            window = self._window(bucket)
            if status == 429:
                # Retry-After says how long, whichever window ran out: a spent burst second
                # is not a spent minute. (A 429 carries no RateLimit-* headers to learn from.)
                wait = retry_after_seconds(headers.get("retry-after"), self._wall_clock) or 1.0
                window.blocked_until = max(window.blocked_until, now + wait)
                return
            remaining = _count(headers.get("ratelimit-remaining"))
            reset = reset_seconds(headers.get("ratelimit-reset"), self._wall_clock)
            if remaining is None or reset is None:
                return
            same_window = (
                window.remaining is not None
                and now < window.ends_at + 1.0
                and remaining <= window.remaining
            )
            limit = _count(headers.get("ratelimit-limit")) or window.limit
            sample: tuple[float, float] | None = None  # (others' calls, over seconds)
            if same_window and window.remaining is not None and now > window.seen_at:
                spent = window.remaining - remaining - window.own_since
                sample = (max(0.0, spent), now - window.seen_at)
            elif limit:
                # First sight of this window: what others spent since it opened (many
                # containers starting together see each other here).
                window.own_in_window = window.own_since
                opened_ago = max(1.0, STEADY_WINDOW_SECONDS - reset)
                sample = (max(0.0, limit - remaining - window.own_in_window), opened_ago)
            if sample is not None:
                calls, seconds = sample
                known = window.remaining is not None
                weight = 1.0 - math.exp(-seconds / OTHERS_TIME_CONSTANT) if known else 1.0
                learnt = window.others_per_second
                window.pace_in_doubt = known and calls / seconds < PROBE_DOUBT * learnt
                window.others_per_second += weight * (calls / seconds - learnt)
            window.limit = limit
            window.remaining, window.ends_at, window.seen_at = remaining, now + reset, now
            window.own_since = 0


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


ApiKeySource = Callable[[bool], str]
"""Returns the API key; called with True to re-read it after a 401 (key rotation)."""

CallObserver = Callable[[str, int | None, float], None]
"""Told about every attempt: the bucket, Klaviyo's status (None when there was none) and the
seconds it took."""

WaitObserver = Callable[[str, float], None]
"""Told about every wait for the pacer: the bucket and the seconds waited."""


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
        waited: WaitObserver | None = None,
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
        self._waited = waited

    # -- the one way to call Klaviyo -----------------------------------------------------

    def call(
        self,
        method: str,
        path_or_url: str,
        budget: Budget,
        *,
        bucket: str | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        handled: tuple[int, ...] = (),
        idempotent: bool = True,
        before_send: Callable[[], None] | None = None,
    ) -> Response:
        """Send one request, retrying what a retry can fix while the budget allows.

        Statuses in ``expect`` and ``handled`` come back as a ``Response``; any other answer
        (or no answer) is raised as a classified ``Result``. A request that is not
        ``idempotent`` is not repeated once it may have reached Klaviyo: the ``Result``
        then says ``effect_unknown`` and the caller decides (see Create Profile).
        ``before_send`` runs right before each attempt goes out, after every wait (a create
        renews its hold there); what it raises stops the call with nothing sent.
        """
        url = self.url(path_or_url, query)
        bucket = bucket or operation_of(method, path_or_url)
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
            if before_send is not None:
                before_send()
            sent_at = time.monotonic()
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
                self._observe(bucket, None, sent_at)
                problem = self._no_answer(exc, budget)
            except (ReadTimeoutError, HTTPError) as exc:
                self._observe(bucket, None, sent_at)
                problem = self._no_answer(exc, budget)
                # It may have reached Klaviyo: repeating it is the caller's decision.
                problem.effect_unknown = not idempotent
            else:
                status = raw.status
                # Header names are case-insensitive; keep them lower-case from here on.
                headers = {k.lower(): v for k, v in raw.headers.items()}
                self.pacer.observe(bucket, status, headers)
                self._observe(bucket, status, sent_at)
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
        wait = _bounded(self.pacer.wait_for(bucket))
        if wait > 0 and wait + MINIMUM_CALL_SECONDS > budget.remaining():
            # Not sent: the lead comes back when it could be sent, not when this container
            # would have sent it.
            held = outcomes.PACED if self.pacer.told_to_wait(bucket) else outcomes.NO_ROOM
            sendable = self.pacer.sendable_in(bucket)
            raise held(seconds=math.ceil(sendable), retry_after=sendable)
        return wait

    def _wait_for_pacer(self, bucket: str, budget: Budget) -> None:
        wait = self.check_pace(bucket, budget)
        if wait > 0:
            self.sleep(wait)
            if self._waited is not None:
                self._waited(bucket, wait)
        self.pacer.sent(bucket)

    def _no_answer(self, exc: Exception, budget: Budget) -> Result:
        # urllib3's NewConnectionError (refused, DNS) is a kind of ConnectTimeoutError.
        if isinstance(exc, NewConnectionError) and not budget.expired:
            return outcomes.UNREACHABLE()
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError) or budget.expired:
            return outcomes.TIMEOUT(seconds=budget.describe())
        return outcomes.UNREACHABLE()

    def _observe(self, bucket: str, status: int | None, sent_at: float) -> None:
        if self._observer is not None:
            self._observer(bucket, status, time.monotonic() - sent_at)


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
