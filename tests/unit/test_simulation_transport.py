"""The simulation's in-process transport answers exactly as werkzeug's test client did: the
same status, headers and body from the emulator, for reads, writes and errors."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from werkzeug.test import Client

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.emulator import DEFAULT_API_KEY
from devtools.simulation.transport import InProcessKlaviyo

HEADERS = {
    "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "Accept": "application/vnd.api+json",
}
PROFILE = {"data": {"type": "profile", "attributes": {"email": "ada@example.com"}}}
REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", "/api/profiles", json.dumps(PROFILE).encode(), {"Content-Type": HEADERS["Accept"]}),
    ("POST", "/api/profiles", json.dumps(PROFILE).encode(), {"Content-Type": HEADERS["Accept"]}),
    ("GET", '/api/profiles?filter=equals(email,"ada@example.com")', None, {}),
    ("GET", "/api/profiles?page[size]=not-a-number", None, {}),
    ("GET", "/api/no-such-thing", None, {}),
    ("POST", "/api/profiles", b"{not json", {"Content-Type": HEADERS["Accept"]}),
    ("DELETE", "/api/profiles", None, {}),
]


def _emulator() -> KlaviyoEmulator:
    return KlaviyoEmulator(clock=lambda: 1_800_000_000.0, sleep=lambda seconds: None, seed=1)


def restart_error_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error's id is a fresh uuid4: the same ones for both answers of a request."""
    ids = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(ids), version=4))


def test_each_answer_is_the_test_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(_emulator().wsgi_app)
    transport = InProcessKlaviyo(
        _emulator(),
        point=lambda label: None,
        sleep=lambda seconds: None,
        latency=lambda: 0.0,
        fault_for=lambda method, path: None,
    )
    for method, target, body, extra in REQUESTS:
        path, _, query = target.partition("?")
        restart_error_ids(monkeypatch)
        expected = client.open(
            path, method=method, query_string=query, data=body, headers={**HEADERS, **extra}
        )
        restart_error_ids(monkeypatch)
        answer = transport.request(
            method, f"https://a.klaviyo.com{target}", body=body, headers={**HEADERS, **extra}
        )
        assert (answer.status, answer.headers, answer.data) == (
            expected.status_code,
            dict(expected.headers.items()),
            expected.get_data(),
        ), target


def test_every_dynamodb_operation_is_a_point_where_the_simulation_may_switch_or_fail() -> None:
    """A call the simulated table answered without a scheduling point would run atomically
    with what came before it: an ordering the fleet never guarantees, and no fault there."""
    from devtools.memory_dynamodb import MemoryDynamoDB
    from devtools.simulation.aws import _DynamoDB

    setting_up = {"create_table", "ensure_table", "items"}
    operations = {
        name
        for name, member in vars(MemoryDynamoDB).items()
        if callable(member) and not name.startswith("_") and name not in setting_up
    }
    assert "batch_get_item" in operations
    assert operations <= set(vars(_DynamoDB))
