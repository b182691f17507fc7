"""S3 as the lead-file path writes it (an object in parts as it grows, JSON), the answers of
AWS calls it tells apart, and the AWS clients and stack settings it works with."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.config import Settings

PART_BYTES = 5 * 1024 * 1024  # multipart upload parts: S3's minimum, so the least memory
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
# Without a better bound, a row without a result this long after it was queued has left the
# queue for its dead-letter queue: every delivery's back-off (42.5 min) plus five timeouts.
DEFAULT_DEAD_LETTER_AFTER_SECONDS = 6 * 3600


class S3Writer:
    """An object written in parts as it grows: never more than a part in memory."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str) -> None:
        self.s3, self.bucket, self.key, self.content_type = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._upload_id is None:
            self._upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )["UploadId"]
        number = len(self._parts) + 1
        answer = self.s3.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._buffer,  # sent before it is cleared: no copy of the part
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()

    def close(self) -> None:
        if self._upload_id is None:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=bytes(self._buffer),
                ContentType=self.content_type,
            )
            return
        if self._buffer:
            self._flush()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )


def put_json(s3: Any, bucket: str, key: str, value: Any, **extra: Any) -> Any:
    body = json.dumps(value, indent=2, default=str).encode()
    return s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **extra)


def read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def version_args(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"NoSuchKey", "404", "NotFound"}


def precondition_failed(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@dataclass
class Services:
    """The AWS clients and the stack's settings the lead-file path works with."""

    s3: Any
    sqs: Any
    dynamodb: Any = None
    events: Any = None
    settings: Settings = field(default_factory=Settings)
    queue_urls: dict[str, str] = field(default_factory=dict)
    dead_letter_queue_urls: dict[str, str] = field(default_factory=dict)
    results_table: str | None = None
    bus_name: str | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    dead_letter_after_seconds: float = DEFAULT_DEAD_LETTER_AFTER_SECONDS
    # Klaviyo for a dry run's rows: a runtime per stream of calls (None: the check only).
    klaviyo: Callable[[], Any] | None = None
    dry_run_seconds: float = 600.0
    wall: Callable[[], float] = time.time
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Services:
        import os

        import boto3

        env = os.environ if env is None else env

        def by_action(prefix: str) -> dict[str, str]:
            return {
                name: env[f"{prefix}{camel(name)}"]
                for name in ACTIONS
                if env.get(f"{prefix}{camel(name)}")
            }

        from botocore.config import Config

        return cls(
            s3=boto3.client("s3"),
            # No retry by the SDK: one after a call that timed out could queue rows twice.
            # ``_send_batch`` retries what surely queued nothing.
            sqs=boto3.client("sqs", config=Config(retries={"total_max_attempts": 1})),
            dynamodb=boto3.client("dynamodb"),
            events=boto3.client("events"),
            settings=Settings.from_env(env),
            queue_urls=by_action("QUEUE_URL_"),
            dead_letter_queue_urls=by_action("DEAD_LETTER_QUEUE_URL_"),
            results_table=env.get("RESULTS_TABLE_NAME") or None,
            bus_name=env.get("RESULTS_EVENT_BUS_NAME") or None,
            max_file_bytes=int(env.get("LEAD_FILE_MAX_BYTES") or DEFAULT_MAX_FILE_BYTES),
            dead_letter_after_seconds=float(
                env.get("LEAD_FILE_DEAD_LETTER_AFTER_SECONDS") or DEFAULT_DEAD_LETTER_AFTER_SECONDS
            ),
            klaviyo=_klaviyo(env),
        )


def _klaviyo(env: Mapping[str, str]) -> Callable[[], Any] | None:
    """Runtimes for a dry run's rows, when the stack gives the splitter Klaviyo's key."""
    from klaviyo_leads.lead_files.dry_run import runtimes

    return runtimes(env)


def camel(action: str) -> str:
    """``subscribe_profile_to_list`` -> ``SubscribeProfileToList`` (the stack's logical ids)."""
    return "".join(part.capitalize() for part in action.split("_"))
