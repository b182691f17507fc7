"""The lead trail through the local stack: every path's leads land in the trail bucket, filed by
the trail writer's code by action and day, and the stack's own Athena queries answer on them
with DuckDB (``make trail``), in both PII modes; a trail that cannot be filed fails no lead."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("duckdb")

from devtools import lambda_events as le
from devtools import lead_file_import as imports
from devtools import trail as local_trail
from devtools.sandbox import Sandbox

pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
ACTION = "get_profiles"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(trail_dir=tmp_path_factory.mktemp("trail")) as box:
        yield box


def history(sandbox: Sandbox, email: str) -> list[dict[str, Any]]:
    """The stack's own "lead-history-by-email" query, on the local trail."""
    sql = local_trail.named_queries()[local_trail.EMAIL_QUERY]
    assert sandbox.trail_dir is not None
    names, rows = local_trail.run(sandbox.trail_dir, sql, [email])
    return [dict(zip(names, row, strict=True)) for row in rows]


def every_path(sandbox: Sandbox, lead: dict[str, Any], tmp_path: Path) -> None:
    body = json.dumps(lead)
    assert sandbox.call_api(ACTION, body).status == 422  # nobody has that email yet
    sandbox.call_async_api(ACTION, body.encode())
    sandbox.process_queue(ACTION)
    detail = {"leads": [lead]}
    sandbox.invoke(ACTION, le.eventbridge_event(f"{ACTION} lead", detail, source="crm"))
    sandbox.invoke(ACTION, lead)
    path = tmp_path / "leads.csv"
    path.write_text(f"email,first_name\n{lead['email']},{lead['first_name']}\n")
    code, _, _ = imports.import_file(sandbox, path, ACTION, out=lambda line: None)
    assert code == 0


def test_every_paths_leads_are_in_the_trail_with_their_final_attempts(sandbox, tmp_path):
    email = "Every.Path@Example.com"
    every_path(sandbox, {"email": email, "first_name": "Ev"}, tmp_path)
    rows = history(sandbox, " every.path@example.com ")  # the query normalises, then hashes
    by_path: dict[str, set[str]] = {}
    for row in rows:
        by_path.setdefault(row["path"], set()).add(row["event"])
    assert set(by_path) == {"api", "sqs", "eventbridge", "direct"}
    assert all(events == {"received", "attempt"} for events in by_path.values())
    keys = {row["lead_key"] for row in rows}
    assert len(keys) == 5  # webhook, /async, event, direct, lead-file row
    final = [row for row in rows if row["event"] == "attempt" and row["final"]]
    assert {row["lead_key"] for row in final} == keys
    assert all(row["outcome"] == "failure" and row["reason"] == "No profile found" for row in final)
    assert all(c["operation"] == "get_profiles" for row in final for c in row["calls"])
    (file_row,) = [row for row in rows if row["lead_file"] and row["event"] == "received"]
    assert file_row["lead_row"] == 1 and file_row["path"] == "sqs"
    # Hashed (the stack's default): no lead data in any record.
    assert all(row_lead is None for row_lead in lead_column(sandbox))
    # Filed in the stack's trail bucket as the writer lays it out.
    s3 = sandbox_s3(sandbox)
    bucket = sandbox.stack().physical_ids["TrailBucket"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"trail/action={ACTION}/day=")
    assert listed.get("KeyCount", 0) > 0


def lead_column(sandbox: Sandbox) -> list[Any]:
    assert sandbox.trail_dir is not None
    return [row[0] for row in local_trail.run(sandbox.trail_dir, "SELECT lead FROM lead_trail")[1]]


def sandbox_s3(sandbox: Sandbox) -> Any:
    from devtools.aws import client

    return client("s3", sandbox.stack().endpoint_url)


def test_a_leads_history_by_email_in_the_whole_lead_mode(sandbox, monkeypatch):
    monkeypatch.setitem(os.environ, "TRAIL_PII", "lead")
    sandbox._fresh_container()  # a parameter change reaches new containers
    try:
        lead = {"email": "whole@example.com", "first_name": "Wh"}
        sandbox.call_api(ACTION, json.dumps(lead))
        rows = history(sandbox, "WHOLE@example.com")
        assert [row["event"] for row in rows] == ["received", "attempt"]
        _, kept = local_trail.run(
            sandbox.trail_dir,  # type: ignore[arg-type]
            "SELECT lead FROM lead_trail WHERE lead_key = ?",
            [rows[0]["lead_key"]],
        )
        assert [json.loads(value) for (value,) in kept] == [lead, lead]
    finally:
        monkeypatch.undo()
        sandbox._fresh_container()


def test_a_trail_that_cannot_be_filed_fails_no_lead(sandbox):
    class Down:
        def put_object(self, **kwargs: Any) -> None:
            raise ConnectionError("S3 is down")

    assert sandbox.trail is not None
    saved = sandbox.trail.s3, sandbox.trail.directory
    sandbox.trail.s3, sandbox.trail.directory = Down(), None
    try:
        lead = {"email": "down@example.com", "first_name": "Do"}
        answer = sandbox.call_api(ACTION, json.dumps(lead))
        assert answer.status == 422 and answer.json()["reason"] == "No profile found"
        assert sandbox.trail.failed > 0
    finally:
        sandbox.trail.s3, sandbox.trail.directory = saved
