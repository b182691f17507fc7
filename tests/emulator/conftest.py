"""Fixtures for the emulator's own tests: a raw HTTP client and contract-aware helpers.

The emulator fixtures come from ``devtools.klaviyo_emulator.pytest_fixtures``. They are
imported here rather than listed in ``pytest_plugins``: pytest refuses ``pytest_plugins`` in
a conftest below the rootdir when the whole suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator, pytest_fixtures

# Re-exported so pytest finds them for this directory (see the module docstring).
klaviyo_emulator = pytest_fixtures.klaviyo_emulator
klaviyo_emulator_session = pytest_fixtures.klaviyo_emulator_session
pytest_configure = pytest_fixtures.pytest_configure


@pytest.fixture
def emu(klaviyo_emulator: KlaviyoEmulator) -> KlaviyoEmulator:
    return klaviyo_emulator


@pytest.fixture
def api(emu: KlaviyoEmulator) -> Api:
    return Api(emu.base_url)


@pytest.fixture
def bad_requests_ok(emu: KlaviyoEmulator) -> Iterator[None]:
    """For tests that send requests breaking the contract on purpose.

    The requests' violations are dropped, but every *response* (errors included) must still
    match the document.
    """
    yield
    response_problems = [v for v in emu.contract_violations if " response " in v]
    emu.clear_contract_violations()
    assert response_problems == []
