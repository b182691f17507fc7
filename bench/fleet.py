"""Fleet-wide pacing on the real network: container processes and another integration.

One emulator process is the account (rate limits enforced, counted per account in fixed
windows, realistic latency). ``containers`` OS processes each run Add Profile to List one
lead at a time (``COALESCE_BATCHES=false``) through the function's real handler, client and
pacer, from their own queue of SQS records, as Lambda containers of one queue would.
Another process, "another integration" with its own API key, spends ``OTHER_SHARE`` of the
endpoint's steady limit at an even pace and ignores what it is told. Everything runs on the
real clock for ``seconds``; only calls answered within ``[start, start + seconds]`` count.

- ``even``: the bundle's ``Pacer``.
- ``burst``: ``BurstPacer``, the old way: calls as fast as the burst limit allows until
  ``RateLimit-Remaining`` reaches 0, then wait for the window's reset (and a 429's
  ``Retry-After``).

``python -m bench.fleet container|other '<json>'`` are the children's entry points.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ACTION = "add_profile_to_list"
OPERATION = "add_profiles_to_list"  # 10/s burst, 150/min steady: the one the fleet meets
OTHER_KEY = "pk_bench_other_integration"
OTHER_SHARE = 0.4
RECORDS_PER_EVENT = 5
START_DELAY_SECONDS = 5.0  # for every child to import and wait at the line
# The other integration goes on while containers finish their last events (until they have,
# at most this long).
TAIL_SECONDS = 120.0
PROFILES = 2_000


def scenario(containers: int, seconds: float, pacer: str = "even") -> dict[str, Any]:
    """One run; the figures the targets are about."""
    from bench.emulator_process import EmulatorProcess
    from devtools.klaviyo_emulator import DEFAULT_API_KEY
    from devtools.klaviyo_emulator.operations import OPERATIONS_BY_ID

    steady = OPERATIONS_BY_ID[OPERATION].steady
    emulator = EmulatorProcess(
        profiles=PROFILES,
        rate_limits=True,
        latency="realistic",
        seed=11,
        api_keys=[DEFAULT_API_KEY, OTHER_KEY],
    )
    start = time.time() + START_DELAY_SECONDS
    end = start + seconds
    common = {
        "base_url": emulator.base_url,
        "list_id": emulator.account["list_id"],
        "start": start,
        "end": end,
    }
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        outputs = [Path(tmp) / f"container-{i}.json" for i in range(containers)]
        other_out = Path(tmp) / "other.json"
        children = [
            _spawn(
                "other",
                {
                    **common,
                    "profile_id": emulator.profile_ids[0],
                    "per_minute": OTHER_SHARE * steady,
                    "until": end + TAIL_SECONDS,
                    "stop_file": str(Path(tmp) / "stop"),
                    "out": str(other_out),
                },
            )
        ]
        for index, out in enumerate(outputs):
            children.append(
                _spawn(
                    "container",
                    {
                        **common,
                        "index": index,
                        "containers": containers,
                        "pacer": pacer,
                        "profiles": PROFILES,
                        "out": str(out),
                    },
                )
            )
        failures = []
        for child in [*children[1:], children[0]]:  # the containers, then the other one
            if child is children[0]:
                (Path(tmp) / "stop").touch()
            try:
                child.wait(timeout=seconds + START_DELAY_SECONDS + TAIL_SECONDS + 120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.returncode:
                failures.append(child.returncode)
        served = emulator.stop()
        if failures:
            raise RuntimeError(f"fleet children failed: {failures}")
        fleet = [json.loads(out.read_text()) for out in outputs]
        other = json.loads(other_out.read_text())
    return _figures(containers, seconds, pacer, steady, fleet, other, served)


def _spawn(role: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fleet", role, json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _figures(
    containers: int,
    seconds: float,
    pacer: str,
    steady: int,
    fleet: list[dict[str, Any]],
    other: dict[str, Any],
    served: dict[str, Any],
) -> dict[str, Any]:
    calls = sum(c["calls"] for c in fleet)
    throttled = sum(c["throttled"] for c in fleet)
    fleet_op = sum(c["by_operation"].get(OPERATION, {}).get("accepted", 0) for c in fleet)
    other_accepted = other["calls"] - other["throttled"]
    capacity = steady * seconds / 60.0
    left = capacity - other_accepted
    hand_backs: Counter[int] = Counter()
    for c in fleet:
        hand_backs.update({int(k): v for k, v in c["hand_backs"].items()})
    leads = sum(c["leads_done"] for c in fleet)
    return {
        "containers": containers,
        "seconds": seconds,
        "pacer": pacer,
        "fleet_calls": calls,
        "fleet_429": throttled,
        "fleet_429_per_1000_calls": 1000.0 * throttled / max(1, calls),
        "fleet_calls_by_operation": _merge([c["by_operation"] for c in fleet]),
        "other_calls": other["calls"],
        "other_429": other["throttled"],
        "other_refused_fraction": other["throttled"] / max(1, other["calls"]),
        "capacity": capacity,
        "left_by_other": left,
        "fleet_accepted_on_endpoint": fleet_op,
        "fleet_share_of_what_is_left": fleet_op / left if left > 0 else 0.0,
        "leads_done": leads,
        "leads_per_minute": leads / (seconds / 60.0),
        "outcomes": dict(sum((Counter(c["outcomes"]) for c in fleet), Counter())),
        "leads_handed_back": sum(v for k, v in hand_backs.items() if k >= 1),
        "leads_handed_back_more_than_once": sum(v for k, v in hand_backs.items() if k >= 2),
        "most_hand_backs_of_one_lead": max(hand_backs, default=0),
        "emulator_served": served.get("requests", {}),
    }


def _merge(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for part in parts:
        for op, entry in part.items():
            into = merged.setdefault(op, {"calls": 0, "throttled": 0, "accepted": 0})
            for key, value in entry.items():
                into[key] += value
    return merged


# -- the old way, for the baseline ----------------------------------------------------------


def burst_pacer() -> Any:
    """A pacer that only keeps to the burst limit until the window is spent (no layer change)."""
    from klaviyo_leads.klaviyo.pacing import SPACING_MARGIN, Pacer
    from klaviyo_leads.klaviyo.routes import DEFAULT_BURST_PER_SECOND

    class BurstPacer(Pacer):
        def wait_for(self, bucket: str) -> float:
            with self._lock:
                now = self._clock()
                window = self._window(bucket)
                wait = window.blocked_until - now
                burst = self._burst.get(bucket, DEFAULT_BURST_PER_SECOND)
                if window.last_sent is not None and burst:
                    wait = max(wait, window.last_sent + SPACING_MARGIN / burst - now)
                spent = window.remaining is not None and window.remaining - window.own_since <= 0
                if spent and now < window.ends_at:
                    wait = max(wait, window.ends_at - now)
                return max(0.0, wait)

    return BurstPacer()


# -- the children ---------------------------------------------------------------------------


def _until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def container(config: dict[str, Any]) -> None:
    """One Lambda container of the action's queue: events of a few records, one lead at a time."""
    from bench.harness import ResultLog, build_runtime, quiet_lambda_output
    from bench.mixes import existing_email
    from devtools.lambda_events import (
        LambdaContext,
        function_name,
        load_handler,
        queue_arn,
        sqs_event,
        sqs_message,
    )
    from klaviyo_leads.handlers import actions as entrypoint
    from klaviyo_leads.klaviyo.pacing import Pacer
    from klaviyo_leads.observability import count_klaviyo_call

    start, end = config["start"], config["end"]
    by_operation: dict[str, Counter[str]] = {}
    lock = threading.Lock()

    def observe(bucket: str, status: int | None, seconds: float) -> None:
        count_klaviyo_call(bucket, status, seconds)
        if not start <= time.time() <= end:
            return
        with lock:
            entry = by_operation.setdefault(bucket, Counter())
            entry["calls"] += 1
            entry["throttled" if status == 429 else "accepted"] += 1

    results = ResultLog()
    runtime = build_runtime(
        config["base_url"],
        coalesce=False,
        clock=time.monotonic,
        sleep=time.sleep,
        results=results,
        # As Runtime.from_env builds it in a stack without reserved concurrency: the fleet's
        # size not known.
        pacer=burst_pacer() if config["pacer"] == "burst" else Pacer(containers=None),
        observer=observe,
    )
    handler = load_handler(ACTION)
    queue = queue_arn(f"klaviyo-lead-actions-{ACTION.replace('_', '-')}")
    index, containers, profiles = config["index"], config["containers"], config["profiles"]
    pending: deque[dict[str, Any]] = deque()
    receives: dict[str, int] = {}
    made = 0
    done_in_window = 0

    def next_message() -> dict[str, Any]:
        nonlocal made
        person = (index + made * containers) % profiles
        body = {"email": existing_email(person), "klaviyo.list_id": config["list_id"]}
        made += 1
        return sqs_message(json.dumps(body), message_id=f"c{index}-{made}")

    entrypoint.reset_runtime(runtime)
    _until(start)
    with quiet_lambda_output():
        while time.time() < end:
            batch = [pending.popleft() for _ in range(min(RECORDS_PER_EVENT, len(pending)))]
            while len(batch) < RECORDS_PER_EVENT:
                batch.append(next_message())
            before = results.successes()
            context = LambdaContext(function_name=function_name(ACTION), clock=time.monotonic)
            answer = handler(sqs_event(batch, queue), context)
            if time.time() <= end:
                done_in_window += results.successes() - before
            failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            for message in batch:
                receives.setdefault(message["MessageId"], 0)
                if message["MessageId"] in failed:
                    receives[message["MessageId"]] += 1
                    count = int(message["Attributes"]["ApproximateReceiveCount"]) + 1
                    pending.append(
                        sqs_message(
                            message["Body"], message_id=message["MessageId"], receive_count=count
                        )
                    )
    entrypoint.reset_runtime()
    totals = Counter()
    for entry in by_operation.values():
        totals.update(entry)
    report = {
        "calls": totals["calls"],
        "throttled": totals["throttled"],
        "by_operation": {op: dict(c) for op, c in by_operation.items()},
        "leads_done": done_in_window,
        "outcomes": dict(results.outcomes()),
        "hand_backs": dict(Counter(receives.values())),
    }
    Path(config["out"]).write_text(json.dumps(report))


def other(config: dict[str, Any]) -> None:
    """Another integration: the same endpoint at an even pace, whatever the answers say."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=16)
    url = f"{config['base_url']}/api/lists/{config['list_id']}/relationships/profiles"
    body = json.dumps({"data": [{"type": "profile", "id": config["profile_id"]}]}).encode()
    headers = {
        "Authorization": f"Klaviyo-API-Key {OTHER_KEY}",
        "revision": "2026-07-15",
        "Accept": "application/vnd.api+json",
        "Content-Type": "application/vnd.api+json",
    }
    start, end, until = config["start"], config["end"], config["until"]
    interval = 60.0 / config["per_minute"]
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            status = pool.request("POST", url, body=body, headers=headers, retries=False).status
        except urllib3.exceptions.HTTPError:
            status = 0
        with lock:
            answers.append((time.time(), status))

    with ThreadPoolExecutor(max_workers=16) as workers:
        sent = 0
        stop = Path(config["stop_file"])
        while (moment := start + sent * interval) < until and not stop.exists():
            _until(moment)
            workers.submit(send)
            sent += 1
    counted = [status for at, status in answers if start <= at <= end]
    report = {"calls": len(counted), "throttled": sum(1 for s in counted if s == 429)}
    Path(config["out"]).write_text(json.dumps(report))


def main(argv: list[str]) -> int:
    from devtools.lambda_events import ensure_layer_on_path

    ensure_layer_on_path()
    role, config = argv[0], json.loads(argv[1])
    {"container": container, "other": other}[role](config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
