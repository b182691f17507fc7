"""Let the emulator answer profile searches by email from its email index.

The emulator's ``GET /api/profiles`` tests every stored profile against the filter: with the
10,000 profiles the Add-to-List runs need, that is about 40 ms of emulator time per search,
which would lengthen the run and, on the virtual clock, count as Klaviyo latency. Klaviyo
answers such a search from an index. Here a search whose filter is only ``equals(email,...)``
or ``any(email,[...])`` is given just the profiles the emulator's own email index names; the
emulator's handler then filters, sorts and pages them exactly as before, so the answers are
unchanged. Rate limits, recording and every other endpoint are untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

from devtools.klaviyo_emulator import operations

_EQUALS = re.compile(r'^equals\(email,"([^"]*)"\)$')
_ANY = re.compile(r'^any\(email,\[("[^"]*"(?:,"[^"]*")*)\]\)$')
_QUOTED = re.compile(r'"([^"]*)"')


@dataclasses.dataclass
class _StoreView:
    """What the search handler reads from the store: its lock and some of its profiles."""

    lock: Any
    profiles: dict[str, Any]


def _emails(raw_filter: str | None) -> list[str] | None:
    if not raw_filter:
        return None
    found = _EQUALS.match(raw_filter)
    if found:
        return [found.group(1)]
    found = _ANY.match(raw_filter)
    if found:
        return _QUOTED.findall(found.group(1))
    return None


def _indexed(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def get_profiles(ctx: Any) -> Any:
        emails = _emails(ctx.args.get("filter"))
        if emails is None:
            return original(ctx)
        store = ctx.store
        with store.lock:
            candidates = {}
            for email in emails:
                profile_id = store.find_by_email(email)
                if profile_id is not None and profile_id in store.profiles:
                    candidates[profile_id] = store.profiles[profile_id]
        return original(dataclasses.replace(ctx, store=_StoreView(store.lock, candidates)))

    return get_profiles


@contextlib.contextmanager
def indexed_email_search() -> Iterator[None]:
    """While active, every emulator in this process searches emails through its index."""
    op = operations.OPERATIONS_BY_ID["get_profiles"]
    original = op.handler
    object.__setattr__(op, "handler", _indexed(original))
    try:
        yield
    finally:
        object.__setattr__(op, "handler", original)
