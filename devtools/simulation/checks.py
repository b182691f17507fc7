"""The invariants a run must hold, checked once every lead is done.

1. **One profile per person**: a person's profiles are those holding their email, their
   external id, or a phone only they have (a shared phone names no one person), among the
   ones the account had and the ones the create paths made.
2. **Created means made**: every answer that says a create made a profile (Create Profile's
   success, Upsert's ``created: true``) names a profile whose creation carried the mark of
   that very send's owner; Upsert's ``created: false`` names one that it did not make.
3. **Duplicates are true**: every "already exists" names a profile that holds each identifier
   the reason names, with the lead's value, and that the send did not make itself.
4. **Nobody renames anybody**: no write changed a profile's email, phone or external id from
   one person's to another's.
5. **Every lead ends**: a webhook caller ends on a final answer (not a 5xx, 409 or 429), a
   queued lead with a published result that is not retryable or in the dead-letter queue
   after its deliveries; nothing is left in flight.
6. **No exception leaves a handler.**
7. **An event once per unique id**: every event Klaviyo recorded carries a unique id that a
   Track Event send owns (its own, or the lead's ``klaviyo.unique_id``); a send told success
   has its event.
8. **List and consent answers are true**: a lead told it was added to (removed from) the
   list, subscribed or unsubscribed, has an accepted request of that kind for its profile.
9. **Consent ends as the last accepted request says**: each profile's email (and SMS)
   marketing consent is what the last consent job Klaviyo applied to it asked (a bounced
   address keeps what it had); a lead told its channel is subscribed names a profile that
   holds that consent at the end, unless a later unsubscribe took it back.
10. **Consent evidence once**: a profile has at most one "Consent Captured" event per consent
   (its TrustedForm certificate), however often the lead was sent, redelivered or retried;
   a subscribe told success whose lead carried evidence has its event on its profile.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads.actions.create.identity import LABELS, normalised, token

from .answers import final
from .fleet import Send
from .world import Person, Scenario

IDENTITY = ("email", "phone_number", "external_id")


@dataclass
class Klaviyo:
    """What the emulator saw, for the checks: who made each profile, every identifier change."""

    made_by: dict[str, str | None] = field(default_factory=dict)  # profile -> mark at creation
    # profile, field, old value, new value, and whether a bulk import item or a request did it
    renames: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    seeded: set[str] = field(default_factory=set)  # profiles the account had before the run
    events: list[dict[str, Any]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)  # of the list, at the end
    requests: list[tuple[str, int | None, bytes]] = field(default_factory=list)  # as answered
    # Consent jobs as Klaviyo applied them, in order: (subscribe | unsubscribe, their profiles:
    # id, email, phone_number, channels).
    consent_jobs: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)


def check(
    scenario: Scenario,
    sends: list[Send],
    profiles: list[dict[str, Any]],
    klaviyo: Klaviyo,
    escaped: list[str],
    in_flight: list[str],
) -> list[str]:
    violations: list[str] = []
    by_id = {p["id"]: p for p in profiles}
    violations += _one_profile_per_person(scenario, profiles, klaviyo)
    for send in sends:
        violations += _answers_are_true(send, by_id, klaviyo)
    violations += _nobody_renamed(scenario, klaviyo)
    violations += _events_once(sends, klaviyo)
    violations += _list_and_consent_answers_true(sends, by_id, klaviyo)
    violations += _consent_as_last_asked(scenario, sends, profiles, klaviyo)
    violations += _evidence_once(sends, profiles, klaviyo)
    violations += _every_lead_ends(sends)
    violations += [f"an exception left a handler: {text}" for text in escaped]
    violations += [f"still in flight at the end: {text}" for text in in_flight]
    return violations


def _who(send: Send) -> str:
    owner = send.owner
    shown = owner.split(":", 1)[-1][-20:] if owner.startswith("lead-file:") else owner[:12]
    return f"lead {send.lead.number} ({send.lead.path}, {shown})"


def _owners(person: Person, people: list[Person]) -> dict[str, str]:
    """The identifiers that name this person alone."""
    shared_phones = {p.phone for p in people if p is not person and p.phone}
    found = {}
    if person.email:
        found["email"] = normalised("email", person.email)
    if person.reference:
        found["external_id"] = person.reference
    if person.phone and person.phone not in shared_phones:
        found["phone_number"] = person.phone
    return found


def _holds(profile: dict[str, Any], name: str, value: str) -> bool:
    held = (profile.get("attributes") or {}).get(name)
    return isinstance(held, str) and normalised(name, held) == normalised(name, value)


def _one_profile_per_person(
    scenario: Scenario, profiles: list[dict[str, Any]], klaviyo: Klaviyo
) -> list[str]:
    """Among the profiles the account had and those the create paths made (a profile a
    subscribe job or an event made holds only the identifiers that call carried: a create
    for another identifier of the person cannot know it is the same person)."""
    counted = [p for p in profiles if klaviyo.made_by.get(p["id"]) or p["id"] in klaviyo.seeded]
    found = []
    for person in scenario.people:
        own = _owners(person, scenario.people)
        if not own:
            continue
        theirs = [p["id"] for p in counted if any(_holds(p, n, v) for n, v in own.items())]
        if len(theirs) > 1:
            found.append(f"{person.name} has {len(theirs)} profiles: {theirs}")
    return found


def _answers_are_true(send: Send, by_id: dict[str, Any], klaviyo: Klaviyo) -> list[str]:
    found = []
    mine = token(send.owner)
    who = _who(send)
    for answer in send.answers:
        outcome, reason, named = answer.get("outcome"), answer.get("reason") or "", answer.get("id")
        claims_made = (outcome == "success" and send.lead.action == "create_profile") or (
            answer.get("created") is True
        )
        if claims_made:
            if named not in klaviyo.made_by:
                found.append(f"{who}: told created {named}, which no write made")
            elif klaviyo.made_by[named] is None:
                # Made by a subscribe job or an event (Klaviyo makes the profile it does not
                # find) and matched by a batch's import: the marks exist to prevent it.
                found.append(f"{who}: told created {named}, made as a side effect")
            elif klaviyo.made_by[named] != mine:
                found.append(f"{who}: told created {named}, made by another request")
        if answer.get("created") is False and named and klaviyo.made_by.get(named) == mine:
            found.append(f"{who}: told {named} existed, but its own write made it")
        if outcome == "failure" and "already exists" in reason:
            profile = by_id.get(named or "")
            if profile is None:
                found.append(f"{who}: duplicate of {named}, which does not exist")
                continue
            if klaviyo.made_by.get(named) == mine:
                found.append(f"{who}: told a duplicate of {named}, its own create")
            for name in _named(reason):
                value = _value(send.lead.fields, name)
                if value is None or not _holds(profile, name, value):
                    found.append(f"{who}: duplicate of {named} by {name}, which it does not hold")
    return found


def _named(reason: str) -> list[str]:
    """The identifiers an "already exists" reason names ("email or phone number": either)."""
    if " or " in reason:
        return []
    return [name for name, label in LABELS.items() if f" {label}" in reason]


def _value(fields: dict[str, Any], name: str) -> str | None:
    key = {"email": "email", "phone_number": "phone_1", "external_id": "reference"}[name]
    value = fields.get(key)
    return str(value) if value else None


def _nobody_renamed(scenario: Scenario, klaviyo: Klaviyo) -> list[str]:
    owner_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for person in scenario.people:
        for name, value in person.identifiers().items():
            owner_of[(name, value)].add(person.name)
    found = []
    for profile_id, name, old, new, by in klaviyo.renames:
        before = owner_of.get((name, normalised(name, old)), set())
        after = owner_of.get((name, normalised(name, new)), set())
        if before and after and not before & after:
            found.append(
                f"profile {profile_id}: {name} changed from {sorted(before)}'s to "
                f"{sorted(after)}'s by {by}"
            )
    return found


def _every_lead_ends(sends: list[Send]) -> list[str]:
    found = []
    for send in sends:
        who = _who(send)
        if send.dead_lettered or send.superseded:
            continue
        if not send.answers:
            found.append(f"{who}: no final result")
        elif not final(send.answers[-1]):
            last = send.answers[-1]
            found.append(f"{who}: ended on {last.get('_status')} {last.get('reason')}")
    return found


def _events_once(sends: list[Send], klaviyo: Klaviyo) -> list[str]:
    keys: dict[str, Send] = {}
    for send in sends:
        if send.lead.action == "track_event":
            keys[str(send.lead.fields.get("klaviyo.unique_id") or send.owner)] = send
    found = []
    tracked = [e for e in klaviyo.events if e.get("metric") != CONSENT_METRIC]
    recorded = {str(event.get("unique_id")) for event in tracked}
    for event in tracked:
        if str(event.get("unique_id")) not in keys:
            found.append(f"an event with a unique id no send owns: {event.get('unique_id')}")
    for key, send in keys.items():
        told = any(a.get("outcome") == "success" for a in send.answers)
        if told and key not in recorded:
            found.append(f"lead {send.lead.number} ({send.lead.path}): told tracked, no event")
    return found


NOT_IN_LIST = "The profile was not in the list"
_KINDS = {
    "add_profile_to_list": "add_profiles_to_list",
    "remove_profile_from_list": "remove_profiles_from_list",
    "subscribe_profile_to_list": "bulk_subscribe_profiles",
    "unsubscribe_profile": "bulk_unsubscribe_profiles",
}


def _list_and_consent_answers_true(
    sends: list[Send], by_id: dict[str, Any], klaviyo: Klaviyo
) -> list[str]:
    """A success names a request Klaviyo took for one of the lead's identifiers' profiles."""
    carried: dict[str, list[dict[str, Any]]] = defaultdict(list)  # operation -> its profiles
    for operation, status, body in klaviyo.requests:
        if operation not in _KINDS.values() or status not in (202, 204):
            continue
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(data, list):  # a list's relationships: profile ids
            carried[operation] += [by_id.get(item.get("id"), {}) for item in data]
        else:
            for item in data["attributes"]["profiles"]["data"]:
                attributes = item.get("attributes") or {}
                carried[operation].append(
                    by_id.get(item.get("id") or "")
                    or _profile_holding(by_id, attributes)
                    or {"attributes": attributes}
                )
    found = []
    for send in sends:
        operation = _KINDS.get(send.lead.action)
        told = [a for a in send.answers if a.get("outcome") == "success"]
        if operation is None or not told or all(a.get("reason") == NOT_IN_LIST for a in told):
            continue  # (a profile not in the list is removed from it without a request)
        values = [(n, v) for n in IDENTITY if (v := _value(send.lead.fields, n))]
        if not any(_holds(p, n, v) for p in carried[operation] for n, v in values):
            found.append(
                f"lead {send.lead.number} ({send.lead.path}): told {send.lead.action} "
                "succeeded, but Klaviyo took no such request for its profile"
            )
    return found


def _profile_holding(by_id: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any] | None:
    """The profile a job's item names by its email or phone number (as Klaviyo resolves it)."""
    for name in ("email", "phone_number"):
        value = attributes.get(name)
        if isinstance(value, str) and value:
            for profile in by_id.values():
                if _holds(profile, name, value):
                    return profile
    return None


CONSENT_METRIC = "Consent Captured"
_CONSENT = {"subscribe": "SUBSCRIBED", "unsubscribe": "UNSUBSCRIBED"}


def _marketing(profile: dict[str, Any], channel: str) -> dict[str, Any]:
    subscriptions = (profile.get("attributes") or {}).get("subscriptions") or {}
    return (subscriptions.get(channel) or {}).get("marketing") or {}


def _names(item: dict[str, Any], profile: dict[str, Any], channel: str) -> bool:
    """Whether a job's item is for this profile (by its id, email, or for SMS its phone)."""
    if item.get("id"):
        return bool(item["id"] == profile["id"])
    if item.get("email"):
        return _holds(profile, "email", item["email"])
    return (
        channel == "sms"
        and bool(item.get("phone_number"))
        and _holds(profile, "phone_number", item["phone_number"])
    )


def _last_asked(profile: dict[str, Any], channel: str, klaviyo: Klaviyo) -> str | None:
    """The consent the last job Klaviyo applied to the profile's channel asked for."""
    bounced = channel == "email" and any(
        s.get("reason") == "HARD_BOUNCE"
        for s in _marketing(profile, "email").get("suppression") or []
    )
    last = None
    for kind, items in klaviyo.consent_jobs:
        if kind == "subscribe" and bounced:
            continue  # a subscribe changes nothing for a bounced address
        if any(channel in item["channels"] and _names(item, profile, channel) for item in items):
            last = _CONSENT[kind]
    return last


def _consent_as_last_asked(
    scenario: Scenario, sends: list[Send], profiles: list[dict[str, Any]], klaviyo: Klaviyo
) -> list[str]:
    found = []
    for profile in profiles:
        for channel in ("email", "sms"):
            asked = _last_asked(profile, channel, klaviyo)
            held = _marketing(profile, channel).get("consent")
            if asked is not None and held != asked:
                found.append(
                    f"profile {profile['id']}: {channel} consent {held}, but the last job "
                    f"Klaviyo applied to it asked {asked}"
                )
    for send in sends:
        if send.lead.action != "subscribe_profile_to_list":
            continue
        channel, holders = _subscribed_where(send, profiles)
        if not any(_told_subscribed(a, channel) for a in send.answers):
            continue
        if not any(
            _marketing(p, channel).get("consent") == "SUBSCRIBED"
            or _last_asked(p, channel, klaviyo) == "UNSUBSCRIBED"
            for p in holders
        ):
            found.append(
                f"lead {send.lead.number} ({send.lead.path}): told its {channel} consent is "
                "held, but no profile of it holds it and nothing took it back"
            )
    return found


def _subscribed_where(
    send: Send, profiles: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """The channel a subscribe lead asked for (its email's, else its phone's; a lead known by
    its reference alone: its profile's) and the profiles that hold its identifier."""
    for channel, name in (("email", "email"), ("sms", "phone_number")):
        value = _value(send.lead.fields, name)
        if value:
            return channel, [p for p in profiles if _holds(p, name, value)]
    reference = _value(send.lead.fields, "external_id") or ""
    holders = [p for p in profiles if _holds(p, "external_id", reference)]
    has_email = any((p.get("attributes") or {}).get("email") for p in holders)
    return ("email" if has_email else "sms"), holders


def _told_subscribed(answer: dict[str, Any], channel: str) -> bool:
    """An answer saying Klaviyo holds the channel's consent (a result without per-channel
    words: a success without a reason, as an answer that is only an acceptance reads)."""
    if answer.get("outcome") != "success":
        return False
    if f"{channel}_consent" in answer:
        return answer[f"{channel}_consent"] == "subscribed"
    return not answer.get("reason")


def _evidence_once(
    sends: list[Send], profiles: list[dict[str, Any]], klaviyo: Klaviyo
) -> list[str]:
    found = []
    captured: dict[tuple[str, str], int] = defaultdict(int)
    consents: dict[tuple[str, str, str], int] = defaultdict(int)
    for event in klaviyo.events:
        if event.get("metric") == CONSENT_METRIC:
            properties = event.get("properties") or {}
            certificate = str(properties.get("trustedform_cert_url"))
            channels = ",".join(properties.get("channels") or [])
            captured[(str(event.get("profile_id")), certificate)] += 1
            consents[(str(event.get("profile_id")), certificate, channels)] += 1
    for (profile_id, certificate, channels), count in consents.items():
        if count > 1:
            found.append(
                f"profile {profile_id}: {count} Consent Captured events for {certificate} "
                f"({channels})"
            )
    for send in sends:
        certificate = send.lead.fields.get("trustedform_cert_url")
        told = any(a.get("outcome") == "success" for a in send.answers)
        if send.lead.action != "subscribe_profile_to_list" or not certificate or not told:
            continue
        holders = {p["id"] for p in _subscribed_where(send, profiles)[1]}
        if not any((pid, certificate) in captured for pid in holders):
            found.append(
                f"lead {send.lead.number} ({send.lead.path}): told subscribed with its "
                "evidence, but its profile has no Consent Captured event for it"
            )
    return found
