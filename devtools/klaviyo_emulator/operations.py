"""The operations the emulator serves: a handler per operationId, routed by the spec's rules.

Method, path, scopes, limits and payload caps all come from the rules read from Klaviyo's
OpenAPI document (``spec_rules.py``); this module only says which handler serves which
operation. ``OPERATIONS_BY_ID`` pairs each handler with the packaged rules; a request is
dispatched to the handler found there, so a tool may wrap one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .bulk_import import (
    bulk_import_profiles,
    get_bulk_import_profiles_job,
    get_bulk_import_profiles_jobs,
    get_errors_for_bulk_import_profiles_job,
    get_list_for_bulk_import_profiles_job,
    get_list_ids_for_bulk_import_profiles_job,
    get_profile_ids_for_bulk_import_profiles_job,
    get_profiles_for_bulk_import_profiles_job,
)
from .deletion import request_profile_deletion
from .events import bulk_create_events, create_event
from .lists import (
    add_profiles_to_list,
    create_list,
    get_list,
    get_lists,
    get_profile_ids_for_list,
    get_profiles_for_list,
    remove_profiles_from_list,
)
from .profiles import (
    create_or_update_profile,
    create_profile,
    get_profile,
    get_profiles,
    get_segment_ids_for_profile,
    update_profile,
)
from .protocol import Handler
from .segments import get_profile_ids_for_segment, get_profiles_for_segment, get_segment
from .spec_rules import OperationRules, SpecRules, from_table
from .subscribe import bulk_subscribe_profiles
from .unsubscribe import bulk_unsubscribe_profiles

GLOBAL_BODY_LIMIT = 5 * 1024 * 1024  # "Global payload: 5 MB -> 413" (rate limits docs page)

HANDLERS: dict[str, Handler] = {
    "get_profiles": get_profiles,
    "create_profile": create_profile,
    "get_profile": get_profile,
    "update_profile": update_profile,
    "create_or_update_profile": create_or_update_profile,
    "get_segment_ids_for_profile": get_segment_ids_for_profile,
    "bulk_subscribe_profiles": bulk_subscribe_profiles,
    "bulk_unsubscribe_profiles": bulk_unsubscribe_profiles,
    "bulk_import_profiles": bulk_import_profiles,
    "get_bulk_import_profiles_job": get_bulk_import_profiles_job,
    "get_bulk_import_profiles_jobs": get_bulk_import_profiles_jobs,
    "get_profiles_for_bulk_import_profiles_job": get_profiles_for_bulk_import_profiles_job,
    "get_profile_ids_for_bulk_import_profiles_job": get_profile_ids_for_bulk_import_profiles_job,
    "get_errors_for_bulk_import_profiles_job": get_errors_for_bulk_import_profiles_job,
    "get_list_for_bulk_import_profiles_job": get_list_for_bulk_import_profiles_job,
    "get_list_ids_for_bulk_import_profiles_job": get_list_ids_for_bulk_import_profiles_job,
    "create_event": create_event,
    "bulk_create_events": bulk_create_events,
    "request_profile_deletion": request_profile_deletion,
    "get_lists": get_lists,
    "create_list": create_list,
    "get_list": get_list,
    "get_profiles_for_list": get_profiles_for_list,
    "get_profile_ids_for_list": get_profile_ids_for_list,
    "add_profiles_to_list": add_profiles_to_list,
    "remove_profiles_from_list": remove_profiles_from_list,
    "get_segment": get_segment,
    "get_profiles_for_segment": get_profiles_for_segment,
    "get_profile_ids_for_segment": get_profile_ids_for_segment,
}
# What ``make spec-rules`` reads from the OpenAPI document: the operations handled here.
SERVED_OPERATIONS: tuple[str, ...] = tuple(sorted(HANDLERS))


@dataclass(frozen=True)
class Operation:
    rules: OperationRules
    handler: Handler

    @property
    def operation_id(self) -> str:
        return self.rules.operation_id

    @property
    def method(self) -> str:
        return self.rules.method

    @property
    def burst(self) -> int:
        return self.rules.limits["burst"]

    @property
    def steady(self) -> int:
        return self.rules.limits["steady"]

    @property
    def body_limit(self) -> int:
        return self.rules.body_limit or GLOBAL_BODY_LIMIT


_PACKAGED = from_table()
OPERATIONS_BY_ID: dict[str, Operation] = {
    op_id: Operation(_PACKAGED[op_id], handler)
    for op_id, handler in HANDLERS.items()
    if op_id in _PACKAGED  # a new handler waits for make spec-rules (a test says so)
}


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    # Klaviyo serves both /api/profiles and /api/profiles/; the document lists the former.
    return re.compile(f"^{regex}/?$")


class Router:
    def __init__(self, rules: SpecRules) -> None:
        self._routes = [(rules[op_id], _compile(rules[op_id].path)) for op_id in HANDLERS]

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
        """The operation for ``method path``, its path parameters, and the methods allowed."""
        allowed: list[str] = []
        for rules, pattern in self._routes:
            found = pattern.match(path)
            if found is None:
                continue
            allowed.append(rules.method)
            if rules.method == method.upper():
                handler = OPERATIONS_BY_ID[rules.operation_id].handler
                return Operation(rules, handler), found.groupdict(), allowed
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
