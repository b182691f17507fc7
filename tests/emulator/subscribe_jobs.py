"""Subscribe-job bodies for the emulator tests, and a look at a profile's consent."""

from __future__ import annotations

from typing import Any

from devtools.klaviyo_emulator import KlaviyoEmulator

JOBS = "/api/profile-subscription-bulk-create-jobs"
EMAIL = {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
SMS = {"sms": {"marketing": {"consent": "SUBSCRIBED"}, "transactional": {"consent": "SUBSCRIBED"}}}


def job(
    *profiles: dict[str, Any],
    list_id: str | None = None,
    custom_source: str | None = "Lead router: Acme form",
    historical_import: bool | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": list(profiles)}}
    if custom_source is not None:
        attributes["custom_source"] = custom_source
    if historical_import is not None:
        attributes["historical_import"] = historical_import
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": attributes,
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def person(subscriptions: dict[str, Any] | None = EMAIL, **attributes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "profile", "attributes": dict(attributes)}
    if "id" in attributes:
        item["id"] = item["attributes"].pop("id")
    if subscriptions is not None:
        item["attributes"]["subscriptions"] = subscriptions
    return item


def marketing(emu: KlaviyoEmulator, pid: str, channel: str = "email") -> dict[str, Any]:
    return emu.profile(pid)["attributes"]["subscriptions"][channel]["marketing"]
