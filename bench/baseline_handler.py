"""The cold-start baseline: a Create Profile webhook handler written the common way.

A module-level boto3 Secrets Manager client, Klaviyo's official Python SDK (``klaviyo-api``),
Powertools ``Logger`` and ``Tracer``: what a typical Lambda talking to Klaviyo looks like.
The benchmark only times it from interpreter start to its first answer; it is not part of the
bundle. Its extra packages are in ``bench/requirements.txt``.

The SDK is pointed at the emulator with its own ``test_host`` option (no patching needed).
``KLAVIYO_BASE_URL`` and ``KLAVIYO_API_KEY_SECRET_ID`` are read like the bundle's functions
read them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from klaviyo_api import KlaviyoAPI

logger = Logger(service="klaviyo-lead-actions")
tracer = Tracer(service="klaviyo-lead-actions")
secrets = boto3.client("secretsmanager")

_klaviyo: KlaviyoAPI | None = None


def klaviyo() -> KlaviyoAPI:
    global _klaviyo
    if _klaviyo is None:
        secret = secrets.get_secret_value(SecretId=os.environ["KLAVIYO_API_KEY_SECRET_ID"])
        _klaviyo = KlaviyoAPI(
            secret["SecretString"],
            max_delay=60,
            max_retries=3,
            test_host=os.environ.get("KLAVIYO_BASE_URL", ""),
        )
    return _klaviyo


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    lead = json.loads(event.get("body") or "{}")
    attributes = {
        key: lead[key]
        for key in ("email", "phone_number", "first_name", "last_name", "title")
        if lead.get(key)
    }
    profile = klaviyo().Profiles.create_profile(
        {"data": {"type": "profile", "attributes": attributes}}
    )
    logger.info("Profile created", extra={"profile_id": profile.data.id})
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"outcome": "success", "id": profile.data.id}),
    }
