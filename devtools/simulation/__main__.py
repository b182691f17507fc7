"""``python -m devtools.simulation``: play seeds of the fleet simulation and check them.

    python -m devtools.simulation --seeds 1000 --jobs 2      seeds 1..1000 on 2 processes
    python -m devtools.simulation --seed 4711                one seed: its scenario, shrunk and
                                                             traced when it fails
    python -m devtools.simulation --seed 4711 --leads 2,5    only those leads of the seed

A failing seed is shrunk (leads dropped, kinds of fault turned off, while it still fails) and
printed with its schedule and the command that replays it. Exit status 1 when any seed fails.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from .run import Outcome, play, report, shrink, summary  # noqa: E402
from .world import scenario  # noqa: E402

# Seeds a process plays before its outcomes come back: small enough that a long run shows a
# failing seed (and its progress) within minutes, large enough that passing them costs nothing.
CHUNK = 250


def _range(bounds: tuple[int, int]) -> list[Outcome]:
    return [play(scenario(seed)) for seed in range(*bounds)]


def run_seeds(start: int, count: int, jobs: int) -> list[Outcome]:
    """Every seed's outcome, in seed order; a failing seed is told on stderr as soon as its
    chunk is done, and the progress every tenth of the run."""
    parts = [(s, min(s + CHUNK, start + count)) for s in range(start, start + count, CHUNK)]
    outcomes: list[Outcome] = []
    tenth = max(1, len(parts) // 10)

    def take(played: list[Outcome]) -> None:
        outcomes.extend(played)
        for outcome in played:
            if outcome.violations:
                print(f"seed {outcome.seed} fails: {outcome.violations[0]}", file=sys.stderr)
        if len(outcomes) < count and (len(outcomes) // CHUNK) % tenth == 0:
            failing = sum(1 for o in outcomes if o.violations)
            print(f"{len(outcomes)} of {count} seeds played, {failing} failing", file=sys.stderr)
        sys.stderr.flush()

    if jobs <= 1 or len(parts) < 2:
        for part in parts:
            take(_range(part))
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for played in pool.imap_unordered(_range, parts):
                take(played)
    return sorted(outcomes, key=lambda outcome: outcome.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulation", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds")
    parser.add_argument("--start", type=int, default=1, help="the first seed")
    parser.add_argument("--seed", type=int, help="one seed, shown in full")
    parser.add_argument("--leads", help="with --seed: only these lead numbers (comma-separated)")
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--json", help="write the counts here")
    parser.add_argument("--show", type=int, default=3, help="failing seeds to shrink and show")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return _one(args.seed, args.leads)
    started = time.monotonic()
    outcomes = run_seeds(args.start, args.seeds, args.jobs)
    seconds = time.monotonic() - started
    counts: dict[str, Any] = {**summary(outcomes), "seconds": round(seconds, 1)}
    counts["ms_per_seed"] = round(1000 * seconds / max(1, len(outcomes)) * max(1, args.jobs), 1)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(counts, out, indent=1)
    print(
        f"{counts['seeds']} seeds, {counts['leads']} leads, {counts['klaviyo_calls']} Klaviyo "
        f"calls in {seconds:.0f} s ({counts['ms_per_seed']} ms a seed on one core): "
        f"{len(counts['failing_seeds'])} failing seeds, {counts['violations']} violations",
        file=sys.stderr,
    )
    for outcome in [o for o in outcomes if o.violations][: args.show]:
        original = scenario(outcome.seed)
        shrunk, traced = shrink(original)
        print(report(traced, original, shrunk), file=sys.stderr)
        print("", file=sys.stderr)
    return 1 if counts["failing_seeds"] else 0


def _one(seed: int, leads: str | None) -> int:
    chosen = scenario(seed)
    if leads:
        keep = {int(n) for n in leads.split(",") if n.strip()}
        chosen = chosen.without({lead.number for lead in chosen.leads} - keep)
    outcome = play(chosen, tracing=True)
    if outcome.violations and not leads:
        shrunk, traced = shrink(chosen)
        print(report(traced, chosen, shrunk))
    else:
        print(report(outcome, chosen))
    return 1 if outcome.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
