"""The WSGI application: the CDN's URL cap, faults, auth, rate limits, revision, scopes, the
query and body checks, then the handlers; latency last."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from .contract import ContractValidator, Exchange
from .errors import (
    UNKNOWN_REVISION,
    ApiError,
    for_status,
    invalid,
    method_not_allowed,
    not_authenticated,
    not_found,
    payload_too_large,
    permission_denied,
    throttled,
    unsupported_media_type,
)
from .faults import Fault, FaultSet
from .operations import Operation, Router, granted
from .protocol import Context, Reply
from .query import parse as parse_query
from .ratelimit import Bucket, RateLimiter
from .recording import DROPPED, HeaderMap, RecordedRequest
from .state import Store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

JSON_API = "application/vnd.api+json"
ACCEPTED_MEDIA_TYPES = (JSON_API, "application/json")
REVISION_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:\.([A-Za-z0-9]+))?$")
OLDEST_REVISION = date(2023, 1, 1)
CHALLENGE_PAGE = b"""<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1>a.klaviyo.com</h1><h2>Verifying you are human. This may take a few seconds.</h2>
<noscript>Enable JavaScript and cookies to continue</noscript></div></div></body></html>
"""
# The CDN's page for an over-long request line; modelled on the CDN's nginx-style error pages
# (an assumption: no Klaviyo 414 body has been published).
URI_TOO_LONG_PAGE = b"""<html>
<head><title>414 Request-URI Too Large</title></head>
<body>
<center><h1>414 Request-URI Too Large</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""
# "Commonly cited but unconfirmed" cap on the request line (method, URL and version) before
# the CDN answers 414; Cloudflare documents 32 KB for the URI alone. An assumption.
MAX_REQUEST_LINE = 16 * 1024


class _DropConnection(ConnectionError):
    """Raised through werkzeug so it closes the socket without writing a response."""


class QuietHandler(WSGIRequestHandler):
    """Request handler without access logs that really closes dropped connections."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def connection_dropped(
        self, error: BaseException, environ: WSGIEnvironment | None = None
    ) -> None:
        # Without this an HTTP/1.1 connection would wait for a next request, and the client
        # would see a hang instead of a closed connection.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class VerboseHandler(QuietHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        WSGIRequestHandler.log_request(self, code, size)


@dataclass
class Settings:
    """Mutable configuration the emulator shares with its request threads (the account's
    behaviour lives in ``store.config``)."""

    api_keys: dict[str, frozenset[str] | None]
    revision: date
    revision_text: str
    rate_overrides: dict[str, tuple[int, int]] = field(default_factory=dict)
    base_url: str = ""


def parse_revision(text: str) -> tuple[date, str | None]:
    """``(date, suffix)`` of a ``YYYY-MM-DD[.suffix]`` revision; ValueError when malformed."""
    found = REVISION_RE.match(text)
    if found is None:
        raise ValueError(f"revision {text!r} is not YYYY-MM-DD[.suffix]")
    return date(int(found[1]), int(found[2]), int(found[3])), found[4]


class KlaviyoApp:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        router: Router,
        faults: FaultSet,
        limiter: RateLimiter,
        record: Callable[[RecordedRequest], None],
        validator: ContractValidator | None,
        report_violations: Callable[[list[str]], None],
        control: Callable[[Request], Response],
        sleep: Callable[[float], None],
        settings_lock: threading.Lock,
        epoch: Callable[[], int],
    ) -> None:
        self.store = store
        self.settings = settings
        self.router = router
        self.faults = faults
        self.limiter = limiter
        self.record = record
        self.validator = validator
        self.report_violations = report_violations
        self.control = control
        self.sleep = sleep
        self.settings_lock = settings_lock
        self.epoch = epoch

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith("/_emulator/") or request.path == "/_emulator":
            return self.control(request)(environ, start_response)
        started = time.monotonic()
        epoch = self.epoch()
        body = request.get_data(cache=True)
        if _request_line_length(environ) > MAX_REQUEST_LINE:
            # The CDN refuses before Klaviyo sees the request: no auth, no routing, no JSON.
            too_long = Response(URI_TOO_LONG_PAGE, status=414, content_type="text/html")
            self._finish(request, body, None, None, started, too_long, epoch, from_cdn=True)
            return too_long(environ, start_response)
        op, params, allowed = self.router.match(request.method, request.path)
        op_id = op.operation_id if op else None
        fault = self.faults.take(request.method, request.path, op_id)
        try:
            response = self._answer(request, body, op, params, allowed, fault, epoch)
        except _DropConnection:
            self._finish(request, body, op_id, fault, started, None, epoch)
            raise
        if fault is not None and fault.headers:
            for name, value in fault.headers.items():
                response.headers[name] = value
        latency = self.store.config.latency
        if latency is not None:
            self.sleep(latency.delay(op_id))
        self._finish(request, body, op_id, fault, started, response, epoch)
        return response(environ, start_response)

    # ---- pipeline ------------------------------------------------------------------------

    def _answer(
        self,
        request: Request,
        body: bytes,
        op: Operation | None,
        params: dict[str, str],
        allowed: list[str],
        fault: Fault | None,
        epoch: int,
    ) -> Response:
        if fault is not None and fault.after:
            # Klaviyo does the work, then the answer is lost, late or replaced: the case
            # where a client cannot tell whether its request took effect.
            served = self._serve_or_error(request, body, op, params, allowed)
            return self._fault_answer(fault, epoch) or served
        if fault is not None:
            replaced = self._fault_answer(fault, epoch)
            if replaced is not None:
                return replaced
        return self._serve_or_error(request, body, op, params, allowed)

    def _fault_answer(self, fault: Fault, epoch: int) -> Response | None:
        """What the fault answers instead (None: the normal answer, after any latency)."""
        if fault.latency > 0:
            time.sleep(fault.latency)
            if self.epoch() != epoch:
                # The emulator was reset while this request slept: its test is over, so
                # it must not touch the next test's state.
                raise _DropConnection("reset during latency")
        if fault.drop:
            raise _DropConnection("fault: drop")
        if fault.challenge:
            return Response(
                CHALLENGE_PAGE,
                status=403,
                headers={"cf-mitigated": "challenge"},
                content_type="text/html; charset=UTF-8",
            )
        if fault.body is not None:
            response = Response(
                fault.body,
                status=fault.status or 200,
                content_type=fault.content_type or JSON_API,
            )
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(fault.retry_after)
            return response
        if fault.status is not None:
            return _error_response(for_status(fault.status, fault.retry_after))
        return None

    def _serve_or_error(
        self,
        request: Request,
        body: bytes,
        op: Operation | None,
        params: dict[str, str],
        allowed: list[str],
    ) -> Response:
        try:
            return self._serve(request, body, op, params, allowed)
        except ApiError as exc:
            return _error_response(exc)
        except Exception:
            # An emulator bug: answer like Klaviyo's 500 so clients see a JSON:API error, and
            # leave the traceback on stderr for whoever runs the tests.
            traceback.print_exc()
            return _error_response(for_status(500))

    def _serve(
        self,
        request: Request,
        body: bytes,
        op: Operation | None,
        params: dict[str, str],
        allowed: list[str],
    ) -> Response:
        if op is None:
            if allowed:
                raise method_not_allowed(request.method)
            raise not_found(f"The path {request.path} does not exist.")
        with self.settings_lock:
            keys = dict(self.settings.api_keys)
            override = self.settings.rate_overrides.get(op.operation_id)
            base_url = self.settings.base_url
        key = _api_key(request, keys)
        self.store.settle()
        limit_headers = self._count(op, request, override)
        try:
            self._check_revision(request)
            missing = granted(keys[key], op.rules.scopes)
            if missing:
                raise permission_denied(missing)
            checked = parse_query(request.args, op.rules)
            document = _parse_body(request, body, op)
            ctx = Context(
                store=self.store,
                base_url=base_url,
                args=request.args,
                query=checked,
                params=params,
                body=document,
                search_view=self.store.search_view,
                rules=op.rules,
            )
            reply = op.handler(ctx)
        except ApiError as exc:
            exc.headers.update(limit_headers)
            raise
        return _reply_response(reply, limit_headers)

    def _count(
        self, op: Operation, request: Request, override: tuple[int, int] | None
    ) -> dict[str, str]:
        """Count the request in the account's windows; 429 when enforced and over a limit.

        Counted once the key names the account, so every answer after that carries the
        ``RateLimit-*`` headers (401s name no account and carry none).
        """
        limits = dict(op.rules.limits)
        if override is not None:
            limits = {"burst": override[0], "steady": override[1]}
        buckets = [Bucket(op.operation_id, limits)]
        for extra in op.rules.parameter_limits:
            asked = request.args.get(extra.parameter, "").split(",")
            if extra.value in asked:
                buckets.append(Bucket(f"{op.operation_id}?{extra.bucket}", extra.limits))
        decision = self.limiter.check(buckets, enforce=self.store.config.rate_limits)
        if decision.refused:
            raise throttled(decision.retry_after)
        return decision.headers

    def _check_revision(self, request: Request) -> None:
        raw = request.headers.get("revision")
        if raw is None or not raw.strip():
            raise invalid(
                "The 'revision' header is required (format YYYY-MM-DD[.suffix]).",
                parameter="revision",
            )
        try:
            asked, suffix = parse_revision(raw.strip())
        except ValueError as exc:
            raise invalid(
                "The revision passed in must be a valid revision.", parameter="revision"
            ) from exc
        with self.settings_lock:
            newest = self.settings.revision
        if asked < OLDEST_REVISION or asked > newest or suffix not in (None, "pre"):
            raise not_found(UNKNOWN_REVISION)

    # ---- bookkeeping ---------------------------------------------------------------------

    def _finish(
        self,
        request: Request,
        body: bytes,
        op_id: str | None,
        fault: Fault | None,
        started: float,
        response: Response | None,
        epoch: int,
        *,
        from_cdn: bool = False,
    ) -> None:
        if self.epoch() != epoch:
            return  # answered across a reset; it belongs to no one now
        status = response.status_code if response is not None else DROPPED
        response_body = response.get_data() if response is not None else b""
        response_headers = HeaderMap(response.headers.items() if response is not None else ())
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query={k: request.args.getlist(k) for k in request.args},
            headers=HeaderMap(request.headers.items()),
            body=body,
            status=status,
            response_body=response_body,
            operation_id=op_id,
            response_headers=response_headers,
            fault=fault,
            duration=time.monotonic() - started,
        )
        self.record(recorded)
        if self.validator is not None:
            replaced = fault is not None and fault.replaces_answer
            exchange = Exchange(
                method=recorded.method,
                path=recorded.path,
                query=recorded.query,
                headers=recorded.headers,
                body=body,
                status=status,
                response_headers=response_headers,
                response_body=response_body,
                # An injected answer is wrong on purpose, and the CDN's 414 is no API answer:
                # only the client's request counts.
                check_response=not (replaced or from_cdn),
            )
            violations = self.validator.check(exchange)
            if violations:
                self.report_violations(violations)


def _request_line_length(environ: WSGIEnvironment) -> int:
    """Bytes in ``METHOD /raw/uri?query HTTP/1.1`` as the client sent it."""
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    line = f"{environ.get('REQUEST_METHOD', '')} {uri} {environ.get('SERVER_PROTOCOL', '')}"
    return len(line.encode("latin-1", "replace"))


def _api_key(request: Request, keys: dict[str, frozenset[str] | None]) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme != "Klaviyo-API-Key" or key not in keys:
        raise not_authenticated()
    return key


def _parse_body(request: Request, body: bytes, op: Operation) -> Any:
    if op.method not in ("POST", "PATCH", "DELETE"):
        return None
    if len(body) > op.body_limit:
        raise payload_too_large(op.body_limit)
    media = (request.mimetype or "").lower()
    if media not in ACCEPTED_MEDIA_TYPES:
        raise unsupported_media_type(request.content_type or "")
    if not body.strip():
        raise invalid(
            "The request body is empty; a JSON:API document is required.", pointer="/data"
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: too deep
        raise ApiError(
            400, "parse_error", "Malformed request.", f"JSON parse error - {exc}"
        ) from exc


def _error_response(exc: ApiError) -> Response:
    response = Response(json.dumps(exc.body()), status=exc.status, content_type=JSON_API)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _reply_response(reply: Reply, extra_headers: dict[str, str]) -> Response:
    payload = b"" if reply.document is None else json.dumps(reply.document).encode()
    response = Response(payload, status=reply.status, content_type=JSON_API)
    for name, value in {**extra_headers, **reply.headers}.items():
        response.headers[name] = value
    return response
