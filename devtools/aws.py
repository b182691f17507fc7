"""The stack in moto: template.yaml, translated by SAM and created by moto's CloudFormation.

``deploy_local_stack`` does locally what a first deploy does (docs/deploying.md): it stores the
Klaviyo key in a Secrets Manager secret, turns template.yaml into plain CloudFormation with SAM's
own translator, as ``sam deploy`` has CloudFormation do, puts the code where the translated
template says ``sam package`` put it, and has moto's CloudFormation create the stack. It returns
what the stack's outputs and resources name: the queues of each action, the bus, the tables, the
get_result function, and the functions' environment as the template sets it. The local runner,
the soak, the benchmark's cold start and the tests all use it, so there is one description of
the stack: the template.

``MotoServer`` runs moto on 127.0.0.1 for what needs a real network boundary (the runner, the
soak, child processes); without an endpoint URL everything goes to moto in this process
(``moto.mock_aws``). ``add_results_queue`` adds a local observer of the bus: a queue that a
rule fills with every published result. ``lambda_environment`` is what a function sees.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import threading
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devtools.lambda_events import ACCOUNT_ID, REGION, ROOT
from stack.render import load_actions

TEMPLATE = ROOT / "template.yaml"
RESULTS_SOURCE = "klaviyo.lead-actions"  # klaviyo_leads.aws.bus.SOURCE
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
DEFAULT_STACK_NAME = "klaviyo-lead-actions-local"
ARTIFACT_BUCKET = "klaviyo-lead-actions-artifacts"  # where `sam package` would put the code

# moto's AWS::ApiGateway::RestApi ignores Body (the OpenAPI definition that holds every route),
# so the API it creates has no methods and it refuses the Deployment; what hangs on the stage
# goes with it. The dashboard's alarm widget names the alarms, which moto does not create
# (MOTO_SKIPS), so it refuses the dashboard too. deploy_local_stack leaves these out, and the
# outputs that name them; tests/template/test_template_invariants.py and test_dashboard.py check
# them on the translated template.
MOTO_CANNOT_BUILD = frozenset(
    {
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::UsagePlanKey",
        "AWS::WAFv2::WebACLAssociation",
        "AWS::CloudWatch::Dashboard",
    }
)
MOTO_CANNOT_OUTPUT = frozenset(
    {"ApiUrl", "DashboardUrl", "TrailWorkGroupName", "TrailDatabaseName"}
)
# Types moto's CloudFormation accepts but does not create (it records them without a type).
MOTO_SKIPS = frozenset(
    {
        "AWS::ApiGateway::ApiKey",
        "AWS::Athena::NamedQuery",
        "AWS::Athena::WorkGroup",
        "AWS::CloudWatch::Alarm",
        "AWS::Events::EventBusPolicy",
        "AWS::Glue::Database",
        "AWS::Glue::Table",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::Logs::SubscriptionFilter",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::Subscription",
        "AWS::SQS::QueuePolicy",
        "AWS::WAFv2::WebACL",
    }
)


class MotoServer:
    """moto in server mode, in a thread of this process, on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoServer:
        # The server creates stacks in its own thread, where deploy_local_stack's
        # catch_warnings does not reach.
        warnings.filterwarnings("ignore", message=_SKIPPED_WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client(service: str, endpoint_url: str | None = None, region: str = REGION) -> Any:
    """A boto3 client for moto (its server at ``endpoint_url``, else ``mock_aws`` in process),
    with the dummy credentials whatever the caller's environment says."""
    with _session_lock:
        return _session(region).client(service, endpoint_url=endpoint_url)


_session_lock = threading.Lock()


@functools.cache
def _session(region: str) -> Any:
    """One session per region: a client from a known session is quick to make (the session
    keeps the service models it has loaded)."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )


# --- The template ---------------------------------------------------------------------------


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that turns short-form intrinsics (!Ref, !GetAtt, ...) into their JSON form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """A CloudFormation YAML template as data, intrinsics in their JSON form."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)


def with_s3_code(template: dict[str, Any]) -> dict[str, Any]:
    """The template with S3 locations for CodeUri and ContentUri, as `sam package` leaves it."""
    packaged = copy.deepcopy(template)
    for logical_id, resource in packaged["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
    return packaged


def sam_translate(template: dict[str, Any], region: str = REGION) -> dict[str, Any]:
    """Plain CloudFormation from the SAM template, as CloudFormation's SAM transform makes it
    (the SAM translator, as `sam validate` runs it). The template names no managed policy, so
    the translator gets none to look up."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    packaged = with_s3_code(template)
    parameters: dict[str, Any] = {}
    to_py27_compatible_template(packaged, parameters)
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    translated = translator.translate(
        packaged, parameter_values=parameters, get_managed_policy_map=lambda: {}
    )
    result: dict[str, Any] = undo_mark_unicode_str_in_template(translated)
    return result


@functools.lru_cache(maxsize=4)
def _translated(text: str) -> str:
    return json.dumps(sam_translate(yaml.load(text, Loader=_CloudFormationLoader)))


def translated_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml translated by SAM (once per process and file content)."""
    translated: dict[str, Any] = json.loads(_translated(path.read_text(encoding="utf-8")))
    return translated


def buildable_by_moto(template: dict[str, Any]) -> dict[str, Any]:
    """The translated template without what moto cannot build (MOTO_CANNOT_BUILD)."""
    kept = {k: v for k, v in template["Resources"].items() if v["Type"] not in MOTO_CANNOT_BUILD}
    outputs = {k: v for k, v in template.get("Outputs", {}).items() if k not in MOTO_CANNOT_OUTPUT}
    return {**template, "Resources": kept, "Outputs": outputs}


# --- Deploying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    name: str
    url: str
    arn: str


@dataclass(frozen=True)
class ActionResources:
    """One action's part of the stack."""

    function_name: str
    queue: Queue
    dead_letter_queue: Queue  # the queue's: leads that failed MaxReceiveCount times
    event_dead_letter_queue: Queue  # EventBridge events and async invocations that failed
    environment: dict[str, str]  # its function's own variables (OWN_VARIABLES), as deployed


# The variables whose value differs from one action's function to the next (its queue, its
# reserved concurrency); every other variable is the same in all of them (LocalStack.environment).
OWN_VARIABLES = ("ACTION_QUEUE_URL", "KLAVIYO_CONTAINERS")


@dataclass(frozen=True)
class LocalStack:
    """A stack created in moto, as its outputs and resources name it."""

    name: str
    endpoint_url: str | None  # None: moto in this process
    region: str
    secret_arn: str
    event_bus_name: str
    event_bus_arn: str
    table_name: str  # the idempotency table
    results_table_name: str  # queued leads' results, for GET /results/{message_id}
    get_result_function_name: str  # the function behind GET /results/{message_id}
    actions: dict[str, ActionResources]  # by action name
    environment: dict[str, str]  # what every action's function has, as deployed
    physical_ids: dict[str, str]  # by logical id
    outputs: dict[str, str]


def deploy_local_stack(
    api_key: str,
    *,
    endpoint_url: str | None = None,
    name: str = DEFAULT_STACK_NAME,
    parameters: Mapping[str, str] | None = None,
    region: str = REGION,
    template: Path = TEMPLATE,
) -> LocalStack:
    """Create the stack in moto: the key's secret, then template.yaml with ``parameters``.

    The secret is not part of the stack (as in AWS: the stack receives its ARN); its value is
    ``api_key``. ``parameters`` are the stack's, e.g. ``{"KlaviyoBaseUrl": <emulator>}``.
    """
    _adapt_moto()
    secret_arn = client("secretsmanager", endpoint_url, region).create_secret(
        Name=f"{name}/klaviyo-api-key",
        SecretString=api_key,
        Description="Klaviyo private API key (local)",
    )["ARN"]
    translated = translated_template(template)
    _upload_code(translated, endpoint_url, region)
    values = {"KlaviyoApiKeySecretArn": secret_arn, **(parameters or {})}
    cloudformation = client("cloudformation", endpoint_url, region)
    with warnings.catch_warnings():  # moto parses the skipped types again on every read
        warnings.filterwarnings("ignore", message=_SKIPPED_WARNING)
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(buildable_by_moto(translated)),
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        (description,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
        if description["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack {name}: {description.get('StackStatusReason')}")
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=name)
        physical_ids = {
            r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
            for page in pages
            for r in page["StackResourceSummaries"]
            if r.get("LogicalResourceId")
        }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
    _pause_event_source_mappings(physical_ids, translated, endpoint_url, region)
    _complete_buckets(physical_ids, translated, endpoint_url, region)
    return _read_stack(name, endpoint_url, region, secret_arn, physical_ids, outputs)


def remove_local_stack(stack: LocalStack) -> None:
    """Delete what ``deploy_local_stack`` made: the stack, its retained bucket and the secret.

    moto keeps its accounts in the process, not in a server, so a stack left behind is there
    for the next one deployed by the same name in this process (its secret already exists).
    """
    endpoint_url, region = stack.endpoint_url, stack.region
    # What add_results_queue put beside the stack: its rule on the bus, and the queue.
    events = client("events", endpoint_url, region)
    rule = f"{stack.name}-results-to-queue"
    with contextlib.suppress(events.exceptions.ResourceNotFoundException):
        events.remove_targets(Rule=rule, EventBusName=stack.event_bus_name, Ids=["results-queue"])
        events.delete_rule(Name=rule, EventBusName=stack.event_bus_name)
    sqs = client("sqs", endpoint_url, region)
    with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{stack.name}-results")["QueueUrl"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SKIPPED_WARNING)
        client("cloudformation", endpoint_url, region).delete_stack(StackName=stack.name)
    bucket = stack.physical_ids.get("LeadFilesBucket")
    if bucket:  # DeletionPolicy: Retain keeps it in AWS; here it goes with the stack
        s3 = client("s3", endpoint_url, region)
        try:
            versions = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
            for page in versions:
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
            s3.delete_bucket(Bucket=bucket)
        except s3.exceptions.NoSuchBucket:
            pass
    client("secretsmanager", endpoint_url, region).delete_secret(
        SecretId=stack.secret_arn, ForceDeleteWithoutRecovery=True
    )


def _pause_event_source_mappings(
    physical_ids: dict[str, str], translated: dict[str, Any], endpoint_url: str | None, region: str
) -> None:
    """moto would run the function on every SendMessage to a queue with an enabled mapping,
    which needs Docker (and loses the batch without it). Locally the runner's poller, the soak
    and the tests play the event source mapping, so the stack's mappings are switched off."""
    lambda_ = client("lambda", endpoint_url, region)
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"] == "AWS::Lambda::EventSourceMapping":
            lambda_.update_event_source_mapping(UUID=physical_ids[logical_id], Enabled=False)


def _complete_buckets(
    physical_ids: dict[str, str], translated: dict[str, Any], endpoint_url: str | None, region: str
) -> None:
    """moto's CloudFormation builds a bucket with its encryption only: versioning and the
    public access block are applied here as the template states them (a new upload of the same
    key is a new version, as deployed). test_template_invariants.py checks the rest."""
    s3 = client("s3", endpoint_url, region)
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"] != "AWS::S3::Bucket" or logical_id not in physical_ids:
            continue
        properties = resource.get("Properties", {})
        bucket = physical_ids[logical_id]
        versioning = properties.get("VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": versioning["Status"]}
            )
        blocked = properties.get("PublicAccessBlockConfiguration")
        if blocked:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=dict(blocked))


def _read_stack(
    name: str,
    endpoint_url: str | None,
    region: str,
    secret_arn: str,
    physical_ids: dict[str, str],
    outputs: dict[str, str],
) -> LocalStack:
    sqs = client("sqs", endpoint_url, region)
    lambda_ = client("lambda", endpoint_url, region)

    def queue(output: str) -> Queue:
        url = outputs[output]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return Queue(arn.rsplit(":", 1)[-1], url, arn)

    def variables(function_name: str) -> dict[str, str]:
        configuration = lambda_.get_function_configuration(FunctionName=function_name)
        # moto keeps a Number parameter's value as a number; Lambda's are strings.
        return {k: str(v) for k, v in configuration["Environment"]["Variables"].items()}

    actions: dict[str, ActionResources] = {}
    shared: list[dict[str, str]] = []
    for action in load_actions():
        function_name = physical_ids[f"{action.prefix}Function"]
        deployed = variables(function_name)
        shared.append({k: v for k, v in deployed.items() if k not in OWN_VARIABLES})
        actions[action.name] = ActionResources(
            function_name=function_name,
            queue=queue(f"{action.prefix}QueueUrl"),
            dead_letter_queue=queue(f"{action.prefix}DeadLetterQueueUrl"),
            event_dead_letter_queue=queue(f"{action.prefix}EventDeadLetterQueueUrl"),
            environment={k: v for k, v in deployed.items() if k in OWN_VARIABLES},
        )
    environment = shared[0]
    if any(env != environment for env in shared):
        raise RuntimeError(
            "the functions' environments differ beyond OWN_VARIABLES; one process cannot run "
            "them all"
        )
    bus_name = outputs["LeadsAndResultsEventBusName"]
    bus_arn = client("events", endpoint_url, region).describe_event_bus(Name=bus_name)["Arn"]
    return LocalStack(
        name=name,
        endpoint_url=endpoint_url,
        region=region,
        secret_arn=secret_arn,
        event_bus_name=bus_name,
        event_bus_arn=bus_arn,
        table_name=outputs["IdempotencyTableName"],
        results_table_name=outputs["ResultsTableName"],
        get_result_function_name=physical_ids["GetResultFunction"],
        actions=actions,
        environment=dict(environment),
        physical_ids=physical_ids,
        outputs=outputs,
    )


def _upload_code(template: dict[str, Any], endpoint_url: str | None, region: str) -> None:
    """What `sam package` would have put in its bucket. moto never runs the code (that needs
    Docker): the handlers run in this process, so a stub stands in for each function."""
    s3 = client("s3", endpoint_url, region)
    if ARTIFACT_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    stub = _zip({"app.py": "def lambda_handler(event, context):\n    raise NotImplementedError\n"})
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Lambda::Function":
            key = resource["Properties"]["Code"]["S3Key"]
            s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=stub)
        elif resource["Type"] == "AWS::Lambda::LayerVersion":
            key = resource["Properties"]["Content"]["S3Key"]
            s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=_zip({"python/README": "stub\n"}))


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


_SKIPPED_WARNING = "Tried to parse .* not supported by moto's CloudFormation"


class _KnownSkips(logging.Filter):
    """Drops moto's warning for each resource of a type in MOTO_SKIPS (they are known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        skipped = record.msg == "No Moto CloudFormation support for %s"
        return not (skipped and isinstance(record.args, tuple) and record.args[0] in MOTO_SKIPS)


@functools.cache
def _adapt_moto() -> None:
    """Once per process: quiet the known skips, and give the event bus its physical id.

    moto 5.2.5's EventBus has none, so its Ref yields a Python object; real CloudFormation's
    Ref of an AWS::Events::EventBus is the bus name."""
    from moto.events.models import EventBus

    if "physical_resource_id" not in vars(EventBus):
        EventBus.physical_resource_id = property(lambda bus: bus.name)  # type: ignore[attr-defined]
    logging.getLogger("moto").addFilter(_KnownSkips())


# --- Local additions ----------------------------------------------------------------------------


def add_results_queue(stack: LocalStack) -> Queue:
    """A queue that a rule on the stack's bus fills with every published result, so a local
    run can read what was published (in AWS, whoever wants the results adds such a rule)."""
    sqs = client("sqs", stack.endpoint_url, stack.region)
    name = f"{stack.name}-results"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = client("events", stack.endpoint_url, stack.region)
    rule = f"{stack.name}-results-to-queue"
    events.put_rule(
        Name=rule,
        EventBusName=stack.event_bus_name,
        EventPattern=json.dumps({"source": [RESULTS_SOURCE]}),
        State="ENABLED",
        Description="Every published lead result, copied to the local results queue",
    )
    events.put_targets(
        Rule=rule,
        EventBusName=stack.event_bus_name,
        Targets=[{"Id": "results-queue", "Arn": arn}],
    )
    return Queue(name, url, arn)


def lambda_environment(stack: LocalStack, action: str | None = None) -> dict[str, str]:
    """What a function of the stack sees: the environment the template gives it, the dummy
    credentials, the region, and moto's endpoint when moto is a server.

    Without ``action``, what every action's function has (one process may run them all, as
    the runner does); with it, also that action's own variables (its queue's URL)."""
    own = stack.actions[action].environment if action is not None else {}
    env = {
        **stack.environment,
        **own,
        **DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": stack.region,
        "AWS_REGION": stack.region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if stack.endpoint_url:
        env["AWS_ENDPOINT_URL"] = stack.endpoint_url
    return env


def local_parameters(
    *, klaviyo_base_url: str | None = None, log_level: str = "WARNING"
) -> dict[str, str]:
    """Stack parameters for a local run: Klaviyo where the emulator is (None: the real one),
    and quieter logs (no DEBUG samples). Against the emulator, Delete Profile is switched on
    so that it can be shown; against a real account it stays off, as deployed."""
    parameters = {"LogLevel": log_level, "DebugSampleRate": "0"}
    if klaviyo_base_url:
        parameters["KlaviyoBaseUrl"] = klaviyo_base_url
        parameters["EnableProfileDeletion"] = "true"
    return parameters


# Variables that would send the functions somewhere else than moto if left from the caller's
# environment (a profile, per-service endpoints, the Lambda secrets extension, real credentials).
CONFLICTING_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_EVENTBRIDGE",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    "KLAVIYO_BASE_URL",
    "KLAVIYO_API_REVISION",
    "ACTION_QUEUE_URL",  # one action's own (OWN_VARIABLES): lambda_environment(stack, action)
    "KLAVIYO_CONTAINERS",
)

__all__ = [
    "ACCOUNT_ID",
    "CONFLICTING_ENV",
    "OWN_VARIABLES",
    "ActionResources",
    "LocalStack",
    "MotoServer",
    "Queue",
    "add_results_queue",
    "client",
    "deploy_local_stack",
    "lambda_environment",
    "load_template",
    "local_parameters",
]
