"""The AWS side of the local runner: moto's server, the stack's resources in it, the env vars.

``MotoServer`` runs moto on 127.0.0.1 (a free port by default); ``provision`` creates what
template.yaml would (the Klaviyo key secret, one queue and dead-letter queue per action, the
results event bus, the idempotency table) plus a "results" queue that a rule on the bus fills
with every published result, so a local run can show what was published. ``lambda_environment``
is the functions' environment pointed at all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import ACCOUNT_ID, FUNCTION_TIMEOUT_SECONDS, REGION

RESULTS_SOURCE = "klaviyo.lead-actions"  # klaviyo_leads.publishing.SOURCE
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
DEFAULT_STACK_NAME = "klaviyo-lead-actions-local"
MAX_RECEIVE_COUNT = 5  # template.yaml's MaxReceiveCount default
# template.yaml's QueueVisibilityTimeoutSeconds default: 6 x the functions' timeout.
VISIBILITY_TIMEOUT_SECONDS = 6 * FUNCTION_TIMEOUT_SECONDS


class MotoServer:
    """moto in server mode, in a thread of this process, on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoServer:
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


def client(service: str, endpoint_url: str, region: str = REGION) -> Any:
    """A boto3 client for moto, with the dummy credentials (whatever the caller's env says)."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    ).client(service, endpoint_url=endpoint_url)


@dataclass(frozen=True)
class Queue:
    name: str
    url: str
    arn: str


@dataclass(frozen=True)
class Resources:
    """What ``provision`` created: names, URLs and ARNs."""

    endpoint_url: str
    region: str
    secret_id: str  # the secret's ARN, as the stack's KlaviyoApiKeySecretArn parameter
    event_bus_name: str
    event_bus_arn: str
    results_rule_name: str
    results_queue: Queue
    table_name: str
    queues: dict[str, Queue] = field(default_factory=dict)  # by action
    dead_letter_queues: dict[str, Queue] = field(default_factory=dict)  # by action


def _create_queue(sqs: Any, name: str, attributes: dict[str, str]) -> Queue:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return Queue(name, url, arn)


def provision(
    endpoint_url: str,
    api_key: str,
    actions: Iterable[str],
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    region: str = REGION,
    visibility_timeout_seconds: int = VISIBILITY_TIMEOUT_SECONDS,
    max_receive_count: int = MAX_RECEIVE_COUNT,
) -> Resources:
    """Create the stack's resources in moto (``api_key`` becomes the secret's value)."""
    secrets = client("secretsmanager", endpoint_url, region)
    secret_arn = secrets.create_secret(
        Name=f"{stack_name}/klaviyo-api-key",
        SecretString=api_key,
        Description="Klaviyo private API key (local)",
    )["ARN"]

    sqs = client("sqs", endpoint_url, region)
    queues: dict[str, Queue] = {}
    dead_letters: dict[str, Queue] = {}
    for action in actions:
        base = f"{stack_name}-{action.replace('_', '-')}"
        dlq = _create_queue(sqs, f"{base}-dlq", {"MessageRetentionPeriod": "1209600"})
        redrive = {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": str(max_receive_count)}
        queues[action] = _create_queue(
            sqs,
            base,
            {
                "VisibilityTimeout": str(visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        dead_letters[action] = dlq

    events = client("events", endpoint_url, region)
    bus_arn = events.create_event_bus(Name=stack_name)["EventBusArn"]
    results_queue = _create_queue(sqs, f"{stack_name}-results", {})
    rule_name = f"{stack_name}-results-to-queue"
    events.put_rule(
        Name=rule_name,
        EventBusName=stack_name,
        EventPattern=json.dumps({"source": [RESULTS_SOURCE]}),
        State="ENABLED",
        Description="Every published lead result, copied to the local results queue",
    )
    events.put_targets(
        Rule=rule_name,
        EventBusName=stack_name,
        Targets=[{"Id": "results-queue", "Arn": results_queue.arn}],
    )

    table_name = f"{stack_name}-idempotency"
    dynamodb = client("dynamodb", endpoint_url, region)
    dynamodb.create_table(
        TableName=table_name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
    )

    return Resources(
        endpoint_url=endpoint_url,
        region=region,
        secret_id=secret_arn,
        event_bus_name=stack_name,
        event_bus_arn=bus_arn,
        results_rule_name=rule_name,
        results_queue=results_queue,
        table_name=table_name,
        queues=queues,
        dead_letter_queues=dead_letters,
    )


def lambda_environment(
    resources: Resources,
    *,
    klaviyo_base_url: str | None,
    api_revision: str | None = None,
    log_level: str = "WARNING",
    coalesce_batches: bool = True,
    default_phone_region: str = "US",
) -> dict[str, str]:
    """The functions' environment (template.yaml's Globals), pointed at moto.

    ``klaviyo_base_url`` None leaves ``KLAVIYO_BASE_URL`` out: the layer's default, the real
    Klaviyo. Metrics are disabled (``POWERTOOLS_METRICS_DISABLED``: no EMF lines on stdout)
    and tracing is off.
    """
    env = {
        **DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": resources.region,
        "AWS_REGION": resources.region,
        "AWS_ENDPOINT_URL": resources.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "KLAVIYO_API_KEY_SECRET_ID": resources.secret_id,
        "DEFAULT_PHONE_REGION": default_phone_region,
        "RESULTS_EVENT_BUS_NAME": resources.event_bus_name,
        "IDEMPOTENCY_TABLE_NAME": resources.table_name,
        "COALESCE_BATCHES": "true" if coalesce_batches else "false",
        "POWERTOOLS_SERVICE_NAME": "klaviyo-lead-actions",
        "POWERTOOLS_METRICS_NAMESPACE": "KlaviyoLeadActions",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": log_level,
    }
    if klaviyo_base_url:
        env["KLAVIYO_BASE_URL"] = klaviyo_base_url
    if api_revision:
        env["KLAVIYO_API_REVISION"] = api_revision
    return env


# Variables that would send the functions somewhere else than moto if left from the caller's
# environment (a profile, per-service endpoints, the Lambda secrets extension, real credentials).
CONFLICTING_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_EVENTBRIDGE",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    "KLAVIYO_BASE_URL",
    "KLAVIYO_API_REVISION",
)

__all__ = [
    "ACCOUNT_ID",
    "CONFLICTING_ENV",
    "MotoServer",
    "Queue",
    "Resources",
    "client",
    "lambda_environment",
    "provision",
]
