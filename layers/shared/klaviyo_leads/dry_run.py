"""Dry runs: everything up to Klaviyo's writes, and nothing written anywhere.

A lead with ``"dry_run": true`` (on any trigger), or a request to ``POST /<route>?dry_run=true``,
runs as it would: parsed and checked, settings resolved, read-only lookups sent (so the answer
can say "would create" or "already exists, id ..."). Its writes are not sent. Each is kept, as
method, path and body, in ``would_send``, and answered as Klaviyo answers a write it accepts, so
the action goes on to the result the lead would get.

Nothing else is written either: a dry run's context has no create ledger (no record is taken
or touched), the triggers neither publish its result nor put it on a queue, and a queued dry
run keeps no idempotency record.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.klaviyo.client import Response
from klaviyo_leads.klaviyo.routes import operation_of
from klaviyo_leads.lead.body import parse_body

FLAG = "dry_run"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})

# What Klaviyo answers a write it accepts, by operation; any other write is a job (202).
_ACCEPTED = {
    "create_profile": 201,
    "update_profile": 200,
    "add_profiles_to_list": 204,
    "remove_profiles_from_list": 204,
}


def _reading(value: Any) -> bool | None:
    """True or False for what reads as one (JSON booleans, "true", "0", ...), else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def wanted(value: Any) -> bool:
    """Whether a flag's value asks for a dry run. What is not clearly false does: a flag that
    cannot be read is answered as a dry run's error, never run for real."""
    return _reading(value) is not False


def take_flag(payload: Any) -> tuple[Any, bool]:
    """The payload without its dry-run flag, and whether it asked for a dry run.

    A flag that reads as neither true nor false is a configuration error (nothing is sent).
    """
    if not isinstance(payload, Mapping) or FLAG not in payload:
        return payload, False
    asked = _reading(payload[FLAG])
    if asked is None:
        raise outcomes.NOT_ONE_OF(field=FLAG, choices="true, false")
    return {k: v for k, v in payload.items() if k != FLAG}, asked


def in_payload(payload: Any) -> bool:
    """Whether a lead as received asks for a dry run (or names the flag unreadably)."""
    return isinstance(payload, Mapping) and FLAG in payload and wanted(payload[FLAG])


def in_query(event: Mapping[str, Any]) -> str | None:
    """The ``dry_run`` query parameter of an API Gateway event (REST or HTTP API), if any."""
    query = event.get("queryStringParameters")
    if not isinstance(query, Mapping):
        return None
    value = query.get(FLAG)
    return value if isinstance(value, str) else None


def requested(event: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """Whether an API request asks for a dry run: by its query string, or by its body's flag
    (read here, before the request can touch its Idempotency-Key's record)."""
    query = in_query(event)
    if query is not None:
        return wanted(query)
    try:
        body = parse_body(
            event.get("body"), headers.get("content-type"), bool(event.get("isBase64Encoded"))
        )
    except outcomes.Result:
        return False
    return in_payload(body)


def with_query_flag(lead: Any, event: Mapping[str, Any]) -> Any:
    """The lead with the query string's ``dry_run`` (which wins over the body's)."""
    query = in_query(event)
    if query is None or not isinstance(lead, Mapping):
        return lead
    return {**lead, FLAG: query}


@dataclass
class WouldSend:
    """A dry run's writes: kept instead of sent, each answered as Klaviyo accepts it.

    Profiles read on the way are remembered, so a profile update is answered with the profile
    as the update would leave it.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    _profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keep(self, method: str, path: str, kwargs: Mapping[str, Any]) -> Response:
        body = kwargs.get("body")
        request: dict[str, Any] = {"method": method, "path": path, "body": body}
        if kwargs.get("query"):
            request["query"] = dict(kwargs["query"])
        self.requests.append(request)
        operation = operation_of(method, path)
        status = _ACCEPTED.get(operation, 202)
        answer: Any = None
        if operation in ("create_profile", "update_profile"):
            answer = {"data": self._profile_after(body)}
        return Response(status=status, body=answer, headers={})

    def saw(self, response: Response) -> None:
        """Remember the profiles a read returned (the ground an update is answered on)."""
        data = response.data
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and item.get("type") == "profile" and item.get("id"):
                self._profiles[str(item["id"])] = item

    def _profile_after(self, body: Any) -> dict[str, Any]:
        data = body.get("data") if isinstance(body, dict) else None
        data = data if isinstance(data, dict) else {}
        profile_id = data.get("id")
        before = self._profiles.get(str(profile_id)) if profile_id else None
        profile: dict[str, Any] = (
            copy.deepcopy(before) if before else {"type": "profile", "id": profile_id}
        )
        profile["attributes"] = _merged(profile.get("attributes") or {}, data.get("attributes"))
        return profile


def _merged(before: dict[str, Any], changes: Any) -> dict[str, Any]:
    """Attributes after an update: objects (location, properties) merged key by key."""
    after = dict(before)
    for key, value in (changes or {}).items():
        if isinstance(value, dict) and isinstance(after.get(key), dict):
            after[key] = _merged(after[key], value)
        else:
            after[key] = value
    return after
