"""Results of queued leads, kept 24 hours for ``GET /results/{message_id}``.

A caller that posts to ``/<route>/async`` gets a message id; once the queue has finished the
lead, its result (the appended fields, nothing more of the lead) is stored here under that
id and answered for 24 hours. Before the lead is finished, and after, the answer is 404.
"""

from __future__ import annotations

import json
from typing import Any

from klaviyo_leads.aws.clients import DynamoDBTable
from klaviyo_leads.observability import quiet_libraries

RESULT_TTL_SECONDS = 24 * 3600
MAX_ITEMS_PER_WRITE = 25  # BatchWriteItem's limit


class ResultStore(DynamoDBTable):
    def put(self, results: list[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Store (message id, action, result fields); one flag per result: stored or not."""
        stored = [False] * len(results)
        expires = int(self.clock()) + RESULT_TTL_SECONDS
        for start in range(0, len(results), MAX_ITEMS_PER_WRITE):
            chunk = results[start : start + MAX_ITEMS_PER_WRITE]
            requests = [
                {
                    "PutRequest": {
                        "Item": {
                            "message_id": {"S": message_id},
                            "action": {"S": action},
                            "result": {"S": json.dumps(fields, separators=(",", ":"))},
                            "expires_at": {"N": str(expires)},
                        }
                    }
                }
                for message_id, action, fields in chunk
            ]
            try:
                answer = self.client.batch_write_item(RequestItems={self.table_name: requests})
            except Exception:
                continue
            left = {
                request["PutRequest"]["Item"]["message_id"]["S"]
                for request in answer.get("UnprocessedItems", {}).get(self.table_name, [])
            }
            for offset, (message_id, _, _) in enumerate(chunk):
                stored[start + offset] = message_id not in left
        return stored

    def keep(self, results: list[tuple[list[str], str, dict[str, Any]]]) -> list[bool]:
        """Store each result under each of its keys (a message id, a lead file's row); one
        flag per result: stored under every key or not."""
        flat = [(key, action, fields) for keys, action, fields in results for key in keys]
        stored = iter(self.put(flat))
        return [all([next(stored) for _ in keys]) for keys, _, _ in results]

    def get(self, message_id: str) -> dict[str, Any] | None:
        """The stored result, or None when there is none yet or it has expired."""
        item = self.client.get_item(
            TableName=self.table_name, Key={"message_id": {"S": message_id}}
        ).get("Item")
        if not item or int(item.get("expires_at", {}).get("N", "0")) <= self.clock():
            return None  # DynamoDB deletes expired items up to days late
        return {
            "message_id": message_id,
            "action": item["action"]["S"],
            "result": json.loads(item["result"]["S"]),
        }


_store: ResultStore | None = None


def store() -> ResultStore:
    global _store
    if _store is None:
        import os

        quiet_libraries()  # before the first DynamoDB call: results hold lead data
        _store = ResultStore(os.environ["RESULTS_TABLE_NAME"])
    return _store
