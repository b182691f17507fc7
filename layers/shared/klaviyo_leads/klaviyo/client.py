"""The Klaviyo client: one pooled HTTP client per container, the lead's budget per call.

It owns everything about talking to Klaviyo: the key and ``revision`` headers, JSON:API
bodies and error envelopes, retries with backoff that never outlive the budget, honouring
``Retry-After``, pacing by the ``RateLimit-*`` headers, and re-reading a rotated key once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

from klaviyo_leads import outcomes
from klaviyo_leads.budget import Budget
from klaviyo_leads.klaviyo.pacing import Pacer
from klaviyo_leads.klaviyo.rate_limit_headers import _bounded, retry_after_seconds
from klaviyo_leads.klaviyo.retry import MINIMUM_CALL_SECONDS, Backoff, RetryPolicy
from klaviyo_leads.klaviyo.routes import operation_of
from klaviyo_leads.outcomes import KlaviyoError, Result

JSON_API = "application/vnd.api+json"
CONNECT_TIMEOUT_SECONDS = 5.0
USER_AGENT = "klaviyo-lead-actions/0.1"
# Klaviyo's timestamps vs our clock: allowed difference when judging whether something
# Klaviyo made (a profile, an import job) came from an attempt of ours.
CLOCK_SKEW_SECONDS = 30.0


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]
    errors: list[KlaviyoError] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None


ApiKeySource = Callable[[bool], str]
"""Returns the API key; called with True to re-read it after a 401 (key rotation)."""

CallObserver = Callable[[str, int | None, float], None]
"""Told about every attempt: the bucket, Klaviyo's status (None when there was none) and the
seconds it took."""

WaitObserver = Callable[[str, float], None]
"""Told about every wait for the pacer: the bucket and the seconds waited."""


class KlaviyoClient:
    def __init__(
        self,
        base_url: str,
        revision: str,
        api_key: ApiKeySource,
        *,
        pool: urllib3.PoolManager | None = None,
        max_attempts: int = 4,
        backoff: Backoff | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        observer: CallObserver | None = None,
        waited: WaitObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self._api_key = api_key
        self._pool = pool or urllib3.PoolManager(num_pools=4, maxsize=10)
        self.retry = RetryPolicy(max_attempts, backoff or Backoff())
        self.pacer = pacer or Pacer()
        self.sleep = sleep
        self._observer = observer
        self._waited = waited

    # -- the one way to call Klaviyo -----------------------------------------------------

    def call(
        self,
        method: str,
        path_or_url: str,
        budget: Budget,
        *,
        bucket: str | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        handled: tuple[int, ...] = (),
        idempotent: bool = True,
        before_send: Callable[[], None] | None = None,
    ) -> Response:
        """Send one request, retrying what a retry can fix while the budget allows.

        Statuses in ``expect`` and ``handled`` come back as a ``Response``; any other answer
        (or no answer) is raised as a classified ``Result``. A request that is not
        ``idempotent`` is not repeated once it may have reached Klaviyo: the ``Result``
        then says ``effect_unknown`` and the caller decides (see Create Profile).
        ``before_send`` runs right before each attempt goes out, after every wait (a create
        renews its hold there); what it raises stops the call with nothing sent.
        """
        url = self.url(path_or_url, query)
        bucket = bucket or operation_of(method, path_or_url)
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        key = self._api_key(False)
        key_reread = False
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_pacer(bucket, budget)
            remaining = budget.remaining()
            if remaining < MINIMUM_CALL_SECONDS / 5:
                raise outcomes.TIMEOUT(seconds=budget.describe())
            if before_send is not None:
                before_send()
            sent_at = time.monotonic()
            try:
                raw = self._pool.request(
                    method,
                    url,
                    body=payload,
                    headers=self._headers(key, payload is not None),
                    timeout=urllib3.Timeout(
                        connect=min(CONNECT_TIMEOUT_SECONDS, remaining), read=remaining
                    ),
                    retries=False,
                    redirect=False,
                )
            except (ConnectTimeoutError, NewConnectionError) as exc:
                # Nothing reached Klaviyo: safe to repeat, whatever the method.
                self._observe(bucket, None, sent_at)
                problem = self._no_answer(exc, budget)
            except (ReadTimeoutError, HTTPError) as exc:
                self._observe(bucket, None, sent_at)
                problem = self._no_answer(exc, budget)
                # It may have reached Klaviyo: repeating it is the caller's decision.
                problem.effect_unknown = not idempotent
            else:
                status = raw.status
                # Header names are case-insensitive; keep them lower-case from here on.
                headers = {k.lower(): v for k, v in raw.headers.items()}
                self.pacer.observe(bucket, status, headers)
                self._observe(bucket, status, sent_at)
                if status == 401 and not key_reread:
                    # Rotated key: read the secret again once, then try once more.
                    key_reread = True
                    fresh = self._api_key(True)
                    if fresh != key:
                        key = fresh
                        attempt -= 1
                        continue
                parsed, errors = _parse(raw.data, status, headers)
                if 200 <= status < 300 and status not in (202, 204) and parsed is _UNREADABLE:
                    unreadable = outcomes.unreadable_response(status)
                    # It worked, but we cannot see what it made: the caller decides.
                    unreadable.effect_unknown = not idempotent
                    raise unreadable
                if status in expect or status in handled:
                    return Response(
                        status=status,
                        body=None if parsed is _UNREADABLE else parsed,
                        headers=headers,
                        errors=errors,
                    )
                problem = outcomes.from_klaviyo_answer(
                    status,
                    errors,
                    challenge=_is_challenge(status, headers),
                    retry_after=retry_after_seconds(headers.get("retry-after")),
                )
                problem.effect_unknown = status >= 500 and not idempotent
            wait = self.retry.wait_before_retry(problem, attempt, budget.remaining())
            if wait is None:
                raise problem  # the queue (or the caller) redelivers when it can help
            self.sleep(wait)

    # -- helpers -------------------------------------------------------------------------

    def url(self, path_or_url: str, query: Mapping[str, str] | None) -> str:
        if path_or_url.startswith(("http://", "https://")):
            # Pagination links come back as full URLs; follow only our own host.
            if urlsplit(path_or_url).netloc != urlsplit(self.base_url).netloc:
                raise outcomes.unreadable_response(200)
            url = path_or_url
        else:
            url = self.base_url + path_or_url
        if query:
            # urlencode quotes "+" as %2B: an email with "+" would otherwise become a space.
            url += ("&" if "?" in url else "?") + urlencode(query)
        return url

    def _headers(self, key: str, has_body: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Klaviyo-API-Key {key}",
            "revision": self.revision,
            "Accept": JSON_API,
            "User-Agent": USER_AGENT,
        }
        if has_body:
            headers["Content-Type"] = JSON_API
        return headers

    def check_pace(self, bucket: str, budget: Budget) -> float:
        """How long a call to ``bucket`` must wait; throttled when that outlives the budget.

        Actions that end in a scarce endpoint (a list add) ask first, so a lead that could
        not be added anyway does not spend a profile search on the way.
        """
        wait = _bounded(self.pacer.wait_for(bucket))
        if wait > 0 and wait + MINIMUM_CALL_SECONDS > budget.remaining():
            # Not sent: the lead comes back when it could be sent, not when this container
            # would have sent it.
            held = outcomes.PACED if self.pacer.told_to_wait(bucket) else outcomes.NO_ROOM
            sendable = self.pacer.sendable_in(bucket)
            raise held(seconds=math.ceil(sendable), retry_after=sendable)
        return wait

    def _wait_for_pacer(self, bucket: str, budget: Budget) -> None:
        wait = self.check_pace(bucket, budget)
        if wait > 0:
            self.sleep(wait)
            if self._waited is not None:
                self._waited(bucket, wait)
        self.pacer.sent(bucket)

    def _no_answer(self, exc: Exception, budget: Budget) -> Result:
        # urllib3's NewConnectionError (refused, DNS) is a kind of ConnectTimeoutError.
        if isinstance(exc, NewConnectionError) and not budget.expired:
            return outcomes.UNREACHABLE()
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError) or budget.expired:
            return outcomes.TIMEOUT(seconds=budget.describe())
        return outcomes.UNREACHABLE()

    def _observe(self, bucket: str, status: int | None, sent_at: float) -> None:
        if self._observer is not None:
            self._observer(bucket, status, time.monotonic() - sent_at)


_UNREADABLE: Any = object()


def _parse(data: bytes, status: int, headers: Mapping[str, str]) -> tuple[Any, list[KlaviyoError]]:
    """The JSON body (or ``_UNREADABLE``) and its JSON:API errors."""
    if not data:
        return _UNREADABLE, []
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return _UNREADABLE, []
    errors: list[KlaviyoError] = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        errors = [KlaviyoError.from_json(item) for item in body["errors"]]
    if (
        200 <= status < 300
        and status not in (202, 204)
        and not (isinstance(body, dict) and "data" in body)
    ):
        return _UNREADABLE, errors
    return body, errors


def _is_challenge(status: int, headers: Mapping[str, str]) -> bool:
    """Cloudflare's bot challenge: an HTML 403 that says nothing about the API key."""
    if status != 403:
        return False
    mitigated = headers.get("cf-mitigated", "").lower() == "challenge"
    return mitigated or "text/html" in headers.get("content-type", "").lower()


def filter_value(value: str) -> str:
    """A string literal for Klaviyo's filter syntax: double-quoted, JSON escapes.

    Quotes and backslashes inside the value are escaped as Klaviyo's own SDK writes them
    (``json.dumps``), so an identifier ending in ``\\`` or holding quotes stays searchable.
    """
    return json.dumps(value, ensure_ascii=False)
