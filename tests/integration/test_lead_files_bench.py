"""The lead-file benchmark, small: the facts its figures rest on must hold (every row
answered in the results file, every valid row queued, the splitter's peak held by streaming)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import lead_files as bench
from klaviyo_leads.lead_files.rows import MAX_COLUMNS


def test_the_benchmark_answers_every_row_and_reports_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "SQS_LATENCY_SECONDS", 0.0)
    out = tmp_path / "lead-files.json"
    argv = ["--rows", "500", "--memory-sizes", "100,500", "--bound-leads", "100"]
    assert bench.main([*argv, "--actions", "create_profile", "--json", str(out)]) == 0
    figures = json.loads(out.read_text(encoding="utf-8"))
    entry = figures["actions"]["create_profile"]
    timed = entry["timed"]
    assert timed["finished"] and timed["results_lines"] == 500
    assert timed["rows_queued"] == 500 - 500 // 50  # one row in 50 has an invalid email
    # Ten rows to a batch; a refused row ends the batch before it (the manifest keeps order).
    full = -(-timed["rows_queued"] // 10)
    assert full <= timed["send_message_batch_calls"] <= full + 500 // 50
    assert [m["rows"] for m in entry["memory"]] == [100, 500]
    assert all(m["split_peak_bytes"] > 0 for m in entry["memory"])
    result = entry["time_to_results"]
    assert result["seconds"] >= result["bound_seconds"] > 0
    assert result["ratio_to_bound"] == pytest.approx(result["seconds"] / result["bound_seconds"])
    assert bench.main([*argv, "--actions", "no_such_action"]) == 2
    # A line far past the row limit is never held: the peak stays the limit's.
    lines = figures["lines"]
    assert lines["line_bytes"][-1] > 40 * 1024 * 1024
    assert max(lines["ratio_to_limit"]) < 1.5
    assert figures["header"]["widths"][-1] > MAX_COLUMNS


def test_rows_sqs_will_not_take_get_an_error_in_their_place(tmp_path: Path) -> None:
    """Invariant: with batches sent concurrently, the results file is still in the input's
    order, and a row SQS refused (twice) is an error saying so, never a lost row."""
    from klaviyo_leads.lead_files.assembler import check_run
    from klaviyo_leads.lead_files.bucket import RUNS_PREFIX
    from klaviyo_leads.lead_files.checks import NOT_QUEUED
    from klaviyo_leads.lead_files.splitter import take_file
    from klaviyo_leads.lead_files.storage import Services

    s3 = bench.DiskS3(tmp_path)
    key = "create_profile/some.csv"
    rows = [f"lead{i}@example.com" if i % 7 else f"refuse{i}@example.com" for i in range(200)]
    s3._path(key).write_text("email\n" + "\n".join(rows) + "\n", encoding="utf-8")
    sqs = bench.LatentSqs(latency=0.001, refuse=lambda body: "refuse" in body)
    services = Services(
        s3=s3,
        sqs=sqs,
        dynamodb=bench.Results("create_profile", latency=0.0),
        queue_urls={"create_profile": "queue"},
        results_table="results",
        sleep=lambda seconds: None,  # the back-off before a refused row is sent again
    )
    report = take_file(services, "bucket", key)
    state = f"{RUNS_PREFIX}{report.run_id}/state.json"
    progress = check_run(services, "bucket", state)
    assert progress["finished"] and progress["by_outcome"] == {"error": 29, "success": 171}
    lines = (tmp_path / "results/create_profile/some.csv.results.csv").read_text().splitlines()
    body = [line.split(",") for line in lines[1:]]
    assert [cells[0] for cells in body] == rows
    for cells in body:
        refused = cells[0].startswith("refuse")
        assert (cells[1], cells[2] if refused else "") == (
            ("error", NOT_QUEUED) if refused else ("success", "")
        )


def test_progress_gives_the_pace_since_the_look_before(tmp_path: Path) -> None:
    """Invariant: rows_per_second is the rows finished between two looks over the wall-clock
    time between them, whichever scheduled run made the look before (it is kept in the run's
    state), and the first look has no pace."""
    from klaviyo_leads.lead_files.assembler import (
        LOOK_EVERY_SECONDS,
        LOOK_SOONEST_SECONDS,
        check_run,
        next_look_in,
    )
    from klaviyo_leads.lead_files.bucket import RUNS_PREFIX
    from klaviyo_leads.lead_files.splitter import take_file
    from klaviyo_leads.lead_files.storage import Services

    class SomeFinished(bench.Results):
        """The first ``finished`` rows asked about have a result; the rest not yet."""

        def __init__(self) -> None:
            super().__init__("create_profile", latency=0.0)
            self.finished, self.seen = 0, list[str]()

        def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
            answer = super().batch_get_item(RequestItems)
            ((table, items),) = answer["Responses"].items()
            for item in items:
                if item["message_id"] not in self.seen:
                    self.seen.append(item["message_id"])
            answer["Responses"][table] = [
                i for i in items if self.seen.index(i["message_id"]) < self.finished
            ]
            return answer

    s3 = bench.DiskS3(tmp_path)
    key = "create_profile/paced.csv"
    s3._path(key).write_text(
        "email\n" + "\n".join(f"lead{i}@example.com" for i in range(100)) + "\n", encoding="utf-8"
    )
    table, now = SomeFinished(), [1000.0]
    services = Services(
        s3=s3,
        sqs=bench.LatentSqs(latency=0.0),
        dynamodb=table,
        queue_urls={"create_profile": "queue"},
        results_table="results",
        wall=lambda: now[0],
    )
    state = f"{RUNS_PREFIX}{take_file(services, 'bucket', key).run_id}"
    state += "/state.json"
    table.finished = 40
    first = check_run(services, "bucket", state)
    assert (first["done"], first["rows_per_second"]) == (40, None)
    table.finished, now[0] = 70, 1010.0
    second = check_run(services, "bucket", state)
    assert (second["done"], second["rows_per_second"]) == (70, 3.0)
    assert next_look_in([second]) == LOOK_EVERY_SECONDS  # 30 left: 10 s
    table.finished, now[0] = 98, 1014.0
    third = check_run(services, "bucket", state)
    assert third["rows_per_second"] == 7.0
    assert next_look_in([third]) == LOOK_SOONEST_SECONDS  # 2 left
