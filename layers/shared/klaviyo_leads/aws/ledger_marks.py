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
    Record,
    item_key,
    number,
    number_of,
    record_of_item,
)

# Rounds of a batch call for what DynamoDB left unprocessed (it does under throttling).
UNPROCESSED_ROUNDS = 3


class MarkedTable(DynamoDBTable):
    def touch(self, identities: Iterable[str], seconds: float) -> bool:
        """A subscribe job, an unsubscribe job or an event may make a profile for these
        identities within ``seconds`` (Klaviyo applies them later): a batch's import must not
        take such a profile for its own. False when the marks could not all be kept."""
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
        for start in range(0, len(items), 25):  # BatchWriteItem's limit
            left: list[dict[str, Any]] = items[start : start + 25]
            for _ in range(UNPROCESSED_ROUNDS):
                try:
                    answer = self.client.batch_write_item(RequestItems={self.table_name: left})
                except Exception:
                    return False
                left = answer.get("UnprocessedItems", {}).get(self.table_name, [])
                if not left:
                    break
            if left:
                return False
        return True

    def touched(self, identities: Iterable[str]) -> set[str]:
        """Which of the identities such a write may still be making a profile for. Raises
        ``LedgerUnavailable``."""
        now = self.clock()
        return {
            item["id"]["S"].removeprefix(TOUCH_PREFIX)
            for item in self._get_many(TOUCH_PREFIX + i for i in identities)
            if number_of(item, "until", 0.0) + CLOCK_TOLERANCE_SECONDS > now
        }

    def creating(self, identities: Iterable[str]) -> dict[str, Record]:
        """The identities a create may still be making a profile for, each with its record:
        no profile recorded yet, and its hold running or an import job of its named (which
        may still be running at Klaviyo after the attempt ended). A write that may make a
        profile on the side waits for them. Raises ``LedgerUnavailable``."""
        held: dict[str, set[str]] = {}
        for item in self._get_many(PREFIX + i for i in identities):
            if owner := item.get("owner", {}).get("S"):
                held.setdefault(owner, set()).add(item["id"]["S"].removeprefix(PREFIX))
        now = self.clock()
        found: dict[str, Record] = {}
        for item in self._get_many(REQUEST_PREFIX + owner for owner in held):
            if number_of(item, "expiration", 0.0) < now:
                continue
            record = record_of_item(item)
            if record.profile_id or record.superseded_by:
                continue
            if record.running(now) or record.job_ref:
                # Only what the record itself names (an identity item left behind by a
                # record since replaced holds nobody up).
                for identity in held.get(record.owner, set()) & set(record.identities):
                    found[identity] = record
        return found

    def _get_many(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The items of these keys that exist (consistent reads, 100 keys a call; what
        DynamoDB left unprocessed asked again). Raises ``LedgerUnavailable``."""
        wanted = list(dict.fromkeys(keys))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 100):  # BatchGetItem's limit
            asked: dict[str, Any] = {
                "Keys": [item_key(k) for k in wanted[start : start + 100]],
                "ConsistentRead": True,
            }
            for _ in range(UNPROCESSED_ROUNDS):
                try:
                    answer = self.client.batch_get_item(RequestItems={self.table_name: asked})
                except Exception as exc:
                    raise LedgerUnavailable(type(exc).__name__) from exc
                found += answer.get("Responses", {}).get(self.table_name, [])
                asked = answer.get("UnprocessedKeys", {}).get(self.table_name) or {}
                if not asked:
                    break
            if asked:
                raise LedgerUnavailable("unprocessed")
        return found
