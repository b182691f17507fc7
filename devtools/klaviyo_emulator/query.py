"""Query parameters: checked against the operation's rules, then paging and sorting helpers."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from werkzeug.datastructures import MultiDict

from .errors import invalid
from .filters import Condition, parse_for
from .spec_rules import OperationRules, PageSize

T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    """An operation's query parameters, checked against its rules from the document."""

    conditions: list[Condition] = field(default_factory=list)
    sort: str | None = None
    descending: bool = False
    page_size: int = 20
    lists: dict[str, list[str]] = field(default_factory=dict)  # enum parameters by name

    def values(self, name: str) -> list[str]:
        """The values of an enum parameter such as ``fields[profile]`` or ``include``."""
        return self.lists.get(name, [])

    def fields(self, resource_type: str) -> list[str] | None:
        """The sparse fieldset asked for ``resource_type``; None when all fields are."""
        return self.lists.get(f"fields[{resource_type}]")


def parse(args: MultiDict[str, str], rules: OperationRules) -> Query:
    """Check every parameter the document constrains; 400 naming the parameter otherwise.

    Parameters the document does not define for the operation are ignored, as the live
    API is assumed to do; the contract check reports them.
    """
    lists = {
        name: _enum_values(args, name, allowed)
        for name, allowed in rules.enums.items()
        if name in args
    }
    conditions: list[Condition] = []
    raw_filter = args.get("filter")
    if raw_filter is not None and rules.filters is not None:
        conditions = parse_for(raw_filter, rules.filters)
    sort, descending = None, False
    raw_sort = args.get("sort")
    if raw_sort is not None and rules.sort is not None:
        if raw_sort not in rules.sort:
            raise invalid(
                f"'{raw_sort}' is not a valid sort value. Valid values: {', '.join(rules.sort)}.",
                parameter="sort",
            )
        sort, descending = raw_sort.lstrip("-"), raw_sort.startswith("-")
    size = rules.page_size.default if rules.page_size is not None else 0
    if rules.page_size is not None and "page[size]" in args:
        size = _page_size(args["page[size]"], rules.page_size)
    return Query(conditions, sort, descending, size, lists)


def _enum_values(args: MultiDict[str, str], name: str, allowed: Sequence[str]) -> list[str]:
    """A ``style=form, explode=false`` array parameter, checked against its enum."""
    values = [v for v in args.get(name, "").split(",") if v]
    for value in values:
        if value in allowed:
            continue
        if name == "include":  # the wording Klaviyo's docs show for this parameter
            detail = f"'{value}' is not an allowed include parameter for this resource."
        else:
            detail = (
                f"'{value}' is not an allowed value for '{name}'. Allowed: {', '.join(allowed)}."
            )
        raise invalid(detail, parameter=name)
    return values


def _page_size(raw: str, bounds: PageSize) -> int:
    try:
        size = int(raw)
    except ValueError:
        size = bounds.minimum - 1
    if not bounds.minimum <= size <= bounds.maximum:
        raise invalid(
            f"'page[size]' must be an integer between {bounds.minimum} and {bounds.maximum}.",
            parameter="page[size]",
        )
    return size


def sort_items(
    items: list[T], key: Callable[[T], Any], tiebreak: Callable[[T], Any], descending: bool
) -> list[T]:
    """Stable sort with empty values last when ascending and first when descending."""
    present = [i for i in items if key(i) is not None]
    missing = [i for i in items if key(i) is None]
    present.sort(key=lambda i: (key(i), tiebreak(i)), reverse=descending)
    missing.sort(key=tiebreak, reverse=descending)
    return missing + present if descending else present + missing


def encode_cursor(offset: int) -> str:
    raw = json.dumps({"o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(args: MultiDict[str, str]) -> int:
    raw = args.get("page[cursor]")
    if raw is None:
        return 0
    try:
        padded = raw + "=" * (-len(raw) % 4)
        offset = json.loads(base64.urlsafe_b64decode(padded.encode()))["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise invalid("Invalid page cursor.", parameter="page[cursor]") from exc
    return offset


def paginate(
    items: list[T], args: MultiDict[str, str], size: int, url: str
) -> tuple[list[T], dict[str, str | None]]:
    """The current page and its ``links`` (``next``/``prev`` are full URLs or null)."""
    offset = decode_cursor(args)
    page = items[offset : offset + size]
    next_offset = offset + size if offset + size < len(items) else None
    prev_offset = max(0, offset - size) if offset > 0 else None
    links: dict[str, str | None] = {
        "self": page_url(url, args, offset if "page[cursor]" in args else None),
        "next": page_url(url, args, next_offset) if next_offset is not None else None,
        "prev": page_url(url, args, prev_offset) if prev_offset is not None else None,
    }
    return page, links


def page_url(url: str, args: MultiDict[str, str], offset: int | None) -> str:
    pairs = [(k, v) for k, v in args.items(multi=True) if k != "page[cursor]"]
    if offset is not None:
        pairs.append(("page[cursor]", encode_cursor(offset)))
    if not pairs:
        return url
    return f"{url}?{urlencode(pairs, quote_via=quote, safe='')}"
