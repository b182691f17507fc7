"""The bundle's own time per lead on the webhook path, Klaviyo's time taken out.

For each action: API Gateway (REST, proxy integration) events of the action's lead mix go
through the function's handler one at a time, in this process, against the emulator in its
own process (no latency, every rate limit out of reach: it answers as fast as it can, and
its headers never ask a client to slow down). Each request's time
is the handler's wall time (event in, API answer out) less the time spent inside urllib3's
``urlopen`` (connecting, sending, Klaviyo working, reading the answer): what is left is
ours (parsing, checks, building requests and results, the pacer's bookkeeping, logging and
metrics). The pacer's waits are skipped (the client's ``sleep`` does nothing): they are
Klaviyo's limits, not our work. A warm-up of ``WARM_UP`` requests first (a warm container).
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from typing import Any

import urllib3

from bench.emulator_process import EmulatorProcess
from bench.harness import ACTIONS, build_runtime, quiet_lambda_output
from bench.mixes import Account
from bench.mixes import lead as mixed_lead
from devtools.lambda_events import LambdaContext, api_gateway_event, function_name, load_handler
from klaviyo_leads.actions.table import ACTIONS as ACTION_TABLE
from klaviyo_leads.handlers import actions as entrypoint

WARM_UP = 30


class TimedPool(urllib3.PoolManager):
    """A PoolManager that adds up the time its requests take, answer read included."""

    def __init__(self) -> None:
        super().__init__(num_pools=4, maxsize=10)
        self.seconds = 0.0

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().urlopen(method, url, redirect=redirect, **kw)
        finally:
            self.seconds += time.perf_counter() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_action(action: str, requests: int, emulator: EmulatorProcess) -> dict[str, Any]:
    pool = TimedPool()
    runtime = build_runtime(
        emulator.base_url,
        coalesce=False,
        clock=time.monotonic,
        sleep=lambda seconds: None,
        results=None,
        pool=pool,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handler = load_handler(action)
    account = Account(**emulator.account)
    route = ACTION_TABLE[action].route
    ours: list[float] = []
    whole: list[float] = []
    http: list[float] = []
    statuses: dict[int, int] = {}
    entrypoint.reset_runtime(runtime)
    try:
        with quiet_lambda_output():
            for index in range(WARM_UP + requests):
                body = json.dumps(mixed_lead(action, index, account))
                event = api_gateway_event("POST", route, {"Content-Type": "application/json"}, body)
                context = LambdaContext(function_name=function_name(action))
                before = pool.seconds
                started = time.perf_counter()
                answer = handler(event, context)
                elapsed = time.perf_counter() - started
                if index < WARM_UP:
                    continue
                spent = pool.seconds - before
                whole.append(elapsed)
                http.append(spent)
                ours.append(elapsed - spent)
                statuses[answer["statusCode"]] = statuses.get(answer["statusCode"], 0) + 1
    finally:
        entrypoint.reset_runtime()
    return {
        "action": action,
        "requests": requests,
        "p50_ms": 1000 * statistics.median(ours),
        "p99_ms": 1000 * _percentile(ours, 0.99),
        "max_ms": 1000 * max(ours),
        "mean_ms": 1000 * statistics.fmean(ours),
        "handler_p50_ms": 1000 * statistics.median(whole),
        "http_mean_ms": 1000 * statistics.fmean(http),
        "statuses": statuses,
    }


def measure(requests: int = 300, actions: list[str] | None = None) -> dict[str, Any]:
    emulator = EmulatorProcess(profiles=WARM_UP + requests, seed=7, unlimited=True)
    try:
        per_action = {
            action: measure_action(action, requests, emulator) for action in actions or ACTIONS
        }
    finally:
        emulator.stop()
    everything = [a for a in per_action.values()]
    return {
        "requests_per_action": requests,
        "actions": per_action,
        "worst_p99_ms": max(a["p99_ms"] for a in everything),
        "worst_p50_ms": max(a["p50_ms"] for a in everything),
    }
