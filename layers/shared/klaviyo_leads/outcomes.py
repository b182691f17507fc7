"""Outcomes: what happened to a lead, why, and whether trying again could help.

This is the one place where Klaviyo's answers (and our own checks) become an outcome,
a reason and a retry class, and where a result becomes an HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


class Kind(StrEnum):
    """Why a lead did not succeed; decides the HTTP status (contract section 6)."""

    REJECTED = "rejected"  # failure: Klaviyo or the lead's data says no
    CONFIGURATION = "configuration"  # error: a variable missing or wrong in the request
    BAD_REQUEST = "bad_request"  # error: the body is not a lead at all
    UPSTREAM = "upstream"  # error: Klaviyo or AWS said no (401, 403, unknown list)
    THROTTLED = "throttled"  # retryable: 429 after the budget is spent
    TIMEOUT = "timeout"  # retryable: the budget ran out
    TRANSIENT = "transient"  # retryable: network, 5xx, challenge page


RETRYABLE_KINDS = frozenset({Kind.THROTTLED, Kind.TIMEOUT, Kind.TRANSIENT})

# Statuses a retry can fix (contract section 4): 408, 423, 429 and 5xx except 501.
RETRYABLE_STATUSES = frozenset({408, 423, 429, *range(500, 600)}) - {501}


@dataclass
class KlaviyoError:
    """One entry of Klaviyo's JSON:API ``errors`` array, as the result reports it."""

    id: str | None = None
    code: str | None = None
    title: str | None = None
    detail: str | None = None
    pointer: str | None = None
    parameter: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, item: Any) -> KlaviyoError:
        if not isinstance(item, dict):
            return cls(detail=str(item)[:500])
        source = item.get("source")
        source = source if isinstance(source, dict) else {}
        meta = item.get("meta")
        meta = meta if isinstance(meta, dict) else {}

        def text(value: Any) -> str | None:
            return None if value is None else str(value)

        return cls(
            id=text(item.get("id")),
            code=text(item.get("code")),
            title=text(item.get("title")),
            detail=text(item.get("detail")),
            pointer=text(source.get("pointer")),
            parameter=text(source.get("parameter")),
            meta=meta,
        )


def errors_field(errors: list[KlaviyoError]) -> dict[str, list[str | None]]:
    """The result's ``errors`` object: four parallel arrays, in Klaviyo's order."""
    return {
        "id": [e.id for e in errors],
        "code": [e.code for e in errors],
        "title": [e.title for e in errors],
        "detail": [e.detail for e in errors],
    }


class Problem(Exception):
    """A lead that did not succeed, already classified. Raised anywhere, caught once."""

    def __init__(
        self,
        outcome: Outcome,
        kind: Kind,
        reason: str,
        *,
        errors: list[KlaviyoError] | None = None,
        retry_after: float | None = None,
        klaviyo_status: int | None = None,
        profile: dict[str, Any] | None = None,
        duplicate_profile_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.kind = kind
        self.reason = reason
        self.errors = errors or []
        self.retry_after = retry_after
        self.klaviyo_status = klaviyo_status
        self.profile = profile
        self.duplicate_profile_id = duplicate_profile_id
        # A request that is not safe to repeat may have taken effect before it failed.
        self.effect_unknown = False

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def failure(reason: str, **kwargs: Any) -> Problem:
    """The lead's own data (or Klaviyo about it) says no; the same lead would fail again."""
    return Problem(Outcome.FAILURE, Kind.REJECTED, reason, **kwargs)


def configuration_error(reason: str) -> Problem:
    """A configuration variable of the request is missing or wrong."""
    return Problem(Outcome.ERROR, Kind.CONFIGURATION, reason)


def bad_request(reason: str) -> Problem:
    """The request body is not a lead."""
    return Problem(Outcome.ERROR, Kind.BAD_REQUEST, reason)


def timeout(budget_text: str) -> Problem:
    return Problem(
        Outcome.ERROR, Kind.TIMEOUT, f"Klaviyo did not respond within {budget_text} seconds"
    )


def network_error() -> Problem:
    return Problem(Outcome.ERROR, Kind.TRANSIENT, "Could not reach Klaviyo (connection failed)")


def unreadable_response(status: int) -> Problem:
    return Problem(
        Outcome.ERROR,
        Kind.TRANSIENT if status in RETRYABLE_STATUSES else Kind.UPSTREAM,
        f"Klaviyo returned an unreadable response (HTTP {status})",
        klaviyo_status=status,
    )


# Klaviyo's 400s that are about the lead's data, by the field they point at (no lead data in
# reasons: they are counted in reports).
# The attribute is the pointer's last step: ``/data/attributes/email`` for one profile,
# ``/data/attributes/profiles/data/3/attributes/email`` inside a bulk job.
_REJECTION_BY_ATTRIBUTE = {
    "email": "Invalid email address",
    "phone_number": "Invalid phone number",
    "external_id": "Invalid external id",
}


def from_klaviyo_answer(
    status: int,
    errors: list[KlaviyoError],
    *,
    challenge: bool = False,
    retry_after: float | None = None,
) -> Problem:
    """Classify a non-2xx answer from Klaviyo that the caller did not handle itself."""

    def problem(outcome: Outcome, kind: Kind, reason: str) -> Problem:
        return Problem(
            outcome,
            kind,
            reason,
            errors=errors,
            retry_after=retry_after,
            klaviyo_status=status,
        )

    if challenge:
        return problem(
            Outcome.ERROR,
            Kind.TRANSIENT,
            "Klaviyo's firewall challenged the request (HTTP 403)",
        )
    if status == 429:
        return problem(Outcome.ERROR, Kind.THROTTLED, "Klaviyo returned HTTP 429 (rate limited)")
    if status in RETRYABLE_STATUSES:
        return problem(Outcome.ERROR, Kind.TRANSIENT, f"Klaviyo returned HTTP {status}")
    if status == 401:
        return problem(Outcome.ERROR, Kind.UPSTREAM, "Klaviyo rejected the API key")
    if status == 403:
        return problem(
            Outcome.ERROR,
            Kind.UPSTREAM,
            "The Klaviyo API key lacks a required scope (HTTP 403)",
        )
    if status == 400:
        for error in errors:
            pointer = error.pointer or ""
            reason = "/attributes/" in pointer and _REJECTION_BY_ATTRIBUTE.get(
                pointer.rsplit("/", 1)[-1]
            )
            if reason:
                return problem(Outcome.FAILURE, Kind.REJECTED, reason)
        details = " ".join(e.detail or "" for e in errors)
        if "identifiers is required" in details:
            return problem(Outcome.FAILURE, Kind.REJECTED, "The lead has no usable identifier")
        if "must not be empty" in details and "sms" in details:
            return problem(Outcome.FAILURE, Kind.REJECTED, "The sms channel needs a phone number")
        return problem(Outcome.FAILURE, Kind.REJECTED, "Klaviyo rejected the request (HTTP 400)")
    if status == 413:
        return problem(
            Outcome.FAILURE, Kind.REJECTED, "The profile is too large for Klaviyo (HTTP 413)"
        )
    return problem(Outcome.ERROR, Kind.UPSTREAM, f"Klaviyo returned HTTP {status}")


# Contract section 6: the status a webhook sender sees.
_STATUS_BY_KIND = {
    Kind.REJECTED: 422,
    Kind.CONFIGURATION: 400,
    Kind.BAD_REQUEST: 400,
    Kind.UPSTREAM: 502,
    Kind.THROTTLED: 503,
    Kind.TIMEOUT: 504,
    Kind.TRANSIENT: 502,
}


def http_status(outcome: Outcome, kind: Kind | None) -> int:
    if outcome is Outcome.SUCCESS or kind is None:
        return 200
    return _STATUS_BY_KIND[kind]
