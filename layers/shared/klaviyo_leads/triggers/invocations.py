"""EventBridge rules and schedules, and direct invocations: one lead or a list of them; the
results answered (direct) or published (EventBridge), what does not fit the invocation queued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import Action, result_fields
from klaviyo_leads.aws.bus import Publication
from klaviyo_leads.aws.queue import Later, batches
from klaviyo_leads.budget import MIN_SECONDS_PER_LEAD, remaining_seconds
from klaviyo_leads.lead.body import leads_in
from klaviyo_leads.observability import count, logger
from klaviyo_leads.runtime import Processed, Runtime
from klaviyo_leads.trail.records import Arrival


class LeadNotQueued(Exception):
    """A retryable lead of an EventBridge or direct invocation could not be put on the
    action's queue: the one exception a handler raises, so that Lambda retries the event."""


def handle_leads(
    runtime: Runtime,
    action: Action,
    payload: Any,
    lambda_context: LambdaContext,
    *,
    always_publish: bool,
    correlation_id: str,
    path: str = "direct",
) -> Any:
    several = leads_in(payload)
    if several is None:
        return _handle_one(
            runtime, action, payload, lambda_context, always_publish, correlation_id, path
        )
    processed: list[Processed] = []
    later: dict[int, Later] = {}  # retryable leads for the queue, by their place in the event
    # Kept back from the leads' own time, so the invocation ends before its deadline however
    # many leads it brings: publishing every result, and queueing the retryable ones.
    publishing = len(several) * PUBLISH_SECONDS_PER_LEAD if runtime.publisher else 0.0
    for index, lead in enumerate(several):
        logger.set_correlation_id(f"{correlation_id}/{index}")
        # What the lead arrived as: the same when Lambda retries the event (an EventBridge
        # event's id, a direct invocation's request id), so the retry finds its own creates.
        origin = f"{correlation_id}/{index}"
        first_seen = runtime.wall()
        left = remaining_seconds(lambda_context)
        if left is not None:
            queueing = (len(later) + len(several) - index) * QUEUE_SECONDS_PER_LEAD
            left -= QUEUE_MARGIN_SECONDS + publishing + queueing
        if left is not None and left < MIN_SECONDS_PER_LEAD:
            # Better a retryable result than a Lambda timeout that loses every result.
            result = outcomes.NOT_STARTED()
            runtime.record(action, result, 0.0)
            done = Processed(result, result_fields(action, result))
        else:
            done = runtime.process(
                action,
                lead,
                remaining_seconds=left,
                origin_id=origin,
                arrival=_arrival(path, origin),
            )
        if done.result.retryable and runtime.queue is not None and not done.dry_run:
            later[index] = Later(lead, first_seen, origin)
        processed.append(done)
    if later:
        queued = _queue_later(runtime, later, lambda_context, publishing)
        for index, message_id in queued.items():
            result = outcomes.QUEUED_FOR_RETRY(message_id=message_id)
            processed[index] = Processed(result, result_fields(action, result))
        if len(queued) < len(later):
            # Their results say retryable: the sender (or Lambda's retry) must send them again.
            count("LeadsNotQueued", len(later) - len(queued))
            logger.error(
                "Leads could not be queued",
                extra={"count": len(later) - len(queued), "queued": len(queued)},
            )
    _publish(runtime, action, several, processed, lambda_context)
    return {"results": [p.fields for p in processed]}


def _handle_one(
    runtime: Runtime,
    action: Action,
    lead: Any,
    lambda_context: LambdaContext,
    always_publish: bool,
    correlation_id: str,
    path: str = "direct",
) -> dict[str, Any]:
    logger.set_correlation_id(correlation_id)
    first_seen = runtime.wall()
    done = runtime.process(
        action,
        lead,
        remaining_seconds=remaining_seconds(lambda_context),
        origin_id=correlation_id or None,
        arrival=_arrival(path, correlation_id or None),
    )
    if done.result.retryable and runtime.queue is not None and not done.dry_run:
        try:
            message_id = runtime.queue.send(lead, first_seen, correlation_id or None)
        except Exception as exc:
            # The invocation fails on purpose: Lambda retries the event (the same id, so
            # the retry owns what this try created), then hands it to its dead-letter queue.
            count("LeadsNotQueued")
            raise LeadNotQueued(action.name) from exc
        result = outcomes.QUEUED_FOR_RETRY(message_id=message_id)
        done = Processed(result, result_fields(action, result))
    if always_publish:
        _publish(runtime, action, [lead], [done])
    return done.fields


# Time kept back from the invocation's deadline once the leads are queued and their results
# published: answering, and what the estimates below miss.
QUEUE_MARGIN_SECONDS = 2.0


# What settling a lead of a several-lead event costs once it is processed: its share of a
# PutEvents call (ten to a call; 600 results took 6.5 s) and, when it is retryable, of a
# SendMessageBatch call (ten to a call), with room to spare.
PUBLISH_SECONDS_PER_LEAD = 0.015


QUEUE_SECONDS_PER_LEAD = 0.01


# Publishing stops this long before the deadline: the results not published are counted
# (ResultsNotPublished, an alarm) and still answered.
PUBLISH_MARGIN_SECONDS = 0.5


def _queue_later(
    runtime: Runtime, later: dict[int, Later], lambda_context: LambdaContext, publishing: float
) -> dict[int, str]:
    """Put the retryable leads on the action's queue, ten to a call, while time allows (the
    results' publishing kept back): the message id of each lead queued, by its place."""
    assert runtime.queue is not None
    places = iter(later)  # the batches keep the leads' order
    queued: dict[int, str] = {}
    for batch in batches(list(later.values())):
        left = remaining_seconds(lambda_context)
        if left is not None and left < QUEUE_MARGIN_SECONDS + publishing:
            break
        for message_id in runtime.queue.send_batch(batch):
            place = next(places)
            if message_id is not None:
                queued[place] = message_id
    return queued


def _arrival(path: str, origin: str | None) -> Arrival:
    """An EventBridge lead came as its event (its id); a direct one as the invocation."""
    if path == "eventbridge":
        return Arrival(path, message_id=origin)
    return Arrival(path, request_id=origin)


def _publish(
    runtime: Runtime,
    action: Action,
    leads: list[Any],
    processed: list[Processed],
    lambda_context: LambdaContext | None = None,
) -> None:
    if not runtime.publisher:
        return

    def in_time() -> bool:
        left = remaining_seconds(lambda_context)
        return left is None or left > PUBLISH_MARGIN_SECONDS

    publications = [
        Publication(action.name, lead, p.fields)
        for lead, p in zip(leads, processed, strict=True)
        if not p.dry_run  # a dry run's answer is only the caller's
    ]
    if not publications:
        return
    accepted = runtime.publisher.publish(publications, in_time)
    lost = accepted.count(False)
    if lost:
        # Nobody else sees these results: say so loudly (logs, metric, alarm on it).
        count("ResultsNotPublished", lost)
        logger.error("Results could not be published", extra={"count": lost})


def handle_eventbridge(
    runtime: Runtime, action: Action, event: Mapping[str, Any], lambda_context: LambdaContext
) -> Any:
    """An EventBridge rule's or schedule's event: its ``detail`` is the lead (or leads); the
    results are published, the event's id their correlation id."""
    request_id = str(getattr(lambda_context, "aws_request_id", "") or "")
    return handle_leads(
        runtime,
        action,
        event["detail"],
        lambda_context,
        always_publish=True,
        correlation_id=str(event.get("id") or request_id),
        path="eventbridge",
    )


def handle_direct(
    runtime: Runtime, action: Action, event: Any, lambda_context: LambdaContext
) -> Any:
    """A direct invocation (Step Functions, the console, another function): the event is the
    lead (or leads); the results are the answer."""
    return handle_leads(
        runtime,
        action,
        event,
        lambda_context,
        always_publish=False,
        correlation_id=str(getattr(lambda_context, "aws_request_id", "") or ""),
        path="direct",
    )
