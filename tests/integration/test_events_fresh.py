"""events/ is what ``python -m devtools.events`` writes, and every file is a valid event."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    EventBridgeModel,
    SqsModel,
)

from devtools import events as samples
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.lead.body import flatten
from klaviyo_leads.triggers.dispatch import event_kind

EVENT_FILES = sorted(samples.EVENTS_DIR.glob("*/*.json"))

KIND_BY_FILE = {
    "api-rest.json": ("api", APIGatewayProxyEventModel),
    "api-http.json": ("api", APIGatewayProxyEventV2Model),
    "api-form.json": ("api", APIGatewayProxyEventModel),
    "sqs.json": ("sqs", SqsModel),
    "eventbridge.json": ("eventbridge", EventBridgeModel),
    "eventbridge-batch.json": ("eventbridge", EventBridgeModel),
    "direct.json": ("direct", None),
    "direct-batch.json": ("direct", None),
}


def test_committed_events_are_what_the_generator_writes() -> None:
    stale = samples.differences()
    assert stale == [], f"events/ is out of date, run `python -m devtools.events`: {stale}"


def test_every_action_has_every_file() -> None:
    assert set(KIND_BY_FILE) == set(samples.FILES)
    assert {p.parent.name for p in EVENT_FILES} == set(ACTIONS)
    for action in ACTIONS:
        names = {p.name for p in EVENT_FILES if p.parent.name == action}
        assert names == set(samples.FILES), action


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert samples.main(["--dir", str(tmp_path)]) == 0
    assert samples.main(["--check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "update_profile" / "sqs.json"
    target.write_text(target.read_text().replace("crm-10042", "crm-99999"))
    (tmp_path / "update_profile" / "stray.json").write_text("{}")
    assert samples.differences(tmp_path) == ["update_profile/sqs.json", "update_profile/stray.json"]
    assert samples.main(["--check", "--dir", str(tmp_path)]) == 1


def _lead_of_api_event(event: dict[str, Any]) -> dict[str, Any]:
    body = event["body"]
    if event["isBase64Encoded"]:
        body = base64.b64decode(body).decode()
    return json.loads(body)


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_event_parses_as_its_trigger(path: Path) -> None:
    event = json.loads(path.read_text("utf-8"))
    kind, model = KIND_BY_FILE[path.name]
    assert event_kind(event) == kind
    if model is not None:
        model.model_validate(event)

    action = path.parent.name
    lead, second = samples.SAMPLE_LEADS[action]
    if path.name in ("api-rest.json", "api-http.json"):
        assert _lead_of_api_event(event) == lead
    elif path.name == "api-form.json":
        assert event["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        fields = dict(parse_qsl(event["body"]))
        expected = {
            k: ",".join(v) if isinstance(v, list) else str(v) for k, v in flatten(lead).items()
        }
        assert fields == expected
    elif path.name == "sqs.json":
        assert [json.loads(r["body"]) for r in event["Records"]] == [lead, second]
    elif path.name == "eventbridge.json":
        assert event["detail-type"] == f"{action} lead"
        assert event["detail"] == lead
    elif path.name == "eventbridge-batch.json":
        assert event["detail-type"] == f"{action} lead"
        assert event["detail"] == {"leads": [lead, second]}
    elif path.name == "direct.json":
        assert event == lead
    else:
        assert event == {"leads": [lead, second]}


def test_api_events_use_the_action_routes() -> None:
    for action in ACTIONS:
        rest = json.loads((samples.EVENTS_DIR / action / "api-rest.json").read_text())
        http = json.loads((samples.EVENTS_DIR / action / "api-http.json").read_text())
        assert rest["path"] == ACTIONS[action].route
        assert rest["requestContext"]["resourcePath"] == ACTIONS[action].route
        assert http["rawPath"] == ACTIONS[action].route


def test_sample_people_are_obviously_fake() -> None:
    text = "\n".join(p.read_text("utf-8") for p in EVENT_FILES)
    emails = set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text))
    assert emails and all(e.endswith("@example.com") for e in emails), emails
    phones = [
        value
        for leads in samples.SAMPLE_LEADS.values()
        for lead in leads
        for key, value in flatten(lead).items()
        if key == "phone_1"
    ]
    assert len({re.sub(r"\D", "", p)[-10:] for p in phones}) >= 3
    for phone in phones:
        assert re.fullmatch(r"\d{3}55501\d\d", re.sub(r"\D", "", phone)[-10:]), phone
    assert len({re.sub(r"\d", "9", p) for p in phones}) >= 4  # different US shapes


def test_samples_use_the_demo_list_and_segment() -> None:
    flat = [flatten(lead) for leads in samples.SAMPLE_LEADS.values() for lead in leads]
    assert {f["klaviyo.list_id"] for f in flat if "klaviyo.list_id" in f} == {"Y6nRLr"}
    assert {f["klaviyo.segment_id"] for f in flat if "klaviyo.segment_id" in f} == {"VIPseg"}
    nested = [lead for leads in samples.SAMPLE_LEADS.values() for lead in leads]
    assert any(isinstance(lead.get("company"), dict) for lead in nested)
    assert any(isinstance(lead.get("klaviyo"), dict) for lead in nested)
    assert any(any("." in key for key in lead) for lead in nested)


def test_readme_lists_every_file_and_action() -> None:
    readme = (samples.EVENTS_DIR / "README.md").read_text("utf-8")
    for name in samples.FILES:
        assert f"`{name}`" in readme
    for action in ACTIONS:
        assert f"`{action}/`" in readme
        assert ACTIONS[action].route in readme
