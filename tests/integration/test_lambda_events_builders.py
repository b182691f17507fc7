"""devtools.lambda_events: events shaped as AWS sends them, that the handlers accept."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    EventBridgeModel,
    SqsModel,
)

from devtools import events as samples
from devtools import lambda_events as le
from devtools.memory_dynamodb import memory_ledger
from devtools.runner import DEMO_ORDER
from devtools.sandbox import seed_demo_data
from klaviyo_leads.config import Settings
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.runtime import Runtime
from klaviyo_leads.triggers.dispatch import event_kind

API_KEY = "pk_test_emulator"
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:leads"

# -- API Gateway REST (v1) -----------------------------------------------------------------


def test_rest_event_mirrors_the_request() -> None:
    event = le.api_gateway_event(
        "post",
        "/create-profile?src=web&tag=a&tag=b",
        [("Content-Type", "application/json"), ("X-Tag", "one"), ("x-tag", "two")],
        '{"email": "a@example.com"}',
        request_id="req-1",
        now=1_700_000_000,
    )
    APIGatewayProxyEventModel.model_validate(event)
    assert event_kind(event) == "api"
    assert (event["httpMethod"], event["path"], event["resource"]) == (
        "POST",
        "/create-profile",
        "/create-profile",
    )
    assert event["queryStringParameters"] == {"src": "web", "tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"src": ["web"], "tag": ["a", "b"]}
    assert event["headers"]["X-Tag"] == "two"
    assert event["multiValueHeaders"]["X-Tag"] == ["one", "two"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["headers"]["X-Forwarded-Proto"] == "https"
    assert (event["body"], event["isBase64Encoded"]) == ('{"email": "a@example.com"}', False)
    context = event["requestContext"]
    assert context["requestId"] == "req-1"
    assert context["path"] == "/v1/create-profile"
    assert context["stage"] == "v1"
    assert context["requestTimeEpoch"] == 1_700_000_000_000
    assert context["requestTime"] == "14/Nov/2023:22:13:20 +0000"
    assert context["identity"]["sourceIp"] == "127.0.0.1"


def test_rest_event_without_query_or_body_has_nulls() -> None:
    event = le.api_gateway_event("POST", "/get-profiles", {"Accept": "*/*"})
    APIGatewayProxyEventModel.model_validate(event)
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None
    assert event["requestContext"]["requestId"]


def test_rest_event_query_argument_and_forwarded_for() -> None:
    event = le.api_gateway_event(
        "POST",
        "/get-profiles",
        {"X-Forwarded-For": "203.0.113.9"},
        "{}",
        {"debug": "1", "tag": ["x", "y"]},
        source_ip="198.51.100.7",
    )
    assert event["multiValueQueryStringParameters"] == {"debug": ["1"], "tag": ["x", "y"]}
    assert event["headers"]["X-Forwarded-For"] == "203.0.113.9, 198.51.100.7"
    assert event["requestContext"]["identity"]["sourceIp"] == "198.51.100.7"


def test_non_text_bodies_are_base64_encoded() -> None:
    raw = json.dumps({"email": "b@example.com"}).encode()
    event = le.api_gateway_event(
        "POST", "/create-profile", {"Content-Type": "application/octet-stream"}, raw
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw
    text = le.api_gateway_event(
        "POST", "/create-profile", {"Content-Type": "application/json; charset=utf-8"}, raw
    )
    assert (text["body"], text["isBase64Encoded"]) == (raw.decode(), False)


# -- API Gateway HTTP (v2) -----------------------------------------------------------------


def test_http_api_event_mirrors_the_request() -> None:
    event = le.http_api_event(
        "POST",
        "/create-profile?a=1&a=2",
        [
            ("Content-Type", "application/json"),
            ("X-Tag", "one"),
            ("X-Tag", "two"),
            ("Cookie", "s=1; t=2"),
        ],
        "{}",
        request_id="req-2",
        now=1_700_000_000,
    )
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event_kind(event) == "api"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /create-profile"
    assert event["rawPath"] == "/create-profile"
    assert event["rawQueryString"] == "a=1&a=2"
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["headers"]["x-tag"] == "one,two"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["requestId"] == "req-2"
    assert event["requestContext"]["timeEpoch"] == 1_700_000_000_000


def test_http_api_event_leaves_out_absent_parts() -> None:
    event = le.http_api_event("POST", "/get-profiles")
    APIGatewayProxyEventV2Model.model_validate(event)
    assert "body" not in event
    assert "queryStringParameters" not in event
    assert "cookies" not in event
    assert event["rawQueryString"] == ""


# -- SQS -----------------------------------------------------------------------------------


def test_sqs_event_from_received_messages() -> None:
    body = json.dumps({"email": "c@example.com"})
    messages = [
        le.sqs_message(body, message_id="m-1", message_attributes={"api_request_id": "abc"}),
        le.sqs_message("{}", message_id="m-2", receive_count=3),
    ]
    event = le.sqs_event(messages, QUEUE_ARN)
    SqsModel.model_validate(event)
    assert event_kind(event) == "sqs"
    first, second = event["Records"]
    assert first["messageId"] == "m-1"
    assert first["body"] == body
    assert first["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    # The digest SQS itself returns for this one attribute.
    assert first["md5OfMessageAttributes"] == "7d9cc949737d37571f1985f561302b59"
    assert first["messageAttributes"]["api_request_id"] == {
        "stringValue": "abc",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert first["eventSource"] == "aws:sqs"
    assert first["eventSourceARN"] == QUEUE_ARN
    assert first["awsRegion"] == "eu-west-1"
    assert second["attributes"]["ApproximateReceiveCount"] == "3"
    assert second["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in second
    assert first["receiptHandle"] != second["receiptHandle"]


def test_sqs_event_keeps_only_the_attributes_lambda_passes() -> None:
    message = le.sqs_message("{}", message_id="m-3")
    message["Attributes"]["ApproximateNumberOfMessages"] = "7"  # not a message attribute
    message["Attributes"]["AWSTraceHeader"] = "Root=1-5e1b4151-5ac6c58f5b5dbd6a6d2f1b7c"
    record = le.sqs_event([message], QUEUE_ARN)["Records"][0]
    assert set(record["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "AWSTraceHeader",
    }


# -- EventBridge ---------------------------------------------------------------------------


def test_eventbridge_event() -> None:
    event = le.eventbridge_event(
        "create_profile lead", {"email": "d@example.com"}, source="com.example", now=0
    )
    EventBridgeModel.model_validate(event)
    assert event_kind(event) == "eventbridge"
    assert event["time"] == "1970-01-01T00:00:00Z"
    assert event["detail"] == {"email": "d@example.com"}


# -- Context and handlers ------------------------------------------------------------------


def test_context_counts_down_from_its_timeout() -> None:
    now = [100.0]
    context = le.LambdaContext(function_name="f", timeout_seconds=10, clock=lambda: now[0])
    assert context.get_remaining_time_in_millis() == 10_000
    now[0] += 2.5
    assert context.get_remaining_time_in_millis() == 7_500
    now[0] += 60
    assert context.get_remaining_time_in_millis() == 0
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:f"


def test_context_for_an_action_is_named_like_the_deployed_function() -> None:
    context = le.LambdaContext.for_action("add_profile_to_list")
    assert context.function_name == "klaviyo-lead-actions-add-profile-to-list"
    assert context.memory_limit_in_mb == 256
    assert 359_000 < context.get_remaining_time_in_millis() <= 360_000
    assert context.aws_request_id != le.LambdaContext.for_action("x").aws_request_id


def test_load_handler_imports_each_function_once_under_its_own_name() -> None:
    create = le.load_handler("create_profile")
    get = le.load_handler("get_profiles")
    assert create is le.load_handler("create_profile")
    assert create is not get
    module = sys.modules["_lambda_function_create_profile_app"]
    assert module.__file__ == str(le.FUNCTIONS_DIR / "create_profile" / "app.py")
    assert module.lambda_handler is create
    assert sys.modules["_lambda_function_get_profiles_app"].lambda_handler is get


@pytest.mark.parametrize("action", ["nope", "../layers", ""])
def test_load_handler_refuses_unknown_actions(action: str) -> None:
    with pytest.raises(KeyError):
        le.load_handler(action)


@pytest.fixture
def demo_runtime(klaviyo_emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The handlers' runtime against the emulator with the demo data; no AWS."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    seed_demo_data(klaviyo_emulator)
    settings = Settings(
        base_url=klaviyo_emulator.base_url,
        api_key_secret_id="unused",
        profile_deletion_enabled=True,  # as the local stack has it against the emulator
    )
    client = KlaviyoClient(
        settings.base_url, settings.api_revision, lambda force: API_KEY, sleep=lambda s: None
    )
    runtime = Runtime(settings=settings, client=client, ledger=memory_ledger())
    entrypoint.reset_runtime(runtime)
    yield runtime
    entrypoint.reset_runtime()


def test_handlers_answer_the_built_events(demo_runtime: Runtime) -> None:
    lead = {"email": "e.lead@example.com", "phone_1": "(303) 555-0104", "first_name": "Eve"}
    rest = le.invoke(
        "create_profile",
        le.api_gateway_event(
            "POST", "/create-profile", {"Content-Type": "application/json"}, json.dumps(lead)
        ),
    )
    assert rest["statusCode"] == 200
    created = json.loads(rest["body"])
    assert (created["outcome"], bool(created["id"])) == ("success", True)

    http = le.invoke(
        "create_profile",
        le.http_api_event(
            "POST", "/create-profile", {"Content-Type": "application/json"}, json.dumps(lead)
        ),
    )
    assert http["statusCode"] == 422
    assert json.loads(http["body"])["id"] == created["id"]

    binary = le.invoke(
        "get_profiles",
        le.api_gateway_event(
            "POST",
            "/get-profiles",
            {"Content-Type": "application/octet-stream"},
            json.dumps({"email": lead["email"]}).encode(),
        ),
    )
    assert binary["statusCode"] == 200
    assert json.loads(binary["body"])["id"] == created["id"]

    queued = le.invoke(
        "get_profiles",
        le.sqs_event(
            [le.sqs_message(json.dumps({"email": lead["email"]})), le.sqs_message('{"x": 1}')],
            QUEUE_ARN,
        ),
    )
    assert queued == {"batchItemFailures": []}

    found = le.invoke(
        "get_profiles",
        le.eventbridge_event("get_profiles lead", {"phone_1": "303.555.0104"}, source="test"),
    )
    assert (found["outcome"], found["id"]) == ("success", created["id"])


@pytest.mark.parametrize("action", DEMO_ORDER)
def test_every_sample_event_is_accepted_by_its_handler(demo_runtime: Runtime, action: str) -> None:
    if action != "create_profile":  # the later samples look up the people it creates
        le.invoke("create_profile", {"leads": samples.SAMPLE_LEADS["create_profile"]})
    for name in samples.FILES:
        event = json.loads((samples.EVENTS_DIR / action / name).read_text("utf-8"))
        answer = le.invoke(action, event)
        if name.startswith("api-"):
            assert answer["statusCode"] in (200, 422), (name, answer)
            results = [json.loads(answer["body"])]
        elif name == "sqs.json":
            assert answer == {"batchItemFailures": []}, name
            continue
        elif name.endswith("-batch.json"):
            results = answer["results"]
            assert len(results) == 2, name
        else:
            results = [answer]
        for result in results:
            assert result["outcome"] in ("success", "failure"), (name, result)
