"""Emulator settings from a calibration file, the ``conformance.json`` a conformance run writes.

The run measures a real account (search lag, import timing, import validation and identity);
:func:`settings` turns what it measured into the emulator's keyword arguments so the emulator,
the benchmark and the soak can run on that account's behaviour. A key the run could not
measure (null) keeps the emulator's default.

``KLAVIYO_EMULATOR_CALIBRATION`` (a file's path) applies a file to every emulator a process
and its children start, over their own settings: how ``bench.run --calibration`` reaches the
emulators its parts start. Unset, nothing changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def settings(data: dict[str, Any]) -> dict[str, Any]:
    """The emulator keyword arguments a calibration object implies."""
    found: dict[str, Any] = {}
    lags = data.get("search_lag_seconds")
    if isinstance(lags, dict):
        measured = [float(v) for v in lags.values() if isinstance(v, int | float)]
        if measured:
            found["search_lag"] = max(measured)
    for key, name in (
        ("segment_lag_seconds", "segment_lag"),
        ("import_queue_seconds", "import_delay"),
        ("import_profiles_per_second", "import_rate"),
    ):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = max(0.0, float(value))
    rules = data.get("subscribe_rules")
    applied = rules.get("apply_seconds") if isinstance(rules, dict) else None
    if isinstance(applied, int | float) and not isinstance(applied, bool):
        found["subscribe_delay"] = max(0.0, float(applied))
    for key, name in (
        ("import_all_or_nothing", "import_all_or_nothing"),
        ("import_matches_external_id", "import_external_id_match"),
    ):
        value = data.get(key)
        if isinstance(value, bool):
            found[name] = value
    return found


def load(path: str | Path) -> dict[str, Any]:
    """:func:`settings` of the file at ``path``; ValueError when it is not a JSON object."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a calibration file holds one JSON object")
    return settings(data)


ENVIRONMENT = "KLAVIYO_EMULATOR_CALIBRATION"


def from_environment() -> dict[str, Any]:
    """:func:`load` of the file ``KLAVIYO_EMULATOR_CALIBRATION`` names; {} when it is unset."""
    path = os.environ.get(ENVIRONMENT, "").strip()
    return load(path) if path else {}
