"""The mirror function hears of the uploads that can be mirror files, and may change lists only
through Klaviyo: it reads files, writes reports, and has no queue, bus or table to write to."""

from __future__ import annotations

from typing import Any

from tests.template.cfn_template import as_list, resources_of_type, statements


def test_the_mirror_hears_of_mirror_and_add_to_list_uploads(translated: dict[str, Any]) -> None:
    (rule,) = [
        rule
        for rule in resources_of_type(translated, "AWS::Events::Rule").values()
        if rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["MirrorFunction", "Arn"]}
    ]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"] == {"name": [{"Ref": "LeadFilesBucket"}]}
    prefixes = {item["prefix"] for item in pattern["detail"]["object"]["key"]}
    assert prefixes == {
        "mirror/",
        "dry-run/mirror/",
        "add_profile_to_list/",
        "dry-run/add_profile_to_list/",
    }


def test_the_removal_cap_is_a_parameter_of_20_percent(translated: dict[str, Any]) -> None:
    function = translated["Resources"]["MirrorFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["MIRROR_MAX_REMOVAL_PERCENT"] == {"Ref": "MirrorMaxRemovalPercent"}
    assert translated["Parameters"]["MirrorMaxRemovalPercent"]["Default"] == 20


def test_the_mirror_role_writes_only_reports_and_its_dead_letters(
    translated: dict[str, Any],
) -> None:
    role = translated["Resources"]["MirrorFunctionRole"]["Properties"]
    (policy,) = role["Policies"]
    granted = {
        action
        for entry in statements(policy["PolicyDocument"])
        for statement in (entry["Fn::If"][1:2] if "Fn::If" in entry else [entry])
        for action in as_list(statement["Action"])
    }
    writes = {a for a in granted if not a.startswith(("logs:", "xray:", "kms:"))}
    assert writes == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
    }
