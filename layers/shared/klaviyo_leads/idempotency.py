"""Exactly-once results for redelivered SQS messages, on Powertools' DynamoDB persistence.

A message is claimed (IN_PROGRESS) before its lead is processed and its result stored
(COMPLETED) after. If the function dies after Klaviyo answered, the redelivered message
finds the stored result and is answered from it, so its outcome does not change and no
second profile is created. Retryable results are released, so the retry really runs.
"""

from __future__ import annotations

from typing import Any

# SQS redelivers for at most maxReceiveCount x visibility timeout (5 x 2160 s by default).
DEFAULT_TTL_SECONDS = 6 * 3600


class InProgressElsewhere(Exception):
    """Another invocation holds this message right now; hand it back to the queue."""


class Idempotency:
    def __init__(
        self,
        table_name: str,
        action: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        boto3_client: Any = None,
    ) -> None:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
        )

        self._store = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=boto3_client)
        self._store.configure(
            IdempotencyConfig(event_key_jmespath="message_id", expires_after_seconds=ttl_seconds),
            key_prefix=f"klaviyo-lead-actions.{action}",
        )

    def claim(self, message_id: str, remaining_ms: int | None) -> dict[str, Any] | None:
        """None: the message is ours to process. A dict: its result from an earlier delivery."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
        )
        from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
            STATUS_CONSTANTS,
        )

        data = {"message_id": message_id}
        try:
            self._store.save_inprogress(data, remaining_time_in_millis=remaining_ms)
            return None
        except IdempotencyItemAlreadyExistsError as exc:
            record = exc.old_data_record or self._store.get_record(data)
        if record is not None and record.status == STATUS_CONSTANTS["COMPLETED"]:
            stored = record.response_json_as_dict()
            if isinstance(stored, dict):
                return stored
        raise InProgressElsewhere(message_id)

    def complete(self, message_id: str, result: dict[str, Any]) -> None:
        self._store.save_success({"message_id": message_id}, result=result)

    def release(self, message_id: str, reason: Exception) -> None:
        self._store.delete_record({"message_id": message_id}, exception=reason)
