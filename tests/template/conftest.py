"""Fixtures of the infrastructure tests (tests/template/)."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.aws import LocalStack, deploy_local_stack, load_template, translated_template
from tests.conftest import API_KEY, REGION
from tests.template.cfn_template import TEMPLATE

KMS_KEY_ARN = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXTENSION_LAYER_ARN = (
    f"arn:aws:lambda:{REGION}:177933569100:layer:AWS-Parameters-and-Secrets-Lambda-Extension:12"
)
# One action with its own queue concurrency and reserved concurrency: (maximum, reserved).
OWN_CONCURRENCY = {"create_profile": (7, 12)}
# Every optional feature switched the other way, and shorter timeouts. (Not the results webhook:
# moto cannot build EventBridge connections; test_template_invariants.py checks it.)
OPTIONS = {
    "KlaviyoApiKeySecretKmsKeyArn": KMS_KEY_ARN,
    "SecretsExtensionLayerArn": EXTENSION_LAYER_ARN,
    "EnableTracing": "true",
    "ApiAuthType": "AWS_IAM",
    "TimeoutSeconds": "60",
    "QueueVisibilityTimeoutSeconds": "360",
    "AlarmEmail": "alarms@example.com",
    "KlaviyoRateLimitShare": "40",
    "CreateProfileMaximumConcurrency": str(OWN_CONCURRENCY["create_profile"][0]),
    "CreateProfileReservedConcurrency": str(OWN_CONCURRENCY["create_profile"][1]),
}


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    """template.yaml as data, intrinsics in their JSON form."""
    return load_template(TEMPLATE)


@pytest.fixture(scope="session")
def translated() -> dict[str, Any]:
    """template.yaml as CloudFormation holds it after SAM's transform."""
    return translated_template(TEMPLATE)


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> LocalStack:
    """The stack with the parameters' defaults, as `sam deploy --guided` proposes them."""
    return local_stack


@pytest.fixture(scope="session")
def options_stack(local_stack: LocalStack) -> LocalStack:
    """A second stack in the same moto, with OPTIONS."""
    return deploy_local_stack(API_KEY, name="klaviyo-lead-actions-options", parameters=OPTIONS)
