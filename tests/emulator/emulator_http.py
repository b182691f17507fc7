"""A raw HTTP client for the emulator tests (http.client, so the wire format is visible)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

API_KEY = "pk_test_emulator"
REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"
_DEFAULT = object()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The single JSON:API error object of an error answer."""
        errors = self.json()["errors"]
        assert len(errors) == 1, errors
        return errors[0]


class Api:
    """A deliberately raw client (http.client), so tests see exactly what goes on the wire."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base_url = base_url

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        raw_query: str | None = None,
        key: str | object | None = _DEFAULT,
        revision: str | None = REVISION,
        content_type: str | None = JSON_API,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Reply:
        if path.startswith("http"):
            parts = urlsplit(path)
            path, raw_query = parts.path, parts.query
        target = path
        if query:
            target += "?" + urlencode(query, quote_via=quote, safe="")
        elif raw_query:
            target += "?" + raw_query
        sent: dict[str, str] = {"Accept": JSON_API}
        api_key = API_KEY if key is _DEFAULT else key
        if api_key is not None:
            sent["Authorization"] = f"Klaviyo-API-Key {api_key}"
        if revision is not None:
            sent["revision"] = revision
        payload: bytes | None = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            if content_type is not None:
                sent["Content-Type"] = content_type
        sent.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, target, body=payload, headers=sent)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("PATCH", path, body, **kwargs)

    def create_profile(self, **attributes: Any) -> Reply:
        return self.post("/api/profiles", {"data": {"type": "profile", "attributes": attributes}})
