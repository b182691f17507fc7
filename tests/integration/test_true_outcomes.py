"""Each way a create's outcome was found to be untrue, as the schedule that showed it.

Every test plays one schedule of the sweep (``devtools/sweep.py``) and holds its invariants:
one profile per person; an own create reported created with its id; a real repeat reported
as the duplicate it is, with the id; no exception out of a handler; the next lead served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools import sweep
from devtools.klaviyo_emulator.faults import Fault
from devtools.lambda_events import queue_arn, sqs_event, sqs_message

S = sweep.Schedule


@pytest.fixture(scope="module")
def world(local_stack) -> Iterator[sweep.World]:
    with sweep.opened(local_stack) as opened:
        yield opened


def play(world: sweep.World, schedule: sweep.Schedule) -> sweep.Run:
    run = sweep.Run(world, schedule)
    found = run.play()
    assert found.violations == [], f"{schedule}: {found.violations}"
    return run


@pytest.mark.parametrize("kind", ["email", "external_id"])
def test_a_redelivered_bulk_create_knows_its_own_profiles(world, kind):
    """The first delivery's job was taken, then the batch went back (429s on the job's
    poll); the redelivery, while the search still lags, reports the job's profiles as
    created, and makes no second one."""
    run = play(world, S("queue_batch", kind, "throttled_confirm", 1.0, 8.0, "redelivery"))
    first = next(s for s in run.sends if s.name == "first")
    assert [a["outcome"] for a in first.answers][-1] == "success"


@pytest.mark.parametrize("delay", [0.0, 2.0, 3.5])
def test_a_double_send_in_two_batches_makes_one_profile(world, delay):
    """The same external-id-only lead in two batches: one profile, the second a duplicate."""
    run = play(world, S("queue_batch", "external_id", "none", delay, 8.0, "repeat"))
    repeat = next(s for s in run.sends if s.name == "repeat")
    assert "already exists" in (repeat.final or {}).get("reason", "")


def test_a_webhook_create_and_a_batch_half_a_second_apart_make_one_profile(world):
    run = play(world, S("webhook_then_batch", "external_id", "none", 0.5, 8.0, "repeat"))
    repeat = next(s for s in run.sends if s.name == "repeat")
    first = next(s for s in run.sends if s.name == "first")
    assert repeat.final["id"] == first.final["id"]


@pytest.mark.parametrize("path", ["queue_batch", "queue_one", "webhook_keyed"])
def test_a_real_repeat_is_a_duplicate_however_soon_it_comes(world, path):
    """Two sends of one email: the second is the duplicate it is, with the first's id
    (it used to be "success", and its job overwrote the first's data)."""
    run = play(world, S(path, "email", "none", 0.5, 0.0, "repeat"))
    repeat = next(s for s in run.sends if s.name == "repeat")
    assert (repeat.final or {}).get("outcome") == "failure"


def test_a_redelivered_repeat_within_the_clock_skew_is_still_a_duplicate(world):
    """A repeat whose first delivery was handed back (a 429) and comes again a second later,
    when the original was made moments before: not its own create (a skew of 30 s made it
    one)."""
    run = sweep.Run(world, S("queue_one", "email", "none", 0.0, 0.0, "redelivery"))
    person = run.person("email")
    original = run.send(person, "first")
    run.attempt(original, fresh=True)
    repeat = run.send(person, "repeat")
    world.emulator.faults.add(Fault(operation_id="create_profile", status=429, retry_after=1))
    body = json.dumps(run.people[person])
    for count in (1, 2):
        message = sqs_message(body, message_id=repeat.origin, receive_count=count)
        run.by_message[repeat.origin] = repeat
        event = sqs_event([message], queue_arn("create-profile"))
        world.handler(event, run._context())
        world.clock.sleep(1.0)
    repeat.answers += [
        fields for message_id, fields in world.published if message_id == repeat.origin
    ]
    assert repeat.final is not None
    assert repeat.final["outcome"] == "failure"
    assert repeat.final["id"] == original.final["id"]


def test_a_one_lead_external_id_create_retried_within_the_lag_makes_one_profile(world):
    """The POST lands, its answer is lost, the confirming search is throttled, the lead is
    handed back; the redelivery keeps its own record and waits for the search."""
    play(world, S("queue_one", "external_id", "throttled_confirm", 1.0, 8.0, "redelivery"))


@pytest.mark.parametrize("fault", ["killed", "persistence"])
def test_a_keyed_webhook_whose_first_attempt_died_reports_its_own_create(world, fault):
    run = play(world, S("webhook_keyed", "email", fault, 2.0, 2.0, "redelivery"))
    first = next(s for s in run.sends if s.name == "first")
    assert first.final["outcome"] == "success"
    assert all(a["_status"] != 422 for a in first.answers)


def test_a_persistence_error_is_an_answer_not_an_exception(world):
    run = play(world, S("webhook_unkeyed", "email", "persistence", 0.5, 0.0, "redelivery"))
    assert run.found.violations == []


@pytest.mark.parametrize("path", ["queue_batch", "queue_one"])
def test_an_unreadable_success_is_not_a_final_error(world, path):
    """Klaviyo took the write (a 202 job, a 201 profile) but its answer cannot be read: the
    lead comes back and finds what was made."""
    run = play(world, S(path, "email", "unreadable", 5.0, 2.0, "redelivery"))
    first = next(s for s in run.sends if s.name == "first")
    assert first.final["outcome"] == "success"


@pytest.mark.parametrize("path", ["eventbridge", "direct"])
def test_event_and_direct_retries_know_they_are_retries(world, path):
    """Lambda retries an event that died part-way with the same id: the retry finds its own
    create, not an "already exists"."""
    run = play(world, S(path, "email", "killed", 0.0, 2.0, "redelivery"))
    first = next(s for s in run.sends if s.name == "first")
    assert [a["outcome"] for a in first.answers] == ["success"] * len(first.answers)
