"""The pacer: an even share of what Klaviyo's windows leave, learned from the headers alone."""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest

from klaviyo_leads.budget import Budget
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.outcomes import Kind, Result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers(remaining: int, reset: float, limit: int = 750) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(math.ceil(reset)),
    }


def test_alone_it_spreads_the_minute_evenly_instead_of_bursting():
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.sent("get_profiles")
    pacer.observe("get_profiles", 200, headers(749, 60))
    # 749 calls over the 60 s left (and the second RateLimit-Reset may round off) at 95 %:
    # one every ~86 ms, not the burst limit's 15 ms.
    assert pacer.wait_for("get_profiles") == pytest.approx(61 / (0.95 * 749), rel=0.01)


def test_what_the_rest_of_the_account_spends_is_left_to_it():
    clock = Clock()
    pacer = Pacer(clock=clock)
    remaining = 750
    for _ in range(30):  # others spend 10 calls a second; we spend one
        pacer.sent("get_profiles")
        remaining -= 11
        clock.now += 1.0
        pacer.observe("get_profiles", 200, headers(remaining, 60 - (clock.now - 1000)))
    pacer.sent("get_profiles")
    alone = Pacer(clock=clock)
    alone.observe("get_profiles", 200, headers(750, 30))  # nobody spent any this window
    alone.sent("get_profiles")
    # 419 left for 30 s (and a second of rounding) at 95 %: 12.8 a second, 10 of them the
    # others' pace. With nobody else: 23 a second.
    assert pacer.wait_for("get_profiles") == pytest.approx(1 / (0.95 * 419 / 31 - 10), rel=0.05)
    assert alone.wait_for("get_profiles") == pytest.approx(31 / (0.95 * 749), rel=0.05)


def test_with_nothing_left_for_us_it_waits_for_the_next_window():
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe("add_profiles_to_list", 200, headers(0, 7, limit=150))
    # The next window, at a random point of the first interval there (here: at most 10 s).
    assert 7.0 <= pacer.wait_for("add_profiles_to_list") <= 17.0
    assert pacer.wait_for("add_profiles_to_list") == pacer.wait_for(
        "add_profiles_to_list"
    )  # one wake time, kept
    assert pacer.wait_for("get_profiles") == 0.0


def test_a_429_blocks_until_retry_after():
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe("add_profiles_to_list", 429, {"Retry-After": "3"})
    assert pacer.wait_for("add_profiles_to_list") == pytest.approx(3.0)
    clock.now += 3
    assert pacer.wait_for("add_profiles_to_list") == 0.0


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        (
            (429, {"Retry-After": "30"}),
            r"Klaviyo asked to wait 30 s before the next call; not sent",
        ),
        (
            (200, headers(0, 40, limit=150)),
            r"Klaviyo's rate limit leaves no room for \d+ s; not sent",
        ),
    ],
    ids=["retry-after", "window-spent"],
)
def test_a_lead_held_back_says_whether_klaviyo_or_our_share_holds_it(observed, reason):
    """Klaviyo's Retry-After and the pacer's own share of a spent window are different
    stories for an operator; both are retryable, with the wait as Retry-After."""
    clock = Clock()
    pacer = Pacer(clock=clock, rng=random.Random(1))
    pacer.observe("add_profiles_to_list", *observed)
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    with pytest.raises(Result) as held:
        client.check_pace("add_profiles_to_list", Budget(5.0, clock=clock))
    result = held.value
    assert re.fullmatch(reason, result.reason or "")
    assert result.kind is Kind.THROTTLED and result.retryable
    # Retry-After: when Klaviyo could take the lead (its Retry-After, or the spent window's
    # end), not this container's place in the next window.
    could_send_in = 30.0 if observed[0] == 429 else 40.0
    assert result.retry_after == pytest.approx(could_send_in)
    assert result.retry_after <= pacer.wait_for("add_profiles_to_list")
    assert pacer.told_to_wait("add_profiles_to_list") is (observed[0] == 429)


def test_a_429_of_the_burst_window_does_not_hold_the_minute():
    """A 429 with Retry-After: 1 (the burst second) after a window with plenty left: the
    endpoint is free again a second later, not when the steady window ends."""
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe("get_profiles", 200, headers(700, 50, limit=750))
    pacer.sent("get_profiles")
    pacer.observe("get_profiles", 429, {"Retry-After": "1"})
    assert pacer.wait_for("get_profiles") == pytest.approx(1.0)
    clock.now += 1
    assert pacer.wait_for("get_profiles") < 1.0


def test_a_share_cap_leaves_the_rest_to_other_integrations():
    clock = Clock()
    pacer = Pacer(clock=clock, max_share=0.5)
    pacer.sent("get_profiles")
    pacer.observe("get_profiles", 200, headers(749, 60))
    # Half the limit is kept for others: 0.95 x (749 - 375) / 61 calls a second.
    assert pacer.wait_for("get_profiles") == pytest.approx(61 / (0.95 * (749 - 375)), rel=0.01)


@pytest.mark.parametrize("share", [0.2, 0.6])
def test_a_share_cap_holds_over_a_whole_window_while_the_others_are_idle(share):
    """Invariant: with KlaviyoRateLimitShare below 100 the bundle spends at most that share
    of a window's limit, even when the other integrations spend nothing all minute (kept as
    a pace, the rest fell to us as the window ran out: 719 of 750 at a fifth)."""
    clock = Clock()
    pacer = Pacer(clock=clock, max_share=share, burst_per_second={}, rng=random.Random(1))
    pacer.observe("get_profiles", 200, headers(750, 60))
    ends, spent = clock.now + 60, 0
    while clock.now < ends - 0.01:
        wait = pacer.wait_for("get_profiles")
        if wait > 0:
            clock.now = min(ends - 0.01, clock.now + wait)
            continue
        pacer.sent("get_profiles")
        spent += 1
        pacer.observe("get_profiles", 200, headers(750 - spent, ends - clock.now))
    assert share * 750 * 0.8 <= spent <= share * 750


# -- a lead the pacer holds is sent when it can be, and told the truth when it cannot --------


def _stale(clock: Clock, remaining: int, reset: float, others: float) -> Pacer:
    """A pacer that learnt a pace of the rest of the account above what is left: the pace
    the others spent while a window had room to spare, carried into the next one."""
    pacer = Pacer(clock=clock, rng=random.Random(3))
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(remaining, reset))
    pacer._windows["create_profile"].others_per_second = others
    return pacer


def _learnt(clock: Clock, others: float, then_spent: int) -> Pacer:
    """A pacer that learnt the others at ``others`` a second, then an answer a second later
    in the same window: the others spent ``then_spent`` calls meanwhile, we one."""
    pacer = Pacer(clock=clock, rng=random.Random(3))
    pacer.observe("create_profile", 200, headers(750, 60))
    pacer._windows["create_profile"].others_per_second = others
    clock.now += 1.0
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(750 - then_spent - 1, 59))
    return pacer


def test_a_pace_the_answers_bear_out_is_not_looked_at_again():
    """Invariant: a container looks again only while the answers find the others slower than
    it learnt. Here they spend 20/s as learnt: no share, and no call before the next window
    (40 containers looking again every 2 s would spend 20 calls a second themselves)."""
    clock = Clock()
    pacer = _learnt(clock, others=20.0, then_spent=20)
    assert pacer.wait_for("create_profile") >= 59 - 1e-9


def test_a_stale_pace_of_the_others_does_not_sit_out_a_window_with_room():
    """Others learnt at 20/s, 749 of 750 left for 60 s (12.5/s): no share for us by that
    pace. Klaviyo's window has room, so the pacer calls again within seconds, and learns,
    instead of waiting for the next window (a webhook sender was told 60-68 s)."""
    clock = Clock()
    pacer = _learnt(clock, others=20.0, then_spent=1)  # the others at 1/s, not 20/s
    assert pacer._windows["create_profile"].others_per_second > 748 / 59  # still no share
    wait = pacer.wait_for("create_profile")
    assert 0 < wait <= 2.0
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    # A webhook's budget (27 s) holds it: sent, not refused.
    assert client.check_pace("create_profile", Budget(27.0, clock=clock)) == wait


def test_a_lead_whose_wait_fits_the_budget_is_held_and_sent():
    """A pace of next to nothing (5 left for the last 0.4 s, the others at 9.98/s: one call
    in 59 s) is due in the next window, at our first interval there, not 59 s from now."""
    clock = Clock()
    pacer = _stale(clock, 5, 1, others=9.98)
    pacer._windows["create_profile"].ends_at = clock.now + 0.4
    wait = pacer.wait_for("create_profile")
    assert 0.4 <= wait <= 1.0
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    assert client.check_pace("create_profile", Budget(27.0, clock=clock)) == wait


def test_a_lead_refused_is_told_when_it_could_be_sent_not_the_rest_of_the_minute():
    """The same lead with no time to wait: Retry-After 1 (the window ends in 0.4 s), not 59."""
    from klaviyo_leads.triggers.api import api_response

    clock = Clock()
    pacer = _stale(clock, 5, 1, others=9.98)
    pacer._windows["create_profile"].ends_at = clock.now + 0.4
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    with pytest.raises(Result) as held:
        client.check_pace("create_profile", Budget(0.5, clock=clock))
    assert held.value.retry_after == pytest.approx(0.4)
    assert api_response(held.value, {})["headers"]["Retry-After"] == "1"


def test_others_taking_the_burst_share_hold_a_container_alone_for_seconds_not_the_window():
    """The others spend 60 a second, more than the burst share (45 of 75), in a minute with
    plenty left (a server whose limits are far out of reach): nothing is left for this second,
    but the window has room, so the container looks again within seconds instead of telling
    its leads to come back in a minute."""
    from klaviyo_leads.klaviyo.pacing import PROBE_SECONDS

    clock = Clock()
    pacer = Pacer(clock=clock)
    remaining = 10**8 - 1000
    pacer.observe("get_profiles", 200, headers(remaining, 30, limit=10**8))
    for _ in range(5):
        clock.now += 1.0
        pacer.sent("get_profiles")
        remaining -= 61
        pacer.observe("get_profiles", 200, headers(remaining, 30, limit=10**8))
    assert 0 < pacer.wait_for("get_profiles") <= PROBE_SECONDS


def test_a_spent_window_is_not_probed():
    """Looking again is only for a window with room to spare: 10 of 150 left waits for the
    next window, as before."""
    clock = Clock()
    pacer = Pacer(clock=clock, rng=random.Random(1))
    pacer.sent("add_profiles_to_list")
    pacer.observe("add_profiles_to_list", 200, headers(10, 30, limit=150))
    pacer._windows["add_profiles_to_list"].others_per_second = 3.0
    assert pacer.wait_for("add_profiles_to_list") >= 30.0


# -- many containers and another integration on one account ---------------------------------


@dataclass
class Account:
    """Klaviyo's windows for one endpoint: 1 s burst, 60 s steady, per account. With a
    ``phase``, fixed windows as Klaviyo documents them, starting at whole multiples of their
    length past it; without, each opens with the first call after the last one ended (as the
    emulator's do)."""

    burst: int
    steady: int
    phase: float | None = None
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def _opened(self, name: str, length: float, now: float) -> tuple[float, int]:
        started, count = self.windows.get(name, (now, 0))
        if self.phase is not None:
            aligned = self.phase + math.floor((now - self.phase) / length) * length
            return aligned, count if started == aligned else 0
        return (now, 0) if now - started >= length else (started, count)

    def call(self, now: float) -> tuple[int, dict[str, str]]:
        opened = []
        for name, length, limit in (("burst", 1.0, self.burst), ("steady", 60.0, self.steady)):
            started, count = self._opened(name, length, now)
            opened.append((name, started, count, length, limit))
        full = [
            (started + length - now)
            for _, started, count, length, limit in opened
            if count >= limit
        ]
        if full:
            return 429, {"Retry-After": str(max(1, math.ceil(max(full))))}
        for name, started, count, _, _ in opened:
            self.windows[name] = (started, count + 1)
        started, count = self.windows["steady"]
        return 200, headers(self.steady - count, started + 60 - now, limit=self.steady)


def simulate(
    containers: int,
    seconds: float = 300.0,
    seed: int = 7,
    *,
    operation: str = "add_profiles_to_list",
    limits: tuple[int, int] = (10, 150),
    latency: float = 0.15,
    phase: float | None = None,
    known: int | None = None,
) -> dict[str, float]:
    """Containers with unlimited work, each with a pacer as ``Runtime.from_env`` builds it
    (the stack's bound on the fleet: ``known``), and an integration spending 40 % at an even
    pace. ``fleet_share_of_leftover`` counts whole steady windows only."""
    rng = random.Random(seed)
    account = Account(*limits, phase=phase)
    clock = Clock()
    start, end = clock.now, clock.now + seconds
    pacers = [
        Pacer(clock=clock, rng=random.Random(seed + i), containers=known) for i in range(containers)
    ]
    other_interval = 60.0 / (0.4 * account.steady)
    events: list[tuple[float, int, int]] = [(start + rng.random(), i, 0) for i in range(containers)]
    events.append((start, -1, 0))
    heapq.heapify(events)
    calls: list[tuple[float, str, int]] = []  # (when, who, status)
    while events:
        at, who, _ = heapq.heappop(events)
        if at > end:
            break
        clock.now = at
        if who < 0:
            status, _ = account.call(clock.now)
            calls.append((at, "other", status))
            heapq.heappush(events, (at + other_interval, -1, 0))
            continue
        pacer = pacers[who]
        wait = pacer.wait_for(operation)
        if wait > 0:
            heapq.heappush(events, (at + wait, who, 0))
            continue
        pacer.sent(operation)
        status, answer = account.call(clock.now)
        calls.append((at, "fleet", status))
        clock.now = at + latency * rng.uniform(0.5, 1.5)
        pacer.observe(operation, status, answer)
        heapq.heappush(events, (clock.now, who, 0))
    origin = start if phase is None else phase
    first, last = math.ceil((start - origin) / 60.0), math.floor((end - origin) / 60.0)
    whole = [(origin + 60.0 * k, origin + 60.0 * (k + 1)) for k in range(first, last)]

    def accepted(who: str) -> int:
        return sum(
            1
            for at, by, status in calls
            if by == who and status != 429 and any(a <= at < b for a, b in whole)
        )

    def tally(who: str, refused: bool = False) -> int:
        return sum(1 for _, by, status in calls if by == who and (status == 429 or not refused))

    seconds_of = Counter(math.floor(at - origin) for at, by, _ in calls if by == "fleet")
    arriving = [count for second, count in seconds_of.items() if origin + second < start + 2.0]
    return {
        "fleet_429_per_1000": 1000 * tally("fleet", True) / max(1, tally("fleet")),
        "other_refused": tally("other", True) / max(1, tally("other")),
        "fleet_share_of_leftover": accepted("fleet")
        / (account.steady * len(whole) - accepted("other")),
        "busiest_second": max(seconds_of.values(), default=0),
        # The seconds of the fleet's arrival (within one) and the second after it.
        "busiest_second_arriving": max(arriving, default=0),
    }


@pytest.mark.parametrize("containers", [1, 4, 8])
def test_containers_settle_below_the_limit_beside_another_integration(containers):
    figures = simulate(containers)
    assert figures["fleet_429_per_1000"] <= 5
    assert figures["other_refused"] <= 0.01
    assert figures["fleet_share_of_leftover"] >= 0.85


@pytest.mark.parametrize(
    ("containers", "latency", "phase"),
    [(4, 0.005, 1010.0), (32, 0.25, 1023.4), (64, 0.25, 1000.0), (64, 0.005, 1010.0)],
    ids=["4-fast", "32-at-250ms", "64-at-250ms", "64-fast"],
)
def test_a_fleet_keeps_each_second_under_the_burst_limit_and_fills_the_minute(
    containers, latency, phase
):
    """Create Profile (75/s, 750/min) in fixed windows at a phase, another integration at 40 %
    (5 a second). A fast fleet that meets a window with room left near its end spends it at
    most at a part of the burst limit (each container taking all of the room it saw, four
    made 77 calls in a second: 18 429s per 1,000); a large one fills the room (each taking
    all of it and then seeing no share, 64 sat windows out: 59 % used). Sixty-four arriving
    with 10 s of a window left do not read the window's few calls over its age as the
    account's pace and grow their shares (92 calls in a second)."""
    figures = simulate(
        containers,
        130.0,
        operation="create_profile",
        limits=(75, 750),
        latency=latency,
        phase=phase,
    )
    assert figures["busiest_second"] <= 75 - 5
    assert figures["fleet_429_per_1000"] <= 5
    assert figures["other_refused"] <= 0.01
    assert figures["fleet_share_of_leftover"] >= 0.85


@pytest.mark.parametrize("phase", [1000.0, 1010.0, 1023.4], ids=["at-0s", "at-50s", "at-37s"])
@pytest.mark.parametrize("containers", [8, 16, 40])
def test_a_fresh_crowd_counting_itself_keeps_to_the_burst_share_and_the_minute(containers, phase):
    """Invariant: containers that do not know the fleet's size, arriving together with a
    fast Klaviyo, call at their first shares of the burst share until each has counted the
    crowd: the fleet's seconds of arrival and the second after stay within the burst share
    (45 of 75, as many as the first share counts on), and no second and no minute is run
    into afterwards (no 429, the other integration's calls answered) as the counted shares
    fill the room. A container of a crowd that called quicker before counting, each making a
    lead's few calls at once, made twice the crowd's calls in its first second."""
    from klaviyo_leads.klaviyo.pacing import BURST_SHARE

    figures = simulate(
        containers,
        130.0,
        operation="create_profile",
        limits=(75, 750),
        latency=0.005,
        phase=phase,
    )
    assert figures["busiest_second_arriving"] <= BURST_SHARE * 75
    assert figures["busiest_second"] <= 75 - 5
    assert figures["fleet_429_per_1000"] == 0
    assert figures["other_refused"] == 0
    assert figures["fleet_share_of_leftover"] >= 0.85


def test_the_account_is_led_to_no_more_than_a_part_of_the_burst_limit():
    """749 calls left for 2 s: not 0.95 x 749 / 3 = 237 a second (the burst limit's spacing,
    68 a second from each container), but BURST_SHARE of 75."""
    from klaviyo_leads.klaviyo.pacing import BURST_SHARE

    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(749, 2))
    assert pacer.wait_for("create_profile") == pytest.approx(1 / (BURST_SHARE * 75), rel=0.01)


def test_what_is_left_of_a_window_is_spread_as_if_it_ended_a_second_later():
    """RateLimit-Reset is whole seconds, rounded either way: a window said to end in 2 s may
    end in 2.9. Its 20 calls are spread over 3 s, so the last of them are not spent while
    the next window is thought to have begun (the other integration's calls refused at 59 s)."""
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(20, 2, limit=21))  # our call the only other
    assert pacer.wait_for("create_profile") == pytest.approx(3 / (0.95 * 20), rel=0.01)


@pytest.mark.parametrize(("containers", "crowd"), [(None, 0.6 * 75), (64, 64), (8, 8)])
def test_a_container_of_a_fleet_starts_at_an_even_part_of_the_burst_share(containers, crowd):
    """Before it has counted its share, one of the containers the stack says may call at once
    (KLAVIYO_CONTAINERS), or when it does not say, one of as many as could each make a first
    call in a second of the burst limit's share; and until it has counted it, it calls at
    that part of the burst share (a crowd starting together makes the burst share in a
    second), not of the minute's even pace (one call in 3.3 s when not told the size)."""
    clock = Clock()
    pacer = Pacer(clock=clock, containers=containers)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(749, 60))
    assert pacer._windows["create_profile"].share == pytest.approx(1 / crowd)
    assert pacer.wait_for("create_profile") == pytest.approx(crowd / (0.6 * 75))


def test_a_fresh_container_counts_at_no_more_than_its_part_of_what_is_left():
    """20 calls left of the window: before counting, one 45th of 19 (95 % of them) in a
    second, so a crowd of 45 counting together makes 19 calls, not 45."""
    clock = Clock()
    pacer = Pacer(clock=clock, containers=None)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(20, 30))
    assert pacer.wait_for("create_profile") == pytest.approx(45 / (0.95 * 20))


@pytest.mark.parametrize(
    ("containers", "count_within"), [(None, 1.0), (8, 8 / 45), (64, 64 / 45)], ids=str
)
def test_a_container_alone_in_a_quiet_account_makes_a_leads_calls_in_a_second(
    containers, count_within
):
    """A fresh container (the stack's size of the fleet not known, or known), Klaviyo answering
    in 200 ms and nobody else calling: its second call within its part of a second of the
    burst share (the count), and once counted its share is all of the account's calls: a
    lead's calls go one after another instead of seconds apart (before: 3.3 s, 0.4 s and
    4.7 s each)."""
    from klaviyo_leads.klaviyo.pacing import SPACING_MARGIN

    clock = Clock()
    pacer = Pacer(clock=clock, rng=random.Random(2), containers=containers)
    waits = []
    for call in range(8):
        wait = pacer.wait_for("create_profile")
        waits.append(wait)
        clock.now += wait
        pacer.sent("create_profile")
        clock.now += 0.2
        pacer.observe("create_profile", 201, headers(749 - call, 50, limit=750))
    assert waits[0] <= count_within  # a crowd the stack says is larger spreads its first calls
    assert waits[1] <= count_within
    assert pacer._windows["create_profile"].share == 1.0
    assert all(wait <= SPACING_MARGIN / 75 for wait in waits[2:]), waits


def test_a_fresh_containers_share_is_its_part_of_the_calls_it_counted():
    """Not told the fleet's size: ours was one of the ten calls the account made in the
    second between its first two answers, so its share is a tenth (not a 45th: one call in
    3.9 s), and each of a crowd of ten arriving together counts the same."""
    clock = Clock()
    pacer = Pacer(clock=clock, containers=None)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(749, 60))
    clock.now += 1.0
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(739, 59))
    assert pacer._windows["create_profile"].share == pytest.approx(0.1)
    assert pacer.wait_for("create_profile") == pytest.approx(10 * 60 / (0.95 * 739))


def test_a_fleet_container_gives_way_by_the_ratio_of_the_room_to_the_account_pace():
    """The account spends 24 a second while the window leaves about 10: every container of
    the fleet sees the same ratio and moves its share by it over SHARE_TIME_CONSTANT, so
    the fleet's pace moves by it too (each giving up all of the excess, N containers gave up
    N times it and sat the window out)."""
    from klaviyo_leads.klaviyo.pacing import SHARE_TIME_CONSTANT

    clock = Clock()
    pacer = Pacer(clock=clock, containers=8)
    remaining, shares, ratios = 750, [], []
    for _ in range(12):
        pacer.sent("create_profile")
        remaining -= 24
        pacer.observe("create_profile", 200, headers(remaining, 1060 - clock.now))
        window = pacer._windows["create_profile"]
        shares.append(window.share)
        ratios.append(0.95 * remaining / (1061 - clock.now) / window.account_per_second)
        clock.now += 1.0
    # Once the account's pace is learnt, each answer a second apart: the ratio to the 1/4.
    for before, after, ratio in list(zip(shares[:-1], shares[1:], ratios[1:], strict=True))[6:]:
        assert ratio < 1 and after == pytest.approx(before * ratio ** (1 / SHARE_TIME_CONSTANT))


def test_a_share_grows_no_larger_than_twice_what_the_container_spends():
    """A container with a lead a second, beside others spending 5 a second, while the window
    leaves 21 a second: its share may double what it spends (1 call of 6), not take all of
    the room, which it would spend at once when its leads come faster."""
    clock = Clock()
    pacer = Pacer(clock=clock, containers=8)
    remaining = 700
    for _ in range(30):
        pacer.sent("create_profile")
        remaining -= 6
        pacer.observe("create_profile", 200, headers(remaining, 30))  # the room stays
        clock.now += 1.0
    pacer.sent("create_profile")
    room = 0.95 * remaining / 31
    assert 1 / pacer.wait_for("create_profile") <= 2 * room / 6 * 1.05


def test_a_429_halves_a_fleet_containers_share():
    clock = Clock()
    pacer = Pacer(clock=clock, containers=None)
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(749, 60))
    clock.now += 1.0
    pacer.sent("create_profile")
    pacer.observe("create_profile", 200, headers(741, 59))  # counted: one of the eight calls
    interval = pacer.wait_for("create_profile")
    pacer.observe("create_profile", 429, {"Retry-After": "1"})
    clock.now += 1.0
    # Twice the interval (of a window a second shorter), from the call refused.
    assert pacer.wait_for("create_profile") == pytest.approx(2 * interval * 59 / 60 - 1.0)


def test_a_container_refused_again_comes_back_at_a_random_moment_not_with_the_crowd():
    """One 429: back when Retry-After says. A second in a row: one of a crowd that came back
    together, so each comes back at a random moment of the next seconds (Klaviyo asks for
    jittered back-off), not all in the second named (and refused together again)."""
    waits = set()
    for seed in range(5):
        clock = Clock()
        pacer = Pacer(clock=clock, rng=random.Random(seed))
        pacer.sent("create_profile")
        pacer.observe("create_profile", 429, {"Retry-After": "1"})
        assert pacer.wait_for("create_profile") == pytest.approx(1.0)
        clock.now += 1.0
        pacer.sent("create_profile")
        pacer.observe("create_profile", 429, {"Retry-After": "1"})
        wait = pacer.wait_for("create_profile")
        assert 1.0 <= wait <= 3.0
        waits.add(round(wait, 3))
    assert len(waits) == 5


@pytest.mark.parametrize(("containers", "spread"), [(256, 256 / 45), (None, 0.0), (1, 0.0)])
def test_a_crowd_starting_together_spreads_its_first_calls(containers, spread):
    """When the stack says more containers may call at once than the burst limit takes in a
    second, a fresh container's first call comes at a random moment of the seconds they need
    (kept); otherwise at once."""
    firsts = []
    for seed in range(5):
        pacer = Pacer(clock=Clock(), rng=random.Random(seed), containers=containers)
        first = pacer.wait_for("create_profile")
        assert 0.0 <= first <= spread and pacer.wait_for("create_profile") == first
        firsts.append(first)
    assert len(set(firsts)) == (5 if spread else 1)


# -- when a handed-back record comes back ---------------------------------------------------


def test_a_record_comes_back_when_klaviyo_said_plus_jitter():
    from klaviyo_leads.aws.queue import visibility

    seen = {visibility(1, 7.0, random.Random(seed)) for seed in range(50)}
    assert min(seen) >= 7 and max(seen) <= 9 and len(seen) > 1  # not all in the same second


@pytest.mark.parametrize(
    ("receive_count", "base"), [(1, 30), (2, 120), (3, 600), (4, 1800), (9, 1800)]
)
def test_other_retryable_records_back_off_by_delivery(receive_count, base):
    from klaviyo_leads.aws.queue import visibility

    seconds = visibility(receive_count, None, random.Random(1))
    assert 0.8 * base <= seconds <= 1.2 * base + 1


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("GET", "/api/profiles", "get_profiles"),
        ("POST", "/api/profiles/", "create_profile"),
        ("GET", "/api/profiles/01ABC", "get_profile"),
        ("PATCH", "/api/profiles/01ABC", "update_profile"),
        ("GET", "https://a.klaviyo.com/api/profiles?page%5Bcursor%5D=x", "get_profiles"),
        ("POST", "/api/lists/Y6nRLr/relationships/profiles", "add_profiles_to_list"),
        ("DELETE", "/api/lists/Y6nRLr/relationships/profiles", "remove_profiles_from_list"),
        (
            "GET",
            "/api/profile-bulk-import-jobs/J1/import-errors",
            "get_errors_for_bulk_import_profiles_job",
        ),
        ("GET", "/api/unknown", "GET /api/unknown"),
    ],
)
def test_each_klaviyo_operation_is_paced_on_its_own(method, path, operation):
    # Klaviyo counts every endpoint on its own: one shared window would mislead the pacer.
    from klaviyo_leads.klaviyo.routes import operation_of

    assert operation_of(method, path) == operation


def test_the_client_names_and_spaces_operations_as_the_document_does():
    """Each route the client paces is the document's operation (method and path), and its
    burst spacing is the document's burst limit. The emulator's committed rules table is
    read from the document and kept fresh by its own test."""
    import json
    from pathlib import Path

    from klaviyo_leads.klaviyo.routes import BURST_PER_SECOND, DEFAULT_BURST_PER_SECOND, OPERATIONS

    rules_file = Path(__file__).resolve().parents[2] / "devtools/klaviyo_emulator/spec_rules.json"
    rules = json.loads(rules_file.read_text("utf-8"))
    for method, pattern, name in OPERATIONS:
        assert name in rules, f"{name} is not an operation the emulator serves from the document"
        documented = re.sub(r"\{[^}]+\}", "x", rules[name]["path"])
        assert rules[name]["method"] == method and re.fullmatch(pattern, documented), name
        spacing = BURST_PER_SECOND.get(name, DEFAULT_BURST_PER_SECOND)
        assert spacing == rules[name]["limits"]["burst"], name


# -- headers are numbers to trust or ignore -------------------------------------------------

FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"
NO_WAIT = ["inf", "1e400", "-inf", "nan", "-5", "Fri, 31 Dec 99999 23:59:59 GMT"]


def stored(pacer: Pacer, bucket: str) -> dict[str, float]:
    """The numbers the pacer keeps for ``bucket``."""
    window = vars(pacer._windows[bucket])
    return {name: value for name, value in window.items() if isinstance(value, float)}


@pytest.mark.parametrize("header", NO_WAIT)
def test_a_retry_after_that_is_no_wait_is_ignored(header):
    """Infinity cannot be rounded to whole seconds (OverflowError), and a negative wait is
    no wait: both read as if Klaviyo had not said, as does a year no datetime holds."""
    from klaviyo_leads.klaviyo.rate_limit_headers import retry_after_seconds

    assert retry_after_seconds(header) is None


@pytest.mark.parametrize(("header", "seconds"), [("86400", 3600.0), (FAR_DATE, 3600.0)])
def test_a_retry_after_is_believed_for_an_hour_at_most(header, seconds):
    from klaviyo_leads.klaviyo.rate_limit_headers import (
        MAX_RETRY_AFTER_SECONDS,
        retry_after_seconds,
    )

    assert retry_after_seconds(header) == seconds == MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize("header", NO_WAIT)
def test_a_429_whose_retry_after_is_no_wait_holds_the_endpoint_a_second(header):
    """As a 429 without Retry-After: one second, then the endpoint is free. Infinity held
    it for good, and every later lead of the container was an internal error."""
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe("add_profiles_to_list", 429, {"Retry-After": header})
    assert pacer.wait_for("add_profiles_to_list") == pytest.approx(1.0)
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    with pytest.raises(Result) as held:
        client.check_pace("add_profiles_to_list", Budget(0.5, clock=clock))
    assert held.value.reason == "Klaviyo asked to wait 1 s before the next call; not sent"
    clock.now += 1
    assert pacer.wait_for("add_profiles_to_list") == 0.0
    assert all(math.isfinite(value) for value in stored(pacer, "add_profiles_to_list").values())


def test_a_429_until_the_year_9999_holds_the_endpoint_an_hour():
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.observe("add_profiles_to_list", 429, {"Retry-After": FAR_DATE})
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    with pytest.raises(Result) as held:
        client.check_pace("add_profiles_to_list", Budget(5.0, clock=clock))
    assert held.value.reason == "Klaviyo asked to wait 3600 s before the next call; not sent"
    assert held.value.retry_after == 3600.0
    clock.now += 3600
    assert pacer.wait_for("add_profiles_to_list") == 0.0


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("1700000030", 30.0),  # a Unix time half a minute away
        ("4102444800", 60.0),  # the year 2100: no later than the window's end
        ("1600000000", 0.0),  # a moment gone: the window has ended
        ("600", 60.0),  # seconds, but more than a steady window lasts
        ("-5", 0.0),
    ],
)
def test_a_ratelimit_reset_is_read_within_its_window(reset, seconds):
    """A reset sent as a Unix time (1.7e9 s) paced the endpoint at a call per month."""
    from klaviyo_leads.klaviyo.rate_limit_headers import reset_seconds

    assert reset_seconds(reset, now=lambda: 1_700_000_000.0) == seconds
    clock = Clock()
    pacer = Pacer(clock=clock, wall_clock=lambda: 1_700_000_000.0)
    pacer.sent("get_profiles")
    pacer.observe("get_profiles", 200, {**headers(749, 60), "RateLimit-Reset": reset})
    as_seconds = Pacer(clock=clock)
    as_seconds.sent("get_profiles")
    as_seconds.observe("get_profiles", 200, {**headers(749, 60), "RateLimit-Reset": str(seconds)})
    assert pacer.wait_for("get_profiles") == as_seconds.wait_for("get_profiles") <= 60.0


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf", "1e12", "-3"])
@pytest.mark.parametrize("name", ["RateLimit-Remaining", "RateLimit-Limit"])
def test_a_ratelimit_count_that_is_no_count_is_ignored(name, value):
    """Ignored, as if not sent: the next honest answer paces as it would have. (A
    ``RateLimit-Remaining: inf`` made the rest of the account's pace infinite, then NaN:
    the endpoint was never free again.)"""
    clock = Clock()
    odd, plain = (Pacer(clock=clock, rng=random.Random(1)) for _ in range(2))
    without = {k: v for k, v in headers(749, 60).items() if k != name}
    for pacer, first in ((odd, {**without, name: value}), (plain, without)):
        pacer.sent("get_profiles")
        pacer.observe("get_profiles", 200, first)
    clock.now += 1.0
    for pacer in (odd, plain):
        pacer.sent("get_profiles")
        pacer.observe("get_profiles", 200, headers(700, 59))
        assert all(math.isfinite(number) for number in stored(pacer, "get_profiles").values())
    assert odd.wait_for("get_profiles") == pytest.approx(plain.wait_for("get_profiles"))


def test_a_pace_of_next_to_nothing_waits_no_longer_than_the_window():
    """One call left in a minute, at 90 %, spaced 67 s: past the window's end, when the
    next window's pace would be read afresh."""
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.sent("get_profiles")
    pacer.observe("get_profiles", 200, {"RateLimit-Remaining": "1", "RateLimit-Reset": "60"})
    assert pacer.wait_for("get_profiles") == pytest.approx(60.0)


def test_no_header_makes_the_pacer_raise_or_hold_an_endpoint_past_an_hour():
    """Odd values in every header, in any order: every wait is a finite number of seconds
    within an hour, and asking for one raises nothing but the throttled result."""
    rng = random.Random(18)
    odd = ["inf", "-inf", "nan", "1e400", "-5", "0", "1e12", "1700000030", "0.0000001"]
    odd += [FAR_DATE, "Fri, 31 Dec 99999 23:59:59 GMT", "soon", "", "1, 2", "750", "30", "1"]
    clock = Clock()
    pacer = Pacer(clock=clock, rng=rng, wall_clock=lambda: 1_700_000_000.0)
    client = KlaviyoClient("http://127.0.0.1:9", "2026-07-15", lambda _refresh: "pk", pacer=pacer)
    names = ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]
    for _ in range(2000):
        bucket = rng.choice(["get_profiles", "add_profiles_to_list"])
        sent = {name: rng.choice(odd) for name in names if rng.random() < 0.8}
        pacer.sent(bucket)
        pacer.observe(bucket, rng.choice([200, 202, 429]), sent)
        clock.now += rng.choice([0.0, 0.01, 1.0, 30.0])
        wait = pacer.wait_for(bucket)
        assert 0.0 <= wait <= 3600.0, sent
        try:
            client.check_pace(bucket, Budget(rng.choice([0.5, 30.0, 4000.0]), clock=clock))
        except Result as held:
            assert held.kind is Kind.THROTTLED and held.retry_after is not None
            assert math.isfinite(held.retry_after)
        assert all(math.isfinite(value) for value in stored(pacer, bucket).values()), sent


@pytest.mark.parametrize("retry_in", [math.inf, -math.inf, math.nan], ids=str)
def test_a_wait_for_ever_brings_a_record_back_after_the_back_off(retry_in):
    from klaviyo_leads.aws.queue import visibility

    assert 24 <= visibility(1, retry_in, random.Random(1)) <= 37  # 30 s +- 20 %


@pytest.mark.parametrize("retry_after", [math.inf, math.nan, None])
def test_a_webhook_told_to_come_back_hears_a_whole_number_of_seconds(retry_after):
    from klaviyo_leads import outcomes
    from klaviyo_leads.triggers.api import api_response

    response = api_response(outcomes.THROTTLED(retry_after=retry_after), {})
    assert response["headers"]["Retry-After"] == "1"


def test_setting_when_records_come_back_never_fails_the_batch():
    """The batch's results are settled by then: an error there must not fail all of it."""
    from types import SimpleNamespace

    from devtools.lambda_events import queue_arn, sqs_event, sqs_message
    from klaviyo_leads.triggers.sqs import _delay_handed_back

    def unreachable(due):
        raise RuntimeError("SQS is down")

    delayed = []
    records = sqs_event([sqs_message("{}", message_id="m-1")], queue_arn("q"))["Records"]
    failed = {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    for delay, retry_in in ((unreachable, 1.0), (lambda due: delayed.extend(due) or [], math.inf)):
        runtime = SimpleNamespace(queue=SimpleNamespace(delay=delay))
        _delay_handed_back(runtime, records, failed, {"m-1": retry_in})  # type: ignore[arg-type]
    (due,) = delayed
    assert 24 <= due.seconds <= 37  # a wait for ever: the first back-off
