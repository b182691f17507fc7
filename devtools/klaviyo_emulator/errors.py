"""Klaviyo's JSON:API error envelope and the error bodies the emulator sends.

Strings that were observed on the live API (see the project's Klaviyo notes) are reproduced
verbatim; the rest follow the Django REST Framework wording Klaviyo's API is built on.
"""

from __future__ import annotations

import uuid
from typing import Any

THROTTLE_DOCS_URL = (
    "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling#rate-limits"
)

INVALID_PHONE = "Invalid phone number format (Example of a valid format: +12345678901)"
INVALID_EMAIL = "Invalid email address"
NO_IDENTIFIER = "One or more identifiers is required"
DUPLICATE_PROFILE = "A profile already exists with one of these identifiers."
SMS_WITHOUT_PHONE = (
    "'phone_number' must not be empty when the sms channel is included in 'subscriptions'."
)
# Inferred wording: Klaviyo documents that age gating needs the date of birth for SMS, but
# no refusal body has been published.
AGE_GATE_WITHOUT_BIRTH_DATE = (
    "'age_gated_date_of_birth' is required when the sms channel is included in "
    "'subscriptions' and the account uses age gating."
)
MULTIPLE_DELETION_IDENTIFIERS = (
    "Exactly one of 'id', 'email' or 'phone_number' must be provided to identify the profile."
)
EMAIL_WITHOUT_EMAIL = (
    "'email' must not be empty when the email channel is included in 'subscriptions'."
)
UNKNOWN_REVISION = "No valid revisions found for method"
UNKNOWN_LIST = "A list with id {list_id} does not exist."


class ApiError(Exception):
    """An error answer; raised anywhere below the dispatcher and rendered as JSON:API."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
        links: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.meta = meta or {}
        self.links = links or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.pointer is not None:
            source["pointer"] = self.pointer
        if self.parameter is not None:
            source["parameter"] = self.parameter
        return {
            "errors": [
                {
                    "id": str(uuid.uuid4()),
                    "status": self.status,
                    "code": self.code,
                    "title": self.title,
                    "detail": self.detail,
                    "source": source,
                    "links": dict(self.links),
                    "meta": dict(self.meta),
                }
            ]
        }


class ApiErrors(ApiError):
    """One answer with several errors: a bulk request refused for more than one of its items.

    Status, code and headers are the first error's; the body lists every one, in order.
    """

    def __init__(self, errors: list[ApiError]) -> None:
        first = errors[0]
        super().__init__(
            first.status,
            first.code,
            first.title,
            first.detail,
            pointer=first.pointer,
            parameter=first.parameter,
            meta=first.meta,
            links=first.links,
            headers=first.headers,
        )
        self.errors = list(errors)

    def body(self) -> dict[str, Any]:
        return {"errors": [entry for error in self.errors for entry in error.body()["errors"]]}


def invalid(detail: str, *, pointer: str | None = None, parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", detail, pointer=pointer, parameter=parameter)


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, "not_found", "Not found.", detail)


def not_authenticated() -> ApiError:
    return ApiError(
        401,
        "not_authenticated",
        "Authentication credentials were not provided.",
        "Missing or invalid private key.",
    )


def permission_denied(missing: list[str]) -> ApiError:
    return ApiError(
        403,
        "permission_denied",
        "You do not have permission to perform this action.",
        "This API key is missing required scopes: " + ", ".join(missing),
    )


def duplicate_profile(existing_id: str, pointer: str = "/data/attributes") -> ApiError:
    return ApiError(
        409,
        "duplicate_profile",
        "Conflict.",
        DUPLICATE_PROFILE,
        pointer=pointer,
        meta={"duplicate_profile_id": existing_id},
    )


def throttled(retry_after: int) -> ApiError:
    unit = "second" if retry_after == 1 else "seconds"
    return ApiError(
        429,
        "throttled",
        "Request was throttled.",
        f"Request was throttled. Expected available in {retry_after} {unit}.",
        pointer="/data",
        links={"type": THROTTLE_DOCS_URL},
        headers={"Retry-After": str(retry_after)},
    )


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        f'Method "{method}" not allowed.',
        f'Method "{method}" not allowed.',
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "unsupported_media_type",
        f'Unsupported media type "{content_type}" in request.',
        "Use Content-Type application/vnd.api+json (application/json is also accepted).",
    )


def payload_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        "Request entity too large.",
        f"The request body exceeds the limit of {limit_bytes} bytes for this endpoint.",
    )


# Generic bodies for statuses a fault may ask for; codes mirror the DRF defaults.
_GENERIC: dict[int, tuple[str, str]] = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    409: ("conflict", "Conflict."),
    410: ("gone", "Gone."),
    413: ("payload_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service temporarily unavailable, try again later."),
    504: ("gateway_timeout", "Gateway timeout."),
}


def for_status(status: int, retry_after: int | None = None) -> ApiError:
    """The error a fault injects for ``status``; 429 always carries ``Retry-After``."""
    if status == 429:
        return throttled(retry_after if retry_after is not None else 1)
    code, title = _GENERIC.get(status, ("error", "Error."))
    err = ApiError(status, code, title, title)
    if retry_after is not None:
        err.headers["Retry-After"] = str(retry_after)
    return err
