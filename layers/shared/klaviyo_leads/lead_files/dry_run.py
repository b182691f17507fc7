"""A dry-run lead file's "would" counts: its rows run as dry runs, against Klaviyo's reads.

Under ``dry-run/<action>/`` a file is checked and reported and nothing is sent. When the
splitter can reach Klaviyo (the stack gives it the key), the rows the check would send also run
as a lead's dry run does (``dry_run``): parsed, settings resolved, read-only lookups made, the
writes kept, not sent. The report's ``would`` counts their results by outcome and reason
("would create" is a success, "already exists" a failure naming the profile) and the writes a
real run would send, by operation. ``STREAMS`` rows go side by side, each stream with a client
and pacer of its own, within the splitter's time: a file longer than that is counted for the
rows that ran, and ``would.rows`` says how many.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from klaviyo_leads.actions.action import Action
from klaviyo_leads.klaviyo.routes import operation_of
from klaviyo_leads.runtime import Runtime

STREAMS = 8
# Time kept from the splitter's deadline for writing the report.
MARGIN_SECONDS = 30.0


class Would:
    """The counts, added to by the streams."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[str] = Counter()

    def add(self, fields: dict[str, Any]) -> None:
        with self._lock:
            self.rows += 1
            self.outcomes[(str(fields.get("outcome")), str(fields.get("reason") or ""))] += 1
            for request in fields.get("would_send") or []:
                self.requests[operation_of(request["method"], request["path"])] += 1

    def as_json(self, rows_to_send: int) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "of_rows_to_send": rows_to_send,
            "outcomes": [
                {"outcome": outcome, "reason": reason or None, "count": count}
                for (outcome, reason), count in sorted(self.outcomes.items(), key=lambda i: -i[1])
            ],
            "requests": dict(sorted(self.requests.items())),
        }


def runtimes(env: Mapping[str, str]) -> Callable[[], Runtime] | None:
    """A runtime (client and pacer) per stream, from the splitter's environment; None when
    the stack gives it no Klaviyo key."""
    from klaviyo_leads.aws.secrets import ApiKeyProvider
    from klaviyo_leads.config import Settings

    settings = Settings.from_env(env)
    if not settings.api_key_secret_id:
        return None
    api_key = ApiKeyProvider(settings.api_key_secret_id)  # read once, for every stream
    return lambda: Runtime.wired(settings, api_key)


def would(
    action: Action,
    leads: Iterator[dict[str, Any]],
    runtimes: Callable[[], Runtime],
    seconds: float,
    rows_to_send: int,
) -> dict[str, Any]:
    """The "would" counts of the leads a dry-run file would send, within ``seconds``."""
    counts = Would()
    deadline = time.monotonic() + seconds - MARGIN_SECONDS
    taking = threading.Lock()

    def stream(_: int) -> None:
        runtime = runtimes()
        while time.monotonic() < deadline:
            with taking:
                lead = next(leads, None)
            if lead is None:
                return
            left = deadline - time.monotonic()
            processed = runtime.process(action, lead, remaining_seconds=left, dry_run=True)
            counts.add(processed.fields)

    with ThreadPoolExecutor(max_workers=STREAMS, thread_name_prefix="lead-file-dry-run") as pool:
        list(pool.map(stream, range(STREAMS)))
    return counts.as_json(rows_to_send)
