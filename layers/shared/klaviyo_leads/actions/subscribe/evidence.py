"""Consent evidence: the proof behind a subscribe, recorded where an auditor looks in Klaviyo.

A lead may carry the proof its platform keeps for a consent (``lead.fields.EVIDENCE_FIELDS``: the
TrustedForm certificate, the Jornaya LeadiD, the disclosure shown, when, from where). Klaviyo's
consent record has one free field, the job's ``custom_source`` (its ``custom_method_detail``),
and it is one per job: it names the kinds of evidence and where they are, so the leads of a
batch still share a job. The evidence itself goes on the profile as one "Consent Captured"
event per lead, its values as the event's properties; the event's ``unique_id`` is made from
the evidence, so the same lead sent again (redelivered, retried, sent twice by a vendor) is
the same event, which Klaviyo records once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from klaviyo_leads.actions import track_event
from klaviyo_leads.actions.lookup import profile_reference
from klaviyo_leads.context import Context
from klaviyo_leads.outcomes import Outcome, Result

if TYPE_CHECKING:
    from klaviyo_leads.actions.subscribe.jobs import Subscription

METRIC = "Consent Captured"
# The kinds of evidence the consent record's source names, by the lead field that holds them.
NAMED_KINDS = (("trustedform_cert_url", "TrustedForm"), ("leadid_token", "LeadiD"))


def consent_source(custom_source: str | None, proof: dict[str, str]) -> str | None:
    """The job's ``custom_source``: the flow's own, and where the lead's evidence is."""
    if not proof:
        return custom_source
    kinds = [name for key, name in NAMED_KINDS if key in proof] or ["consent details"]
    note = f"evidence: {', '.join(kinds)} ({METRIC} event)"
    return f"{custom_source} · {note}" if custom_source else note[0].upper() + note[1:]


def event_of(subscription: Subscription) -> track_event.Event:
    """The lead's "Consent Captured" event: on its profile, the evidence as properties."""
    if subscription.email:
        profile = profile_reference("email", subscription.email)
    elif subscription.phone_number:
        profile = profile_reference("phone_number", subscription.phone_number)
    else:
        profile = profile_reference("klaviyo_id", subscription.profile_id or "")
    context: dict[str, Any] = {
        "channels": list(subscription.channels),
        "list_id": subscription.list_id,
        "list_name": subscription.group.name if subscription.group else None,
        "custom_source": subscription.custom_source,
        "historical_import": subscription.historical,
        "consented_at": subscription.consented_at.isoformat()
        if subscription.consented_at
        else None,
    }
    properties = {**subscription.evidence, **{k: v for k, v in context.items() if v is not None}}
    return track_event.Event(
        METRIC,
        profile,
        properties,
        value=None,
        time=_when(subscription),
        unique_id=unique_id(subscription),
        backfill=subscription.historical,  # a past consent starts no flow
    )


def unique_id(subscription: Subscription) -> str:
    """The same for every sending of the same lead: its evidence, channels and list (Klaviyo
    keeps one event per metric, profile and unique id, so the person needs no part in it)."""
    key = {
        "evidence": dict(sorted(subscription.evidence.items())),
        "channels": sorted(subscription.channels),
        "list_id": subscription.list_id,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"consent-{digest[:40]}"


def _when(subscription: Subscription) -> datetime | None:
    """When the consent was given, where Klaviyo takes the time (else it uses its own now)."""
    stamp = subscription.evidence.get("consent_timestamp")
    moment = datetime.fromisoformat(stamp) if stamp else subscription.consented_at
    if moment is None or not track_event.EARLIEST <= moment <= datetime.now(UTC):
        return None
    return moment


def record(
    ctx: Context, items: list[tuple[int, Subscription]], results: list[Result | None]
) -> None:
    """One event per lead that carries evidence (sent alone, or in bulk for a batch); a lead
    whose event Klaviyo did not take gets that as its result."""
    carried = [(index, event_of(s)) for index, s in items if s.evidence]
    if not carried:
        return
    recorded: list[Result | None] = [None] * len(results)
    track_event.record(ctx, carried, recorded)
    for index, _ in carried:
        answer = recorded[index]
        if answer is not None and answer.outcome is not Outcome.SUCCESS:
            results[index] = answer
