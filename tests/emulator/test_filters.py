"""The filter parser on its own (the HTTP tests cover it per endpoint)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools.klaviyo_emulator.errors import ApiError
from devtools.klaviyo_emulator.filters import (
    Condition,
    FilterSyntaxError,
    Quoted,
    datetime_field,
    matches,
    parse,
    parse_for,
    string_field,
)

RULES = {
    "email": string_field(["equals"], ["any", "equals"]),
    "created": datetime_field(["greater-than", "less-than"]),
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


def test_matching() -> None:
    conditions = parse_for("any(email,['A@x.co','b@x.co']),greater-than(created,2024-01-01)", RULES)
    row = {"email": "a@X.co", "created": datetime(2024, 6, 1, tzinfo=UTC)}
    assert matches(row, conditions, lambda item, name: item[name])
    row["created"] = datetime(2023, 6, 1, tzinfo=UTC)
    assert not matches(row, conditions, lambda item, name: item[name])
    assert not matches({"email": None, "created": None}, conditions, lambda i, n: i[n])
