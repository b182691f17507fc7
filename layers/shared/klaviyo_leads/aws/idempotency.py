"""Exactly-once results for redelivered SQS messages, on Powertools' idempotency utility.

A message's lead is processed once: its result is stored (COMPLETED) in DynamoDB, and a
redelivered message is answered from it, so its outcome does not change and no second profile
is created. A retryable result is handed back as an exception, which releases the claim, so
the retry really runs.

The SQS engine claims a message before its lead runs (a whole batch before one bulk call, which
Powertools' ``@idempotent_function`` cannot express), so it uses Powertools' persistence layer
directly, with the decorator's keys and records, through ``claim``/``complete``/``release``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klaviyo_leads.aws.queue import LEAD_FILE_ROW, LEAD_FILE_RUN
from klaviyo_leads.observability import logger

# SQS redelivers for at most maxReceiveCount x visibility timeout (5 x 2160 s by default).
DEFAULT_TTL_SECONDS = 6 * 3600
KEY_PREFIX = "klaviyo-lead-actions"


# A message's key: its id; for a lead file's row, the row (``aws.queue.lead_file_row_key``), so
# the row is processed once however many messages carry it (a batch sent again by the splitter).
_RUN = f"messageAttributes.{LEAD_FILE_RUN}.stringValue"
_ROW = f"messageAttributes.{LEAD_FILE_ROW}.stringValue"
MESSAGE_KEY_JMESPATH = f"{_RUN} && {_ROW} && join(':', ['lead-file', {_RUN}, {_ROW}]) || messageId"


class InProgressElsewhere(Exception):
    """Another invocation holds this message right now; hand it back to the queue."""


class Idempotency:
    """One action's idempotency records, keyed by SQS message id (a lead file's row by its
    row: ``MESSAGE_KEY_JMESPATH``)."""

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

        self.config = IdempotencyConfig(
            event_key_jmespath=MESSAGE_KEY_JMESPATH, expires_after_seconds=ttl_seconds
        )
        self.key_prefix = f"{KEY_PREFIX}.{action}"
        self._store = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=boto3_client)
        self._store.configure(self.config, key_prefix=self.key_prefix)

    def claim(self, record: dict[str, Any], remaining_ms: int | None) -> dict[str, Any] | None:
        """None: the message is ours to process. A dict: its result from an earlier delivery."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
        )
        from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
            STATUS_CONSTANTS,
        )

        try:
            self._store.save_inprogress(record, remaining_time_in_millis=remaining_ms)
            return None
        except IdempotencyItemAlreadyExistsError as exc:
            stored = exc.old_data_record or self._store.get_record(record)
        if stored is not None and stored.status == STATUS_CONSTANTS["COMPLETED"]:
            result = stored.response_json_as_dict()
            if isinstance(result, dict):
                return result
        raise InProgressElsewhere(record.get("messageId"))

    def complete(self, record: dict[str, Any], result: dict[str, Any]) -> None:
        self._store.save_success(record, result=result)

    def release(self, record: dict[str, Any], reason: Exception) -> None:
        self._store.delete_record(record, exception=reason)


# -- webhook repeats -----------------------------------------------------------------------

# A repeat of a request with the same Idempotency-Key within this long gets the first answer.
REQUEST_TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
# The header that tells a caller its answer is the first request's, given again.
REPLAYED_HEADER = "Idempotent-Replayed"


class KeyReused(Exception):
    """The Idempotency-Key came with a different request before."""


class RecordsUnavailable(Exception):
    """The idempotency table could not be reached before the request ran: nothing was done."""


class _NotKept(Exception):
    """An answer not to keep (a retryable error): the repeat should really try again."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("not kept")
        self.answer = answer


class Requests:
    """API requests made idempotent by the caller's ``Idempotency-Key`` header.

    The first answer, status included, is kept 24 hours on the idempotency table (Powertools'
    ``idempotent_function``): a repeat gets it without calling Klaviyo, marked with the header
    ``Idempotent-Replayed: true``, and a repeat while
    the first is still running is told so. A retryable answer is not kept, so the repeat
    really runs; the key is the lead's origin, so what the first attempt did is the repeat's
    own (a create's ledger record; an event's unique id).
    """

    def __init__(self, table_name: str, action: str, boto3_client: Any = None) -> None:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
        )

        self.config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="request",
            expires_after_seconds=REQUEST_TTL_SECONDS,
        )
        self.key_prefix = f"{KEY_PREFIX}.{action}.request"
        self._store = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=boto3_client)
        self._store.configure(self.config, key_prefix=self.key_prefix)

    def answer(
        self,
        key: str,
        request: dict[str, Any],
        respond: Callable[[], tuple[dict[str, Any], bool]],
    ) -> dict[str, Any]:
        """The answer to keep under ``key``: ``respond()`` gives (answer, worth keeping)."""
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        produced: list[dict[str, Any]] = []

        def run(data: dict[str, Any]) -> dict[str, Any]:
            answer, keep = respond()
            produced.append(answer)
            if not keep:
                raise _NotKept(answer)
            return answer

        decorated = idempotent_function(
            data_keyword_argument="data",
            persistence_store=self._store,
            config=self.config,
            key_prefix=self.key_prefix,
        )(run)
        try:
            answer: dict[str, Any] = decorated(data={"key": key, "request": request})
        except _NotKept as not_kept:
            return not_kept.answer
        except IdempotencyAlreadyInProgressError as exc:
            raise InProgressElsewhere(key) from exc
        except IdempotencyValidationError as exc:
            raise KeyReused(key) from exc
        except IdempotencyPersistenceLayerError as exc:
            if not produced:
                raise RecordsUnavailable(key) from exc
            # The request ran but its answer could not be kept: give it, and let a repeat
            # run again rather than wait on a record that says "in progress".
            self._forget(key, request)
            return produced[-1]
        if not produced:  # the kept answer, not this request's: say so
            headers = {**(answer.get("headers") or {}), REPLAYED_HEADER: "true"}
            answer = {**answer, "headers": headers}
        return answer

    def _forget(self, key: str, request: dict[str, Any]) -> None:
        try:
            self._store.delete_record(
                data={"key": key, "request": request}, exception=RuntimeError("not kept")
            )
        except Exception as exc:  # the record expires with the invocation's time
            logger.warning(
                "A keyed request's record could not be removed",
                extra={"error_type": type(exc).__name__},
            )
