"""``POST /api/profile-subscription-bulk-delete-jobs`` (bulk_unsubscribe_profiles).

The body is the spec's ``SubscriptionDeleteJobCreateQuery``: up to the operation's "Maximum
number of profiles per call: 100", each by ``email`` and/or ``phone_number`` with the
channels to unsubscribe (``UnsubscriptionChannels``: ``consent`` is only "UNSUBSCRIBED"),
and an optional list. "Either email or phone number is required for email/SMS/WhatsApp
channels" (spec); like a subscribe job, the email channel needs the email and the SMS and
WhatsApp channels the phone number. The job answers 202 and applies ``unsubscribe_delay``
seconds later (``Store.apply_unsubscribe_job`` says what it does).
"""

from __future__ import annotations

from typing import Any

from .attributes import check_email, check_phone
from .errors import NO_IDENTIFIER, invalid
from .model import ProfileUnsubscription, UnsubscribeJob
from .protocol import Context, Reply
from .state import Store

JOB_TYPE = "profile-subscription-bulk-delete-job"
PROFILES = "/data/attributes/profiles/data"
# channel -> message types that can be unsubscribed (UnsubscriptionChannels)
CHANNELS: dict[str, tuple[str, ...]] = {
    "email": ("marketing", "open_tracking"),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional", "conversational"),
    "push": ("marketing",),
}
UNSUBSCRIBED = "UNSUBSCRIBED"


def _object(value: Any, pointer: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object.", pointer=pointer)
    return value


def parse_job(ctx: Context) -> UnsubscribeJob:
    body = ctx.body
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != JOB_TYPE:
        raise invalid(f"'type' must be '{JOB_TYPE}'.", pointer="/data/type")
    attributes = _object(data.get("attributes"), "/data/attributes", "attributes")
    for key in attributes:
        if key != "profiles":
            raise invalid(
                f"'{key}' is not a valid field for the resource '{JOB_TYPE}'.",
                pointer=f"/data/attributes/{key}",
            )
    profiles = _object(attributes.get("profiles"), "/data/attributes/profiles", "profiles")
    items = profiles.get("data")
    if not isinstance(items, list) or not items:
        raise invalid("At least one profile is required.", pointer=PROFILES)
    most = ctx.rules.item_limit
    if most is not None and len(items) > most:
        raise invalid(f"A job can contain at most {most} profiles.", pointer=PROFILES)
    parsed = [_parse_profile(item, f"{PROFILES}/{i}") for i, item in enumerate(items)]
    return UnsubscribeJob(parsed, _parse_list(data.get("relationships"), ctx.store))


def _parse_profile(raw: Any, where: str) -> ProfileUnsubscription:
    item = _object(raw, where, "profile")
    if item.get("type") != "profile":
        raise invalid("'type' must be 'profile'.", pointer=f"{where}/type")
    attributes = _object(item.get("attributes"), f"{where}/attributes", "attributes")
    at = f"{where}/attributes"
    for key in attributes:
        if key not in ("email", "phone_number", "subscriptions"):
            raise invalid(
                f"'{key}' is not a valid field for a profile in an unsubscribe job.",
                pointer=f"{at}/{key}",
            )
    email = attributes.get("email")
    phone = attributes.get("phone_number")
    if email is not None:
        check_email(email, f"{at}/email")
    if phone is not None:
        check_phone(phone, f"{at}/phone_number")
    if attributes.get("subscriptions") is None:
        raise invalid("'subscriptions' is a required field.", pointer=f"{at}/subscriptions")
    channels = _parse_channels(
        _object(attributes["subscriptions"], f"{at}/subscriptions", "subscriptions"),
        f"{at}/subscriptions",
    )
    given = {channel for channel, _ in channels}
    if "email" in given and not email:
        raise invalid(
            "'email' must not be empty when the email channel is included in 'subscriptions'.",
            pointer=f"{at}/email",
        )
    for channel in ("sms", "whatsapp"):
        if channel in given and not phone:
            raise invalid(
                f"'phone_number' must not be empty when the {channel} channel is included in "
                "'subscriptions'.",
                pointer=f"{at}/phone_number",
            )
    if not email and not phone:
        # Push alone: the emulator keeps no push tokens, so it needs a profile to find.
        raise invalid(NO_IDENTIFIER, pointer=at)
    return ProfileUnsubscription(email, phone, channels)


def _parse_channels(subscriptions: dict[str, Any], where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for channel, block in subscriptions.items():
        if channel not in CHANNELS:
            raise invalid(f"'{channel}' is not a valid channel.", pointer=f"{where}/{channel}")
        if block is None:
            continue
        block = _object(block, f"{where}/{channel}", channel)
        if channel == "push":  # PushUnsubscriptionParameters requires both
            for name in ("marketing", "tokens"):
                if name not in block:
                    raise invalid(f"'{name}' is a required field.", pointer=f"{where}/push/{name}")
        for message_type, params in block.items():
            at = f"{where}/{channel}/{message_type}"
            if channel == "push" and message_type == "tokens":
                if not isinstance(params, list):
                    raise invalid("'tokens' must be an array.", pointer=at)
                for n, token in enumerate(params):
                    for name in ("token", "platform", "vendor"):  # PushTokenEntry
                        if not isinstance(token, dict) or not isinstance(token.get(name), str):
                            raise invalid(
                                f"'{name}' is a required field.", pointer=f"{at}/{n}/{name}"
                            )
                continue  # the emulator keeps no push tokens
            if message_type not in CHANNELS[channel]:
                raise invalid(
                    f"'{message_type}' is not valid for the {channel} channel.", pointer=at
                )
            if params is None:
                continue
            params = _object(params, at, message_type)
            for key in params:
                if key != "consent":
                    raise invalid(f"'{key}' is not a valid consent field.", pointer=f"{at}/{key}")
            if params.get("consent") != UNSUBSCRIBED:
                raise invalid(f"'consent' must be '{UNSUBSCRIBED}'.", pointer=f"{at}/consent")
            out.append((channel, message_type))
    if not out:
        raise invalid("At least one channel must be given in 'subscriptions'.", pointer=where)
    return out


def _parse_list(relationships: Any, store: Store) -> str | None:
    if relationships is None:
        return None
    rel = _object(relationships, "/data/relationships", "relationships")
    if rel.get("list") is None:
        return None
    ref = _object(rel["list"], "/data/relationships/list", "list")
    data = _object(ref.get("data"), "/data/relationships/list/data", "data")
    if data.get("type") != "list":
        raise invalid("'type' must be 'list'.", pointer="/data/relationships/list/data/type")
    list_id = data.get("id")
    with store.lock:
        known = isinstance(list_id, str) and list_id in store.lists
    if not known:
        raise invalid(
            f"Invalid list id: the list '{list_id}' does not exist.",
            pointer="/data/relationships/list/data/id",
        )
    return str(list_id)


def bulk_unsubscribe_profiles(ctx: Context) -> Reply:
    job = parse_job(ctx)
    store = ctx.store
    store.later(store.config.unsubscribe_delay, lambda: store.apply_unsubscribe_job(job))
    return Reply(202)
