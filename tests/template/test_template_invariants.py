"""Invariants of template.yaml and samconfig.toml that cfn-lint does not check.

cfn-lint does not compare a queue's visibility timeout with its consumer's timeout on SAM
templates, knows nothing of this bundle's six actions, and cannot tell a least-privilege role from
a generous one. These tests read the template as data and say what must hold.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from tests.template.cfn_template import (
    ACTIONS,
    ROOT,
    Action,
    as_list,
    function_properties,
    resolve_conditionals,
    resources_of_type,
    statements,
)

MAX_VISIBILITY_TIMEOUT = 43_200  # SQS: 12 hours
DLQ_RETENTION = 1_209_600  # 14 days, the SQS maximum

# Resource '*' is allowed only for actions that have no resource to scope to.
STAR_RESOURCE_ALLOWED_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}

# Resources that belong to the stack as a whole; everything else belongs to exactly one action.
SHARED_RESOURCES = {
    "SharedLayer",
    "ResultsEventBus",
    "IdempotencyTable",
    "AlarmTopic",
    "AlarmEmailSubscription",
    "ApiAccessLogGroup",
    "Api",
    "ApiUsagePlan",
    "ApiKey",
    "ApiUsagePlanKey",
    "ApiWebAcl",
    "ApiWebAclAssociation",
}

API_KEY_AUTH = {"UseIamAuth": False}
IAM_AUTH = {"UseIamAuth": True}


def parameter(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Parameters"][name]


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def api_paths(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]


def effective_parameters(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    values = {
        name: str(spec["Default"])
        for name, spec in template["Parameters"].items()
        if "Default" in spec
    }
    values.update(overrides)
    return values


def parse_overrides(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(text))


# --- Timeouts -----------------------------------------------------------------------------------


def test_timeout_parameter_is_360_within_lambda_limits(sam_template: dict[str, Any]) -> None:
    timeout = parameter(sam_template, "TimeoutSeconds")
    assert timeout["Type"] == "Number"
    assert timeout["Default"] == 360
    assert (timeout["MinValue"], timeout["MaxValue"]) == (1, 900)


def test_every_function_timeout_is_the_parameter(sam_template: dict[str, Any]) -> None:
    functions = resources_of_type(sam_template, "AWS::Serverless::Function")
    assert len(functions) == len(ACTIONS)
    for logical_id in functions:
        assert function_properties(sam_template, logical_id)["Timeout"] == ref("TimeoutSeconds")


def test_visibility_timeout_default_is_at_least_six_timeouts(sam_template: dict[str, Any]) -> None:
    timeout = parameter(sam_template, "TimeoutSeconds")["Default"]
    visibility = parameter(sam_template, "QueueVisibilityTimeoutSeconds")
    assert visibility["Type"] == "Number"
    assert visibility["Default"] >= 6 * timeout
    assert visibility["MaxValue"] <= MAX_VISIBILITY_TIMEOUT


def test_samconfig_environment_keeps_visibility_at_least_six_timeouts(
    sam_template: dict[str, Any], samconfig: dict[str, Any], samconfig_env: str
) -> None:
    deploy = samconfig[samconfig_env].get("deploy", {}).get("parameters", {})
    values = effective_parameters(
        sam_template, parse_overrides(deploy.get("parameter_overrides", ""))
    )
    timeout = int(values["TimeoutSeconds"])
    visibility = int(values["QueueVisibilityTimeoutSeconds"])
    assert 1 <= timeout <= 900
    assert 6 * timeout <= visibility <= MAX_VISIBILITY_TIMEOUT, (
        f"[{samconfig_env}] QueueVisibilityTimeoutSeconds={visibility} must be >= 6 x "
        f"TimeoutSeconds={timeout}"
    )
    # Lambda rejects an SQS batch size above 10 without a batching window.
    if max(int(values["BatchSize"]), int(values["BulkBatchSize"])) > 10:
        assert int(values["MaximumBatchingWindowInSeconds"]) >= 1


def test_samconfig_overrides_name_only_template_parameters(
    sam_template: dict[str, Any], samconfig: dict[str, Any], samconfig_env: str
) -> None:
    deploy = samconfig[samconfig_env].get("deploy", {}).get("parameters", {})
    unknown = parse_overrides(deploy.get("parameter_overrides", "")).keys() - set(
        sam_template["Parameters"]
    )
    assert not unknown


# --- samconfig.toml -----------------------------------------------------------------------------


def test_samconfig_has_default_dev_and_prod(samconfig: dict[str, Any]) -> None:
    assert samconfig["version"] == 0.1
    assert {"default", "dev", "prod"} <= samconfig.keys()
    assert samconfig["default"]["validate"]["parameters"]["lint"] is True


def test_samconfig_environment_deploys_safely(
    samconfig: dict[str, Any], samconfig_env: str
) -> None:
    env = samconfig[samconfig_env]
    assert env["global"]["parameters"]["stack_name"]
    build = env["build"]["parameters"]
    assert build["cached"] is True
    assert build["parallel"] is True
    deploy = env["deploy"]["parameters"]
    assert deploy["resolve_s3"] is True
    assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    assert isinstance(deploy["confirm_changeset"], bool)


def test_samconfig_stack_names_differ(samconfig: dict[str, Any]) -> None:
    names = [
        samconfig[env]["global"]["parameters"]["stack_name"] for env in ("default", "dev", "prod")
    ]
    assert len(set(names)) == len(names)


def test_samconfig_stack_names_leave_room_for_function_names(
    sam_template: dict[str, Any], samconfig: dict[str, Any], samconfig_env: str
) -> None:
    """Function names are <stack name>-<route>, and Lambda allows 64 characters."""
    stack_name = samconfig[samconfig_env]["global"]["parameters"]["stack_name"]
    for action in ACTIONS:
        name = sam_template["Resources"][action.function]["Properties"]["FunctionName"]["Fn::Sub"]
        assert len(name.replace("${AWS::StackName}", stack_name)) <= 64, action.name


def test_prod_reviews_change_sets(samconfig: dict[str, Any]) -> None:
    assert samconfig["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


# --- The functions ------------------------------------------------------------------------------


def test_function_runs_the_action_code_on_python_312(
    sam_template: dict[str, Any], action: Action
) -> None:
    properties = function_properties(sam_template, action.function)
    assert properties["Runtime"] == "python3.12"
    assert properties["Handler"] == "app.lambda_handler"
    assert properties["CodeUri"] == f"functions/{action.name}/"
    assert (ROOT / properties["CodeUri"] / "app.py").is_file()
    assert properties["Architectures"] == [ref("Architecture")]
    assert properties["MemorySize"] == ref("MemorySize")
    layers = resolve_conditionals(properties["Layers"], {"UseSecretsExtension": False})
    assert layers == [ref("SharedLayer")]
    with_extension = resolve_conditionals(properties["Layers"], {"UseSecretsExtension": True})
    assert with_extension == [ref("SharedLayer"), ref("SecretsExtensionLayerArn")]


def test_function_directories_are_exactly_the_actions() -> None:
    directories = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir()}
    directories.discard("__pycache__")
    assert directories == {a.name for a in ACTIONS}


def test_actions_are_the_layers_actions() -> None:
    from klaviyo_leads.actions import ACTIONS as LAYER_ACTIONS

    assert set(LAYER_ACTIONS) == {a.name for a in ACTIONS}


def test_shared_layer_is_built_by_its_makefile(sam_template: dict[str, Any]) -> None:
    layer = sam_template["Resources"]["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    makefile = (ROOT / "layers/shared/Makefile").read_text()
    assert re.search(r"^build-SharedLayer:", makefile, re.MULTILINE)
    assert "--invalidation-mode unchecked-hash" in makefile
    assert (ROOT / "layers/shared/klaviyo_leads/__init__.py").is_file()


EXPECTED_ENVIRONMENT = {
    "KLAVIYO_API_KEY_SECRET_ID": ref("KlaviyoApiKeySecretArn"),
    "KLAVIYO_BASE_URL": ref("KlaviyoBaseUrl"),
    "KLAVIYO_API_REVISION": ref("KlaviyoApiRevision"),
    "DEFAULT_PHONE_REGION": ref("DefaultPhoneRegion"),
    "RESULTS_EVENT_BUS_NAME": ref("ResultsEventBus"),
    "IDEMPOTENCY_TABLE_NAME": ref("IdempotencyTable"),
    "COALESCE_BATCHES": ref("CoalesceBatches"),
    "POWERTOOLS_SERVICE_NAME": "klaviyo-lead-actions",
    "POWERTOOLS_METRICS_NAMESPACE": "KlaviyoLeadActions",
    "POWERTOOLS_LOG_LEVEL": ref("LogLevel"),
    "POWERTOOLS_LOGGER_SAMPLE_RATE": ref("DebugSampleRate"),
}


def test_function_environment(sam_template: dict[str, Any], action: Action) -> None:
    variables = function_properties(sam_template, action.function)["Environment"]["Variables"]
    for name, value in EXPECTED_ENVIRONMENT.items():
        assert variables.get(name) == value, name

    plain = resolve_conditionals(variables, {"TracingEnabled": False, "UseSecretsExtension": False})
    assert plain["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" not in plain
    traced = resolve_conditionals(variables, {"TracingEnabled": True, "UseSecretsExtension": True})
    assert traced["POWERTOOLS_TRACE_DISABLED"] == "false"
    assert traced["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] == "2773"


def test_configuration_defaults(sam_template: dict[str, Any]) -> None:
    defaults = {name: spec.get("Default") for name, spec in sam_template["Parameters"].items()}
    assert defaults["KlaviyoBaseUrl"] == "https://a.klaviyo.com"
    assert defaults["KlaviyoApiRevision"] == "2026-07-15"
    assert defaults["DefaultPhoneRegion"] == "US"
    assert defaults["LogLevel"] == "INFO"
    assert defaults["CoalesceBatches"] == "true"
    assert defaults["EnableTracing"] == "false"
    assert defaults["ApiAuthType"] == "API_KEY"
    assert defaults["MemorySize"] == 256
    assert defaults["MaxReceiveCount"] == 5
    assert defaults["MaximumConcurrency"] == 2
    assert parameter(sam_template, "MaximumConcurrency")["MinValue"] == 2
    assert "Default" not in sam_template["Parameters"]["KlaviyoApiKeySecretArn"]


def test_every_parameter_is_described(sam_template: dict[str, Any]) -> None:
    undescribed = [n for n, p in sam_template["Parameters"].items() if not p.get("Description")]
    assert not undescribed


def test_tracing_follows_the_parameter(sam_template: dict[str, Any]) -> None:
    globals_ = sam_template["Globals"]["Function"]
    assert globals_["Tracing"] == {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}
    api = sam_template["Resources"]["Api"]["Properties"]
    assert api["TracingEnabled"] == {"Fn::If": ["TracingEnabled", True, False]}
    assert sam_template["Conditions"]["TracingEnabled"] == {
        "Fn::Equals": [ref("EnableTracing"), "true"]
    }


# --- Triggers -----------------------------------------------------------------------------------


def test_api_event_is_the_post_route(sam_template: dict[str, Any], action: Action) -> None:
    events = function_properties(sam_template, action.function)["Events"]
    api_events = [e["Properties"] for e in events.values() if e["Type"] == "Api"]
    assert len(api_events) == 1
    (api_event,) = api_events
    assert api_event["Method"].upper() == "POST"
    assert api_event["Path"] == action.route
    assert api_event["RestApiId"] == ref("Api")


def test_routes_require_the_api_key_or_iam(sam_template: dict[str, Any], action: Action) -> None:
    paths = api_paths(sam_template)
    for route in (action.route, action.async_route):
        security = paths[route]["post"]["security"]
        assert resolve_conditionals(security, API_KEY_AUTH) == [{"api_key": []}], route
        assert resolve_conditionals(security, IAM_AUTH) == [{"sigv4": []}], route


def test_api_security_schemes(sam_template: dict[str, Any]) -> None:
    body = sam_template["Resources"]["Api"]["Properties"]["DefinitionBody"]
    schemes = body["securityDefinitions"]
    assert schemes["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert body["x-amazon-apigateway-api-key-source"] == "HEADER"
    assert sam_template["Conditions"]["UseIamAuth"] == {
        "Fn::Equals": [ref("ApiAuthType"), "AWS_IAM"]
    }
    assert set(parameter(sam_template, "ApiAuthType")["AllowedValues"]) == {"API_KEY", "AWS_IAM"}


def test_every_api_route_is_an_action_route(sam_template: dict[str, Any]) -> None:
    expected = {a.route for a in ACTIONS} | {a.async_route for a in ACTIONS}
    paths = api_paths(sam_template)
    assert set(paths) == expected
    for route, item in paths.items():
        assert set(item) == {"post"}, route
        assert "security" in item["post"], route


def test_async_route_sends_the_body_to_the_queue(
    sam_template: dict[str, Any], action: Action
) -> None:
    method = api_paths(sam_template)[action.async_route]["post"]
    integration = method["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws"
    assert integration["httpMethod"] == "POST"
    assert integration["uri"]["Fn::Sub"].endswith(
        f":sqs:path/${{AWS::AccountId}}/${{{action.queue}.QueueName}}"
    )
    assert integration["credentials"] == get_att(action.intake_role)
    template = integration["requestTemplates"]["application/json"]
    assert template.startswith("Action=SendMessage&MessageBody=$util.urlEncode($input.body)")
    assert integration["passthroughBehavior"] == "never"
    assert (
        integration["requestParameters"]["integration.request.header.Content-Type"]
        == "'application/x-www-form-urlencoded'"
    )

    accepted = integration["responses"][r"2\d{2}"]
    assert accepted["statusCode"] == "202"
    body = accepted["responseTemplates"]["application/json"]
    assert "$input.path('$.SendMessageResponse.SendMessageResult.MessageId')" in body
    rendered = body.replace(
        "$input.path('$.SendMessageResponse.SendMessageResult.MessageId')", "abc"
    )
    assert json.loads(rendered) == {"accepted": True, "message_id": "abc"}
    assert integration["responses"]["default"]["statusCode"] == "502"


def test_intake_role_may_only_send_to_its_queue(
    sam_template: dict[str, Any], action: Action
) -> None:
    role = sam_template["Resources"][action.intake_role]["Properties"]
    trust = statements(role["AssumeRolePolicyDocument"])
    assert [s["Principal"] for s in trust] == [{"Service": "apigateway.amazonaws.com"}]
    granted = [s for p in role["Policies"] for s in statements(p["PolicyDocument"])]
    assert granted == [
        {
            "Sid": "SendToOwnQueue",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": get_att(action.queue),
        }
    ]
    assert "ManagedPolicyArns" not in role


def test_sqs_event_reads_its_own_queue(sam_template: dict[str, Any], action: Action) -> None:
    events = function_properties(sam_template, action.function)["Events"]
    sqs_events = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert len(sqs_events) == 1
    (sqs_event,) = sqs_events
    assert sqs_event["Queue"] == get_att(action.queue)
    assert sqs_event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs_event["BatchSize"] in (ref("BatchSize"), ref("BulkBatchSize"))
    assert sqs_event["MaximumBatchingWindowInSeconds"] == ref("MaximumBatchingWindowInSeconds")
    assert sqs_event["ScalingConfig"] == {"MaximumConcurrency": ref("MaximumConcurrency")}


def test_eventbridge_event_matches_its_leads(sam_template: dict[str, Any], action: Action) -> None:
    properties = function_properties(sam_template, action.function)
    rules = [
        e["Properties"] for e in properties["Events"].values() if e["Type"] == "EventBridgeRule"
    ]
    assert len(rules) == 1
    (rule,) = rules
    assert rule["EventBusName"] == ref("ResultsEventBus")
    assert rule["Pattern"] == {"detail-type": [f"{action.name} lead"]}
    assert rule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert rule["DeadLetterConfig"] == {"Arn": get_att(action.event_dead_letter_queue)}
    on_failure = properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": get_att(action.event_dead_letter_queue)}


def test_event_dead_letter_queue_accepts_only_its_rule(
    sam_template: dict[str, Any], action: Action
) -> None:
    policy = sam_template["Resources"][f"{action.event_dead_letter_queue}Policy"]["Properties"]
    assert policy["Queues"] == [ref(action.event_dead_letter_queue)]
    (statement,) = statements(policy["PolicyDocument"])
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == get_att(action.event_dead_letter_queue)
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": get_att(action.rule)}}


def test_results_never_trigger_actions(sam_template: dict[str, Any]) -> None:
    """Results are published as '<action> result'; a rule matching them would loop."""
    for action in ACTIONS:
        events = function_properties(sam_template, action.function)["Events"]
        for event in events.values():
            if event["Type"] == "EventBridgeRule":
                for detail_type in event["Properties"]["Pattern"]["detail-type"]:
                    assert not detail_type.endswith(" result")


# --- Queues -------------------------------------------------------------------------------------


def test_queue_redrives_to_its_own_dead_letter_queue(
    sam_template: dict[str, Any], action: Action
) -> None:
    queue = sam_template["Resources"][action.queue]["Properties"]
    assert queue["VisibilityTimeout"] == ref("QueueVisibilityTimeoutSeconds")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": get_att(action.dead_letter_queue),
        "maxReceiveCount": ref("MaxReceiveCount"),
    }
    for dead_letters in (action.dead_letter_queue, action.event_dead_letter_queue):
        properties = sam_template["Resources"][dead_letters]["Properties"]
        assert properties["MessageRetentionPeriod"] == DLQ_RETENTION
        assert "RedrivePolicy" not in properties


def test_dead_letter_queues_are_not_shared(sam_template: dict[str, Any]) -> None:
    targets = [
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in resources_of_type(sam_template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    ]
    assert len(targets) == len(set(targets)) == len(ACTIONS)


def test_every_queue_is_encrypted(sam_template: dict[str, Any]) -> None:
    queues = resources_of_type(sam_template, "AWS::SQS::Queue")
    assert len(queues) == 3 * len(ACTIONS)
    for logical_id, queue in queues.items():
        properties = queue["Properties"]
        encrypted = properties.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in properties
        assert encrypted, logical_id


def test_idempotency_table(sam_template: dict[str, Any]) -> None:
    table = sam_template["Resources"]["IdempotencyTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


# --- Permissions --------------------------------------------------------------------------------


def all_policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every identity-policy statement in the template, under every condition."""
    found = []
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        elif resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            documents = [properties["PolicyDocument"]]
        elif resource["Type"] == "AWS::Serverless::Function":
            documents = [p for p in as_list(properties.get("Policies", [])) if isinstance(p, dict)]
        for document in documents:
            for statement in statements(document):
                if isinstance(statement, dict) and set(statement) == {"Fn::If"}:
                    candidates = statement["Fn::If"][1:]
                else:
                    candidates = [statement]
                found += [(logical_id, s) for s in candidates if s != ref("AWS::NoValue")]
    return found


def test_no_resource_star_beyond_the_allow_list(sam_template: dict[str, Any]) -> None:
    found = all_policy_statements(sam_template)
    assert found
    for logical_id, statement in found:
        actions = set(as_list(statement["Action"]))
        assert not any(a == "*" or a.endswith(":*") for a in actions), logical_id
        if "*" in as_list(statement.get("Resource", [])):
            assert actions <= STAR_RESOURCE_ALLOWED_ACTIONS, (logical_id, actions)


def test_functions_use_their_own_roles_without_managed_policies(
    sam_template: dict[str, Any],
) -> None:
    """SAM-generated roles would attach AWSLambdaSQSQueueExecutionRole (sqs:* on every queue)."""
    for action in ACTIONS:
        properties = function_properties(sam_template, action.function)
        assert properties["Role"] == get_att(action.role)
        assert "Policies" not in properties
    for logical_id, role in resources_of_type(sam_template, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], logical_id


def role_statements(
    template: dict[str, Any], logical_id: str, conditions: dict[str, bool]
) -> dict[str, dict[str, Any]]:
    role = resolve_conditionals(template["Resources"][logical_id]["Properties"], conditions)
    return {s["Sid"]: s for p in role["Policies"] for s in statements(p["PolicyDocument"])}


def test_function_role_is_least_privilege(sam_template: dict[str, Any], action: Action) -> None:
    conditions = {"HasSecretKmsKey": False, "TracingEnabled": False}
    granted = role_statements(sam_template, action.role, conditions)
    route = action.route.lstrip("/")
    log_group = f"log-group:/aws/lambda/${{AWS::StackName}}-{route}:*"
    expected = {
        "WriteOwnLogs": (["logs:CreateLogStream", "logs:PutLogEvents"], None),
        "ConsumeOwnQueue": (
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
            ],
            get_att(action.queue),
        ),
        "DeadLetterFailedEvents": (["sqs:SendMessage"], get_att(action.event_dead_letter_queue)),
        "ReadKlaviyoKey": (["secretsmanager:GetSecretValue"], ref("KlaviyoApiKeySecretArn")),
        "PublishResults": (["events:PutEvents"], get_att("ResultsEventBus")),
        "IdempotencyRecords": (
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            get_att("IdempotencyTable"),
        ),
    }
    assert set(granted) == set(expected)
    for sid, (actions, resource) in expected.items():
        assert granted[sid]["Effect"] == "Allow"
        assert sorted(as_list(granted[sid]["Action"])) == sorted(actions), sid
        if resource is not None:
            assert granted[sid]["Resource"] == resource, sid
    assert granted["WriteOwnLogs"]["Resource"]["Fn::Sub"].endswith(log_group)
    # The log group the role may write to is the function's own.
    function_name = sam_template["Resources"][action.function]["Properties"]["FunctionName"]
    assert function_name == {"Fn::Sub": f"${{AWS::StackName}}-{route}"}


def test_function_role_conditional_grants(sam_template: dict[str, Any], action: Action) -> None:
    granted = role_statements(
        sam_template, action.role, {"HasSecretKmsKey": True, "TracingEnabled": True}
    )
    decrypt = granted["DecryptKlaviyoKey"]
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Resource"] == ref("KlaviyoApiKeySecretKmsKeyArn")
    assert decrypt["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.${AWS::URLSuffix}"}
        }
    }
    assert set(granted["WriteTraces"]["Action"]) == STAR_RESOURCE_ALLOWED_ACTIONS


# --- Observability ------------------------------------------------------------------------------


def test_function_log_group_has_retention(sam_template: dict[str, Any], action: Action) -> None:
    log_group = sam_template["Resources"][action.log_group]["Properties"]
    assert log_group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{action.function}}}"}


def test_every_log_group_has_retention(sam_template: dict[str, Any]) -> None:
    log_groups = resources_of_type(sam_template, "AWS::Logs::LogGroup")
    assert len(log_groups) == len(ACTIONS) + 1  # one per function, one for API access logs
    for logical_id, log_group in log_groups.items():
        assert log_group["Properties"]["RetentionInDays"] == ref("LogRetentionInDays"), logical_id


def test_api_access_logs_are_json(sam_template: dict[str, Any]) -> None:
    api = sam_template["Resources"]["Api"]["Properties"]
    setting = api["AccessLogSetting"]
    assert setting["DestinationArn"] == get_att("ApiAccessLogGroup")
    # $context variables become values; the rest must already be JSON.
    sample = re.sub(r"\$context\.[A-Za-z.]+", "0", setting["Format"])
    record = json.loads(sample)
    assert {"requestId", "status", "apiKeyId", "resourcePath"} <= set(record)


def test_api_stage_throttles_and_records_metrics(sam_template: dict[str, Any]) -> None:
    api = sam_template["Resources"]["Api"]["Properties"]
    (settings,) = api["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["MetricsEnabled"] is True
    assert settings["ThrottlingRateLimit"] == ref("ApiThrottleRateLimit")
    assert settings["ThrottlingBurstLimit"] == ref("ApiThrottleBurstLimit")
    plan = sam_template["Resources"]["ApiUsagePlan"]
    assert plan["Condition"] == "UseApiKeyAuth"
    assert plan["Properties"]["ApiStages"] == [{"ApiId": ref("Api"), "Stage": ref("Api.Stage")}]
    assert plan["Properties"]["Quota"]["Limit"] == ref("ApiQuotaLimit")
    key = sam_template["Resources"]["ApiUsagePlanKey"]["Properties"]
    assert (key["KeyId"], key["UsagePlanId"]) == (ref("ApiKey"), ref("ApiUsagePlan"))


def test_request_body_limit_is_enforced_by_waf(sam_template: dict[str, Any]) -> None:
    acl = sam_template["Resources"]["ApiWebAcl"]
    assert acl["Condition"] == "LimitRequestBody"
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL"
    inspection = properties["AssociationConfig"]["RequestBody"]["API_GATEWAY"]
    inspected_bytes = int(inspection["DefaultSizeInspectionLimit"].removeprefix("KB_")) * 1024
    (rule,) = properties["Rules"]
    statement = rule["Statement"]["SizeConstraintStatement"]
    assert statement["FieldToMatch"] == {"Body": {"OversizeHandling": "MATCH"}}
    assert (statement["ComparisonOperator"], statement["Size"]) == (
        "GT",
        ref("MaxRequestBodyBytes"),
    )
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 413
    # A limit above what WAF can inspect would block every body longer than the inspected part.
    limit = parameter(sam_template, "MaxRequestBodyBytes")
    assert limit["Default"] <= limit["MaxValue"] <= inspected_bytes
    association = sam_template["Resources"]["ApiWebAclAssociation"]["Properties"]
    assert association["WebACLArn"] == get_att("ApiWebAcl")
    assert association["ResourceArn"]["Fn::Sub"].endswith("/restapis/${Api}/stages/${Api.Stage}")


ALARMS = {
    # suffix: (namespace, metric, dimension, resource of the dimension)
    "DeadLetterQueueAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"),
    "EventDeadLetterQueueAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"),
    "ErrorsAlarm": ("AWS/Lambda", "Errors", "FunctionName"),
    "ThrottlesAlarm": ("AWS/Lambda", "Throttles", "FunctionName"),
}


def test_action_alarms_notify_the_topic(sam_template: dict[str, Any], action: Action) -> None:
    dimension_values = {
        "DeadLetterQueueAlarm": get_att(action.dead_letter_queue, "QueueName"),
        "EventDeadLetterQueueAlarm": get_att(action.event_dead_letter_queue, "QueueName"),
        "ErrorsAlarm": ref(action.function),
        "ThrottlesAlarm": ref(action.function),
    }
    for suffix, (namespace, metric, dimension) in ALARMS.items():
        alarm = sam_template["Resources"][f"{action.prefix}{suffix}"]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric), suffix
        assert alarm["Dimensions"] == [{"Name": dimension, "Value": dimension_values[suffix]}]
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["AlarmActions"] == [ref("AlarmTopic")]
        assert alarm["TreatMissingData"] == "notBreaching"


def test_alarm_email_is_optional(sam_template: dict[str, Any]) -> None:
    subscription = sam_template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == ref("AlarmEmail")
    assert parameter(sam_template, "AlarmEmail")["Default"] == ""


# --- Outputs ------------------------------------------------------------------------------------


def test_outputs(sam_template: dict[str, Any]) -> None:
    outputs = sam_template["Outputs"]
    assert "ApiUrl" in outputs
    assert outputs["ApiKeyId"]["Condition"] == "UseApiKeyAuth"
    assert outputs["ApiKeyId"]["Value"] == ref("ApiKey")
    assert outputs["ResultsEventBusName"]["Value"] == ref("ResultsEventBus")
    assert outputs["IdempotencyTableName"]["Value"] == ref("IdempotencyTable")
    for action in ACTIONS:
        for queue in (action.queue, action.dead_letter_queue, action.event_dead_letter_queue):
            assert outputs[f"{queue}Url"]["Value"] == ref(queue)


# --- The six blocks -----------------------------------------------------------------------------


def action_block(template: dict[str, Any], action: Action) -> str:
    """Everything the template says about one action, with the action's names neutralised."""
    block = {
        "resources": {
            k: v for k, v in template["Resources"].items() if k.startswith(action.prefix)
        },
        "paths": {k: v for k, v in api_paths(template).items() if k.startswith(action.route)},
        "outputs": {k: v for k, v in template["Outputs"].items() if k.startswith(action.prefix)},
    }
    text = json.dumps(block, sort_keys=True)
    text = text.replace(action.prefix, "<Action>").replace(action.name, "<action>")
    return text.replace(action.route.lstrip("/"), "<route>")


COALESCING_ACTIONS = {"add_profile_to_list", "subscribe_profile_to_list"}


def test_coalescing_actions_take_bulk_batches(sam_template: dict[str, Any]) -> None:
    for action in ACTIONS:
        function = sam_template["Resources"][f"{action.prefix}Function"]
        (queue_event,) = [
            e for e in function["Properties"]["Events"].values() if e["Type"] == "SQS"
        ]
        expected = "BulkBatchSize" if action.name in COALESCING_ACTIONS else "BatchSize"
        assert queue_event["Properties"]["BatchSize"] == {"Ref": expected}, action.name
    assert sam_template["Parameters"]["BulkBatchSize"]["Default"] == 1000


def test_the_six_action_blocks_are_uniform(sam_template: dict[str, Any]) -> None:
    # Only the batch size differs, by design (test above).
    blocks = {
        action.name: action_block(sam_template, action).replace('"BulkBatchSize"', '"BatchSize"')
        for action in ACTIONS
    }
    reference = blocks[ACTIONS[0].name]
    for name, block in blocks.items():
        assert block == reference, f"{name} differs from {ACTIONS[0].name}"


def test_every_resource_is_shared_or_one_actions(sam_template: dict[str, Any]) -> None:
    owners: dict[str, list[str]] = {}
    for logical_id in sam_template["Resources"]:
        owners[logical_id] = [a.name for a in ACTIONS if logical_id.startswith(a.prefix)]
    unowned = {k for k, v in owners.items() if not v} - SHARED_RESOURCES
    assert not unowned
    assert all(len(v) <= 1 for v in owners.values())
    per_action = {a.name: sum(1 for v in owners.values() if v == [a.name]) for a in ACTIONS}
    assert len(set(per_action.values())) == 1, per_action


# --- Lint configuration -------------------------------------------------------------------------

# Each one is explained where it is ignored, in template.yaml.
JUSTIFIED_IGNORES = {"WS1000", "WS1002", "ES6000", "ES7000"}


def test_lint_ignores_are_the_justified_ones(sam_template: dict[str, Any]) -> None:
    ignored = set(sam_template["Metadata"]["cfn-lint"]["config"]["ignore_checks"])
    for resource in sam_template["Resources"].values():
        config = resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {})
        ignored |= set(config.get("ignore_checks", []))
    assert ignored <= JUSTIFIED_IGNORES
