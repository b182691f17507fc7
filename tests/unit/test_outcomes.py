"""The one table from Klaviyo's answers to outcome, reason, retry class and HTTP status."""

import pytest

from klaviyo_leads.outcomes import (
    Kind,
    KlaviyoError,
    Outcome,
    errors_field,
    from_klaviyo_answer,
    http_status,
)


@pytest.mark.parametrize(
    ("status", "outcome", "kind", "reason"),
    [
        (429, Outcome.ERROR, Kind.THROTTLED, "Klaviyo returned HTTP 429 (rate limited)"),
        (500, Outcome.ERROR, Kind.TRANSIENT, "Klaviyo returned HTTP 500"),
        (503, Outcome.ERROR, Kind.TRANSIENT, "Klaviyo returned HTTP 503"),
        (408, Outcome.ERROR, Kind.TRANSIENT, "Klaviyo returned HTTP 408"),
        (423, Outcome.ERROR, Kind.TRANSIENT, "Klaviyo returned HTTP 423"),
        (501, Outcome.ERROR, Kind.UPSTREAM, "Klaviyo returned HTTP 501"),
        (401, Outcome.ERROR, Kind.UPSTREAM, "Klaviyo rejected the API key"),
        (
            403,
            Outcome.ERROR,
            Kind.UPSTREAM,
            "The Klaviyo API key lacks a required scope (HTTP 403)",
        ),
        (400, Outcome.FAILURE, Kind.REJECTED, "Klaviyo rejected the request (HTTP 400)"),
        (413, Outcome.FAILURE, Kind.REJECTED, "The profile is too large for Klaviyo (HTTP 413)"),
        (418, Outcome.ERROR, Kind.UPSTREAM, "Klaviyo returned HTTP 418"),
    ],
)
def test_status_classes(status, outcome, kind, reason):
    problem = from_klaviyo_answer(status, [])
    assert (problem.outcome, problem.kind, problem.reason) == (outcome, kind, reason)
    assert problem.retryable == (kind in {Kind.THROTTLED, Kind.TRANSIENT})


def test_challenge_page_is_transient_not_auth():
    problem = from_klaviyo_answer(403, [], challenge=True)
    assert problem.retryable
    assert problem.reason == "Klaviyo's firewall challenged the request (HTTP 403)"


@pytest.mark.parametrize(
    ("pointer", "detail", "reason"),
    [
        ("/data/attributes/email", "Invalid email address", "Invalid email address"),
        ("/data/attributes/phone_number", "Invalid phone number format", "Invalid phone number"),
        (None, "One or more identifiers is required", "The lead has no usable identifier"),
    ],
)
def test_400_reasons_by_pointer_without_lead_data(pointer, detail, reason):
    errors = [KlaviyoError(code="invalid", detail=detail, pointer=pointer)]
    assert from_klaviyo_answer(400, errors).reason == reason


@pytest.mark.parametrize(
    ("outcome", "kind", "status"),
    [
        (Outcome.SUCCESS, None, 200),
        (Outcome.FAILURE, Kind.REJECTED, 422),
        (Outcome.ERROR, Kind.BAD_REQUEST, 400),
        (Outcome.ERROR, Kind.CONFIGURATION, 400),
        (Outcome.ERROR, Kind.UPSTREAM, 502),
        (Outcome.ERROR, Kind.THROTTLED, 503),
        (Outcome.ERROR, Kind.TIMEOUT, 504),
        (Outcome.ERROR, Kind.TRANSIENT, 502),
    ],
)
def test_http_status(outcome, kind, status):
    assert http_status(outcome, kind) == status


def test_errors_field_keeps_order():
    errors = [
        KlaviyoError.from_json({"id": "1", "code": "a", "title": "A", "detail": "x"}),
        KlaviyoError.from_json({"id": "2", "code": "b", "title": "B", "detail": "y"}),
        KlaviyoError.from_json("not an object"),
    ]
    assert errors_field(errors) == {
        "id": ["1", "2", None],
        "code": ["a", "b", None],
        "title": ["A", "B", None],
        "detail": ["x", "y", "not an object"],
    }
    assert errors_field([]) == {"id": [], "code": [], "title": [], "detail": []}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("Sun, 29 Nov 2026 14:00:30 GMT", 30.0),
        ("Sun, 29 Nov 2026 13:59:00 GMT", 0.0),  # a date in the past: go now
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_as_seconds_or_an_http_date(header, seconds):
    from datetime import UTC, datetime

    from klaviyo_leads.klaviyo.rate_limit_headers import retry_after_seconds

    now = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(header, now=lambda: now) == seconds


def test_an_unknown_list_segment_or_profile_id_is_a_400_the_sender_must_fix():
    """Contract section 6: a permanent error caused by the request is a 4xx, never retried."""
    from klaviyo_leads.outcomes import unknown_target

    for target in ("list", "segment", "profile"):
        result = unknown_target(target, 404, [])
        assert result.outcome is Outcome.ERROR
        assert not result.retryable
        assert result.http_status == 400


def test_what_the_stack_must_fix_stays_502():
    from klaviyo_leads.outcomes import DELETION_OFF, KEY_REJECTED, SCOPE_MISSING

    for reason in (KEY_REJECTED, SCOPE_MISSING, DELETION_OFF):
        assert reason.http_status == 502
        assert not reason.retryable
