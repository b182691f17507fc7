"""The lead-files part of the stack, on the translated template (moto's CloudFormation builds
the bucket with its encryption only, and skips the bucket policy): the bucket keeps leads
private and for a bounded time, the splitter hears of every new object, and each function may
touch only what its step needs."""

from __future__ import annotations

from typing import Any

from tests.template.cfn_template import ACTIONS, as_list, resources_of_type, statements


def properties(translated: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return translated["Resources"][logical_id]["Properties"]  # type: ignore[no-any-return]


def role_statements(translated: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    (policy,) = properties(translated, role)["Policies"]
    found = {}
    for statement in statements(policy["PolicyDocument"]):
        if "Fn::If" in statement:  # tracing's statement, when on
            statement = statement["Fn::If"][1]
        found[statement["Sid"]] = statement
    return found


def test_the_bucket_is_encrypted_private_versioned_and_expires(
    translated: dict[str, Any],
) -> None:
    bucket = translated["Resources"]["LeadFilesBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (lifecycle,) = props["LifecycleConfiguration"]["Rules"]
    days = {"Ref": "LeadFileRetentionDays"}
    assert lifecycle["Status"] == "Enabled" and lifecycle["ExpirationInDays"] == days
    assert lifecycle["NoncurrentVersionExpiration"] == {"NoncurrentDays": days}
    assert props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }


def test_the_bucket_refuses_anything_but_tls(translated: dict[str, Any]) -> None:
    policies = resources_of_type(translated, "AWS::S3::BucketPolicy").values()
    (policy,) = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": "LeadFilesBucket"}]
    (statement,) = statements(policy["Properties"]["PolicyDocument"])
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_splitter_hears_of_every_object_created_in_the_bucket(
    translated: dict[str, Any],
) -> None:
    rules = [
        rule
        for rule in resources_of_type(translated, "AWS::Events::Rule").values()
        if rule["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
        and rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0] != "MirrorFunction"
    ]
    (rule,) = rules
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"] == {"bucket": {"name": [{"Ref": "LeadFilesBucket"}]}}
    assert "EventBusName" not in rule["Properties"]  # S3 sends to the default bus
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["LeadFileSplitterFunction", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["LeadFileDeadLetterQueue", "Arn"]}


def test_the_splitter_knows_every_action_queue_and_may_only_send_to_them(
    translated: dict[str, Any],
) -> None:
    variables = properties(translated, "LeadFileSplitterFunction")["Environment"]["Variables"]
    for action in ACTIONS:
        assert variables[f"QUEUE_URL_{action.prefix}"] == {"Ref": f"{action.prefix}Queue"}
    granted = role_statements(translated, "LeadFileSplitterFunctionRole")
    queues = granted["QueueRows"]
    assert queues["Action"] == "sqs:SendMessage"
    assert as_list(queues["Resource"]) == [
        {"Fn::GetAtt": [f"{action.prefix}Queue", "Arn"]} for action in ACTIONS
    ]
    files = granted["ReadFilesWriteReports"]
    assert set(files["Action"]) == {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"}
    assert files["Resource"] == {"Fn::Sub": "${LeadFilesBucket.Arn}/*"}
    actions = {a for s in granted.values() for a in as_list(s["Action"])}
    assert not any(a.endswith("*") or a.startswith(("dynamodb:", "s3:Delete")) for a in actions)


def test_the_assembler_reads_results_and_only_looks_at_dead_letters(
    translated: dict[str, Any],
) -> None:
    function = properties(translated, "LeadFileAssemblerFunction")
    assert function["ReservedConcurrentExecutions"] == 1
    variables = function["Environment"]["Variables"]
    for action in ACTIONS:
        assert variables[f"DEAD_LETTER_QUEUE_URL_{action.prefix}"] == {
            "Ref": f"{action.prefix}DeadLetterQueue"
        }
    granted = role_statements(translated, "LeadFileAssemblerFunctionRole")
    assert granted["ReadResults"]["Action"] == "dynamodb:BatchGetItem"
    assert granted["ReadResults"]["Resource"] == {"Fn::GetAtt": ["ResultsTable", "Arn"]}
    assert granted["LookAtDeadLetters"]["Action"] == "sqs:ReceiveMessage"  # no DeleteMessage
    assert granted["AnnounceFinishedFiles"]["Resource"] == {
        "Fn::GetAtt": ["ResultsEventBus", "Arn"]
    }
    schedules = [
        rule
        for rule in resources_of_type(translated, "AWS::Events::Rule").values()
        if rule["Properties"].get("ScheduleExpression")
    ]
    (schedule,) = schedules
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    (target,) = schedule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["LeadFileAssemblerFunction", "Arn"]}
