"""Query-parameter handling shared by the collection endpoints: paging, sorting, fields."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from werkzeug.datastructures import MultiDict

from .errors import invalid

T = TypeVar("T")


@dataclass(frozen=True)
class Paging:
    default: int = 20
    maximum: int = 100


def comma_list(args: MultiDict[str, str], name: str, allowed: Sequence[str]) -> list[str]:
    """A ``style=form, explode=false`` array parameter, checked against its enum."""
    raw = args.get(name)
    if raw is None:
        return []
    values = [v for v in raw.split(",") if v]
    for value in values:
        if value not in allowed:
            raise invalid(
                f"'{value}' is not an allowed value for '{name}'. Allowed: {', '.join(allowed)}.",
                parameter=name,
            )
    return values


def include(args: MultiDict[str, str], allowed: Sequence[str]) -> list[str]:
    values = [v for v in (args.get("include") or "").split(",") if v]
    for value in values:
        if value not in allowed:
            raise invalid(
                f"'{value}' is not an allowed include parameter for this resource.",
                parameter="include",
            )
    return values


def sort_key(args: MultiDict[str, str], allowed: Sequence[str]) -> tuple[str | None, bool]:
    """``(field, descending)``; ``(None, False)`` when no sort was asked for."""
    raw = args.get("sort")
    if raw is None:
        return None, False
    if raw.lstrip("-") not in allowed:
        options = ", ".join(f"{f}, -{f}" for f in allowed)
        raise invalid(
            f"'{raw}' is not a valid sort value. Valid values: {options}.", parameter="sort"
        )
    return raw.lstrip("-"), raw.startswith("-")


def sort_items(
    items: list[T], key: Callable[[T], Any], tiebreak: Callable[[T], Any], descending: bool
) -> list[T]:
    """Stable sort with empty values last when ascending and first when descending."""
    present = [i for i in items if key(i) is not None]
    missing = [i for i in items if key(i) is None]
    present.sort(key=lambda i: (key(i), tiebreak(i)), reverse=descending)
    missing.sort(key=tiebreak, reverse=descending)
    return missing + present if descending else present + missing


def page_size(args: MultiDict[str, str], paging: Paging) -> int:
    raw = args.get("page[size]")
    if raw is None:
        return paging.default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= paging.maximum:
        raise invalid(
            f"'page[size]' must be an integer between 1 and {paging.maximum}.",
            parameter="page[size]",
        )
    return size


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
    items: list[T], args: MultiDict[str, str], paging: Paging, url: str
) -> tuple[list[T], dict[str, str | None]]:
    """The current page and its ``links`` (``next``/``prev`` are full URLs or null)."""
    size = page_size(args, paging)
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
