"""Defects planted in the code under test, one at a time, to show the simulation finds them.

Each is a context manager that patches the layer for one run. They are the mistakes the
identity rule and its ledger, and the subscribe's read-back and its evidence key, exist to
prevent; a seed budget that lets one of them through
proves nothing about the code without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextlib.contextmanager
def first_identifier_only() -> Iterator[None]:
    """The create's record kept under the lead's first identifier only (email, else phone,
    else external id): two leads that share a later one never meet."""
    from klaviyo_leads.actions.create.identity import Person

    original = Person.identities

    def first(self: Person) -> tuple[str, ...]:
        return original(self)[:1]

    with _patched(Person, "identities", first):
        yield


@contextlib.contextmanager
def any_409_is_own() -> Iterator[None]:
    """A 409 after a lost answer always taken as the request's own profile."""
    from klaviyo_leads.actions.create import one as creates

    with _patched(creates, "made_by", lambda profile, owner: profile is not None):
        yield


@contextlib.contextmanager
def hold_never_renewed() -> Iterator[None]:
    """Holds taken once and never renewed (nor the write recorded) before a write: a request
    that waited on 429s or a slow job writes on a hold that ran out."""
    from klaviyo_leads.aws.ledger import CreateLedger

    def renew(self: CreateLedger, record: Any, hold_seconds: float, **_: Any) -> Any:
        return replace(record)

    with _patched(CreateLedger, "renew", renew):
        yield


@contextlib.contextmanager
def earlier_job_skipped() -> Iterator[None]:
    """A redelivered batch that does not read the import job its earlier attempt sent."""
    from klaviyo_leads.actions.create import batch as batch_creates
    from klaviyo_leads.actions.create import one as creates

    def skipped(*args: Any, **kwargs: Any) -> None:
        return None

    with (
        _patched(creates, "earlier_job_outcome", skipped),
        _patched(batch_creates, "earlier_job_outcome", skipped),
    ):
        yield


@contextlib.contextmanager
def lead_file_batch_sent_twice() -> Iterator[None]:
    """A splitter that sends a batch of rows again under new messages, each its own lead (as
    one that retried a call whose answer was lost, its rows carrying no origin of their own)."""
    from klaviyo_leads.aws.queue import ORIGIN
    from klaviyo_leads.lead_files import splitter

    original = splitter._send_batch

    def twice(services: Any, queue_url: str, run_id: str, rows: Any) -> Any:
        answer = original(services, queue_url, run_id, rows)
        sent = services.sqs.send_message_batch
        entries: list[dict[str, Any]] = []

        def capture(*, QueueUrl: str, Entries: list[dict[str, Any]], **rest: Any) -> Any:
            entries.extend(Entries)
            return {"Successful": [], "Failed": []}

        services.sqs.send_message_batch = capture
        try:
            original(services, queue_url, run_id, rows)
        finally:
            services.sqs.send_message_batch = sent
        for entry in entries:
            entry["MessageAttributes"].pop(ORIGIN, None)
        sent(QueueUrl=queue_url, Entries=entries)
        return answer

    with _patched(splitter, "_send_batch", twice):
        yield


@contextlib.contextmanager
def consent_from_the_202() -> Iterator[None]:
    """A subscribe told "subscribed" once Klaviyo took its job, without reading it back (what
    the bundle did before it read consent back)."""
    from klaviyo_leads.actions.subscribe import consent

    def accepted_is_applied(ctx: Any, accepted: dict[int, Any], results: list[Any]) -> None:
        for index, taken in accepted.items():
            channels = dict.fromkeys(taken.subscription.channels, "subscribed")
            results[index] = results[index] or consent.outcomes.success(consent=channels)

    with _patched(consent, "confirm", accepted_is_applied):
        yield


@contextlib.contextmanager
def evidence_per_sending() -> Iterator[None]:
    """The consent event keyed by what the lead arrived as: each sending is an event."""
    from klaviyo_leads.actions.subscribe import evidence

    original = evidence.unique_id

    def per_sending(subscription: Any) -> str:
        return f"{original(subscription)}-{subscription.origin}"

    with _patched(evidence, "unique_id", per_sending):
        yield


@contextlib.contextmanager
def update_holds_nothing() -> Iterator[None]:
    """An Update or Upsert that adds a phone to a profile without holding it in the ledger: a
    queued import on its way for another lead with that phone matches the patched profile."""
    from klaviyo_leads.actions import update_profile

    with _patched(update_profile, "hold_added", lambda ctx, profile, attributes: None):
        yield


@contextlib.contextmanager
def side_effects_never_wait() -> Iterator[None]:
    """A subscribe, unsubscribe or event that marks its identifiers but never waits for a create
    at work on them: a queued import on its way takes the profile the job makes for its own."""
    from klaviyo_leads.aws.ledger_marks import MarkedTable

    with _patched(MarkedTable, "creating", lambda self, identities: set()):
        yield


DEFECTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "first identifier only": first_identifier_only,
    "any 409 is its own": any_409_is_own,
    "hold never renewed": hold_never_renewed,
    "earlier job skipped": earlier_job_skipped,
    "lead-file batch sent twice": lead_file_batch_sent_twice,
    "consent from the 202": consent_from_the_202,
    "evidence per sending": evidence_per_sending,
    "update holds nothing": update_holds_nothing,
    "side effects never wait": side_effects_never_wait,
}
