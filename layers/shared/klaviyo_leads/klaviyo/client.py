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

from klaviyo_leads import outcomes
from klaviyo_leads.budget import Budget
from klaviyo_leads.outcomes import KlaviyoError, Result

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
# Of what is left of a window, spread over the time left, the pace the whole account (this
# bundle's containers and every other integration) is led to. Below 1 so that the window's
# last calls are not all spent in its last second.
HEADROOM = 0.95
# Nor more than this part of the burst limit, whatever is left: a minute with room to spare
# near its end is not spent in one second, and a second's count varies around the pace.
BURST_SHARE = 0.6
# How quickly the estimates of the account's pace, and of the rest of the account's, follow
# what the answers show, seconds.
PACE_TIME_CONSTANT = 5.0
# How quickly a container's share of the account's calls follows the room: over this many
# seconds it moves by the ratio of the pace the account is led to to the pace it has.
SHARE_TIME_CONSTANT = 4.0
# One answer raises a share by at most this factor, and a share grows to no more than this
# multiple of what the container spent of the account's calls.
MAX_SHARE_STEP = 2.0
# What a 429 does to a share: the account ran into a limit, so the pace was too much.
SHARE_AFTER_429 = 0.5
# A container alone whose learnt pace of the other integrations leaves it nothing looks
# again (one call every PROBE_SECONDS, at most PROBE_SHARE of the limit's pace) while
# Klaviyo's count says PROBE_ROOM of the limit is left, and either only the burst share is
# taken or its last answer found them spending under PROBE_DOUBT of that pace: the pace may
# be stale, and only an answer corrects it. (A fleet does not look again: its shares never
# fall to nothing.)
PROBE_SECONDS = 2.0
PROBE_SHARE = 0.05
PROBE_ROOM = 0.2
PROBE_DOUBT = 0.8
STEADY_WINDOW_SECONDS = 60.0
# RateLimit-Reset counts whole seconds, rounded up or down: a window may end up to this much
# after it said. What is left of it is spread as if it did, so that the calls of a window
# that has not ended are not spent as the next one's (and its last second is not read as an
# unlimited pace).
RESET_ROUNDING_SECONDS = 1.0
# A container with nothing left in a window comes back within this much of the next one.
MAX_WAKE_SPREAD = 10.0
# Headers are numbers to trust or ignore, never to be held by. The longest Retry-After
# believed: one that asks for more (a date in 9999) holds an endpoint for an hour at most.
MAX_RETRY_AFTER_SECONDS = 3600.0
# A RateLimit-Limit or -Remaining above this counts no calls Klaviyo grants: ignored.
MAX_RATE_LIMIT_COUNT = 1e9
# A RateLimit-Reset above this is a moment (Unix time, from 2001 on), not seconds.
RESET_AS_UNIX_TIME_FROM = 1e9
# The smallest share kept: a share that reached 0 could never grow again.
MIN_SHARE = 1e-4


@dataclass
class _Window:
    """One endpoint's steady (per-minute) window as this container sees it."""

    limit: float | None = None  # RateLimit-Limit
    remaining: float | None = None  # RateLimit-Remaining when last seen
    ends_at: float = 0.0
    seen_at: float = 0.0
    own_since: int = 0  # our calls since it was last seen
    account_per_second: float = 0.0  # the whole account's pace, ours included, smoothed
    others_per_second: float = 0.0  # the rest of the account's (our fleet's too), smoothed
    share: float | None = None  # of the account's calls, what this container may make
    share_counted: bool = False  # the share was counted from the crowd it found calling
    counting_calls: float = 0.0  # the account's calls between answers while counting it
    counting_own: float = 0.0  # ours of them
    paced_for: float = 0.0  # seconds of answers the account's pace was measured over
    blocked_until: float = 0.0  # a 429's Retry-After
    refused_in_a_row: int = 0  # 429s since the last answer that was not one
    retry_at: float = 0.0  # after 429s in a row: Retry-After and a random wait
    first_call_at: float | None = None  # a container of a crowd starting: its first call
    pace_in_doubt: bool = False  # the last answer found the others slower than learnt
    last_sent: float | None = None
    own_in_window: int = 0  # our calls in the current window
    wake_at: float = 0.0  # when a container with nothing left in a window comes back


class Pacer:
    """Spends a share of what Klaviyo's limits leave, instead of running into 429s.

    Klaviyo limits per account and endpoint, in fixed 1 s and 60 s windows, and every
    container of every action shares them with the account's other integrations. No
    coordinator is needed: every answer says how much of the minute is left
    (``RateLimit-Remaining``) and for how long (``RateLimit-Reset``), so every container sees
    the pace the whole account should keep (what is left spread over the time left, at
    ``HEADROOM``, and at most ``BURST_SHARE`` of the burst limit) and, from how fast that count
    falls, the pace it keeps. A container holds a share of the account's calls and moves it
    by the ratio of the two: all containers see the same ratio, so the fleet's pace moves by
    it too, whatever the number of containers (each taking all of the room it saw, N
    containers took N times it). A 429 blocks the endpoint until its ``Retry-After`` and
    halves the share; calls are also spaced by the burst limit. A lead that cannot be sent
    within its budget is told when it could be sent (``sendable_in``). A container alone
    (``containers=1``) has no fleet to share with: it takes what the other integrations leave
    at the pace it learnt of them.

    ``containers`` is the most containers that may call Klaviyo at once, as the stack bounds
    it (None: not known). A container that has not learnt its share yet takes an even part:
    one of that many, or, not known, one of as many as could each make a first call in a
    second of the burst limit's share. When the stack says they may be more than that, a
    container's first call comes at a random moment of the seconds they need. Until it has
    counted its share from the answers (its part of the account's calls while calling at
    that part of the burst share), it calls at that pace, not at its part of the minute's
    even pace: alone in a quiet account, its share is then all of it, and a lead's calls
    are not seconds apart.

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
        containers: int | None = 1,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock  # for a header that names a moment (a date, a Unix time)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._burst = BURST_PER_SECOND if burst_per_second is None else burst_per_second
        self._windows: dict[str, _Window] = {}
        self.max_share = max_share
        self.headroom = headroom
        self.containers = containers

    def _window(self, bucket: str) -> _Window:
        return self._windows.setdefault(bucket, _Window())

    def _burst_limit(self, bucket: str) -> float:
        return self._burst.get(bucket, DEFAULT_BURST_PER_SECOND)

    def wait_for(self, bucket: str) -> float:
        """Seconds until the next call to ``bucket`` is within its share of the limits."""
        with self._lock:
            now = self._clock()
            window = self._window(bucket)
            burst = self._burst_limit(bucket)
            wait = max(window.blocked_until, window.retry_at) - now
            if window.last_sent is None and window.remaining is None:
                wait = max(wait, self._first_call_at(window, burst, now) - now)
            if window.last_sent is not None and burst:
                wait = max(wait, window.last_sent + SPACING_MARGIN / burst - now)
            pace = self._pace(window, burst, now)
            if pace is not None and pace <= 0:
                # Nothing left for us this window: come back in the next one.
                wait = max(wait, self._next_window(window, burst, now) - now)
            elif pace is not None and window.last_sent is not None:
                pace = max(pace, self._counting_pace(window, burst, now))
                # A pace of next to nothing spaces calls no wider than a window: by then
                # the next one has begun and its pace is read afresh. A call due after
                # this window ends is due in the next one, at our first interval there.
                due = window.last_sent + min(1.0 / pace, STEADY_WINDOW_SECONDS)
                if window.limit and now < window.ends_at < due:
                    due = min(due, self._next_window(window, burst, now))
                wait = max(wait, due - now)
            return _bounded(wait)

    def _counting_pace(self, window: _Window, burst: float, now: float) -> float:
        """Until a container of a fleet has counted its share, it calls at its share of a
        second's burst share (of what is left of the window, if less), not of the minute's
        even pace: a crowd of fresh containers at their first shares stays within the burst
        share and the window, and the calls made meanwhile are the count. 0 otherwise."""
        if self.containers == 1 or window.share is None or window.share_counted:
            return 0.0
        return window.share * (self._account_pace(window, burst, now, within=1.0) or 0.0)

    def _first_call_at(self, window: _Window, burst: float, now: float) -> float:
        """When a container that knows nothing of an endpoint yet calls it first: at once,
        unless the stack says more containers may start together than the burst limit takes
        in a second; then at a random moment of the seconds they need (one moment, kept)."""
        if window.first_call_at is None:
            crowd = (self.containers or 1) / (BURST_SHARE * burst) if burst else 0.0
            window.first_call_at = now + (self._rng.uniform(0.0, crowd) if crowd > 1 else 0.0)
        return window.first_call_at

    def _next_window(self, window: _Window, burst: float, now: float) -> float:
        """When this container calls in the next window: at a random point of its first
        interval there, so containers do not wake together (one moment, kept)."""
        if window.wake_at <= now or window.wake_at < window.ends_at:
            fresh = self._pace(window, burst, window.ends_at)
            spread = min(MAX_WAKE_SPREAD, 1.0 / fresh) if fresh else MAX_WAKE_SPREAD
            window.wake_at = window.ends_at + self._rng.uniform(0.0, spread)
        return window.wake_at

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

    def _account_pace(
        self, window: _Window, burst: float, now: float, within: float | None = None
    ) -> float | None:
        """Calls per second the whole account should make now: what is left of the window
        (less the part kept for others) over the time left (or ``within`` that many seconds),
        at ``HEADROOM``, and at most ``BURST_SHARE`` of the burst limit. None before anything
        is known."""
        if window.remaining is None:
            return None
        remaining, left = window.remaining - window.own_since, window.ends_at - now
        if left <= 0:
            if not window.limit:
                return None
            # A new window has begun: the whole limit.
            remaining, left = window.limit, STEADY_WINDOW_SECONDS
        remaining -= self._kept(window)
        seconds = left + RESET_ROUNDING_SECONDS if within is None else within
        even = self.headroom * remaining / seconds
        return max(0.0, min(even, BURST_SHARE * burst if burst else even))

    def _pace(self, window: _Window, burst: float, now: float) -> float | None:
        """Calls per second this container may spend now; None before anything is known."""
        account = self._account_pace(window, burst, now)
        if account is None:
            return None
        if self.containers == 1:
            return self._alone(window, account, now)
        return None if window.share is None else window.share * account

    def _alone(self, window: _Window, account: float, now: float) -> float:
        """Alone, every other call on the endpoint is another integration's: this container
        takes what they leave at the pace it learnt of them (no fleet takes it N times)."""
        room = account - window.others_per_second
        if room > 0:
            return room
        # Looks again while the minute has room and only the burst share is taken (a second's
        # matter, not the window's), or while the others' pace seems stale.
        minute = self._account_pace(window, 0.0, now) or 0.0
        looks_again = minute > window.others_per_second or window.pace_in_doubt
        left = (window.remaining or 0.0) - window.own_since - self._kept(window)
        if (
            window.limit
            and looks_again
            and now < window.ends_at
            and left >= PROBE_ROOM * window.limit
        ):
            return min(1.0 / PROBE_SECONDS, PROBE_SHARE * window.limit / STEADY_WINDOW_SECONDS)
        return 0.0

    def _first_share(self, burst: float) -> float:
        """The share of a container that has not learnt one: an even part, one of the
        containers the stack says may call at once, or when it does not say, one of as many
        as could each make a first call in a second of the burst limit's share."""
        crowd = self.containers if self.containers is not None else BURST_SHARE * burst
        return 1.0 / max(1.0, crowd or 1.0)

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
                window.refused_in_a_row += 1
                if window.share is not None:
                    window.share = max(MIN_SHARE, window.share * SHARE_AFTER_429)
                if window.refused_in_a_row > 1:
                    # Refused again: one of a crowd that came back together. Back at a random
                    # moment of the next interval (of seconds doubling with each 429 while the
                    # pace is not known), not all at the moment Klaviyo named.
                    pace = self._pace(window, self._burst_limit(bucket), window.blocked_until)
                    spread = 1.0 / pace if pace else 2.0 ** (window.refused_in_a_row - 1)
                    spread = min(MAX_WAKE_SPREAD, spread)
                    window.retry_at = window.blocked_until + self._rng.uniform(0.0, spread)
                return
            window.refused_in_a_row = 0
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
            sample: tuple[float, float, float] | None = None  # (account's calls, ours, seconds)
            since = now - window.seen_at
            if same_window and window.remaining is not None and since > 0:
                calls = max(window.remaining - remaining, float(window.own_since))
                sample = (calls, float(window.own_since), since)
                window.paced_for += since
            elif limit:
                # First sight of this window: what the account spent since it opened (many
                # containers starting together see each other here).
                window.own_in_window = window.own_since
                opened_ago = max(1.0, STEADY_WINDOW_SECONDS - reset)
                calls = max(limit - remaining, float(window.own_in_window))
                sample = (calls, float(window.own_in_window), opened_ago)
            known = window.remaining is not None
            if sample is not None:
                calls, ours, seconds = sample
                weight = 1.0 - math.exp(-seconds / PACE_TIME_CONSTANT) if known else 1.0
                window.account_per_second += weight * (calls / seconds - window.account_per_second)
                others = (calls - ours) / seconds
                window.pace_in_doubt = known and others < PROBE_DOUBT * window.others_per_second
                window.others_per_second += weight * (others - window.others_per_second)
            window.limit = limit
            window.remaining, window.ends_at, window.seen_at = remaining, now + reset, now
            window.own_since = 0
            if self.containers != 1:
                burst = self._burst_limit(bucket)
                if same_window and sample is not None and not window.share_counted:
                    self._count_share(window, burst, sample[0], sample[1])
                self._learn_share(window, burst, now, since if known else 0.0)

    def _count_share(self, window: _Window, burst: float, calls: float, ours: float) -> None:
        """A fresh container's share, from the answers: its part of the account's calls
        while it called at the pace of a crowd of fresh containers (``_counting_pace``), once
        that is a second's worth of its calls. Each of a crowd calling then is counted, so
        the counted shares of a crowd add up to no more than the account's calls; a container
        that finds the account idle counts all of it, and a lead's next calls are not seconds
        apart. A count only raises a share (learning lowers it): a container that waited for
        work between two answers counts the others' calls of the whole wait against one of
        its own."""
        window.counting_calls += calls
        window.counting_own += ours
        if window.counting_own >= max(1.0, self._first_share(burst) * BURST_SHARE * burst):
            window.share_counted = True
            counted = window.counting_own / window.counting_calls
            window.share = min(1.0, max(window.share or MIN_SHARE, counted))

    def _learn_share(self, window: _Window, burst: float, now: float, since: float) -> None:
        """Move the share by the ratio of the pace the account should keep to the pace it
        keeps, over ``SHARE_TIME_CONSTANT``; keep it within what the container can use."""
        account = self._account_pace(window, burst, now)
        if account is None:
            return
        learnt = window.share
        share = self._first_share(burst) if learnt is None else learnt
        if account <= 0 or window.account_per_second <= 0:
            window.share = share  # a spent window says nothing about the share of the next
            return
        if learnt is not None:
            share *= min(MAX_SHARE_STEP, account / window.account_per_second) ** min(
                1.0, since / SHARE_TIME_CONSTANT
            )
        if learnt is not None and share > learnt:
            if window.paced_for < PACE_TIME_CONSTANT:
                # Not before the account's pace was measured between answers: at first sight
                # it is the window's calls over its age, and a fleet just arrived looks idle.
                share = learnt
            else:
                # To no more than twice what this container spent of the account's calls:
                # one it could not use (slow answers, an idle sender) is not one to spend at
                # once when answers come faster.
                others = min(window.others_per_second, window.account_per_second)
                spent = 1.0 - others / window.account_per_second
                share = min(share, max(learnt, MAX_SHARE_STEP * spent))
        window.share = min(1.0, max(MIN_SHARE, share))


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
