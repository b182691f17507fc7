"""The trail writer: files the functions' trail records in the trail bucket, by action and day.

CloudWatch Logs hands the function the lines of an action's log group that its subscription
filter selects (``{ $.trail = 1 }``: the records of ``trail``), gzipped and base64-encoded as
a subscription event. Each batch becomes one gzipped JSON Lines object per action and day under
``trail/action=<action>/day=<YYYY-MM-DD>/``, the layout the Athena table reads (partition
projection, no crawler). The object's key is made of the log stream and the batch's first event
id: CloudWatch Logs retrying a batch writes the same objects again, not a second copy.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from klaviyo_leads.trail.records import VERSION

PREFIX = "trail/"
_ACTION = re.compile(r"^[a-z][a-z_]{0,63}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def batch_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudWatch Logs batch a subscription event carries."""
    data = base64.b64decode(event["awslogs"]["data"])
    batch: dict[str, Any] = json.loads(gzip.decompress(data))
    return batch


def records_of(messages: Iterable[str]) -> list[dict[str, Any]]:
    """The trail records among log lines; any other line (there should be none) is skipped."""
    records = []
    for message in messages:
        try:
            record = json.loads(message)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("trail") == VERSION:
            records.append(record)
    return records


def partition_of(record: Mapping[str, Any]) -> tuple[str, str]:
    """(action, day) of a record; a value that cannot name a folder goes under "unknown"."""
    action, day = str(record.get("action") or ""), str(record.get("day") or "")
    return (
        action if _ACTION.match(action) else "unknown",
        day if _DAY.match(day) else "unknown",
    )


def objects_of(batch: Mapping[str, Any], prefix: str = PREFIX) -> dict[str, bytes]:
    """Key -> gzipped JSON Lines, one object per action and day of the batch."""
    events = [e for e in batch.get("logEvents") or [] if isinstance(e, Mapping)]
    if batch.get("messageType") != "DATA_MESSAGE" or not events:
        return {}  # CloudWatch Logs' CONTROL_MESSAGE checks the destination: nothing to file
    by_partition: dict[tuple[str, str], list[str]] = {}
    for record in records_of(str(e.get("message", "")) for e in events):
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        by_partition.setdefault(partition_of(record), []).append(line)
    stream = _UNSAFE.sub("-", str(batch.get("logStream") or "stream"))[-80:]
    name = f"{stream}-{events[0].get('id', '0')}.json.gz"
    return {
        f"{prefix}action={action}/day={day}/{name}": gzip.compress(
            ("\n".join(lines) + "\n").encode(), mtime=0
        )
        for (action, day), lines in by_partition.items()
    }


def deliver(s3: Any, bucket: str, batch: Mapping[str, Any], prefix: str = PREFIX) -> list[str]:
    """Write the batch's objects; their keys. An S3 failure raises: the invocation fails and
    is retried (Lambda's asynchronous retries), then lands in the dead-letter queue (alarm)."""
    written = []
    for key, body in objects_of(batch, prefix).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        written.append(key)
    return written
