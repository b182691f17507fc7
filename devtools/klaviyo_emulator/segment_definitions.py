"""Rule-based segments: a simple definition evaluated against a profile after it changes.

Klaviyo's segment definitions (condition groups over events, properties, consent, list
membership...) are far richer; the emulator needs only enough to show that membership
follows a profile's data, after ``segment_lag``. A definition is either a callable taking
the profile's attributes (as ``GET /api/profiles/{id}?additional-fields[profile]=subscriptions``
shows them) or, in JSON, a list of conditions that must all hold::

    [{"field": "properties.tier", "operator": "equals", "value": "gold"},
     {"field": "location.country", "operator": "any", "value": ["US", "CA"]}]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]
Definition = Predicate | Sequence[Mapping[str, Any]]

_MISSING = object()
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda actual, wanted: actual == wanted,
    "not-equals": lambda actual, wanted: actual != wanted,
    "any": lambda actual, wanted: actual in wanted,
    "exists": lambda actual, wanted: (actual not in (None, _MISSING)) == bool(wanted),
    "contains": lambda actual, wanted: isinstance(actual, str | list) and wanted in actual,
    "greater-than": lambda actual, wanted: actual is not None and actual > wanted,
    "less-than": lambda actual, wanted: actual is not None and actual < wanted,
}


def compile_definition(definition: Definition) -> Predicate:
    """A predicate over profile attributes; ValueError for a malformed JSON definition."""
    if callable(definition):
        return definition
    conditions = [_condition(c) for c in definition]
    return lambda attributes: all(c(attributes) for c in conditions)


def _condition(raw: Mapping[str, Any]) -> Predicate:
    if not isinstance(raw, Mapping) or "field" not in raw or "operator" not in raw:
        raise ValueError("a segment condition needs 'field' and 'operator'")
    operator = _OPERATORS.get(raw["operator"])
    if operator is None:
        raise ValueError(f"segment operators: {', '.join(_OPERATORS)}")
    path = str(raw["field"]).split(".")
    wanted = raw.get("value", True)

    def holds(attributes: Mapping[str, Any]) -> bool:
        actual = _lookup(attributes, path)
        if actual is _MISSING and raw["operator"] != "exists":
            return False
        try:
            return bool(operator(actual, wanted))
        except TypeError:  # comparing a string with a number, say: not a member
            return False

    return holds


def _lookup(attributes: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = attributes
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value
