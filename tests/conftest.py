"""Fixtures shared by every test tier: the Klaviyo emulator, a runtime wired to it, AWS."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.aws import LocalStack, deploy_local_stack
from devtools.memory_dynamodb import memory_ledger
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.config import Settings
from klaviyo_leads.handlers import actions as entrypoint
from klaviyo_leads.klaviyo.client import KlaviyoClient
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.observability import count_klaviyo_call
from klaviyo_leads.runtime import Processed, Runtime

pytest_plugins = ["devtools.klaviyo_emulator.pytest_fixtures"]

# The local runner's trail mirror (devtools.trail), away from a developer's own .tools/trail;
# one per test process (the runners it starts inherit it), removed when the process ends.
os.environ["LOCAL_TRAIL_DIR"] = tempfile.mkdtemp(prefix="lead-trail-")
atexit.register(shutil.rmtree, os.environ["LOCAL_TRAIL_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "pk_test_emulator"
REGION = "us-east-1"


@pytest.fixture(autouse=True, scope="session")
def _own_serve_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite never touches a developer's running `make serve`: every serve it starts and
    every `invoke` it runs (subprocesses inherit this) use a state file of the suite's own,
    not .tools/serve.json (where one found a serve, invoke sent its event there)."""
    from devtools.serve_client import SERVE_STATE_ENV

    previous = os.environ.get(SERVE_STATE_ENV)
    os.environ[SERVE_STATE_ENV] = str(tmp_path_factory.mktemp("serve-state") / "serve.json")
    yield
    if previous is None:
        os.environ.pop(SERVE_STATE_ENV, None)
    else:
        os.environ[SERVE_STATE_ENV] = previous


@pytest.fixture(autouse=True)
def _quiet_powertools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "KlaviyoLeadActionsTest")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "klaviyo-lead-actions")


class Sleeps(list):
    """Records the waits the client asked for instead of waiting, on a virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.elapsed = 0.0

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.elapsed += seconds

    def clock(self) -> float:
        return time.monotonic() + self.elapsed


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def runtime(klaviyo_emulator, sleeps: Sleeps) -> Iterator[Runtime]:
    """A runtime talking to the emulator with a fixed key; no AWS involved."""
    settings = Settings(base_url=klaviyo_emulator.base_url, api_key_secret_id="unused")
    client = KlaviyoClient(
        settings.base_url,
        settings.api_revision,
        lambda force: API_KEY,
        sleep=sleeps,
        pacer=Pacer(clock=sleeps.clock),
        observer=count_klaviyo_call,
    )
    # The same create ledger as production, on an in-memory table, on the virtual clock.
    wall = sleeps.clock
    built = Runtime(settings=settings, client=client, ledger=memory_ledger(wall), wall=wall)
    entrypoint.reset_runtime(built)
    yield built
    entrypoint.reset_runtime()


@pytest.fixture
def run(runtime: Runtime):
    """``run(action, lead)`` -> the result fields; ``.last`` keeps the classified result."""

    def run_lead(action: str, lead: dict, remaining: float | None = None) -> dict:
        processed: Processed = runtime.process(ACTIONS[action], lead, remaining_seconds=remaining)
        run_lead.last = processed.result  # type: ignore[attr-defined]
        return processed.fields

    return run_lead


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """template.yaml deployed into moto (in this process), once per test process.

    A deployment takes about a second, so tests share it and put back what they change (the
    secret's value, messages, idempotency records) rather than deploy again. moto stays on
    for the rest of the process once a test has asked for the stack.
    """
    from moto import mock_aws

    with mock_aws():
        yield deploy_local_stack(API_KEY, name="klaviyo-lead-actions-test")


def reset_powertools_parameters() -> None:
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()
