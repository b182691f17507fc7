"""The deployment check that runs without an AWS account.

`sam deploy` = SAM's transform + CloudFormation. Here SAM's own transform turns template.yaml into
plain CloudFormation, moto's CloudFormation creates the stack, and the tests read the wiring back
from the created resources through the AWS APIs: which queue feeds which function, where a failed
message goes, which ARNs each role may touch.

Where moto cannot create a resource (see MOTO_SKIPS and MOTO_CANNOT_BUILD), the test asserts on
the transformed template instead, and says so.
"""

from __future__ import annotations

import ast
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.events.models import EventBus

from tests.template.cfn_template import (
    ACCOUNT_ID,
    ACTIONS,
    ARTIFACT_BUCKET,
    REGION,
    ROOT,
    SECRET_ARN,
    Action,
    as_list,
    resolve_conditionals,
    resources_of_type,
    statements,
)

# moto warns about every resource type it skips; MOTO_SKIPS below lists them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")

KMS_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXTENSION_LAYER_ARN = (
    f"arn:aws:lambda:{REGION}:177933569100:layer:AWS-Parameters-and-Secrets-Lambda-Extension:12"
)

# moto's AWS::ApiGateway::RestApi ignores Body (the OpenAPI definition that holds every route), so
# the API it creates has no methods and it refuses the Deployment. What hangs on the deployment's
# stage goes with it. All of these are checked on the transformed template below.
MOTO_CANNOT_BUILD = {
    "AWS::ApiGateway::Deployment",
    "AWS::ApiGateway::Stage",
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::UsagePlanKey",
    "AWS::WAFv2::WebACLAssociation",
}

# Types moto's CloudFormation accepts but does not create (it records them without a type).
# template.yaml states them, and test_template_invariants.py checks what they say.
MOTO_SKIPS = {
    "AWS::ApiGateway::ApiKey",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::SNS::Subscription",
    "AWS::SQS::QueuePolicy",
    "AWS::WAFv2::WebACL",
}


@dataclass
class Stack:
    """A stack created in moto, and clients to look at it."""

    name: str
    physical_ids: dict[str, str]
    outputs: dict[str, str]

    def __post_init__(self) -> None:
        self.lambda_ = boto3.client("lambda", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.iam = boto3.client("iam", region_name=REGION)
        self.events = boto3.client("events", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)

    def queue_attributes(self, logical_id: str) -> dict[str, str]:
        url = self.physical_ids[logical_id]
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    def queue_arn(self, logical_id: str) -> str:
        return self.queue_attributes(logical_id)["QueueArn"]

    def function(self, action: Action) -> dict[str, Any]:
        name = self.physical_ids[action.function]
        return self.lambda_.get_function_configuration(FunctionName=name)

    def role_statements(self, logical_id: str) -> list[dict[str, Any]]:
        role_name = self.physical_ids[logical_id]
        found = []
        for policy_name in self.iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
            document = self.iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)
            policy = document["PolicyDocument"]
            if isinstance(policy, str):  # moto stores a CloudFormation role's policy as a repr
                policy = ast.literal_eval(policy)
            # moto keeps an AWS::NoValue list item as None; CloudFormation drops it.
            found += [s for s in statements(policy) if s is not None]
        return found

    def bus_arn(self) -> str:
        return self.events.describe_event_bus(Name=self.outputs["ResultsEventBusName"])["Arn"]

    def table_arn(self) -> str:
        table = self.outputs["IdempotencyTableName"]
        return self.dynamodb.describe_table(TableName=table)["Table"]["TableArn"]


def code_zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload_artifacts(template: dict[str, Any]) -> None:
    """What `sam package` would have put in its bucket: the code the transformed template names."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            key = resource["Properties"]["Code"]["S3Key"]
            s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=code_zip({"app.py": "pass\n"}))
        elif resource["Type"] == "AWS::Lambda::LayerVersion":
            key = resource["Properties"]["Content"]["S3Key"]
            init = (ROOT / "layers/shared/klaviyo_leads/__init__.py").read_text()
            s3.put_object(
                Bucket=ARTIFACT_BUCKET,
                Key=key,
                Body=code_zip({"python/klaviyo_leads/__init__.py": init}),
            )


def buildable_by_moto(template: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in template["Resources"].items() if v["Type"] not in MOTO_CANNOT_BUILD}
    outputs = {k: v for k, v in template["Outputs"].items() if k != "ApiUrl"}  # names the stage
    return {**template, "Resources": kept, "Outputs": outputs}


def create_stack(template: dict[str, Any], name: str, parameters: dict[str, str]) -> Stack:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(buildable_by_moto(template)),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    (description,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    assert description["StackStatus"] == "CREATE_COMPLETE", description.get("StackStatusReason")
    pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=name)
    resources = [r for page in pages for r in page["StackResourceSummaries"]]
    return Stack(
        name=name,
        physical_ids={r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources},
        outputs={o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])},
    )


@pytest.fixture(scope="module")
def aws(aws_environment: None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        # moto 5.2.5's EventBus has no physical id, so its Ref yields a Python object; real
        # CloudFormation's Ref of an AWS::Events::EventBus is the bus name.
        patch.setattr(
            EventBus, "physical_resource_id", property(lambda bus: bus.name), raising=False
        )
        yield


@pytest.fixture(scope="module")
def stacks(aws: None, transformed_template: dict[str, Any]) -> dict[str, Stack]:
    upload_artifacts(transformed_template)
    return {
        # Parameter defaults, as `sam deploy --guided` proposes them.
        "default": create_stack(
            transformed_template, "leads-default", {"KlaviyoApiKeySecretArn": SECRET_ARN}
        ),
        # Every optional feature switched the other way.
        "options": create_stack(
            transformed_template,
            "leads-options",
            {
                "KlaviyoApiKeySecretArn": SECRET_ARN,
                "KlaviyoApiKeySecretKmsKeyArn": KMS_KEY_ARN,
                "SecretsExtensionLayerArn": EXTENSION_LAYER_ARN,
                "EnableTracing": "true",
                "ApiAuthType": "AWS_IAM",
                "TimeoutSeconds": "60",
                "QueueVisibilityTimeoutSeconds": "360",
                "AlarmEmail": "alarms@example.com",
            },
        ),
    }


@pytest.fixture(scope="module")
def stack(stacks: dict[str, Stack]) -> Stack:
    return stacks["default"]


# --- What moto built ----------------------------------------------------------------------------


def test_moto_skipped_only_the_known_types(
    stack: Stack, transformed_template: dict[str, Any]
) -> None:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack.name)
    listed = [r for page in pages for r in page["StackResourceSummaries"]]
    # moto records a resource it skips with neither type nor logical id: count them.
    skipped = [r for r in listed if not r["ResourceType"]]
    resources = transformed_template["Resources"].values()
    assert len(skipped) == sum(1 for r in resources if r["Type"] in MOTO_SKIPS)
    created = {r["ResourceType"] for r in listed if r["ResourceType"]}
    expected = {r["Type"] for r in resources}
    assert expected >= MOTO_SKIPS
    assert created == expected - MOTO_SKIPS - MOTO_CANNOT_BUILD


def test_function_configuration(stack: Stack, action: Action) -> None:
    function = stack.function(action)
    assert function["FunctionName"] == f"{stack.name}-{action.route.lstrip('/')}"
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "app.lambda_handler"
    assert function["Timeout"] == 360
    assert function["MemorySize"] == 256
    role_name = stack.physical_ids[action.role]
    assert function["Role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{role_name}"
    variables = function["Environment"]["Variables"]
    assert variables["KLAVIYO_API_KEY_SECRET_ID"] == SECRET_ARN
    assert variables["RESULTS_EVENT_BUS_NAME"] == stack.name == stack.outputs["ResultsEventBusName"]
    assert variables["IDEMPOTENCY_TABLE_NAME"] == stack.outputs["IdempotencyTableName"]
    assert variables["KLAVIYO_BASE_URL"] == "https://a.klaviyo.com"
    assert variables["KLAVIYO_API_REVISION"] == "2026-07-15"
    assert variables["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" not in variables


def test_function_configuration_follows_parameters(
    stacks: dict[str, Stack], action: Action
) -> None:
    function = stacks["options"].function(action)
    assert function["Timeout"] == 60
    variables = function["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACE_DISABLED"] == "false"
    assert variables["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] == "2773"


def test_function_layers_and_architecture(
    transformed_template: dict[str, Any], action: Action
) -> None:
    # moto's AWS::Lambda::Function ignores Layers, Architectures and TracingConfig: read them
    # from the transformed template.
    properties = transformed_template["Resources"][action.function]["Properties"]
    (layer_id,) = resources_of_type(transformed_template, "AWS::Lambda::LayerVersion")
    plain = resolve_conditionals(properties["Layers"], {"UseSecretsExtension": False})
    assert plain == [{"Ref": layer_id}]
    assert properties["Architectures"] == [{"Ref": "Architecture"}]
    assert properties["TracingConfig"]["Mode"] == {
        "Fn::If": ["TracingEnabled", "Active", "PassThrough"]
    }


def test_queue_feeds_its_function_with_partial_batch_failures(stack: Stack, action: Action) -> None:
    mappings = stack.lambda_.list_event_source_mappings(
        FunctionName=stack.physical_ids[action.function]
    )["EventSourceMappings"]
    assert len(mappings) == 1
    (mapping,) = mappings
    assert mapping["EventSourceArn"] == stack.queue_arn(action.queue)
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    bulk = action.name in {"add_profile_to_list", "subscribe_profile_to_list"}
    assert mapping["BatchSize"] == (1000 if bulk else 100)
    assert mapping["MaximumBatchingWindowInSeconds"] == 5
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_queue_redrives_to_its_dead_letter_queue(stack: Stack, action: Action) -> None:
    queue = stack.queue_attributes(action.queue)
    assert queue["VisibilityTimeout"] == "2160"
    assert queue["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == stack.queue_arn(action.dead_letter_queue)
    assert int(redrive["maxReceiveCount"]) == 5
    for dead_letters in (action.dead_letter_queue, action.event_dead_letter_queue):
        attributes = stack.queue_attributes(dead_letters)
        assert attributes["MessageRetentionPeriod"] == "1209600"
        assert attributes["SqsManagedSseEnabled"] == "true"


def test_visibility_timeout_follows_its_parameter(stacks: dict[str, Stack], action: Action) -> None:
    assert stacks["options"].queue_attributes(action.queue)["VisibilityTimeout"] == "360"


def test_bus_rule_invokes_the_function_with_a_dead_letter_queue(
    stack: Stack, action: Action
) -> None:
    rules = [
        r
        for r in stack.events.list_rules(EventBusName=stack.name)["Rules"]
        if json.loads(r["EventPattern"]) == {"detail-type": [f"{action.name} lead"]}
    ]
    assert len(rules) == 1
    (rule,) = rules
    targets = stack.events.list_targets_by_rule(Rule=rule["Name"], EventBusName=stack.name)
    (target,) = targets["Targets"]
    assert target["Arn"] == stack.function(action)["FunctionArn"]
    assert target["DeadLetterConfig"]["Arn"] == stack.queue_arn(action.event_dead_letter_queue)
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_function_role_references_its_resources_by_arn(stack: Stack, action: Action) -> None:
    granted = {s["Sid"]: s for s in stack.role_statements(action.role)}
    function_name = stack.physical_ids[action.function]
    assert granted["ReadKlaviyoKey"]["Resource"] == SECRET_ARN
    assert granted["ConsumeOwnQueue"]["Resource"] == stack.queue_arn(action.queue)
    assert granted["DeadLetterFailedEvents"]["Resource"] == stack.queue_arn(
        action.event_dead_letter_queue
    )
    assert granted["PublishResults"]["Resource"] == stack.bus_arn()
    assert granted["IdempotencyRecords"]["Resource"] == stack.table_arn()
    assert granted["WriteOwnLogs"]["Resource"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/lambda/{function_name}:*"
    )
    assert "DecryptKlaviyoKey" not in granted
    assert "WriteTraces" not in granted
    for statement in granted.values():
        assert "*" not in as_list(statement["Resource"])
    attached = stack.iam.list_attached_role_policies(RoleName=stack.physical_ids[action.role])
    assert attached["AttachedPolicies"] == []


def test_function_role_optional_grants(stacks: dict[str, Stack], action: Action) -> None:
    granted = {s["Sid"]: s for s in stacks["options"].role_statements(action.role)}
    decrypt = granted["DecryptKlaviyoKey"]
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Resource"] == KMS_KEY_ARN
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    }
    assert granted["WriteTraces"]["Resource"] == "*"


def test_intake_role_sends_only_to_its_queue(stack: Stack, action: Action) -> None:
    (statement,) = stack.role_statements(action.intake_role)
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == stack.queue_arn(action.queue)
    role = stack.iam.get_role(RoleName=stack.physical_ids[action.intake_role])["Role"]
    trust = statements(role["AssumeRolePolicyDocument"])
    assert [s["Principal"] for s in trust] == [{"Service": "apigateway.amazonaws.com"}]


def test_function_may_be_invoked_by_its_route_and_its_rule(stack: Stack, action: Action) -> None:
    policy = json.loads(
        stack.lambda_.get_policy(FunctionName=stack.physical_ids[action.function])["Policy"]
    )
    sources = {
        s["Principal"]["Service"]: s["Condition"]["ArnLike"]["AWS:SourceArn"]
        for s in policy["Statement"]
    }
    api_id = stack.physical_ids["Api"]
    assert sources == {
        "apigateway.amazonaws.com": (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{api_id}/*/POST{action.route}"
        ),
        "events.amazonaws.com": stack.events.describe_rule(
            Name=stack.physical_ids[action.rule].split("|")[-1], EventBusName=stack.name
        )["Arn"],
    }


def test_outputs_name_the_created_resources(stack: Stack) -> None:
    for action in ACTIONS:
        for queue in (action.queue, action.dead_letter_queue, action.event_dead_letter_queue):
            assert stack.outputs[f"{queue}Url"] == stack.physical_ids[queue]
    assert stack.outputs["IdempotencyTableName"] == stack.physical_ids["IdempotencyTable"]


# --- The API, on the transformed template (moto cannot build it, see MOTO_CANNOT_BUILD) --------


def api_definition(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["Api"]["Properties"]["Body"]


def test_sync_route_invokes_its_function(
    transformed_template: dict[str, Any], action: Action
) -> None:
    method = api_definition(transformed_template)["paths"][action.route]["post"]
    integration = method["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    assert integration["httpMethod"] == "POST"
    assert f"${{{action.function}.Arn}}" in integration["uri"]["Fn::Sub"]
    assert integration["timeoutInMillis"] <= 29_000


def test_every_method_requires_the_api_key_by_default(
    transformed_template: dict[str, Any],
) -> None:
    paths = api_definition(transformed_template)["paths"]
    methods = [(route, m) for route, item in paths.items() for m in item.values()]
    assert len(methods) == 2 * len(ACTIONS)
    for route, method in methods:
        default = resolve_conditionals(method["security"], {"UseIamAuth": False})
        assert default == [{"api_key": []}], route
        iam = resolve_conditionals(method["security"], {"UseIamAuth": True})
        assert iam == [{"sigv4": []}], route
        assert "x-amazon-apigateway-integration" in method, route


def test_async_route_queues_with_its_intake_role(
    transformed_template: dict[str, Any], action: Action
) -> None:
    method = api_definition(transformed_template)["paths"][action.async_route]["post"]
    integration = method["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws"
    assert f"${{{action.queue}.QueueName}}" in integration["uri"]["Fn::Sub"]
    assert integration["credentials"] == {"Fn::GetAtt": [action.intake_role, "Arn"]}


def test_one_stage_with_logging_throttling_and_usage_plan(
    transformed_template: dict[str, Any],
) -> None:
    stages = resources_of_type(transformed_template, "AWS::ApiGateway::Stage")
    assert len(stages) == 1, "SAM's extra 'Stage' stage must not exist"
    ((stage_id, stage),) = stages.items()
    properties = stage["Properties"]
    assert properties["StageName"] == "v1"
    (deployment_id,) = resources_of_type(transformed_template, "AWS::ApiGateway::Deployment")
    assert properties["DeploymentId"] == {"Ref": deployment_id}
    deployment = transformed_template["Resources"][deployment_id]["Properties"]
    assert "StageName" not in deployment
    assert properties["AccessLogSetting"]["DestinationArn"] == {
        "Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]
    }
    (settings,) = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    plan = transformed_template["Resources"]["ApiUsagePlan"]["Properties"]
    assert plan["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": stage_id}}]
    association = transformed_template["Resources"]["ApiWebAclAssociation"]["Properties"]
    assert f"/stages/${{{stage_id}}}" in association["ResourceArn"]["Fn::Sub"]
