"""A deployed stack updates in place: every logical id it has keeps its type.

CloudFormation replaces a resource whose logical id changes (a new queue, its messages left
behind in the old one, which is deleted) and refuses a changed type. data/logical_ids.json
holds the ids and types of the stack as it was deployed before template.yaml was rendered
from stack/, captured once; resources added since (new actions) are free to appear.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from devtools.aws import load_template, sam_translate
from tests.template.cfn_template import TEMPLATE

DEPLOYED = json.loads((Path(__file__).parent / "data" / "logical_ids.json").read_text())
# A layer version and an API deployment get a new id, by design, when their content changes.
HASHED = re.compile(r"^(SharedLayer|ApiDeployment)[0-9a-f]{10}$")


def kept(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """What is missing from ``now`` or has another type there."""
    return [
        f"{logical_id}: {kind} -> {now.get(logical_id, 'missing')}"
        for logical_id, kind in before.items()
        if now.get(logical_id) != kind
    ]


def ids_of(template: dict[str, Any]) -> dict[str, str]:
    return {HASHED.sub(r"\1*", k): v["Type"] for k, v in template["Resources"].items()}


def test_template_keeps_every_deployed_resource(sam_template: dict[str, Any]) -> None:
    assert not kept(DEPLOYED["resources"], ids_of(sam_template))


def test_translated_template_keeps_every_deployed_resource(translated: dict[str, Any]) -> None:
    """SAM's own resources (event source mappings, rules, permissions, stage) count too."""
    assert not kept(DEPLOYED["translated_resources"], ids_of(translated))


def test_template_keeps_every_output(sam_template: dict[str, Any]) -> None:
    """Scripts and other stacks read the outputs by name (docs/deploying.md)."""
    assert set(DEPLOYED["outputs"]) <= set(sam_template["Outputs"])


def test_a_renamed_resource_is_caught(tmp_path: Path) -> None:
    template = load_template(TEMPLATE)
    resources = template["Resources"]
    resources["CreateProfileWorkQueue"] = resources.pop("CreateProfileQueue")
    resources["GetProfilesLogGroup"]["Type"] = "AWS::Logs::LogStream"
    missing = kept(DEPLOYED["translated_resources"], ids_of(sam_translate(template)))
    assert missing == [
        "CreateProfileQueue: AWS::SQS::Queue -> missing",
        "GetProfilesLogGroup: AWS::Logs::LogGroup -> AWS::Logs::LogStream",
    ]
