"""The lead-files part of the stack, on the translated template (moto's CloudFormation builds
the bucket with its encryption only, and skips the bucket policy): the bucket keeps leads
private and for a bounded time, the splitter hears of every new object, and each function may
touch only what its step needs."""

from __future__ import annotations

from typing import Any

from tests.template.cfn_template import ACTIONS, as_list, resources_of_type, statements


def properties(translated: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return translated["Resources"][logical_id]["Properties"]  # type: ignore[no-any-return]


def bucket_keys(pattern: str) -> dict[str, str]:
    return {"Fn::Sub": f"${{LeadFilesBucket.Arn}}/{pattern}"}


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


def test_the_bucket_logs_every_access_to_a_private_bucket_of_its_own(
    translated: dict[str, Any],
) -> None:
    logging = properties(translated, "LeadFilesBucket")["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "LeadFilesAccessLogBucket"}
    logs = translated["Resources"]["LeadFilesAccessLogBucket"]
    assert logs["DeletionPolicy"] == "Retain" and "LoggingConfiguration" not in logs["Properties"]
    assert logs["Properties"]["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"]
    (rule,) = logs["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"  # log delivery's
    policy = properties(translated, "LeadFilesAccessLogBucketPolicy")
    delivery, tls = statements(policy["PolicyDocument"])
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == {
        "Fn::Sub": f"${{LeadFilesAccessLogBucket.Arn}}/{logging['LogFilePrefix']}*"
    }
    assert delivery["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    assert tls["Effect"] == "Deny" and tls["Condition"]["Bool"] == {"aws:SecureTransport": "false"}


def test_the_splitters_dead_letter_queue_takes_only_its_rules_events(
    translated: dict[str, Any],
) -> None:
    policy = properties(translated, "LeadFileDeadLetterQueuePolicy")["PolicyDocument"]
    (statement,) = statements(policy)
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": {"Fn::GetAtt": ["LeadFileSplitterFunctionFileCreated", "Arn"]}
        }
    }
    assert "LeadFileSplitterFunctionFileCreated" in translated["Resources"]


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
    assert pattern["detail"]["bucket"] == {"name": [{"Ref": "LeadFilesBucket"}]}
    # Every key but the stack's own outputs (lead_files.RESULTS_PREFIX).
    from klaviyo_leads.lead_files.bucket import RESULTS_PREFIX

    assert pattern["detail"]["object"] == {"key": [{"anything-but": {"prefix": RESULTS_PREFIX}}]}
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
    files = granted["ReadFiles"]
    assert set(files["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    assert files["Resource"] == [
        *(bucket_keys(f"{action.name}/*") for action in ACTIONS),
        bucket_keys("dry-run/*"),
        bucket_keys("results/.lead-files/*"),
    ]
    assert granted["WriteReports"] == {
        "Sid": "WriteReports",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": bucket_keys("results/*"),
    }
    actions = {a for s in granted.values() for a in as_list(s["Action"])}
    assert not any(a.endswith("*") or a.startswith(("dynamodb:", "s3:Delete")) for a in actions)


def test_the_splitter_has_a_reserved_concurrency_set_by_a_parameter(
    sam_template: dict[str, Any], translated: dict[str, Any]
) -> None:
    """Invariant: however many files are uploaded at once, the splitter never takes more than
    its share of the account's concurrency from the action functions."""
    function = properties(translated, "LeadFileSplitterFunction")
    assert function["ReservedConcurrentExecutions"] == {
        "Ref": "LeadFileSplitterReservedConcurrency"
    }
    parameter = sam_template["Parameters"]["LeadFileSplitterReservedConcurrency"]
    assert parameter["MinValue"] >= 1 and parameter["Default"] >= 1


def test_a_run_the_assembler_fails_sets_off_an_alarm(translated: dict[str, Any]) -> None:
    from klaviyo_leads.lead_files.assembler import RUNS_FAILED_METRIC

    alarm = properties(translated, "LeadFileRunsFailedAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("KlaviyoLeadActions", RUNS_FAILED_METRIC)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "klaviyo-lead-actions"}]
    assert alarm["Threshold"] == 0 and alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


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
    # It writes and deletes only under results/ (deletes only the runs' state), whatever a
    # run's state names, and lists only the runs.
    assert granted["ListRuns"]["Condition"] == {
        "StringLike": {"s3:prefix": "results/.lead-files/runs/*"}
    }
    assert granted["ReadFiles"]["Resource"] == [
        *(bucket_keys(f"{action.name}/*") for action in ACTIONS),
        bucket_keys("results/.lead-files/*"),
    ]
    assert set(granted["WriteResults"]["Action"]) == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert granted["WriteResults"]["Resource"] == bucket_keys("results/*")
    assert granted["CloseRuns"]["Action"] == "s3:DeleteObject"
    assert granted["CloseRuns"]["Resource"] == bucket_keys("results/.lead-files/runs/*")
    s3_grants = [
        s for s in granted.values() if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]
    assert {s["Sid"] for s in s3_grants} == {"ListRuns", "ReadFiles", "WriteResults", "CloseRuns"}
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
