"""Headers Klaviyo (or a proxy in front of it) should never send do not wedge a container.

An SQS batch runs through the function's own handler, in the deployed stack's environment
(moto), while the emulator answers with a ``Retry-After`` or ``RateLimit-Reset`` no
well-behaved server sends. No exception may escape the handler (that would fail the whole
batch, done records and all), and the next lead in the same container must get through:
nothing in a header holds an endpoint for ever. Time is virtual: the client's sleeps
advance its pacer's clock instead of waiting.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from devtools.aws import CONFLICTING_ENV, LocalStack, client, lambda_environment
from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import LambdaContext, load_handler, sqs_event
from klaviyo_leads.aws.queue import JITTER, ActionQueue
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.klaviyo.rate_limit_headers import MAX_RETRY_AFTER_SECONDS
from tests.conftest import API_KEY, Sleeps, reset_powertools_parameters

ACTION = "get_profiles"
FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


class RecordingSqs:
    """The test's queue through moto, remembering the visibilities the function set."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.visibilities: list[dict[str, Any]] = []

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list) -> Any:
        self.visibilities += Entries
        return self.sqs.change_message_visibility_batch(QueueUrl=QueueUrl, Entries=Entries)


class Container:
    """One warm container of the function: its runtime, and what it recorded."""

    def __init__(self, sqs: Any, queue_url: str, queue_arn: str) -> None:
        self.sqs, self.queue_url, self.queue_arn = sqs, queue_url, queue_arn
        self.runtime = entrypoint.runtime()
        self.sleeps = Sleeps()
        klaviyo = self.runtime.client
        klaviyo.sleep = self.sleeps
        klaviyo.pacer = Pacer(
            clock=self.sleeps.clock, max_share=self.runtime.settings.klaviyo_max_share
        )
        self.recording = RecordingSqs(sqs)
        self.runtime.queue = ActionQueue(queue_url, client_factory=lambda: self.recording)
        self.results: list[tuple[str, str | None]] = []
        record = self.runtime.record

        def recorded(action: Any, result: Any, seconds: float) -> None:
            self.results.append((result.outcome.value, result.reason))
            record(action, result, seconds)

        self.runtime.record = recorded  # type: ignore[method-assign]

    def batch(self, *leads: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Queue the leads, receive them, and hand the batch to the handler as Lambda does;
        the handler's answer and the message ids."""
        for lead in leads:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(lead))
        messages: list[dict[str, Any]] = []
        while len(messages) < len(leads):
            messages += self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
        self.results.clear()
        event = sqs_event(messages, self.queue_arn)
        response = load_handler(ACTION)(event, LambdaContext.for_action(ACTION))
        for message in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return response, [message["MessageId"] for message in messages]


@pytest.fixture
def container(aws_credentials, klaviyo_emulator, monkeypatch, local_stack: LocalStack):
    """The function as deployed, Klaviyo at the emulator, its queue a fresh one of its own."""
    for name in CONFLICTING_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in lambda_environment(local_stack).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo_emulator.base_url)
    secrets = client("secretsmanager")
    secrets.put_secret_value(SecretId=local_stack.secret_arn, SecretString=API_KEY)
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=f"untrusted-headers-{time.monotonic_ns()}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    reset_powertools_parameters()
    entrypoint.reset_runtime()
    for email in ("ann@example.com", "bob@example.com", "cat@example.com"):
        klaviyo_emulator.create_profile(email=email)
    yield Container(sqs, url, arn)
    sqs.delete_queue(QueueUrl=url)
    entrypoint.reset_runtime()
    reset_powertools_parameters()


FOUND = ("success", None)
BOTH = ({"email": "ann@example.com"}, {"email": "bob@example.com"})
NEXT = {"email": "cat@example.com"}


@pytest.mark.parametrize("retry_after", ["inf", "1e400", "-5", "nan"])
def test_a_retry_after_that_is_no_wait_is_ignored(container, klaviyo_emulator, retry_after):
    """Read as a 429 without a wait: a short back-off and a one-second hold, then the
    search goes through. (``inf`` and ``1e400`` raised OverflowError after the batch was
    done, failing all of it, and held the endpoint for good.)"""
    klaviyo_emulator.faults.add(
        Fault(operation_id=ACTION, status=429, headers={"Retry-After": retry_after})
    )
    response, _ = container.batch(*BOTH)
    assert response == {"batchItemFailures": []}
    assert container.results == [FOUND, FOUND]
    assert container.sleeps and max(container.sleeps) <= 1.0
    response, _ = container.batch(NEXT)
    assert response == {"batchItemFailures": []}
    assert container.results == [FOUND]


def test_a_retry_after_in_the_year_9999_holds_the_endpoint_an_hour_at_most(
    container, klaviyo_emulator
):
    klaviyo_emulator.faults.add(
        Fault(operation_id=ACTION, status=429, headers={"Retry-After": FAR_DATE})
    )
    short = [{**lead, "timeout_seconds": 5} for lead in BOTH]  # too short to wait an hour
    response, ids = container.batch(*short)
    assert sorted(item["itemIdentifier"] for item in response["batchItemFailures"]) == sorted(ids)
    assert {outcome for outcome, _ in container.results} == {"error"}
    hour = MAX_RETRY_AFTER_SECONDS
    visible_in = [entry["VisibilityTimeout"] for entry in container.recording.visibilities]
    assert len(visible_in) == 2
    assert all(hour <= seconds <= hour * (1 + JITTER) + 1 for seconds in visible_in)
    container.sleeps.elapsed += hour  # the container stays warm for that hour
    response, _ = container.batch(NEXT)
    assert response == {"batchItemFailures": []}
    assert container.results == [FOUND]


@pytest.mark.parametrize(
    "reset", [lambda: int(time.time()) + 30, lambda: 4102444800], ids=["in-30-s", "in-2100"]
)
def test_a_ratelimit_reset_sent_as_a_unix_time_is_read_as_that_moment(
    container, klaviyo_emulator, reset
):
    """A reset of 1.7e9 seconds paced the endpoint at a call per month: the next lead was
    handed back. Read as a moment, and never past the minute the window lasts."""
    klaviyo_emulator.faults.add(
        Fault(operation_id=ACTION, headers={"RateLimit-Reset": str(reset())})
    )
    response, _ = container.batch(*BOTH)
    assert response == {"batchItemFailures": []}
    assert container.results == [FOUND, FOUND]
    response, _ = container.batch(NEXT)
    assert response == {"batchItemFailures": []}
    assert container.results == [FOUND]
    assert sum(container.sleeps) <= 60.0
