"""Outcomes: what happened to a lead, why, and whether trying again could help.

This is the one place where reasons live. Every cause the bundle can report is a ``Reason``
declared below (outcome, kind, text); calling it makes the ``Result`` for one lead. A
``Result`` is both what an action returns and what it raises when it stops early, so a
domain result and an error carrying the same fields are one type. Klaviyo's answers become
results in ``from_klaviyo_answer``, and a result becomes an HTTP status in ``http_status``.

Reasons never hold lead data: they are counted in reports. Their placeholders are filled
with field labels, statuses and numbers only.
"""

from __future__ import annotations

import string
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
    UNSUPPORTED_MEDIA = "unsupported_media"  # error: a body type we do not read
    UPSTREAM = "upstream"  # error: Klaviyo or AWS said no (401, 403, unknown list)
    THROTTLED = "throttled"  # retryable: 429, or a wait Klaviyo asked for, past the budget
    TIMEOUT = "timeout"  # retryable: the budget ran out
    TRANSIENT = "transient"  # retryable: network, 5xx, challenge page
    QUEUED = "queued"  # an error that was retryable, put on the action's queue to try again
    CONFLICT = "conflict"  # a repeat of a request that is still running
    # Klaviyo took the request and has not shown it applied yet: the lead comes back to look
    # (a webhook is answered at once and its confirmation queued, see ``triggers``).
    UNCONFIRMED = "unconfirmed"


RETRYABLE_KINDS = frozenset({Kind.THROTTLED, Kind.TIMEOUT, Kind.TRANSIENT, Kind.UNCONFIRMED})

# Statuses a retry can fix (contract section 4): 408, 423, 429 and 5xx except 501.
RETRYABLE_STATUSES = frozenset({408, 423, 429, *range(500, 600)}) - {501}

# Contract section 6: the status a webhook sender sees.
_STATUS_BY_KIND = {
    Kind.REJECTED: 422,
    Kind.CONFIGURATION: 400,
    Kind.BAD_REQUEST: 400,
    Kind.UNSUPPORTED_MEDIA: 415,
    Kind.UPSTREAM: 502,
    Kind.THROTTLED: 503,
    Kind.TIMEOUT: 504,
    Kind.TRANSIENT: 502,
    Kind.QUEUED: 202,
    Kind.CONFLICT: 409,
    Kind.UNCONFIRMED: 202,
}


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


@dataclass(eq=False)
class Result(Exception):
    """What happened to one lead. Returned on success, raised to stop early, caught once."""

    outcome: Outcome
    reason: str | None = None
    kind: Kind | None = None
    profile: dict[str, Any] | None = None
    list_name: str | None = None
    opt_in_process: str | None = None
    errors: list[KlaviyoError] = field(default_factory=list)
    retry_after: float | None = None
    duplicate_profile_id: str | None = None
    klaviyo_status: int | None = None
    message_id: str | None = None  # the queue message a lead was put on for a later try
    ignored_fields: list[str] | None = None  # the lead's keys the action did not read
    created: bool | None = None  # Upsert Profile: whether the profile was new
    # Subscribe: each asked channel's consent as the read-back found it (``lead.fields``' words).
    consent: dict[str, str] | None = None
    # A request that is not safe to repeat may have taken effect before it failed.
    effect_unknown: bool = False

    def __post_init__(self) -> None:
        super().__init__(self.reason or self.outcome.value)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    @property
    def http_status(self) -> int:
        return http_status(self.outcome, self.kind)


def success(profile: dict[str, Any] | None = None, **details: Any) -> Result:
    return Result(Outcome.SUCCESS, profile=profile, **details)


@dataclass(frozen=True)
class Reason:
    """One cause a lead can end with. ``text`` may hold ``{placeholders}`` (no lead data)."""

    outcome: Outcome
    kind: Kind | None
    text: str

    def __call__(self, **details: Any) -> Result:
        """The result for one lead; ``details`` fill the placeholders and the result fields."""
        names = self.placeholders
        values = {name: details.pop(name) for name in names}
        return Result(self.outcome, self.text.format(**values), self.kind, **details)

    @property
    def placeholders(self) -> tuple[str, ...]:
        names = (name for _, name, _, _ in string.Formatter().parse(self.text) if name)
        return tuple(dict.fromkeys(names))

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    @property
    def http_status(self) -> int:
        return http_status(self.outcome, self.kind)


def _success(text: str) -> Reason:
    return Reason(Outcome.SUCCESS, None, text)


def _failure(text: str) -> Reason:
    return Reason(Outcome.FAILURE, Kind.REJECTED, text)


def _error(kind: Kind, text: str) -> Reason:
    return Reason(Outcome.ERROR, kind, text)


_SMS_REFUSED = (
    "Klaviyo refused SMS for this phone number (its country is not enabled for SMS, "
    "age gating needs a date of birth, or SMS is not set up)"
)

# -- done, with something to know: success, 200 -----------------------------------------
CONSENT_PENDING = _success(
    "The list uses double opt-in: the consent waits for the person's confirmation"
)
CONSENT_PENDING_ACCOUNT = _success(
    "Without a list the account's opt-in process applies, double opt-in: the consent waits "
    "for the person's confirmation"
)
SUBSCRIBE_UNCONFIRMED = _success(
    "Klaviyo accepted the consent, not confirmed yet: the confirmed result follows, published "
    "and at GET /results/<message_id>"
)
SUBSCRIBE_NOT_CONFIRMED = _success(
    "Klaviyo accepted the consent, not confirmed within the lead's time budget"
)

NOT_IN_LIST = _success("The profile was not in the list")
DELETION_REQUESTED = _success(
    "Deletion requested: Klaviyo deletes the profile and its data asynchronously"
)

# -- the lead's own data or Klaviyo about it: failure, 422 --------------------------------
INVALID_EMAIL = _failure("Invalid email address")
INVALID_PHONE = _failure("Invalid phone number")
INVALID_EXTERNAL_ID = _failure("Invalid external id")
INVALID_PROFILE_ID = _failure("Klaviyo Id is not a valid profile id")
NOT_TEXT = _failure("{field} must be a single text value")
NOT_FINITE = _failure("{field} must be a finite number")
TOO_LONG = _failure("{field} is longer than {limit} characters")
OUT_OF_RANGE = _failure("{field} must be a number between -{limit} and {limit}")
NOT_A_URL = _failure("{field} must be an http or https URL")
NOT_A_NUMBER = _failure("{field} must be a number")
NOT_A_TIME = _failure("{field} must be a date and time (ISO 8601)")
TIME_IN_FUTURE = _failure("{field} must not be in the future")
CONSENTED_AT_MISSING = _failure(
    "Klaviyo Consented At is missing: a historical import needs when the consent was given"
)
NOT_A_TRUSTEDFORM_URL = _failure(
    "TrustedForm Certificate URL must be a TrustedForm certificate "
    "(https://cert.trustedform.com/ and the certificate's id)"
)
NOT_A_LEADID_TOKEN = _failure(
    "LeadiD Token must be a Jornaya LeadiD (36 characters: 8-4-4-4-12 hexadecimal digits)"
)
NOT_AN_IP_ADDRESS = _failure("IP Address must be an IPv4 or IPv6 address")
NO_IDENTIFIER = _failure("The lead has no usable identifier")
NO_SEARCH_VALUE = _failure("The lead has no {identifier} to search by")
NO_PROFILE = _failure("No profile found")
NOT_IN_SEGMENT = _failure("The profile is not in the segment")
DUPLICATE_PROFILE = _failure("A profile with this {identifier} already exists")
DUPLICATE_EXTERNAL_ID = _failure("A profile with this external id already exists")
IDENTIFIER_TAKEN = _failure("The lead's {identifiers} belongs to another profile")
IDENTITIES_SPLIT = _failure("The lead's email and phone number belong to different profiles")
NOT_A_LIST_MEMBER = _failure(
    "The profile is not in the list: not unsubscribed (Klaviyo would unsubscribe it from all)"
)
ONE_IDENTIFIER_ONLY = _failure(
    "Delete Profile takes exactly one identifier (email, phone number or Klaviyo Id)"
)
NOT_DELETABLE_BY = _failure(
    "Klaviyo deletes by email, phone number or Klaviyo Id, not {identifier}"
)
EVENT_TOO_MANY_PROPERTIES = _failure("The event has more than {limit} properties")
EVENT_TOO_DEEP = _failure("The event's properties are nested more than {limit} levels")
EVENT_ARRAY_TOO_LONG = _failure("An event property holds more than {limit} items")
EVENT_STRING_TOO_LONG = _failure("An event property is longer than {limit} KB")
EVENT_TIME_OUT_OF_RANGE = _failure(
    "Klaviyo Event Time must be after {earliest} and at most a year from now"
)
NOTHING_TO_UPDATE = _failure("The lead has no profile fields to update")
NOTHING_TO_SUBSCRIBE = _failure("The lead has no email address or phone number to subscribe")
NOTHING_TO_UNSUBSCRIBE = _failure("The lead has no email address or phone number to unsubscribe")
CHANNEL_NEEDS = _failure("The {channel} channel needs {needs}")
CHANNEL_NEEDS_VALID = _failure("The {channel} channel needs a valid {needs}: {problem}")
SMS_REFUSED = _failure(_SMS_REFUSED)
SMS_NOT_APPLIED = _failure(f"SMS not applied: {_SMS_REFUSED}; the email consent went ahead")
CONSENT_SUPPRESSED = _failure(
    "Klaviyo did not apply the email consent: the address is suppressed ({suppression}), "
    "which no subscribe lifts"
)
CONSENT_NOT_APPLIED = _failure(
    "Klaviyo accepted the consent but had not applied it {minutes} minutes later"
)
PHONE_ONLY_REFUSED = _failure(
    "Klaviyo refused a profile with only a phone number (SMS is not set up for the account)"
)
KLAVIYO_REJECTED = _failure("Klaviyo rejected the request (HTTP {status})")
TOO_LARGE = _failure("The profile is too large for Klaviyo (HTTP 413)")
INVALID_PHONE_FOR_REGION = _failure("Invalid phone number (read as a {region} number)")
PROPERTY_NAME_TOO_LONG = _failure("A custom property name is longer than {limit} characters")
PROPERTY_TOO_LONG = _failure("A custom property value is longer than {limit} characters")
PROPERTY_TOO_DEEP = _failure("A custom property is nested more than {limit} levels")
# A variable that steers the action: a configuration error (400), like VARIABLE_NOT_TEXT.
CUSTOM_SOURCE_TOO_LONG = _error(
    Kind.CONFIGURATION, "Klaviyo Custom Source is longer than {limit} characters"
)

# -- the request or its configuration: error, 400 -----------------------------------------
LIST_ID_MISSING = _error(Kind.CONFIGURATION, "Klaviyo List Id is missing")
SEGMENT_ID_MISSING = _error(Kind.CONFIGURATION, "Klaviyo Segment Id is missing")
VARIABLE_NOT_TEXT = _error(Kind.CONFIGURATION, "{field} must be a single text value")
VARIABLE_NOT_FINITE = _error(Kind.CONFIGURATION, "{field} must be a finite number")
NOT_ONE_OF = _error(Kind.CONFIGURATION, "{field} must be one of: {choices}")
INVALID_CHANNELS = _error(Kind.CONFIGURATION, "Klaviyo Channels must be email, sms or both")
NOT_TRUE_OR_FALSE = _error(Kind.CONFIGURATION, "{field} must be true or false")
INVALID_TIMEOUT = _error(Kind.CONFIGURATION, "Timeout Seconds must be a positive number")
INVALID_TARGET_ID = _error(Kind.CONFIGURATION, "Klaviyo {target} Id is not a valid id")
METRIC_NAME_TOO_LONG = _error(
    Kind.CONFIGURATION, "Klaviyo Metric Name is longer than {limit} characters"
)
DELETION_OFF = _error(  # the stack must fix it (contract section 6): 502, not retryable
    Kind.UPSTREAM,
    "Profile deletion is switched off for this stack (parameter EnableProfileDeletion)",
)
BODY_EMPTY = _error(Kind.BAD_REQUEST, "The request body is empty")
BODY_NOT_BASE64 = _error(Kind.BAD_REQUEST, "The request body is not valid base64")
BODY_TOO_LARGE = _error(Kind.BAD_REQUEST, "The request body is larger than {limit} KB")
BODY_NOT_UTF8 = _error(Kind.BAD_REQUEST, "The request body is not valid UTF-8")
BODY_NOT_JSON = _error(Kind.BAD_REQUEST, "The request body is not valid JSON")
BODY_NOT_OBJECT = _error(Kind.BAD_REQUEST, "The request body must be a JSON object (one lead)")
ROW_TOO_LONG = _error(Kind.BAD_REQUEST, "The row is longer than {limit} KB")
MESSAGE_NOT_JSON = _error(Kind.BAD_REQUEST, "The message body is not valid JSON")
MESSAGE_MALFORMED = _error(Kind.BAD_REQUEST, "The queued request is malformed: {problem}")
EVENT_MALFORMED = _error(Kind.BAD_REQUEST, "The event is malformed: {problem}")
LEAD_NOT_OBJECT = _error(Kind.BAD_REQUEST, "A lead must be a JSON object")
LEAD_TOO_DEEP = _error(Kind.BAD_REQUEST, "The lead is nested more than {limit} levels")
BAD_IDEMPOTENCY_KEY = _error(Kind.BAD_REQUEST, "Idempotency-Key must be 1 to {limit} characters")
IDEMPOTENCY_KEY_REUSED = _error(
    Kind.BAD_REQUEST, "This Idempotency-Key was used with a different request"
)
STILL_RUNNING = _error(
    Kind.CONFLICT, "A request with this Idempotency-Key is still running; try again shortly"
)
UNSUPPORTED_MEDIA = _error(
    Kind.UNSUPPORTED_MEDIA, "The request body must be {accepted}, not {media_type}"
)

# -- Klaviyo or AWS said no: error, 502, not retryable --------------------------------------
# A list, segment or profile id the request names that Klaviyo does not know: the sender must
# change the request, so 400 (contract section 6), not a 5xx a sender would retry forever.
UNKNOWN_TARGET = _error(
    Kind.CONFIGURATION, "Klaviyo has no {target} with this Klaviyo {Target} Id (HTTP {status})"
)
KEY_REJECTED = _error(Kind.UPSTREAM, "Klaviyo rejected the API key")
SCOPE_MISSING = _error(Kind.UPSTREAM, "The Klaviyo API key lacks a required scope (HTTP 403)")
KLAVIYO_REFUSED = _error(Kind.UPSTREAM, "Klaviyo returned HTTP {status}")
URL_TOO_LONG = _error(Kind.UPSTREAM, "The request's URL was too long for Klaviyo (HTTP 414)")
UNREADABLE = _error(Kind.UPSTREAM, "Klaviyo returned an unreadable response (HTTP {status})")
SECRET_NOT_CONFIGURED = _error(Kind.UPSTREAM, "KLAVIYO_API_KEY_SECRET_ID is not set")
LEDGER_NOT_CONFIGURED = _error(
    Kind.UPSTREAM, "IDEMPOTENCY_TABLE_NAME is not set: creates are not made without their records"
)
SECRET_EMPTY = _error(Kind.UPSTREAM, "The Klaviyo API key secret is empty")
SECRET_WITHOUT_KEY = _error(Kind.UPSTREAM, "The Klaviyo API key secret has no api_key")
SECRET_DENIED = _error(Kind.UPSTREAM, "The Klaviyo API key secret could not be read ({code})")

# -- worth trying again: error, retryable ---------------------------------------------------
THROTTLED = _error(Kind.THROTTLED, "Klaviyo returned HTTP 429 (rate limited)")
PACED = _error(Kind.THROTTLED, "Klaviyo asked to wait {seconds} s before the next call; not sent")
NO_ROOM = _error(Kind.THROTTLED, "Klaviyo's rate limit leaves no room for {seconds} s; not sent")
TIMEOUT = _error(Kind.TIMEOUT, "Klaviyo did not respond within {seconds} seconds")
NOT_STARTED = _error(Kind.TIMEOUT, "Not started: too little time left in the invocation")
KLAVIYO_FAILED = _error(Kind.TRANSIENT, "Klaviyo returned HTTP {status}")
UNREADABLE_RETRYABLE = _error(
    Kind.TRANSIENT, "Klaviyo returned an unreadable response (HTTP {status})"
)
CHALLENGED = _error(Kind.TRANSIENT, "Klaviyo's firewall challenged the request (HTTP 403)")
UNREACHABLE = _error(Kind.TRANSIENT, "Could not reach Klaviyo (connection failed)")
CREATE_IN_PROGRESS = _error(
    Kind.THROTTLED,
    "Another request is creating a profile for this email, phone or external id; not sent",
)
CREATE_UNSETTLED = _error(
    Kind.THROTTLED,
    "An earlier attempt's create cannot be confirmed until Klaviyo's search catches up "
    "(about {seconds} s); not sent again",
)
RECORD_UNAVAILABLE = _error(
    Kind.THROTTLED,
    "The bundle's delivery records (DynamoDB) could not be reached; not sent, "
    "try again in {seconds} s",
)
SECRET_UNAVAILABLE = _error(Kind.TRANSIENT, "The Klaviyo API key secret could not be read")
SUBSCRIBE_APPLYING = _error(
    Kind.UNCONFIRMED,
    "Klaviyo accepted the consent but had not applied it within {seconds} s; "
    "the lead comes back to confirm it",
)
IMPORT_UNFINISHED = _error(
    Kind.TIMEOUT, "Klaviyo had not finished the bulk import in time; the lead comes back"
)
IMPORT_CANCELLED = _error(Kind.TRANSIENT, "Klaviyo cancelled the bulk import")
IMPORT_LOST = _error(Kind.TRANSIENT, "Klaviyo's bulk import did not report this profile")
IMPORT_UNCONFIRMED = _error(
    Kind.TRANSIENT,
    "Klaviyo took the bulk import but its answer could not be read; the lead comes back",
)
IMPORT_REFUSED_FOR_OTHERS = _error(
    Kind.TRANSIENT,
    "Klaviyo kept refusing the bulk import over other leads' data; the lead comes back",
)
INTERNAL = _error(Kind.TRANSIENT, "Internal error while processing the lead")
QUEUED_FOR_RETRY = Reason(Outcome.ERROR, Kind.QUEUED, "Queued for retry")


def every_reason() -> dict[str, Reason]:
    """Every reason declared above, by name (the README's reasons table is checked on it)."""
    return {name: value for name, value in globals().items() if isinstance(value, Reason)}


def unreadable_response(status: int) -> Result:
    reason = UNREADABLE_RETRYABLE if status in RETRYABLE_STATUSES else UNREADABLE
    return reason(status=status, klaviyo_status=status)


def unknown_target(target: str, status: int, errors: list[KlaviyoError]) -> Result:
    """An unknown list or segment: a configuration that Klaviyo does not know."""
    return UNKNOWN_TARGET(
        target=target, Target=target.title(), status=status, errors=errors, klaviyo_status=status
    )


# Klaviyo's 400s that are about the lead's data, by the attribute they point at. The
# attribute is the pointer's last step: ``/data/attributes/email`` for one profile,
# ``/data/attributes/profiles/data/3/attributes/email`` inside a bulk job.
_REJECTION_BY_ATTRIBUTE = {
    "email": INVALID_EMAIL,
    "phone_number": INVALID_PHONE,
    "external_id": INVALID_EXTERNAL_ID,
}


def from_klaviyo_answer(
    status: int,
    errors: list[KlaviyoError],
    *,
    challenge: bool = False,
    retry_after: float | None = None,
) -> Result:
    """Classify a non-2xx answer from Klaviyo that the caller did not handle itself."""
    context: dict[str, Any] = {
        "errors": errors,
        "retry_after": retry_after,
        "klaviyo_status": status,
    }
    if challenge:
        return CHALLENGED(**context)
    if status == 429:
        return THROTTLED(**context)
    if status in RETRYABLE_STATUSES:
        return KLAVIYO_FAILED(status=status, **context)
    if status == 401:
        return KEY_REJECTED(**context)
    if status == 403:
        return SCOPE_MISSING(**context)
    if status == 400:
        for error in errors:
            pointer = error.pointer or ""
            if "/attributes/" in pointer:
                reason = _REJECTION_BY_ATTRIBUTE.get(pointer.rsplit("/", 1)[-1])
                if reason is not None:
                    return reason(**context)
        details = " ".join(e.detail or "" for e in errors)
        if "identifiers is required" in details:
            return NO_IDENTIFIER(**context)
        if "sms" in details.lower():
            # Our phones are checked E.164 before any call: Klaviyo's "'phone_number' must
            # not be empty when the sms channel is included" means it refuses SMS for it.
            return SMS_REFUSED(**context)
        return KLAVIYO_REJECTED(status=400, **context)
    if status == 413:
        return TOO_LARGE(**context)
    if status == 414:
        return URL_TOO_LONG(**context)
    return KLAVIYO_REFUSED(status=status, **context)


def http_status(outcome: Outcome, kind: Kind | None) -> int:
    if outcome is Outcome.SUCCESS or kind is None:
        return 200
    return _STATUS_BY_KIND[kind]
