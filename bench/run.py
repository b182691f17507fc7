"""``python -m bench.run``: the whole benchmark in one command, figures on stdout.

1. Throughput: every action, one lead at a time (``COALESCE_BATCHES=false``) and coalesced,
   N leads of its mix through the SQS handler against the emulator with Klaviyo's limits,
   latency model and import-job timing, on a virtual clock: calls per 1,000 leads, leads per
   minute, the time to drain 100,000 queued leads.
2. Batch size: the coalesced runs again with events of 100, for the fixed and per-lead cost
   of an event, and from them the batch size the 50x target needs.
3. Real-time check: the same leads on the real and on the virtual clock.
4. Steady run: per-lead leads arriving at 90 % of the steady limit; 429s must be 0.
5. Overhead: our time per lead on the webhook path, Klaviyo's time taken out.
6. Cold start: fresh interpreters to the first answer, ours vs a common baseline.
7. Peak memory of one 10,000-record coalesced batch (Create, Subscribe).
8. Fleet: 4 and 8 container processes and another integration on one account, real clock,
   with the bundle's pacer and with an old-style one.

The baseline handler of the cold start needs ``bench/requirements.txt``; ``--install``
installs it into this interpreter's environment with pip.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REQUIREMENTS = ROOT / "bench" / "requirements.txt"
# The real-time check: (action, mode, leads, records per event), each a few tens of seconds.
CROSSCHECKS = (
    ("add_profile_to_list", "per_lead", 60, 100),
    ("subscribe_profile_to_list", "per_lead", 60, 100),
    ("update_profile", "coalesced", 200, 200),
)
SWEEP_BATCH = 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Per-lead vs coalesced under Klaviyo's limits, overhead, cold start, memory,"
        " fleet-wide pacing.",
    )
    parser.add_argument("--leads", type=int, default=1000, help="leads per action and mode")
    parser.add_argument("--actions", default="", help="comma-separated actions (default: all)")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SQS records per coalesced event"
    )
    parser.add_argument(
        "--per-lead-batch-size", type=int, default=100, help="SQS records per per-lead event"
    )
    parser.add_argument("--skip-sweep", action="store_true", help="skip the batch-size part")
    parser.add_argument("--skip-crosscheck", action="store_true", help="skip the real-time check")
    parser.add_argument(
        "--steady-minutes",
        type=float,
        default=3.0,
        help="virtual minutes of the 90 %% steady run (0 skips it)",
    )
    parser.add_argument(
        "--overhead-requests",
        type=int,
        default=300,
        help="API requests per action for the overhead part (0 skips it)",
    )
    parser.add_argument("--cold-runs", type=int, default=9, help="fresh interpreters per variant")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold-start part")
    parser.add_argument(
        "--memory-records", type=int, default=10_000, help="records of the memory batch (0 skips)"
    )
    parser.add_argument(
        "--fleet-seconds",
        type=float,
        default=240.0,
        help="real seconds per fleet scenario (0 skips the fleet part)",
    )
    parser.add_argument("--fleet-containers", default="4,8", help="comma-separated fleet sizes")
    parser.add_argument(
        "--skip-fleet-baseline", action="store_true", help="no old-style pacer scenarios"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="pip-install bench/requirements.txt (the baseline's packages) when missing",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="a conformance.json from `make conformance`: every emulator runs on that "
        "account's measured lags and import timing and rules",
    )
    return parser


# -- the baseline's packages --------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins


def missing_requirements() -> list[str]:
    missing = []
    for name, version in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            missing.append(f"{name}=={version}" + (f" (have {installed})" if installed else ""))
    return missing


def ensure_requirements(install: bool) -> bool:
    missing = missing_requirements()
    if not missing:
        return True
    if not install:
        print(
            "The cold-start baseline needs packages that are not installed: "
            + ", ".join(missing)
            + f"\nInstall them with:\n  {sys.executable} -m pip install -r bench/requirements.txt"
            + "\nor run with --install (or --skip-cold).",
            file=sys.stderr,
        )
        return False
    print("Installing bench/requirements.txt ...", file=sys.stderr, flush=True)
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)]
    )
    importlib.invalidate_caches()
    still = missing_requirements()
    if still:
        print("Still missing after pip install: " + ", ".join(still), file=sys.stderr)
        return False
    return True


# -- formatting ------------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "unlimited"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if not b or not a:
        return "-"
    ratio = a / b
    if ratio < 0.1:
        return f"1/{1 / ratio:,.0f}"
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:,.2f}x"


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _row(label: str, *cells: str, width: int = 38) -> str:
    return f"  {label:<{width}}" + "".join(f"{c:>16}" for c in cells)


def _duration(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:,.1f} d"
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:,.0f} min"


def throughput_section(runs: dict[str, Any], leads: int, batch: int, per_batch: int) -> list[str]:
    from bench.harness import IMPORT_DELAY_SECONDS, IMPORT_RATE_PER_SECOND, TITLES
    from bench.throughput import DEFAULT_CONCURRENCY

    out = [
        "THROUGHPUT (Klaviyo's limits and the emulator's realistic latency model; virtual clock)",
        f"  {leads:,} leads of each action's mix through the SQS handler: per lead in events of"
        f" {per_batch:,}, coalesced in events of {batch:,}.",
        f"  Import jobs wait {IMPORT_DELAY_SECONDS:g} s queued, then run at"
        f" {IMPORT_RATE_PER_SECOND:g} profiles/s (an assumption).",
        "",
        _row("", "calls/1000", "calls/1000", "fewer calls", "leads/min", "leads/min", width=26)
        + f"{'100k drain':>13}{'100k drain':>13}",
        _row("", "per lead", "coalesced", "", "per lead", "coalesced", width=26)
        + f"{'per lead':>13}{'coalesced':>13}",
    ]
    for action, modes in runs.items():
        per, co = modes["per_lead"], modes["coalesced"]
        drains = [_duration(r["drain"]["default_concurrency"]["hours"]) for r in (per, co)]
        out.append(
            _row(
                TITLES[action],
                _n(per["calls_per_1000_leads"], 1),
                _n(co["calls_per_1000_leads"], 1),
                _ratio(per["calls"], co["calls"]),
                _n(per["leads_per_minute"]),
                _n(co["leads_per_minute"]),
                width=26,
            )
            + f"{drains[0]:>13}{drains[1]:>13}"
        )
    out += [
        "",
        "  leads/min: what one container moved (N / minutes of the run, Klaviyo's latency and",
        "  pacing included). 100k drain: 100,000 / min(account bound, "
        f"{DEFAULT_CONCURRENCY} containers x leads/min),",
        f"  {DEFAULT_CONCURRENCY} = the template's MaximumConcurrency; the account bound is"
        " min over operations of",
        "  steady limit / calls per lead (the binding one is named below).",
        "",
        "  Per action: calls per 1000 leads by operation (429s), the binding operation, and the",
        "  drain with as many containers as it takes (rate limits alone).",
    ]
    for action, modes in runs.items():
        per, co = modes["per_lead"], modes["coalesced"]
        out.append(f"  {TITLES[action]}")
        ops = sorted(set(per["endpoints"]) | set(co["endpoints"]))
        for op in ops:
            cells = []
            for run in (per, co):
                entry = run["endpoints"].get(op)
                cell = _n(entry["calls_per_1000_leads"], 1) if entry else "0"
                if entry and entry["throttled"]:
                    cell += f" ({entry['throttled']})"
                cells.append(cell)
            out.append(_row(f"  {op}", *cells, width=44))
        for run in (per, co):
            bound = run["drain"]["unbounded"]
            label = run["mode"].replace("_", " ")
            clock = "" if run.get("clock") != "real" else " [real clock]"
            out.append(
                f"    {label}{clock}: bound {bound['leads_per_minute']:,.0f} leads/min by"
                f" {run['sustained']['limited_by']}; 100k in {_duration(bound['hours'])} with"
                f" {bound['containers_to_reach_bound']} container(s); {run['invocations']}"
                f" invocations, {run['virtual_seconds'] / 60:,.1f} min,"
                f" {run['handed_back']} handed back, CPU {run['cpu_ms_per_lead']:.2f} ms/lead"
            )
        same = per["outcomes"] == co["outcomes"]
        out.append(
            "    outcomes "
            + ("the same in both modes: " if same else "DIFFER between modes: ")
            + ", ".join(f"{k} {v}" for k, v in sorted(co["outcomes"].items()))
        )
        if not same:
            out.append(f"      per lead: {per['outcomes']}")
    out.append("")
    return out


def sweep_section(sweep: dict[str, Any]) -> list[str]:
    from bench.harness import TITLES

    out = [
        "BATCH SIZE (coalesced calls per event = fixed + per lead x records; from events of"
        f" {SWEEP_BATCH} and of the main run)",
        _row("", "fixed/event", "per lead", "50x from", "s per event", "batch", "window", width=26),
    ]
    for action, entry in sweep.items():
        needed = entry["min_batch_for_50x"]
        out.append(
            _row(
                TITLES[action],
                _n(entry["fixed_calls"], 1),
                _n(entry["calls_per_lead"], 4),
                "never" if needed is None else _n(needed),
                _n(entry["seconds_per_event"], 1),
                _n(entry["recommended_batch"]),
                f"{entry['recommended_window']:g} s",
                width=26,
            )
        )
    out += [
        "  50x from: records per event for 50x fewer calls than per lead. s per event: one",
        "  event of the main run (Klaviyo's latency, import jobs), against the 360 s timeout.",
        "  window: MaximumBatchingWindowInSeconds; below (50x from / window) leads a second an",
        "  event is smaller than that and saves less (see docs/performance.md).",
        "",
    ]
    return out


def crosscheck_section(checks: list[dict[str, Any]]) -> list[str]:
    from bench.harness import TITLES

    out = [
        "REAL-TIME CHECK (the same leads on the real clock and on the virtual one)",
        _row("", "real s", "virtual s", "virtual/real", "calls r/v", width=42),
    ]
    for c in checks:
        out.append(
            _row(
                f"{TITLES[c['action']]}, {c['mode'].replace('_', ' ')}, {c['leads']} leads",
                _n(c["real_seconds"], 1),
                _n(c["virtual_seconds"], 1),
                f"{c['ratio']:.3f}",
                f"{c['real_calls']}/{c['virtual_calls']}",
                width=42,
            )
        )
        if c["real_outcomes"] != c["virtual_outcomes"]:
            out.append(f"    outcomes differ: {c['real_outcomes']} / {c['virtual_outcomes']}")
    out.append("")
    return out


def steady_section(runs: list[dict[str, Any]]) -> list[str]:
    from bench.harness import TITLES

    out = ["STEADY RUN AT 90 % OF THE STEADY LIMIT (per lead, virtual clock, no latency)"]
    for run in runs:
        out.append(
            f"  {TITLES[run['action']]}: {run['arrival_per_minute']:,.0f} leads/min arriving"
            f" for {run['virtual_minutes']:.1f} virtual min, each lead invoked on arrival:"
            f" {run['leads_per_minute']:,.1f} leads/min, max lag {run['max_lag_seconds']:.1f} s,"
            f" 429s: {run['throttled']}"
        )
    out.append("")
    return out


def overhead_section(overhead: dict[str, Any]) -> list[str]:
    from bench.harness import TITLES

    out = [
        "OVERHEAD ON THE WEBHOOK PATH (API Gateway event -> handler -> answer, Klaviyo's time"
        " taken out)",
        _row("", "p50 ms", "p99 ms", "max ms", "HTTP ms", width=30),
    ]
    for action, entry in overhead["actions"].items():
        out.append(
            _row(
                TITLES[action],
                _n(entry["p50_ms"], 2),
                _n(entry["p99_ms"], 2),
                _n(entry["max_ms"], 2),
                _n(entry["http_mean_ms"], 2),
                width=30,
            )
        )
    out += [
        f"  {overhead['requests_per_action']} requests per action after a warm-up; worst p99"
        f" {overhead['worst_p99_ms']:.2f} ms (target <= 5 ms).",
        "  handler wall time less time inside urllib3 (HTTP ms: mean per request, the emulator",
        "  in its own process answering at once).",
        "",
    ]
    return out


def memory_section(memory: list[dict[str, Any]]) -> list[str]:
    from bench.harness import TITLES

    out = [
        "PEAK MEMORY (fresh interpreter, one coalesced SQS event; emulator in its own process)",
        _row("", "records", "event MB", "import MB", "peak MB", "batch adds", width=30),
    ]
    for m in memory:
        out.append(
            _row(
                TITLES[m["action"]],
                _n(m["records"]),
                _n(m["event_mb"], 1),
                _n(m["import_only_mb"], 1),
                _n(m["batch_mb"], 1),
                _n(m["batch_cost_mb"], 1),
                width=30,
            )
        )
        out.append(f"    outcomes {m['outcomes']}, {m['handed_back']} handed back")
    out += [
        "  peak: ru_maxrss (VmHWM agrees); target under 256 MB (the function's memory).",
        "",
    ]
    return out


def fleet_section(scenarios: list[dict[str, Any]]) -> list[str]:
    out = [
        "FLEET (container processes + another integration at 40 % on one emulator process;"
        " add_profiles_to_list 10/s 150/min; real clock)",
        _row(
            "",
            "429/1000",
            "other refused",
            "share of left",
            "leads/min",
            "handed back",
            ">1 hand-back",
            width=22,
        ),
    ]
    for s in scenarios:
        out.append(
            _row(
                f"{s['containers']} containers, {s['pacer']}",
                _n(s["fleet_429_per_1000_calls"], 1),
                f"{100 * s['other_refused_fraction']:.1f} %",
                f"{100 * s['fleet_share_of_what_is_left']:.1f} %",
                _n(s["leads_per_minute"], 1),
                _n(s["leads_handed_back"]),
                _n(s["leads_handed_back_more_than_once"]),
                width=22,
            )
        )
    out += [
        "  targets: fleet 429s <= 5 per 1000 calls; other integration refused <= 1 %; fleet"
        " uses >= 85 % of what it leaves",
        "  (accepted add calls / (150 x minutes - the other's accepted calls)); no lead handed"
        " back more than once.",
        "  even: the bundle's Pacer. burst: old style, the burst limit until RateLimit-Remaining"
        " is 0, then the reset.",
        "",
    ]
    return out


def cold_section(cold: dict[str, Any]) -> list[str]:
    out = [
        f"COLD START (median of {cold['runs']} fresh interpreters each, from spawn to the first"
        " Create Profile answer via API Gateway)",
        _row("", "median ms", "min-max ms", "import ms", width=58) + f"{'1st answer ms':>16}",
    ]
    for variant in cold["variants"].values():
        child = variant["child_median_ms"]
        out.append(
            _row(
                variant["title"],
                _n(variant["median_ms"], 0),
                f"{variant['min_ms']:,.0f}-{variant['max_ms']:,.0f}",
                _n(child["import"], 0),
                _n(child["first_answer"], 0),
                width=58,
            )
        )
    out += [
        f"  ours (extension) / baseline: {cold['ratio_ours_extension_to_baseline']:.2f}"
        f"   ours (boto3) / baseline: {cold['ratio_ours_boto3_to_baseline']:.2f}"
        "   (target <= 0.33)",
        "  import ms / 1st answer ms: child-side medians from its first line; the first answer"
        " includes reading the secret.",
        "  Bytecode precompiled; PYTHONDONTWRITEBYTECODE unset; one discarded warm-up per"
        " variant; POWERTOOLS_TRACE_DISABLED=true.",
        "  Secret: extension stand-in on 127.0.0.1, or moto's Secrets Manager; Klaviyo: the"
        " emulator (the SDK via its test_host option).",
    ]
    for failure in cold["failures"]:
        out.append(f"  FAILED: {failure}")
    out.append("")
    return out


# -- the run -------------------------------------------------------------------------------


def sweep_figures(
    runs: dict[str, Any], small: dict[str, Any], batch: int
) -> dict[str, dict[str, Any]]:
    """Fixed and per-lead calls of a coalesced event, from two event sizes; what they imply."""
    out = {}
    for action, run in small.items():
        big = runs[action]["coalesced"]
        per_lead = runs[action]["per_lead"]["calls"] / runs[action]["per_lead"]["leads"]
        c_small = run["calls"] / run["invocations"]
        c_big = big["calls"] / big["invocations"]
        size_small = run["leads"] / run["invocations"]
        size_big = big["leads"] / big["invocations"]
        slope = max(0.0, (c_big - c_small) / (size_big - size_small))
        fixed = max(0.0, c_small - slope * size_small)
        room = per_lead / 50.0 - slope
        needed = math.ceil(fixed / room) if room > 0 else None
        seconds = big["virtual_seconds_per_invocation"]
        out[action] = {
            "fixed_calls": fixed,
            "calls_per_lead": slope,
            "per_lead_calls_per_lead": per_lead,
            "min_batch_for_50x": needed,
            "seconds_per_event": seconds,
            "recommended_batch": batch,
            "recommended_window": 20.0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.leads < 1 or args.batch_size < 1 or (not args.skip_cold and args.cold_runs < 1):
        print("--leads, --batch-size and --cold-runs must be positive", file=sys.stderr)
        return 2
    if args.calibration is not None:
        # Every emulator this run starts, here or in a child process, reads it.
        from devtools.klaviyo_emulator import calibration

        calibration.load(args.calibration)  # refuse a bad file before any part runs
        os.environ[calibration.ENVIRONMENT] = str(args.calibration.resolve())
    if not args.skip_cold and not ensure_requirements(args.install):
        return 2

    from bench import throughput
    from bench.harness import ACTIONS, MODES

    actions = [a for a in args.actions.split(",") if a] or list(ACTIONS)
    unknown = set(actions) - set(ACTIONS)
    if unknown:
        print(f"unknown actions: {sorted(unknown)}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    timings: dict[str, float] = {}
    figures: dict[str, Any] = {
        "leads": args.leads,
        "batch_size": args.batch_size,
        "per_lead_batch_size": args.per_lead_batch_size,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
        "throughput": {},
    }

    def emit(lines: list[str]) -> None:
        print("\n".join(lines), flush=True)
        if args.json:  # after every part, so a long run that stops keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")

    emit(
        [
            f"Klaviyo lead actions: benchmark (Python {figures['python']}, {figures['cpus']} CPUs,"
            f" commit {figures['commit']}, {figures['date']})",
            "",
        ]
    )

    started = time.perf_counter()
    for action in actions:
        figures["throughput"][action] = {}
        for mode in MODES:
            size = args.batch_size if mode == "coalesced" else args.per_lead_batch_size
            _progress(f"throughput: {action}, {mode}, {args.leads:,} leads")
            figures["throughput"][action][mode] = throughput.virtual_run(
                action, mode, args.leads, size
            )
    timings["throughput"] = time.perf_counter() - started
    emit(
        throughput_section(
            figures["throughput"], args.leads, args.batch_size, args.per_lead_batch_size
        )
    )

    if not args.skip_sweep:
        started = time.perf_counter()
        small = {}
        for action in actions:
            if action == "delete_profile" or args.batch_size <= SWEEP_BATCH:
                continue  # no bulk endpoint: coalesced is one lead at a time
            _progress(f"batch size: {action}, events of {SWEEP_BATCH}")
            small[action] = throughput.virtual_run(
                action, "coalesced", 3 * SWEEP_BATCH, SWEEP_BATCH
            )
        figures["sweep_runs"] = small
        figures["sweep"] = sweep_figures(figures["throughput"], small, args.batch_size)
        timings["sweep"] = time.perf_counter() - started
        emit(sweep_section(figures["sweep"]))

    if not args.skip_crosscheck:
        started = time.perf_counter()
        checks = []
        for action, mode, leads, size in CROSSCHECKS:
            if action in actions:
                _progress(f"real-time check: {action}, {mode}, {leads} leads")
                checks.append(throughput.crosscheck(action, mode, leads, size))
        figures["real_time_check"] = checks
        timings["real_time_check"] = time.perf_counter() - started
        emit(crosscheck_section(checks))

    if args.steady_minutes > 0:
        started = time.perf_counter()
        steady = []
        for action in ("add_profile_to_list", "subscribe_profile_to_list"):
            if action in actions:
                _progress(f"steady run: {action}")
                steady.append(throughput.steady_run(action, 0.9, args.steady_minutes))
        figures["steady"] = steady
        timings["steady"] = time.perf_counter() - started
        emit(steady_section(steady))

    if args.overhead_requests > 0:
        from bench import overhead

        started = time.perf_counter()
        _progress(f"overhead: {args.overhead_requests} API requests per action")
        figures["overhead"] = overhead.measure(args.overhead_requests, actions)
        timings["overhead"] = time.perf_counter() - started
        emit(overhead_section(figures["overhead"]))

    if not args.skip_cold:
        from bench import coldstart

        started = time.perf_counter()
        _progress(f"cold start: {args.cold_runs} runs x {len(coldstart.VARIANTS)} variants")
        figures["cold_start"] = coldstart.measure(args.cold_runs)
        timings["cold_start"] = time.perf_counter() - started
        emit(cold_section(figures["cold_start"]))

    if args.memory_records > 0:
        from bench import memory

        started = time.perf_counter()
        figures["memory"] = []
        for action in ("create_profile", "subscribe_profile_to_list"):
            _progress(f"memory: {action}, {args.memory_records:,} records")
            figures["memory"].append(memory.measure(action, args.memory_records))
        timings["memory"] = time.perf_counter() - started
        emit(memory_section(figures["memory"]))

    if args.fleet_seconds > 0:
        from bench import fleet

        started = time.perf_counter()
        scenarios = []
        pacers = ["even"] if args.skip_fleet_baseline else ["even", "burst"]
        for pacer in pacers:
            for size in [int(n) for n in args.fleet_containers.split(",") if n]:
                _progress(f"fleet: {size} containers, {pacer} pacer, {args.fleet_seconds:g} s")
                scenarios.append(fleet.scenario(size, args.fleet_seconds, pacer))
        figures["fleet"] = scenarios
        timings["fleet"] = time.perf_counter() - started
        emit(fleet_section(scenarios))

    timings["total"] = time.perf_counter() - began
    figures["timings_seconds"] = timings
    emit(
        [
            "TIME TAKEN: "
            + ", ".join(f"{name} {seconds:,.0f} s" for name, seconds in timings.items())
        ]
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() + ("+changes" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
