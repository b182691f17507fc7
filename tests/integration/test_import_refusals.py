"""A bulk import Klaviyo refuses for some of its profiles, or takes with an unreadable answer.

Klaviyo validates an import job all or nothing: one profile that fails validation makes the
request a 400 and nothing is imported (rudderlabs/rudder-server PR #7107). The profiles the
400 names fail with their own reasons and the rest is sent again without them. A 202 whose
body cannot be read is a job Klaviyo took: it is looked for, never reported as a final error.
"""

from __future__ import annotations

import json

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.actions import imports
from klaviyo_leads.actions.action import Delivery
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.budget import Budget
from klaviyo_leads.context import Context
from klaviyo_leads.outcomes import Result

JOBS = "/api/profile-bulk-import-jobs"
WHERE = "/data/attributes/profiles/data"
# Our check lets it through, Klaviyo (the emulator's reading of its check) refuses it: a
# one-letter top-level domain. A doubled dot no longer gets this far (see test_lead.py).
REFUSED_BY_KLAVIYO_ONLY = "lead.30@example.c"


def outcomes(processed):
    return [(p.fields["outcome"], p.fields["reason"]) for p in processed]


def job_sizes(emulator) -> list[tuple[int, int]]:
    """(profiles sent, status answered) for every import job request."""
    return [
        (len(json.loads(r.body)["data"]["attributes"]["profiles"]["data"]), r.status)
        for r in emulator.requests
        if r.operation_id == "bulk_import_profiles"
    ]


def refusal(*pointers: str, times: int | None = 1) -> Fault:
    """Klaviyo's 400 for a job, one error per pointer (a profile's field, or ``/data``)."""
    errors = [
        {
            "id": f"e{i}",
            "status": 400,
            "code": "invalid",
            "title": "Invalid input.",
            "detail": "Invalid email address" if WHERE in where else "List ID does not exist.",
            "source": {"pointer": where},
        }
        for i, where in enumerate(pointers)
    ]
    return Fault(
        operation_id="bulk_import_profiles",
        status=400,
        body=json.dumps({"errors": errors}).encode(),
        content_type="application/vnd.api+json",
        times=times,
    )


def email_at(position: int) -> str:
    return f"{WHERE}/{position}/attributes/email"


def item(email: str) -> dict:
    return {"type": "profile", "attributes": {"email": email}}


@pytest.fixture
def ctx(runtime) -> Context:
    return Context(client=runtime.client, budget=Budget(300), settings=runtime.settings)


@pytest.mark.parametrize("action", ["create_profile", "upsert_profile"])
def test_one_refused_profile_fails_alone_and_the_other_59_are_imported(
    runtime, klaviyo_emulator, action
):
    leads = [{"email": f"lead.{i}@example.com", "first_name": f"L{i}"} for i in range(60)]
    leads[30] = {"email": REFUSED_BY_KLAVIYO_ONLY, "first_name": "L30"}
    results = runtime.process_batch(ACTIONS[action], leads, remaining_seconds=300)
    expected = [("success", None)] * 60
    expected[30] = ("failure", "Invalid email address")
    assert outcomes(results) == expected
    refused = results[30].fields["errors"]
    assert (refused["code"], refused["detail"]) == (["invalid"], ["Invalid email address"])
    assert REFUSED_BY_KLAVIYO_ONLY not in json.dumps(results[30].fields["reason"])
    # One refused request (nothing imported), then the same job without the refused profile.
    assert job_sizes(klaviyo_emulator) == [(60, 400), (59, 202)]
    emails = {p["attributes"]["email"] for p in klaviyo_emulator.profiles()}
    assert emails == {lead["email"] for i, lead in enumerate(leads) if i != 30}
    if action == "create_profile":
        assert all(r.fields["id"] for i, r in enumerate(results) if i != 30)


def test_positions_map_back_when_klaviyo_names_one_refused_profile_at_a_time(ctx, klaviyo_emulator):
    """Klaviyo may name only the first refused profile: a second round finds the next."""
    items = [item(f"p{i}@example.com") for i in range(12)]
    items[2] = item("john..doe@example.com")
    items[7] = item(".lead@example.com")
    klaviyo_emulator.faults.add(refusal(email_at(2)))  # the first only; the emulator, the next
    imported = imports.run(ctx, items, repeatable=False)
    assert job_sizes(klaviyo_emulator) == [(12, 400), (11, 400), (10, 202)]
    assert sorted(imported.errors) == [2, 7]
    assert imported.errors[7][0].pointer == f"{WHERE}/6/attributes/email"  # its round's index
    for position in (2, 7):
        answer = imports.outcome(imported, position)
        assert isinstance(answer, Result)
        assert (answer.outcome.value, answer.reason) == ("failure", "Invalid email address")
    for position, sent in enumerate(items):
        if position in (2, 7):
            continue
        profile = imports.outcome(imported, position)
        assert isinstance(profile, dict)
        assert profile["attributes"]["email"] == sent["attributes"]["email"]
    assert len(klaviyo_emulator.profiles()) == 10


def test_rounds_are_bounded_and_the_rest_comes_back(ctx, klaviyo_emulator):
    klaviyo_emulator.faults.add(refusal(email_at(0), times=None))  # another profile each time
    items = [item(f"p{i}@example.com") for i in range(12)]
    imported = imports.run(ctx, items, repeatable=False)
    assert job_sizes(klaviyo_emulator) == [(12, 400), (11, 400), (10, 400)]
    assert sorted(imported.errors) == [0, 1, 2]
    for position in range(3, 12):
        answer = imports.outcome(imported, position)
        assert isinstance(answer, Result)
        assert answer.retryable and not answer.effect_unknown
        assert answer.reason == (
            "Klaviyo kept refusing the bulk import over other leads' data; the lead comes back"
        )
    assert klaviyo_emulator.profiles() == []


@pytest.mark.parametrize(
    "pointers",
    [
        ["/data"],  # an unknown list, as Klaviyo points at it
        [email_at(1), "/data"],
        [email_at(40)],  # a profile the job does not have
    ],
    ids=["about the request", "profiles and the request", "no such profile"],
)
def test_a_400_about_the_whole_request_fails_every_item_alike(ctx, klaviyo_emulator, pointers):
    klaviyo_emulator.faults.add(refusal(*pointers))
    with pytest.raises(Result) as raised:
        imports.run(ctx, [item(f"p{i}@example.com") for i in range(12)], repeatable=False)
    assert raised.value.outcome.value == "failure" and not raised.value.retryable
    assert job_sizes(klaviyo_emulator) == [(12, 400)]


def test_a_failed_second_round_keeps_the_refused_profiles_own_reasons(ctx, klaviyo_emulator):
    items = [item(f"p{i}@example.com") for i in range(12)]
    items[4] = item("lead.@example.com")
    # The emulator answers the first request itself (a 400 naming item 4); the second, a 503.
    klaviyo_emulator.faults.add(Fault(operation_id="bulk_import_profiles", times=1))
    klaviyo_emulator.faults.add(Fault(operation_id="bulk_import_profiles", status=503, times=None))
    imported = imports.run(ctx, items, repeatable=False)
    assert job_sizes(klaviyo_emulator) == [(12, 400), (11, 503)]
    own = imports.outcome(imported, 4)
    assert isinstance(own, Result) and own.reason == "Invalid email address"
    for position in (0, 1, 2, 3, 5, 11):
        answer = imports.outcome(imported, position)
        assert isinstance(answer, Result)
        assert (answer.reason, answer.retryable) == ("Klaviyo returned HTTP 503", True)
    assert klaviyo_emulator.profiles() == []


class TestUnreadable202:
    """Item 6: Klaviyo takes the job and runs it; only its answer cannot be read."""

    LEADS = [{"reference": f"ref-{i}"} for i in range(12)] + [
        {"email": f"lead-{i}@example.com"} for i in range(12)
    ]

    @pytest.mark.parametrize("body", [b"{oops", b"", b'{"links": {}}'])
    @pytest.mark.parametrize("action", ["create_profile", "upsert_profile"])
    def test_the_job_klaviyo_took_is_followed(self, runtime, klaviyo_emulator, body, action):
        klaviyo_emulator.faults.add(
            Fault(operation_id="bulk_import_profiles", status=202, body=body, after=True)
        )
        results = runtime.process_batch(ACTIONS[action], self.LEADS, remaining_seconds=300)
        assert outcomes(results) == [("success", None)] * len(self.LEADS)
        assert len(klaviyo_emulator.profiles()) == len(self.LEADS)
        assert klaviyo_emulator.calls("bulk_import_profiles") == 1

    def test_when_the_job_cannot_be_told_the_leads_come_back_effect_unknown(
        self, runtime, klaviyo_emulator
    ):
        leads = self.LEADS[12:]  # by email: those go into the job (the others one by one)
        other = [item(f"other-{i}@example.com") for i in range(len(leads))]
        body = {
            "data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": other}}}
        }
        # Another container's job of the same size, at the same moment.
        runtime.client.call("POST", JOBS, Budget(30), body=body, expect=(202,))
        klaviyo_emulator.faults.add(
            Fault(operation_id="bulk_import_profiles", status=202, body=b"{oops", after=True)
        )
        messages = [f"m-{i}" for i in range(len(leads))]
        results = runtime.process_batch(
            ACTIONS["create_profile"],
            leads,
            remaining_seconds=300,
            correlation_ids=messages,
        )
        for processed in results:
            problem = processed.result
            assert (problem.outcome.value, problem.retryable, problem.effect_unknown) == (
                "error",
                True,
                True,
            )
            assert problem.reason == (
                "Klaviyo took the bulk import but its answer could not be read; the lead comes back"
            )
        assert klaviyo_emulator.calls("bulk_import_profiles") == 2  # the other's and ours, once
        assert len(klaviyo_emulator.profiles()) == 2 * len(leads)  # ours ran all the same
        # The redelivery reads both jobs and finds its own profiles: created, none made again.
        again = runtime.process_batch(
            ACTIONS["create_profile"],
            leads,
            remaining_seconds=300,
            correlation_ids=messages,
            deliveries=[Delivery(count=2)] * len(leads),
        )
        assert {p.result.outcome.value for p in again} == {"success"}
        assert klaviyo_emulator.calls("bulk_import_profiles") == 2
