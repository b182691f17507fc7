"""Bulk calls for a batch: fewer Klaviyo calls, and still one correct result per lead."""

from __future__ import annotations

import json

import pytest

from devtools.klaviyo_emulator import Fault
from klaviyo_leads.actions.action import Delivery
from klaviyo_leads.actions.table import ACTIONS

SUBSCRIBE = ACTIONS["subscribe_profile_to_list"]
ADD = ACTIONS["add_profile_to_list"]


def outcomes(processed):
    return [(p.fields["outcome"], p.fields["reason"]) for p in processed]


@pytest.fixture
def newsletter(klaviyo_emulator):
    return klaviyo_emulator.create_list("Newsletter", opt_in="single")


class TestSubscribe:
    def test_each_lead_of_a_shared_job_names_its_own_ignored_keys(
        self, runtime, klaviyo_emulator, newsletter
    ):
        leads = [
            {"email": "a@example.com", "klaviyo.list_id": newsletter, "emial": "x"},
            {"email": "b@example.com", "klaviyo.list_id": newsletter},
            {"email": "c@example.com", "klaviyo.list_id": newsletter, "Klaviyo Custom A.B": "y"},
        ]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert outcomes(results) == [("success", None)] * 3
        assert [r.fields["ignored_fields"] for r in results] == [
            ["emial"],
            [],
            ["Klaviyo Custom A.B"],
        ]

    def test_one_job_per_target_and_every_lead_subscribed(
        self, runtime, klaviyo_emulator, newsletter
    ):
        other = klaviyo_emulator.create_list("Promotions", opt_in="single")
        leads = [
            {"email": f"lead{i}@example.com", "klaviyo.list_id": newsletter if i % 2 else other}
            for i in range(240)
        ]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert outcomes(results) == [("success", None)] * 240
        assert klaviyo_emulator.calls("bulk_subscribe_profiles") == 2
        assert len(klaviyo_emulator.list_members(newsletter)) == 120
        assert len(klaviyo_emulator.list_members(other)) == 120

    def test_jobs_hold_at_most_1000_profiles(self, runtime, klaviyo_emulator, newsletter):
        leads = [{"email": f"l{i}@example.com", "klaviyo.list_id": newsletter} for i in range(2300)]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert all(p.result.outcome.value == "success" for p in results)
        sizes = [
            len(json.loads(r.body)["data"]["attributes"]["profiles"]["data"])
            for r in klaviyo_emulator.requests
            if r.operation_id == "bulk_subscribe_profiles"
        ]
        assert sizes == [1000, 1000, 300]

    def test_bad_leads_stay_out_of_the_bulk_call(self, runtime, klaviyo_emulator, newsletter):
        leads = [
            {"email": "good1@example.com", "klaviyo.list_id": newsletter},
            {"email": "broken", "klaviyo.list_id": newsletter},
            "not an object",
            {"first_name": "no identifier", "klaviyo.list_id": newsletter},
            {"email": "good2@example.com", "klaviyo.list_id": newsletter},
        ]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert outcomes(results) == [
            ("success", None),
            ("failure", "Invalid email address"),
            ("error", "A lead must be a JSON object"),
            ("failure", "The lead has no email address or phone number to subscribe"),
            ("success", None),
        ]
        (job,) = [
            r for r in klaviyo_emulator.requests if r.operation_id == "bulk_subscribe_profiles"
        ]
        assert len(json.loads(job.body)["data"]["attributes"]["profiles"]["data"]) == 2

    def test_a_rejection_naming_one_profile_fails_only_that_lead(
        self, runtime, klaviyo_emulator, newsletter
    ):
        rejection = {
            "errors": [
                {
                    "id": "e1",
                    "status": 400,
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": "Invalid email address",
                    "source": {"pointer": "/data/attributes/profiles/data/1/attributes/email"},
                }
            ]
        }
        klaviyo_emulator.faults.add(
            Fault(
                operation_id="bulk_subscribe_profiles",
                status=400,
                body=json.dumps(rejection).encode(),
                content_type="application/vnd.api+json",
            )
        )
        leads = [{"email": f"l{i}@example.com", "klaviyo.list_id": newsletter} for i in range(3)]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert outcomes(results) == [
            ("success", None),
            ("failure", "Invalid email address"),
            ("success", None),
        ]
        assert results[1].fields["errors"]["id"] == ["e1"]
        assert klaviyo_emulator.calls("bulk_subscribe_profiles") == 2

    def test_throttled_job_hands_every_lead_back(self, runtime, klaviyo_emulator, newsletter):
        klaviyo_emulator.faults.add(
            Fault(operation_id="bulk_subscribe_profiles", status=429, retry_after=600, times=None)
        )
        leads = [{"email": f"l{i}@example.com", "klaviyo.list_id": newsletter} for i in range(5)]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert all(p.result.retryable for p in results)

    def test_unknown_list_is_an_error_for_its_leads_only(
        self, runtime, klaviyo_emulator, newsletter
    ):
        leads = [
            {"email": "a@example.com", "klaviyo.list_id": "Nope12"},
            {"email": "b@example.com", "klaviyo.list_id": newsletter},
        ]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        assert [p.fields["outcome"] for p in results] == ["error", "success"]

    def test_sms_refused_for_some_numbers_the_rest_go_through(
        self, runtime, klaviyo_emulator, newsletter
    ):
        """Klaviyo refuses the whole job and names no profile: split until it stands alone."""
        refused = {
            "errors": [
                {
                    "id": "e1",
                    "status": 400,
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": "'phone_number' must not be empty when the sms channel is "
                    "included in 'subscriptions'.",
                    "source": {},
                }
            ]
        }
        body = json.dumps(refused).encode()

        def refuse_uk_numbers(request_body: bytes) -> bool:
            return b"+44" in request_body

        leads = [
            {
                "email": f"l{i}@example.com",
                "phone_1": "+44 20 7946 0958" if i == 5 else f"512555{i:04}",
                "klaviyo.channels": "email,sms",
                "klaviyo.list_id": newsletter,
            }
            for i in range(8)
        ] + [{"email": "plain@example.com", "klaviyo.list_id": newsletter}]
        sent = []
        original = runtime.client.call

        def call(method, path, budget, **kwargs):
            if path.endswith("bulk-create-jobs"):
                sent.append(kwargs["body"])
                if refuse_uk_numbers(json.dumps(kwargs["body"]).encode()):
                    klaviyo_emulator.faults.add(
                        Fault(operation_id="bulk_subscribe_profiles", status=400, body=body)
                    )
            return original(method, path, budget, **kwargs)

        runtime.client.call = call  # type: ignore[method-assign]
        results = runtime.process_batch(SUBSCRIBE, leads, remaining_seconds=300)
        reasons = [p.fields["reason"] or "" for p in results]
        # Not narrowed to email: the lead asked for SMS, and SMS was not applied.
        assert [p.fields["outcome"] for p in results] == ["success"] * 5 + ["failure"] + [
            "success"
        ] * 3
        assert reasons[5].startswith("SMS not applied: Klaviyo refused SMS")
        assert (results[5].fields["email_consent"], results[5].fields["sms_consent"]) == (
            "subscribed",
            "not_applied",
        )
        assert all(r == "" for i, r in enumerate(reasons) if i != 5)
        # Halving, not one call per lead: the SMS-free profile goes at once, and log2(8) splits.
        assert len(sent) <= 9


class TestAddToList:
    def test_urls_stay_under_8_kb_with_long_identifiers(
        self, runtime, klaviyo_emulator, newsletter
    ):
        emails = [f"{'x' * 60}.{i:03}@a-rather-long-domain-name.com" for i in range(100)]
        for email in emails:
            klaviyo_emulator.create_profile(email=email)
        leads = [{"email": e, "klaviyo.list_id": newsletter} for e in emails]
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert {p.fields["outcome"] for p in results} == {"success"}
        searches = [r for r in klaviyo_emulator.requests if r.operation_id == "get_profiles"]
        assert len(searches) > 1
        for search in searches:
            url = runtime.client.url(search.path, {k: v[0] for k, v in search.query.items()})
            assert len(url) < 8 * 1024

    def test_a_414_splits_the_search_instead_of_failing_it(
        self, runtime, klaviyo_emulator, newsletter
    ):
        for i in range(10):
            klaviyo_emulator.create_profile(email=f"p{i}@example.com")
        klaviyo_emulator.faults.add(
            Fault(
                operation_id="get_profiles",
                status=414,
                body=b"<html><body>414 Request-URI Too Large</body></html>",
                content_type="text/html",
            )
        )
        leads = [{"email": f"p{i}@example.com", "klaviyo.list_id": newsletter} for i in range(10)]
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert {p.fields["outcome"] for p in results} == {"success"}
        assert klaviyo_emulator.calls("get_profiles") == 3

    def test_searches_100_at_a_time_and_adds_in_one_call(
        self, runtime, klaviyo_emulator, newsletter
    ):
        ids = [klaviyo_emulator.create_profile(email=f"p{i}@example.com") for i in range(250)]
        leads = [{"email": f"P{i}@example.com", "klaviyo.list_id": newsletter} for i in range(250)]
        leads.append({"email": "missing@example.com", "klaviyo.list_id": newsletter})
        leads.append({"klaviyo.id": ids[0], "klaviyo.list_id": newsletter})
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert outcomes(results) == [("success", None)] * 250 + [
            ("failure", "No profile found"),
            ("success", None),
        ]
        assert klaviyo_emulator.list_members(newsletter) == set(ids)
        # Three searches by email (100 + 100 + 51), one by Klaviyo Id.
        assert klaviyo_emulator.calls("get_profiles") == 4
        assert klaviyo_emulator.calls("add_profiles_to_list") == 1
        assert klaviyo_emulator.calls("get_list") == 1

    def test_profile_handling_picks_among_external_id_matches(
        self, runtime, klaviyo_emulator, newsletter
    ):
        older = klaviyo_emulator.create_profile(
            external_id="x", created="2026-01-01T00:00:00+00:00"
        )
        newer = klaviyo_emulator.create_profile(
            external_id="x", created="2026-02-01T00:00:00+00:00"
        )
        leads = [
            {
                "reference": "x",
                "klaviyo.list_id": newsletter,
                "klaviyo.profile_handling": "earliest creation date",
            },
        ]
        runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert klaviyo_emulator.list_members(newsletter) == {older}
        assert newer not in klaviyo_emulator.list_members(newsletter)

    def test_unknown_profile_id_fails_alone(self, runtime, klaviyo_emulator, newsletter):
        known = klaviyo_emulator.create_profile(email="k@example.com")
        leads = [
            {"klaviyo.id": known, "klaviyo.list_id": newsletter},
            {"klaviyo.id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "klaviyo.list_id": newsletter},
        ]
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert outcomes(results) == [("success", None), ("failure", "No profile found")]
        assert klaviyo_emulator.list_members(newsletter) == {known}

    def test_missing_and_unknown_lists(self, runtime, klaviyo_emulator, newsletter):
        klaviyo_emulator.create_profile(email="k@example.com")
        leads = [
            {"email": "k@example.com"},
            {"email": "k@example.com", "klaviyo.list_id": "Nope12"},
            {"email": "k@example.com", "klaviyo.list_id": newsletter},
        ]
        results = runtime.process_batch(ADD, leads, remaining_seconds=300)
        assert outcomes(results) == [
            ("error", "Klaviyo List Id is missing"),
            ("error", "Klaviyo has no list with this Klaviyo List Id (HTTP 404)"),
            ("success", None),
        ]


class FakeEvents:
    """EventBridge's PutEvents, refusing the calls whose number is in ``refuse``."""

    def __init__(self, refuse=()):
        self.calls = []
        self.refuse = set(refuse)

    def put_events(self, Entries):
        self.calls.append(Entries)
        if len(self.calls) in self.refuse:
            return {
                "FailedEntryCount": len(Entries),
                "Entries": [{"ErrorCode": "X"}] * len(Entries),
            }
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}


def test_a_coalesced_batch_publishes_ten_results_per_call(runtime, klaviyo_emulator, newsletter):
    from devtools.lambda_events import (
        LambdaContext,
        load_handler,
        queue_arn,
        sqs_event,
        sqs_message,
    )
    from klaviyo_leads.aws.bus import ResultPublisher

    events = FakeEvents(refuse={2})
    runtime.publisher = ResultPublisher("bus", client_factory=lambda: events)
    messages = [
        sqs_message(
            json.dumps({"email": f"p{i}@example.com", "klaviyo.list_id": newsletter}),
            message_id=f"m{i:02}",
        )
        for i in range(25)
    ]
    response = load_handler("subscribe_profile_to_list")(
        sqs_event(messages, queue_arn("q")), LambdaContext.for_action("x")
    )
    assert [len(call) for call in events.calls] == [10, 10, 5]
    # The refused call's ten records go back to the queue; their results were stored.
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == [
        f"m{i:02}" for i in range(10, 20)
    ]


def test_one_unsearchable_external_id_fails_alone_in_a_bulk_add(runtime, klaviyo_emulator):
    list_id = klaviyo_emulator.create_list("Newsletter")
    ids = [klaviyo_emulator.create_profile(external_id=f"x{i}") for i in range(3)]
    leads = [{"reference": f"x{i}", "klaviyo.list_id": list_id} for i in range(3)]
    leads.insert(1, {"reference": "a'b\"c", "klaviyo.list_id": list_id})
    results = runtime.process_batch(ACTIONS["add_profile_to_list"], leads, remaining_seconds=300)
    assert [p.fields["outcome"] for p in results] == ["success", "failure", "success", "success"]
    assert klaviyo_emulator.list_members(list_id) == set(ids)


def test_an_unknown_list_is_looked_up_once_per_batch(runtime, klaviyo_emulator):
    leads = [{"email": f"l{i}@example.com", "klaviyo.list_id": "Nope12"} for i in range(50)]
    results = runtime.process_batch(
        ACTIONS["subscribe_profile_to_list"], leads, remaining_seconds=300
    )
    assert {p.fields["outcome"] for p in results} == {"error"}
    assert klaviyo_emulator.calls("get_list") == 1


class TestImportWhenTheAnswerIsLost:
    """A bulk import Klaviyo took but whose answer was lost is found, not sent again, and a
    redelivery reads what it made instead of importing anew."""

    LEADS = [{"email": f"lead-{i}@example.com"} for i in range(24)]
    MESSAGES = [f"m-{i}" for i in range(24)]

    def run(self, runtime, action, leads=None, delivery=1):
        leads = leads or self.LEADS
        return runtime.process_batch(
            ACTIONS[action],
            leads,
            remaining_seconds=300,
            correlation_ids=self.MESSAGES[: len(leads)],
            deliveries=[Delivery(count=delivery)] * len(leads),
        )

    @pytest.mark.parametrize(
        "fault",
        [
            Fault(operation_id="bulk_import_profiles", drop=True, after=True),
            Fault(operation_id="bulk_import_profiles", status=500, after=True),
        ],
        ids=["dropped after", "500 after"],
    )
    @pytest.mark.parametrize("action", ["create_profile", "upsert_profile"])
    def test_the_job_klaviyo_took_is_followed(self, runtime, klaviyo_emulator, fault, action):
        klaviyo_emulator.faults.add(fault)
        results = self.run(runtime, action)
        assert outcomes(results) == [("success", None)] * len(self.LEADS)
        assert len(klaviyo_emulator.profiles()) == len(self.LEADS)
        assert klaviyo_emulator.calls("bulk_import_profiles") == 1
        if action == "upsert_profile":
            assert all(r.fields["created"] is True for r in results)

    def test_a_job_klaviyo_never_took_comes_back_and_is_made_once(self, runtime, klaviyo_emulator):
        klaviyo_emulator.faults.add(Fault(operation_id="bulk_import_profiles", drop=True))
        first = self.run(runtime, "create_profile")
        assert {(p.result.outcome.value, p.result.retryable) for p in first} == {("error", True)}
        assert klaviyo_emulator.profiles() == []
        second = self.run(runtime, "create_profile", delivery=2)
        assert outcomes(second) == [("success", None)] * len(self.LEADS)
        assert len(klaviyo_emulator.profiles()) == len(self.LEADS)

    def test_two_jobs_of_the_same_size_are_both_read_by_the_redelivery(
        self, runtime, klaviyo_emulator
    ):
        from klaviyo_leads.budget import Budget

        other = [
            {"type": "profile", "attributes": {"email": f"other-{i}@example.com"}}
            for i in range(len(self.LEADS))
        ]
        body = {
            "data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": other}}}
        }
        # Another container's job of the same size, at the same moment.
        runtime.client.call(
            "POST", "/api/profile-bulk-import-jobs", Budget(30), body=body, expect=(202,)
        )
        klaviyo_emulator.faults.add(
            Fault(operation_id="bulk_import_profiles", drop=True, after=True)
        )
        first = self.run(runtime, "create_profile")
        assert {(p.result.outcome.value, p.result.retryable) for p in first} == {("error", True)}
        assert klaviyo_emulator.calls("bulk_import_profiles") == 2  # the other's and ours, once
        # Not guessed between: both were recorded, and the redelivery finds its own in them.
        again = self.run(runtime, "create_profile", delivery=2)
        assert outcomes(again) == [("success", None)] * len(self.LEADS)
        assert klaviyo_emulator.calls("bulk_import_profiles") == 2
        made = {p["id"] for p in klaviyo_emulator.profiles()}
        assert {r.fields["id"] for r in again} <= made and len(made) == 2 * len(self.LEADS)

    def test_leads_known_by_an_external_id_alone_go_one_by_one(self, runtime, klaviyo_emulator):
        leads = [{"reference": f"ref-{i}"} for i in range(12)]
        results = self.run(runtime, "create_profile", leads)
        assert outcomes(results) == [("success", None)] * len(leads)
        assert klaviyo_emulator.calls("bulk_import_profiles") == 0
        assert klaviyo_emulator.calls("create_profile") == len(leads)
