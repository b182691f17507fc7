"""``python -m bench.run``: the whole benchmark in one command, figures on stdout.

1. Throughput: Subscribe Profile to List and Add Profile to List, N leads each, per lead
   and coalesced, through the SQS handler against the Klaviyo emulator with Klaviyo's
   per-endpoint rate limits, on a virtual clock.
2. Real-time check: each action and mode kept busy for S seconds on the real clock, and the
   same loop on the virtual clock.
3. Steady run: per-lead leads arriving at 90 % of the steady limit; 429s must be 0.
4. Cold start: fresh interpreters to the first answer, ours vs a common baseline.
5. Peak memory of one coalesced Subscribe batch.

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Coalesced vs per-lead throughput under Klaviyo's limits, cold start, memory.",
    )
    parser.add_argument("--leads", type=int, default=10_000, help="leads per action and mode")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SQS records per event (default 1000)"
    )
    parser.add_argument(
        "--real-seconds",
        type=float,
        default=60.0,
        help="seconds of the real-time check per action and mode (0 skips it)",
    )
    parser.add_argument(
        "--steady-minutes",
        type=float,
        default=5.0,
        help="virtual minutes of the 90 %% steady run (0 skips it)",
    )
    parser.add_argument("--cold-runs", type=int, default=9, help="fresh interpreters per variant")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold-start part")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory part")
    parser.add_argument(
        "--install",
        action="store_true",
        help="pip-install bench/requirements.txt (the baseline's packages) when missing",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
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


def throughput_section(figures: dict[str, Any], leads: int, batch: int) -> list[str]:
    from bench.harness import ACTIONS, TITLES

    out = [
        "THROUGHPUT (virtual clock)",
        f"  {leads:,} leads per action and mode through the SQS handler, events of {batch:,}"
        " records, Lambda timeout 360 s;",
        "  emulator with Klaviyo's per-endpoint limits (bulk subscribe 75/s + 750/min, add to"
        " list 10/s + 150/min,",
        "  profiles 75/s + 750/min). Waits cost no real time; work does. Records the handler"
        " hands back are delivered again.",
        "",
    ]
    for action in ACTIONS:
        per, co = figures[action]["per_lead"], figures[action]["coalesced"]
        out.append(_row(TITLES[action], "per lead", "coalesced", "co / per lead"))
        out.append(
            _row(
                "Klaviyo calls per 1000 leads",
                _n(per["calls_per_1000_leads"], 1),
                _n(co["calls_per_1000_leads"], 1),
                _ratio(co["calls"], per["calls"]),
            )
        )
        ops = sorted(set(per["endpoints"]) | set(co["endpoints"]))
        for op in ops:
            cells = []
            for run in (per, co):
                entry = run["endpoints"].get(op)
                if not entry:
                    cells.append("0")
                    continue
                cell = _n(entry["calls_per_1000_leads"], 1)
                if entry["throttled"]:
                    cell += f" ({_n(1000.0 * entry['throttled'] / run['leads'], 1)})"
                cells.append(cell)
            out.append(_row(f"  {op}", *cells))
        out.append(_row("429 responses", _n(per["throttled"]), _n(co["throttled"])))
        out.append(
            _row(
                "leads/min measured (N / virtual min)",
                _n(per["leads_per_minute"]),
                _n(co["leads_per_minute"]),
                _ratio(co["leads_per_minute"], per["leads_per_minute"]),
            )
        )
        out.append(
            _row(
                "leads/min sustained (computed)",
                _n(per["sustained"]["leads_per_minute"]),
                _n(co["sustained"]["leads_per_minute"]),
                _ratio(co["sustained"]["leads_per_minute"], per["sustained"]["leads_per_minute"]),
            )
        )
        out.append(
            f"    limited by: {per['sustained']['limited_by']} (per lead),"
            f" {co['sustained']['limited_by']} (coalesced)"
        )
        out.append(
            _row(
                "virtual min / wall s",
                *(
                    f"{r['virtual_seconds'] / 60:,.1f} / {r['wall_seconds']:,.1f}"
                    for r in (per, co)
                ),
            )
        )
        out.append(
            _row(
                "CPU ms per lead (our code)",
                _n(per["cpu_ms_per_lead"], 3),
                _n(co["cpu_ms_per_lead"], 3),
                _ratio(co["cpu_ms_per_lead"], per["cpu_ms_per_lead"]),
            )
        )
        out.append(_row("invocations", _n(per["invocations"]), _n(co["invocations"])))
        out.append(
            _row("records handed back, redelivered", _n(per["handed_back"]), _n(co["handed_back"]))
        )
        for run in (per, co):
            for reason, count in run["handed_back_after_starting"].items():
                out.append(
                    f"    {run['mode'].replace('_', ' ')}: {count:,} of them started, then given"
                    f" back with '{reason}'"
                )
        out.append(
            _row(
                "outcomes",
                *("all success" if r["all_succeeded"] else "NOT ALL SUCCESS" for r in (per, co)),
            )
        )
        for run in (per, co):
            bad = {k: v for k, v in run["outcomes"].items() if k != "success"}
            if bad or run["dead_lettered"]:
                out.append(f"    {run['mode']}: {bad} dead-lettered: {run['dead_lettered']}")
        if action == "subscribe_profile_to_list":
            jobs = co["endpoints"].get("bulk_subscribe_profiles", {}).get("calls", 0)
            per_call = leads / jobs if jobs else 0
            out.append(
                _row(
                    "leads per subscribe call (coalesced)",
                    "",
                    _n(per_call),
                    "target >= 500",
                )
            )
        out.append("")
    out += [
        "  measured: N leads / virtual minutes of this run. A run shorter than one 60 s window",
        "  never meets a steady limit, so its rate is set by CPU (ours and the emulator's,",
        "  which share one process) and can exceed the sustained figure.",
        "  sustained: min over endpoints of steady limit / accepted calls per lead, what a",
        "  long-running queue can move.",
        "  Per-endpoint rows: calls per 1000 leads (429s among them per 1000 leads).",
        "  CPU: time.thread_time() of the thread calling the handler (handler, Powertools,",
        "  urllib3); the emulator serves from its own threads, so its CPU is excluded.",
        "",
    ]
    return out


def window_section(real: list[dict[str, Any]], virtual: dict[str, Any], seconds: float):
    from bench.harness import TITLES

    out = [
        f"REAL-TIME CHECK ({seconds:g} s per action and mode: the same loop on the real clock"
        " and on the virtual clock)",
        _row("", "real clock", "virtual clock", "N-lead run", width=34) + f"{'429s real/virt':>16}",
    ]
    for entry in real:
        twin = entry["virtual"]
        label = f"{TITLES[entry['action']]}, {entry['mode'].replace('_', ' ')}"
        out.append(
            _row(
                label,
                _n(entry["leads_per_minute"]),
                _n(twin["leads_per_minute"]),
                _n(virtual[entry["action"]][entry["mode"]]["leads_per_minute"]),
                f"{entry['throttled']}/{twin['throttled']}",
                width=34,
            )
        )
    out += [
        "  leads/min answered successfully; the virtual clock ran the same loop for the same",
        f"  {seconds:g} virtual seconds; N-lead run: the virtual figure of the throughput part.",
        "  Subscribe leads are new people, Add leads cycle over the seeded profiles.",
        "",
    ]
    return out


def steady_section(runs: list[dict[str, Any]]) -> list[str]:
    from bench.harness import TITLES

    out = ["STEADY RUN AT 90 % OF THE STEADY LIMIT (per lead, virtual clock)"]
    for run in runs:
        window = run["batch_window_seconds"]
        how = (
            "each lead invoked on arrival"
            if not window
            else f"leads delivered together every {window:g} s, the template's batching window"
        )
        out.append(
            f"  {TITLES[run['action']]}: {run['arrival_per_minute']:,.0f} leads/min arriving"
            f" for {run['virtual_minutes']:.1f} virtual min ({how})"
        )
        outcome = "all success" if run["all_succeeded"] else f"outcomes {run['outcomes']}"
        out.append(
            f"    {run['leads']:,} leads, {outcome}, {run['leads_per_minute']:,.1f} leads/min,"
            f" max lag {run['max_lag_seconds']:.1f} s, 429s: {run['throttled']}"
            + ("" if not window else "  (informational)")
        )
    out.append("")
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


def memory_section(memory: dict[str, Any]) -> list[str]:
    out = [
        f"PEAK MEMORY (fresh interpreter, one coalesced Subscribe event of"
        f" {memory['batch_size']:,} records; emulator in its own process)",
        _row("", "ru_maxrss MB", "VmHWM MB", width=30),
        _row(
            "handler imported only",
            _n(memory["import_only_mb"], 1),
            _n(memory["import_only_hwm_mb"], 1),
            width=30,
        ),
        _row(
            "after the batch",
            _n(memory["batch_mb"], 1),
            _n(memory["batch_hwm_mb"], 1),
            width=30,
        ),
        f"  the batch adds {memory['batch_cost_mb']:.1f} MB; total {memory['batch_mb']:.1f} MB"
        f" (target under 128 MB); {memory['handed_back']} of {memory['records']:,} records"
        " handed back.",
        "",
    ]
    return out


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.leads < 1 or args.batch_size < 1 or (not args.skip_cold and args.cold_runs < 1):
        print("--leads, --batch-size and --cold-runs must be positive", file=sys.stderr)
        return 2
    if not args.skip_cold and not ensure_requirements(args.install):
        return 2

    from bench import throughput
    from bench.harness import ACTIONS, MODES

    began = time.perf_counter()
    timings: dict[str, float] = {}
    figures: dict[str, Any] = {
        "leads": args.leads,
        "batch_size": args.batch_size,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "throughput": {},
    }

    def emit(lines: list[str]) -> None:
        print("\n".join(lines), flush=True)

    emit(
        [
            f"Klaviyo lead actions: benchmark (Python {figures['python']}, {figures['cpus']} CPUs)",
            "",
        ]
    )

    started = time.perf_counter()
    for action in ACTIONS:
        figures["throughput"][action] = {}
        for mode in MODES:
            _progress(f"throughput: {action}, {mode}, {args.leads:,} leads")
            figures["throughput"][action][mode] = throughput.virtual_run(
                action, mode, args.leads, args.batch_size
            )
    timings["throughput"] = time.perf_counter() - started
    emit(throughput_section(figures["throughput"], args.leads, args.batch_size))

    if args.real_seconds > 0:
        started = time.perf_counter()
        windows = []
        for action in ACTIONS:
            for mode in MODES:
                _progress(f"real-time check: {action}, {mode}, {args.real_seconds:g} s")
                real = throughput.window_run(
                    action, mode, args.real_seconds, args.batch_size, args.leads, virtual=False
                )
                real["virtual"] = throughput.window_run(
                    action, mode, args.real_seconds, args.batch_size, args.leads, virtual=True
                )
                windows.append(real)
        figures["real_time_check"] = windows
        timings["real_time_check"] = time.perf_counter() - started
        emit(window_section(windows, figures["throughput"], args.real_seconds))

    if args.steady_minutes > 0:
        started = time.perf_counter()
        steady = []
        for action in reversed(ACTIONS):
            for window in (0.0, 5.0):
                _progress(f"steady run: {action}, window {window:g} s")
                steady.append(throughput.steady_run(action, 0.9, args.steady_minutes, window))
        figures["steady"] = steady
        timings["steady"] = time.perf_counter() - started
        emit(steady_section(steady))

    if not args.skip_cold:
        from bench import coldstart

        started = time.perf_counter()
        _progress(f"cold start: {args.cold_runs} runs x {len(coldstart.VARIANTS)} variants")
        figures["cold_start"] = coldstart.measure(args.cold_runs)
        timings["cold_start"] = time.perf_counter() - started
        emit(cold_section(figures["cold_start"]))

    if not args.skip_memory:
        from bench import memory

        started = time.perf_counter()
        _progress("memory")
        figures["memory"] = memory.measure(1000)
        timings["memory"] = time.perf_counter() - started
        emit(memory_section(figures["memory"]))

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


if __name__ == "__main__":
    sys.exit(main())
