"""A bit per row of a file: the rows the check refused, the rows that have their result."""

from __future__ import annotations


def is_set(bits: bytearray, row: int) -> bool:
    return bool(bits[row >> 3] & (1 << (row & 7)))


def set_bit(bits: bytearray, row: int) -> None:
    bits[row >> 3] |= 1 << (row & 7)
