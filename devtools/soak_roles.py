"""The soak's child processes: queue consumers (Lambda containers), a webhook caller, and the
webhook twins of queued leads the vendor sends twice.

    python -m devtools.soak_roles consumer|webhook|twins '<json config>'

Each runs in its own OS process, as a Lambda container would, with the function's real
handler, client and pacer, against the parent's moto server and Klaviyo emulator. What it saw
is written as JSON to ``config["out"]`` for the parent's books.

- ``consumer`` does what Lambda's event source mapping does for one container: receive a
  batch, call the handler, delete what it finished. It also plays SQS's at-least-once
  delivery: a share of finished messages is not deleted but made visible again (the same
  message delivered twice, after it was done), and a share of received messages is made
  visible at once, so another consumer receives it while this one still works on it. It taps
  the layer where a record is handed back, to log when each one was asked to come back.
- ``webhook`` posts leads to the sync route as a caller does, with or without an
  ``Idempotency-Key``. A share of first answers is "lost" (the caller saw a 502 from the
  gateway) and sent again, half of the time while the first is still running; every 5xx or
  409 is retried after its ``Retry-After``.
- ``twins`` is the vendor's other sender for leads it sends twice, once queued and once by
  webhook: when a consumer is about to run a queued lead that has a webhook twin (the message
  carries ``SPAN_ATTRIBUTE``), it asks for the twin's post ``SPAN_GAP_SECONDS`` before or
  after it runs the batch, and this process posts it then (once per message, whichever
  consumer gets it).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devtools.lambda_events import (
    LambdaContext,
    api_gateway_event,
    ensure_layer_on_path,
    load_handler,
    sqs_event,
)

ACTION = "create_profile"
ROUTE = "/create-profile"
POLL_SECONDS = 0.2
WEBHOOK_ATTEMPTS = 10
RETRYABLE_STATUSES = frozenset({409, 500, 502, 503, 504})
# A queued lead the vendor also posts by webhook carries this message attribute: the twin's
# Idempotency-Key (or none) and whether the post goes first.
SPAN_ATTRIBUTE = "SoakWebhookTwin"
SPAN_GAP_SECONDS = 0.5  # between the webhook post and the queued lead's invocation
TWIN_POLL_SECONDS = 0.02


def _environment(config: dict[str, Any]) -> None:
    os.environ.update(config["env"])
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    ensure_layer_on_path()


# -- consumer -------------------------------------------------------------------------------


class HandBackTap:
    """Logs, for each handed-back record, what it waited for and the visibility it was given."""

    def __init__(self) -> None:
        self.pending: dict[str, float | None] = {}
        self.log: list[dict[str, Any]] = []
        self.reasons: dict[str, str] = {}  # message id -> why it was last handed back

    def install(self) -> None:
        from klaviyo_leads.aws import queue as queueing
        from klaviyo_leads.triggers import sqs

        original_delay_handed_back = sqs._delay_handed_back
        original_delay = queueing.ActionQueue.delay
        original_init = sqs.HandBack.__init__
        tap = self

        def init(back: Any, reason: str, retry_in: float | None = None) -> None:
            original_init(back, reason, retry_in)  # raised with the record's correlation id set
            tap.reasons[sqs.logger.get_correlation_id() or ""] = reason

        def delay_handed_back(runtime: Any, raw: Any, response: Any, handed_back: Any) -> None:
            tap.pending = dict(handed_back)
            original_delay_handed_back(runtime, raw, response, handed_back)

        def delay(queue: Any, due: list[Any]) -> list[str]:
            refused = original_delay(queue, due)
            now = time.time()
            for item in due:
                tap.log.append(
                    {
                        "message_id": item.message_id,
                        "at": now,
                        "retry_in": tap.pending.get(item.message_id),
                        "reason": tap.reasons.get(item.message_id),
                        "visibility": item.seconds,
                        "refused": item.message_id in refused,
                    }
                )
            return refused

        sqs.HandBack.__init__ = init  # type: ignore[method-assign]
        sqs._delay_handed_back = delay_handed_back  # type: ignore[assignment]
        queueing.ActionQueue.delay = delay  # type: ignore[method-assign]


def consumer(config: dict[str, Any]) -> None:
    _environment(config)
    from devtools.aws import client

    handler = load_handler(ACTION)
    tap = HandBackTap()
    tap.install()
    sqs = client("sqs", config["endpoint_url"])
    failed_receives: list[float] = []  # receives that boto3 sent again (moto failed them)

    def count_failed(response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        if caught_exception is not None or (response and response[0].status_code >= 500):
            failed_receives.append(time.time())

    sqs.meta.events.register_first("needs-retry.sqs.ReceiveMessage", count_failed)
    rng = random.Random(config["seed"])
    url, arn, stop = config["queue_url"], config["queue_arn"], Path(config["stop_file"])
    receives: list[list[Any]] = []  # [time, message id, receive count]
    deleted_late: list[str] = []
    redelivered_early: list[str] = []
    short_polls: list[list[float]] = []  # receives that found no more visible messages
    spans: list[dict[str, Any]] = []  # queued leads whose webhook twin this consumer asked for
    invocations = 0
    while not stop.exists():
        began = time.time()
        messages = _receive(sqs, url, config["batch_size"])
        now = time.time()
        if len(messages) < config["batch_size"]:
            short_polls.append([began, now])
        if not messages:
            time.sleep(POLL_SECONDS)
            continue
        for m in messages:
            receives.append([now, m["MessageId"], int(m["Attributes"]["ApproximateReceiveCount"])])
        if rng.random() < config["concurrent_share"] * len(messages):
            twin = rng.choice(messages)  # another consumer may get it while this one works
            if _make_visible(sqs, url, twin, 0):
                redelivered_early.append(twin["MessageId"])
        spans += _ask_for_twins(Path(config["spans_dir"]), messages)
        invocations += 1
        response = handler(sqs_event(messages, arn), LambdaContext.for_action(ACTION))
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        done = [m for m in messages if m["MessageId"] not in failed]
        again = [m for m in done if rng.random() < config["redeliver_share"]]
        for m in again:  # the delete "was lost": SQS delivers the finished message again
            if _make_visible(sqs, url, m, 1):
                deleted_late.append(m["MessageId"])
        _delete(sqs, url, [m for m in done if m not in again])
    Path(config["out"]).write_text(
        json.dumps(
            {
                "invocations": invocations,
                "receives": receives,
                "short_polls": short_polls,
                "failed_receives": failed_receives,
                "hand_backs": tap.log,
                "redelivered_after_done": deleted_late,
                "redelivered_while_running": redelivered_early,
                "spans": spans,
            }
        )
    )


def _ask_for_twins(spans_dir: Path, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ask the twins process for the webhook posts of the batch's leads that have one, each
    ``SPAN_GAP_SECONDS`` before or after the batch runs; return when it may run (after the
    gap when a post goes first). A message delivered again asks for nothing: the vendor sent
    its twin once."""
    asked: list[dict[str, Any]] = []
    for m in messages:
        attribute = (m.get("MessageAttributes") or {}).get(SPAN_ATTRIBUTE)
        if attribute is None:
            continue
        try:  # the first consumer to get the message posts its twin, once
            os.close(os.open(spans_dir / f"{m['MessageId']}.claim", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        twin = json.loads(attribute["StringValue"])
        now = time.time()
        request = {
            "message_id": m["MessageId"],
            "lead": json.loads(m["Body"]),
            "key": twin["key"],
            "webhook_first": twin["webhook_first"],
            "at": now if twin["webhook_first"] else now + SPAN_GAP_SECONDS,
        }
        pending = spans_dir / f"{m['MessageId']}.tmp"
        pending.write_text(json.dumps(request))
        pending.replace(spans_dir / f"{m['MessageId']}.json")
        asked.append(request)
    if any(r["webhook_first"] for r in asked):
        time.sleep(SPAN_GAP_SECONDS)
    invoked_at = time.time()
    return [
        {
            "message_id": r["message_id"],
            "webhook_first": r["webhook_first"],
            "invoked_at": invoked_at,
        }
        for r in asked
    ]


def _make_visible(sqs: Any, url: str, message: dict[str, Any], seconds: int) -> bool:
    """Deliver a message again in ``seconds``; False when SQS no longer has it in flight for
    this receive (another consumer received or deleted it meanwhile)."""
    try:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=seconds
        )
    except sqs.exceptions.ClientError:
        return False
    return True


def _receive(sqs: Any, url: str, batch_size: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < batch_size:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, batch_size - len(messages)),
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        messages.extend(got)
    return messages


def _delete(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages[start : start + 10])
            ],
        )


# -- webhook caller -------------------------------------------------------------------------


def webhook(config: dict[str, Any]) -> None:
    _environment(config)
    handler = load_handler(ACTION)
    rng = random.Random(config["seed"])
    stop = Path(config["stop_file"])
    calls: list[dict[str, Any]] = []
    for index, item in enumerate(config["leads"]):
        if stop.exists():
            break
        while time.time() < config["start"] + index / config["per_second"]:
            time.sleep(0.01)
        calls.append(_one_webhook_lead(handler, item, rng, config["lose_share"]))
    Path(config["out"]).write_text(json.dumps({"calls": calls}))


def _one_webhook_lead(
    handler: Any, item: dict[str, Any], rng: random.Random, lose_share: float
) -> dict[str, Any]:
    """Attempts until an answer that is not retryable; what each attempt answered."""
    headers = {"Content-Type": "application/json"}
    if item["key"]:
        headers["Idempotency-Key"] = item["key"]
    body = json.dumps(item["lead"])

    def call() -> dict[str, Any]:
        response = handler(
            api_gateway_event("POST", ROUTE, headers=headers, body=body),
            LambdaContext.for_action(ACTION, timeout_seconds=30),
        )
        answer = json.loads(response.get("body") or "{}")
        return {
            "status": response["statusCode"],
            "outcome": answer.get("outcome"),
            "reason": answer.get("reason"),
            "id": answer.get("id"),
            "duplicate_profile_id": answer.get("duplicate_profile_id"),
            "retry_after": (response.get("headers") or {}).get("Retry-After"),
            "answered_at": time.time(),
        }

    answers: list[dict[str, Any]] = []
    lost = rng.random() < lose_share
    if lost and rng.random() < 0.5:
        # The caller gave up waiting and sent it again while the first still ran.
        first: dict[str, Any] = {}
        running = threading.Thread(target=lambda: first.update(call()))
        running.start()
        time.sleep(rng.uniform(0.0, 0.3))
        answers.append({**call(), "concurrent": True})
        running.join()
        answers.insert(0, {**first, "lost": True})
    elif lost:
        answers.append({**call(), "lost": True})
    while len(answers) < WEBHOOK_ATTEMPTS:
        if (
            answers
            and not answers[-1].get("lost")
            and answers[-1]["status"] not in (RETRYABLE_STATUSES)
        ):
            break
        if answers and not answers[-1].get("lost"):
            time.sleep(min(10.0, float(answers[-1]["retry_after"] or 1)))
        answers.append(call())
    return {"lead": item["lead"], "key": item["key"], "answers": answers}


# -- the vendor's webhook twins of queued leads ------------------------------------------


def twins(config: dict[str, Any]) -> None:
    """Post each requested twin at its time, until the stop file is there and every request
    has been answered."""
    _environment(config)
    handler = load_handler(ACTION)
    spans_dir, stop = Path(config["spans_dir"]), Path(config["stop_file"])
    calls: list[dict[str, Any]] = []
    running: list[threading.Thread] = []
    taken: set[str] = set()

    def post(request: dict[str, Any]) -> None:
        time.sleep(max(0.0, request["at"] - time.time()))
        started = time.time()
        # Each twin its own generator: answers are lost as the webhook caller loses them.
        rng = random.Random(f"{config['seed']}-{request['message_id']}")
        call = _one_webhook_lead(handler, request, rng, config["lose_share"])
        calls.append(
            {
                **call,
                "twin_of": request["message_id"],
                "webhook_first": request["webhook_first"],
                "started_at": started,
            }
        )

    while True:
        stopping = stop.exists()  # looked at before the last scan: no request is left behind
        for path in sorted(spans_dir.glob("*.json")):
            if path.name not in taken:
                taken.add(path.name)
                thread = threading.Thread(target=post, args=(json.loads(path.read_text()),))
                thread.start()
                running.append(thread)
        if stopping:
            break
        time.sleep(TWIN_POLL_SECONDS)
    for thread in running:
        thread.join()
    Path(config["out"]).write_text(json.dumps({"calls": calls}))


def main(argv: list[str]) -> int:
    role, config = argv[0], json.loads(argv[1])
    {"consumer": consumer, "webhook": webhook, "twins": twins}[role](config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
