"""The create ledger's marks of writes that may make a profile on the side, and what they read.

A subscribe or unsubscribe job, or an event, makes the profile it does not find, after
Klaviyo's 202; a queued batch's import must not take such a profile for its own create. The
write marks its identifiers (``create-touch#<identifier>:<hash>``) before it goes out and
then looks whether a create is at work on one of them (``creating``); a batch takes its
records and then reads the marks (``touched``). The rules are ``actions.create.adding``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from klaviyo_leads.aws.clients import DynamoDBTable
from klaviyo_leads.aws.ledger_records import (
    CLOCK_TOLERANCE_SECONDS,
    PREFIX,
    RECORD_TTL_SECONDS,
    REQUEST_PREFIX,
    TOUCH_PREFIX,
    LedgerUnavailable,
    item_key,
    number,
    number_of,
    record_of_item,
)


class MarkedTable(DynamoDBTable):
    def touch(self, identities: Iterable[str], seconds: float) -> bool:
        """A subscribe job, an unsubscribe job or an event may make a profile for these
        identities within ``seconds`` (Klaviyo applies them later): a batch's import must not
        take such a profile for its own. Best effort: False when it could not be kept."""
        until = self.clock() + seconds
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "id": {"S": TOUCH_PREFIX + identity},
                        "until": number(until),
                        "expiration": {"N": str(int(until + RECORD_TTL_SECONDS))},
                    }
                }
            }
            for identity in dict.fromkeys(identities)
        ]
        kept = True
        for start in range(0, len(items), 25):  # BatchWriteItem's limit
            try:
                answer = self.client.batch_write_item(
                    RequestItems={self.table_name: items[start : start + 25]}
                )
                kept = kept and not answer.get("UnprocessedItems")
            except Exception:
                kept = False
        return kept

    def touched(self, identities: Iterable[str]) -> set[str]:
        """Which of the identities such a write may still be making a profile for. Raises
        ``LedgerUnavailable``."""
        now = self.clock()
        return {
            item["id"]["S"].removeprefix(TOUCH_PREFIX)
            for item in self._get_many(TOUCH_PREFIX + i for i in identities)
            if number_of(item, "until", 0.0) + CLOCK_TOLERANCE_SECONDS > now
        }

    def creating(self, identities: Iterable[str]) -> set[str]:
        """Which of the identities a create still at work holds (its hold running, no profile
        recorded yet): a write that may make a profile on the side waits for it. Raises
        ``LedgerUnavailable``."""
        held: dict[str, set[str]] = {}
        for item in self._get_many(PREFIX + i for i in identities):
            if owner := item.get("owner", {}).get("S"):
                held.setdefault(owner, set()).add(item["id"]["S"].removeprefix(PREFIX))
        now = self.clock()
        found: set[str] = set()
        for item in self._get_many(REQUEST_PREFIX + owner for owner in held):
            if number_of(item, "expiration", 0.0) < now:
                continue
            record = record_of_item(item)
            if record.profile_id is None and record.running(now):
                found |= held.get(record.owner, set())
        return found

    def _get_many(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The items of these keys that exist (consistent reads, 100 keys a call). Raises
        ``LedgerUnavailable``."""
        wanted = list(dict.fromkeys(keys))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 100):  # BatchGetItem's limit
            asked = [item_key(k) for k in wanted[start : start + 100]]
            try:
                answer = self.client.batch_get_item(
                    RequestItems={self.table_name: {"Keys": asked, "ConsistentRead": True}}
                )
            except Exception as exc:
                raise LedgerUnavailable(type(exc).__name__) from exc
            if answer.get("UnprocessedKeys"):
                raise LedgerUnavailable("unprocessed")
            found += answer.get("Responses", {}).get(self.table_name, [])
        return found
