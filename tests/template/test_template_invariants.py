"""What must hold of the stack where moto cannot show it, and of every samconfig.toml environment.

moto builds no API Gateway methods, stage or usage plan, no alarms, no WAF, and ignores
EventInvokeConfig, queue policies, layers, architectures and tracing; cfn-lint does not compare
a queue's visibility timeout with its consumer's timeout on SAM templates. These tests read the
template as SAM translates it (what CloudFormation holds), one test per property, over every
action.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devtools.aws import RESULTS_SOURCE
from tests.template.cfn_template import (
    ACTIONS,
    TEMPLATE,
    as_list,
    condition_values,
    created,
    parameter_values,
    resolve_conditionals,
    resources_of_type,
    samconfig,
    samconfig_environments,
    statements,
)

MAX_VISIBILITY_TIMEOUT = 43_200  # SQS: 12 hours
MAX_FUNCTION_NAME = 64  # Lambda
INLINE_TEMPLATE_LIMIT = 51_200  # bytes CloudFormation takes in TemplateBody; above, from S3
GATEWAY_LIMIT_MS = 29_000  # REST API integration timeout
# Resource '*' is allowed only for actions that have no resource to scope to.
STAR_RESOURCE_ALLOWED_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# Each one is explained where it is ignored, in stack/stack.yaml.
# ES1007/ES4000: the lead-file assembler's schedule needs no dead-letter queue (a missed look is
# made the next minute).
JUSTIFIED_LINT_IGNORES = {"WS1000", "WS1002", "ES6000", "ES7000", "W1031", "ES1007", "ES4000"}
RESULTS_ROUTE = "/results/{message_id}"
SERVICE = "klaviyo-lead-actions"  # the functions' metrics' service dimension (test_dashboard.py)
WEBHOOK = {
    "ResultsWebhookUrl": "https://hooks.example.com/klaviyo-results",
    "ResultsWebhookApiKeyValue": "s3cret",
}

API_KEY_AUTH = {"UseIamAuth": False}
IAM_AUTH = {"UseIamAuth": True}


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def api(translated: dict[str, Any]) -> dict[str, Any]:
    return translated["Resources"]["Api"]["Properties"]["Body"]  # type: ignore[no-any-return]


# --- The API ------------------------------------------------------------------------------------


def test_the_routes_are_the_actions_sync_and_async_posts_and_results(
    translated: dict[str, Any],
) -> None:
    paths = api(translated)["paths"]
    actions = {a.route for a in ACTIONS} | {a.async_route for a in ACTIONS}
    assert set(paths) == actions | {RESULTS_ROUTE}
    for route in actions:
        assert set(paths[route]) == {"post"}, route
    assert set(paths[RESULTS_ROUTE]) == {"get"}


def test_the_results_route_runs_get_result(translated: dict[str, Any]) -> None:
    get = api(translated)["paths"][RESULTS_ROUTE]["get"]
    (parameter,) = get["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == (
        "message_id",
        "path",
        True,
    )
    integration = get["x-amazon-apigateway-integration"]
    assert (integration["type"], integration["httpMethod"]) == ("aws_proxy", "POST")
    assert "${GetResultFunction.Arn}" in integration["uri"]["Fn::Sub"]


def test_every_route_needs_an_api_key_or_a_signature(translated: dict[str, Any]) -> None:
    body = api(translated)
    assert body["x-amazon-apigateway-api-key-source"] == "HEADER"
    schemes = body["securityDefinitions"]
    assert schemes["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    for route, item in body["paths"].items():
        for method, operation in item.items():
            security = operation["security"]
            assert resolve_conditionals(security, API_KEY_AUTH) == [{"api_key": []}], route
            assert resolve_conditionals(security, IAM_AUTH) == [{"sigv4": []}], (route, method)
    plan = translated["Resources"]["ApiUsagePlan"]
    key = translated["Resources"]["ApiUsagePlanKey"]["Properties"]
    assert plan["Condition"] == "UseApiKeyAuth"
    assert (key["KeyId"], key["UsagePlanId"]) == (ref("ApiKey"), ref("ApiUsagePlan"))


def test_each_route_invokes_its_function_within_the_gateway_limit(
    translated: dict[str, Any],
) -> None:
    """The sync and the async route alike: the async one queues the request itself (and keeps
    an Idempotency-Key's first answer), test_async_route.py."""
    paths = api(translated)["paths"]
    for action in ACTIONS:
        for route in (action.route, action.async_route):
            integration = paths[route]["post"]["x-amazon-apigateway-integration"]
            assert (integration["type"], integration["httpMethod"]) == ("aws_proxy", "POST")
            assert f"${{{action.function}.Arn}}" in integration["uri"]["Fn::Sub"], route
            assert integration["timeoutInMillis"] <= GATEWAY_LIMIT_MS, route


def test_one_stage_logs_throttles_and_carries_the_usage_plan_and_web_acl(
    translated: dict[str, Any],
) -> None:
    stages = resources_of_type(translated, "AWS::ApiGateway::Stage")
    assert len(stages) == 1, "SAM's extra 'Stage' stage must not exist"
    ((stage_id, stage),) = stages.items()
    properties = stage["Properties"]
    (deployment_id,) = resources_of_type(translated, "AWS::ApiGateway::Deployment")
    assert properties["DeploymentId"] == ref(deployment_id)
    assert properties["AccessLogSetting"]["DestinationArn"] == get_att("ApiAccessLogGroup")
    (settings,) = properties["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert settings["MetricsEnabled"] is True
    assert settings["ThrottlingRateLimit"] == ref("ApiThrottleRateLimit")
    assert settings["ThrottlingBurstLimit"] == ref("ApiThrottleBurstLimit")
    plan = translated["Resources"]["ApiUsagePlan"]["Properties"]
    assert plan["ApiStages"] == [{"ApiId": ref("Api"), "Stage": ref(stage_id)}]
    association = translated["Resources"]["ApiWebAclAssociation"]["Properties"]
    assert f"/stages/${{{stage_id}}}" in association["ResourceArn"]["Fn::Sub"]
    assert association["WebACLArn"] == get_att("ApiWebAcl")


def test_api_access_log_lines_are_json(translated: dict[str, Any]) -> None:
    (stage,) = resources_of_type(translated, "AWS::ApiGateway::Stage").values()
    log_format = stage["Properties"]["AccessLogSetting"]["Format"]
    # $context variables become values; the rest must already be JSON.
    record = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "0", log_format))
    assert {"requestId", "status", "apiKeyId", "resourcePath"} <= set(record)


def test_body_limit_never_exceeds_what_waf_can_inspect(translated: dict[str, Any]) -> None:
    """A limit above the inspected part would block every body longer than that part."""
    acl = translated["Resources"]["ApiWebAcl"]
    assert acl["Condition"] == "UseWebAcl"
    inspection = acl["Properties"]["AssociationConfig"]["RequestBody"]["API_GATEWAY"]
    inspected_bytes = int(inspection["DefaultSizeInspectionLimit"].removeprefix("KB_")) * 1024
    (rule,) = [r for r in waf_rules(translated, {}) if r["Name"] == "BodyTooLarge"]
    statement = rule["Statement"]["SizeConstraintStatement"]
    assert statement["FieldToMatch"] == {"Body": {"OversizeHandling": "MATCH"}}
    assert (statement["ComparisonOperator"], statement["Size"]) == (
        "GT",
        ref("MaxRequestBodyBytes"),
    )
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 413
    limit = translated["Parameters"]["MaxRequestBodyBytes"]
    assert limit["Default"] <= limit["MaxValue"] <= inspected_bytes


def waf_rules(translated: dict[str, Any], parameters: dict[str, str]) -> list[dict[str, Any]]:
    """The web ACL's rules for these parameter values; [] when there is no web ACL."""
    acl = translated["Resources"]["ApiWebAcl"]
    conditions = condition_values(translated, parameters)
    if not conditions[acl["Condition"]]:
        return []
    return resolve_conditionals(acl["Properties"]["Rules"], conditions)  # type: ignore[no-any-return]


def test_each_source_ip_is_rate_limited_with_a_503_result(translated: dict[str, Any]) -> None:
    acl = translated["Resources"]["ApiWebAcl"]["Properties"]
    rules = waf_rules(translated, {})
    assert [r["Name"] for r in rules] == ["RateLimitPerIp", "BodyTooLarge"]
    assert [r["Priority"] for r in rules] == [0, 1]  # the rate rule counts every request
    (rate,) = [r for r in rules if r["Name"] == "RateLimitPerIp"]
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement == {
        "Limit": ref("MaxRequestsPerIp"),
        "EvaluationWindowSec": 300,  # the parameter says "per 5 minutes"
        "AggregateKeyType": "IP",
    }
    response = rate["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 503  # retryable: senders retry 5xx (contract section 6)
    assert response["ResponseHeaders"] == [{"Name": "Retry-After", "Value": "300"}]
    for name, body in acl["CustomResponseBodies"].items():
        assert body["ContentType"] == "APPLICATION_JSON", name
        result = json.loads(body["Content"])
        assert result["outcome"] == "error" and result["reason"], name
        assert result["errors"] == {"id": [], "code": [], "title": [], "detail": []}, name
    assert response["CustomResponseBodyKey"] in acl["CustomResponseBodies"]
    limit = translated["Parameters"]["MaxRequestsPerIp"]
    assert (limit["Default"], limit["MinValue"], limit["MaxValue"]) == (2000, 0, 2_000_000_000)
    # WAF's lowest limit is 10: 1 to 9 are refused before anything is created.
    (assertion,) = translated["Rules"]["RequestRateLimitIsWafs"]["Assertions"]
    refused = assertion["Assert"]["Fn::Not"][0]["Fn::Contains"]
    assert refused == [[str(n) for n in range(1, 10)], ref("MaxRequestsPerIp")]


def test_each_waf_rule_goes_with_its_parameter_and_the_acl_with_either(
    translated: dict[str, Any],
) -> None:
    names = lambda parameters: [r["Name"] for r in waf_rules(translated, parameters)]  # noqa: E731
    assert names({"MaxRequestsPerIp": "0"}) == ["BodyTooLarge"]
    assert names({"MaxRequestBodyBytes": "0"}) == ["RateLimitPerIp"]
    both_off = {"MaxRequestsPerIp": "0", "MaxRequestBodyBytes": "0"}
    assert names(both_off) == []
    assert set(created(translated, both_off)).isdisjoint({"ApiWebAcl", "ApiWebAclAssociation"})
    assert translated["Resources"]["ApiWebAclAssociation"]["Condition"] == "UseWebAcl"


# --- The event bus ------------------------------------------------------------------------------

SENDERS = "arn:aws:iam::123456789012:role/lead-platform,arn:aws:iam::123456789012:role/ops-*"


def bus_policy(translated: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    policy = translated["Resources"]["ResultsEventBusPolicy"]
    assert "Condition" not in policy  # always there
    conditions = condition_values(translated, parameters)
    return resolve_conditionals(policy["Properties"], conditions)  # type: ignore[no-any-return]


def test_only_the_account_puts_events_on_the_bus_by_default(translated: dict[str, Any]) -> None:
    policy = bus_policy(translated, {})
    assert policy["EventBusName"] == ref("ResultsEventBus")
    statement = policy["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
        "Deny",
        "*",
        "events:PutEvents",
    )
    assert statement["Resource"] == get_att("ResultsEventBus")
    assert statement["Condition"]["StringNotEquals"] == {
        "aws:PrincipalAccount": ref("AWS::AccountId")
    }
    assert "ArnNotEquals" not in statement["Condition"]
    # What the actions' functions need: PutEvents on this bus, by their roles.
    exempt = statement["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert exempt[: len(ACTIONS)] == [get_att(a.role) for a in ACTIONS]
    for action in ACTIONS:
        role = translated["Resources"][action.role]["Properties"]
        granted = [
            s
            for p in role["Policies"]
            for s in statements(p["PolicyDocument"])
            if s.get("Action") == "events:PutEvents"
        ]
        assert [s["Resource"] for s in granted] == [get_att("ResultsEventBus")], action.name


def publishing_roles(translated: dict[str, Any]) -> list[str]:
    """Every role of the stack allowed to put events on its bus."""
    found = []
    for logical_id, resource in resources_of_type(translated, "AWS::IAM::Role").items():
        for policy in resource["Properties"].get("Policies", []):
            for statement in statements(policy["PolicyDocument"]):
                if "Fn::If" in statement:
                    statement = statement["Fn::If"][1]
                granted = as_list(statement.get("Action"))
                if "events:PutEvents" in granted and get_att("ResultsEventBus") in as_list(
                    statement.get("Resource")
                ):
                    found.append(logical_id)
    return sorted(set(found))


@pytest.mark.parametrize("senders", ["", SENDERS])
def test_every_function_that_publishes_may_put_events_on_the_bus(
    translated: dict[str, Any], senders: str
) -> None:
    """Invariant: the bus's policy exempts every role the stack grants PutEvents on the bus
    (the lead-file assembler's "lead file finished" included), with or without named senders."""
    roles = publishing_roles(translated)
    assert "LeadFileAssemblerFunctionRole" in roles and all(a.role in roles for a in ACTIONS)
    statement = bus_policy(translated, {"EventBusSenderArns": senders})["Statement"]
    exempt = statement["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert sorted(exempt, key=str) == sorted((get_att(role) for role in roles), key=str)


def test_what_a_result_event_carries_is_a_parameter_every_action_reads(
    translated: dict[str, Any],
) -> None:
    from klaviyo_leads.aws.bus import FULL_LEAD, LEAD_CONTENTS

    parameter = translated["Parameters"]["ResultEventLead"]
    assert parameter["AllowedValues"] == list(LEAD_CONTENTS) and parameter["Default"] == FULL_LEAD
    for action in ACTIONS:
        variables = translated["Resources"][action.function]["Properties"]["Environment"]
        assert variables["Variables"]["RESULT_EVENT_LEAD"] == ref("ResultEventLead"), action.name


def test_named_senders_are_with_the_stacks_functions_the_only_ones(
    translated: dict[str, Any],
) -> None:
    parameter = translated["Parameters"]["EventBusSenderArns"]
    assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", "")
    statement = bus_policy(translated, {"EventBusSenderArns": SENDERS})["Statement"]
    condition = statement["Condition"]
    # Denied unless the principal is one of the functions' roles or one of the named ARNs
    # (ArnEquals takes * wildcards as ArnLike does); the account check is then implied.
    assert set(condition) == {"ArnNotLike", "ArnNotEquals"}
    assert condition["ArnNotLike"]["aws:PrincipalArn"] == [
        *(get_att(a.role) for a in ACTIONS),
        get_att("LeadFileAssemblerFunctionRole"),
    ]
    assert condition["ArnNotEquals"] == {"aws:PrincipalArn": ref("EventBusSenderArns")}
    assert condition_values(translated, {"EventBusSenderArns": SENDERS})["HasEventBusSenders"]
    assert not condition_values(translated, {})["HasEventBusSenders"]


# --- Failures and alarms ------------------------------------------------------------------------


def test_each_functions_failed_events_land_in_its_event_dead_letter_queue(
    translated: dict[str, Any],
) -> None:
    resources = translated["Resources"]
    for action in ACTIONS:
        config = resources[f"{action.function}EventInvokeConfig"]["Properties"]
        assert config["FunctionName"] == ref(action.function)
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]
        assert destination == get_att(action.event_dead_letter_queue), action.name
        # Only the action's own rule may put events there.
        policy = resources[f"{action.event_dead_letter_queue}Policy"]["Properties"]
        assert policy["Queues"] == [ref(action.event_dead_letter_queue)]
        (statement,) = statements(policy["PolicyDocument"])
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Resource"] == get_att(action.event_dead_letter_queue)
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": get_att(action.rule)}}


def test_results_never_trigger_actions(translated: dict[str, Any]) -> None:
    """Results are published as '<action> result'; a rule matching them would loop."""
    for rule_id, rule in resources_of_type(translated, "AWS::Events::Rule").items():
        if "EventPattern" not in rule["Properties"]:  # a schedule
            continue
        for detail_type in rule["Properties"]["EventPattern"].get("detail-type", []):
            assert not detail_type.endswith(" result"), rule_id


def test_alarms_watch_every_dead_letter_queue_function_and_lost_lead(
    translated: dict[str, Any],
) -> None:
    """AWS metrics by the resource they watch; the functions' own metrics by action."""
    watched = {}
    for alarm_id, alarm in resources_of_type(translated, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [ref("AlarmTopic")], alarm_id
        assert (properties["ComparisonOperator"], properties["Threshold"]) == (
            "GreaterThanThreshold",
            0,
        ), alarm_id
        assert properties["TreatMissingData"] == "notBreaching", alarm_id
        dimensions = {d["Name"]: d["Value"] for d in properties["Dimensions"]}
        if properties["Namespace"].startswith("AWS/"):
            ((dimension, value),) = dimensions.items()
            target = value["Fn::GetAtt"][0] if "Fn::GetAtt" in value else value["Ref"]
            watched[(properties["MetricName"], target)] = dimension
        else:
            # Named as the layer writes them: test_dashboard.py checks name and dimensions.
            # The lead-file functions serve every action: their metrics have no action.
            assert properties["Namespace"] == "KlaviyoLeadActions", alarm_id
            assert set(dimensions) - {"action"} == {"service"}, alarm_id
            assert dimensions["service"] == SERVICE, alarm_id
            assert properties["Statistic"] == "Sum", alarm_id
            by = "action" if "action" in dimensions else "service"
            watched[(properties["MetricName"], dimensions[by])] = by
    for action in ACTIONS:
        for queue in (action.dead_letter_queue, action.event_dead_letter_queue):
            assert watched[("ApproximateNumberOfMessagesVisible", queue)] == "QueueName"
        assert watched[("Errors", action.function)] == "FunctionName"
        assert watched[("Throttles", action.function)] == "FunctionName"
        assert watched[("LeadsNotQueued", action.name)] == "action"
        assert watched[("ResultsNotPublished", action.name)] == "action"
    assert watched[("LeadFileRunsFailed", SERVICE)] == "service"
    assert watched[("Errors", "GetResultFunction")] == "FunctionName"
    assert watched[("Throttles", "GetResultFunction")] == "FunctionName"
    assert watched[("ApproximateNumberOfMessagesVisible", "ResultsWebhookDeadLetterQueue")]
    subscription = translated["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == ref("AlarmTopic")


def test_idempotency_records_expire_where_powertools_writes_the_expiry(
    translated: dict[str, Any],
) -> None:
    """moto's table ignores TimeToLiveSpecification; Powertools writes `expiration`."""
    table = translated["Resources"]["IdempotencyTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_results_expire_where_the_layer_writes_the_expiry_and_are_encrypted(
    translated: dict[str, Any],
) -> None:
    """moto's table ignores both; klaviyo_leads.aws.result_store writes `expires_at`, 24 hours
    on."""
    from klaviyo_leads.aws.result_store import RESULT_TTL_SECONDS

    table = translated["Resources"]["ResultsTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert RESULT_TTL_SECONDS == 24 * 3600  # what docs/deploying.md and the contract promise


# --- The results webhook ------------------------------------------------------------------------

WEBHOOK_RESOURCES = {
    "ResultsWebhookConnection",
    "ResultsWebhookDestination",
    "ResultsWebhookRule",
    "ResultsWebhookRole",
    "ResultsWebhookDeadLetterQueue",
    "ResultsWebhookDeadLetterQueuePolicy",
    "ResultsWebhookDeadLetterQueueAlarm",
}


def test_the_webhook_exists_only_with_a_url(translated: dict[str, Any]) -> None:
    assert not WEBHOOK_RESOURCES & set(created(translated, {}))
    assert set(created(translated, WEBHOOK)) - set(created(translated, {})) == WEBHOOK_RESOURCES
    output = translated["Outputs"]["ResultsWebhookDeadLetterQueueUrl"]
    assert output["Condition"] == "HasResultsWebhook"
    assert not condition_values(translated, {})["HasResultsWebhook"]


def test_a_webhook_url_needs_a_key(translated: dict[str, Any]) -> None:
    """CloudFormation refuses the parameters before creating anything (a Rules assertion)."""
    rule = translated["Rules"]["ResultsWebhookHasAKey"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [ref("ResultsWebhookUrl"), ""]}]}
    (assertion,) = rule["Assertions"]
    key_given = {"Fn::Not": [{"Fn::Equals": [ref("ResultsWebhookApiKeyValue"), ""]}]}
    assert assertion["Assert"] == key_given
    assert translated["Parameters"]["ResultsWebhookApiKeyValue"]["NoEcho"] is True


def test_every_result_goes_to_the_webhook_with_retries_and_dead_letters(
    translated: dict[str, Any],
) -> None:
    resources = translated["Resources"]
    rule = resources["ResultsWebhookRule"]["Properties"]
    assert rule["EventBusName"] == ref("ResultsEventBus")
    assert rule["EventPattern"] == {"source": [RESULTS_SOURCE]}
    (target,) = rule["Targets"]
    assert target["Arn"] == get_att("ResultsWebhookDestination")
    assert target["RoleArn"] == get_att("ResultsWebhookRole")
    # Retried for as long as the results table keeps the result, then dead-lettered.
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
    assert target["DeadLetterConfig"] == {"Arn": get_att("ResultsWebhookDeadLetterQueue")}
    policy = resources["ResultsWebhookDeadLetterQueuePolicy"]["Properties"]
    (statement,) = statements(policy["PolicyDocument"])
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": get_att("ResultsWebhookRule")}}
    destination = resources["ResultsWebhookDestination"]["Properties"]
    assert destination["ConnectionArn"] == get_att("ResultsWebhookConnection")
    assert destination["InvocationEndpoint"] == ref("ResultsWebhookUrl")
    assert destination["HttpMethod"] == "POST"


def test_the_webhooks_key_is_kept_by_its_connection_in_a_header(translated: dict[str, Any]) -> None:
    connection = translated["Resources"]["ResultsWebhookConnection"]["Properties"]
    assert connection["AuthorizationType"] == "API_KEY"
    key = connection["AuthParameters"]["ApiKeyAuthParameters"]
    assert key["ApiKeyName"] == ref("ResultsWebhookApiKeyHeader")
    assert key["ApiKeyValue"] == {"Fn::Sub": "${ResultsWebhookApiKeyValue}"}


def test_the_webhook_role_may_only_invoke_its_destination(translated: dict[str, Any]) -> None:
    role = translated["Resources"]["ResultsWebhookRole"]["Properties"]
    (trust,) = statements(role["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    (policy,) = role["Policies"]
    (statement,) = statements(policy["PolicyDocument"])
    assert statement["Action"] == "events:InvokeApiDestination"
    assert statement["Resource"] == get_att("ResultsWebhookDestination")


# --- The functions ------------------------------------------------------------------------------


def test_each_function_has_the_shared_layer_and_the_extension_only_when_set(
    translated: dict[str, Any],
) -> None:
    (layer_id,) = resources_of_type(translated, "AWS::Lambda::LayerVersion")
    for action in ACTIONS:
        properties = translated["Resources"][action.function]["Properties"]
        plain = resolve_conditionals(properties["Layers"], {"UseSecretsExtension": False})
        assert plain == [ref(layer_id)], action.name
        extended = resolve_conditionals(properties["Layers"], {"UseSecretsExtension": True})
        assert extended == [ref(layer_id), ref("SecretsExtensionLayerArn")], action.name
        assert properties["Architectures"] == [ref("Architecture")], action.name
        tracing = resolve_conditionals(properties["TracingConfig"], {"TracingEnabled": True})
        assert tracing == {"Mode": "Active"}, action.name
    # get_result reads no secret: the shared layer only, whatever SecretsExtensionLayerArn says.
    assert translated["Resources"]["GetResultFunction"]["Properties"]["Layers"] == [ref(layer_id)]


def test_no_statement_grants_everything(translated: dict[str, Any]) -> None:
    found = []
    for logical_id, role in resources_of_type(translated, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], logical_id
        for policy in role["Properties"].get("Policies", []):
            for statement in statements(policy["PolicyDocument"]):
                if set(statement) == {"Fn::If"}:
                    found += [(logical_id, s) for s in statement["Fn::If"][1:] if "Action" in s]
                else:
                    found.append((logical_id, statement))
    assert len(found) > 2 * len(ACTIONS)
    for logical_id, statement in found:
        actions = set(as_list(statement["Action"]))
        assert not any(a == "*" or a.endswith(":*") for a in actions), logical_id
        if "*" in as_list(statement.get("Resource", [])):
            assert actions <= STAR_RESOURCE_ALLOWED_ACTIONS, (logical_id, actions)


# --- samconfig.toml environments ---------------------------------------------------------------


@pytest.fixture(params=samconfig_environments())
def environment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_visibility_is_at_least_six_function_timeouts(
    sam_template: dict[str, Any], environment: str
) -> None:
    """AWS's rule for queues that feed Lambda; CloudFormation cannot compute it."""
    values = parameter_values(sam_template, environment)
    timeout = int(values["TimeoutSeconds"])
    visibility = int(values["QueueVisibilityTimeoutSeconds"])
    assert 1 <= timeout <= 900
    assert 6 * timeout <= visibility <= MAX_VISIBILITY_TIMEOUT, (
        f"[{environment}] QueueVisibilityTimeoutSeconds={visibility} must be >= 6 x "
        f"TimeoutSeconds={timeout}"
    )


def test_batches_above_ten_have_a_batching_window(
    sam_template: dict[str, Any], environment: str
) -> None:
    """Lambda rejects an SQS batch size above 10 without a batching window."""
    values = parameter_values(sam_template, environment)
    batch_sizes = {int(values[action.batch_size]) for action in ACTIONS}
    if max(batch_sizes) > 10:
        assert int(values["MaximumBatchingWindowInSeconds"]) >= 1, environment


def test_overrides_name_only_template_parameters(
    sam_template: dict[str, Any], environment: str
) -> None:
    deploy = samconfig()[environment].get("deploy", {}).get("parameters", {})
    names = {item.split("=", 1)[0] for item in deploy.get("parameter_overrides", "").split()}
    assert names <= set(sam_template["Parameters"]), environment


def test_each_environment_can_deploy_the_template(environment: str) -> None:
    config = samconfig()[environment]
    deploy = config["deploy"]["parameters"]
    # The roles need CAPABILITY_IAM, the SAM transform CAPABILITY_AUTO_EXPAND.
    assert {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(deploy["capabilities"].split())
    if len(TEMPLATE.read_bytes()) > INLINE_TEMPLATE_LIMIT:
        assert deploy.get("resolve_s3") or deploy.get("s3_bucket"), environment
    # Function names are <stack name>-<route>.
    longest = max(len(action.route) for action in ACTIONS)
    assert len(config["global"]["parameters"]["stack_name"]) + longest <= MAX_FUNCTION_NAME


def test_environments_are_separate_stacks_and_prod_confirms_changes() -> None:
    config = samconfig()
    names = [config[env]["global"]["parameters"]["stack_name"] for env in samconfig_environments()]
    assert len(set(names)) == len(names)
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


# --- The template itself ------------------------------------------------------------------------


def test_every_parameter_is_described(sam_template: dict[str, Any]) -> None:
    """`sam deploy --guided` shows the description next to each question."""
    undescribed = [n for n, p in sam_template["Parameters"].items() if not p.get("Description")]
    assert not undescribed


def test_lint_ignores_are_the_justified_ones(sam_template: dict[str, Any]) -> None:
    ignored = set(sam_template["Metadata"]["cfn-lint"]["config"]["ignore_checks"])
    for resource in sam_template["Resources"].values():
        config = resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {})
        ignored |= set(config.get("ignore_checks", []))
    assert ignored <= JUSTIFIED_LINT_IGNORES
