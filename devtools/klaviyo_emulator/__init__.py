"""A local emulator of Klaviyo's REST API (revision 2026-07-15) for tests and benchmarks.

Start one with ``KlaviyoEmulator().start()`` (or as a context manager) and point the client
at ``emulator.base_url``; see ``emulator.py`` for the seeding and inspection helpers and
``faults.py`` for fault injection. ``python -m devtools.klaviyo_emulator`` serves one
standalone.
"""

from .emulator import DEFAULT_API_KEY, DEFAULT_REVISION, KlaviyoEmulator
from .faults import Fault
from .recording import RecordedRequest

__all__ = ["DEFAULT_API_KEY", "DEFAULT_REVISION", "Fault", "KlaviyoEmulator", "RecordedRequest"]
