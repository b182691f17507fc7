"""``python -m devtools.runner serve``: the API on 127.0.0.1, answered by the handlers."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import socket
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
FORM = "application/x-www-form-urlencoded"


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


def _start(env_changes: dict[str, str | None], *args: str) -> Served:
    env = dict(os.environ)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.runner", "serve", "--port", "0", *args],
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
def serve_state(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where this module's server says where it listens (not the one a developer's serve uses)."""
    return str(tmp_path_factory.mktemp("serve") / "serve.json")


@pytest.fixture(scope="module")
def served(serve_state: str) -> Iterator[Served]:
    running = _start({"KLAVIYO_API_KEY": None, "LOCAL_SERVE_STATE_FILE": serve_state})
    yield running
    assert _stop(running) == 0, "".join(running.stderr)
    assert not os.path.exists(serve_state), "serve removes its state file when it stops"


def _invoke(serve_state: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_API_KEY"}
    env["LOCAL_SERVE_STATE_FILE"] = serve_state
    return subprocess.run(
        [sys.executable, "-m", "devtools.runner", "invoke", *args],
        cwd=le.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invoke_runs_against_the_running_serve_in_seconds(served: Served, serve_state: str) -> None:
    started = time.monotonic()
    done = _invoke(serve_state, "create_profile", "events/create_profile/sqs.json")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"against the running make serve at {served.base_url}" in done.stderr
    assert json.loads(done.stdout) == {"batchItemFailures": []}
    assert elapsed < 5, f"make invoke took {elapsed:.1f} s against a running serve"
    # The same emulator: the profile the event file created is there for the served API.
    lead = json.dumps({"email": "marcus.lee@example.com"}).encode()
    status, _, body = request(served, "POST", "/create-profile", lead)
    assert (status, body["outcome"]) == (422, "failure"), body


def test_invoke_without_its_event_file_says_so_in_one_line(serve_state: str) -> None:
    done = _invoke(serve_state, "create_profile", "events/create_profile/no-such.json")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "no event file events/create_profile/no-such.json" in done.stderr


def request(
    served: Served,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, dict[str, str], Any]:
    """An HTTP request with exactly these headers (urllib would add a form Content-Type)."""
    headers = {"Content-Type": content_type} if content_type else {}
    host, port = served.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, dict(response.headers), json.loads(response.read())
    finally:
        connection.close()


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
    status, _, body = request(served, "POST", "/create-profile", form, FORM)
    assert (status, body["outcome"], body["custom"]) == (200, "success", {"source": "curl"})


def test_body_that_is_not_a_lead_is_400(served: Served) -> None:
    status, _, body = request(served, "POST", "/get-profiles", b"[1, 2]")
    assert (status, body["outcome"]) == (400, "error")


def test_unknown_routes_are_404_json(served: Served) -> None:
    status, _, body = request(served, "POST", "/erase-everything", b"{}")
    assert status == 404
    assert "POST /create-profile" in body["routes"]
    status, _, body = request(served, "GET", "/", content_type=None)
    assert status == 404
    status, headers, _ = request(served, "GET", "/create-profile", content_type=None)
    assert (status, headers["Allow"]) == (405, "POST")


def published(served: Served, message_id: str) -> dict[str, Any]:
    """The result event queued work published for this message (waits for the poller)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _, _, results = request(served, "GET", "/_local/results", content_type=None)
        mine = [r for r in results["results"] if r["detail"].get("message_id") == message_id]
        if mine:
            return mine[0]  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"no result published for message {message_id}")


def test_get_results_message_id_answers_a_queued_lead_as_deployed(served: Served) -> None:
    lead = json.dumps({"email": "polled.lead@example.com", "klaviyo": {"list_id": "Y6nRLr"}})
    status, _, body = request(served, "POST", "/subscribe-profile-to-list/async", lead.encode())
    assert status == 202, body
    message_id = body["message_id"]
    deadline = time.monotonic() + 15
    while True:
        status, _, answer = request(served, "GET", f"/results/{message_id}", content_type=None)
        if status != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200, answer
    assert answer["message_id"] == message_id
    assert answer["action"] == "subscribe_profile_to_list"
    assert answer["result"]["outcome"] == "success"
    status, _, _ = request(served, "GET", "/results/no-such-message", content_type=None)
    assert status == 404
    # The local listing is named as local: the deployed API has no GET /results.
    status, _, body = request(served, "GET", "/results", content_type=None)
    assert status == 404 and "GET /_local/results" in body["routes"]


def test_async_route_answers_202_then_publishes_the_result(served: Served) -> None:
    lead = {"email": "queued.lead@example.com", "klaviyo": {"list_id": "Y6nRLr"}}
    status, _, body = request(
        served, "POST", "/subscribe-profile-to-list/async", json.dumps(lead).encode()
    )
    assert status == 202
    assert body["accepted"] is True

    event = published(served, body["message_id"])
    assert event["detail-type"] == "subscribe_profile_to_list result"
    assert event["detail"]["result"]["outcome"] == "success"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (FORM, b"email=async.form%40example.com&first_name=Flo"),
        (FORM, b'{"email": "async.curl@example.com"}'),
        ("text/plain", b'{"email": "async.text@example.com"}'),
        (None, b'{"email": "async.none@example.com"}'),
    ],
    ids=["form", "curl JSON as a form", "text/plain", "no content type"],
)
def test_async_route_takes_what_the_sync_route_takes(
    served: Served, content_type: str | None, body: bytes
) -> None:
    status, _, answer = request(served, "POST", "/create-profile/async", body, content_type)
    assert (status, answer["accepted"]) == (202, True)
    event = published(served, answer["message_id"])
    assert event["detail"]["result"]["outcome"] == "success", event["detail"]["result"]


def test_async_route_refuses_multipart_and_empty_bodies_at_once(served: Served) -> None:
    multipart = b'--x\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.c\r\n--x--'
    status, _, body = request(
        served, "POST", "/create-profile/async", multipart, "multipart/form-data; boundary=x"
    )
    # The bodies are the function's, as deployed: results, and nothing accepted.
    no_errors = {"id": [], "code": [], "title": [], "detail": []}
    assert (status, body) == (
        415,
        {
            "accepted": False,
            "outcome": "error",
            "reason": (
                "The request body must be JSON, a form or text/plain, not multipart/form-data"
            ),
            "errors": no_errors,
        },
    )
    status, _, body = request(served, "POST", "/create-profile/async", b"")
    assert (status, body["accepted"], body["outcome"]) == (400, False, "error")
    assert body["reason"] and body["errors"] == no_errors


WAF_TOO_LARGE = {
    "outcome": "error",
    "reason": "Request body is too large",
    "errors": {"id": [], "code": [], "title": [], "detail": []},
}


@pytest.mark.parametrize("size", [65_537, 100_000, 10_485_761])
def test_a_body_over_the_deployed_limit_is_the_web_acls_413(served: Served, size: int) -> None:
    """As deployed: the web ACL refuses a body over MaxRequestBodyBytes (64 KiB by default)
    with 413 before API Gateway or a function sees it (100 kB was answered 200, 1 MB 400)."""
    for path in ("/create-profile", "/create-profile/async"):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        got, body = _raw(served, head.encode() + b"{}")
        assert (got, json.loads(body)) == (413, WAF_TOO_LARGE), path


def test_a_body_at_the_deployed_limit_reaches_the_function(served: Served) -> None:
    lead = {"email": "at.the.limit@example.com", "note": ""}
    lead["note"] = "x" * (65_536 - len(json.dumps(lead)))
    data = json.dumps(lead).encode()
    assert len(data) == 65_536
    status, _, body = request(served, "POST", "/create-profile", data)
    assert (status, body["outcome"]) == (200, "success"), body


def test_no_body_and_an_empty_body_get_one_answer(served: Served) -> None:
    """curl -X POST (no Content-Length: no body) and curl -d '' (Content-Length: 0)."""
    none, none_body = _raw(served, b"POST /create-profile HTTP/1.1\r\nHost: x\r\n\r\n")
    empty, empty_body = _raw(
        served, b"POST /create-profile HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert (none, json.loads(none_body)) == (empty, json.loads(empty_body))
    assert (empty, json.loads(empty_body)["reason"]) == (400, "The request body is empty")


def test_async_is_the_one_queue_route(served: Served) -> None:
    status, _, body = request(served, "POST", "/create-profile/queue", b"{}")
    assert status == 404
    assert "POST /create-profile/async" in body["routes"]
    assert "/queue" not in "".join(served.stdout)


def _raw(served: Served, request_bytes: bytes) -> tuple[int, bytes]:
    host, port = served.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_a_chunked_body_is_read(served: Served) -> None:
    host, port = served.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    parts = [b'{"email": "chunked', b'.lead@example.com"}']
    connection.request(
        "POST",
        "/create-profile",
        body=iter(parts),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["outcome"]) == (200, "success")
    connection.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Content-Length: abc\r\n", 400),
        (b"Content-Length: -5\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n", 400),  # the body is not in chunks
    ],
    ids=["not a number", "negative", "bad chunks"],
)
def test_unreadable_lengths_get_a_clear_answer_not_a_traceback(
    served: Served, headers: bytes, status: int
) -> None:
    got, body = _raw(
        served,
        b"POST /create-profile HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + b'{"a": 1}',
    )
    assert got == status
    # API Gateway's front end answers these before it knows the API: no gateway response
    # type shapes them, so its own {"message": ...} stays.
    assert json.loads(body)["message"]
    time.sleep(0.2)
    assert "Traceback" not in "".join(served.stderr)


def test_a_port_in_use_is_one_line_and_exit_code_1(served: Served) -> None:
    port = served.base_url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "devtools.runner", "serve", "--port", port],
        cwd=le.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"port {port} on 127.0.0.1 is already in use" in line


def _emulator(served: Served, method: str, path: str, body: Any = None) -> None:
    (base,) = re.findall(r"Klaviyo emulator: (\S+)", "".join(served.stdout))
    data = json.dumps(body).encode() if body is not None else None
    urllib.request.urlopen(urllib.request.Request(base + path, data, method=method), timeout=10)


def test_a_handed_back_lead_says_when_it_comes_back(served: Served) -> None:
    _emulator(served, "POST", "/_emulator/faults", {"status": 503, "times": 10})
    try:
        status, _, body = request(
            served, "POST", "/create-profile/async", b"email=later%40example.com", FORM
        )
        assert status == 202
        deadline = time.monotonic() + 30
        line = ""
        while not line and time.monotonic() < deadline:
            found = [x for x in served.stderr if body["message_id"] in x and "handed back" in x]
            line = found[0] if found else ""
            time.sleep(0.2)
    finally:
        _emulator(served, "DELETE", "/_emulator/faults")
    assert re.search(r"handed back; retried in 2160 s \(at \d\d:\d\d:\d\d", line), line
    assert "delivery 1 of 5" in line


def test_serve_output_has_no_metric_documents_or_warnings(served: Served) -> None:
    request(served, "POST", "/get-profiles", b'{"email": "nobody@example.com"}')
    request(served, "POST", "/update-profile", b"not json")
    output = "".join(served.stdout + served.stderr)
    assert '"_aws"' not in output, "metric (EMF) documents are for CloudWatch"
    assert "Warning" not in output and "Traceback" not in output, output


def test_serve_verbose_shows_the_functions_logs_and_metrics() -> None:
    running = _start({"KLAVIYO_API_KEY": None}, "--verbose")
    try:
        status, _, _ = request(running, "POST", "/get-profiles", b'{"email": "v@example.com"}')
        assert status == 422
        time.sleep(0.5)
    finally:
        assert _stop(running) == 0
    output = "".join(running.stdout)
    assert '"_aws"' in output and '"LeadsReceived"' in output
    assert "serve --verbose" not in output


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


def test_import_runs_against_the_running_serve(
    served: Served, serve_state: str, tmp_path: Any
) -> None:
    """make import with a make serve running: the file's profiles are the served API's."""
    path = tmp_path / "served.csv"
    path.write_bytes(b"email,first_name\nimported.lead@example.com,Ima\nnot-an-email,Bad\n")
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_API_KEY"}
    env["LOCAL_SERVE_STATE_FILE"] = serve_state
    done = subprocess.run(
        [sys.executable, "-m", "devtools.lead_file_import", str(path), "create_profile"],
        cwd=le.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"against the running make serve at {served.base_url}" in done.stderr
    results = tmp_path / "served.csv.results.csv"
    assert done.stdout.strip().splitlines()[-1] == f"Results: {results}"
    assert f"report: {tmp_path / 'served.csv.report.json'}" in done.stdout
    rows = results.read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == ["success", "failure"]
    # The served API finds the profile the file created.
    lead = json.dumps({"email": "imported.lead@example.com"}).encode()
    status, _, body = request(served, "POST", "/create-profile", lead)
    assert (status, body["outcome"]) == (422, "failure"), body
