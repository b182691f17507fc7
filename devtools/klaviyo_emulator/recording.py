"""What the emulator remembers about each request it answered."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault

DROPPED = 0  # ``status`` of a request whose connection was closed without an answer


class HeaderMap(Mapping[str, str]):
    """Read-only headers with case-insensitive lookup (``h["revision"] == h["Revision"]``)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = {name.lower(): (name, value) for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HeaderMap({dict(self.items())!r})"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: HeaderMap
    body: bytes
    status: int
    response_body: bytes
    operation_id: str | None
    response_headers: HeaderMap = field(default_factory=HeaderMap)
    fault: Fault | None = None
    duration: float = 0.0

    def json(self) -> Any:
        """The request body decoded as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None

    def response_json(self) -> Any:
        return json.loads(self.response_body) if self.response_body else None
