"""The soak's books: a record that came back later than asked, or was asked to wait longer
than Klaviyo said, is counted; one that waited for a busy fleet, or that moto lost, is not.
Per person: one profile, one send reported created, every other send "already exists" with
that profile's id; whichever send wins."""

from __future__ import annotations

import json
import random
from collections import Counter

from devtools.soak import DOUBLE_SEND_DELAYS, DoubleSends, Sender, make_leads, plan_double_sends
from devtools.soak_books import (
    ACROSS,
    KEYED,
    PERSON_TARGETS,
    QUEUE,
    UNKEYED,
    Books,
    duplicate_profiles,
    late_records,
    lead_sends,
    person,
    person_books,
    profile_person,
    webhook_sends,
)
from devtools.soak_roles import SPAN_ATTRIBUTE


def consumer(receives=(), hand_backs=(), short_polls=()):
    return {
        "receives": [list(r) for r in receives],
        "hand_backs": list(hand_backs),
        "short_polls": [list(p) for p in short_polls],
        "failed_receives": [],
    }


def hand_back(at, visibility, retry_in=None, reason="Klaviyo returned HTTP 429 (rate limited)"):
    return {
        "message_id": "m",
        "at": at,
        "visibility": visibility,
        "retry_in": retry_in,
        "reason": reason,
        "refused": False,
    }


def books(*consumers, longest_retry_after=30):
    return Books(consumers=list(consumers), longest_retry_after=longest_retry_after)


def test_a_record_that_came_back_when_asked_is_on_time():
    figures = late_records(
        books(consumer([(100, "m", 1), (131, "m", 2)], [hand_back(101, 30, 25.0)], [(120, 120.1)]))
    )
    assert figures["received_later_than_asked"] == 0
    assert figures["longest_overshoot_seconds"] == 0.0


def test_a_record_that_stayed_away_while_the_queue_looked_empty_is_late():
    figures = late_records(
        books(consumer([(100, "m", 1), (200, "m", 2)], [hand_back(101, 30, 25.0)], [(150, 150.1)]))
    )
    assert figures["received_later_than_asked"] == 1
    assert figures["longest_overshoot_seconds"] == 69.0


def test_a_record_that_waited_for_a_busy_fleet_is_not_late():
    """Nobody polled between when it was due and when it came: every consumer was busy."""
    figures = late_records(
        books(consumer([(100, "m", 1), (200, "m", 2)], [hand_back(101, 30, 25.0)], [(199, 200)]))
    )
    assert figures["received_later_than_asked"] == 0


def test_a_delivery_nobody_saw_is_counted_apart():
    figures = late_records(
        books(consumer([(100, "m", 1), (250, "m", 3)], [hand_back(101, 30, 25.0)], [(150, 150.1)]))
    )
    assert figures["received_later_than_asked"] == 0
    assert figures["deliveries_nobody_saw"] == 1


def test_a_visibility_beyond_retry_after_and_jitter_is_counted():
    asked = [hand_back(0, 37, 30.0), hand_back(0, 45, 30.0), hand_back(0, 40, 40.0)]
    figures = late_records(books(consumer(hand_backs=asked), longest_retry_after=30))
    # 37 s is 30 s plus 20 % jitter; 45 s is more; a 40 s wait is more than Klaviyo asked.
    assert figures["visibility_longer_than_asked"] == 2


def test_the_pacers_own_wait_is_bounded_by_the_minute_not_by_retry_after():
    own = "Klaviyo's rate limit leaves no room for 55 s; not sent"
    figures = late_records(
        books(
            consumer(hand_backs=[hand_back(0, 60, 55.0, own), hand_back(0, 90, 75.0, own)]),
            longest_retry_after=1,
        )
    )
    assert figures["visibility_longer_than_asked"] == 1  # 75 s: beyond 60 s and the spread


def test_duplicate_profiles_count_extra_profiles_per_email_or_external_id():
    profiles = [
        {"attributes": {"email": "a@example.com"}},
        {"attributes": {"email": "a@example.com"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"email": "b@example.com"}},
    ]
    assert duplicate_profiles(profiles) == 3


# -- people: one profile and one "created" per person, on every path ------------------------

EMAIL = {"email": "ann@example.com", "reference": "crm-1"}
EXTERNAL = {"reference": "ext-1"}


def profile(profile_id, email=None, external_id=None, phone=None):
    attributes = {"email": email, "external_id": external_id, "phone_number": phone}
    return {"id": profile_id, "attributes": attributes}


def created(profile_id):
    return {"outcome": "success", "reason": None, "id": profile_id, "duplicate_profile_id": None}


def exists(profile_id, reason="A profile with this email or phone number already exists"):
    return {
        "outcome": "failure",
        "reason": reason,
        "id": profile_id,
        "duplicate_profile_id": profile_id,
    }


def sent(lead, answer, path=QUEUE):
    return {"path": path, "lead": lead, "answer": answer}


def call(lead, key, *answers):
    return {"lead": lead, "key": key, "answers": list(answers)}


def answer(status, outcome, reason=None, profile_id=None, lost=False):
    got = {"status": status, "outcome": outcome, "reason": reason, "id": profile_id}
    return {**got, "lost": True} if lost else got


def targets(figures, column="all"):
    return {t: figures["paths"][column][t] for t in PERSON_TARGETS}


def test_who_a_lead_is_about():
    assert person(EMAIL) == "email:ann@example.com"
    assert person({"email": "Ann@Example.com "}) == "email:ann@example.com"
    assert person({"email": "broken-soak-1.example.com"}) is None  # no profile may come of it
    assert person({"phone_number": "+1 (555) 010-0000"}) == "phone:15550100000"
    assert person(EXTERNAL) == "external_id:ext-1"
    assert profile_person(profile("p", external_id="ext-1")) == "external_id:ext-1"
    assert profile_person(profile("p", email="ann@example.com", external_id="crm-1")) == (
        "email:ann@example.com"
    )
    assert profile_person(profile("p", phone="+15550100000")) == "phone:15550100000"


def test_one_profile_one_created_and_the_repeats_naming_it_are_right():
    figures = person_books(
        [sent(EMAIL, created("p1")), sent(EMAIL, exists("p1")), sent(EXTERNAL, created("p2"))],
        [profile("p1", email="ann@example.com"), profile("p2", external_id="ext-1")],
    )
    assert targets(figures) == dict.fromkeys(PERSON_TARGETS, 0)
    row = figures["paths"][QUEUE]
    assert (row["people"], row["leads"]) == (2, 3)
    assert (row["success_expected"], row["success"]) == (2, 2)
    assert (row["repeats_expected"], row["repeats"]) == (1, 1)
    assert figures["profiles_for_no_lead"] == 0


def test_either_send_of_a_person_may_be_the_one_created():
    """Under concurrency the later send may win: the books do not care which one."""
    figures = person_books(
        [sent(EMAIL, exists("p1")), sent(EMAIL, created("p1"))],
        [profile("p1", email="ann@example.com")],
    )
    assert targets(figures) == dict.fromkeys(PERSON_TARGETS, 0)


def test_an_own_create_told_already_exists_is_counted():
    figures = person_books([sent(EMAIL, exists("p1"))], [profile("p1", email="ann@example.com")])
    assert targets(figures)["own_creates_reported_as_duplicates"] == 1
    assert figures["paths"][QUEUE]["own_creates_reported_as_duplicates"] == 1
    assert figures["person_examples"][0]["person"] == "email:ann@example.com"


def test_a_person_whose_leads_all_say_already_exists_has_no_create_reported():
    """A double send both told "already exists", with the profile one of them made."""
    figures = person_books(
        [sent(EXTERNAL, exists("p1")), sent(EXTERNAL, exists("p1"))],
        [profile("p1", external_id="ext-1")],
    )
    assert targets(figures)["own_creates_reported_as_duplicates"] == 1
    assert figures["paths"][QUEUE]["repeats"] == 2


def test_a_create_reported_with_another_id_is_not_its_own_create_reported():
    figures = person_books(
        [sent(EMAIL, created("somebody-else"))], [profile("p1", email="ann@example.com")]
    )
    assert targets(figures)["own_creates_reported_as_duplicates"] == 1


def test_a_repeat_told_created_is_counted_even_with_the_right_id():
    figures = person_books(
        [sent(EMAIL, created("p1")), sent(EMAIL, created("p1"))],
        [profile("p1", email="ann@example.com")],
    )
    assert targets(figures) == {
        **dict.fromkeys(PERSON_TARGETS, 0),
        "repeats_reported_as_created": 1,
    }
    assert (figures["paths"]["all"]["success_expected"], figures["paths"]["all"]["success"]) == (
        1,
        2,
    )


def test_a_second_profile_for_an_external_id_is_counted():
    figures = person_books(
        [sent(EXTERNAL, created("p1")), sent(EXTERNAL, created("p2"))],
        [profile("p1", external_id="ext-1"), profile("p2", external_id="ext-1")],
    )
    assert targets(figures)["second_profiles"] == 1
    assert targets(figures)["repeats_reported_as_created"] == 1
    assert targets(figures)["own_creates_reported_as_duplicates"] == 0


def test_a_duplicate_naming_another_profile_or_none_is_counted():
    figures = person_books(
        [
            sent(EMAIL, created("p1")),
            sent(EMAIL, exists("p9")),
            sent(EMAIL, {**exists(None), "id": None}),
        ],
        [profile("p1", email="ann@example.com"), profile("p9", email="bob@example.com")],
    )
    assert targets(figures)["duplicates_naming_another_profile"] == 2
    assert figures["profiles_for_no_lead"] == 1  # bob: no lead asked for him


def test_a_person_on_several_paths_is_counted_across_them():
    figures = person_books(
        [sent(EXTERNAL, created("p1")), sent(EXTERNAL, created("p2"), KEYED)],
        [profile("p1", external_id="ext-1"), profile("p2", external_id="ext-1")],
    )
    assert figures["paths"][ACROSS]["second_profiles"] == 1
    assert figures["paths"][QUEUE]["second_profiles"] == 0
    assert figures["paths"][KEYED]["people"] == 0
    assert figures["paths"][ACROSS]["people"] == 1


def test_invalid_leads_belong_to_no_person():
    broken = {"email": "broken-soak-3.example.com"}
    invalid = {"outcome": "failure", "reason": "Invalid email address"}
    figures = person_books([sent(broken, invalid)], [])
    assert figures["paths"]["all"]["people"] == 0
    assert (figures["invalid_leads"], figures["invalid_leads_answered_failure"]) == (1, 1)


def test_a_redelivered_message_and_a_keyed_repeat_are_one_send():
    books_ = Books(
        sent={"m1": EMAIL},
        results={"m1": [created("p1"), created("p1")]},  # published twice: one send
        webhook=[
            call(
                EXTERNAL,
                "key-1",
                answer(201, "success", profile_id="p2", lost=True),
                answer(201, "success", profile_id="p2"),
            )
        ],
    )
    sends = lead_sends(books_)
    assert [s["path"] for s in sends] == [QUEUE, KEYED]
    figures = person_books(
        sends, [profile("p1", email="ann@example.com"), profile("p2", external_id="ext-1")]
    )
    assert targets(figures) == dict.fromkeys(PERSON_TARGETS, 0)


def test_a_keyed_lead_is_answered_by_its_last_answer():
    """Its first attempt made the profile; a repeat with the key told "already exists"."""
    sends = webhook_sends(
        call(
            EXTERNAL,
            "key-1",
            answer(201, "success", profile_id="p1", lost=True),
            answer(422, "failure", "A profile with this external id already exists", "p1"),
        )
    )
    figures = person_books(sends, [profile("p1", external_id="ext-1")])
    assert figures["paths"][KEYED]["own_creates_reported_as_duplicates"] == 1


def test_an_unkeyed_resend_after_a_lost_answer_is_a_repeat():
    sends = webhook_sends(
        call(
            EXTERNAL,
            None,
            answer(201, "success", profile_id="p1", lost=True),
            answer(503, "error", "Klaviyo returned HTTP 503"),
            answer(422, "failure", "A profile with this external id already exists", "p1"),
        )
    )
    assert [s["answer"]["status"] for s in sends] == [201, 422]  # the 503 was retried: one send
    figures = person_books(sends, [profile("p1", external_id="ext-1")])
    assert targets(figures) == dict.fromkeys(PERSON_TARGETS, 0)
    assert figures["paths"][UNKEYED]["repeats_expected"] == 1


def test_an_unkeyed_create_answered_5xx_and_then_already_exists_is_counted():
    """The caller saw a 503, retried, and was told its own create already existed."""
    sends = webhook_sends(
        call(
            EMAIL,
            None,
            answer(503, "error", "Klaviyo returned HTTP 503"),
            answer(
                422, "failure", "A profile with this email or phone number already exists", "p1"
            ),
        )
    )
    figures = person_books(sends, [profile("p1", email="ann@example.com")])
    assert figures["paths"][UNKEYED]["own_creates_reported_as_duplicates"] == 1


def test_a_lost_queued_lead_has_no_answer():
    sends = lead_sends(Books(sent={"m1": EMAIL}))
    figures = person_books(sends, [])
    assert figures["paths"][QUEUE]["other_answers"] == 1
    assert targets(figures) == dict.fromkeys(PERSON_TARGETS, 0)


# -- the vendor's double sends ----------------------------------------------------------------


def test_double_sends_take_external_id_and_email_leads_never_invalid_ones():
    leads = make_leads(2000, random.Random(7))
    plan = plan_double_sends(leads, random.Random(8), 0.02, 0.01)
    assert (len(plan.again), len(plan.spans)) == (40, 20)
    chosen = [leads[i] for i in [*plan.again, *plan.spans]]
    kinds = Counter((person(lead) or "invalid").split(":")[0] for lead in chosen)
    assert kinds["external_id"] == 30 and kinds["email"] == 30 and not kinds["invalid"]
    assert set(plan.again.values()) <= set(DOUBLE_SEND_DELAYS)
    assert not set(plan.again) & set(plan.spans)
    assert plan == plan_double_sends(leads, random.Random(8), 0.02, 0.01)


class FakeQueue:
    def __init__(self):
        self.messages = []

    def send_message_batch(self, QueueUrl, Entries):  # boto3 calls it with these names
        successful = []
        for entry in Entries:
            self.messages.append(entry)
            successful.append({"Id": entry["Id"], "MessageId": f"m{len(self.messages)}"})
        return {"Successful": successful}


def test_the_sender_queues_a_lead_again_behind_itself_or_when_its_delay_is_up():
    leads = [{"email": f"lead-{i}@example.com"} for i in range(4)]
    plan = DoubleSends(again={1: 0.0, 2: 3600.0}, spans={3: {"key": None, "webhook_first": True}})
    queue, books_ = FakeQueue(), Books()
    sender = Sender(queue, "url", leads, plan, books_)
    assert sender.top_up(10) == 5
    names = [json.loads(m["MessageBody"])["email"].split("@")[0] for m in queue.messages]
    assert names == ["lead-0", "lead-1", "lead-1", "lead-2", "lead-3"]  # lead 1 right behind
    spans = [
        i for i, m in enumerate(queue.messages) if SPAN_ATTRIBUTE in m.get("MessageAttributes", {})
    ]
    assert spans == [4]
    assert not sender.done and sender.flush() == 0  # lead 2 goes again in an hour
    sender.due = [(0.0, 2)]
    assert sender.flush() == 1 and sender.done
    assert (len(books_.sent), books_.double_sent) == (6, 2)
