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


@dataclass(frozen=True)
class Settings:
    """Everything the environment decides (contract section 9)."""

    api_key_secret_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_revision: str = DEFAULT_REVISION
    default_phone_region: str = "US"
    results_event_bus_name: str | None = None
    idempotency_table_name: str | None = None
    coalesce_batches: bool = True

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
            coalesce_batches=_flag(env.get("COALESCE_BATCHES"), default=True),
        )
