"""The Klaviyo client's HTTP, answered in this process by the emulator, with faults.

``InProcessKlaviyo`` stands where the client's ``urllib3.PoolManager`` stands: the client
builds its request as always, and the emulator's WSGI application answers it without a
socket. Each request is a scheduling point; it reaches Klaviyo half its latency after it
is sent, and its answer comes back half its latency later (each half a point where others
run). A fault the simulation draws for the call plays as Klaviyo or the network would:
refused before Klaviyo sees it, a 429 (any ``Retry-After``) or a 503 instead of the work, or
the work done and then the answer lost, replaced by a 503, or unreadable.

The request reaches the application as werkzeug's test client would send it (the same
environ, from the same builder), but without the client: its cookie jar, request object and
redirect handling cost more than the environ itself, and none of them did anything here: the
emulator sets no cookie, and the test client followed no redirect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import NewConnectionError, ProtocolError
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Response

from devtools.klaviyo_emulator import Fault, KlaviyoEmulator

# (operation, status) after every call, for the checks: which writes Klaviyo took.
Observer = Callable[[str, str, int | None], None]


@dataclass
class Answer:
    """What urllib3 gives the client: the status, the headers, the body."""

    status: int
    headers: dict[str, str]
    data: bytes


class InProcessKlaviyo:
    def __init__(
        self,
        emulator: KlaviyoEmulator,
        point: Callable[[str], None],
        sleep: Callable[[float], None],
        latency: Callable[[], float],
        fault_for: Callable[[str, str], str | None],
    ) -> None:
        self._emulator = emulator
        self._point = point
        self._sleep = sleep
        self._latency = latency
        self._fault_for = fault_for

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> Answer:
        split = urlsplit(url)
        self._point(f"Klaviyo {method} {split.path}")
        latency = self._latency()
        self._sleep(latency / 2)
        fault = self._fault_for(method, split.path)
        if fault == "refused":
            raise NewConnectionError(None, "simulated: connection refused")  # type: ignore[arg-type]
        if fault is not None and fault != "unreadable":
            self._emulator.faults.add(_emulator_fault(method, split.path, fault))
        try:
            response = _answer(self._emulator, method, split.path, split.query, body, headers)
        except ConnectionError:  # the emulator dropped the connection: the answer is lost
            self._sleep(latency / 2)
            raise ProtocolError("simulated: connection lost before the answer") from None
        self._sleep(latency / 2)
        data = response.get_data()
        if fault == "unreadable" and 200 <= response.status_code < 300:
            data = b"<html><body>Bad gateway</body></html>"  # the work done, its answer garbled
        return Answer(response.status_code, dict(response.headers.items()), data)


def _answer(
    emulator: KlaviyoEmulator,
    method: str,
    path: str,
    query: str,
    body: bytes | None,
    headers: dict[str, str] | None,
) -> Response:
    """The emulator's answer to the request, as ``werkzeug.test.Client.open`` would return it."""
    builder = EnvironBuilder(path, method=method, query_string=query, data=body, headers=headers)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    return Response(*run_wsgi_app(emulator.wsgi_app, environ))


def _emulator_fault(method: str, path: str, kind: str) -> Fault:
    """The emulator's own fault for the drawn kind (its answers are Klaviyo's)."""
    exact = f"^{re.escape(path)}/?$"
    if kind.startswith("429"):
        seconds = int(kind.split(":")[1]) if ":" in kind else None
        return Fault(method=method, path=exact, status=429, retry_after=seconds)
    if kind == "503":
        return Fault(method=method, path=exact, status=503)
    if kind == "lost":
        return Fault(method=method, path=exact, drop=True, after=True)
    if kind == "503 after":
        return Fault(method=method, path=exact, status=503, after=True)
    raise ValueError(kind)
