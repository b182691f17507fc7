"""``make deploy`` refuses early an environment that samconfig.toml holds no secret ARN for."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from devtools import deploy_check
from devtools import lambda_events as le

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:klaviyo-lead-actions/api-key-AbCdEf"
# What `sam deploy --guided --config-env dev` writes when its answers are saved.
GUIDED_DEV = f"""
version = 0.1
[dev.deploy.parameters]
stack_name = "klaviyo-lead-actions-dev"
parameter_overrides = "KlaviyoApiKeySecretArn=\\"{ARN}\\" TimeoutSeconds=\\"120\\""
[prod.deploy.parameters]
parameter_overrides = ["TimeoutSeconds=360"]
"""


def test_the_committed_environments_are_deployed_guided_first() -> None:
    config = tomllib.loads(deploy_check.SAMCONFIG.read_text())
    for environment in ("default", "dev", "prod"):
        found = deploy_check.problem(config, environment)
        assert found and f"make deploy ENV={environment} GUIDED=1" in found


def test_a_saved_arn_passes_and_only_for_its_environment() -> None:
    config = tomllib.loads(GUIDED_DEV)
    assert deploy_check.saved_parameters(config, "dev")["KlaviyoApiKeySecretArn"] == ARN
    assert deploy_check.problem(config, "dev") is None
    assert deploy_check.problem(config, "prod") is not None
    assert "has no environment 'staging'" in (deploy_check.problem(config, "staging") or "")
    after = deploy_check.problem(config, "prod", after_guided=True) or ""
    assert "did not save KlaviyoApiKeySecretArn" in after


@pytest.mark.parametrize(("guided", "code"), [("", 2), ("1", 0)])
def test_make_deploy_checks_before_it_builds(guided: str, code: int) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "deploy-check", "ENV=dev", f"GUIDED={guided}"],
        cwd=le.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stdout + done.stderr
    if code:
        assert "make deploy ENV=dev GUIDED=1" in done.stderr
