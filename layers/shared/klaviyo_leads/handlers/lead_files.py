"""The lead-file functions' handlers: the splitter (a new object in the bucket) and the
assembler (on its schedule). Mirror files are the mirror function's: the splitter leaves them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from klaviyo_leads.lead_files.assembler import look
from klaviyo_leads.lead_files.bucket import is_own_output, objects_of
from klaviyo_leads.lead_files.splitter import take_file
from klaviyo_leads.lead_files.storage import Services
from klaviyo_leads.mirror.files import takes
from klaviyo_leads.observability import flush_counts, metrics

_services: Services | None = None


def services() -> Services:
    """The container's clients and settings, built from the environment on first use."""
    global _services
    if _services is None:
        _services = Services.from_env()
    return _services


def _observed(handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> Any:
    """The function's metrics (LeadFileRunsFailed and the like), written as the actions' are."""

    def observed(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return handler(event, context)
        finally:
            flush_counts()

    return metrics.log_metrics(observed)


@_observed
def split_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A new object in the bucket: check it, report, queue its rows."""
    taken = []
    for bucket, key, version_id in objects_of(event):
        if is_own_output(key) or key.endswith("/"):
            continue
        if takes(services().s3, bucket, key, version_id):
            continue
        report = take_file(services(), bucket, key, version_id)
        taken.append(
            {
                "key": key,
                "run_id": report.run_id,
                "accepted": report.accepted,
                "taken_before": report.again,
            }
        )
    return {"files": taken}


@_observed
def assemble_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """On the schedule: progress of every open run, and the results of finished ones."""
    return {"runs": look(services(), os.environ["LEAD_FILES_BUCKET"])}
