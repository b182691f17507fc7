"""Parser and evaluator for Klaviyo's ``filter`` query parameter.

Grammar (what Klaviyo documents for the endpoints the emulator serves)::

    filter     := expression ("," expression)*          # top-level commas mean AND
    expression := "and(" expression ("," expression)* ")"
                | operator "(" field "," value ")"
    value      := 'quoted' | "quoted" | "[" value ("," value)* "]" | bare
    bare       := datetime | number | true | false | null

Strings must be quoted; datetimes must not be (Klaviyo rejects quoted datetimes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, invalid

COMPARISONS = ("greater-than", "greater-or-equal", "less-than", "less-or-equal")
KNOWN_OPERATORS = ("equals", "any", *COMPARISONS)
_UNSUPPORTED_COMBINATORS = ("or", "not")


class FilterSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Quoted:
    """A quoted string literal; kept apart from bare tokens so types can be checked later."""

    text: str


Value = Quoted | datetime | int | float | bool | None | list[Any]


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: Value


@dataclass(frozen=True)
class FieldRule:
    """What one endpoint allows for one field: the spec's ``x-klaviyo-filters`` entry.

    ``kind`` is the value's type (``string``, ``datetime``, ``integer``, ``number`` or
    ``boolean``); ``single`` and ``listed`` are the operators allowed with a scalar and with
    a ``[list]``; ``enum`` restricts string values.
    """

    kind: str
    single: frozenset[str]
    listed: frozenset[str] = frozenset()
    enum: tuple[str, ...] | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"{message} at position {self.pos}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of input"
            raise self.fail(f"expected {char!r} but found {found}")
        self.pos += 1

    def name(self) -> str:
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] in "_-."
        ):
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a name")
        return self.text[start : self.pos]

    def parse(self) -> list[Condition]:
        conditions = self.expressions()
        if self.peek():
            raise self.fail(f"unexpected {self.text[self.pos]!r}")
        return conditions

    def expressions(self) -> list[Condition]:
        conditions = self.expression()
        while self.peek() == ",":
            self.pos += 1
            conditions.extend(self.expression())
        return conditions

    def expression(self) -> list[Condition]:
        operator = self.name()
        self.expect("(")
        if operator == "and":
            conditions = self.expressions()
            self.expect(")")
            return conditions
        if operator in _UNSUPPORTED_COMBINATORS:
            raise FilterSyntaxError(f"'{operator}' is not supported by this endpoint")
        if operator not in KNOWN_OPERATORS:
            raise FilterSyntaxError(f"'{operator}' is not a valid filter operator")
        field = self.name()
        self.expect(",")
        value = self.value()
        self.expect(")")
        return [Condition(operator, field, value)]

    def value(self) -> Value:
        char = self.peek()
        if char in ("'", '"'):
            return self.quoted(char)
        if char == "[":
            self.pos += 1
            items: list[Any] = [self.value()]
            while self.peek() == ",":
                self.pos += 1
                items.append(self.value())
            self.expect("]")
            return items
        return self.bare()

    def quoted(self, quote: str) -> Quoted:
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return Quoted("".join(out))
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated string")

    def bare(self) -> Value:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)] ":
            self.pos += 1
        token = self.text[start : self.pos]
        if not token:
            raise self.fail("expected a value")
        if token in ("true", "false"):
            return token == "true"
        if token == "null":
            return None
        try:
            return int(token)
        except ValueError:
            pass
        try:
            return float(token)
        except ValueError:
            pass
        parsed = parse_datetime(token)
        if parsed is None:
            raise FilterSyntaxError(
                f"{token!r} is not a valid value (quote strings, leave datetimes unquoted)"
            )
        return parsed


def parse_datetime(token: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(token)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse(text: str) -> list[Condition]:
    """Parse without checking fields; raises FilterSyntaxError."""
    if not text.strip():
        raise FilterSyntaxError("empty filter")
    return _Parser(text).parse()


def parse_for(text: str, rules: Mapping[str, FieldRule]) -> list[Condition]:
    """Parse and check against one endpoint's allow-list; raises a 400 ApiError."""
    try:
        conditions = parse(text)
    except FilterSyntaxError as exc:
        raise _bad(f"Invalid filter provided: {exc}.") from exc
    for cond in conditions:
        problem = check(cond, rules)
        if problem is not None:
            raise _bad(problem)
    return conditions


def problems(text: str, rules: Mapping[str, FieldRule]) -> list[str]:
    """What is wrong with ``text`` for these rules, as sentences (empty when allowed)."""
    try:
        conditions = parse(text)
    except FilterSyntaxError as exc:
        return [f"invalid filter: {exc}"]
    return [p for p in (check(c, rules) for c in conditions) if p is not None]


def check(cond: Condition, rules: Mapping[str, FieldRule]) -> str | None:
    """Why ``cond`` is not allowed by ``rules`` (None when it is)."""
    rule = rules.get(cond.field)
    if rule is None:
        return f"'{cond.field}' is not a valid field for this filter."
    is_list = isinstance(cond.value, list)
    allowed = rule.listed if is_list else rule.single
    if cond.operator not in allowed:
        shape = "a list" if is_list else "a single value"
        forms = [f"{op}(..., value)" for op in sorted(rule.single)]
        forms += [f"{op}(..., [values])" for op in sorted(rule.listed)]
        return (
            f"'{cond.operator}' with {shape} is not a valid operator for '{cond.field}'. "
            f"Allowed: {', '.join(forms)}."
        )
    items = cond.value if isinstance(cond.value, list) else [cond.value]
    for item in items:
        if not _VALUE_CHECKS[rule.kind](item):
            return f"'{cond.field}' needs {_VALUE_WORDS[rule.kind]} value."
        if rule.enum is not None and isinstance(item, Quoted) and item.text not in rule.enum:
            return f"'{item.text}' is not a valid value for '{cond.field}'."
    return None


_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, Quoted),
    "datetime": lambda v: isinstance(v, datetime),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
_VALUE_WORDS = {
    "string": "a quoted string",
    "datetime": "an unquoted ISO-8601 datetime",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a true/false",
}


def _bad(detail: str) -> ApiError:
    return invalid(detail, parameter="filter")


Getter = Callable[[Any, str], Any]

# Klaviyo matches emails case-insensitively; every other string field compares exactly.
CASE_INSENSITIVE_FIELDS = frozenset({"email"})


def matches(item: Any, conditions: Iterable[Condition], getter: Getter) -> bool:
    """True when ``item`` satisfies every condition; ``getter(item, field)`` reads a field."""
    return all(_matches_one(getter(item, cond.field), cond) for cond in conditions)


def _norm(value: Any, fold: bool) -> Any:
    if isinstance(value, Quoted):
        return value.text.casefold() if fold else value.text
    return value


def _matches_one(actual: Any, cond: Condition) -> bool:
    if actual is None:
        return False
    fold = cond.field in CASE_INSENSITIVE_FIELDS
    if fold and isinstance(actual, str):
        actual = actual.casefold()
    raw = cond.value if isinstance(cond.value, list) else [cond.value]
    wanted = [_norm(v, fold) for v in raw]
    if cond.operator in ("equals", "any"):
        return actual in wanted
    target = wanted[0]
    if cond.operator == "greater-than":
        return bool(actual > target)
    if cond.operator == "greater-or-equal":
        return bool(actual >= target)
    if cond.operator == "less-than":
        return bool(actual < target)
    return bool(actual <= target)
