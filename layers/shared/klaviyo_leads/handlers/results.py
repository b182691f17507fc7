"""The get_result function's handler: ``GET /results/{message_id}``, answered from the results
kept 24 hours (``aws.result_store``)."""

from __future__ import annotations

import json
import re
from typing import Any

from klaviyo_leads.aws.result_store import store
from klaviyo_leads.observability import logger

# What a message id can be: SQS's are UUIDs (36 characters); at most 100 printable ASCII
# characters, no spaces. Anything else is answered 400 before DynamoDB sees it (which refuses a
# key over 2048 bytes with an error the function would not survive).
MAX_MESSAGE_ID_LENGTH = 100
_MESSAGE_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_MESSAGE_ID_LENGTH}}}")
NO_ERRORS: dict[str, list[str]] = {"id": [], "code": [], "title": [], "detail": []}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``GET /results/{message_id}``: the result of a queued lead, or 404."""
    message_id = str((event.get("pathParameters") or {}).get("message_id") or "")
    if message_id and not _MESSAGE_ID.fullmatch(message_id):
        reason = f"The message id must be 1 to {MAX_MESSAGE_ID_LENGTH} printable ASCII characters"
        return _answer(400, {"message_id": None, **_error(reason)})
    found = store().get(message_id) if message_id else None
    if found is None:
        body: dict[str, Any] = {
            "message_id": message_id or None,
            **_error("No result for this message id: not finished yet, or older than 24 hours"),
        }
        return _answer(404, body)
    return _answer(200, found)


def _error(reason: str) -> dict[str, Any]:
    """A result's fields for an answer that is not a lead's result (contract section 6)."""
    return {"outcome": "error", "reason": reason, "errors": NO_ERRORS}


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
