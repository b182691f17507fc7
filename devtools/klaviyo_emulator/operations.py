"""The operations the emulator serves, with the spec's scopes and rate-limit tiers.

The values are copied from the 2026-07-15 OpenAPI document (``x-klaviyo-scopes`` and
``x-klaviyo-ratelimit``) so the emulator runs without it; a test compares them with the spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import handlers
from .handlers import Handler

TIER_L = (75, 750)
TIER_M = (10, 150)
TIER_S = (3, 60)
PROFILE_BODY_LIMIT = 100 * 1024  # "Profile create / update / import payload: 100 KB"
GLOBAL_BODY_LIMIT = 5 * 1024 * 1024


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    scopes: tuple[str, ...]
    burst: int
    steady: int
    handler: Handler
    body_limit: int = GLOBAL_BODY_LIMIT

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.template)


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{regex}/?$")


def _op(
    operation_id: str,
    method: str,
    template: str,
    scopes: tuple[str, ...],
    tier: tuple[int, int],
    handler: Handler,
    body_limit: int = GLOBAL_BODY_LIMIT,
) -> Operation:
    return Operation(operation_id, method, template, scopes, tier[0], tier[1], handler, body_limit)


OPERATIONS: tuple[Operation, ...] = (
    _op("get_profiles", "GET", "/api/profiles", ("profiles:read",), TIER_L, handlers.get_profiles),
    _op(
        "create_profile",
        "POST",
        "/api/profiles",
        ("profiles:write",),
        TIER_L,
        handlers.create_profile,
        PROFILE_BODY_LIMIT,
    ),
    _op(
        "get_profile", "GET", "/api/profiles/{id}", ("profiles:read",), TIER_L, handlers.get_profile
    ),
    _op(
        "update_profile",
        "PATCH",
        "/api/profiles/{id}",
        ("profiles:write",),
        TIER_L,
        handlers.update_profile,
        PROFILE_BODY_LIMIT,
    ),
    _op(
        "create_or_update_profile",
        "POST",
        "/api/profile-import",
        ("profiles:write",),
        TIER_L,
        handlers.create_or_update_profile,
        PROFILE_BODY_LIMIT,
    ),
    _op(
        "get_segment_ids_for_profile",
        "GET",
        "/api/profiles/{id}/relationships/segments",
        ("profiles:read", "segments:read"),
        TIER_S,
        handlers.get_segment_ids_for_profile,
    ),
    _op(
        "bulk_subscribe_profiles",
        "POST",
        "/api/profile-subscription-bulk-create-jobs",
        ("lists:write", "profiles:write", "subscriptions:write"),
        TIER_L,
        handlers.bulk_subscribe_profiles,
    ),
    _op("get_lists", "GET", "/api/lists", ("lists:read",), TIER_L, handlers.get_lists),
    _op("create_list", "POST", "/api/lists", ("lists:write",), TIER_M, handlers.create_list),
    _op("get_list", "GET", "/api/lists/{id}", ("lists:read",), TIER_L, handlers.get_list),
    _op(
        "get_profiles_for_list",
        "GET",
        "/api/lists/{id}/profiles",
        ("lists:read", "profiles:read"),
        TIER_L,
        handlers.get_profiles_for_list,
    ),
    _op(
        "get_profile_ids_for_list",
        "GET",
        "/api/lists/{id}/relationships/profiles",
        ("lists:read", "profiles:read"),
        TIER_L,
        handlers.get_profile_ids_for_list,
    ),
    _op(
        "add_profiles_to_list",
        "POST",
        "/api/lists/{id}/relationships/profiles",
        ("lists:write", "profiles:write"),
        TIER_M,
        handlers.add_profiles_to_list,
    ),
    _op(
        "remove_profiles_from_list",
        "DELETE",
        "/api/lists/{id}/relationships/profiles",
        ("lists:write", "profiles:write"),
        TIER_M,
        handlers.remove_profiles_from_list,
    ),
    _op(
        "get_segment", "GET", "/api/segments/{id}", ("segments:read",), TIER_L, handlers.get_segment
    ),
    _op(
        "get_profiles_for_segment",
        "GET",
        "/api/segments/{id}/profiles",
        ("profiles:read", "segments:read"),
        TIER_L,
        handlers.get_profiles_for_segment,
    ),
    _op(
        "get_profile_ids_for_segment",
        "GET",
        "/api/segments/{id}/relationships/profiles",
        ("profiles:read", "segments:read"),
        TIER_L,
        handlers.get_profile_ids_for_segment,
    ),
)
OPERATIONS_BY_ID = {op.operation_id: op for op in OPERATIONS}
_PATTERNS = [(op, op.pattern) for op in OPERATIONS]


def match(method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
    """The operation for ``method path``, its path parameters, and the methods the path allows."""
    allowed: list[str] = []
    for op, pattern in _PATTERNS:
        found = pattern.match(path)
        if found is None:
            continue
        allowed.append(op.method)
        if op.method == method.upper():
            return op, found.groupdict(), allowed
    return None, {}, allowed


def granted(scopes: set[str] | frozenset[str] | None, needed: tuple[str, ...]) -> list[str]:
    """The scopes in ``needed`` the key lacks; ``None`` scopes means a full-access key.

    A ``:write`` scope implies ``:read`` on the same resource, as a Klaviyo private key with
    "Full Access" on a resource can also read it.
    """
    if scopes is None:
        return []
    have = set(scopes) | {s.replace(":write", ":read") for s in scopes if s.endswith(":write")}
    return [s for s in needed if s not in have]
