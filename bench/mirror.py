"""Mirror sync at 100,000: a file of 100,000 people against a list of 100,000 members, against
the account's rate bound, on a virtual clock.

    python -m bench.mirror [--members 100000] [--churn 0.1] [--phases 0,15,30,45] [--json f]

The mirror's own code (``mirror.plan`` and ``mirror.sync``: the file read row by row, the list
read in slices, searches, list changes, the client and its pacer) runs against a stand-in of
Klaviyo's five endpoints it calls. The stand-in holds the list (join times spread over a year,
as a list built over time) and the profiles, counts each operation in Klaviyo's documented fixed
windows (``bench.fleet_limits.FixedWindows``: 1 s and 60 s, at a chosen phase of the minute,
429 with ``Retry-After`` past either) and answers after a lognormal latency (the emulator's
"realistic" medians: 0.2 s for a page or a search, 0.12 s for the list, 0.2 s for a list
change; p99 six times the median). Everything runs on ``bench.fleet_limits.Simulation``'s
virtual clock, where threads take turns and sleeping moves the clock: the mirror's calls side
by side are threads of it.

The file keeps ``1 - churn`` of the members and adds as many people who are not on the list
(they have profiles), so ``churn`` of the list is added and as much removed (under the 20 %
cap). **The bound** is what Klaviyo's steady limits allow for the calls the work needs, in the
order it needs them: every member page (100 a page, 750 a minute) before the plan is known, then
the searches for the people not on the list (100 a search, 750 a minute) followed by their
additions (1000 a call, 150 a minute), beside the removals (1000 a call, 150 a minute). The
mirror's time is the virtual clock's, plus the process's CPU seconds for the run (the mirror's
own work, and the stand-in's, counted as if none of it overlapped a wait); the target is 1.10.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from bench.fleet_limits import ARRIVAL_SHARE, START, FixedWindows, Simulation
from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from klaviyo_leads.klaviyo.pacing import Pacer  # noqa: E402
from klaviyo_leads.lead_files.rows import Layout, read_rows  # noqa: E402
from klaviyo_leads.mirror.plan import plan  # noqa: E402
from klaviyo_leads.mirror.sync import apply  # noqa: E402

BASE_URL = "https://a.klaviyo.com"
LIST_ID = "Mirror"
YEAR_SECONDS = 365 * 24 * 3600
# Documented limits (x-klaviyo-ratelimit): burst a second, steady a minute.
LIMITS = {
    "get_list": (75, 750),
    "get_profiles_for_list": (75, 750),
    "get_profiles": (75, 750),
    "add_profiles_to_list": (10, 150),
    "remove_profiles_from_list": (10, 150),
}
# Median latencies: the emulator's "realistic" model (devtools/klaviyo_emulator/latency.py).
MEDIAN_SECONDS = {
    "get_list": 0.12,
    "get_profiles_for_list": 0.2,
    "get_profiles": 0.2,
    "add_profiles_to_list": 0.2,
    "remove_profiles_from_list": 0.2,
}
SIGMA = math.log(6.0) / 2.326  # p99 six times the median
TARGET = 1.10
_EMAILS = re.compile(r'"([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    data: bytes


@dataclass
class Account:
    """The list and the profiles the stand-in serves."""

    members: int
    churn: float
    joined: list[int] = field(default_factory=list)  # member join times, ascending
    member_ids: list[str] = field(default_factory=list)  # in join order
    on_list: set[str] = field(default_factory=set)
    by_email: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(7)
        times = sorted(int(START) - rng.randrange(YEAR_SECONDS) for _ in range(self.members))
        self.joined = times
        self.member_ids = [f"M{i:07d}" for i in range(self.members)]
        self.on_list = set(self.member_ids)
        for index, profile_id in enumerate(self.member_ids):
            self.by_email[f"member{index}@example.com"] = profile_id
        for index in range(self.outsiders):
            self.by_email[f"outsider{index}@example.com"] = f"N{index:07d}"

    @property
    def kept(self) -> int:
        return self.members - self.outsiders

    @property
    def outsiders(self) -> int:
        return round(self.members * self.churn)

    def file(self) -> bytes:
        """The people the list must hold: most members, and as many outsiders."""
        rows = [f"member{i}@example.com" for i in range(self.kept)]
        rows += [f"outsider{i}@example.com" for i in range(self.outsiders)]
        return ("email\n" + "\n".join(rows) + "\n").encode()


class KlaviyoStandIn:
    """The five endpoints the mirror calls, as urllib3's pool would hand their answers over."""

    def __init__(self, sim: Simulation, account: Account, phase: float) -> None:
        self.sim, self.account = sim, account
        self.windows = {
            op: FixedWindows(phase=phase, burst=burst, steady=steady)
            for op, (burst, steady) in LIMITS.items()
        }
        self.rng = random.Random(11)
        self.calls: dict[str, dict[str, int]] = {op: {"calls": 0, "429": 0} for op in LIMITS}

    def request(self, method: str, url: str, body: bytes | None = None, **_: Any) -> Answer:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        operation = _operation(method, parts.path)
        took = MEDIAN_SECONDS[operation] * math.exp(self.rng.gauss(0.0, SIGMA))
        self.sim.sleep(ARRIVAL_SHARE * took)
        status, headers = self.windows[operation].call(self.sim.now(), "mirror")
        self.calls[operation]["calls"] += 1
        answer: Any = None
        if status == 429:
            self.calls[operation]["429"] += 1
            answer = {"errors": [{"status": "429", "code": "throttled", "title": "Throttled"}]}
        elif operation == "get_list":
            attributes = {"name": "Mirrored", "opt_in_process": "single_opt_in"}
            answer = {"data": {"type": "list", "id": LIST_ID, "attributes": attributes}}
        elif operation == "get_profiles_for_list":
            answer = self._page(parts.path, query)
        elif operation == "get_profiles":
            emails = _EMAILS.findall(query.get("filter", ""))
            found = [(e, self.account.by_email[e]) for e in emails if e in self.account.by_email]
            data = [_profile(pid, {"email": e}) for e, pid in found]
            answer = {"data": data, "links": {"next": None}}
        else:
            ids = [item["id"] for item in json.loads(body or b"{}")["data"]]
            if operation == "add_profiles_to_list":
                self.account.on_list.update(ids)
            else:
                self.account.on_list.difference_update(ids)
            status = 204
        self.sim.sleep((1.0 - ARRIVAL_SHARE) * took)
        data = b"" if status == 204 else json.dumps(answer).encode()
        return Answer(status, {"Content-Type": "application/vnd.api+json", **headers}, data)

    def _page(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        account = self.account
        low, high = 0, len(account.joined)
        for name, moment in re.findall(
            r"([a-z-]+)\(joined_group_at,([^)]+)\)", query.get("filter", "")
        ):
            seconds = int(datetime.fromisoformat(moment).timestamp())
            if name == "greater-or-equal":
                low = max(low, bisect.bisect_left(account.joined, seconds))
            elif name == "less-than":
                high = min(high, bisect.bisect_left(account.joined, seconds))
        span = list(range(low, high))
        if query.get("sort", "").startswith("-"):
            span.reverse()
        offset, size = int(query.get("page[cursor]", 0)), int(query.get("page[size]", 20))
        page = span[offset : offset + size]
        data = [
            _profile(
                account.member_ids[i],
                {
                    "email": f"member{i}@example.com",
                    "joined_group_at": datetime.fromtimestamp(account.joined[i], UTC).isoformat(),
                },
            )
            for i in page
        ]
        more = offset + size < len(span)
        following = {**query, "page[cursor]": str(offset + size)}
        next_url = f"{BASE_URL}{path}?{urlencode(following)}" if more else None
        return {"data": data, "links": {"next": next_url}}


def _profile(profile_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "profile", "id": profile_id, "attributes": attributes}


def _operation(method: str, path: str) -> str:
    if path.endswith("/relationships/profiles"):
        return "add_profiles_to_list" if method == "POST" else "remove_profiles_from_list"
    if path.endswith("/profiles") and path.startswith("/api/lists/"):
        return "get_profiles_for_list"
    if path.startswith("/api/lists/"):
        return "get_list"
    return "get_profiles"


def bound_seconds(account: Account) -> float:
    """The steady limits' time for the calls the work needs, in the order it needs them."""
    pages = math.ceil(account.members / 100) / LIMITS["get_profiles_for_list"][1]
    searches = math.ceil(account.outsiders / 100) / LIMITS["get_profiles"][1]
    adds = math.ceil(account.outsiders / 1000) / LIMITS["add_profiles_to_list"][1]
    removes = math.ceil(account.outsiders / 1000) / LIMITS["remove_profiles_from_list"][1]
    return 60.0 * (pages + max(searches + adds, removes))


def run(members: int, churn: float, phase: float) -> dict[str, Any]:
    from bench.harness import build_runtime, quiet_lambda_output

    account = Account(members, churn)
    sim = Simulation(START)
    klaviyo = KlaviyoStandIn(sim, account, phase)
    seeds = iter(range(1, 1_000_000))

    def streams() -> Any:
        """A context for a stream of calls: a client and pacer of its own, as deployed."""
        runtime = build_runtime(
            BASE_URL,
            coalesce=False,
            clock=sim.now,
            sleep=sim.sleep,
            results=None,
            pool=klaviyo,
            observer=lambda bucket, status, seconds: None,
        )
        rng = random.Random(next(seeds))
        runtime.client.pacer = Pacer(clock=sim.now, rng=rng, wall_clock=sim.now)
        return runtime.context(runtime.budget(3600.0))

    def parallel(work: Any, items: list[Any]) -> list[Any]:
        """The mirror's calls side by side, as threads of the simulation; this one waits."""
        answers: list[Any] = [None] * len(items)
        failures: list[BaseException] = []
        left = [len(items)]

        def one(index: int) -> None:
            try:
                answers[index] = work(items[index])
            except Exception as exc:  # handed to the waiting thread
                failures.append(exc)
            finally:
                left[0] -= 1

        for index in range(len(items)):
            sim.spawn(sim.now(), lambda index=index: one(index))
        while left[0]:
            sim.sleep(0.01)
        if failures:
            raise failures[0]
        return answers

    figures: dict[str, Any] = {}

    def mirror_run() -> None:
        rows = read_rows(io.BytesIO(account.file()), False, Layout())
        planned = plan(streams, LIST_ID, rows, {}, parallel)
        figures["planned_at"] = sim.now() - START
        figures["plan"] = {k: v for k, v in planned.as_json().items() if k.startswith("would")}
        done = apply(streams, planned, parallel)
        figures["done"] = {"added": done.added, "removed": done.removed}
        figures["finished_at"] = sim.now() - START

    cpu = time.process_time()
    sim.spawn(START, mirror_run)
    with quiet_lambda_output():
        sim.run(until=START + 4 * 3600)
    cpu = time.process_time() - cpu
    bound = bound_seconds(account)
    virtual = figures["finished_at"]
    expected = set(account.member_ids[: account.kept]) | {
        f"N{i:07d}" for i in range(account.outsiders)
    }
    return {
        "members": members,
        "file_rows": members,
        "churn": churn,
        "phase": phase,
        **figures,
        "list_is_the_file": account.on_list == expected,
        "calls": klaviyo.calls,
        "virtual_seconds": virtual,
        "cpu_seconds": cpu,
        "bound_seconds": bound,
        "ratio": virtual / bound,
        "ratio_with_cpu": (virtual + cpu) / bound,
    }


def report(runs: list[dict[str, Any]]) -> str:
    lines = ["Mirror sync (virtual clock, Klaviyo's fixed windows at each phase):"]
    for entry in runs:
        plan, calls = entry["plan"], entry["calls"]
        lines.append(
            f"  phase {entry['phase']:>4.0f} s: {entry['members']:,} members, "
            f"{entry['file_rows']:,} rows; would add {plan['would_add']:,}, "
            f"keep {plan['would_keep']:,}, remove {plan['would_remove']:,}; planned at "
            f"{entry['planned_at']:.1f} s, done at "
            f"{entry['virtual_seconds']:.1f} s + {entry['cpu_seconds']:.1f} s CPU; bound "
            f"{entry['bound_seconds']:.1f} s; x{entry['ratio']:.3f} (x{entry['ratio_with_cpu']:.3f}"
            f" with CPU); pages {calls['get_profiles_for_list']['calls']}, searches "
            f"{calls['get_profiles']['calls']}, 429s "
            f"{sum(c['429'] for c in calls.values())}; "
            f"list is the file: {entry['list_is_the_file']}"
        )
    worst = max(entry["ratio_with_cpu"] for entry in runs)
    lines.append(f"  worst: x{worst:.3f} the bound (target x{TARGET:.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mirror", description=__doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--churn", type=float, default=0.1)
    parser.add_argument("--phases", default="0,15,30,45")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = [run(args.members, args.churn, float(p)) for p in args.phases.split(",")]
    print(report(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    ok = (
        all(r["list_is_the_file"] for r in runs)
        and max(r["ratio_with_cpu"] for r in runs) <= TARGET
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
