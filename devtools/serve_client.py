"""How a command finds a running `make serve` and reaches its local-only routes.

`make serve` writes where it listens to a state file; `make invoke` and `make import` read it
and, when that server answers, run in its stack and emulator instead of starting their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from devtools import lambda_events as le

# Local only (the deployed API has no such route): the last 100 result events published on the bus.
LOCAL_RESULTS_ROUTE = "/_local/results"
# Local only: POST /_local/invoke/<action> runs an event file's event in the served stack.
LOCAL_INVOKE_PREFIX = "/_local/invoke/"
# Local only: POST /_local/import/<action> sends a lead file through the served stack.
LOCAL_IMPORT_PREFIX = "/_local/import/"
# Where a running `make serve` says where it listens, so that `make invoke` uses its state.
SERVE_STATE_ENV = "LOCAL_SERVE_STATE_FILE"
DEFAULT_SERVE_STATE = le.ROOT / ".tools" / "serve.json"


def serve_state_path() -> Path:
    return Path(os.environ.get(SERVE_STATE_ENV) or DEFAULT_SERVE_STATE)


def running_serve() -> str | None:
    """The base URL of a running `make serve`, from its state file, if it answers."""
    import urllib.request

    try:
        base = str(json.loads(serve_state_path().read_text("utf-8"))["base_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with urllib.request.urlopen(f"{base}{LOCAL_RESULTS_ROUTE}", timeout=2):
            return base
    except OSError:
        return None
