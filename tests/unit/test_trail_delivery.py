"""The trail writer (what CloudWatch Logs' subscription hands it, into the bucket's layout), the
Athena table it feeds (the stack's), and the named queries, run by DuckDB on its files."""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from devtools import trail as local_trail
from devtools.aws import load_template
from klaviyo_leads.handlers import trail as trail_writer
from klaviyo_leads.outcomes import INVALID_EMAIL, THROTTLED, success
from klaviyo_leads.trail import delivery as trail_delivery
from klaviyo_leads.trail.records import COLUMNS, VERSION, Arrival, Trail
from stack.render import load_actions
from tests.template.cfn_template import ROOT

TEMPLATE = load_template(ROOT / "template.yaml")


def subscription_event(batch: dict[str, Any]) -> dict[str, Any]:
    """What CloudWatch Logs sends a subscribed Lambda function."""
    data = base64.b64encode(gzip.compress(json.dumps(batch).encode())).decode()
    return {"awslogs": {"data": data}}


def batch(*messages: str, stream: str = "2026/12/07/[$LATEST]abc") -> dict[str, Any]:
    return {
        "messageType": "DATA_MESSAGE",
        "logGroup": "/aws/lambda/stack-create-profile",
        "logStream": stream,
        "subscriptionFilters": ["trail"],
        "logEvents": [
            {"id": f"3{i:055d}", "timestamp": 0, "message": m} for i, m in enumerate(messages)
        ],
    }


def record(action: str, day: str, **fields: Any) -> str:
    return json.dumps({"trail": VERSION, "action": action, "day": day, **fields})


class S3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **kwargs: Any) -> None:
        self.objects[Key] = Body


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def test_the_writer_files_a_batch_by_action_and_day_gzipped(monkeypatch):
    s3 = S3()
    monkeypatch.setenv("TRAIL_BUCKET", "trail-bucket")
    event = subscription_event(
        batch(
            record("create_profile", "2026-12-07", event="received"),
            "START RequestId: 1 Version: $LATEST",  # not a record: skipped
            record("create_profile", "2026-12-07", event="attempt"),
            record("create_profile", "2026-12-08", event="received"),
            json.dumps({"trail": 99, "action": "create_profile"}),  # another shape: skipped
        )
    )
    assert trail_writer.lambda_handler(event, None, s3=lambda: s3) == {"objects": 2}
    keys = sorted(s3.objects)
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        "trail/action=create_profile/day=2026-12-07",
        "trail/action=create_profile/day=2026-12-08",
    ]
    assert [r["event"] for r in lines(s3.objects[keys[0]])] == ["received", "attempt"]
    # A retried batch writes the same objects again, not a second copy.
    again = S3()
    trail_writer.lambda_handler(event, None, s3=lambda: again)
    assert again.objects == s3.objects


def test_values_that_cannot_name_a_folder_go_under_unknown():
    objects = trail_delivery.objects_of(
        batch(record("../../etc", "yesterday"), record("Create Profile", "2026-12-07"))
    )
    assert [k.rsplit("/", 1)[0] for k in sorted(objects)] == [
        "trail/action=unknown/day=2026-12-07",
        "trail/action=unknown/day=unknown",
    ]


def test_a_control_message_files_nothing():
    control = {**batch(record("get_profiles", "2026-12-07")), "messageType": "CONTROL_MESSAGE"}
    assert trail_delivery.objects_of(control) == {}


# -- the stack's table and queries ------------------------------------------------------------


def resources(kind: str) -> dict[str, Any]:
    return {k: v for k, v in TEMPLATE["Resources"].items() if v["Type"] == kind}


def test_the_athena_table_has_the_records_columns_and_every_actions_partition():
    (table,) = resources("AWS::Glue::Table").values()
    table_input = table["Properties"]["TableInput"]
    columns = table_input["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == list(COLUMNS)
    assert [p["Name"] for p in table_input["PartitionKeys"]] == ["action", "day"]
    projected = table_input["Parameters"]["projection.action.values"].split(",")
    assert projected == [a.name for a in load_actions()]


def test_every_actions_log_group_feeds_the_writer_with_the_trail_lines_only():
    subscriptions = resources("AWS::Logs::SubscriptionFilter")
    fed = {s["Properties"]["LogGroupName"]["Ref"] for s in subscriptions.values()}
    assert fed == {f"{a.prefix}LogGroup" for a in load_actions()}
    for subscription in subscriptions.values():
        assert subscription["Properties"]["FilterPattern"] == f"{{ $.trail = {VERSION} }}"
        assert subscription["Properties"]["DestinationArn"] == {
            "Fn::GetAtt": ["TrailWriterFunction", "Arn"]
        }


# -- the named queries, on DuckDB ------------------------------------------------------------


@pytest.fixture
def trail_files(tmp_path: Path) -> Path:
    pytest.importorskip("duckdb")
    local = local_trail.LocalTrail(directory=tmp_path)
    seconds = itertools.count(1_796_000_000)  # a record a second, from 2026-11-29
    for pii in ("hashed", "lead"):
        trail = Trail(pii, "vendor", write=local.writer("create-profile"))
        trail.wall = lambda: float(next(seconds))
        email = f"{pii}@example.com"
        lead = {"email": email, "phone_1": "512 555 0100", "vendor": "acme"}
        first = trail.start("create_profile", Arrival("sqs", "m-1"), lead, lead_key=f"k-{pii}")
        first.end(THROTTLED(), 0.1)
        second = trail.start("create_profile", Arrival("sqs", "m-1"), lead, lead_key=f"k-{pii}")
        second.end(success({"type": "profile", "id": f"P-{pii}"}), 0.2)
        # A lead whose only attempt was handed back.
        other = {"email": f"lost-{pii}@example.com", "vendor": "other"}
        trail.start("create_profile", Arrival("api"), other, lead_key=f"lost-{pii}").end(
            THROTTLED(), 0.1
        )
        bad = {"email": "not an email", "vendor": "acme"}
        trail.start("create_profile", Arrival("api"), bad, lead_key=f"bad-{pii}").end(
            INVALID_EMAIL(), 0.0
        )
    local.flush()
    return tmp_path


def query(directory: Path, name: str, *parameters: Any) -> list[dict[str, Any]]:
    names, rows = local_trail.run(directory, local_trail.named_queries()[name], parameters)
    return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.mark.parametrize("pii", ["hashed", "lead"])
def test_a_leads_history_by_email_or_phone_in_both_modes(trail_files, pii):
    by_email = query(trail_files, "lead-history-by-email", f" {pii.upper()}@Example.com")
    assert [r["event"] for r in by_email] == ["received", "attempt"] * 2
    assert [r["final"] for r in by_email if r["event"] == "attempt"] == [False, True]
    assert by_email[-1]["profile_id"] == f"P-{pii}"
    by_phone = query(trail_files, "lead-history-by-phone", local_trail.as_e164("(512) 555-0100"))
    assert {r["lead_key"] for r in by_phone} == {"k-hashed", "k-lead"}


def test_outcomes_by_reason_per_day_count_final_results(trail_files):
    rows = query(trail_files, "outcomes-by-reason-per-day")
    counted = {(r["outcome"], r["reason"]): r["leads"] for r in rows}
    assert counted == {("success", None): 2, ("failure", "Invalid email address"): 2}


def test_leads_without_a_final_result_are_those_only_handed_back(trail_files):
    rows = query(trail_files, "leads-without-a-final-result")
    assert sorted(r["lead_key"] for r in rows) == ["lost-hashed", "lost-lead"]
    assert rows[0]["attempts"] == 1


def test_a_vendors_leads(trail_files):
    rows = query(trail_files, "leads-of-a-vendor", "acme")
    assert sorted(r["lead_key"] for r in rows) == ["bad-hashed", "bad-lead", "k-hashed", "k-lead"]
    assert query(trail_files, "leads-of-a-vendor", "nobody") == []


def test_an_empty_trail_answers_with_no_rows(tmp_path):
    pytest.importorskip("duckdb")
    assert query(tmp_path, "outcomes-by-reason-per-day") == []
