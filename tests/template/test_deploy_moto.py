"""The deployment check that runs without an AWS account.

`sam deploy` = SAM's transform + CloudFormation. ``devtools.aws.deploy_local_stack`` runs SAM's
own translator on template.yaml and has moto's CloudFormation create the stack; these tests
read the wiring back through the AWS APIs: which queue feeds which function, where a failed
message goes, which ARNs each role may touch. One test per property, over every action.

What moto cannot build (``MOTO_CANNOT_BUILD``) or builds without looking at (``MOTO_SKIPS``,
and the table's time to live) is checked on the translated template in
test_template_invariants.py.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest

from devtools.aws import (
    ACCOUNT_ID,
    MOTO_CANNOT_BUILD,
    MOTO_SKIPS,
    LocalStack,
    client,
    lambda_environment,
)
from tests.template.cfn_template import ACTIONS, ROOT, Action, as_list, created, statements
from tests.template.conftest import KMS_KEY_ARN, OPTIONS, OWN_CONCURRENCY

# moto warns about every resource type it skips; MOTO_SKIPS lists them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")

DEAD_LETTER_RETENTION = 1_209_600  # 14 days, the SQS maximum (docs/deploying.md promises it)


def default(template: dict[str, Any], parameter: str) -> int:
    return int(template["Parameters"][parameter]["Default"])


def queue_attributes(url: str) -> dict[str, str]:
    attributes = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return attributes["Attributes"]  # type: ignore[no-any-return]


def role_statements(stack: LocalStack, logical_id: str) -> list[dict[str, Any]]:
    iam = client("iam")
    role_name = stack.physical_ids[logical_id]
    found = []
    for policy_name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        policy = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        if isinstance(policy, str):  # moto stores a CloudFormation role's policy as a repr
            policy = ast.literal_eval(policy)
        # moto keeps an AWS::NoValue list item as None; CloudFormation drops it.
        found += [s for s in statements(policy) if s is not None]
    return found


def function_arn(stack: LocalStack, action: Action) -> str:
    name = stack.actions[action.name].function_name
    return client("lambda").get_function_configuration(FunctionName=name)["FunctionArn"]  # type: ignore[no-any-return]


# --- What moto built ----------------------------------------------------------------------------


def test_moto_builds_all_but_the_known_types(stack: LocalStack, translated: dict[str, Any]) -> None:
    pages = client("cloudformation").get_paginator("list_stack_resources")
    listed = [r for p in pages.paginate(StackName=stack.name) for r in p["StackResourceSummaries"]]
    # moto records a resource it skips, or whose condition is false, with neither type nor
    # logical id: count them.
    skipped = [r for r in listed if not r["ResourceType"]]
    resources = translated["Resources"].values()
    kept = created(translated, {}).values()
    off = len(resources) - len(kept)
    assert off > 0  # the results webhook is off by default
    assert len(skipped) == sum(1 for r in kept if r["Type"] in MOTO_SKIPS) + off
    built = {r["ResourceType"] for r in listed if r["ResourceType"]}
    assert {r["Type"] for r in resources} >= MOTO_SKIPS | MOTO_CANNOT_BUILD
    assert built == {r["Type"] for r in kept} - MOTO_SKIPS - MOTO_CANNOT_BUILD


# --- Queues -------------------------------------------------------------------------------------


def test_each_queue_feeds_its_function_with_partial_batch_responses(
    stack: LocalStack, sam_template: dict[str, Any]
) -> None:
    lambda_ = client("lambda")
    for action in ACTIONS:
        resources = stack.actions[action.name]
        mappings = lambda_.list_event_source_mappings(FunctionName=resources.function_name)
        (mapping,) = mappings["EventSourceMappings"]
        assert mapping["EventSourceArn"] == resources.queue.arn, action.name
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], action.name
        assert mapping["BatchSize"] == default(sam_template, action.batch_size), action.name
        window = default(sam_template, "MaximumBatchingWindowInSeconds")
        assert mapping["MaximumBatchingWindowInSeconds"] == window, action.name
        concurrency = default(sam_template, "MaximumConcurrency")
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}, action.name


def test_each_queue_redrives_to_its_own_dead_letter_queue(
    stack: LocalStack, sam_template: dict[str, Any]
) -> None:
    sqs = client("sqs")
    max_receives = default(sam_template, "MaxReceiveCount")
    dead_letter_queues = set()
    for action in ACTIONS:
        resources = stack.actions[action.name]
        redrive = json.loads(queue_attributes(resources.queue.url)["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == resources.dead_letter_queue.arn, action.name
        assert int(redrive["maxReceiveCount"]) == max_receives, action.name
        dead_letter_queues.add(resources.dead_letter_queue.arn)

        # The stack is shared with other tests, which may have left messages on its queues.
        sqs.purge_queue(QueueUrl=resources.queue.url)
        sqs.purge_queue(QueueUrl=resources.dead_letter_queue.url)
        # A lead handed back on every delivery ends up in the dead-letter queue, intact.
        sqs.send_message(QueueUrl=resources.queue.url, MessageBody='{"email": "a@example.com"}')
        for _ in range(max_receives):
            got = sqs.receive_message(QueueUrl=resources.queue.url, VisibilityTimeout=0)
            assert len(got["Messages"]) == 1, action.name
        assert "Messages" not in sqs.receive_message(QueueUrl=resources.queue.url)
        (dead,) = sqs.receive_message(QueueUrl=resources.dead_letter_queue.url)["Messages"]
        assert dead["Body"] == '{"email": "a@example.com"}'
        sqs.delete_message(
            QueueUrl=resources.dead_letter_queue.url, ReceiptHandle=dead["ReceiptHandle"]
        )
    assert len(dead_letter_queues) == len(ACTIONS)


def test_dead_letters_are_kept_14_days_and_go_nowhere(stack: LocalStack) -> None:
    for action in ACTIONS:
        resources = stack.actions[action.name]
        for queue in (resources.dead_letter_queue, resources.event_dead_letter_queue):
            attributes = queue_attributes(queue.url)
            assert int(attributes["MessageRetentionPeriod"]) == DEAD_LETTER_RETENTION, queue.name
            assert "RedrivePolicy" not in attributes, queue.name


def test_every_queue_is_encrypted(stack: LocalStack) -> None:
    for action in ACTIONS:
        resources = stack.actions[action.name]
        for queue in (
            resources.queue,
            resources.dead_letter_queue,
            resources.event_dead_letter_queue,
        ):
            assert queue_attributes(queue.url)["SqsManagedSseEnabled"] == "true", queue.name


# --- The bus ------------------------------------------------------------------------------------


def test_each_actions_lead_events_invoke_its_function_with_a_dead_letter_queue(
    stack: LocalStack,
) -> None:
    events = client("events")
    for action in ACTIONS:
        rule = stack.physical_ids[action.rule].split("|")[-1]
        pattern = events.describe_rule(Name=rule, EventBusName=stack.event_bus_name)["EventPattern"]
        assert json.loads(pattern) == {"detail-type": [f"{action.name} lead"]}, action.name
        targets = events.list_targets_by_rule(Rule=rule, EventBusName=stack.event_bus_name)
        (target,) = targets["Targets"]
        assert target["Arn"] == function_arn(stack, action), action.name
        dead_letters = stack.actions[action.name].event_dead_letter_queue.arn
        assert target["DeadLetterConfig"]["Arn"] == dead_letters, action.name
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1, action.name


# --- Permissions --------------------------------------------------------------------------------


def table_arn(name: str) -> str:
    return client("dynamodb").describe_table(TableName=name)["Table"]["TableArn"]  # type: ignore[no-any-return]


def log_group_arn(stack: LocalStack, function_name: str) -> str:
    return f"arn:aws:logs:{stack.region}:{ACCOUNT_ID}:log-group:/aws/lambda/{function_name}:*"


def test_each_function_role_reaches_only_its_own_resources(stack: LocalStack) -> None:
    events, iam = client("events"), client("iam")
    bus_arn = events.describe_event_bus(Name=stack.event_bus_name)["Arn"]
    for action in ACTIONS:
        resources = stack.actions[action.name]
        granted = {s["Sid"]: s for s in role_statements(stack, action.role)}
        assert {sid: s["Resource"] for sid, s in granted.items()} == {
            "WriteOwnLogs": log_group_arn(stack, resources.function_name),
            "ConsumeOwnQueue": resources.queue.arn,
            "RetryOnOwnQueue": resources.queue.arn,
            "DeadLetterFailedEvents": resources.event_dead_letter_queue.arn,
            "ReadKlaviyoKey": stack.secret_arn,
            "PublishResults": bus_arn,
            "IdempotencyRecords": table_arn(stack.table_name),
            "KeepResults": table_arn(stack.results_table_name),
        }, action.name
        assert granted["ReadKlaviyoKey"]["Action"] == "secretsmanager:GetSecretValue"
        assert sorted(as_list(granted["ConsumeOwnQueue"]["Action"])) == [
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ]
        # Handed-back records' visibility (the batch call is authorised by this action) and
        # retryable leads put on the queue; nothing else on it, nothing on any other queue.
        assert sorted(as_list(granted["RetryOnOwnQueue"]["Action"])) == [
            "sqs:ChangeMessageVisibility",
            "sqs:SendMessage",
        ]
        # Results are written (one item, or a coalesced batch), never read back or deleted.
        assert sorted(as_list(granted["KeepResults"]["Action"])) == [
            "dynamodb:BatchWriteItem",
            "dynamodb:PutItem",
        ]
        attached = iam.list_attached_role_policies(RoleName=stack.physical_ids[action.role])
        assert attached["AttachedPolicies"] == [], action.name


def test_get_result_may_only_read_the_results_table(stack: LocalStack) -> None:
    granted = {s["Sid"]: s for s in role_statements(stack, "GetResultFunctionRole")}
    assert {sid: (s["Action"], s["Resource"]) for sid, s in granted.items()} == {
        "WriteOwnLogs": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            log_group_arn(stack, stack.get_result_function_name),
        ),
        "ReadResults": ("dynamodb:GetItem", table_arn(stack.results_table_name)),
    }
    role_name = stack.physical_ids["GetResultFunctionRole"]
    assert client("iam").list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []


def test_key_decryption_and_tracing_are_granted_only_when_switched_on(
    options_stack: LocalStack,
) -> None:
    for action in ACTIONS:
        granted = {s["Sid"]: s for s in role_statements(options_stack, action.role)}
        decrypt = granted["DecryptKlaviyoKey"]
        assert (decrypt["Action"], decrypt["Resource"]) == ("kms:Decrypt", KMS_KEY_ARN)
        via = decrypt["Condition"]["StringEquals"]["kms:ViaService"]
        assert via == f"secretsmanager.{options_stack.region}.amazonaws.com"
        # X-Ray has no resources to scope to.
        assert granted["WriteTraces"]["Resource"] == "*"
    traced = {s["Sid"] for s in role_statements(options_stack, "GetResultFunctionRole")}
    assert traced == {"WriteOwnLogs", "ReadResults", "WriteTraces"}


def test_each_function_is_invoked_only_by_its_route_and_its_rule(stack: LocalStack) -> None:
    lambda_, events = client("lambda"), client("events")
    api_id = stack.physical_ids["Api"]
    execute_api = f"arn:aws:execute-api:{stack.region}:{ACCOUNT_ID}:{api_id}/*"
    policy = json.loads(lambda_.get_policy(FunctionName=stack.get_result_function_name)["Policy"])
    assert [
        (s["Principal"]["Service"], s["Condition"]["ArnLike"]["AWS:SourceArn"])
        for s in policy["Statement"]
    ] == [("apigateway.amazonaws.com", f"{execute_api}/GET/results/*")]
    for action in ACTIONS:
        function_name = stack.actions[action.name].function_name
        policy = json.loads(lambda_.get_policy(FunctionName=function_name)["Policy"])
        sources = sorted(
            (s["Principal"]["Service"], s["Condition"]["ArnLike"]["AWS:SourceArn"])
            for s in policy["Statement"]
        )
        rule_name = stack.physical_ids[action.rule].split("|")[-1]
        rule = events.describe_rule(Name=rule_name, EventBusName=stack.event_bus_name)
        assert sources == [
            ("apigateway.amazonaws.com", f"{execute_api}/POST{action.route}"),
            ("apigateway.amazonaws.com", f"{execute_api}/POST{action.async_route}"),
            ("events.amazonaws.com", rule["Arn"]),
        ], action.name


# --- The functions ------------------------------------------------------------------------------


def test_each_function_runs_its_action_with_its_own_role(
    stack: LocalStack, sam_template: dict[str, Any]
) -> None:
    lambda_ = client("lambda")
    for action in ACTIONS:
        code = sam_template["Resources"][action.function]["Properties"]["CodeUri"]
        assert (ROOT / code / "app.py").is_file(), action.name
        function = lambda_.get_function_configuration(
            FunctionName=stack.actions[action.name].function_name
        )
        assert function["FunctionName"] == f"{stack.name}{action.route.replace('/', '-')}"
        assert (function["Runtime"], function["Handler"]) == ("python3.12", "app.lambda_handler")
        assert function["Role"].endswith(f":role/{stack.physical_ids[action.role]}")
        assert function["Timeout"] == default(sam_template, "TimeoutSeconds")


def test_functions_are_configured_with_the_stacks_resources(
    stack: LocalStack, sam_template: dict[str, Any]
) -> None:
    """The contract's configuration variables, pointing at this stack: the same in every
    action's function but its own queue (deploy_local_stack refuses a stack whose functions
    differ otherwise)."""
    from klaviyo_leads.config import Settings

    env = stack.environment
    assert env["KLAVIYO_API_KEY_SECRET_ID"] == stack.secret_arn
    assert env["RESULTS_EVENT_BUS_NAME"] == stack.event_bus_name == stack.name
    assert env["IDEMPOTENCY_TABLE_NAME"] == stack.table_name
    assert env["RESULTS_TABLE_NAME"] == stack.results_table_name
    parameters = sam_template["Parameters"]
    assert env["KLAVIYO_BASE_URL"] == parameters["KlaviyoBaseUrl"]["Default"]
    assert env["KLAVIYO_API_REVISION"] == parameters["KlaviyoApiRevision"]["Default"]
    assert env["DEFAULT_PHONE_REGION"] == parameters["DefaultPhoneRegion"]["Default"]
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" not in env
    assert Settings.from_env(env).klaviyo_max_share == 1.0  # all of what the account leaves
    for action in ACTIONS:
        resources = stack.actions[action.name]
        # No reserved concurrency: how many containers share Klaviyo's limits is not known.
        assert resources.environment == {
            "ACTION_QUEUE_URL": resources.queue.url,
            "KLAVIYO_CONTAINERS": "0",
        }, action.name
        assert "ACTION_QUEUE_URL" not in env and "KLAVIYO_CONTAINERS" not in env


def test_get_result_is_configured_with_the_results_table_only(stack: LocalStack) -> None:
    function = client("lambda").get_function_configuration(
        FunctionName=stack.get_result_function_name
    )
    env = function["Environment"]["Variables"]
    assert env["RESULTS_TABLE_NAME"] == stack.results_table_name
    assert not {k for k in env if k.startswith(("KLAVIYO_", "ACTION_", "IDEMPOTENCY_"))}
    assert "RESULTS_EVENT_BUS_NAME" not in env
    assert (function["Handler"], function["Timeout"]) == ("app.lambda_handler", 10)


def test_parameters_reach_the_functions_and_queues(options_stack: LocalStack) -> None:
    from klaviyo_leads.config import Settings

    lambda_ = client("lambda")
    for action in ACTIONS:
        resources = options_stack.actions[action.name]
        function = lambda_.get_function_configuration(FunctionName=resources.function_name)
        assert function["Timeout"] == 60, action.name
        assert queue_attributes(resources.queue.url)["VisibilityTimeout"] == "360", action.name
    assert options_stack.environment["POWERTOOLS_TRACE_DISABLED"] == "false"
    assert options_stack.environment["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] == "2773"
    share = int(OPTIONS["KlaviyoRateLimitShare"])
    assert Settings.from_env(options_stack.environment).klaviyo_max_share == share / 100


def test_an_actions_own_concurrency_overrides_the_default_and_reserves(
    options_stack: LocalStack,
) -> None:
    """Only the action given its own values gets them; the others keep the default and
    reserve nothing."""
    from klaviyo_leads.config import Settings

    lambda_ = client("lambda")
    for action in ACTIONS:
        function_name = options_stack.actions[action.name].function_name
        (mapping,) = lambda_.list_event_source_mappings(FunctionName=function_name)[
            "EventSourceMappings"
        ]
        reserved = lambda_.get_function_concurrency(FunctionName=function_name)
        own = OWN_CONCURRENCY.get(action.name)
        if own is None:
            assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}, action.name
            assert "ReservedConcurrentExecutions" not in reserved, action.name
        else:
            maximum, reserved_executions = own
            assert mapping["ScalingConfig"] == {"MaximumConcurrency": maximum}, action.name
            assert reserved["ReservedConcurrentExecutions"] == reserved_executions, action.name
        # The function's pacer is told the reserved concurrency, the bound on its containers.
        env = lambda_environment(options_stack, action.name)
        assert Settings.from_env(env).klaviyo_containers == (own and own[1]), action.name


def test_each_function_logs_to_its_own_group_with_retention(
    stack: LocalStack, sam_template: dict[str, Any]
) -> None:
    """The role may not create log groups: the stack must, with the function's own name."""
    groups = {
        g["logGroupName"]: g.get("retentionInDays")
        for g in client("logs").describe_log_groups()["logGroups"]
    }
    retention = default(sam_template, "LogRetentionInDays")
    functions = [stack.actions[a.name].function_name for a in ACTIONS]
    for function_name in (*functions, stack.get_result_function_name):
        name = f"/aws/lambda/{function_name}"
        assert groups.get(name) == retention, name
    assert groups.get(f"/aws/apigateway/{stack.name}/access") == retention


# --- The idempotency table and the outputs ------------------------------------------------------


def test_idempotency_table_has_the_key_powertools_uses(stack: LocalStack) -> None:
    table = client("dynamodb").describe_table(TableName=stack.table_name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]


def test_results_table_is_keyed_by_the_message_id(stack: LocalStack) -> None:
    """GET /results/{message_id} looks results up by the id the async route answered with."""
    table = client("dynamodb").describe_table(TableName=stack.results_table_name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "message_id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "message_id", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_outputs_name_the_created_resources(stack: LocalStack) -> None:
    for action in ACTIONS:
        for queue in (action.queue, action.dead_letter_queue, action.event_dead_letter_queue):
            assert stack.outputs[f"{queue}Url"] == stack.physical_ids[queue]
    assert stack.outputs["IdempotencyTableName"] == stack.physical_ids["IdempotencyTable"]
    assert stack.outputs["ResultsTableName"] == stack.physical_ids["ResultsTable"]
    assert stack.outputs["LeadsAndResultsEventBusName"] == stack.event_bus_name
    assert stack.outputs["ResultsEventBusName"] == stack.event_bus_name  # its earlier name
    assert "ResultsWebhookDeadLetterQueueUrl" not in stack.outputs  # no webhook by default
