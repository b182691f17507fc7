"""pytest fixtures for tests that talk to the Klaviyo emulator.

``klaviyo_emulator`` is function-scoped: each test gets empty state, Klaviyo's default
account settings, rate limits counted but not enforced, the default key
``pk_test_emulator`` with every scope, and (when Klaviyo's OpenAPI document is
next to the repository) contract validation. A test whose traffic violates the document fails
at teardown; mark it ``@pytest.mark.klaviyo_contract_violations_allowed`` when it sends
invalid requests on purpose. One server is shared by the session and reset between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .contract import default_spec_path
from .emulator import KlaviyoEmulator

ALLOW_VIOLATIONS_MARKER = "klaviyo_contract_violations_allowed"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_VIOLATIONS_MARKER}: the test sends requests that break Klaviyo's OpenAPI "
        "contract on purpose; do not fail it for contract violations",
    )


@pytest.fixture(scope="session")
def klaviyo_emulator_session() -> Iterator[KlaviyoEmulator]:
    spec = default_spec_path()
    emulator = KlaviyoEmulator(openapi_path=spec if spec.exists() else None)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def klaviyo_emulator(
    klaviyo_emulator_session: KlaviyoEmulator, request: pytest.FixtureRequest
) -> Iterator[KlaviyoEmulator]:
    emulator = klaviyo_emulator_session
    emulator.reset()
    yield emulator
    violations = emulator.contract_violations
    emulator.reset()
    if violations and request.node.get_closest_marker(ALLOW_VIOLATIONS_MARKER) is None:
        listing = "\n  ".join(violations)
        pytest.fail(f"Klaviyo OpenAPI contract violations:\n  {listing}", pytrace=False)
