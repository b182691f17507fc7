"""`make serve`: the API on 127.0.0.1 for curl, over one sandbox (see ``sandbox.py``).

Routes as deployed (``POST /<route>``, ``POST /<route>/async``, ``GET /results/<message_id>``)
plus local-only ones (``serve_client.py``); a poller runs the queues as the event source
mappings would. It talks to the real Klaviyo instead when ``KLAVIYO_API_KEY`` is set.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools import events as samples
from devtools import lambda_events as le
from devtools.sandbox import ASYNC_SUFFIX, REAL_KLAVIYO_URL, ROUTES, Sandbox
from devtools.serve_client import (
    LOCAL_IMPORT_PREFIX,
    LOCAL_INVOKE_PREFIX,
    LOCAL_RESULTS_ROUTE,
    serve_state_path,
)

le.ensure_layer_on_path()

from klaviyo_leads.actions.table import ACTIONS  # noqa: E402  (the layer is on the path now)

RESULTS_ROUTE_PREFIX = "/results/"  # GET /results/<message_id>: a queued lead's result, as deployed
# What the local-only routes take (a lead file up to LeadFileMaxBytes' default).
MAX_LOCAL_BODY_BYTES = 64 * 1024 * 1024


class LocalApi(ThreadingHTTPServer):
    """The API on a local port, bound before the stack starts: a busy port fails at once."""

    daemon_threads = True
    sandbox: Sandbox
    poller: QueuePoller

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, ApiRequestHandler)

    def attach(self, sandbox: Sandbox, poller: QueuePoller) -> None:
        self.sandbox = sandbox
        self.poller = poller


class QueuePoller:
    """The event source mappings: drains every action's queue when woken, and every second."""

    def __init__(self, sandbox: Sandbox, report: Callable[[str], None]) -> None:
        self.sandbox = sandbox
        self.report = report
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-poller", daemon=True)

    def start(self) -> QueuePoller:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            for action in ACTIONS:
                if self._stop.is_set():
                    return
                try:
                    self.poll(action)
                except Exception as exc:  # keep polling; say what went wrong
                    self.report(f"[queue] {action}: {type(exc).__name__}: {exc}")

    def poll(self, action: str) -> None:
        for batch in self.sandbox.process_queue(action):
            records = batch.event["Records"]
            if batch.error:
                self.report(
                    f"[queue] {action}: the handler raised {batch.error}; the batch "
                    + self.comes_back(action, records[0])
                )
            for record in records:
                if record["messageId"] in batch.failed:
                    self.report(
                        f"[queue] {action} {record['messageId']}: handed back; "
                        + self.comes_back(action, record)
                    )
        for event in self.sandbox.collect_results():
            detail = event.get("detail") or {}
            result = detail.get("result") or {}
            parts = [str(result.get("outcome"))]
            parts += [f"({result['reason']})"] if result.get("reason") else []
            parts += [f"id {result['id']}"] if result.get("id") else []
            self.report(
                f"[queue] {detail.get('action')} {detail.get('message_id') or '-'}: "
                + " ".join(parts)
            )

    def comes_back(self, action: str, record: Mapping[str, Any]) -> str:
        """When a record handed back to its queue is delivered again, and the how-manieth time.

        SQS decides: the record stays invisible for the queue's visibility timeout, then comes
        back, until ``maxReceiveCount`` deliveries move it to the dead-letter queue.
        """
        timeout, max_receives = self.sandbox.retry_settings(action)
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + timeout))
        when = f"in {timeout} s (at {at}, the queue's visibility timeout)"
        receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        if max_receives is None:
            return f"retried {when}"
        if receives >= max_receives:
            return (
                f"that was delivery {receives} of {max_receives}: "
                f"it moves to the dead-letter queue {when}"
            )
        return f"retried {when}; that was delivery {receives} of {max_receives}"


# API Gateway's own limit on a request's payload.
MAX_BODY_BYTES = 10 * 1024 * 1024


class ApiRequestHandler(BaseHTTPRequestHandler):
    server: LocalApi
    protocol_version = "HTTP/1.1"
    server_version = "klaviyo-lead-actions-local"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[api] {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        sent = {k.lower() for k in headers or {}}
        for name, value in (headers or {}).items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request whose body could not be read; the rest of it is not read, so the
        connection closes."""
        self.close_connection = True
        self._json(status, {"message": message})

    def _too_large(self) -> None:
        """What the deployed stack answers a body over its limit: the web ACL's 413 (over
        ``MaxRequestBodyBytes``), else API Gateway's REQUEST_TOO_LARGE gateway response; the
        rest is not read."""
        self.close_connection = True
        sandbox = self.server.sandbox
        limit = sandbox.body_limit
        answer = (
            limit.answer if limit.limit is not None else sandbox.gateway.answer("REQUEST_TOO_LARGE")
        )
        self._send(answer.status, answer.body, {"Content-Type": answer.content_type})

    def _over_limit(self, size: int) -> bool:
        if self._local_route() is not None:  # not deployed: no gateway, no web ACL
            return size > MAX_LOCAL_BODY_BYTES
        return size > MAX_BODY_BYTES or self.server.sandbox.body_limit.refuses(size)

    def _local_route(self) -> tuple[str, str] | None:
        """(local route prefix, action) of a local-only POST route."""
        path = urlsplit(self.path).path
        for prefix in (LOCAL_INVOKE_PREFIX, LOCAL_IMPORT_PREFIX):
            if path.startswith(prefix) and path[len(prefix) :] in ACTIONS:
                return prefix, path[len(prefix) :]
        return None

    def _body(self) -> bytes | None:
        """The request body (chunked or with a Content-Length); None when it could not be read,
        and the answer saying why is sent. A request with neither has no body (RFC 9112,
        section 6.3): it is answered as an empty one. Malformed framing (400) is answered by
        API Gateway's front end before it knows the API, with its own ``{"message": ...}``: no
        gateway response type exists for it, so the stack cannot shape it, and neither does
        this."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not re.fullmatch(r"\s*\d+\s*", length, re.ASCII):
            self._refuse(400, f"Content-Length must be a number of bytes, not {length!r}")
            return None
        size = int(length)
        if self._over_limit(size):
            self._too_large()
            return None
        return self.rfile.read(size) if size else b""

    def _chunked_body(self) -> bytes | None:
        """A ``Transfer-Encoding: chunked`` body: hex size lines, chunks, a last empty chunk."""
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", size_text):
                self._refuse(400, "Bad chunked body: a chunk size is not a hexadecimal number")
                return None
            size = int(size_text, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: nothing here needs them
                return bytes(body)
            if self._over_limit(len(body) + size):
                self._too_large()
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self._refuse(400, "Bad chunked body: a chunk is shorter than its size says")
                return None
            body += chunk

    def _not_found(self) -> None:
        self._json(
            404,
            {
                "message": f"No route for {self.command} {urlsplit(self.path).path}",
                "routes": [f"POST {r}" for r in ROUTES]
                + [f"POST {r}{ASYNC_SUFFIX}" for r in ROUTES]
                + [f"GET {RESULTS_ROUTE_PREFIX}<message_id>", f"GET {LOCAL_RESULTS_ROUTE}"],
            },
        )

    def _route(self) -> tuple[str | None, bool]:
        """(action, queued) for the request path."""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path in ROUTES:
            return ROUTES[path], False
        if path.endswith(ASYNC_SUFFIX) and path.removesuffix(ASYNC_SUFFIX) in ROUTES:
            return ROUTES[path.removesuffix(ASYNC_SUFFIX)], True
        return None, False

    def do_POST(self) -> None:
        action, queued = self._route()
        body = self._body()
        if body is None:
            return
        local = self._local_route()
        if local is not None:
            prefix, name = local
            (self._invoke if prefix == LOCAL_INVOKE_PREFIX else self._import)(name, body)
            return
        if action is None:
            self._not_found()
            return
        split = urlsplit(self.path)
        if queued:
            self._queue(action, body, split.query)
            return
        answer = self.server.sandbox.call_api(
            action,
            body,
            headers=self.headers.items(),
            query=split.query or None,
            path=split.path,
            source_ip=self.client_address[0],
        )
        self._send(answer.status, answer.body, answer.headers)

    def _invoke(self, action: str, body: bytes) -> None:
        """`make invoke` against this server's stack and emulator (local only)."""
        sandbox = self.server.sandbox
        try:
            event = json.loads(body)
        except ValueError as exc:
            self._json(400, {"message": f"The event is not JSON: {exc}"})
            return
        sandbox.collect_results()
        seen = len(sandbox.published)
        try:
            response = sandbox.invoke(action, event)
        except Exception as exc:
            self._json(200, {"error": f"{type(exc).__name__}: {exc}"})
            return
        sandbox.collect_results()
        self._json(200, {"response": response, "published": sandbox.published[seen:]})

    def _import(self, action: str, body: bytes) -> None:
        """`make import` against this server's stack and emulator (local only): the file in
        the body's JSON (``name``, ``data`` in base64, ``dry_run``, ``metadata``)."""
        import tempfile

        from devtools import lead_file_import

        try:
            request = json.loads(body)
            data = base64.b64decode(request["data"])
            name = Path(str(request["name"])).name
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"message": f"The import request is not readable: {exc}"})
            return
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="lead-file-import-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                code, report, results = lead_file_import.import_file(
                    self.server.sandbox,
                    path,
                    action,
                    dry_run=bool(request.get("dry_run")),
                    metadata=request.get("metadata") or {},
                    out=lines.append,
                )
            except Exception as exc:
                self._json(200, {"error": f"{type(exc).__name__}: {exc}"})
                return
            answer = {
                "code": code,
                "lines": lines,
                "report": report,
                "results": base64.b64encode(results.read_bytes()).decode() if results else None,
            }
        self._json(200, answer)

    def _queue(self, action: str, body: bytes, query: str) -> None:
        """The async route: the function queues the request; the poller is woken for it."""
        answer = self.server.sandbox.call_async_api(
            action,
            body,
            headers=self.headers.items(),
            query=query or None,
            source_ip=self.client_address[0],
        )
        if 200 <= answer.status < 300:
            self.server.poller.wake()
        self._send(answer.status, answer.body, answer.headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path == LOCAL_RESULTS_ROUTE:
            self.server.sandbox.collect_results()
            self._json(200, {"results": self.server.sandbox.published[-100:]})
            return
        if path.startswith(RESULTS_ROUTE_PREFIX) and "/" not in path[len(RESULTS_ROUTE_PREFIX) :]:
            answer = self.server.sandbox.get_result(path[len(RESULTS_ROUTE_PREFIX) :])
            self._send(answer.status, answer.body, answer.headers)
            return
        action, _ = self._route()
        if action is not None:
            self._json(405, {"message": "Use POST"}, {"Allow": "POST"})
            return
        self._not_found()

    def do_PUT(self) -> None:
        self._other()

    def do_DELETE(self) -> None:
        self._other()

    def do_PATCH(self) -> None:
        self._other()

    def _other(self) -> None:
        if self._body() is None:
            return
        action, _ = self._route()
        if action is not None:
            self._json(405, {"message": "Use POST"}, {"Allow": "POST"})
        else:
            self._not_found()


def curl_examples(base: str) -> str:
    lead = json.dumps({"email": "new.lead@example.com", "first_name": "Nia", "city": "Austin"})
    found = json.dumps(samples.SAMPLE_LEADS["get_segment_profiles"][0])
    lines = [
        "Try (curl's -d sends a form content type; JSON under it is read as JSON):",
        f"  curl -s -X POST {base}/create-profile -d '{lead}'",
        f"  curl -s -X POST {base}/create-profile \\",
        "       -d 'email=form.lead@example.com&phone_1=(512) 555-0188&company.name=Acme'",
        f"  curl -s -X POST {base}/get-segment-profiles -H 'Content-Type: application/json' \\",
        f"       -d '{found}'",
        f"  curl -s -X POST {base}/subscribe-profile-to-list{ASYNC_SUFFIX} \\",
        f"       -d 'email=queued.lead@example.com&klaviyo.list_id={samples.DEMO_LIST_ID}'",
        f"  curl -s {base}/results/<message_id>   # a queued lead's result (the 202's message_id)",
        f"  curl -s {base}{LOCAL_RESULTS_ROUTE}   # local only: the last results published",
        "",
        "Routes: " + ", ".join(f"POST {r}" for r in ROUTES),
        f"        and POST <route>{ASYNC_SUFFIX} (202, then the queue runs the lead)",
    ]
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cannot_listen(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use: stop what listens there, or choose "
            "another port (make serve PORT=8081; --port 0 takes any free one)"
        )
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def run_serve(port: int, host: str = "127.0.0.1", verbose: bool = False) -> int:
    try:
        server = LocalApi((host, port))
    except OSError as error:
        print(f"serve: {_cannot_listen(host, port, error)}", file=sys.stderr)
        return 1
    # SIGTERM stops like Ctrl-C: the server, the poller, moto and the emulator shut down.
    signal.signal(signal.SIGTERM, _interrupt)
    real_key = (os.environ.get("KLAVIYO_API_KEY") or "").strip() or None
    if real_key:
        print(
            "WARNING: KLAVIYO_API_KEY is set: requests go to the REAL Klaviyo account at "
            f"{REAL_KLAVIYO_URL}. Profiles, list members and consents you create are real.",
            file=sys.stderr,
            flush=True,
        )
    try:
        return _serve(server, real_key, verbose)
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()


def _serve(server: LocalApi, real_key: str | None, verbose: bool) -> int:
    log_level = "INFO" if verbose else "WARNING"
    with Sandbox(
        real_api_key=real_key, log_level=log_level, metrics=verbose, latency="realistic"
    ) as sandbox:
        poller = QueuePoller(sandbox, lambda text: print(text, file=sys.stderr, flush=True))
        server.attach(sandbox, poller)
        host, port = server.server_address[:2]
        base = f"http://{host}:{port}"
        klaviyo = "REAL Klaviyo" if real_key else "Klaviyo emulator"
        print(f"{klaviyo}: {sandbox.klaviyo_url}")
        print(f"moto: {sandbox.stack().endpoint_url} (dummy credentials, us-east-1)")
        if not verbose:
            print("(the functions' INFO logs and metrics: serve --verbose, make serve VERBOSE=1)")
        print()
        print(curl_examples(base))
        print()
        state = _write_serve_state(base)
        print(f"Listening on {base}  (Ctrl-C to stop)", flush=True)
        poller.start()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            poller.stop()
            _remove_serve_state(state)
    return 0


def _write_serve_state(base: str) -> Path | None:
    """Say where this server listens, for `make invoke` (None when it cannot be written)."""
    path = serve_state_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"base_url": base, "pid": os.getpid()}), "utf-8")
    except OSError:
        return None
    return path


def _remove_serve_state(path: Path | None) -> None:
    """Remove the state file if it is still this process's (another serve may have replaced it)."""
    if path is None:
        return
    try:
        if json.loads(path.read_text("utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
