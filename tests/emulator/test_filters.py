"""The filter parser on its own (the HTTP tests cover it per endpoint)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools.klaviyo_emulator.errors import ApiError
from devtools.klaviyo_emulator.filters import (
    Condition,
    FieldRule,
    FilterSyntaxError,
    Quoted,
    matches,
    parse,
    parse_for,
    problems,
)

RULES = {
    "email": FieldRule("string", frozenset({"equals"}), frozenset({"any", "equals"})),
    "created": FieldRule("datetime", frozenset({"greater-than", "less-than"})),
    "list_email": FieldRule("string", frozenset(), frozenset({"any", "equals"})),
    "reason": FieldRule("string", frozenset({"equals"}), enum=("HARD_BOUNCE", "UNSUBSCRIBE")),
    "count": FieldRule("integer", frozenset({"equals"})),
}


def test_parse_shapes() -> None:
    assert parse("equals(email,'a@b.co')") == [Condition("equals", "email", Quoted("a@b.co"))]
    assert parse('any(email,["a","b"])') == [Condition("any", "email", [Quoted("a"), Quoted("b")])]
    assert parse("greater-than(created,2024-01-01T00:00:00Z)") == [
        Condition("greater-than", "created", datetime(2024, 1, 1, tzinfo=UTC))
    ]
    nested = parse('and(equals(a,"1"),and(equals(b,"2"))),equals(c,"3")')
    assert [c.field for c in nested] == ["a", "b", "c"]


def test_quotes_and_escapes() -> None:
    assert parse(r"equals(email,'o\'brien@x.co')")[0].value == Quoted("o'brien@x.co")
    assert parse('equals(email,"has,comma)")')[0].value == Quoted("has,comma)")
    assert parse("equals( email , 'spaced' )")[0].value == Quoted("spaced")


@pytest.mark.parametrize(
    "text",
    ["", "equals", "equals(email)", "equals(email,'x'", "equals(email,'x'))", "equals(email,'x)"],
)
def test_syntax_errors(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        parse(text)


def test_allow_list_errors_are_filter_parameter_400s() -> None:
    with pytest.raises(ApiError) as caught:
        parse_for("equals(phone,'x')", RULES)
    assert (caught.value.status, caught.value.parameter) == (400, "filter")
    for bad in ("any(email,'x')", "less-than(email,'x')", "greater-than(created,'2024-01-01')"):
        with pytest.raises(ApiError):
            parse_for(bad, RULES)


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("equals(list_email,'x')", "'equals' with a single value is not a valid operator"),
        ("equals(reason,'BOUNCED')", "'BOUNCED' is not a valid value for 'reason'"),
        ("equals(count,'3')", "'count' needs an integer value"),
        ("equals(nope,'x')", "'nope' is not a valid field"),
        ("equals(email,", "invalid filter"),
    ],
)
def test_problems_name_what_the_rules_forbid(expression: str, complaint: str) -> None:
    found = problems(expression, RULES)
    assert len(found) == 1 and complaint in found[0], found


def test_list_forms_and_enums_that_the_rules_allow() -> None:
    allowed = "equals(list_email,['x']),any(list_email,['x','y']),equals(reason,'UNSUBSCRIBE')"
    assert problems(allowed + ",equals(count,3)", RULES) == []


def test_matching() -> None:
    conditions = parse_for("any(email,['A@x.co','b@x.co']),greater-than(created,2024-01-01)", RULES)
    row = {"email": "a@X.co", "created": datetime(2024, 6, 1, tzinfo=UTC)}
    assert matches(row, conditions, lambda item, name: item[name])
    row["created"] = datetime(2023, 6, 1, tzinfo=UTC)
    assert not matches(row, conditions, lambda item, name: item[name])
    assert not matches({"email": None, "created": None}, conditions, lambda i, n: i[n])
