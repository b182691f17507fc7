"""``POST /api/profile-subscription-bulk-create-jobs`` (bulk_subscribe_profiles): its body
checked, then applied ``subscribe_delay`` seconds later (``Store.apply_subscribe_job``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .attributes import check_email, check_phone, phone_region
from .config import Config
from .errors import AGE_GATE_WITHOUT_BIRTH_DATE, EMAIL_WITHOUT_EMAIL, SMS_WITHOUT_PHONE, invalid
from .model import (
    SUBSCRIBED,
    ChannelConsent,
    ProfileSubscription,
    SubscribeJob,
    parse_timestamp,
    utcnow,
)
from .protocol import Context, Reply
from .state import Store

JOB_TYPE = "profile-subscription-bulk-create-job"
# channel -> message types accepted under it
CHANNELS: dict[str, tuple[str, ...]] = {
    "email": ("marketing", "open_tracking"),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional"),
    "push": ("marketing",),
}
# Extra non-consent keys a channel object may carry.
CHANNEL_EXTRAS: dict[str, tuple[str, ...]] = {"push": ("tokens", "anonymous_id")}
PROFILE_ATTRIBUTES = ("email", "phone_number", "subscriptions", "age_gated_date_of_birth")


def _object(value: Any, pointer: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object.", pointer=pointer)
    return value


def parse_job(body: Any, store: Store, *, max_profiles: int | None) -> SubscribeJob:
    """``max_profiles``: the spec's "Maximum number of profiles can be submitted for
    subscription: 1000" (``OperationRules.item_limit``)."""
    data = _object(body.get("data") if isinstance(body, dict) else None, "/data", "data")
    if data.get("type") != JOB_TYPE:
        raise invalid(f"'type' must be '{JOB_TYPE}'.", pointer="/data/type")
    attrs = _object(data.get("attributes"), "/data/attributes", "attributes")
    for key in attrs:
        if key not in ("custom_source", "profiles", "historical_import"):
            raise invalid(
                f"'{key}' is not a valid field for the resource '{JOB_TYPE}'.",
                pointer=f"/data/attributes/{key}",
            )
    custom_source = attrs.get("custom_source")
    if custom_source is not None and not isinstance(custom_source, str):
        raise invalid("'custom_source' must be a string.", pointer="/data/attributes/custom_source")
    historical = attrs.get("historical_import")
    if historical is not None and not isinstance(historical, bool):
        raise invalid(
            "'historical_import' must be a boolean.", pointer="/data/attributes/historical_import"
        )
    profiles = _object(attrs.get("profiles"), "/data/attributes/profiles", "profiles")
    items = profiles.get("data")
    where = "/data/attributes/profiles/data"
    if not isinstance(items, list) or not items:
        raise invalid("At least one profile is required.", pointer=where)
    if max_profiles is not None and len(items) > max_profiles:
        raise invalid(f"A job can contain at most {max_profiles} profiles.", pointer=where)
    parsed = [
        _parse_profile(item, f"{where}/{i}", bool(historical), store)
        for i, item in enumerate(items)
    ]
    list_id = _parse_list(data.get("relationships"), store)
    _check_account(parsed, store.config)
    return SubscribeJob(
        job_number=store.next_job_number(),
        profiles=parsed,
        list_id=list_id,
        custom_source=custom_source,
        historical_import=bool(historical),
    )


def _parse_list(relationships: Any, store: Store) -> str | None:
    if relationships is None:
        return None
    rel = _object(relationships, "/data/relationships", "relationships")
    if rel.get("list") is None:
        return None
    ref = _object(rel["list"], "/data/relationships/list", "list")
    ref_data = _object(ref.get("data"), "/data/relationships/list/data", "data")
    if ref_data.get("type") != "list":
        raise invalid("'type' must be 'list'.", pointer="/data/relationships/list/data/type")
    list_id = ref_data.get("id")
    with store.lock:
        known = isinstance(list_id, str) and list_id in store.lists
    if not known:
        raise invalid(
            f"Invalid list id: the list '{list_id}' does not exist.",
            pointer="/data/relationships/list/data/id",
        )
    return str(list_id)


def _parse_profile(item: Any, where: str, historical: bool, store: Store) -> ProfileSubscription:
    item = _object(item, where, "profile")
    if item.get("type") != "profile":
        raise invalid("'type' must be 'profile'.", pointer=f"{where}/type")
    profile_id = item.get("id")
    if profile_id is not None:
        with store.lock:
            known = isinstance(profile_id, str) and profile_id in store.profiles
        if not known:
            raise invalid(f"A profile with id {profile_id} does not exist.", pointer=f"{where}/id")
    attrs = _object(item.get("attributes"), f"{where}/attributes", "attributes")
    for key in attrs:
        if key not in PROFILE_ATTRIBUTES:
            raise invalid(
                f"'{key}' is not a valid field for a profile in a subscription job.",
                pointer=f"{where}/attributes/{key}",
            )
    email = attrs.get("email")
    phone = attrs.get("phone_number")
    if email is not None:
        check_email(email, f"{where}/attributes/email")
    if phone is not None:
        check_phone(phone, f"{where}/attributes/phone_number")
    dob = attrs.get("age_gated_date_of_birth")
    if dob is not None and not _is_date(dob):
        raise invalid(
            "'age_gated_date_of_birth' must be a date (YYYY-MM-DD).",
            pointer=f"{where}/attributes/age_gated_date_of_birth",
        )
    subs_where = f"{where}/attributes/subscriptions"
    if attrs.get("subscriptions") is None:
        raise invalid("'subscriptions' is a required field.", pointer=subs_where)
    subscriptions = _object(attrs["subscriptions"], subs_where, "subscriptions")
    consents = _parse_channels(subscriptions, subs_where, historical)
    channels = {c.channel for c in consents}
    if "email" in channels and not email:
        raise invalid(EMAIL_WITHOUT_EMAIL, pointer=f"{where}/attributes/email")
    if "sms" in channels and not phone:
        raise invalid(SMS_WITHOUT_PHONE, pointer=f"{where}/attributes/phone_number")
    if "whatsapp" in channels and not phone:
        raise invalid(
            "'phone_number' must not be empty when the whatsapp channel is included in "
            "'subscriptions'.",
            pointer=f"{where}/attributes/phone_number",
        )
    return ProfileSubscription(profile_id, email, phone, consents, dob)


def _check_account(profiles: list[ProfileSubscription], config: Config) -> None:
    """The account's SMS settings refuse the whole job, naming no profile.

    Observed: a job with SMS consent for a valid UK number on an account that could not
    text the UK got 400 with the missing-phone wording and no pointer (klaviyo-api-node #95).
    The same answer is assumed for an account without SMS at all.
    """
    for item in profiles:
        if not any(c.channel == "sms" for c in item.consents):
            continue
        region = phone_region(item.phone_number or "")
        if not config.sms_enabled or region not in config.sms_countries:
            raise invalid(SMS_WITHOUT_PHONE)
        if config.age_gated_sms and item.age_gated_date_of_birth is None:
            raise invalid(AGE_GATE_WITHOUT_BIRTH_DATE)


def _parse_channels(
    subscriptions: dict[str, Any], where: str, historical: bool
) -> list[ChannelConsent]:
    consents: list[ChannelConsent] = []
    for channel, value in subscriptions.items():
        if channel not in CHANNELS:
            raise invalid(f"'{channel}' is not a valid channel.", pointer=f"{where}/{channel}")
        if value is None:
            continue
        block = _object(value, f"{where}/{channel}", channel)
        for message_type, params in block.items():
            type_where = f"{where}/{channel}/{message_type}"
            if message_type in CHANNEL_EXTRAS.get(channel, ()):
                continue
            if message_type not in CHANNELS[channel]:
                raise invalid(
                    f"'{message_type}' is not valid for the {channel} channel.", pointer=type_where
                )
            if params is None:
                continue
            params = _object(params, type_where, message_type)
            consents.append(_parse_consent(channel, message_type, params, type_where, historical))
    if not consents:
        raise invalid("At least one channel must be given in 'subscriptions'.", pointer=where)
    return consents


def _parse_consent(
    channel: str, message_type: str, params: dict[str, Any], where: str, historical: bool
) -> ChannelConsent:
    if params.get("consent") != SUBSCRIBED:
        raise invalid("'consent' must be 'SUBSCRIBED'.", pointer=f"{where}/consent")
    raw_at = params.get("consented_at")
    consented_at: datetime | None = None
    if raw_at is not None:
        if not historical:
            raise invalid(
                "'consented_at' is only allowed when 'historical_import' is true.",
                pointer=f"{where}/consented_at",
            )
        try:
            consented_at = parse_timestamp(raw_at) if isinstance(raw_at, str) else None
        except ValueError:
            consented_at = None
        if consented_at is None:
            raise invalid(
                "'consented_at' must be an ISO-8601 datetime.", pointer=f"{where}/consented_at"
            )
        if consented_at > utcnow():
            raise invalid("'consented_at' must be in the past.", pointer=f"{where}/consented_at")
    elif historical and message_type != "open_tracking":
        raise invalid(
            "'consented_at' is required when 'historical_import' is true.",
            pointer=f"{where}/consented_at",
        )
    for key in params:
        if key not in ("consent", "consented_at"):
            raise invalid(f"'{key}' is not a valid consent field.", pointer=f"{where}/{key}")
    return ChannelConsent(channel, message_type, consented_at)


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def bulk_subscribe_profiles(ctx: Context) -> Reply:
    store = ctx.store
    job = parse_job(ctx.body, store, max_profiles=ctx.rules.item_limit)
    store.later(store.config.subscribe_delay, lambda: store.apply_subscribe_job(job))
    return Reply(202)
