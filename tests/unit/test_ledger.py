"""The create ledger's records, on moto's DynamoDB and on the in-memory one alike.

Invariants: a request takes all of a lead's identifiers or none; two requests sharing any
identifier meet on it; a retry of a request finds its own record; an attempt whose record
was adopted by another attempt, or taken over by another request, cannot write; a takeover
needs the holder's hold to have run out, and a request taken over can take the person back
once its taker went away in turn; a released record frees every identifier.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.memory_dynamodb import MemoryDynamoDB
from klaviyo_leads.actions.create.identity import Person
from klaviyo_leads.aws.ledger import CreateLedger
from klaviyo_leads.aws.ledger_records import CLOCK_TOLERANCE_SECONDS, HoldLost

TABLE = "records"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


_tables = iter(range(10_000))


@pytest.fixture(params=["memory", "moto"])
def ledger(request: pytest.FixtureRequest) -> CreateLedger:
    if request.param == "memory":
        client: Any = MemoryDynamoDB()
    else:
        client = request.getfixturevalue("moto_dynamodb")
    table = f"{TABLE}-{next(_tables)}"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return CreateLedger(table, client_factory=lambda: client, clock=Clock())


A_P = Person(email="a@example.com", phone_number="+12125550100")
B_P = Person(email="b@example.com", phone_number="+12125550100")
B = Person(email="b@example.com")
A_R = Person(email="a@example.com", external_id="crm-1")
R = Person(external_id="crm-1")


def test_any_shared_identifier_meets_its_holder_and_nothing_is_half_taken(ledger):
    first = ledger.take(A_P.identities(), "one", "t1", 60).mine
    assert first is not None
    met = ledger.take(B_P.identities(), "two", "t2", 60)
    assert met.mine is None
    assert [(h.identity, h.owner) for h in met.others] == [(B_P.identities()[1], "one")]
    assert met.others[0].record == first
    # All or nothing: "two" took not even the email it had alone.
    assert ledger.take(B.identities(), "three", "t3", 60).mine is not None


def test_an_external_id_beside_an_email_meets_the_external_id_alone(ledger):
    assert ledger.take(A_R.identities(), "one", "t1", 60).mine is not None
    met = ledger.take(R.identities(), "two", "t2", 60)
    assert [h.owner for h in met.others] == ["one"]


def test_a_retry_finds_its_own_record_and_adopts_it_once_the_attempt_ended(ledger):
    first = ledger.take(A_P.identities(), "one", "t1", 60).mine
    written = ledger.renew(first, 60, writing=True)
    busy = ledger.take(A_P.identities(), "one", "t2", 60)
    assert busy.mine is None and busy.busy  # the first attempt may still write
    ledger.pause(written)
    again = ledger.take(A_P.identities(), "one", "t2", 60).mine
    assert again is not None and again.attempt == "t2" and again.written_at is not None
    with pytest.raises(HoldLost):
        ledger.renew(written, 60, writing=True)  # the old attempt cannot write any more


def test_a_takeover_needs_the_hold_to_have_run_out_and_stops_the_old_holder(ledger):
    clock = ledger.clock
    old = ledger.take(A_P.identities(), "one", "t1", 60).mine
    met = ledger.take(B_P.identities(), "two", "t2", 60).others
    assert ledger.take_over(B_P.identities(), "two", "t2", 60, met) is None  # still held
    clock.now += 60 + CLOCK_TOLERANCE_SECONDS + 1
    taken = ledger.take_over(B_P.identities(), "two", "t2", 60, met)
    assert taken is not None and taken.owner == "two"
    with pytest.raises(HoldLost):
        ledger.renew(old, 60, writing=True)
    # The old request's retry now meets the new holder on the phone.
    retry = ledger.take(A_P.identities(), "one", "t3", 60)
    assert retry.mine is None and [h.owner for h in retry.others] == ["two"]


def test_a_request_taken_over_takes_over_in_turn_once_its_taker_went_away(ledger):
    # The taken-over request's own record says who superseded it; when that request goes
    # away too, the first one's retry must be able to take the person back, not wait on
    # its own superseded record for as long as the record lives.
    clock = ledger.clock
    ledger.take(A_P.identities(), "one", "t1", 60)
    clock.now += 60 + CLOCK_TOLERANCE_SECONDS + 1
    met = ledger.take(B_P.identities(), "two", "t2", 60).others
    assert ledger.take_over(B_P.identities(), "two", "t2", 60, met) is not None
    clock.now += 60 + CLOCK_TOLERANCE_SECONDS + 1  # "two" went away without a write
    retry = ledger.take(A_P.identities(), "one", "t3", 60)
    assert retry.mine is None and [h.owner for h in retry.others] == ["two"]
    taken = ledger.take_over(A_P.identities(), "one", "t3", 60, retry.others)
    assert taken is not None and (taken.owner, taken.attempt) == ("one", "t3")
    assert taken.superseded_by is None and taken.written_at is None
    assert ledger.record_of("one") == taken
    assert ledger.take(A_P.identities(), "one", "t3", 60).mine == taken
    # "two" was superseded in its turn: its retry meets "one".
    again = ledger.take(B_P.identities(), "two", "t4", 60)
    assert again.mine is None and [h.owner for h in again.others] == ["one"]


def test_a_holder_with_a_profile_is_never_taken_over(ledger):
    clock = ledger.clock
    old = ledger.take(A_P.identities(), "one", "t1", 60).mine
    assert ledger.created(old, "PROFILE-1")
    clock.now += 3600
    met = ledger.take(B_P.identities(), "two", "t2", 60).others
    assert met[0].record.profile_id == "PROFILE-1"
    assert ledger.take_over(B_P.identities(), "two", "t2", 60, met) is None


def test_a_released_record_frees_every_identifier(ledger):
    record = ledger.take(A_P.identities(), "one", "t1", 60).mine
    ledger.release(record)
    assert ledger.take(B_P.identities(), "two", "t2", 60).mine is not None
    assert ledger.record_of("one") is None


def test_job_references_are_kept_for_a_redelivery(ledger):
    assert ledger.jobs_of("ref") == []
    assert ledger.job_taken("ref", "job-2") and ledger.job_taken("ref", "job-1")
    assert ledger.jobs_of("ref") == ["job-1", "job-2"]


def test_creating_names_the_identifiers_of_creates_still_at_work_only(ledger):
    """What a write that may make a profile on the side waits for: a running hold without a
    profile, or a record whose import job may still run; not one that made its profile, nor
    one whose hold ran out without a job, nor a released one."""
    clock = ledger.clock
    at_work = ledger.take(A_P.identities(), "one", "t1", 60).mine
    done = ledger.take(R.identities(), "two", "t2", 60).mine
    assert at_work is not None and done is not None
    ledger.created(done, "PROFILE")
    asked = [*A_P.identities(), *R.identities(), *B.identities()]
    assert set(ledger.creating(asked)) == set(A_P.identities())
    assert {r.owner for r in ledger.creating(asked).values()} == {"one"}
    clock.now += 60 + CLOCK_TOLERANCE_SECONDS + 1  # its attempt died holding them
    assert ledger.creating(asked) == {}
    again = ledger.take(B.identities(), "three", "t3", 60).mine
    assert set(ledger.creating(asked)) == set(B.identities())
    ledger.release(again)
    assert ledger.creating(asked) == {}


def test_a_record_whose_import_job_may_run_is_creating_after_its_attempt_ended(ledger):
    """A batch's job still queued at Klaviyo when its attempt ended (the record paused): a
    subscribe job applied first would make the profile the import then takes for its own."""
    record = ledger.take(B.identities(), "batch-lead", "t1", 60).mine
    record = ledger.renew(record, 60, writing=True, job_ref="job-ref-1")
    ledger.pause(record)
    (holder,) = ledger.creating(B.identities()).values()
    assert holder.job_ref == "job-ref-1" and not holder.running(ledger.clock())


def test_a_mark_lasts_its_seconds_with_the_clocks_tolerance(ledger):
    assert ledger.touch(B.identities(), 30)
    assert ledger.touched([*B.identities(), *R.identities()]) == set(B.identities())
    ledger.clock.now += 30 + CLOCK_TOLERANCE_SECONDS + 1
    assert ledger.touched(B.identities()) == set()
