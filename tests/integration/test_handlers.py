"""The functions' handlers through every trigger, against the emulator and moto (in process).

These run what Lambda runs: ``functions/<action>/app.py``'s handler, its runtime built from
the environment the deployed stack gives the function (template.yaml in moto), the API key
read from the stack's secret, results published on the stack's bus, and SQS messages claimed
in its idempotency table.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from devtools.aws import (
    CONFLICTING_ENV,
    LocalStack,
    Queue,
    add_results_queue,
    client,
    lambda_environment,
)
from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import (
    LambdaContext,
    api_gateway_event,
    eventbridge_event,
    http_api_event,
    load_handler,
    queue_arn,
    sqs_event,
    sqs_message,
)
from klaviyo_leads.actions.create.identity import Person
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.lead.body import parse_body
from klaviyo_leads.triggers.invocations import LeadNotQueued
from tests.conftest import API_KEY, reset_powertools_parameters


class Aws:
    """The deployed stack (tests/conftest.py's ``local_stack``) as a test sees it: the key's
    secret, and the results published on the bus, read from a queue a rule copies them to."""

    def __init__(self, stack: LocalStack, results: Queue) -> None:
        self.stack = stack
        self.results = results
        self.secrets = client("secretsmanager")
        self.sqs = client("sqs")

    def published(self) -> list[dict[str, Any]]:
        events = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.results.url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not got:
                return events
            for message in got:
                events.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.results.url, ReceiptHandle=message["ReceiptHandle"]
                )

    def reset(self) -> None:
        """Undo what a test changed: the key, unread results, idempotency records."""
        self.secrets.put_secret_value(SecretId=self.stack.secret_arn, SecretString=API_KEY)
        self.published()
        dynamodb = client("dynamodb")
        for page in dynamodb.get_paginator("scan").paginate(
            TableName=self.stack.table_name, ProjectionExpression="id"
        ):
            for item in page["Items"]:
                dynamodb.delete_item(TableName=self.stack.table_name, Key={"id": item["id"]})


@pytest.fixture(scope="module")
def results_queue(local_stack: LocalStack) -> Queue:
    return add_results_queue(local_stack)


@pytest.fixture
def aws(aws_credentials, klaviyo_emulator, monkeypatch, local_stack, results_queue):
    """The functions' environment as deployed, with Klaviyo at the emulator."""
    for name in CONFLICTING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in lambda_environment(local_stack).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo_emulator.base_url)
    stack = Aws(local_stack, results_queue)
    stack.reset()
    reset_powertools_parameters()
    entrypoint.reset_runtime()
    yield stack
    entrypoint.reset_runtime()
    reset_powertools_parameters()


@pytest.fixture
def newsletter(klaviyo_emulator):
    return klaviyo_emulator.create_list("Newsletter")


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def call(action: str, event: Any, timeout: float = 360.0) -> Any:
    return load_handler(action)(event, LambdaContext.for_action(action, timeout_seconds=timeout))


def post(action: str, lead: Any, *, raw: str | bytes | None = None, **kwargs) -> dict:
    body = raw if raw is not None else json.dumps(lead)
    route = "/" + action.replace("_", "-")
    headers = kwargs.pop("headers", {"Content-Type": "application/json"})
    response = call(action, api_gateway_event("POST", route, headers, body), **kwargs)
    response["json"] = json.loads(response["body"])
    return response


# -- API Gateway -----------------------------------------------------------------------------


class TestApiGateway:
    def test_create_then_duplicate(self, aws, klaviyo_emulator):
        first = post("create_profile", {"email": "nia@example.com", "first_name": "Nia"})
        assert (first["statusCode"], first["json"]["outcome"]) == (200, "success")
        assert first["headers"]["Content-Type"] == "application/json"
        again = post("create_profile", {"email": "nia@example.com"})
        assert again["statusCode"] == 422
        assert again["json"]["id"] == first["json"]["id"]

    def test_a_repeat_by_external_id_alone_is_a_duplicate_while_search_lags(
        self, aws, klaviyo_emulator
    ):
        """Without a key, a retry of a lead known only by its reference can come before
        Klaviyo's search has the first profile: the fleet-wide claim answers with its id."""
        klaviyo_emulator.configure(search_lag=30.0)
        lead = {"reference": "crm-lagging", "first_name": "Ada"}
        first = post("create_profile", lead)
        again = post("create_profile", lead)
        assert (first["statusCode"], first["json"]["outcome"]) == (200, "success")
        assert again["statusCode"] == 422
        assert again["json"]["reason"] == "A profile with this external id already exists"
        assert again["json"]["id"] == first["json"]["id"]
        made = [
            p
            for p in klaviyo_emulator.profiles()
            if p["attributes"].get("external_id") == "crm-lagging"
        ]
        assert len(made) == 1

    def test_a_repeat_while_the_first_still_creates_comes_back_shortly(
        self, aws, local_stack, klaviyo_emulator
    ):
        ledger = CreateLedger(local_stack.table_name)
        person = Person(external_id="crm-busy")
        other = ledger.take(person.identities(), "another-request", "its-attempt", 60).mine
        assert other is not None
        busy = post("create_profile", {"reference": "crm-busy"})
        assert busy["statusCode"] == 503 and int(busy["headers"]["Retry-After"]) >= 1
        assert busy["json"]["reason"] == (
            "Another request is creating a profile for this email, phone or external id; not sent"
        )
        assert klaviyo_emulator.calls() == 0
        ledger.release(other)
        assert post("create_profile", {"reference": "crm-busy"})["statusCode"] == 200

    def test_http_api_v2_and_form_and_base64(self, aws):
        route = "/create-profile"
        v2 = call(
            "create_profile",
            http_api_event(
                "POST",
                route,
                {"content-type": "application/json"},
                json.dumps({"email": "v2@example.com"}),
            ),
        )
        assert v2["statusCode"] == 200
        form = post(
            "create_profile",
            None,
            raw="email=form%40example.com&company.name=Acme",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (form["statusCode"], form["json"]["outcome"]) == (200, "success")
        event = api_gateway_event(
            "POST", route, {"Content-Type": "application/json"}, '{"email": "b64@example.com"}'
        )
        event["body"] = base64.b64encode(event["body"].encode()).decode()
        event["isBase64Encoded"] = True
        assert call("create_profile", event)["statusCode"] == 200

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("{nope", "The request body is not valid JSON"),
            ("[1]", "The request body must be a JSON object (one lead)"),
            ("", "The request body is empty"),
        ],
    )
    def test_bad_bodies_are_400(self, aws, raw, reason):
        response = post("get_profiles", None, raw=raw)
        assert response["statusCode"] == 400
        assert (response["json"]["outcome"], response["json"]["reason"]) == ("error", reason)

    def test_nan_and_infinity_are_refused_and_never_answered(self, aws, klaviyo_emulator):
        raw = '{"email": "nan@example.com", "klaviyo": {"custom": {"score": [1, Infinity]}}}'
        response = post("create_profile", None, raw=raw)
        assert response["statusCode"] == 422
        body = json.loads(response["body"], parse_constant=_no_constant)  # strict JSON
        assert body["outcome"] == "failure"
        assert body["reason"] == "A custom property must be a finite number"
        assert klaviyo_emulator.calls() == 0

    def test_statuses_for_each_kind_of_error(self, aws, klaviyo_emulator, newsletter):
        missing = post("add_profile_to_list", {"email": "a@example.com"})
        assert (missing["statusCode"], missing["json"]["reason"]) == (
            400,
            "Klaviyo List Id is missing",
        )
        unknown = post("add_profile_to_list", {"email": "a@example.com", "klaviyo.list_id": "N0pe"})
        assert unknown["statusCode"] == 400  # the sender must fix it: not a 5xx to retry

        klaviyo_emulator.faults.add(Fault(status=429, retry_after=120, times=None))
        throttled = post("get_profiles", {"email": "a@example.com"})
        assert throttled["statusCode"] == 503
        assert throttled["headers"]["Retry-After"] == "120"
        # The container now holds back calls to that endpoint for 120 s: report at once.
        again = post("get_profiles", {"email": "a@example.com"})
        assert again["statusCode"] == 503 and klaviyo_emulator.calls() == 2
        klaviyo_emulator.faults.clear()
        entrypoint.reset_runtime()  # a fresh container

        klaviyo_emulator.faults.add(Fault(latency=3.0, times=None))
        slow = post("get_profiles", {"email": "a@example.com", "timeout_seconds": 1})
        assert (slow["statusCode"], slow["json"]["reason"]) == (
            504,
            "Klaviyo did not respond within 1 seconds",
        )

    def test_api_budget_is_capped_below_the_gateway_limit(self, aws, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(status=429, retry_after=28, times=None))
        response = post("get_profiles", {"email": "a@example.com"})  # default budget 360 s
        # A 28 s wait does not fit the 27 s a webhook has: reported at once, not waited.
        assert response["statusCode"] == 503
        assert klaviyo_emulator.calls() == 1


# -- Secrets ---------------------------------------------------------------------------------


class TestSecret:
    def test_json_secret(self, aws):
        aws.secrets.put_secret_value(
            SecretId=aws.stack.secret_arn, SecretString=json.dumps({"api_key": API_KEY})
        )
        assert post("get_profiles", {"email": "a@example.com"})["statusCode"] == 422

    def test_missing_secret_is_an_error(self, aws, monkeypatch):
        # The stack's secret is shared by the tests; point the function at one that is gone.
        missing = aws.stack.secret_arn.replace(aws.stack.name, "deleted")
        monkeypatch.setenv("KLAVIYO_API_KEY_SECRET_ID", missing)
        response = post("get_profiles", {"email": "a@example.com"})
        assert response["statusCode"] == 502
        assert response["json"]["reason"] == (
            "The Klaviyo API key secret could not be read (ResourceNotFoundException)"
        )

    def test_rotated_key_is_picked_up_after_a_401(self, aws, klaviyo_emulator):
        assert post("get_profiles", {"email": "a@example.com"})["statusCode"] == 422
        aws.secrets.put_secret_value(SecretId=aws.stack.secret_arn, SecretString="pk_rotated")
        klaviyo_emulator.set_api_keys({"pk_rotated": None})
        assert post("get_profiles", {"email": "a@example.com"})["statusCode"] == 422
        assert [r.status for r in klaviyo_emulator.requests][-2:] == [401, 200]

    def test_revoked_key_is_an_error_not_a_loop(self, aws, klaviyo_emulator):
        klaviyo_emulator.set_api_keys({"pk_other": None})
        response = post("get_profiles", {"email": "a@example.com"})
        assert (response["statusCode"], response["json"]["reason"]) == (
            502,
            "Klaviyo rejected the API key",
        )
        assert klaviyo_emulator.calls() == 1  # the re-read key was the same: no second try


# -- SQS -------------------------------------------------------------------------------------


def sqs(action: str, *bodies: str, ids: list[str] | None = None, timeout: float = 360.0):
    messages = [
        sqs_message(body, message_id=(ids[i] if ids else None)) for i, body in enumerate(bodies)
    ]
    return call(action, sqs_event(messages, queue_arn(f"{action}-queue")), timeout=timeout)


class TestSqs:
    def test_a_nan_lead_fails_and_its_published_event_is_valid_json(self, aws, klaviyo_emulator):
        response = sqs(
            "create_profile", '{"email": "q@example.com", "latitude": NaN}', ids=["m-nan"]
        )
        assert response == {"batchItemFailures": []}
        (event,) = aws.published()
        assert event["detail"]["result"]["reason"] == "Latitude must be a finite number"
        assert event["detail"]["lead"] == {"email": "q@example.com", "latitude": None}
        assert klaviyo_emulator.calls() == 0

    def test_a_stack_set_to_keys_and_hashes_publishes_no_lead_value(
        self, aws, klaviyo_emulator, monkeypatch
    ):
        monkeypatch.setenv("RESULT_EVENT_LEAD", "keys-and-hashes")
        entrypoint.reset_runtime()
        sqs("create_profile", '{"email": "hashed@example.com", "first_name": "Hal"}')
        (event,) = aws.published()
        lead = event["detail"]["lead"]
        assert lead["keys"] == ["email", "first_name"]
        assert set(lead["identifiers"]) == {"email"}
        assert "hashed@example.com" not in json.dumps(lead) and "Hal" not in json.dumps(lead)
        assert event["detail"]["result"]["outcome"] == "success"

    def test_only_retryable_records_go_back_and_results_are_published(self, aws, klaviyo_emulator):
        klaviyo_emulator.create_profile(email="taken@example.com")
        klaviyo_emulator.faults.add(
            Fault(method="POST", path="/api/profiles", status=503, times=None, probability=None)
        )
        response = sqs(
            "create_profile",
            json.dumps({"email": "not-an-email"}),
            "{broken json",
            json.dumps({"email": "new@example.com"}),
            ids=["m-invalid", "m-broken", "m-retry"],
        )
        assert response == {"batchItemFailures": [{"itemIdentifier": "m-retry"}]}
        published = {e["detail"]["message_id"]: e for e in aws.published()}
        assert set(published) == {"m-invalid", "m-broken"}
        assert published["m-invalid"]["detail-type"] == "create_profile result"
        assert published["m-invalid"]["detail"]["result"]["reason"] == "Invalid email address"
        assert published["m-broken"]["detail"]["lead"] == "{broken json"
        assert published["m-broken"]["detail"]["result"]["reason"] == (
            "The message body is not valid JSON"
        )

    def test_redelivery_after_success_reuses_the_stored_result(self, aws, klaviyo_emulator):
        body = json.dumps({"email": "once@example.com"})
        assert sqs("create_profile", body, ids=["m-1"]) == {"batchItemFailures": []}
        calls = klaviyo_emulator.calls()
        assert sqs("create_profile", body, ids=["m-1"]) == {"batchItemFailures": []}
        assert klaviyo_emulator.calls() == calls  # nothing sent to Klaviyo again
        first, second = [e["detail"]["result"] for e in aws.published()]
        assert first == second and first["outcome"] == "success"

    def test_retryable_result_is_not_stored(self, aws, klaviyo_emulator):
        body = json.dumps({"email": "later@example.com"})
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        assert sqs("create_profile", body, ids=["m-2"])["batchItemFailures"]
        klaviyo_emulator.faults.clear()
        assert sqs("create_profile", body, ids=["m-2"]) == {"batchItemFailures": []}
        assert aws.published()[0]["detail"]["result"]["outcome"] == "success"

    def test_too_little_time_hands_every_record_back(self, aws, klaviyo_emulator):
        response = sqs(
            "get_profiles", json.dumps({"email": "a@example.com"}), ids=["m-late"], timeout=5
        )
        assert response == {"batchItemFailures": [{"itemIdentifier": "m-late"}]}
        assert klaviyo_emulator.calls() == 0

    def test_coalesced_batch(self, aws, klaviyo_emulator, newsletter):
        bodies = [
            json.dumps({"email": f"s{i}@example.com", "klaviyo.list_id": newsletter})
            for i in range(50)
        ]
        bodies.append(json.dumps({"email": "bad", "klaviyo.list_id": newsletter}))
        assert sqs("subscribe_profile_to_list", *bodies) == {"batchItemFailures": []}
        assert klaviyo_emulator.calls("bulk_subscribe_profiles") == 1
        outcomes = sorted(e["detail"]["result"]["outcome"] for e in aws.published())
        assert outcomes == ["failure"] + ["success"] * 50

    @pytest.mark.parametrize(
        ("body", "content_type", "outcome"),
        [
            ('{"email": "async.json@example.com"}', "application/json", "success"),
            ("email=async.form%40example.com", "application/x-www-form-urlencoded", "success"),
            ('{"email": "async.curl@example.com"}', "application/x-www-form-urlencoded", "success"),
            ("--x\r\nContent-Disposition: form-data", "multipart/form-data; boundary=x", "error"),
        ],
        ids=["json", "form", "json sent as a form", "multipart"],
    )
    def test_the_async_route_wraps_any_body_the_sync_route_reads(
        self, aws, klaviyo_emulator, body, content_type, outcome
    ):
        wrapped = {
            "http_request": {
                "body_base64": base64.b64encode(body.encode()).decode(),
                "content_type": content_type,
            }
        }
        assert sqs("create_profile", json.dumps(wrapped), ids=["m-async"]) == {
            "batchItemFailures": []
        }
        (event,) = aws.published()
        assert event["detail"]["result"]["outcome"] == outcome
        if outcome == "error":
            assert event["detail"]["result"]["reason"].startswith("The request body must be")
            assert event["detail"]["lead"] == body

    @pytest.mark.parametrize("coalesce", ["true", "false"])
    @pytest.mark.parametrize(
        ("request_", "problem"),
        [
            ({"body_base64": 42, "content_type": "application/json"}, "body_base64 must be text"),
            ({"body_base64": ["e30="], "content_type": None}, "body_base64 must be text"),
            ({"body_base64": "e30=", "content_type": 5}, "content_type must be text"),
            ({"body_base64": "e30=", "content_type": {"a": 1}}, "content_type must be text"),
        ],
        ids=["number body", "list body", "number type", "object type"],
    )
    def test_a_poison_async_message_gets_its_result_on_the_first_delivery(
        self, aws, klaviyo_emulator, monkeypatch, coalesce, request_, problem
    ):
        """Invariant: a message no delivery can read is finished on its first delivery
        (never handed back until the dead-letter queue) with a result that says why."""
        monkeypatch.setenv("COALESCE_BATCHES", coalesce)
        body = json.dumps({"http_request": request_})
        good = json.dumps({"email": "beside@example.com"})
        response = sqs("create_profile", body, good, ids=["m-poison", "m-good"])
        assert response == {"batchItemFailures": []}
        published = {e["detail"]["message_id"]: e["detail"] for e in aws.published()}
        poison = published["m-poison"]
        assert poison["result"]["outcome"] == "error"
        assert poison["result"]["reason"].startswith(f"The queued request is malformed: {problem}")
        assert poison["lead"] == {"http_request": request_}
        assert published["m-good"]["result"]["outcome"] == "success"

    def test_one_by_one_and_coalesced_paths_share_the_stored_results(
        self, aws, klaviyo_emulator, newsletter, monkeypatch
    ):
        body = json.dumps({"email": "shared@example.com", "klaviyo.list_id": newsletter})
        assert sqs("subscribe_profile_to_list", body, ids=["m-shared"]) == {"batchItemFailures": []}
        calls = klaviyo_emulator.calls()
        monkeypatch.setenv("COALESCE_BATCHES", "false")
        entrypoint.reset_runtime()
        assert sqs("subscribe_profile_to_list", body, ids=["m-shared"]) == {"batchItemFailures": []}
        assert klaviyo_emulator.calls() == calls  # answered from what the bulk path stored
        first, second = [e["detail"]["result"] for e in aws.published()]
        assert first == second and first["outcome"] == "success"

    @pytest.mark.parametrize("coalesce", ["true", "false"])
    def test_a_message_in_progress_elsewhere_is_handed_back_untouched(
        self, aws, klaviyo_emulator, newsletter, monkeypatch, coalesce
    ):
        from klaviyo_leads.aws.idempotency import Idempotency

        monkeypatch.setenv("COALESCE_BATCHES", coalesce)
        message = sqs_message(json.dumps({"email": "busy@example.com"}), message_id="m-busy")
        record = sqs_event([message], queue_arn("q"))["Records"][0]
        Idempotency(aws.stack.table_name, "subscribe_profile_to_list").claim(record, 60_000)
        response = sqs(
            "subscribe_profile_to_list",
            json.dumps({"email": "busy@example.com", "klaviyo.list_id": newsletter}),
            ids=["m-busy"],
        )
        assert response == {"batchItemFailures": [{"itemIdentifier": "m-busy"}]}
        assert klaviyo_emulator.calls() == 0
        assert aws.published() == []

    def test_publish_failure_hands_back_but_keeps_the_result(
        self, aws, klaviyo_emulator, monkeypatch
    ):
        monkeypatch.setenv("RESULTS_EVENT_BUS_NAME", "no-such-bus")
        entrypoint.reset_runtime()
        body = json.dumps({"email": "kept@example.com"})
        assert sqs("create_profile", body, ids=["m-pub"])["batchItemFailures"]
        calls = klaviyo_emulator.calls()
        monkeypatch.setenv("RESULTS_EVENT_BUS_NAME", aws.stack.event_bus_name)
        entrypoint.reset_runtime()
        assert sqs("create_profile", body, ids=["m-pub"]) == {"batchItemFailures": []}
        assert klaviyo_emulator.calls() == calls
        assert aws.published()[0]["detail"]["result"]["outcome"] == "success"


class RecordingQueue:
    """The action's queue through moto, remembering the visibilities the function set."""

    def __init__(self, sqs_client):
        self.sqs = sqs_client
        self.visibilities: list[dict[str, Any]] = []

    def change_message_visibility_batch(self, QueueUrl, Entries):
        self.visibilities += Entries
        return self.sqs.change_message_visibility_batch(QueueUrl=QueueUrl, Entries=Entries)

    def send_message(self, **kwargs):
        return self.sqs.send_message(**kwargs)


@pytest.fixture
def own_queue(aws, monkeypatch):
    """The function knows its queue (ACTION_QUEUE_URL); calls to it are recorded."""
    from klaviyo_leads.aws.queue import ActionQueue

    def attach(action: str) -> RecordingQueue:
        url = aws.stack.actions[action].queue.url
        monkeypatch.setenv("ACTION_QUEUE_URL", url)
        entrypoint.reset_runtime()
        recording = RecordingQueue(aws.sqs)
        entrypoint.runtime().queue = ActionQueue(url, client_factory=lambda: recording)
        return recording

    return attach


class TestHandedBackRecordsComeBackWhenDue:
    def received(self, aws, action: str, body: str) -> dict[str, Any]:
        url = aws.stack.actions[action].queue.url
        aws.sqs.send_message(QueueUrl=url, MessageBody=body)
        (message,) = aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"]
        )["Messages"]
        return message

    def event_of(self, action: str, message: dict[str, Any]) -> dict[str, Any]:
        event = sqs_event(
            [sqs_message(message["Body"], message_id=message["MessageId"])],
            queue_arn(f"{action}-queue"),
        )
        event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
        return event

    def test_a_throttled_record_comes_back_after_retry_after(
        self, aws, klaviyo_emulator, own_queue
    ):
        recording = own_queue("get_profiles")
        klaviyo_emulator.faults.add(Fault(status=429, retry_after=120, times=None))
        lead = {"email": "a@example.com", "timeout_seconds": 5}  # too short to wait it out
        message = self.received(aws, "get_profiles", json.dumps(lead))
        response = call("get_profiles", self.event_of("get_profiles", message))
        assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
        (entry,) = recording.visibilities
        assert entry["ReceiptHandle"] == message["ReceiptHandle"]
        assert 120 <= entry["VisibilityTimeout"] <= 145  # Retry-After plus jitter, not 36 min

    def test_other_retryable_records_back_off(self, aws, klaviyo_emulator, own_queue):
        recording = own_queue("get_profiles")
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        lead = {"email": "a@example.com", "timeout_seconds": 1}
        message = self.received(aws, "get_profiles", json.dumps(lead))
        call("get_profiles", self.event_of("get_profiles", message))
        (entry,) = recording.visibilities
        assert 24 <= entry["VisibilityTimeout"] <= 37  # the first back-off, 30 s +- 20 %

    def test_done_records_are_left_alone(self, aws, klaviyo_emulator, own_queue):
        recording = own_queue("get_profiles")
        message = self.received(aws, "get_profiles", json.dumps({"email": "a@example.com"}))
        assert call("get_profiles", self.event_of("get_profiles", message)) == {
            "batchItemFailures": []
        }
        assert recording.visibilities == []


class TestRetryableLeadsWithoutAQueueGoOntoOne:
    def test_an_eventbridge_lead_is_queued_with_when_it_was_first_seen(
        self, aws, klaviyo_emulator, own_queue
    ):
        own_queue("create_profile")
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        before = time.time()
        lead = {"email": "later@example.com", "timeout_seconds": 1}
        result = call(
            "create_profile", eventbridge_event("create_profile lead", lead, source="crm")
        )
        assert (result["outcome"], result["reason"]) == ("error", "Queued for retry")
        url = aws.stack.actions["create_profile"].queue.url
        (message,) = aws.sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"]
        )["Messages"]
        assert message["MessageId"] == result["message_id"]
        assert json.loads(message["Body"]) == lead
        first_seen = float(message["MessageAttributes"]["first_seen_at"]["StringValue"])
        assert before - 1 <= first_seen <= time.time()
        # What the event first arrived as goes with it: the queued retry owns its first
        # try's create record.
        assert message["MessageAttributes"]["origin_id"]["StringValue"]

    def test_a_single_lead_that_cannot_be_queued_fails_the_invocation(
        self, aws, klaviyo_emulator, own_queue
    ):
        recording = own_queue("create_profile")
        recording.send_message = None  # type: ignore[assignment]  # SQS down
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        with pytest.raises(LeadNotQueued) as failed:
            call("create_profile", {"email": "later@example.com", "timeout_seconds": 1})
        assert isinstance(failed.value.__cause__, TypeError)  # what SQS's failure was


class SlowQueue(RecordingQueue):
    """The action's queue, each call to it taking ``seconds`` on the invocation's clock."""

    def __init__(self, sqs_client, seconds: float) -> None:
        super().__init__(sqs_client)
        self.seconds = seconds
        self.now = 0.0
        self.calls: list[tuple[str, int]] = []

    def clock(self) -> float:
        return self.now

    def send_message(self, **kwargs):
        self.now += self.seconds
        self.calls.append(("SendMessage", 1))
        return self.sqs.send_message(**kwargs)

    def send_message_batch(self, QueueUrl, Entries):
        self.now += self.seconds
        self.calls.append(("SendMessageBatch", len(Entries)))
        return self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


class TestSeveralLeadsAreQueuedWithinTheDeadline:
    """Invariant: an invocation of several leads returns before its deadline with a result
    for every lead, and a lead whose result says "Queued for retry" is on the queue under
    that message id (200 leads, too little time to start any: one SendMessage each, as
    before, would run the invocation 10 s on a 9.5 s context)."""

    LEADS = 200

    def invoke(self, aws, own_queue, seconds_per_call: float, timeout: float = 9.5):
        from klaviyo_leads.aws.queue import ActionQueue

        own_queue("create_profile")
        queue = SlowQueue(aws.sqs, seconds_per_call)
        url = aws.stack.actions["create_profile"].queue.url
        entrypoint.runtime().queue = ActionQueue(url, client_factory=lambda: queue)
        context = LambdaContext(
            function_name="create_profile", timeout_seconds=timeout, clock=queue.clock
        )
        event = {"leads": [{"email": f"q{i}@example.com"} for i in range(self.LEADS)]}
        answer = load_handler("create_profile")(event, context)
        return answer["results"], queue, context

    def queued_bodies(self, aws) -> dict[str, str]:
        url = aws.stack.actions["create_profile"].queue.url
        bodies: dict[str, str] = {}
        while got := aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            bodies.update((m["MessageId"], m["Body"]) for m in got)
        return bodies

    def test_the_rest_go_ten_to_a_call_before_the_deadline(self, aws, klaviyo_emulator, own_queue):
        results, queue, context = self.invoke(aws, own_queue, seconds_per_call=0.05)
        assert context.get_remaining_time_in_millis() > 0
        assert {kind for kind, _ in queue.calls} == {"SendMessageBatch"}
        assert len(queue.calls) == self.LEADS // 10
        assert {r["reason"] for r in results} == {"Queued for retry"}
        bodies = self.queued_bodies(aws)
        for index, result in enumerate(results):
            assert json.loads(bodies[result["message_id"]]) == {"email": f"q{index}@example.com"}
        assert klaviyo_emulator.calls() == 0

    def test_leads_that_do_not_fit_say_so_and_are_not_lost(
        self, aws, klaviyo_emulator, own_queue, monkeypatch
    ):
        from klaviyo_leads.triggers import invocations

        counted: list[tuple[str, int]] = []
        monkeypatch.setattr(
            invocations, "count", lambda name, value=1: counted.append((name, value))
        )
        results, queue, context = self.invoke(aws, own_queue, seconds_per_call=1.0)
        # The queue stops taking time once the margin is reached: the answer is in time.
        assert context.get_remaining_time_in_millis() >= 1000
        queued = [r for r in results if r["reason"] == "Queued for retry"]
        not_queued = [r for r in results if r["reason"] != "Queued for retry"]
        assert len(queued) == 10 * len(queue.calls) and 0 < len(queued) < self.LEADS
        assert {r["reason"] for r in not_queued} == {
            "Not started: too little time left in the invocation"
        }
        assert results[: len(queued)] == queued  # in order: the first ones went
        assert ("LeadsNotQueued", len(not_queued)) in counted
        assert set(self.queued_bodies(aws)) == {r["message_id"] for r in queued}

    def test_many_leads_end_before_the_deadline_with_their_results_published(
        self, aws, klaviyo_emulator, own_queue
    ):
        """600 leads on a 12 s context, Klaviyo down (each lead's try 20 ms), SendMessageBatch
        0.1 s and PutEvents 0.11 s a call (as measured): the results' publishing once came
        after the queueing's margin, and the invocation ran past its deadline."""
        from klaviyo_leads import outcomes
        from klaviyo_leads.actions.action import result_fields
        from klaviyo_leads.aws.bus import ResultPublisher
        from klaviyo_leads.aws.queue import ActionQueue
        from klaviyo_leads.runtime import Processed

        class SlowEvents:
            def put_events(self, Entries):
                queue.now += 0.11
                return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"}] * len(Entries)}

        def klaviyo_down(action, lead, **kwargs):
            queue.now += 0.02
            result = outcomes.KLAVIYO_FAILED(status=503)
            return Processed(result, result_fields(action, result))

        own_queue("create_profile")
        queue = SlowQueue(aws.sqs, 0.1)
        url = aws.stack.actions["create_profile"].queue.url
        runtime = entrypoint.runtime()
        runtime.queue = ActionQueue(url, client_factory=lambda: queue)
        runtime.publisher = ResultPublisher("bus", client_factory=SlowEvents)
        runtime.process = klaviyo_down  # type: ignore[method-assign]
        context = LambdaContext(
            function_name="create_profile", timeout_seconds=12, clock=queue.clock
        )
        event = {"leads": [{"email": f"m{i}@example.com"} for i in range(600)]}
        results = load_handler("create_profile")(event, context)["results"]
        assert context.get_remaining_time_in_millis() > 0
        assert len(results) == 600
        queued = [r for r in results if r["reason"] == "Queued for retry"]
        assert len(queued) >= 100 and len(queued) % 10 == 0
        assert {r["reason"] for r in results} <= {
            "Queued for retry",
            "Not started: too little time left in the invocation",
            "Klaviyo returned HTTP 503",
        }

    def test_entries_sqs_refuses_keep_their_retryable_result(
        self, aws, klaviyo_emulator, own_queue
    ):
        from klaviyo_leads.aws.queue import ActionQueue

        class Refusing(SlowQueue):
            def send_message_batch(self, QueueUrl, Entries):
                answer = super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries[1:])
                failed = [{"Id": Entries[0]["Id"], "Code": "InternalError", "SenderFault": False}]
                return {"Successful": answer["Successful"], "Failed": failed}

        own_queue("create_profile")
        queue = Refusing(aws.sqs, 0.0)
        url = aws.stack.actions["create_profile"].queue.url
        entrypoint.runtime().queue = ActionQueue(url, client_factory=lambda: queue)
        event = {"leads": [{"email": f"r{i}@example.com"} for i in range(12)]}
        context = LambdaContext(function_name="create_profile", timeout_seconds=5)
        results = load_handler("create_profile")(event, context)["results"]
        refused = [i for i, r in enumerate(results) if r["reason"] != "Queued for retry"]
        assert refused == [0, 10]  # the first of each batch of ten
        assert all(results[i]["outcome"] == "error" for i in refused)


FORM = "application/x-www-form-urlencoded"


class TestAsyncRoute:
    """POST /<route>/async: the request queued as the synchronous route would read it, 202
    with its message id; an Idempotency-Key's repeat gets the same id, and nothing is queued
    twice (two ids and two messages before: the second's result was "already exists")."""

    def post_async(self, body: bytes, content_type: str | None, **headers: str) -> dict:
        if content_type is not None:
            headers["Content-Type"] = content_type
        event = api_gateway_event(
            "POST",
            "/create-profile/async",
            headers,
            body,
            resource="/create-profile/async",
        )
        response = call("create_profile", event)
        response["json"] = json.loads(response["body"])
        return response

    def queued(self, aws) -> list[dict[str, Any]]:
        url = aws.stack.actions["create_profile"].queue.url
        found: list[dict[str, Any]] = []
        while got := aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages"):
            found += got
        return found

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            ("application/json", b'{"email": "a@example.com"}'),
            (None, b'{"email": "a@example.com"}'),
            (FORM, b"email=a%40example.com&klaviyo.channels=email"),
            (FORM, b'{"email": "curl@example.com"}'),
            (f"{FORM}; charset=UTF-8", b"email=b%40example.com"),
            ("text/plain", b'{"first_name": "Zo\xc3\xab"}'),
            ('text/plain; note="it\'s \\ /"', b'{"email": "c@example.com"}'),
        ],
    )
    def test_a_body_is_queued_as_the_sync_route_reads_it(self, aws, own_queue, content_type, body):
        own_queue("create_profile")
        self.queued(aws)  # what earlier tests left on the queue
        answer = self.post_async(body, content_type)
        assert answer["statusCode"] == 202 and answer["json"]["accepted"] is True
        (message,) = self.queued(aws)
        assert answer["json"]["message_id"] == message["MessageId"]
        wrapped = json.loads(message["Body"])["http_request"]
        assert wrapped == {
            "body_base64": base64.b64encode(body).decode(),
            "content_type": content_type,
        }
        read = parse_body(wrapped["body_base64"], wrapped["content_type"], True)
        assert read == parse_body(body, content_type, False)
        assert message["MessageAttributes"]["api_request_id"]["StringValue"]

    @pytest.mark.parametrize(
        ("content_type", "body", "status"),
        [
            ("multipart/form-data; boundary=x", b"--x\r\n", 415),
            ("application/xml", b"<lead/>", 415),
            ("application/json", b"", 400),
        ],
    )
    def test_what_cannot_be_read_is_a_result_and_nothing_is_queued(
        self, aws, own_queue, content_type, body, status
    ):
        own_queue("create_profile")
        self.queued(aws)  # what earlier tests left on the queue
        answer = self.post_async(body, content_type)
        assert answer["statusCode"] == status and answer["json"]["accepted"] is False
        assert answer["json"]["outcome"] == "error" and answer["json"]["reason"]
        assert self.queued(aws) == []

    def test_the_same_key_gets_the_same_message_id_and_queues_once(
        self, aws, own_queue, klaviyo_emulator
    ):
        own_queue("create_profile")
        self.queued(aws)  # what earlier tests left on the queue
        body = b'{"email": "async.keyed@example.com"}'
        first = self.post_async(body, "application/json", **{"Idempotency-Key": "a-1"})
        again = self.post_async(body, "application/json", **{"Idempotency-Key": "a-1"})
        assert first["statusCode"] == again["statusCode"] == 202
        assert again["json"]["message_id"] == first["json"]["message_id"]
        assert again["headers"]["Idempotent-Replayed"] == "true"
        assert [m["MessageId"] for m in self.queued(aws)] == [first["json"]["message_id"]]
        other = self.post_async(b'{"email": "x@example.com"}', None, **{"Idempotency-Key": "a-1"})
        assert (other["statusCode"], other["json"]["reason"]) == (
            400,
            "This Idempotency-Key was used with a different request",
        )
        # The key on the synchronous route is another request, not this one's answer.
        sync = post(
            "create_profile",
            None,
            raw=body.decode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": "a-1"},
        )
        assert sync["statusCode"] == 400

    def test_a_queue_that_refuses_is_a_502_not_kept(self, aws, own_queue):
        recording = own_queue("create_profile")
        sent = recording.send_message

        def refused(**kwargs):
            raise RuntimeError("AccessDenied")

        recording.send_message = refused  # type: ignore[method-assign]
        key = {"Idempotency-Key": "a-2"}
        answer = self.post_async(b'{"email": "d@example.com"}', "application/json", **key)
        assert (answer["statusCode"], answer["json"]["reason"]) == (
            502,
            "The lead could not be queued",
        )
        recording.send_message = sent  # type: ignore[method-assign]
        again = self.post_async(b'{"email": "d@example.com"}', "application/json", **key)
        assert again["statusCode"] == 202 and "Idempotent-Replayed" not in again["headers"]


class TestIdempotencyKey:
    """Webhook senders that retry: a repeat with the same key gets the first answer."""

    def post_with_key(self, key: str, lead: dict, **kwargs) -> dict:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        return post("create_profile", lead, headers=headers, **kwargs)

    def test_a_repeat_gets_the_first_answer_without_calling_klaviyo(self, aws, klaviyo_emulator):
        lead = {"reference": "only-a-reference"}
        first = self.post_with_key("k-1", lead)
        calls = klaviyo_emulator.calls()
        again = self.post_with_key("k-1", lead)
        assert (again["statusCode"], again["json"]) == (first["statusCode"], first["json"])
        assert first["json"]["outcome"] == "success"
        # The repeat says it is the first answer given again; the first says nothing.
        assert again["headers"]["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first["headers"]
        assert klaviyo_emulator.calls() == calls
        assert len(klaviyo_emulator.profiles()) == 1

    def test_a_retryable_answer_is_not_kept(self, aws, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        lead = {"email": "later@example.com", "timeout_seconds": 1}
        # Klaviyo down: 502 once the retries are spent, or 504 if a loaded machine spends the
        # second first. Either is retryable, and so not kept.
        assert self.post_with_key("k-2", lead)["statusCode"] in (502, 504)
        klaviyo_emulator.faults.clear()
        assert self.post_with_key("k-2", lead)["json"]["outcome"] == "success"

    def test_a_lost_create_is_decided_within_the_request(self, aws, klaviyo_emulator):
        """The create reached Klaviyo but its answer was lost: sent again, Klaviyo's 409 names
        the profile, whose mark says this request made it."""
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        answer = self.post_with_key("k-once", {"email": "once@example.com"})
        assert (answer["statusCode"], answer["json"]["outcome"]) == (200, "success"), answer
        assert [p["id"] for p in klaviyo_emulator.profiles()] == [answer["json"]["id"]]

    def test_a_repeat_after_a_lost_create_finds_its_own_profile(self, aws, klaviyo_emulator):
        """The create reached Klaviyo but its answer was lost, and so was the answer to the
        resend: retryable, not kept. The repeat with the key finds the profile its mark says
        it made."""
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", status=503, after=True))
        lead = {"email": "webhook@example.com"}
        first = self.post_with_key("k-lost", lead)
        assert first["statusCode"] in (502, 503, 504)
        again = self.post_with_key("k-lost", lead)
        assert (again["statusCode"], again["json"]["outcome"]) == (200, "success"), again
        (profile,) = klaviyo_emulator.profiles()
        assert again["json"]["id"] == profile["id"]

    def test_without_the_first_attempt_the_repeat_is_not_its_own(self, aws, klaviyo_emulator):
        # The same request with a fresh key is another send: while the first's create is
        # unconfirmed it is told to come back; once it is, it is the duplicate (the fleet
        # simulation plays that on its virtual clock).
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", status=503, after=True))
        lead = {"email": "webhook2@example.com"}
        self.post_with_key("k-a", lead)
        other = self.post_with_key("k-b", lead)
        assert (other["statusCode"], other["json"]["outcome"]) == (503, "error")
        assert other["json"]["reason"] == (
            "Another request is creating a profile for this email, phone or external id; not sent"
        )
        assert len(klaviyo_emulator.profiles()) == 1

    def test_a_keyed_track_event_repeat_is_one_event(self, aws, klaviyo_emulator):
        lead = {"email": "event@example.com", "klaviyo.metric_name": "Lead Received"}
        headers = {"Content-Type": "application/json", "Idempotency-Key": "k-event"}
        # Klaviyo records the event, then answers 503, as long as the first request retries.
        klaviyo_emulator.faults.add(
            Fault(operation_id="create_event", status=503, after=True, times=None)
        )
        first = post("track_event", lead, headers=headers)
        assert first["statusCode"] == 502
        klaviyo_emulator.faults.clear()
        again = post("track_event", lead, headers=headers)
        assert again["statusCode"] == 200
        assert len(klaviyo_emulator.events()) == 1

    def test_the_key_with_another_request_is_refused(self, aws, klaviyo_emulator):
        self.post_with_key("k-3", {"email": "one@example.com"})
        other = self.post_with_key("k-3", {"email": "two@example.com"})
        assert other["statusCode"] == 400
        assert other["json"]["reason"] == "This Idempotency-Key was used with a different request"

    def test_a_repeat_while_the_first_runs_is_told_to_come_back(self, aws, klaviyo_emulator):
        from klaviyo_leads.actions.table import ACTIONS

        lead = {"email": "slow@example.com"}
        requests = entrypoint.runtime().requests(ACTIONS["create_profile"])
        requests._store.save_inprogress(
            {
                "key": "k-4",
                "request": {"body": json.dumps(lead), "content_type": "application/json"},
            },
            remaining_time_in_millis=60_000,
        )
        answer = self.post_with_key("k-4", lead)
        assert answer["statusCode"] == 409
        assert int(answer["headers"]["Retry-After"]) >= 1
        assert klaviyo_emulator.calls() == 0

    def test_an_overlong_key_is_refused(self, aws, klaviyo_emulator):
        answer = self.post_with_key("k" * 256, {"email": "a@example.com"})
        assert answer["statusCode"] == 400 and klaviyo_emulator.calls() == 0


@pytest.fixture
def results_table(aws, monkeypatch):
    """The results table the functions keep queued leads' results in."""
    dynamodb = client("dynamodb")
    name = "klaviyo-lead-actions-results-test"
    existing = dynamodb.list_tables()["TableNames"]
    if name not in existing:
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "message_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "message_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    monkeypatch.setenv("RESULTS_TABLE_NAME", name)
    entrypoint.reset_runtime()
    return name


class TestResultsOfQueuedLeads:
    def get(self, message_id: str) -> dict:
        from klaviyo_leads.aws import result_store as results
        from klaviyo_leads.handlers import results as get_result

        results._store = None
        event = api_gateway_event("GET", f"/results/{message_id}", {}, None)
        event["pathParameters"] = {"message_id": message_id}
        answer = get_result.lambda_handler(event, LambdaContext.for_action("get_result"))
        return {"status": answer["statusCode"], **json.loads(answer["body"])}

    @pytest.mark.parametrize("coalesce", ["true", "false"])
    def test_a_finished_lead_is_answered_for_24_hours(
        self, aws, klaviyo_emulator, results_table, monkeypatch, coalesce
    ):
        monkeypatch.setenv("COALESCE_BATCHES", coalesce)
        entrypoint.reset_runtime()
        message_id = f"m-done-{coalesce}"
        assert self.get(message_id)["status"] == 404  # not finished yet
        sqs("get_profiles", json.dumps({"email": "nobody@example.com"}), ids=[message_id])
        found = self.get(message_id)
        assert (found["status"], found["action"]) == (200, "get_profiles")
        assert found["result"]["reason"] == "No profile found"
        assert set(found["result"]) == set(aws.published()[0]["detail"]["result"])

    def test_a_lead_handed_back_has_no_result_yet(self, aws, klaviyo_emulator, results_table):
        klaviyo_emulator.faults.add(Fault(status=503, times=None))
        sqs(
            "get_profiles",
            json.dumps({"email": "a@example.com", "timeout_seconds": 1}),
            ids=["m-back"],
        )
        assert self.get("m-back")["status"] == 404

    def test_an_expired_result_is_gone_even_before_dynamodb_deletes_it(self, aws, results_table):
        from klaviyo_leads.aws.result_store import ResultStore

        yesterday = ResultStore(results_table, clock=lambda: time.time() - 24 * 3600 - 1)
        assert yesterday.put([("m-old", "get_profiles", {"outcome": "success"})]) == [True]
        assert self.get("m-old")["status"] == 404


class TestASubscribeNotConfirmedInTime:
    """A webhook is answered "accepted, not yet confirmed"; the queue confirms it later."""

    def test_the_confirmed_result_follows_published_and_on_get_results(
        self, aws, klaviyo_emulator, own_queue, results_table
    ):
        own_queue("subscribe_profile_to_list")
        list_id = klaviyo_emulator.create_list("Newsletter", opt_in="single")
        klaviyo_emulator.configure(subscribe_delay=1.0)
        lead = {"email": "later@example.com", "klaviyo.list_id": list_id, "timeout_seconds": 2}
        answer = post("subscribe_profile_to_list", lead)
        assert answer["statusCode"] == 200
        fields = answer["json"]
        assert (fields["outcome"], fields["email_consent"]) == ("success", "not_confirmed")
        assert fields["reason"].startswith("Klaviyo accepted the consent, not confirmed yet")
        url = aws.stack.actions["subscribe_profile_to_list"].queue.url
        (message,) = aws.sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"]
        )["Messages"]
        assert message["MessageId"] == fields["message_id"]
        time.sleep(1.0)  # Klaviyo applies the job
        origin = message["MessageAttributes"]["origin_id"]["StringValue"]
        event = sqs_event(
            [
                sqs_message(
                    message["Body"],
                    message_id=message["MessageId"],
                    message_attributes={"origin_id": origin},
                )
            ],
            queue_arn("subscribe_profile_to_list-queue"),
        )
        assert call("subscribe_profile_to_list", event) == {"batchItemFailures": []}
        (published,) = aws.published()
        confirmed = published["detail"]["result"]
        assert (confirmed["outcome"], confirmed["email_consent"]) == ("success", "subscribed")
        assert TestResultsOfQueuedLeads().get(message["MessageId"])["result"] == confirmed
        assert klaviyo_emulator.calls("bulk_subscribe_profiles") == 1  # read back, not sent again

    def test_a_confirmation_that_cannot_be_queued_says_so_and_is_counted(
        self, aws, klaviyo_emulator, own_queue, monkeypatch
    ):
        from klaviyo_leads.triggers import api

        counted: list[tuple[str, int]] = []
        monkeypatch.setattr(api, "count", lambda name, value=1: counted.append((name, value)))
        own_queue("subscribe_profile_to_list").send_message = None  # type: ignore[assignment]
        list_id = klaviyo_emulator.create_list("Newsletter", opt_in="single")
        klaviyo_emulator.configure(subscribe_delay=60.0)
        lead = {"email": "later@example.com", "klaviyo.list_id": list_id, "timeout_seconds": 2}
        answer = post("subscribe_profile_to_list", lead)
        fields = answer["json"]
        assert (answer["statusCode"], fields["outcome"], fields["message_id"]) == (
            200,
            "success",
            None,
        )
        assert fields["reason"] == (
            "Klaviyo accepted the consent, not confirmed within the lead's time budget"
        )
        assert ("LeadsNotQueued", 1) in counted


# -- EventBridge and direct --------------------------------------------------------------------


class TestEventBridgeAndDirect:
    def test_eventbridge_single_and_batch(self, aws):
        single = call(
            "create_profile",
            eventbridge_event("create_profile lead", {"email": "eb@example.com"}, source="crm"),
        )
        assert single["outcome"] == "success"
        batch = call(
            "get_profiles",
            eventbridge_event(
                "get_profiles lead",
                {"leads": [{"email": "eb@example.com"}, {"email": "none@example.com"}]},
                source="crm",
            ),
        )
        assert [r["outcome"] for r in batch["results"]] == ["success", "failure"]
        assert len(aws.published()) == 3

    def test_direct_single_is_returned_not_published(self, aws):
        assert call("create_profile", {"email": "direct@example.com"})["outcome"] == "success"
        results = call("get_profiles", {"leads": [{"email": "direct@example.com"}]})["results"]
        assert results[0]["outcome"] == "success"
        assert len(aws.published()) == 1  # only the several-leads form publishes

    def test_a_lead_nested_past_the_limit_is_a_400_not_an_internal_error(
        self, aws, klaviyo_emulator
    ):
        deep: dict[str, Any] = {"email": "deep@example.com"}
        level = deep
        for _ in range(990):
            level["unknown"] = {}
            level = level["unknown"]
        for answer in (
            call("create_profile", deep),
            call("create_profile", eventbridge_event("create_profile lead", deep, source="crm")),
        ):
            assert (answer["outcome"], answer["reason"]) == (
                "error",
                "The lead is nested more than 32 levels",
            )
        assert klaviyo_emulator.calls() == 0
        (published,) = aws.published()  # the refused lead's event is published, without it
        assert published["detail"]["result"]["reason"] == "The lead is nested more than 32 levels"

    @pytest.mark.parametrize("action", sorted(ACTIONS))
    @pytest.mark.parametrize("key", ["klaviyo.external_id", "reference"])
    def test_an_over_long_external_id_is_refused_before_any_call(
        self, aws, klaviyo_emulator, action, key
    ):
        lead = {"email": "long@example.com", key: "x" * 256, "klaviyo.list_id": "Y6nRLr"}
        lead["klaviyo.segment_id"] = "Seg123"
        answer = call(action, lead)
        label = "Klaviyo External Id" if key == "klaviyo.external_id" else "Reference"
        assert (answer["outcome"], answer["reason"]) == (
            "failure",
            f"{label} is longer than 255 characters",
        )
        assert klaviyo_emulator.calls() == 0

    @pytest.mark.parametrize("event", [[1, 2], "text", 42, None])
    def test_direct_non_object_is_an_error_result(self, aws, event):
        result = call("get_profiles", event)
        assert (result["outcome"], result["reason"]) == ("error", "A lead must be a JSON object")


def _api_event_with(**parts: Any) -> dict[str, Any]:
    event = api_gateway_event(
        "POST", "/get-profiles", {"Content-Type": "application/json"}, '{"email": "a@b.co"}'
    )
    return {**event, **parts}


def _sqs_event_with(**parts: Any) -> dict[str, Any]:
    event = sqs_event([sqs_message('{"email": "a@b.co"}')], queue_arn("get_profiles-queue"))
    record = {k: v for k, v in event["Records"][0].items() if parts.get(k, "") is not None}
    record.update({k: v for k, v in parts.items() if v is not None})
    return {"Records": [record]}


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (_api_event_with(headers=[["Content-Type", "application/json"]]), "headers"),
        (_api_event_with(headers="Content-Type: application/json"), "headers"),
        (_api_event_with(requestContext="x", httpMethod="POST"), "requestContext"),
        (_api_event_with(body=42), "body"),
        (_api_event_with(headers={"Content-Type": ["application/json"]}), "headers.Content-Type"),
        (_api_event_with(headers={"Idempotency-Key": ["a", "b"]}), "headers.Idempotency-Key"),
        (_sqs_event_with(messageId=None), "Records[0].messageId"),
        (_sqs_event_with(body=42), "Records[0].body"),
        (_sqs_event_with(attributes="x"), "Records[0].attributes"),
        (_sqs_event_with(attributes={"ApproximateReceiveCount": "x"}), "Records[0].attributes"),
        (_sqs_event_with(messageAttributes={"first_seen_at": "x"}), "Records[0].messageAttr"),
    ],
    ids=[
        "headers a list",
        "headers text",
        "requestContext text",
        "api body a number",
        "a header value a list",
        "a key header a list",
        "record without messageId",
        "record body a number",
        "attributes text",
        "receive count not a number",
        "message attribute not an object",
    ],
)
def test_a_malformed_event_gets_an_error_result(aws, klaviyo_emulator, event, problem):
    """Events no AWS service sends (a hand-made invocation): an answer, never an exception
    (which Lambda would retry, and SQS would hand back until its dead-letter queue)."""
    answer = call("get_profiles", event)
    if "requestContext" in event:
        assert answer["statusCode"] == 400
        answer = json.loads(answer["body"])
    assert answer["outcome"] == "error"
    assert answer["reason"].startswith(f"The event is malformed: {problem}")
    assert klaviyo_emulator.calls() == 0


def test_several_leads_are_not_started_with_too_little_time(runtime, klaviyo_emulator):
    event = {"leads": [{"email": f"t{i}@example.com"} for i in range(3)]}
    handler = load_handler("create_profile")
    answer = handler(event, LambdaContext.for_action("create_profile", timeout_seconds=5))
    assert {r["reason"] for r in answer["results"]} == {
        "Not started: too little time left in the invocation"
    }
    assert klaviyo_emulator.calls() == 0


class RefusingEvents:
    def put_events(self, Entries):
        return {"FailedEntryCount": len(Entries), "Entries": [{"ErrorCode": "X"}] * len(Entries)}


def test_unpublished_eventbridge_results_are_counted_and_logged(runtime, monkeypatch):
    from klaviyo_leads.aws.bus import ResultPublisher
    from klaviyo_leads.triggers import invocations

    counted, logged = [], []
    monkeypatch.setattr(invocations, "count", lambda name, value=1: counted.append((name, value)))
    monkeypatch.setattr(invocations.logger, "error", lambda message, **kw: logged.append(message))
    runtime.publisher = ResultPublisher("bus", client_factory=RefusingEvents)
    event = eventbridge_event("get_profiles lead", {"email": "a@example.com"}, source="crm")
    load_handler("get_profiles")(event, LambdaContext.for_action("get_profiles"))
    assert ("ResultsNotPublished", 1) in counted
    assert logged == ["Results could not be published"]


def test_debug_logging_never_writes_the_key_or_the_lead(aws, klaviyo_emulator, caplog):
    """Invariant: at any log level the AWS SDK and urllib3 write nothing below WARNING, so the
    secret's value (in GetSecretValue's response) and lead data (in Klaviyo's URLs) stay out."""
    import logging

    from klaviyo_leads.observability import QUIET_LIBRARIES

    for name in QUIET_LIBRARIES:  # as a fresh container has them
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)  # the root logger, as LogLevel=DEBUG or a caller sets it
    handler = entrypoint.handler_for("get_profiles")
    entrypoint.reset_runtime()
    reset_powertools_parameters()  # the key is read from Secrets Manager again
    context = LambdaContext.for_action("get_profiles")
    assert handler({"email": "debug.lead@example.com"}, context)["outcome"] == "failure"
    chatty = [r for r in caplog.records if r.name.split(".")[0] in QUIET_LIBRARIES]
    assert [r for r in chatty if r.levelno < logging.WARNING] == []
    assert API_KEY not in caplog.text
    assert "debug.lead" not in caplog.text
