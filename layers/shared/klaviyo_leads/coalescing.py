"""Packing an SQS batch's leads into bulk Klaviyo calls (filled in by the throughput work)."""

from __future__ import annotations

from typing import Any

from .actions import Action
from .runtime import Processed, Runtime


def prepare_batch(
    runtime: Runtime, action: Action, records: list[Any], lambda_context: Any
) -> dict[str, Processed]:
    """Results computed in bulk, by message id; records left out are processed one by one."""
    return {}
