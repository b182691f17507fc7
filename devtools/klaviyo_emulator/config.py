"""The emulated account's settings and the emulator's behaviour switches.

One :class:`Config` is in force at a time. It is immutable: ``KlaviyoEmulator.configure``
swaps in a changed copy, so a request thread that took a reference keeps a consistent view.
The constructor's copy is what ``reset()`` goes back to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .latency import LatencyModel, latency_model

OPT_IN_CHOICES = ("single", "double")
LIST_ADD_CHOICES = ("400", "404", "ignore")
UNSUBSCRIBE_SCOPES = ("list", "global")
EVENT_LIMIT_CHOICES = ("docs", "spec")
DELAYS = (
    "subscribe_delay",
    "unsubscribe_delay",
    "deletion_delay",
    "import_delay",
    "event_delay",
    "search_lag",
    "segment_lag",
)


@dataclass(frozen=True)
class Config:
    """Settings that change what the emulator answers or when its effects show.

    ``rate_limits`` refuses over-limit requests with 429 (the windows are counted and the
    ``RateLimit-*`` headers sent either way). Delays and lags are seconds on the emulator's
    clock; 0 applies at once. ``import_rate`` is profiles per second a bulk import job
    processes once started (0: the whole job at once). ``import_all_or_nothing`` False makes
    a profile that fails synchronous validation an import error of the job instead of
    refusing the whole request (the other reading of that rule, for conformance's probes).
    """

    rate_limits: bool = False
    subscribe_delay: float = 0.0
    unsubscribe_delay: float = 0.0
    deletion_delay: float = 0.0
    import_delay: float = 0.0
    import_rate: float = 0.0
    event_delay: float = 0.0
    search_lag: float = 0.0
    segment_lag: float = 0.0
    default_opt_in: str = "double"
    sms_enabled: bool = True
    sms_countries: frozenset[str] = frozenset({"US"})
    age_gated_sms: bool = False
    unknown_profile_in_list_add: str = "ignore"
    unknown_profile_in_list_remove: str = "400"
    external_id_unique: bool = False
    import_external_id_match: bool = False
    import_all_or_nothing: bool = True
    unsubscribe_scope: str = "list"
    event_limits: str = "docs"
    latency: LatencyModel | None = field(default=None, compare=False)

    def changed(self, seed: int | None = None, **changes: Any) -> Config:
        """A copy with ``changes`` applied and checked; ValueError/TypeError when invalid."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "sms_countries" in changes:
            changes["sms_countries"] = _countries(changes["sms_countries"])
        if "latency" in changes:
            changes["latency"] = latency_model(changes["latency"], seed)
        for name in ("unknown_profile_in_list_add", "unknown_profile_in_list_remove"):
            if name in changes:
                changes[name] = str(changes[name])
        updated = dataclasses.replace(self, **changes)
        updated.check()
        return updated

    def check(self) -> None:
        if self.default_opt_in not in OPT_IN_CHOICES:
            raise ValueError(f"default_opt_in must be one of {OPT_IN_CHOICES}")
        for name in ("unknown_profile_in_list_add", "unknown_profile_in_list_remove"):
            if getattr(self, name) not in LIST_ADD_CHOICES:
                raise ValueError(f"{name} must be one of {LIST_ADD_CHOICES}")
        if self.unsubscribe_scope not in UNSUBSCRIBE_SCOPES:
            raise ValueError(f"unsubscribe_scope must be one of {UNSUBSCRIBE_SCOPES}")
        if self.event_limits not in EVENT_LIMIT_CHOICES:
            raise ValueError(f"event_limits must be one of {EVENT_LIMIT_CHOICES}")
        for name in (*DELAYS, "import_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["sms_countries"] = sorted(self.sms_countries)
        data["latency"] = None if self.latency is None else self.latency.name
        return data


def _countries(value: Iterable[str] | str) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(code.strip().upper() for code in items if code.strip())
