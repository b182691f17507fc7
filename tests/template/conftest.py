"""Fixtures of the infrastructure tests (tests/template/)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.template.cfn_template import (
    ACTIONS,
    REGION,
    SECRET_ARN,
    load_samconfig,
    load_template,
    sam_transform,
    samconfig_environments,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`action` runs a test once per lead action, `samconfig_env` once per samconfig.toml env."""
    if "action" in metafunc.fixturenames:
        metafunc.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
    if "samconfig_env" in metafunc.fixturenames:
        metafunc.parametrize("samconfig_env", samconfig_environments())


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="session")
def samconfig() -> dict[str, Any]:
    return load_samconfig()


@pytest.fixture(scope="session")
def aws_environment() -> Iterator[None]:
    """Placeholder credentials and a region, so nothing can reach a real account."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_SESSION_TOKEN", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        yield


@pytest.fixture(scope="session")
def transformed_template(aws_environment: None, sam_template: dict[str, Any]) -> dict[str, Any]:
    """template.yaml as plain CloudFormation, with the default parameters."""
    return sam_transform(sam_template, {"KlaviyoApiKeySecretArn": SECRET_ARN})
