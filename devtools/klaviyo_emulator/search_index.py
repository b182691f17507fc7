"""Indexes over what filtered search sees, so ``GET /api/profiles`` need not scan every profile.

Filtered search reads each profile's search versions (``Store.search_view``: a profile is
found by the values it had ``search_lag`` seconds ago). This index maps every value that
any held version carries, for the fields search can look up exactly (``email``,
``phone_number``, ``external_id``), to the profiles holding it, counted per version. A
lookup gives candidates only: the handler still reads each candidate's search view and
applies the whole filter, so the answers are exactly those of a full scan.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from .filters import Condition, Quoted
from .model import Profile

INDEXED_FIELDS = ("email", "phone_number", "external_id")
EXACT_OPERATORS = frozenset({"equals", "any"})


def _key(field: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    # Search matches email case-insensitively (filters.CASE_INSENSITIVE_FIELDS).
    return value.casefold() if field == "email" else value


class SearchIndex:
    def __init__(self) -> None:
        # field -> value -> profile id -> how many held versions carry the value
        self._values: dict[str, dict[str, dict[str, int]]] = {f: {} for f in INDEXED_FIELDS}

    def clear(self) -> None:
        for by_value in self._values.values():
            by_value.clear()

    def add(self, version: Profile) -> None:
        for field in INDEXED_FIELDS:
            key = _key(field, version.attributes.get(field))
            if key is not None:
                holders = self._values[field].setdefault(key, {})
                holders[version.id] = holders.get(version.id, 0) + 1

    def remove(self, version: Profile) -> None:
        for field in INDEXED_FIELDS:
            key = _key(field, version.attributes.get(field))
            holders = self._values[field].get(key) if key is not None else None
            if holders is None or version.id not in holders:
                continue
            holders[version.id] -= 1
            if holders[version.id] <= 0:
                del holders[version.id]
                if not holders:
                    del self._values[field][str(key)]

    def candidates(self, conditions: Iterable[Condition], held: Container[str]) -> set[str] | None:
        """Profile ids that may match every condition; None when no condition can use the
        index (the caller scans). ``held`` are the ids of the profiles search holds at all."""
        found: set[str] | None = None
        for cond in conditions:
            if cond.operator not in EXACT_OPERATORS:
                continue
            if cond.field not in (*INDEXED_FIELDS, "id"):
                continue
            raw = cond.value if isinstance(cond.value, list) else [cond.value]
            texts = [v.text for v in raw if isinstance(v, Quoted)]
            if cond.field == "id":
                ids = {t for t in texts if t in held}
            else:
                ids = set()
                for text in texts:
                    key = _key(cond.field, text)
                    if key is not None:
                        ids.update(self._values[cond.field].get(key, ()))
            found = ids if found is None else found & ids
        return found
