"""Results of queued and scheduled work, published as EventBridge events (contract section 7)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from klaviyo_leads.aws.clients import OnFirstUse, boto3_client
from klaviyo_leads.lead.body import MAX_LEAD_NESTING, finite, flatten, nesting_exceeds

SOURCE = "klaviyo.lead-actions"
MAX_ENTRIES_PER_CALL = 10  # PutEvents' limit
MAX_CALL_BYTES = 250_000  # PutEvents allows 256 KB per call; keep a margin


# What a result event carries of its lead (the stack's ResultEventLead): the lead as received,
# or its keys and its identifiers hashed (who can read the bus: docs/results.md).
FULL_LEAD = "full"
KEYS_AND_HASHES = "keys-and-hashes"
LEAD_CONTENTS = (FULL_LEAD, KEYS_AND_HASHES)
# The identifiers hashed, as the lead names them (flat, canonical keys).
HASHED_IDENTIFIERS = ("email", "phone_1", "reference", "klaviyo.external_id", "klaviyo.id")


def keys_and_hashes(lead: Any) -> dict[str, Any]:
    """A lead as the keys it has and its identifiers' SHA-256 (hex, of the value trimmed,
    an email in lower case): enough to match a result to a lead the reader holds, and no
    more of the person."""
    if not isinstance(lead, Mapping):
        return {"keys": [], "identifiers": {}}
    flat = flatten(lead)
    hashed = {}
    for key in HASHED_IDENTIFIERS:
        value = flat.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            text = text.lower() if key == "email" else text
            if text:
                hashed[key] = hashlib.sha256(text.encode()).hexdigest()
    return {"keys": sorted(flat), "identifiers": hashed}


@dataclass
class Publication:
    action: str
    lead: Any
    result: dict[str, Any]
    message_id: str | None = None

    def entry(self, bus_name: str, lead_content: str = FULL_LEAD) -> dict[str, Any]:
        # A lead refused for its nesting cannot be written out (the stack would run out): null.
        lead = None if nesting_exceeds(self.lead, MAX_LEAD_NESTING) else self.lead
        if lead is not None and lead_content == KEYS_AND_HASHES:
            lead = keys_and_hashes(lead)
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


class ResultPublisher(OnFirstUse):
    """Puts result events on the bus; tells which ones did not make it."""

    def __init__(
        self,
        bus_name: str,
        client_factory: Callable[[], Any] | None = None,
        lead_content: str = FULL_LEAD,
    ) -> None:
        # boto3 is imported on the first publish: it stays off the webhook's cold start.
        super().__init__(client_factory or boto3_client("events"))
        self.bus_name = bus_name
        self.lead_content = lead_content

    def publish(
        self, publications: list[Publication], in_time: Callable[[], bool] = lambda: True
    ) -> list[bool]:
        """One flag per publication: True when EventBridge accepted it. No call is started
        once ``in_time()`` says the invocation's time is spent."""
        entries = [p.entry(self.bus_name, self.lead_content) for p in publications]
        accepted = [False] * len(entries)
        for start, chunk in _chunks(entries):
            if not in_time():
                break
            try:
                answer = self.client.put_events(Entries=chunk)
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
