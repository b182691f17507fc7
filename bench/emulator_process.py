"""One Klaviyo account in its own OS process, for the parts that measure a process alone.

``python -m bench.emulator_process '<json settings>'`` starts the emulator with the given
constructor settings (and ``unlimited``: every rate limit out of reach), seeds the
benchmark's account (``profiles`` existing people, the list and the segment of
``bench.mixes``), prints one line ``EMULATOR {json}`` with its base URL and the account, and
serves until its standard input closes. Then it prints ``STATS {json}``: how many requests it
answered, per API key, operation and status.

``EmulatorProcess`` starts and stops it from the benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
READY = "EMULATOR "
STATS = "STATS "


class EmulatorProcess:
    """The emulator as a child process; ``stop()`` returns what it answered."""

    def __init__(self, profiles: int = 0, **settings: Any) -> None:
        config = {"profiles": profiles, **settings}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.emulator_process", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        ready: dict[str, Any] | None = None
        for line in self.proc.stdout:
            if line.startswith(READY):
                ready = json.loads(line[len(READY) :])
                break
        if ready is None:
            self.proc.kill()
            raise RuntimeError("the emulator process did not start")
        self.base_url: str = ready["base_url"]
        self.account: dict[str, Any] = ready["account"]
        self.profile_ids: list[str] = ready["profile_ids"]

    def stop(self) -> dict[str, Any]:
        """Close its input; it answers with its request log, then exits."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        stats: dict[str, Any] = {}
        try:
            self.proc.stdin.close()
            for line in self.proc.stdout:
                if line.startswith(STATS):
                    stats = json.loads(line[len(STATS) :])
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        return stats


def main() -> int:
    from devtools.lambda_events import ensure_layer_on_path

    ensure_layer_on_path()
    from bench.mixes import existing_email, seed_account
    from devtools.klaviyo_emulator import KlaviyoEmulator

    settings = json.loads(sys.argv[1])
    profiles = int(settings.pop("profiles", 0))
    unlimited = bool(settings.pop("unlimited", False))
    if "api_keys" in settings:
        settings["api_keys"] = {key: None for key in settings["api_keys"]}
    emulator = KlaviyoEmulator(**settings)
    if unlimited:
        # Limits far out of reach: the headers never tell a client to slow down.
        from devtools.klaviyo_emulator.operations import OPERATIONS_BY_ID

        emulator.set_rate_limits(False, dict.fromkeys(OPERATIONS_BY_ID, (10**6, 10**8)))
    account = seed_account(emulator, profiles)
    emulator.start()
    by_email = {p["attributes"]["email"]: p["id"] for p in emulator.profiles()}
    ids = [by_email[existing_email(i)] for i in range(profiles)]
    ready = {"base_url": emulator.base_url, "account": asdict(account), "profile_ids": ids}
    print(READY + json.dumps(ready), flush=True)
    sys.stdin.read()  # until the benchmark closes it
    emulator.stop()
    counts: dict[str, int] = defaultdict(int)
    for request in emulator.requests:
        key = request.headers.get("Authorization", "").rsplit(" ", 1)[-1]
        counts[f"{key}|{request.operation_id}|{request.status}"] += 1
    print(STATS + json.dumps({"requests": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
