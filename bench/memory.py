"""Peak memory of a 1000-lead coalesced Subscribe batch, in a fresh interpreter.

The emulator runs as its own process (``python -m devtools.klaviyo_emulator``), so only the
function's memory is measured. Two fresh interpreters with the function's environment (the
key from the extension stand-in): one only imports the Subscribe function's handler, the
other imports it and runs one SQS event of ``batch_size`` records through it (coalesced).
Each reports ``ru_maxrss``; the difference is what the batch costs. Linux carries the
spawning process's peak into a child's ``ru_maxrss`` across exec (a child of this large
process would report this process's size), so each child is started by a small launcher
interpreter; each also reports ``VmHWM``, its own peak, as a cross-check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.coldstart import function_environment
from bench.standins import secrets_extension
from devtools.klaviyo_emulator import DEFAULT_API_KEY
from devtools.lambda_events import FUNCTIONS_DIR, ROOT, queue_arn, sqs_event, sqs_message

CHILD = Path(__file__).resolve().parent / "memory_child.py"
MARKER = "MEMORY-RESULT "
HANDLER = FUNCTIONS_DIR / "subscribe_profile_to_list" / "app.py"
DEMO_LIST_ID = "Y6nRLr"  # the list ``--seed-demo`` creates


class EmulatorProcess:
    """``python -m devtools.klaviyo_emulator`` on a free port, with the demo list."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.klaviyo_emulator", "--port", "0", "--seed-demo"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base_url = ""
        for line in self.proc.stdout:
            if line.startswith("Klaviyo emulator listening on "):
                self.base_url = line.rsplit(" ", 1)[1].strip()
            if line.startswith("Demo data:"):
                break
        if not self.base_url:
            self.stop()
            raise RuntimeError("the emulator process did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _batch(size: int) -> dict[str, Any]:
    messages = [
        sqs_message(
            json.dumps(
                {
                    "email": f"memory{i:05d}@bench.example.com",
                    "first_name": "Memory",
                    "last_name": f"Lead {i}",
                    "company.name": "Example Co",
                    "klaviyo.list_id": DEMO_LIST_ID,
                }
            )
        )
        for i in range(size)
    ]
    return sqs_event(messages, queue_arn("klaviyo-lead-actions-subscribe-profile-to-list"))


# Starts its arguments as a child process: that child's ru_maxrss then starts from this
# small interpreter's, not from the benchmark's.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _child(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, str(CHILD), str(HANDLER), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise RuntimeError(f"memory child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def measure(batch_size: int = 1000) -> dict[str, Any]:
    emulator = EmulatorProcess()
    try:
        with (
            secrets_extension(DEFAULT_API_KEY) as extension,
            tempfile.TemporaryDirectory(prefix="memory-") as tmp,
        ):
            env = function_environment(emulator.base_url, extension_port=extension.port)
            env["COALESCE_BATCHES"] = "true"
            event_path = Path(tmp) / "event.json"
            event_path.write_text(json.dumps(_batch(batch_size)), encoding="utf-8")
            imported = _child(env)
            batch = _child(env, str(event_path))
    finally:
        emulator.stop()
    return {
        "batch_size": batch_size,
        "import_only_mb": imported["after_import_mb"],
        "batch_mb": batch["after_batch_mb"],
        "batch_cost_mb": batch["after_batch_mb"] - imported["after_import_mb"],
        "import_only_hwm_mb": imported.get("after_import_hwm_mb"),
        "batch_hwm_mb": batch.get("after_batch_hwm_mb"),
        "handed_back": batch["handed_back"],
        "records": batch["records"],
    }
