"""``python -m devtools.runner serve``: the API on 127.0.0.1, answered by the handlers."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools import lambda_events as le

STARTUP_SECONDS = 60


@dataclass
class Served:
    process: subprocess.Popen[str]
    base_url: str
    stdout: list[str]
    stderr: list[str]
    readers: list[threading.Thread]


def _reader(stream: Any, lines: list[str], found: queue.Queue[str] | None) -> None:
    for line in stream:
        lines.append(line)
        if found is not None and line.startswith("Listening on "):
            found.put(line.split()[2])


def _start(env_changes: dict[str, str | None]) -> Served:
    env = dict(os.environ)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.runner", "serve", "--port", "0"],
        cwd=le.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout: list[str] = []
    stderr: list[str] = []
    found: queue.Queue[str] = queue.Queue()
    readers = [
        threading.Thread(target=_reader, args=(process.stdout, stdout, found), daemon=True),
        threading.Thread(target=_reader, args=(process.stderr, stderr, None), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        base_url = found.get(timeout=STARTUP_SECONDS)
    except queue.Empty:
        process.kill()
        raise AssertionError("serve did not start:\n" + "".join(stdout + stderr)) from None
    return Served(process, base_url, stdout, stderr, readers)


def _stop(served: Served) -> int:
    served.process.terminate()
    code = served.process.wait(timeout=15)
    for reader in served.readers:
        reader.join(timeout=5)
    return code


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    running = _start({"KLAVIYO_API_KEY": None})
    yield running
    assert _stop(running) == 0, "".join(running.stderr)


def request(
    served: Served,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(served.base_url + path, body, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_start_banner_shows_curl_examples(served: Served) -> None:
    banner = "".join(served.stdout)
    assert f"curl -s -X POST {served.base_url}/create-profile" in banner
    assert "Klaviyo emulator: http://127.0.0.1:" in banner
    assert banner.rstrip().endswith("(Ctrl-C to stop)")
    assert "REAL Klaviyo" not in banner


def test_create_profile_answers_200_with_the_profile_id(served: Served) -> None:
    lead = {"email": "http.lead@example.com", "phone_1": "(646) 555-0150", "first_name": "Hal"}
    status, headers, body = request(served, "POST", "/create-profile", json.dumps(lead).encode())
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body["outcome"] == "success"
    assert body["id"]

    status, _, again = request(served, "POST", "/create-profile", json.dumps(lead).encode())
    assert (status, again["outcome"], again["id"]) == (422, "failure", body["id"])


def test_form_bodies_are_leads_too(served: Served) -> None:
    form = b"email=form.lead%40example.com&company.name=Acme&klaviyo.custom.source=curl"
    status, _, body = request(
        served, "POST", "/create-profile", form, "application/x-www-form-urlencoded"
    )
    assert (status, body["outcome"], body["custom"]) == (200, "success", {"source": "curl"})


def test_body_that_is_not_a_lead_is_400(served: Served) -> None:
    status, _, body = request(served, "POST", "/get-profiles", b"[1, 2]")
    assert (status, body["outcome"]) == (400, "error")


def test_unknown_routes_are_404_json(served: Served) -> None:
    status, _, body = request(served, "POST", "/delete-profile", b"{}")
    assert status == 404
    assert "POST /create-profile" in body["routes"]
    status, _, body = request(served, "GET", "/", content_type=None)
    assert status == 404
    status, headers, _ = request(served, "GET", "/create-profile", content_type=None)
    assert (status, headers["Allow"]) == (405, "POST")


def test_queue_route_answers_202_then_publishes_the_result(served: Served) -> None:
    lead = {"email": "queued.lead@example.com", "klaviyo": {"list_id": "Y6nRLr"}}
    status, _, body = request(
        served, "POST", "/subscribe-profile-to-list/queue", json.dumps(lead).encode()
    )
    assert status == 202
    assert body["accepted"] is True
    message_id = body["message_id"]

    deadline = time.monotonic() + 15
    mine: list[dict[str, Any]] = []
    while not mine and time.monotonic() < deadline:
        _, _, results = request(served, "GET", "/results", content_type=None)
        mine = [r for r in results["results"] if r["detail"].get("message_id") == message_id]
        time.sleep(0.2)
    assert mine, "no result published for the queued lead"
    detail = mine[0]["detail"]
    assert mine[0]["detail-type"] == "subscribe_profile_to_list result"
    assert detail["lead"] == lead
    assert detail["result"]["outcome"] == "success"


def test_real_klaviyo_mode_warns_and_keeps_the_real_base_url() -> None:
    running = _start({"KLAVIYO_API_KEY": "pk_not_a_real_key"})
    try:
        banner = "".join(running.stdout)
        assert "REAL Klaviyo: https://a.klaviyo.com" in banner
        # No request is sent: starting must not need Klaviyo at all.
    finally:
        assert _stop(running) == 0
    warning = "".join(running.stderr)
    assert "WARNING: KLAVIYO_API_KEY is set" in warning
    assert "REAL Klaviyo account" in warning
