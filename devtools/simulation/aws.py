"""The simulated fleet's AWS: SQS queues, the EventBridge bus and DynamoDB, in memory.

The layer takes boto3 clients; these answer the calls it makes (and the calls of the parts
of AWS the simulation plays itself: the SQS event source mapping, a lead file's splitter) with
SQS's semantics where they matter for a lead: at-least-once delivery, a visibility timeout
that can run out while the first delivery still runs, the newest receipt handle only,
``ApproximateReceiveCount``, and a dead-letter queue after ``maxReceiveCount`` receives.

Every call is a scheduling point of the simulation, and a point where it may inject a
failure, before the call takes effect or after (the effect happened, the answer is an error).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

from devtools.memory_dynamodb import MemoryDynamoDB

# Called before and after every call: (service, operation) -> raise to fail it there.
Hook = Callable[[str, str, str], None]


@dataclass
class Message:
    message_id: str
    body: str
    attributes: dict[str, dict[str, str]]
    sent_at: float
    visible_at: float
    receive_count: int = 0
    first_received_at: float | None = None
    receipt: str | None = None


@dataclass
class Queue:
    name: str
    visibility_timeout: float
    max_receives: int
    dead_letters: list[Message] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    deleted: dict[str, Message] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://sqs.us-east-1.amazonaws.com/123456789012/{self.name}"

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:us-east-1:123456789012:{self.name}"


class SimulatedAws:
    """One account: its queues, bus and tables; the clients the layer gets are views of it."""

    def __init__(self, clock: Callable[[], float], ids: Callable[[], str]) -> None:
        self.clock = clock
        self._ids = ids
        self.dynamodb = _DynamoDB(self)
        self.queues: dict[str, Queue] = {}
        self.published: list[dict[str, Any]] = []
        self.hooks: list[Hook] = []
        self.on_publish: Callable[[dict[str, Any]], None] | None = None
        self.on_send: Callable[[Message], None] | None = None

    # -- set-up --------------------------------------------------------------------------------

    def queue(self, name: str, visibility_timeout: float, max_receives: int) -> Queue:
        self.queues[name] = Queue(name, visibility_timeout, max_receives)
        return self.queues[name]

    def by_url(self, url: str) -> Queue:
        return self.queues[url.rsplit("/", 1)[-1]]

    # -- hooks ----------------------------------------------------------------------------------

    def _around(self, service: str, operation: str, when: str = "before") -> None:
        for hook in self.hooks:
            hook(service, operation, when)

    def _after(self, service: str, operation: str) -> None:
        self._around(service, operation, "after")

    # -- SQS -------------------------------------------------------------------------------------

    def send(self, queue: Queue, body: str, attributes: dict[str, Any] | None = None) -> str:
        message_id = self._ids()
        queue.messages[message_id] = Message(
            message_id,
            body,
            {k: dict(v) for k, v in (attributes or {}).items()},
            self.clock(),
            self.clock(),
        )
        if self.on_send is not None:
            self.on_send(queue.messages[message_id])
        return message_id

    def receive(self, queue: Queue, limit: int, pick: Callable[[int], int]) -> list[Message]:
        """Up to ``limit`` visible messages, each now invisible for the queue's timeout; a
        message received more than the queue allows goes to its dead-letter queue instead."""
        self._around("sqs", "ReceiveMessage")
        now = self.clock()
        visible = [m for m in queue.messages.values() if m.visible_at <= now]
        taken: list[Message] = []
        while visible and len(taken) < limit:
            message = visible.pop(pick(len(visible)))
            if message.receive_count >= queue.max_receives:
                del queue.messages[message.message_id]
                queue.dead_letters.append(message)
                continue
            message.receive_count += 1
            message.first_received_at = message.first_received_at or now
            message.visible_at = now + queue.visibility_timeout
            message.receipt = f"{message.message_id}#{message.receive_count}#{self._ids()}"
            taken.append(message)
        return taken

    def record(self, queue: Queue, message: Message) -> dict[str, Any]:
        """The message as Lambda's SQS event carries it."""
        return {
            "messageId": message.message_id,
            "receiptHandle": message.receipt,
            "body": message.body,
            "attributes": {
                "ApproximateReceiveCount": str(message.receive_count),
                "SentTimestamp": str(int(message.sent_at * 1000)),
                "SenderId": "AIDASIMULATED",
                "ApproximateFirstReceiveTimestamp": str(
                    int((message.first_received_at or message.sent_at) * 1000)
                ),
            },
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value.get("DataType", "String"),
                }
                for name, value in message.attributes.items()
            },
            "md5OfBody": hashlib.md5(message.body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue.arn,
            "awsRegion": "us-east-1",
        }

    def delete(self, queue: Queue, receipt: str) -> None:
        """Deleted only by the newest receipt handle (an older one succeeds and does nothing,
        as SQS documents)."""
        self._around("sqs", "DeleteMessage")
        message_id = receipt.split("#", 1)[0]
        message = queue.messages.get(message_id)
        if message is not None and message.receipt == receipt:
            queue.deleted[message_id] = queue.messages.pop(message_id)

    def change_visibility(self, queue: Queue, receipt: str, seconds: float) -> bool:
        message = queue.messages.get(receipt.split("#", 1)[0])
        if message is None or message.receipt != receipt:
            return False
        message.visible_at = self.clock() + seconds
        return True

    def sqs_client(self) -> SqsClient:
        return SqsClient(self)

    def events_client(self) -> EventsClient:
        return EventsClient(self)

    def dynamodb_client(self) -> MemoryDynamoDB:
        return self.dynamodb


class SqsClient:
    """The calls the layer makes on SQS (``aws.queue.ActionQueue``)."""

    def __init__(self, aws: SimulatedAws) -> None:
        self._aws = aws

    def send_message(self, *, QueueUrl: str, MessageBody: str, **rest: Any) -> dict[str, Any]:
        self._aws._around("sqs", "SendMessage")
        queue = self._aws.by_url(QueueUrl)
        message_id = self._aws.send(queue, MessageBody, rest.get("MessageAttributes"))
        self._aws._after("sqs", "SendMessage")
        return {"MessageId": message_id}

    def send_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]], **_: Any
    ) -> dict[str, Any]:
        self._aws._around("sqs", "SendMessageBatch")
        queue = self._aws.by_url(QueueUrl)
        successful = [
            {
                "Id": entry["Id"],
                "MessageId": self._aws.send(
                    queue, entry["MessageBody"], entry.get("MessageAttributes")
                ),
            }
            for entry in Entries
        ]
        self._aws._after("sqs", "SendMessageBatch")
        return {"Successful": successful, "Failed": []}

    def change_message_visibility_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]], **_: Any
    ) -> dict[str, Any]:
        self._aws._around("sqs", "ChangeMessageVisibilityBatch")
        queue = self._aws.by_url(QueueUrl)
        failed = [
            {"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}
            for entry in Entries
            if not self._aws.change_visibility(
                queue, entry["ReceiptHandle"], float(entry["VisibilityTimeout"])
            )
        ]
        return {"Successful": [], "Failed": failed}


class EventsClient:
    """``PutEvents`` on the stack's bus: every accepted entry is kept, in order."""

    def __init__(self, aws: SimulatedAws) -> None:
        self._aws = aws

    def put_events(self, *, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self._aws._around("events", "PutEvents")
        answers = []
        for entry in Entries:
            detail = json.loads(entry["Detail"])
            self._aws.published.append({"detail_type": entry["DetailType"], "detail": detail})
            if self._aws.on_publish is not None:
                self._aws.on_publish(detail)
            answers.append({"EventId": self._aws._ids()})
        self._aws._after("events", "PutEvents")
        return {"FailedEntryCount": 0, "Entries": answers}


class _DynamoDB(MemoryDynamoDB):
    """The in-memory DynamoDB, each call a point where the simulation may fail it, before
    it takes effect or after (it took effect; the caller sees an error)."""

    def __init__(self, aws: SimulatedAws) -> None:
        super().__init__()
        self._aws = aws

    def _call(self, operation: str, method: Callable[..., dict], params: dict[str, Any]) -> dict:
        self._aws._around("dynamodb", operation)
        answer = method(**params)
        self._aws._after("dynamodb", operation)
        return answer

    def get_item(self, **params: Any) -> dict:
        return self._call("GetItem", super().get_item, params)

    def put_item(self, **params: Any) -> dict:
        return self._call("PutItem", super().put_item, params)

    def update_item(self, **params: Any) -> dict:
        return self._call("UpdateItem", super().update_item, params)

    def delete_item(self, **params: Any) -> dict:
        return self._call("DeleteItem", super().delete_item, params)

    def batch_write_item(self, **params: Any) -> dict:
        return self._call("BatchWriteItem", super().batch_write_item, params)

    def transact_write_items(self, **params: Any) -> dict:
        return self._call("TransactWriteItems", super().transact_write_items, params)

    def batch_get_item(self, **params: Any) -> dict:
        return self._call("BatchGetItem", super().batch_get_item, params)


def injected(service: str, operation: str, when: str = "before") -> Exception:
    """The error a failed AWS call raises: what botocore raises for a 5xx; for a message
    SQS took whose answer never came, a read timeout (a 5xx says SQS took nothing)."""
    if when == "after" and operation in ("SendMessage", "SendMessageBatch"):
        return ReadTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com/")
    code = {"dynamodb": "InternalServerError", "sqs": "InternalError"}.get(
        service, "InternalFailure"
    )
    return ClientError(
        {"Error": {"Code": code, "Message": "injected by the simulation"}}, operation
    )
