"""One person, one record: a create's truth across every identifier a lead carries.

Each test is a way two leads that share an identifier (a household's phone, a vendor's
placeholder number, a CRM reference beside a web form's email) used to be told an untrue
outcome; each fails on the create that kept its record under the lead's first identifier
and judged "made by this lead" from creation times. Invariants: a lead is told "created"
only for the profile its own write made; a lead any of whose identifiers belongs to another
request's profile is "already exists", naming that identifier and profile; no lead changes
another person's email; at most one profile per external id.
"""

from __future__ import annotations

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.actions.action import Delivery
from klaviyo_leads.actions.create.identity import Person
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.aws.ledger_records import CLOCK_TOLERANCE_SECONDS

CREATE = ACTIONS["create_profile"]


def create(runtime, lead, origin):
    return runtime.process(CREATE, lead, remaining_seconds=None, origin_id=origin).fields


def profiles_with(emulator, **attributes):
    return [
        p
        for p in emulator.profiles()
        if all(p["attributes"].get(name) == value for name, value in attributes.items())
    ]


class TestASharedPhone:
    @pytest.mark.parametrize(
        "fault",
        [
            Fault(operation_id="create_profile", drop=True, after=True),
            Fault(operation_id="create_profile", status=503, after=True),
        ],
        ids=["answer lost", "503 after the write"],
    )
    @pytest.mark.parametrize(
        "second",
        [{"email": "b@example.com", "phone_1": "+12125550100"}, {"phone_1": "+12125550100"}],
    )
    def test_another_persons_profile_is_never_this_leads_create(
        self, runtime, klaviyo_emulator, fault, second
    ):
        first = create(runtime, {"email": "a@example.com", "phone_1": "+12125550100"}, "m-1")
        assert first["outcome"] == "success"
        klaviyo_emulator.faults.add(fault)
        told = create(runtime, second, "m-2")
        assert (told["outcome"], told["id"]) == ("failure", first["id"])
        assert "phone number" in told["reason"] and "already exists" in told["reason"]
        assert len(klaviyo_emulator.profiles()) == 1

    def test_when_the_ledger_never_saw_the_first_the_mark_decides(self, runtime, klaviyo_emulator):
        """A profile made outside the bundle (another integration) holds the phone: the lead's
        write is refused (409), its answer lost; sent again, the 409 names a profile without
        this request's mark."""
        other = klaviyo_emulator.create_profile(email="a@example.com", phone_number="+12125550100")
        klaviyo_emulator.faults.add(Fault(operation_id="create_profile", drop=True, after=True))
        told = create(runtime, {"email": "b@example.com", "phone_1": "+12125550100"}, "m-2")
        assert (told["outcome"], told["id"]) == ("failure", other)
        assert told["reason"] == "A profile with this phone number already exists"


def test_a_batch_lead_sharing_a_phone_is_a_duplicate_and_renames_no_one(runtime, klaviyo_emulator):
    """Lead 1 by webhook; lead 2 with another email and the same phone in a queued batch of
    ten while the search still lags: the import would match lead 1's profile by the phone
    and give it lead 2's email. Lead 2 meets lead 1's record instead."""
    klaviyo_emulator.configure(search_lag=8.0)
    first = create(runtime, {"email": "a@example.com", "phone_1": "+12125550100"}, "webhook-1")
    batch = [{"email": "b@example.com", "phone_1": "+12125550100"}] + [
        {"email": f"filler-{i}@example.com"} for i in range(9)
    ]
    results = runtime.process_batch(
        CREATE,
        batch,
        remaining_seconds=300,
        correlation_ids=[f"m-{i}" for i in range(10)],
        deliveries=[Delivery()] * 10,
    )
    second = results[0].fields
    assert (second["outcome"], second["id"]) == ("failure", first["id"])
    assert second["reason"] == "A profile with this phone number already exists"
    assert [r.fields["outcome"] for r in results[1:]] == ["success"] * 9
    (profile,) = profiles_with(klaviyo_emulator, phone_number="+12125550100")
    assert profile["attributes"]["email"] == "a@example.com"


@pytest.mark.parametrize("lag", [0.0, 8.0])
def test_a_reference_beside_an_email_and_alone_is_one_profile(runtime, klaviyo_emulator, lag):
    klaviyo_emulator.configure(search_lag=lag)
    first = create(runtime, {"email": "a@example.com", "reference": "crm-7"}, "m-1")
    again = create(runtime, {"reference": "crm-7"}, "m-2")
    assert first["outcome"] == "success"
    assert (again["outcome"], again["id"]) == ("failure", first["id"])
    assert again["reason"] == "A profile with this external id already exists"
    assert len(profiles_with(klaviyo_emulator, external_id="crm-7")) == 1


def test_case_variants_of_one_email_meet_on_one_record(runtime, klaviyo_emulator):
    klaviyo_emulator.configure(search_lag=8.0)
    first = create(runtime, {"email": "Ada@Example.com", "reference": "crm-8"}, "m-1")
    again = create(runtime, {"email": "ada@example.com", "reference": "crm-8"}, "m-2")
    assert (again["outcome"], again["id"]) == ("failure", first["id"])
    assert again["reason"] == "A profile with this email already exists"


UPSERT = ACTIONS["upsert_profile"]
BATCH_OF_TEN = 10


def _queued_creates(runtime, first):
    """A queued batch of ten creates: ``first`` and nine others of their own."""
    batch = [first] + [{"email": f"filler-{i}@example.com"} for i in range(BATCH_OF_TEN - 1)]
    return runtime.process_batch(
        CREATE,
        batch,
        remaining_seconds=300,
        correlation_ids=[f"m-{i}" for i in range(BATCH_OF_TEN)],
        deliveries=[Delivery()] * BATCH_OF_TEN,
    )


def before_the_import(monkeypatch, step):
    """``step()`` once, between a queued batch's look and its import job (right before the
    import's records are renewed and it goes out); its answer in the list returned."""
    from klaviyo_leads.actions import imports

    answers: list[dict] = []
    run_job = imports.run

    def step_then_import(*args, **kwargs):
        if not answers:
            answers.append(step())
        return run_job(*args, **kwargs)

    monkeypatch.setattr(imports, "run", step_then_import)
    return answers


class TestAPhoneAnUpdateAdds:
    """Lead 1 made profile A by email alone; an Upsert gives A a phone; a queued create with
    another email and that phone runs while the search still lags. Klaviyo's import would
    match A by the phone (and give it the create's email). Invariant: the create is told
    "already exists" with A when the PATCH came first, "created" with its own profile when
    it did, and A never takes the other lead's email."""

    LEAD = {"email": "b@example.com", "phone_1": "+12125550100"}

    def test_after_the_patch_the_create_is_a_duplicate_of_the_patched_profile(
        self, runtime, klaviyo_emulator
    ):
        klaviyo_emulator.configure(search_lag=8.0)
        first = create(runtime, {"email": "a@example.com"}, "webhook-1")
        upserted = runtime.process(
            UPSERT,
            {"email": "a@example.com", "phone_1": "+12125550100"},
            remaining_seconds=None,
            origin_id="upsert-1",
        ).fields
        assert (upserted["outcome"], upserted["id"]) == ("success", first["id"])
        results = _queued_creates(runtime, self.LEAD)
        told = results[0].fields
        assert (told["outcome"], told["id"]) == ("failure", first["id"])
        assert told["reason"] == "A profile with this phone number already exists"
        (profile,) = profiles_with(klaviyo_emulator, phone_number="+12125550100")
        assert profile["attributes"]["email"] == "a@example.com"

    def test_a_patch_that_meets_the_create_on_its_way_waits_for_it(
        self, runtime, klaviyo_emulator, monkeypatch
    ):
        """The batch holds the phone; the Upsert comes between its look-up and its import."""
        klaviyo_emulator.configure(search_lag=8.0)
        first = create(runtime, {"email": "a@example.com"}, "webhook-1")
        upsert_lead = {"email": "a@example.com", "phone_1": "+12125550100"}
        during = before_the_import(
            monkeypatch,
            lambda: (
                runtime.process(
                    UPSERT, upsert_lead, remaining_seconds=None, origin_id="upsert-1"
                ).fields
            ),
        )
        results = _queued_creates(runtime, self.LEAD)
        told = results[0].fields
        (waited,) = during
        assert waited["outcome"] == "error" and "Another request is creating" in waited["reason"]
        assert told["outcome"] == "success" and told["id"] != first["id"]
        assert profiles_with(klaviyo_emulator, phone_number="+12125550100")[0]["id"] == told["id"]
        again = runtime.process(
            UPSERT, upsert_lead, remaining_seconds=None, origin_id="upsert-1", delivery=2
        ).fields
        assert (again["outcome"], again["duplicate_profile_id"]) == ("failure", told["id"])
        assert "phone number" in again["reason"]
        (only,) = profiles_with(klaviyo_emulator, email="a@example.com")
        assert "phone_number" not in only["attributes"] or not only["attributes"]["phone_number"]


def test_a_takeover_whose_answer_failed_holds_nobody_up(runtime, klaviyo_emulator, sleeps):
    """The takeover's transaction took effect, its answer failed ("try again in 5 s"): the
    record it left is this attempt's, and nobody may wait out its hold, the lead's own next
    delivery least of all (a queued lead has five). That delivery creates, as a first would."""
    ledger = runtime.ledger
    assert ledger.take(Person(email="a@example.com").identities(), "gone", "t0", 60).mine
    sleeps.elapsed += 60 + CLOCK_TOLERANCE_SECONDS + 1  # its attempt died holding the email
    client = ledger.client
    transact = client.transact_write_items

    def answer_lost(**request):
        transact(**request)  # a refused transaction raises here, as it would
        raise ConnectionError("read timed out")

    lead = {"email": "a@example.com", "first_name": "Ann"}
    client.transact_write_items = answer_lost
    try:
        first = create(runtime, lead, "m1")
    finally:
        del client.transact_write_items
    assert "could not be reached" in first["reason"]
    assert ledger.record_of("gone").superseded_by == "m1"  # the takeover took effect
    again = create(runtime, lead, "m1")
    assert again["outcome"] == "success" and again["id"]
    assert len(profiles_with(klaviyo_emulator, email="a@example.com")) == 1


def test_a_batched_update_that_adds_a_phone_holds_it_under_its_leads_origin(
    runtime, klaviyo_emulator
):
    """A queued Update Profile batch sends a change of phone one lead at a time: the hold on
    the new phone is the lead's (its message id, the same on a redelivery), and once Klaviyo
    took the PATCH the phone is recorded as that profile's."""
    from klaviyo_leads.actions.create.adding import OWNER_SUFFIX

    ids = [klaviyo_emulator.create_profile(email=f"u-{i}@example.com") for i in range(10)]
    leads = [{"email": f"u-{i}@example.com", "first_name": "Ann"} for i in range(10)]
    leads[3]["phone_1"] = "+12125550199"
    messages = [f"m-{i}" for i in range(10)]
    results = runtime.process_batch(
        ACTIONS["update_profile"],
        leads,
        remaining_seconds=300,
        correlation_ids=messages,
        deliveries=[Delivery()] * 10,
    )
    assert [r.fields["outcome"] for r in results] == ["success"] * 10
    record = runtime.ledger.record_of("m-3" + OWNER_SUFFIX)
    assert record is not None and record.profile_id == ids[3]
    later = create(runtime, {"email": "other@example.com", "phone_1": "+12125550199"}, "c-1")
    assert (later["outcome"], later["id"]) == ("failure", ids[3])


@pytest.mark.parametrize(
    "action, side_lead",
    [
        ("subscribe_profile_to_list", {"klaviyo.list_id": "L1"}),
        ("track_event", {"klaviyo.metric_name": "Lead Received", "klaviyo.unique_id": "e-1"}),
    ],
)
def test_a_write_that_makes_a_profile_on_the_side_waits_for_a_create_on_its_way(
    runtime, klaviyo_emulator, monkeypatch, action, side_lead
):
    """A queued batch holds the person; a subscribe job or an event for the same email comes
    between the batch's look and its import. Klaviyo would make the profile for the job (it
    makes the one it does not find) and the import would match it: the lead told it created
    a profile the job made. Invariant: the side write waits ("in progress") while the create
    is at work, and goes out once it is done."""
    klaviyo_emulator.create_list("Leads", list_id="L1", opt_in="single")
    lead = {"email": "b@example.com", **side_lead}
    during = before_the_import(
        monkeypatch,
        lambda: (
            runtime.process(ACTIONS[action], lead, remaining_seconds=None, origin_id="s-1").fields
        ),
    )
    results = _queued_creates(runtime, {"email": "b@example.com"})
    (waited,) = during
    assert waited["outcome"] == "error" and "Another request is creating" in waited["reason"]
    assert results[0].fields["outcome"] == "success"
    again = runtime.process(
        ACTIONS[action], lead, remaining_seconds=None, origin_id="s-1", delivery=2
    ).fields
    assert again["outcome"] == "success"
    assert [p["id"] for p in profiles_with(klaviyo_emulator, email="b@example.com")] == [
        results[0].fields["id"]
    ]


def test_a_subscribe_while_the_batchs_hold_ran_out_sends_the_lead_one_by_one(
    runtime, klaviyo_emulator, monkeypatch, sleeps
):
    """The batch waited past its hold (a slow earlier job, 429s) between its look and its
    import; a subscribe for one of its leads saw no running hold and went out, and Klaviyo made
    the profile. The batch reads the marks again once its records are renewed: that lead goes
    one by one, where Klaviyo's 409 names the subscribe's profile. Invariant: no lead is told
    it created a profile its own write did not make."""
    klaviyo_emulator.create_list("Leads", list_id="L1", opt_in="single")
    lead = {"email": "b@example.com", "klaviyo.list_id": "L1"}

    def hold_runs_out_then_a_subscribe():
        sleeps.elapsed += 60 + CLOCK_TOLERANCE_SECONDS + 1
        subscribe = ACTIONS["subscribe_profile_to_list"]
        return runtime.process(subscribe, lead, remaining_seconds=None, origin_id="s-1").fields

    subscribed = before_the_import(monkeypatch, hold_runs_out_then_a_subscribe)
    results = _queued_creates(runtime, {"email": "b@example.com"})
    (made_by_subscribe,) = profiles_with(klaviyo_emulator, email="b@example.com")
    assert subscribed[0]["outcome"] == "success"
    told = results[0].fields
    assert (told["outcome"], told["id"]) == ("failure", made_by_subscribe["id"])
    assert told["reason"] == "A profile with this email already exists"
    assert [r.fields["outcome"] for r in results[1:]] == ["success"] * 9


def test_a_batched_subscribe_held_back_comes_back_later_with_each_delivery(runtime):
    """A lead of a queued Subscribe batch meets a create at work on its email: it waits, and
    the more often it came, the longer (a queue has five deliveries to outwait a create)."""
    from klaviyo_leads.actions.create.identity import CLAIM_BACKOFF, CLAIM_RETRY_SECONDS

    runtime.ledger.take(Person(email="held@example.com").identities(), "creator", "t0", 60)
    leads = [{"email": "held@example.com"}] + [{"email": f"s-{i}@example.com"} for i in range(9)]
    waits = []
    for delivery in (1, 2):
        results = runtime.process_batch(
            ACTIONS["subscribe_profile_to_list"],
            leads,
            remaining_seconds=300,
            correlation_ids=[f"m-{i}" for i in range(10)],
            deliveries=[Delivery(count=delivery)] * 10,
        )
        held = results[0].result
        assert "Another request is creating" in held.reason
        waits.append(held.retry_after)
    assert waits == [CLAIM_RETRY_SECONDS, CLAIM_RETRY_SECONDS * CLAIM_BACKOFF]


@pytest.mark.parametrize(
    "fault, kept",
    [
        (None, False),  # Klaviyo's 409: another profile holds the phone; released
        (Fault(operation_id="update_profile", status=400), False),  # refused: released
        (Fault(operation_id="update_profile", status=503, after=True, times=None), True),  # unknown
    ],
    ids=["409", "400", "503 after the write"],
)
def test_a_patch_that_did_not_take_lets_go_of_what_it_held(runtime, klaviyo_emulator, fault, kept):
    """Invariant: a PATCH Klaviyo refused leaves no record of what it would have added (a
    create with that phone is not held up); one whose outcome is unknown leaves its record,
    its hold ended, so a create looks behind it once the search has settled."""
    from klaviyo_leads.actions.create.adding import OWNER_SUFFIX

    klaviyo_emulator.create_profile(email="a@example.com")
    if fault is None:
        klaviyo_emulator.create_profile(email="other@example.com", phone_number="+12125550100")
    else:
        klaviyo_emulator.faults.add(fault)
    told = runtime.process(
        ACTIONS["update_profile"],
        {"email": "a@example.com", "phone_1": "+12125550100"},
        remaining_seconds=None,
        origin_id="u-1",
    ).fields
    assert told["outcome"] != "success"
    record = runtime.ledger.record_of("u-1" + OWNER_SUFFIX)
    if kept:
        assert record is not None and record.wrote and not record.running(runtime.ledger.clock())
    else:
        assert record is None


@pytest.mark.parametrize("left_unprocessed, sent", [(1, True), (99, False)])
def test_a_subscribe_is_sent_only_once_its_marks_are_kept(
    runtime, klaviyo_emulator, left_unprocessed, sent
):
    """DynamoDB left the marks unprocessed (throttling): asked again, they are kept and the job
    goes out; left unprocessed however often asked, the job is not sent (a batch could not see
    it) and the lead is told to come back."""
    klaviyo_emulator.create_list("Leads", list_id="L1", opt_in="single")
    client = runtime.ledger.client
    write = client.batch_write_item
    refusals = iter(range(left_unprocessed))

    def throttled(**request):
        if next(refusals, None) is not None:
            return {"UnprocessedItems": request["RequestItems"]}
        return write(**request)

    client.batch_write_item = throttled
    try:
        told = runtime.process(
            ACTIONS["subscribe_profile_to_list"],
            {"email": "b@example.com", "klaviyo.list_id": "L1"},
            remaining_seconds=None,
        ).fields
    finally:
        del client.batch_write_item
    assert klaviyo_emulator.calls("bulk_subscribe_profiles") == (1 if sent else 0)
    if not sent:
        assert told["outcome"] == "error" and "could not be reached" in told["reason"]


def test_a_patch_adding_a_phone_a_gone_request_held_waits_for_the_search_then_takes_it(
    runtime, klaviyo_emulator, sleeps
):
    """A create that held the phone went away after its write (unsure what it made). An
    Update that adds that phone waits until the search has had time to show what the create
    wrote (a create meeting the phone then looks behind it), then takes the phone over and
    records the patched profile as its holder. Invariant: a later create with the phone is
    that profile's duplicate."""
    from klaviyo_leads.actions.create.adding import OWNER_SUFFIX

    ledger = runtime.ledger
    phone = Person(phone_number="+12125550100")
    gone = ledger.take(phone.identities(), "gone", "t0", 60).mine
    ledger.pause(ledger.renew(gone, 60, writing=True))  # it wrote, then ended unsure
    patched = klaviyo_emulator.create_profile(email="a@example.com")
    lead = {"email": "a@example.com", "phone_1": "+12125550100"}
    update = ACTIONS["update_profile"]
    waited = runtime.process(update, lead, remaining_seconds=None, origin_id="u-1").fields
    assert waited["outcome"] == "error" and "Another request is creating" in waited["reason"]
    sleeps.elapsed += runtime.settings.search_settle_seconds + CLOCK_TOLERANCE_SECONDS + 1
    done = runtime.process(update, lead, remaining_seconds=None, origin_id="u-1", delivery=2)
    assert (done.fields["outcome"], done.fields["id"]) == ("success", patched)
    assert ledger.record_of("u-1" + OWNER_SUFFIX).profile_id == patched
    later = create(runtime, {"email": "b@example.com", "phone_1": "+12125550100"}, "c-1")
    assert (later["outcome"], later["id"]) == ("failure", patched)
