"""Kept only so ``bench/throughput.py`` still imports; it does nothing any more.

This module used to wrap the emulator's ``get_profiles`` handler so a search by email read
the emulator's email index instead of testing every stored profile. The emulator now
indexes exact searches itself (``devtools/klaviyo_emulator/search_index.py``: ``equals`` /
``any`` on ``id``, ``email``, ``phone_number`` and ``external_id``, with the same answers), so
``indexed_email_search`` is a no-op. Delete this module once ``bench/throughput.py`` no
longer imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def indexed_email_search() -> Iterator[None]:
    """No-op: the emulator answers exact searches from its own index."""
    yield
