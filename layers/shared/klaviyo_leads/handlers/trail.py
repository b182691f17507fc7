"""The trail writer function's handler: a CloudWatch Logs subscription event's trail records
filed in the trail bucket (``trail.delivery``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from klaviyo_leads.trail.delivery import batch_of, deliver

_s3: Any = None


def _client() -> Any:
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def lambda_handler(
    event: Mapping[str, Any], context: Any, s3: Callable[[], Any] = _client
) -> dict[str, Any]:
    """A CloudWatch Logs subscription event: its trail records into the bucket."""
    keys = deliver(s3(), os.environ["TRAIL_BUCKET"], batch_of(event))
    return {"objects": len(keys)}
