"""The soak's books: what its consumers, its webhook caller and Klaviyo recorded, counted.

``soak.py`` runs the soak and fills a ``Books``; the functions here read it: records that came
back later than asked, duplicate profiles, and per person and per path what each send was
answered. Each count that must be 0 is one of the soak's checks (``soak.report``).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()
from klaviyo_leads.aws.queue import JITTER  # noqa: E402
from klaviyo_leads.klaviyo.pacing import MAX_WAKE_SPREAD  # noqa: E402
from klaviyo_leads.klaviyo.rate_limit_headers import STEADY_WINDOW_SECONDS  # noqa: E402

# How much later than asked a record may be received: the consumers' poll interval, moto's
# bookkeeping and a busy machine (four consumers, moto and the emulator on two cores).
RECEIVE_SLACK_SECONDS = 5.0
# moto's server, receiving for several consumers at once, now and then counts a delivery of a
# message without returning it to anyone (its ApproximateReceiveCount skips a number). The
# record then waits for the queue's visibility timeout, as it would in SQS after a receive
# whose answer was lost. Those deliveries are counted on their own, not as records late by
# the function's doing.


@dataclass
class Books:
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> lead
    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead_lettered: set[str] = field(default_factory=set)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    webhook: list[dict[str, Any]] = field(default_factory=list)
    klaviyo_calls: int = 0
    faults: int = 0
    throttled: int = 0
    longest_retry_after: int = 0
    crashed: int = 0  # consumer processes that died
    double_sent: int = 0  # second messages of leads the vendor sent twice on the queue
    twins: list[dict[str, Any]] = field(default_factory=list)  # webhook twins of queued leads


# -- the books ------------------------------------------------------------------------------


def duplicate_profiles(profiles: list[dict[str, Any]]) -> int:
    """Extra profiles for one lead: the same email, or the same external id, on several."""
    seen: Counter[str] = Counter()
    for profile in profiles:
        attributes = profile["attributes"]
        key = attributes.get("email") or attributes.get("external_id")
        if key:
            seen[key] += 1
    return sum(count - 1 for count in seen.values() if count > 1)


def late_records(books: Books) -> dict[str, Any]:
    """Each redelivery of a handed-back record against when it was asked to come back.

    The record's last hand-back before a delivery says when it was due: its visibility
    timeout. It came back late if it was delivered more than ``RECEIVE_SLACK_SECONDS`` after
    that while some consumer found the queue empty in between (when every consumer is busy,
    a visible record waits for one, as it does for Lambda at its concurrency limit)."""
    events: dict[str, list[tuple[float, str, dict[str, Any]]]] = defaultdict(list)
    short_polls: list[list[float]] = []
    for index, consumer in enumerate(books.consumers):
        for at, message_id, count in consumer["receives"]:
            events[message_id].append((at, "receive", {"consumer": index, "count": count}))
        for h in consumer["hand_backs"]:
            events[h["message_id"]].append((h["at"], "hand back", {"consumer": index, **h}))
        short_polls += consumer["short_polls"]
    short_polls.sort()
    hand_backs = [h for consumer in books.consumers for h in consumer["hand_backs"]]
    over_asked = [h for h in hand_backs if not _as_asked(h, books.longest_retry_after)]
    late, unseen, longest_overshoot, examples = 0, 0, 0.0, []
    for timeline in events.values():
        timeline.sort(key=lambda e: e[0])
        due: float | None = None
        count = 0
        for at, kind, detail in timeline:
            if kind == "hand back" and not detail["refused"]:
                due = at + detail["visibility"]
            elif kind == "receive":
                skipped, count = detail["count"] > count + 1, detail["count"]
                if skipped:  # delivered to nobody (see the note on moto above)
                    unseen += 1
                    due = None
                if due is None:
                    continue
                overshoot = at - due
                longest_overshoot = max(longest_overshoot, overshoot)
                if overshoot > RECEIVE_SLACK_SECONDS and _polled_between(
                    short_polls, due + RECEIVE_SLACK_SECONDS, at
                ):
                    late += 1
                    if len(examples) < 5:
                        examples.append([f"{t:.1f} {k}: {d}" for t, k, d in timeline])
                due = None
    return {
        "hand_backs": len(hand_backs),
        "hand_backs_on_retry_after": sum(1 for h in hand_backs if h["retry_in"] is not None),
        "visibility_refused": sum(1 for h in hand_backs if h["refused"]),
        "hand_back_reasons": dict(
            Counter(_generic(h.get("reason") or "?") for h in hand_backs).most_common()
        ),
        "visibility_longer_than_asked": len(over_asked),
        "received_later_than_asked": late,
        "deliveries_nobody_saw": unseen,
        "receives_moto_failed": sum(len(c["failed_receives"]) for c in books.consumers),
        "longest_overshoot_seconds": round(longest_overshoot, 2),
        "late_examples": examples + [[f"over asked: {h}"] for h in over_asked[:3]],
    }


def _as_asked(hand_back: dict[str, Any], longest_retry_after: int) -> bool:
    """Whether a hand-back on a wait asked for no more than that wait plus its jitter.

    Klaviyo's ``Retry-After`` bounds the wait of a 429 (and of a lead the pacer holds back
    because of one); a pacer that found no room left in the minute waits at most for the
    window's ``RateLimit-Reset`` (60 s) plus its wake spread."""
    retry_in = hand_back["retry_in"]
    if retry_in is None:
        return True  # the back-off by delivery: checked by when the record came back
    jitter = max(1.0, JITTER * retry_in) + 1.0  # rounded up to whole seconds
    if hand_back["visibility"] > retry_in + jitter:
        return False
    own_share = (hand_back.get("reason") or "").startswith("Klaviyo's rate limit leaves no room")
    return retry_in <= (
        STEADY_WINDOW_SECONDS + MAX_WAKE_SPREAD if own_share else longest_retry_after
    )


def _generic(reason: str) -> str:
    """A reason without its figures, so that alike reasons count together."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def _polled_between(polls: list[list[float]], start: float, end: float) -> bool:
    """Whether some consumer, in a receive begun after ``start`` and over before ``end``,
    found no more visible messages."""
    for began, ended in polls[bisect.bisect_right(polls, [start, 0.0]) :]:
        if began >= end:
            return False
        if ended < end:
            return True
    return False


# -- people: one profile and one "created" for each -----------------------------------------

QUEUE, KEYED, UNKEYED, ACROSS = "queue", "webhook keyed", "webhook unkeyed", "across paths"
PATHS = (QUEUE, KEYED, UNKEYED, ACROSS)
PERSON_TARGETS = (
    "own_creates_reported_as_duplicates",
    "repeats_reported_as_created",
    "second_profiles",
    "duplicates_naming_another_profile",
)
PERSON_ROWS = (
    "people",
    "leads",
    "success_expected",
    "success",
    "repeats_expected",
    "repeats",
    "other_answers",
    *PERSON_TARGETS,
)


def person(lead: dict[str, Any]) -> str | None:
    """Who a lead is about, as the generator made it: its email, else its phone, else its
    external id (a lead known only by one); None for a lead no profile may come of (the
    generator's invalid emails have no "@")."""
    email = lead.get("email")
    if email:
        return f"email:{email.strip().lower()}" if "@" in email else None
    phone = lead.get("phone_number") or lead.get("phone")
    if phone:
        return "phone:" + re.sub(r"\D", "", str(phone))
    external_id = lead.get("external_id") or lead.get("reference")
    return f"external_id:{external_id}" if external_id else None


def profile_person(profile: dict[str, Any]) -> str | None:
    """Who a Klaviyo profile is, in the terms of :func:`person`."""
    attributes = profile["attributes"]
    if attributes.get("email"):
        return f"email:{attributes['email'].strip().lower()}"
    if attributes.get("phone_number"):
        return "phone:" + re.sub(r"\D", "", attributes["phone_number"])
    if attributes.get("external_id"):
        return f"external_id:{attributes['external_id']}"
    return None


def webhook_sends(call: dict[str, Any]) -> list[dict[str, Any]]:
    """The sends of one webhook lead, each with the answer it stands by.

    With a key, the lead is one send whatever the caller did (every attempt repeats the
    first), answered by its last answer. Without one, an attempt whose answer the caller
    lost is a send of its own (the caller sent the lead again, and the bundle cannot tell the
    new request from a new lead); the attempts after it, retried on a 409 or 5xx the caller
    saw, are one more send, answered by the last of them."""
    path = KEYED if call["key"] else UNKEYED
    answers = call["answers"]
    if call["key"]:
        return [{"path": path, "lead": call["lead"], "answer": answers[-1]}] if answers else []
    sends = [{"path": path, "lead": call["lead"], "answer": a} for a in answers if a.get("lost")]
    seen = [a for a in answers if not a.get("lost")]
    if seen:
        sends.append({"path": path, "lead": call["lead"], "answer": seen[-1]})
    return sends


def lead_sends(books: Books) -> list[dict[str, Any]]:
    """Every send of a lead, queued or by webhook, with the answer the bundle gave it: a
    queued message is one send (its redeliveries too), answered by its first published
    result (None when there is none: lost)."""
    sends = [
        {"path": QUEUE, "lead": lead, "answer": (books.results.get(message_id) or [None])[0]}
        for message_id, lead in books.sent.items()
    ]
    for call in [*books.webhook, *books.twins]:
        sends += webhook_sends(call)
    return sends


def answered(answer: dict[str, Any] | None) -> str:
    """``created`` (success), ``duplicate`` (failure, "already exists"), or ``other``."""
    if answer is None:
        return "other"
    if answer.get("outcome") == "success":
        return "created"
    if answer.get("outcome") == "failure" and "already exists" in (answer.get("reason") or ""):
        return "duplicate"
    return "other"


def named_profile(answer: dict[str, Any] | None) -> str | None:
    """The profile an answer names: a duplicate's ``duplicate_profile_id``, else its ``id``."""
    if answer is None:
        return None
    return answer.get("duplicate_profile_id") or answer.get("id")


def person_books(sends: list[dict[str, Any]], profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """Every person's leads (all of them, on every path) against the profiles Klaviyo has.

    For each person the bundle should make one profile and report one send created, with the
    profile's id, and every other send "already exists", naming that profile. Counted per
    person, on the person's path (``ACROSS`` when its sends came by several):

    - own creates reported as duplicates: a person with a profile, but no send reported
      created with a profile of theirs;
    - repeats reported as created: sends reported created beyond the first;
    - second profiles: profiles beyond the first;
    - duplicates naming another profile: sends reported "already exists" whose id is none of
      the person's profiles (or missing).

    Which send is first is not decided here: under concurrency either may rightly win.
    ``success_expected`` is one per person, ``repeats_expected`` the rest of its sends."""
    people: dict[str, list[dict[str, Any]]] = defaultdict(list)
    invalid: list[dict[str, Any]] = []
    for send in sends:
        who = person(send["lead"])
        if who is None:
            invalid.append(send)
        else:
            people[who].append(send)
    made: dict[str | None, list[str]] = defaultdict(list)
    for profile in profiles:
        made[profile_person(profile)].append(profile["id"])
    rows = {column: dict.fromkeys(PERSON_ROWS, 0) for column in (*PATHS, "all")}
    examples: list[dict[str, Any]] = []
    for who, group in people.items():
        paths = {s["path"] for s in group}
        column = paths.pop() if len(paths) == 1 else ACROSS
        ids = made.get(who, [])
        kinds = [answered(s["answer"]) for s in group]
        created = [s["answer"] for s, kind in zip(group, kinds, strict=True) if kind == "created"]
        counts = {
            "people": 1,
            "leads": len(group),
            "success_expected": 1,
            "success": len(created),
            "repeats_expected": len(group) - 1,
            "repeats": kinds.count("duplicate"),
            "other_answers": kinds.count("other"),
            "own_creates_reported_as_duplicates": int(
                bool(ids) and not any(named_profile(a) in ids for a in created)
            ),
            "repeats_reported_as_created": max(0, len(created) - 1),
            "second_profiles": max(0, len(ids) - 1),
            "duplicates_naming_another_profile": sum(
                1
                for s, kind in zip(group, kinds, strict=True)
                if kind == "duplicate" and named_profile(s["answer"]) not in ids
            ),
        }
        for row in (rows[column], rows["all"]):
            for name, value in counts.items():
                row[name] += value
        if any(counts[t] for t in PERSON_TARGETS) and len(examples) < 5:
            examples.append(
                {
                    "person": who,
                    "profiles": ids,
                    "sends": [
                        {
                            "path": s["path"],
                            **{
                                k: (s["answer"] or {}).get(k)
                                for k in ("outcome", "reason", "id", "duplicate_profile_id")
                            },
                        }
                        for s in group
                    ],
                    **{t: counts[t] for t in PERSON_TARGETS if counts[t]},
                }
            )
    return {
        "paths": rows,
        "profiles_for_no_lead": sum(len(v) for k, v in made.items() if k not in people),
        "invalid_leads": len(invalid),
        "invalid_leads_answered_failure": sum(
            1 for s in invalid if (s["answer"] or {}).get("outcome") == "failure"
        ),
        "person_examples": examples,
    }


def span_gaps(books: Books) -> list[float]:
    """For each queued lead with a webhook twin: seconds from the batch's invocation to the
    twin's post (negative when the post went first)."""
    invoked = {
        span["message_id"]: span["invoked_at"]
        for consumer in books.consumers
        for span in consumer.get("spans", [])
    }
    return [
        round(call["started_at"] - invoked[call["twin_of"]], 2)
        for call in books.twins
        if call["twin_of"] in invoked
    ]


def webhook_books(books: Books) -> dict[str, Any]:
    unanswered, keyed_repeats, keyed_repeat_differs, unkeyed_already_exists = 0, 0, 0, 0
    calls = [*books.webhook, *books.twins]  # the caller's leads and the queued leads' twins
    for call in calls:
        answers = [a for a in call["answers"] if not a.get("lost")]
        final = call["answers"][-1]
        if final["status"] in (409, 500, 502, 503, 504):
            unanswered += 1
        repeated = len(call["answers"]) > 1
        if call["key"] and repeated:
            keyed_repeats += 1
            first = call["answers"][0]
            kept = first["status"] not in (409, 500, 502, 503, 504)
            if kept and (final["status"], final["id"]) != (first["status"], first["id"]):
                keyed_repeat_differs += 1
        elif repeated and "already exists" in (answers[-1].get("reason") or ""):
            unkeyed_already_exists += 1
    return {
        "webhook_leads": len(calls),
        "webhook_calls": sum(len(c["answers"]) for c in calls),
        "webhook_without_final_answer": unanswered,
        "keyed_repeats": keyed_repeats,
        "keyed_repeats_not_answered_with_the_first_answer": keyed_repeat_differs,
        "unkeyed_repeats_answered_already_exists": unkeyed_already_exists,
    }
