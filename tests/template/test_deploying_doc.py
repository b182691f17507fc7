"""docs/deploying.md says what the template and the bundle's calls are: the key's scopes, the
alarms a stack at rest has, and every parameter.

The scopes come from Klaviyo's OpenAPI document (``x-klaviyo-scopes`` of each operation the
bundle calls, ``klaviyo_leads.klaviyo.routes.OPERATIONS``); that check skips without the
document.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devtools.klaviyo_emulator.contract import default_spec_path
from devtools.lambda_events import ensure_layer_on_path
from tests.template.cfn_template import ROOT

GUIDE = (ROOT / "docs" / "deploying.md").read_text("utf-8")
ALARM = "AWS::CloudWatch::Alarm"


def documented_scopes() -> set[str]:
    block = re.search(r"<!-- scopes\b.*?-->(.*?)<!-- /scopes -->", GUIDE, re.S)
    assert block, "docs/deploying.md has no <!-- scopes --> table"
    return set(re.findall(r"^\| `([a-z-]+:[a-z]+)` \|", block.group(1), re.M))


def test_the_key_scopes_are_those_of_the_operations_the_bundle_calls() -> None:
    spec_path = default_spec_path()
    if not spec_path.is_file():
        pytest.skip(f"Klaviyo's OpenAPI document is not at {spec_path}")
    ensure_layer_on_path()
    from klaviyo_leads.klaviyo.routes import OPERATIONS

    spec = json.loads(spec_path.read_text("utf-8"))
    operations = {
        op["operationId"]: op
        for item in spec["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    needed: set[str] = set()
    for _, _, name in OPERATIONS:
        assert name in operations, f"{name} is not an operation of {spec_path.name}"
        needed |= set(operations[name].get("x-klaviyo-scopes") or [])
    assert {"events:write", "data-privacy:write", "segments:read"} <= needed
    assert documented_scopes() == needed


def test_costs_at_rest_count_the_alarms_the_template_has(sam_template: dict[str, Any]) -> None:
    alarms = {k: v for k, v in sam_template["Resources"].items() if v["Type"] == ALARM}
    at_rest = [k for k, v in alarms.items() if "Condition" not in v]
    costs = GUIDE.split("## Costs at rest", 1)[1]
    figure = re.search(r"(\d+) CloudWatch alarms", costs)
    assert figure, "Costs at rest gives the number of alarms"
    assert int(figure.group(1)) == len(at_rest), (
        f"docs/deploying.md says {figure.group(1)} alarms; the template has {len(at_rest)} "
        f"without a condition ({len(alarms)} in all)"
    )
    conditional = [k for k in alarms if k not in at_rest]
    assert conditional == ["ResultsWebhookDeadLetterQueueAlarm"]
    assert "A results webhook adds an alarm" in costs


def test_the_parameter_table_lists_every_parameter(sam_template: dict[str, Any]) -> None:
    listed = set(re.findall(r"^\| `([A-Za-z<>]+)` \|", GUIDE, re.M))
    per_action = re.compile(r"^[A-Z][A-Za-z]+(MaximumConcurrency|ReservedConcurrency)$")
    missing = [
        name
        for name in sam_template["Parameters"]
        if name not in listed
        and not (per_action.match(name) and f"<Action>{per_action.match(name).group(1)}" in listed)  # type: ignore[union-attr]
    ]
    assert "EnableProfileDeletion" in listed
    assert not missing, f"docs/deploying.md's parameter table lacks {missing}"
