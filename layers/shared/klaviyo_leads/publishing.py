"""Results of queued and scheduled work, published as EventBridge events (contract section 7)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .lead import MAX_LEAD_NESTING, finite, nesting_exceeds

SOURCE = "klaviyo.lead-actions"
MAX_ENTRIES_PER_CALL = 10  # PutEvents' limit
MAX_CALL_BYTES = 250_000  # PutEvents allows 256 KB per call; keep a margin


@dataclass
class Publication:
    action: str
    lead: Any
    result: dict[str, Any]
    message_id: str | None = None

    def entry(self, bus_name: str) -> dict[str, Any]:
        # A lead refused for its nesting cannot be written out (the stack would run out): null.
        lead = None if nesting_exceeds(self.lead, MAX_LEAD_NESTING) else self.lead
        detail: dict[str, Any] = {"action": self.action, "lead": lead, "result": self.result}
        if self.message_id:
            detail["message_id"] = self.message_id
        return {
            "Source": SOURCE,
            "DetailType": f"{self.action} result",
            # The lead as received may hold NaN (refused, but still published): JSON has none.
            "Detail": json.dumps(
                finite(detail), separators=(",", ":"), default=str, allow_nan=False
            ),
            "EventBusName": bus_name,
        }


class ResultPublisher:
    """Puts result events on the bus; tells which ones did not make it."""

    def __init__(self, bus_name: str, client_factory: Callable[[], Any] | None = None) -> None:
        self.bus_name = bus_name
        self._client_factory = client_factory or _events_client
        self._client: Any = None

    def publish(
        self, publications: list[Publication], in_time: Callable[[], bool] = lambda: True
    ) -> list[bool]:
        """One flag per publication: True when EventBridge accepted it. No call is started
        once ``in_time()`` says the invocation's time is spent."""
        entries = [p.entry(self.bus_name) for p in publications]
        accepted = [False] * len(entries)
        for start, chunk in _chunks(entries):
            if not in_time():
                break
            try:
                if self._client is None:
                    self._client = self._client_factory()
                answer = self._client.put_events(Entries=chunk)
            except Exception:
                continue
            for offset, item in enumerate(answer.get("Entries", [])):
                accepted[start + offset] = bool(item.get("EventId")) and not item.get("ErrorCode")
        return accepted


def _chunks(entries: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    chunks: list[tuple[int, list[dict[str, Any]]]] = []
    start, size = 0, 0
    current: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        entry_size = len(entry["Detail"]) + len(entry["DetailType"]) + len(SOURCE)
        if current and (len(current) == MAX_ENTRIES_PER_CALL or size + entry_size > MAX_CALL_BYTES):
            chunks.append((start, current))
            start, current, size = index, [], 0
        current.append(entry)
        size += entry_size
    if current:
        chunks.append((start, current))
    return chunks


def _events_client() -> Any:
    import boto3  # imported on first publish: keeps boto3 off the webhook's cold start

    return boto3.client("events")
