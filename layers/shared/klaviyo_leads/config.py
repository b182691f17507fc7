"""The functions' configuration, read from the environment once per container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2026-07-15"


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _share(value: str | None) -> float:
    """A share of a limit: a fraction in (0, 1] or a percentage; 1 when unset or unreadable."""
    try:
        share = float(value or 1.0)
    except ValueError:
        return 1.0
    share = share / 100.0 if share > 1.0 else share
    return share if 0.0 < share <= 1.0 else 1.0


def _containers(value: str | None) -> int | None:
    """A number of containers (a whole number above 0); None when unset, 0 or unreadable."""
    try:
        containers = int(value or 0)
    except ValueError:
        return None
    return containers if containers > 0 else None


def _seconds(value: str | None, default: float) -> float:
    """A positive, finite number of seconds (at most an hour); the default otherwise."""
    try:
        seconds = float(value or default)
    except ValueError:
        return default
    return seconds if 0.0 < seconds <= 3600.0 else default


def _trail_pii(value: str | None) -> str | None:
    """``lead`` or ``hashed``; off when unset or "off"; anything else keeps the least."""
    if value is None or value.lower() == "off":
        return None
    return "lead" if value.lower() == "lead" else "hashed"


def _opt_in(value: str | None) -> str:
    """single_opt_in when the value says single; Klaviyo's default, double, otherwise."""
    return (
        "single_opt_in" if (value or "").strip().lower().startswith("single") else "double_opt_in"
    )


@dataclass(frozen=True)
class Settings:
    """Everything the environment decides (contract section 9)."""

    api_key_secret_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_revision: str = DEFAULT_REVISION
    default_phone_region: str = "US"
    results_event_bus_name: str | None = None
    idempotency_table_name: str | None = None
    action_queue_url: str | None = None  # the function's own queue
    results_table_name: str | None = None  # results of queued leads, for GET /results/{id}
    coalesce_batches: bool = True
    # The bundle's share of each Klaviyo endpoint's limit; the rest stays with the account's
    # other integrations even when they are quiet.
    klaviyo_max_share: float = 1.0
    # The most containers of the function that may call Klaviyo at once, as the stack bounds
    # it (its reserved concurrency); None: not known. The pacer starts a container at an even
    # part of each limit for that many.
    klaviyo_containers: int | None = None
    # Delete Profile requests a data-privacy deletion only when the stack allows it.
    profile_deletion_enabled: bool = False
    # How long Klaviyo's profile search may lag behind a write. Not documented: an assumption
    # (the conformance run measures it). Until then a search that finds nothing cannot prove
    # that a create whose answer was lost did not happen.
    search_settle_seconds: float = 10.0
    # What a result event carries of its lead: "full" (the lead as received) or
    # "keys-and-hashes" (its keys, and its identifiers as SHA-256): aws.bus.LEAD_CONTENTS.
    result_event_lead: str = "full"
    # The lead trail: what its records keep of a lead ("lead": all of it; "hashed": hashes of
    # the email and phone only); None: no trail. And the lead field that names the vendor.
    trail_pii: str | None = None
    trail_vendor_field: str | None = None
    # The opt-in process of subscribes without a list: the account's setting, which Klaviyo's
    # API does not show. Double opt-in is Klaviyo's default; set KLAVIYO_ACCOUNT_OPT_IN to
    # single_opt_in for an account that changed it.
    account_opt_in_process: str = "double_opt_in"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            api_key_secret_id=text("KLAVIYO_API_KEY_SECRET_ID"),
            base_url=(text("KLAVIYO_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            api_revision=text("KLAVIYO_API_REVISION") or DEFAULT_REVISION,
            default_phone_region=(text("DEFAULT_PHONE_REGION") or "US").upper(),
            results_event_bus_name=text("RESULTS_EVENT_BUS_NAME"),
            idempotency_table_name=text("IDEMPOTENCY_TABLE_NAME"),
            action_queue_url=text("ACTION_QUEUE_URL"),
            results_table_name=text("RESULTS_TABLE_NAME"),
            coalesce_batches=_flag(env.get("COALESCE_BATCHES"), default=True),
            klaviyo_max_share=_share(env.get("KLAVIYO_MAX_SHARE")),
            klaviyo_containers=_containers(env.get("KLAVIYO_CONTAINERS")),
            profile_deletion_enabled=_flag(env.get("PROFILE_DELETION_ENABLED"), default=False),
            search_settle_seconds=_seconds(env.get("KLAVIYO_SEARCH_SETTLE_SECONDS"), 10.0),
            result_event_lead=(text("RESULT_EVENT_LEAD") or "full").lower(),
            trail_pii=_trail_pii(text("TRAIL_PII")),
            trail_vendor_field=text("TRAIL_VENDOR_FIELD"),
            account_opt_in_process=_opt_in(env.get("KLAVIYO_ACCOUNT_OPT_IN")),
        )
