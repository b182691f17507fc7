"""Reading a lead file's rows, streaming: CSV (its delimiter sniffed, its header checked) or
JSON Lines, each line within ``MAX_ROW_BYTES``."""

from __future__ import annotations

import collections
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from klaviyo_leads import outcomes
from klaviyo_leads.lead.body import canonical_key, is_known
from klaviyo_leads.lead_files.bucket import FileProblem
from klaviyo_leads.outcomes import Result

# Columns a file may have (a CSV's header; a JSON Lines file's distinct keys, as reported):
# a wider header is refused before anything else is done with it.
MAX_COLUMNS = 1000
# The longest line a file may have (a row of a lead is at most 256 KB, MAX_BODY_BYTES, and the
# columns no action reads); a longer one is a row refused with ROW_TOO_LONG, never held whole.
MAX_ROW_BYTES = 1024 * 1024
# The csv module's limit on one field (128 KiB by default) would refuse a whole file for one
# long cell: the row's limit applies instead.
csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))


@dataclass
class Row:
    """One row: its number (1 = the first after the header; a blank line takes a number, so
    a row's number is its place in the file) and what it holds."""

    number: int
    values: dict[str, Any] | None  # the row's columns as written
    raw: Any  # CSV: the fields; JSON Lines: the object, or the line when it is none
    problem: Result | None = None  # a JSON Lines line that is not a lead, a row too long
    blank: bool = False  # a blank line between rows: counted, nothing sent, no result


@dataclass
class Layout:
    """What the reader learnt about the file."""

    format: str = "csv"
    delimiter: str | None = None
    bom: bool = False
    columns: list[str] = field(default_factory=list)


_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def _sniff_delimiter(line: str) -> str:
    """Comma, semicolon or tab: whichever the header line has most of outside quotes."""
    bare = _QUOTED.sub("", line)
    counts = {d: bare.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Raw(io.RawIOBase):
    """Any object with ``read(n)`` (an S3 body, a file) as a raw stream to buffer."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_rows(stream: IO[bytes], jsonl: bool | None, layout: Layout) -> Iterator[Row]:
    """The file's rows, streaming; ``FileProblem`` for what makes the whole file unreadable.

    ``jsonl`` None: decided by the first character (``{`` is JSON Lines). A line longer than
    ``MAX_ROW_BYTES`` is never held: its row is refused (``ROW_TOO_LONG``) and the rest read on.
    """
    buffered = io.BufferedReader(_Raw(stream), buffer_size=64 * 1024)
    head = buffered.peek(4096)[:4096]
    bom = head.startswith(b"\xef\xbb\xbf")
    layout.bom = bom
    if bom:
        buffered.read(3)
    if not head.removeprefix(b"\xef\xbb\xbf").strip():
        raise FileProblem("The file is empty")
    if jsonl is None:
        jsonl = head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{")
    lines = _Lines(buffered)
    if jsonl:
        layout.format = "jsonl"
        rows = _jsonl_rows(lines, layout)
    else:
        layout.format = "csv"
        rows = _csv_rows(lines, layout)
    yield from _without_trailing_blanks(rows)


class _Lines:
    """A file's lines as text, one at a time and each within ``MAX_ROW_BYTES``: a longer one
    is read on in small pieces, dropped, and marked ``too_long`` (it comes as a blank line).
    ``row`` is the row being read, which a line that is not UTF-8 names."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.row = 0  # 0: the header (JSON Lines: before the first line)
        self.too_long = False

    def __iter__(self) -> Iterator[str]:
        while True:
            line = self._stream.readline(MAX_ROW_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_ROW_BYTES:
                while line and not line.endswith(b"\n"):
                    line = self._stream.readline(64 * 1024)
                self.too_long = True
                yield "\n"
                continue
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"Row {self.row}" if self.row else "The header row"
                raise FileProblem(
                    f"{where} is not valid UTF-8 (byte 0x{line[exc.start]:02X}): save the file "
                    "as UTF-8 (in Excel: Save As, CSV UTF-8; in LibreOffice: Save As, "
                    "Character set Unicode (UTF-8)) and upload it again"
                ) from exc

    def take_too_long(self) -> bool:
        too_long, self.too_long = self.too_long, False
        return too_long


def _too_long() -> Result:
    return outcomes.ROW_TOO_LONG(limit=MAX_ROW_BYTES // 1024)


def _without_trailing_blanks(rows: Iterator[Row]) -> Iterator[Row]:
    """Blank lines between rows, not the ones that end the file (a last newline or two)."""
    blanks: list[Row] = []
    for row in rows:
        if row.blank:
            blanks.append(row)
            continue
        yield from blanks
        blanks.clear()
        yield row


def _csv_rows(lines: _Lines, layout: Layout) -> Iterator[Row]:
    text = iter(lines)
    number = 0
    try:
        first = next(text, "")
        while first and not first.strip() and not lines.too_long:
            first = next(text, "")
        if lines.take_too_long():
            raise FileProblem(f"The header row is longer than {MAX_ROW_BYTES // 1024:,} KB")
        if not first.strip():
            raise FileProblem("The file is empty")
        layout.delimiter = _sniff_delimiter(first)
        reader = csv.reader(itertools.chain([first], text), delimiter=layout.delimiter)
        header = [name.strip() for name in next(reader)]
        if len(header) > MAX_COLUMNS:
            raise FileProblem(
                f"The header has {len(header):,} columns, more than the {MAX_COLUMNS:,} a file "
                "may have"
            )
        _check_header(header)
        layout.columns = header
        data = 0
        while True:
            number += 1
            lines.row = number
            fields = next(reader, None)
            if fields is None:
                break
            if lines.take_too_long():
                yield Row(number, None, [""] * len(header), _too_long())
                data += 1
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                yield Row(number, None, [], blank=True)
                continue
            data += 1
            if len(fields) > len(header):
                raise FileProblem(
                    f"Row {number} has {len(fields)} fields, more than the header's "
                    f"{len(header)} columns (a delimiter inside an unquoted value?)"
                )
            fields += [""] * (len(header) - len(fields))
            values = {name: value for name, value in zip(header, fields, strict=True) if name}
            yield Row(number, values, fields)
    except csv.Error as exc:
        raise FileProblem(f"Row {number} cannot be read as CSV ({exc})") from exc
    if data == 0:
        raise FileProblem("The file has a header but no rows")


def _check_header(header: list[str]) -> None:
    """Every check counts each name once: linear in the header's width."""
    counts = collections.Counter(name for name in header if name)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise FileProblem(f"The header names a column more than once: {', '.join(twice)}")
    if not any(is_known(canonical_key(name)) for name in counts):
        raise FileProblem(
            "The first row is not a header of lead keys: none of its columns is one "
            "(email, phone_1, Email, Phone 1, klaviyo.list_id, ...)"
        )


def _jsonl_rows(lines: _Lines, layout: Layout) -> Iterator[Row]:
    seen: dict[str, None] = {}
    data = 0
    lines.row = 1
    for number, text in enumerate(lines, start=1):
        lines.row = number + 1
        if lines.take_too_long():
            data += 1
            yield Row(number, None, "", _too_long())
            continue
        if not text.strip():
            yield Row(number, None, "", blank=True)
            continue
        data += 1
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            yield Row(number, None, text.rstrip("\r\n"), outcomes.BODY_NOT_JSON())
            continue
        if not isinstance(value, dict):
            yield Row(number, None, value, outcomes.BODY_NOT_OBJECT())
            continue
        for key in value:
            if key not in seen and len(seen) < MAX_COLUMNS:
                seen[key] = None
                layout.columns.append(key)
        yield Row(number, value, value)
    if data == 0:
        raise FileProblem("The file is empty")
