"""The mirror function's handler: a new object in the lead-files bucket, its list mirrored when
it is a mirror file."""

from __future__ import annotations

import os
from typing import Any

from klaviyo_leads.config import Settings
from klaviyo_leads.lead_files.bucket import objects_of
from klaviyo_leads.mirror.files import takes
from klaviyo_leads.mirror.sync import MirrorServices, max_removal_share, stream_contexts, take_file

_services: MirrorServices | None = None


def services() -> MirrorServices:
    """The container's: S3, and Klaviyo as the actions' runtime has it (key, pacer, share)."""
    global _services
    if _services is None:
        import boto3

        from klaviyo_leads.aws.secrets import ApiKeyProvider

        settings = Settings.from_env()
        api_key = ApiKeyProvider(settings.api_key_secret_id)  # read once, for every stream
        _services = MirrorServices(
            boto3.client("s3"), stream_contexts(settings, api_key), max_removal_share(os.environ)
        )
    return _services


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A new object in the lead-files bucket: mirror its list when it is a mirror file."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds = remaining() / 1000 if callable(remaining) else 840.0
    taken = []
    for bucket, key, version_id in objects_of(event):
        if key.endswith("/") or not takes(services().s3, bucket, key, version_id):
            continue
        report = take_file(services(), bucket, key, version_id, seconds)
        taken.append({"key": key, "accepted": report["accepted"], "dry_run": report["dry_run"]})
    return {"files": taken}
