"""Pacing: each container spaces its calls to an operation so the fleet stays inside
Klaviyo's burst and steady windows, learnt from the answers' ``RateLimit-*`` headers."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from klaviyo_leads.klaviyo.rate_limit_headers import (
    STEADY_WINDOW_SECONDS,
    _bounded,
    _count,
    reset_seconds,
    retry_after_seconds,
)
from klaviyo_leads.klaviyo.routes import BURST_PER_SECOND, DEFAULT_BURST_PER_SECOND

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


# RateLimit-Reset counts whole seconds, rounded up or down: a window may end up to this much
# after it said. What is left of it is spread as if it did, so that the calls of a window
# that has not ended are not spent as the next one's (and its last second is not read as an
# unlimited pace).
RESET_ROUNDING_SECONDS = 1.0


# A container with nothing left in a window comes back within this much of the next one.
MAX_WAKE_SPREAD = 10.0


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
