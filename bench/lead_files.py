"""Lead files at 100,000 rows: the splitter's and the assembler's memory and time, and the
time from upload to results file against the account's bound for the action.

    python -m bench.lead_files [--rows 100000] [--memory-sizes 25000,100000,200000] [--json f]

- **Memory** (tracemalloc's peak, Python allocations) of the splitter (``take_file``: check
  every row, report, queue every row) and of the assembler (``check_run`` + ``assemble``: look
  every row's result up, write the results file) at each of ``--memory-sizes``. Both stream;
  what grows with the file is the splitter's duplicate table (24 bytes a distinct row) and
  the part buffers up to ``PART_BYTES``.
- **Time**: S3 is a directory on disk, SQS and DynamoDB answer from memory after a modelled
  latency (``SQS_LATENCY_SECONDS`` per SendMessageBatch, ``DYNAMODB_LATENCY_SECONDS`` per
  BatchGetItem: assumptions, AWS publishes no figure) slept on the real clock, as the threads of
  the splitter overlap them. The splitter's and the assembler's seconds are measured here; the
  queue's drain at the account's bound comes from the coalesced benchmark's virtual run of the
  action (``bench.throughput``, Klaviyo's real limits, the emulator's latency).
- **Header check**: the time to read and check a header of repeated names (``c0, ..., c0``)
  at widths up to the column cap, as a ratio to the narrowest (linear: the width's ratio), and
  the time to refuse one far past the cap (40,000 columns) as a ratio to the cap's.
- **Time to results**: rows finish evenly until the later of (splitter done, queue drained);
  the assembler's scheduled runs look as deployed (``look``'s cadence, ``next_look_in``) at
  every phase of the minute against the upload, and the last look writes the file (its
  measured time). The worst phase against the bound (rows / the account's bound leads per
  minute) is the ratio; the target is 1.10. The drain is also given for the template's default
  MaximumConcurrency (2 containers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from klaviyo_leads.actions.action import result_fields  # noqa: E402
from klaviyo_leads.actions.table import ACTIONS  # noqa: E402
from klaviyo_leads.lead_files.assembler import LOOK_FOR_SECONDS, check_run, next_look_in  # noqa: E402
from klaviyo_leads.lead_files.bucket import RUNS_PREFIX, FileProblem  # noqa: E402
from klaviyo_leads.lead_files.rows import MAX_ROW_BYTES, Layout, read_rows  # noqa: E402
from klaviyo_leads.lead_files.splitter import SEND_THREADS, take_file  # noqa: E402
from klaviyo_leads.lead_files.storage import PART_BYTES, Services  # noqa: E402
from klaviyo_leads.outcomes import Outcome, Result  # noqa: E402

SQS_LATENCY_SECONDS = 0.02
DYNAMODB_LATENCY_SECONDS = 0.01
BENCH_ACTIONS = ("subscribe_profile_to_list", "create_profile")
BUCKET = "lead-files"


# -- Stand-ins ---------------------------------------------------------------------------------


class _Body:
    """A streamed S3 body: ``read(n)`` and ``iter_lines()`` from a file."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def read(self, amount: int | None = None) -> bytes:
        data = self._file.read(-1 if amount is None else amount)
        if not data:
            self._file.close()
        return data

    def iter_lines(self) -> Iterator[bytes]:
        with self._file:
            for line in self._file:
                yield line.rstrip(b"\r\n")


class DiskS3:
    """The S3 calls of the lead-file path, on a directory: objects never sit in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._uploads: dict[str, list[Path]] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if len(key.encode()) > 1024:
            raise _refused("KeyTooLongError")  # as S3 answers
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        path = self.root / Key
        if not path.is_file():
            raise _refused("404")
        return {"ContentLength": path.stat().st_size, "ETag": self._etag(path)}

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        path = self.root / Key
        if not path.is_file():
            raise _refused("NoSuchKey")
        return {"Body": _Body(path), "ETag": self._etag(path)}

    @staticmethod
    def _etag(path: Path) -> str:
        """New with every write (the object is never read for it: it may be large)."""
        stat = path.stat()
        return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'

    def put_object(self, Bucket: str, Key: str, Body: bytes, **extra: Any) -> dict[str, Any]:
        """With S3's conditional writes: ``IfNoneMatch="*"`` and ``IfMatch=<ETag>``."""
        path = self._path(Key)
        with self._lock:
            if extra.get("IfNoneMatch") == "*" and path.exists():
                raise _precondition_failed()
            if "IfMatch" in extra and (not path.exists() or self._etag(path) != extra["IfMatch"]):
                raise _precondition_failed()
            path.write_bytes(Body)
            return {"ETag": self._etag(path)}

    def copy_object(
        self, Bucket: str, Key: str, CopySource: dict[str, str], **_: Any
    ) -> dict[str, Any]:
        shutil.copyfile(self.root / CopySource["Key"], self._path(Key))
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        (self.root / Key).unlink(missing_ok=True)
        return {}

    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        upload = uuid.uuid4().hex
        self._uploads[upload] = []
        return {"UploadId": upload}

    def upload_part(self, UploadId: str, PartNumber: int, Body: bytes, **_: Any) -> dict[str, Any]:
        part = self.root / ".parts" / f"{UploadId}.{PartNumber}"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(Body)
        self._uploads[UploadId].append(part)
        return {"ETag": str(PartNumber)}

    def complete_multipart_upload(self, Key: str, UploadId: str, **_: Any) -> dict[str, Any]:
        with self._path(Key).open("wb") as out:
            for part in self._uploads.pop(UploadId):
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out)
                part.unlink()
        return {}

    def abort_multipart_upload(self, UploadId: str, **_: Any) -> dict[str, Any]:
        for part in self._uploads.pop(UploadId, []):
            part.unlink(missing_ok=True)
        return {}

    def get_paginator(self, name: str) -> Any:
        root = self.root

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                keys = sorted(
                    str(p.relative_to(root)) for p in (root / Prefix).rglob("*") if p.is_file()
                )
                return [{"Contents": [{"Key": k} for k in keys]}]

        return Pages()


def _precondition_failed() -> Exception:
    return _refused("PreconditionFailed")


def _refused(code: str) -> Exception:
    """An error as botocore raises it for an AWS answer (``response`` with its code)."""
    error = Exception(code)
    error.response = {"Error": {"Code": code}}  # type: ignore[attr-defined]
    return error


class LatentSqs:
    """SendMessageBatch after ``latency`` seconds; ``refuse`` decides which entries SQS fails."""

    def __init__(
        self, latency: float = SQS_LATENCY_SECONDS, refuse: Callable[[str], bool] = lambda b: False
    ) -> None:
        self.latency = latency
        self.refuse = refuse
        self.calls = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        time.sleep(self.latency)
        successful, failed = [], []
        with self._lock:
            self.calls += 1
            for entry in Entries:
                if self.refuse(entry["MessageBody"]):
                    failed.append({"Id": entry["Id"], "Code": "InternalError"})
                    continue
                message_id = f"m{next(self._ids)}"
                successful.append({"Id": entry["Id"], "MessageId": message_id})
        return {"Successful": successful, "Failed": failed}

    def receive_message(self, **_: Any) -> dict[str, Any]:
        return {"Messages": []}


class Results:
    """The results table: every queued row finished with the action's success fields."""

    def __init__(self, action: str, latency: float = DYNAMODB_LATENCY_SECONDS) -> None:
        fields = result_fields(ACTIONS[action], Result(Outcome.SUCCESS))
        self._item = json.dumps(fields)
        self.latency = latency

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.latency)
        ((table, request),) = RequestItems.items()
        items = [
            {"message_id": key["message_id"], "result": {"S": self._item}}
            for key in request["Keys"]
        ]
        return {"Responses": {table: items}}


# -- The runs ----------------------------------------------------------------------------------


def write_file(path: Path, rows: int) -> None:
    """A CSV of ``rows`` leads, one in 50 with an invalid email (refused by the check)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Email,First Name,Last Name,Phone 1,Country\r\n")
        for i in range(rows):
            email = f"lead{i}@example" if i % 50 == 49 else f"lead{i}@example.com"
            out.write(f"{email},First{i},Last{i},+1415555{i % 10_000:04d},US\r\n")


def _measured(fn: Callable[[], Any], memory: bool) -> tuple[float, int]:
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if memory else 0
        if memory:
            tracemalloc.stop()
    return seconds, peak


def one_file(action: str, rows: int, work: Path, memory: bool) -> dict[str, Any]:
    """Split then assemble one file; seconds and (with ``memory``) peak bytes of each."""
    root = work / f"{action}-{rows}-{'m' if memory else 't'}"
    root.mkdir(parents=True)
    s3 = DiskS3(root)
    key = f"{action}/leads.csv"
    write_file(s3._path(key), rows)
    sqs = LatentSqs()
    services = Services(
        s3=s3,
        sqs=sqs,
        dynamodb=Results(action),
        queue_urls={action: "queue"},
        results_table="results",
        max_file_bytes=10**10,
    )
    reports: list[Any] = []
    split_s, split_peak = _measured(
        lambda: reports.append(take_file(services, BUCKET, key)), memory
    )
    (report,) = reports
    state_key = f"{RUNS_PREFIX}{report.run_id}/state.json"
    progress: list[Any] = []
    assemble_s, assemble_peak = _measured(
        lambda: progress.append(check_run(services, BUCKET, state_key)), memory
    )
    results = root / f"results/{action}/leads.csv.results.csv"
    size = (root / key).stat().st_size
    figures = {
        "rows": rows,
        "file_bytes": size,
        "rows_queued": report.rows_to_send,
        "send_message_batch_calls": sqs.calls,
        "split_seconds": split_s,
        "assemble_seconds": assemble_s,
        "split_peak_bytes": split_peak,
        "assemble_peak_bytes": assemble_peak,
        "finished": bool(progress[0].get("finished")),
        "results_lines": sum(1 for _ in results.open("rb")) - 1 if results.exists() else 0,
    }
    shutil.rmtree(root)
    return figures


LINE_SIZES = (64 * 1024, 1024 * 1024, 8 * 1024 * 1024, 47 * 1024 * 1024)


def line_memory(work: Path, sizes: tuple[int, ...] = LINE_SIZES) -> dict[str, Any]:
    """The splitter's peak on a JSON Lines file of a short lead, one line of each size (a
    custom property that long), and a short lead again, as a ratio to the peak with a line of
    ``MAX_ROW_BYTES``: flat past it, as a longer line is refused without being held."""
    peaks = []
    for size in sizes:
        root = work / f"line-{size}"
        s3 = DiskS3(root)
        key = "create_profile/long-line.jsonl"
        with s3._path(key).open("wb") as out:
            out.write(b'{"email": "first@example.com"}\n{"email": "long@example.com", "note": "')
            for _ in range(size // (1024 * 1024)):
                out.write(b"x" * (1024 * 1024))
            out.write(b"x" * (size % (1024 * 1024)) + b'"}\n{"email": "last@example.com"}\n')
        services = Services(s3=s3, sqs=LatentSqs(latency=0.0), queue_urls={"create_profile": "q"})
        _, peak = _measured(
            lambda services=services, key=key: take_file(services, BUCKET, key),
            memory=True,
        )
        peaks.append(peak)
        shutil.rmtree(root)
    at_limit = peaks[sizes.index(MAX_ROW_BYTES)]
    return {
        "line_bytes": list(sizes),
        "split_peak_bytes": peaks,
        "ratio_to_limit": [peak / at_limit for peak in peaks],
    }


HEADER_WIDTHS = (250, 500, 1000)
PAST_THE_CAP = 40_000


def header_seconds(width: int, repeats: int = 5) -> float:
    """The least of ``repeats`` times to read a header of ``width`` names, the first repeated
    at the end, as far as the file is refused."""
    header = ",".join(["email", *(f"c{i}" for i in range(width - 2)), "c0"])
    data = f"{header}\na@example.com\n".encode()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with contextlib.suppress(FileProblem):
            list(read_rows(io.BytesIO(data), False, Layout()))
        best = min(best, time.perf_counter() - started)
    return best


def header_checks() -> dict[str, Any]:
    """Header widths up to the cap and one far past it: seconds, and ratios to a baseline."""
    widths = [*HEADER_WIDTHS, PAST_THE_CAP]
    seconds = {width: header_seconds(width) for width in widths}
    base = seconds[HEADER_WIDTHS[0]]
    return {
        "widths": widths,
        "seconds": [seconds[w] for w in widths],
        "ratio_to_narrowest": [seconds[w] / base for w in HEADER_WIDTHS],
        "width_ratio": [w / HEADER_WIDTHS[0] for w in HEADER_WIDTHS],
        "past_the_cap_ratio_to_cap": seconds[PAST_THE_CAP] / seconds[HEADER_WIDTHS[-1]],
    }


def bound_of(action: str, leads: int) -> dict[str, Any]:
    """The coalesced benchmark's figures for the action: its account bound and drain."""
    from bench.throughput import virtual_run

    run = virtual_run(action, "coalesced", leads, 100)
    return {
        "leads_per_minute": run["sustained"]["leads_per_minute"],
        "limited_by": run["sustained"]["limited_by"],
        "default_concurrency_leads_per_minute": run["drain"]["default_concurrency"][
            "leads_per_minute"
        ],
    }


def results_written_at(drained: float, rows: int, assemble_seconds: float, phase: float) -> float:
    """When the results file is written: rows finish evenly until ``drained``; the assembler's
    scheduled runs start every minute at ``phase`` and look as ``lead_files.assembler.look``
    does (its own ``next_look_in``), each look taken as instant, the last one then writing the
    file."""

    looked: dict[str, float] = {}

    def progress(t: float) -> dict[str, Any]:
        """What ``check_run`` answers at ``t``: the pace since the look before, kept in the
        run's state from one scheduled run to the next."""
        done = rows if t >= drained else int(rows * t / drained)
        pace = (done - looked["done"]) / (t - looked["at"]) if looked else None
        looked.update(at=t, done=done)
        return {"rows": rows, "done": done, "rows_per_second": pace}

    start = phase
    while True:
        t = start
        while True:
            now = progress(t)
            if now["done"] >= rows:
                return t + assemble_seconds
            wait = next_look_in([now])
            if t - start + wait > LOOK_FOR_SECONDS:
                break
            t += wait
        start += 60.0


# The schedule's phase against the upload: every second of the minute.
PHASES = tuple(float(p) for p in range(60))


def time_to_results(timed: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    """Upload to results at the bound and at the default concurrency: the worst and the median
    over the assembler schedule's phases."""
    rows = timed["rows_queued"]
    at_bound = 60.0 * rows / bound["leads_per_minute"]
    at_default = 60.0 * rows / bound["default_concurrency_leads_per_minute"]

    def over_phases(drain: float) -> tuple[float, float]:
        drained = max(timed["split_seconds"], drain)
        times = sorted(
            results_written_at(drained, rows, timed["assemble_seconds"], phase) for phase in PHASES
        )
        return times[-1], times[len(times) // 2]

    total, median = over_phases(at_bound)
    total_default, _ = over_phases(at_default)
    return {
        "bound_seconds": at_bound,
        "seconds": total,
        "median_seconds": median,
        "ratio_to_bound": total / at_bound,
        "median_ratio_to_bound": median / at_bound,
        "default_concurrency_drain_seconds": at_default,
        "default_concurrency_seconds": total_default,
        "default_concurrency_ratio": total_default / at_default,
    }


def run(
    rows: int, sizes: list[int], bound_leads: int, actions: tuple[str, ...] = BENCH_ACTIONS
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "rows": rows,
        "memory_sizes": sizes,
        "sqs_latency_seconds": SQS_LATENCY_SECONDS,
        "dynamodb_latency_seconds": DYNAMODB_LATENCY_SECONDS,
        "send_threads": SEND_THREADS,
        "part_bytes": PART_BYTES,
        "actions": {},
        "header": header_checks(),
    }
    with tempfile.TemporaryDirectory(prefix="lead-files-bench-") as tmp:
        work = Path(tmp)
        for action in actions:
            memory = []
            for size in sizes:
                print(f"  {action}: memory at {size:,} rows ...", file=sys.stderr)
                memory.append(one_file(action, size, work, memory=True))
            print(f"  {action}: time at {rows:,} rows ...", file=sys.stderr)
            timed = one_file(action, rows, work, memory=False)
            print(f"  {action}: the account's bound ({bound_leads:,} leads) ...", file=sys.stderr)
            bound = bound_of(action, bound_leads)
            if action == actions[0]:
                print("  memory by line size ...", file=sys.stderr)
                figures["lines"] = line_memory(work)
            figures["actions"][action] = {
                "memory": memory,
                "timed": timed,
                "bound": bound,
                "time_to_results": time_to_results(timed, bound),
            }
    return figures


def _per_row(memory: list[dict[str, Any]], key: str) -> float:
    """Bytes a further row adds to the peak, between the two largest sizes."""
    small, large = memory[-2], memory[-1]
    return (large[key] - small[key]) / (large["rows"] - small["rows"])


def report(figures: dict[str, Any]) -> str:
    mb = 1024 * 1024
    lines = [
        f"Lead files, {figures['rows']:,} rows timed, memory at "
        f"{', '.join(f'{n:,}' for n in figures['memory_sizes'])} rows; SendMessageBatch "
        f"{1000 * figures['sqs_latency_seconds']:.0f} ms, BatchGetItem "
        f"{1000 * figures['dynamodb_latency_seconds']:.0f} ms (assumed), "
        f"{figures['send_threads']} sending threads, parts of "
        f"{figures['part_bytes'] / mb:.0f} MiB",
    ]
    lines_figures = figures["lines"]
    lines.append(
        "  splitter peak by line size (JSON Lines, one long line; x the peak at the limit): "
        + ", ".join(
            f"{size / mb:g} MiB {peak / mb:.1f} MB (x{ratio:.2f})"
            for size, peak, ratio in zip(
                lines_figures["line_bytes"],
                lines_figures["split_peak_bytes"],
                lines_figures["ratio_to_limit"],
                strict=True,
            )
        )
    )
    header = figures["header"]
    lines.append(
        "  header of repeated names, "
        + ", ".join(
            f"{w:,} columns {s * 1000:.2f} ms"
            for w, s in zip(header["widths"], header["seconds"], strict=True)
        )
        + "; x"
        + " / x".join(f"{r:.1f}" for r in header["ratio_to_narrowest"])
        + " the narrowest for widths x"
        + " / x".join(f"{r:.0f}" for r in header["width_ratio"])
        + f"; {header['widths'][-1]:,} columns refused in x"
        f"{header['past_the_cap_ratio_to_cap']:.1f} the cap's time"
    )
    for action, entry in figures["actions"].items():
        memory, timed = entry["memory"], entry["timed"]
        result = entry["time_to_results"]
        bound = entry["bound"]
        split = " / ".join(f"{m['split_peak_bytes'] / mb:.1f}" for m in memory)
        assemble = " / ".join(f"{m['assemble_peak_bytes'] / mb:.1f}" for m in memory)
        split_ratio = memory[-1]["split_peak_bytes"] / memory[0]["split_peak_bytes"]
        assemble_ratio = memory[-1]["assemble_peak_bytes"] / memory[0]["assemble_peak_bytes"]
        rows_ratio = memory[-1]["rows"] / memory[0]["rows"]
        lines += [
            f"  {action}:",
            f"    peak MB, splitter {split}; assembler {assemble} "
            f"(a further row adds {_per_row(memory, 'split_peak_bytes'):.0f} / "
            f"{_per_row(memory, 'assemble_peak_bytes'):.0f} bytes; x{rows_ratio:.0f} the rows: "
            f"x{split_ratio:.2f} / x{assemble_ratio:.2f} the peak)",
            f"    splitter {timed['split_seconds']:.1f} s "
            f"({timed['rows'] / timed['split_seconds']:,.0f} rows/s, "
            f"{timed['send_message_batch_calls']:,} batches), assembler "
            f"{timed['assemble_seconds']:.1f} s, {timed['results_lines']:,} result rows",
            f"    bound {bound['leads_per_minute']:,.0f} leads/min by {bound['limited_by']}: "
            f"{result['bound_seconds']:.0f} s for the queued rows; upload to results "
            f"{result['seconds']:.0f} s = x{result['ratio_to_bound']:.3f} the bound at the "
            f"worst phase of the assembler's schedule, x{result['median_ratio_to_bound']:.3f} "
            "the median (target x1.10)",
            "    with the default 2 containers: drain "
            f"{result['default_concurrency_drain_seconds']:.0f} s, upload to results "
            f"{result['default_concurrency_seconds']:.0f} s = "
            f"x{result['default_concurrency_ratio']:.3f}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lead_files", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the timed file")
    parser.add_argument(
        "--memory-sizes",
        default="25000,100000,200000",
        help="rows of the files whose peak memory is measured, comma-separated (two or more)",
    )
    parser.add_argument("--bound-leads", type=int, default=1_000)
    parser.add_argument("--actions", default=",".join(BENCH_ACTIONS), help="comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.memory_sizes.split(",") if n.strip())
    if len(sizes) < 2 or sizes[0] < 1 or args.rows < 1:
        print("--memory-sizes needs two or more positive sizes", file=sys.stderr)
        return 2
    actions = tuple(a for a in args.actions.split(",") if a)
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or not actions:
        print(f"unknown action(s): {', '.join(unknown) or '(none given)'}", file=sys.stderr)
        return 2
    figures = run(args.rows, sizes, args.bound_leads, actions)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    sys.exit(main())
