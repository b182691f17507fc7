"""Lead-file runs on the benchmark's stand-ins (S3 on disk, SQS and DynamoDB in memory): what
the splitter and the assembler do when something goes wrong part-way.

Invariants: each run is looked at on its own (one that cannot finish is failed with its reason
and the others finish); every output key fits S3's limit.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from bench import lead_files as bench
from klaviyo_leads import observability
from klaviyo_leads.lead_files import splitter
from klaviyo_leads.lead_files.assembler import FAILING_FOR_SECONDS, SENDER_GONE_SECONDS, check_runs
from klaviyo_leads.lead_files.bucket import (
    RESULTS_PREFIX,
    RUNS_PREFIX,
    SET_ASIDE_PREFIX,
    is_own_output,
    target_of,
)
from klaviyo_leads.lead_files.splitter import SENDER_STALE_SECONDS, take_file
from klaviyo_leads.lead_files.storage import Services, put_json

BUCKET = "bucket"


class Bus:
    """PutEvents: refuses the events of files whose key has ``refuse`` in it."""

    def __init__(self, refuse: str = "\0") -> None:
        self.refuse = refuse
        self.events: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        detail = json.loads(Entries[0]["Detail"])
        if self.refuse in detail["key"]:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "AccessDeniedException"}]}
        self.events.append(detail)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def services_on(root: Path, bus: Bus | None = None, wall: Wall | None = None) -> Any:
    return Services(
        s3=bench.DiskS3(root),
        sqs=bench.LatentSqs(latency=0.0),
        dynamodb=bench.Results("create_profile", latency=0.0),
        events=bus or Bus(),
        bus_name="bus",
        queue_urls={"create_profile": "queue"},
        results_table="results",
        wall=wall or Wall(),
    )


def take(services: Any, key: str, rows: int = 3) -> str:
    """Upload a file of ``rows`` leads and split it; its state key."""
    body = "email\n" + "".join(f"lead{i}@example.com\n" for i in range(rows))
    services.s3._path(key).write_text(body, encoding="utf-8")
    report = take_file(services, BUCKET, key)
    assert report.accepted, report.problem
    return f"{RUNS_PREFIX}{report.run_id}/state.json"


def read(services: Any, key: str) -> Any:
    return json.loads((services.s3.root / key).read_text(encoding="utf-8"))


def test_a_run_that_cannot_finish_stops_no_other_and_is_failed_with_its_reason(
    tmp_path: Path,
) -> None:
    wall, bus = Wall(), Bus(refuse="refused")
    services = services_on(tmp_path, bus, wall)
    first = take(services, "create_profile/first.csv")
    refused = take(services, "create_profile/refused.csv")
    # Strays among the runs: not JSON, and JSON naming keys that are no run's outputs.
    runs = tmp_path / RUNS_PREFIX
    (runs / "garbage").mkdir(parents=True)
    (runs / "garbage/state.json").write_text("{not json")
    stray = read(services, refused) | {"run_id": "stray", "results": "create_profile/x.csv"}
    (runs / "stray").mkdir(parents=True)
    (runs / "stray/state.json").write_text(json.dumps(stray))
    last = take(services, "create_profile/last.csv")
    observability._counts.clear()

    progress = {p.get("key") or p["state"]: p for p in check_runs(services, BUCKET)}
    for key in ("create_profile/first.csv", "create_profile/last.csv"):
        assert progress[key]["finished"] and not progress[key]["failed"], progress[key]
        assert (tmp_path / f"results/{key}.results.csv").is_file()
    assert sorted(e["key"] for e in bus.events) == [
        "create_profile/first.csv",
        "create_profile/last.csv",
    ]
    assert not (tmp_path / first).exists() and not (tmp_path / last).exists()
    # The strays are set aside at once: they can never finish.
    for name in ("garbage", "stray"):
        assert not (runs / f"{name}/state.json").exists()
        assert (tmp_path / SET_ASIDE_PREFIX / f"{name}/state.json").is_file()
        assert progress[f"{RUNS_PREFIX}{name}/state.json"]["failed"]
    # The refused event: its results are written once; the event is tried again at each look.
    now = progress["create_profile/refused.csv"]
    assert now["finished"] and not now["failed"]
    assert now["problem"] == (
        "The bus did not take the 'lead file finished' event (AccessDeniedException)"
    )
    assert (
        read(services, "results/create_profile/refused.csv.progress.json")["problem"]
        == now["problem"]
    )
    assert observability._counts["LeadFileRunsFailed"] == 2

    wall.now += FAILING_FOR_SECONDS + 1
    (again,) = check_runs(services, BUCKET)
    assert again["failed"] and again["problem"] == now["problem"]
    assert read(services, "results/create_profile/refused.csv.progress.json")["failed"]
    assert not (tmp_path / refused).exists()
    assert (tmp_path / refused.replace("/runs/", "/failed/")).is_file()
    assert observability._counts["LeadFileRunsFailed"] == 3
    assert check_runs(services, BUCKET) == []


def test_a_key_near_s3s_limit_gets_its_results(tmp_path: Path) -> None:
    services = services_on(tmp_path)
    # A key S3 takes (1,020 bytes), in folders: each part within the disk's file-name limit.
    key = "create_profile/" + "folder/" * 140
    key += "x" * (1020 - len(key) - len("leads.csv")) + "leads.csv"
    assert len(key.encode()) == 1020
    take(services, key, rows=2)
    (progress,) = check_runs(services, BUCKET)
    assert progress["finished"] and not progress["failed"]
    results = progress["results"]
    assert len(results.encode()) <= 1024 and results.endswith(".results.csv")
    assert (tmp_path / results).read_text().count("success") == 2
    report = read(services, target_of(key).report_key)
    assert report["results"] == results


@pytest.fixture(autouse=True)
def _no_counts() -> Any:
    yield
    observability._counts.clear()


class Killed(BaseException):
    """The splitter's process ends here (a timeout, out of memory): no handler runs."""


class DiesAt(bench.LatentSqs):
    """SendMessageBatch that takes batches until its ``dies_at``-th call, which kills."""

    def __init__(self, dies_at: int | None) -> None:
        super().__init__(latency=0.0)
        self.dies_at = dies_at
        self.rows: list[str] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.dies_at is not None and self.calls + 1 >= self.dies_at:
            raise Killed
        self.rows += [e["MessageAttributes"]["lead_file_row"]["StringValue"] for e in Entries]
        return super().send_message_batch(QueueUrl, Entries)


def test_a_splitter_that_died_while_sending_is_resumed_by_the_retried_notification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: the run finishes with every row answered once; only the rows after the last
    checkpoint are queued again (and those are one row each, by their row key)."""
    monkeypatch.setattr(splitter, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint every batch
    wall = Wall()
    services = services_on(tmp_path, wall=wall)
    services.sqs = DiesAt(dies_at=4)
    key = "create_profile/resumed.csv"
    services.s3._path(key).write_text(
        "email\n" + "".join(f"lead{i}@example.com\n" for i in range(45)), encoding="utf-8"
    )
    with pytest.raises(Killed):
        take_file(services, BUCKET, key)
    first = services.sqs.rows
    (run,) = (tmp_path / RUNS_PREFIX).iterdir()
    state = read(services, f"{RUNS_PREFIX}{run.name}/state.json")
    assert state["sending"] and 0 < state["sent_through"] < 45
    (progress,) = check_runs(services, BUCKET)
    assert not progress["finished"]

    # A notification while the splitter still checkpoints leaves the run to it.
    def checkpointing(seconds: float) -> None:
        wall.now += seconds
        alive = state | {"heartbeat_at": wall.now}
        put_json(services.s3, BUCKET, f"{RUNS_PREFIX}{run.name}/state.json", alive)

    services.sleep = checkpointing
    services.sqs = DiesAt(dies_at=None)
    assert take_file(services, BUCKET, key).again
    assert services.sqs.rows == []

    # Lambda's retry, once the splitter is gone, sends the rest.
    wall.now += SENDER_STALE_SECONDS + 1
    assert not take_file(services, BUCKET, key).again
    again = services.sqs.rows
    assert sorted(set(first + again), key=int) == [str(n) for n in range(1, 46)]
    assert min(int(r) for r in again) == state["sent_through"] + 1
    (progress,) = check_runs(services, BUCKET)
    assert progress["finished"] and progress["by_outcome"] == {"success": 45}
    lines = (tmp_path / f"results/{key}.results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [f"lead{i}@example.com" for i in range(45)]
    # A notification after the run finished queues nothing.
    assert take_file(services, BUCKET, key).again and services.sqs.rows == again


def test_a_run_whose_splitter_is_gone_for_good_is_failed(tmp_path: Path) -> None:
    wall = Wall()
    services = services_on(tmp_path, wall=wall)
    services.sqs = DiesAt(dies_at=1)
    services.s3._path("create_profile/gone.csv").write_text("email\na@example.com\n")
    with pytest.raises(Killed):
        take_file(services, BUCKET, "create_profile/gone.csv")
    wall.now += SENDER_GONE_SECONDS + FAILING_FOR_SECONDS + 1
    check_runs(services, BUCKET)
    wall.now += FAILING_FOR_SECONDS + 1
    (progress,) = check_runs(services, BUCKET)
    assert progress["failed"] and "The splitter stopped after row 0" in progress["problem"]
    assert check_runs(services, BUCKET) == []


def test_a_row_the_manifest_names_twice_is_counted_and_answered_once(tmp_path: Path) -> None:
    """A splitter that stopped between writing a manifest segment and its state leaves rows
    that the next one writes again."""
    services = services_on(tmp_path)
    state_key = take(services, "create_profile/twice.csv", rows=4)
    state = read(services, state_key)
    segment = tmp_path / f"{state['manifest']}000000.jsonl"
    lines = segment.read_text().splitlines()
    segment.write_text("\n".join([*lines[:3], *lines[1:]]) + "\n")
    (progress,) = check_runs(services, BUCKET)
    assert progress["finished"] and progress["done"] == 4
    assert progress["by_outcome"] == {"success": 4}
    results = (tmp_path / "results/create_profile/twice.csv.results.csv").read_text()
    assert results.count("success") == 4


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b""])
def test_the_results_file_keeps_the_inputs_byte_order_mark(tmp_path: Path, bom: bytes) -> None:
    """Excel reads a CSV as UTF-8 only with the mark: the results file has it when the
    input had it, and not otherwise."""
    services = services_on(tmp_path)
    services.s3._path("create_profile/marked.csv").write_bytes(bom + b"email\na@example.com\n")
    take_file(services, BUCKET, "create_profile/marked.csv")
    (progress,) = check_runs(services, BUCKET)
    body = (tmp_path / progress["results"]).read_bytes()
    assert body.startswith(bom + b"email,outcome,")
    assert body.count(b"\xef\xbb\xbf") == len(bom) // 3


class FormulaReference(bench.Results):
    """Results whose reference Klaviyo sends back as a formula (set so by an earlier lead)."""

    def __init__(self) -> None:
        super().__init__("create_profile", latency=0.0)
        fields = json.loads(self._item)
        self._item = json.dumps({**fields, "reference": '=HYPERLINK("http://x","y")'})


def test_formula_cells_are_neutralised_in_the_results_csv_and_counted(tmp_path: Path) -> None:
    """OWASP CSV injection: every cell (input, header, Klaviyo's values) that a spreadsheet
    would run is written after an apostrophe; plain numbers and JSON Lines are kept."""
    services = services_on(tmp_path)
    services.dynamodb = FormulaReference()
    rows = [
        'a@example.com,"=HYPERLINK(""http://evil"",""x"")",+1 415 555 0100,plain',
        "b@example.com,@SUM(A1),-12.5,\tTAB",
        "c@example.com,nothing,+1 (415) 555-0100,-cmd|' /C calc'!A0",
        "d@example.com,safe,42,fine",
    ]
    header = "email,Note,Score,=Sneaky"
    data = "\n".join([header, *rows]) + "\n"
    services.s3._path("create_profile/formulas.csv").write_text(data, encoding="utf-8")
    report = take_file(services, BUCKET, "create_profile/formulas.csv").as_json()
    assert report["formula_cells"] == {"header": True, "rows": 3, "first_rows": [1, 2, 3]}
    (progress,) = check_runs(services, BUCKET)
    assert progress["formula_rows"] == 4  # every row: its reference came back as a formula
    written = list(csv.reader(io.StringIO((tmp_path / progress["results"]).read_text())))
    assert written[0][:4] == ["email", "Note", "Score", "'=Sneaky"]
    assert [r[1:4] for r in written[1:]] == [
        ['\'=HYPERLINK("http://evil","x")', "+1 415 555 0100", "plain"],
        ["'@SUM(A1)", "-12.5", "'\tTAB"],
        ["nothing", "'+1 (415) 555-0100", "'-cmd|' /C calc'!A0"],
        ["safe", "42", "fine"],
    ]
    reference = written[0].index("reference")
    assert {r[reference] for r in written[1:]} == {'\'=HYPERLINK("http://x","y")'}

    lines = '{"email": "e@example.com", "note": "=1+2"}\n'
    services.s3._path("create_profile/formulas.jsonl").write_text(lines, encoding="utf-8")
    take_file(services, BUCKET, "create_profile/formulas.jsonl")
    (progress,) = check_runs(services, BUCKET)
    (line,) = (tmp_path / progress["results"]).read_text().splitlines()
    assert json.loads(line)["note"] == "=1+2" and json.loads(line)["reference"].startswith("=")


class Recorded(bench.DiskS3):
    """S3 on disk, noting every key written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []
        self.read: list[str] = []

    def head_object(self, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        self.read.append(Key)
        return super().head_object(Bucket, Key, **extra)

    def get_object(self, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        self.read.append(Key)
        return super().get_object(Bucket, Key, **extra)

    def put_object(self, Bucket: str, Key: str, Body: bytes, **extra: Any) -> dict[str, Any]:
        self.written.append(Key)
        return super().put_object(Bucket, Key, Body, **extra)

    def create_multipart_upload(self, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        self.written.append(Key)
        return super().create_multipart_upload(Bucket, Key, **extra)

    def copy_object(self, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        self.written.append(Key)
        return super().copy_object(Bucket, Key, **extra)


def test_nothing_the_stack_writes_starts_the_splitter_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The splitter's rule takes every new key but those under RESULTS_PREFIX (a template test
    holds it): every write of a run (report, checkpoints, progress at each look, results,
    a failed run's state) is there."""
    monkeypatch.setattr(splitter, "CHECKPOINT_SECONDS", 0.0)
    wall = Wall()
    services = services_on(tmp_path, Bus(refuse="refused"), wall)
    services.s3 = s3 = Recorded(tmp_path)
    uploads = {"create_profile/a.csv", "dry-run/create_profile/b.csv", "elsewhere/c.csv"}
    uploads |= {"create_profile/refused.csv"}
    for key in sorted(uploads):
        s3._path(key).write_text("email\na@example.com\nb@example.com\nnope\n", encoding="utf-8")
        take_file(services, BUCKET, key)
    services.dynamodb.latency = 0.0
    check_runs(services, BUCKET)
    wall.now += FAILING_FOR_SECONDS + 1
    check_runs(services, BUCKET)
    assert len(s3.written) > 10
    assert [key for key in s3.written if not key.startswith(RESULTS_PREFIX)] == []
    assert all(is_own_output(key) for key in s3.written)
    assert not any(is_own_output(key) for key in uploads)
    # The splitter reads only what its role lets it: a key under no action is only reported.
    assert "elsewhere/c.csv" not in s3.read
    assert "results/elsewhere/c.csv.report.json" in s3.written
