"""``POST /api/data-privacy-deletion-jobs`` (request_profile_deletion): its body checked,
then the deletion applied ``deletion_delay`` seconds later (``Store.delete_profiles``).

The spec's ``DataPrivacyCreateDeletionJobQuery``: ``data.type`` is
``data-privacy-deletion-job`` and ``data.attributes.profile.data`` a profile given by its
``id`` or by ``attributes.email`` / ``attributes.phone_number``. "If multiple identifiers are
provided, we will return an error" (the operation's description); none is an error too.
"""

from __future__ import annotations

from typing import Any

from .attributes import check_email, check_phone
from .errors import MULTIPLE_DELETION_IDENTIFIERS, invalid
from .protocol import Context, Reply

JOB_TYPE = "data-privacy-deletion-job"
_PROFILE = "/data/attributes/profile/data"


def _object(value: Any, pointer: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object.", pointer=pointer)
    return value


def parse_deletion(body: Any) -> tuple[str, str]:
    """``(kind, value)``: kind is ``id``, ``email`` or ``phone_number``; 400 otherwise."""
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != JOB_TYPE:
        raise invalid(f"'type' must be '{JOB_TYPE}'.", pointer="/data/type")
    attributes = _object(data.get("attributes"), "/data/attributes", "attributes")
    profile = _object(attributes.get("profile"), "/data/attributes/profile", "profile")
    item = _object(profile.get("data"), _PROFILE, "data")
    if item.get("type") != "profile":
        raise invalid("'type' must be 'profile'.", pointer=f"{_PROFILE}/type")
    given = _object(item.get("attributes"), f"{_PROFILE}/attributes", "attributes")
    identifiers = {"id": item.get("id")} | {
        key: given.get(key) for key in ("email", "phone_number")
    }
    present = {key: value for key, value in identifiers.items() if value is not None}
    if len(present) != 1:
        raise invalid(MULTIPLE_DELETION_IDENTIFIERS, pointer=_PROFILE)
    kind, value = next(iter(present.items()))
    pointer = f"{_PROFILE}/id" if kind == "id" else f"{_PROFILE}/attributes/{kind}"
    if not isinstance(value, str) or not value:
        raise invalid(f"'{kind}' must be a non-empty string.", pointer=pointer)
    if kind == "email":
        check_email(value, pointer)
    if kind == "phone_number":
        check_phone(value, pointer)
    return kind, value


def request_profile_deletion(ctx: Context) -> Reply:
    store = ctx.store
    kind, value = parse_deletion(ctx.body)
    # Unknown identifiers are accepted too: the job reveals nothing about who exists
    # (inferred; Klaviyo documents only the 202).
    store.later(store.config.deletion_delay, lambda: store.delete_profiles(kind, value))
    return Reply(202)
