"""Peak memory of one coalesced SQS batch (10,000 records by default), in a fresh interpreter.

The emulator runs as its own process (``bench.emulator_process``), so only the function's
memory is measured. Two fresh interpreters with the function's environment (the key from
the extension stand-in): one only imports the action's handler, the other imports it and
runs one SQS event of ``batch_size`` records of the action's lead mix through it
(coalesced). Create Profile is the heaviest: the batch is searched for duplicates, sent as
one import job of up to 10,000 profiles and read back page by page.
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
from bench.emulator_process import EmulatorProcess
from bench.mixes import Account
from bench.mixes import lead as mixed_lead
from bench.standins import secrets_extension
from devtools.klaviyo_emulator import DEFAULT_API_KEY
from devtools.lambda_events import FUNCTIONS_DIR, ROOT, queue_arn, sqs_event, sqs_message

CHILD = Path(__file__).resolve().parent / "memory_child.py"
MARKER = "MEMORY-RESULT "


def _batch(action: str, size: int, account: Account) -> dict[str, Any]:
    messages = [sqs_message(json.dumps(mixed_lead(action, i, account))) for i in range(size)]
    return sqs_event(messages, queue_arn(f"klaviyo-lead-actions-{action.replace('_', '-')}"))


# Starts its arguments as a child process: that child's ru_maxrss then starts from this
# small interpreter's, not from the benchmark's.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _child(env: dict[str, str], action: str, *args: str) -> dict[str, Any]:
    handler = FUNCTIONS_DIR / action / "app.py"
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, str(CHILD), str(handler), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{") and "_aws" in line:  # the metrics (EMF) the handler wrote
            metrics = json.loads(line)
            for name in ("LeadSucceeded", "LeadFailed", "LeadErrored"):
                if name in metrics:
                    value = metrics[name]
                    total = sum(value) if isinstance(value, list) else value
                    outcomes[name] = outcomes.get(name, 0) + float(total)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return {**json.loads(line[len(MARKER) :]), "outcomes": outcomes}
    raise RuntimeError(f"memory child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def measure(action: str = "create_profile", batch_size: int = 10_000) -> dict[str, Any]:
    # Limits out of reach: the pacer would spread the job's pages over a minute, which
    # changes nothing in memory but costs the run's time.
    emulator = EmulatorProcess(profiles=min(batch_size, 2_000), unlimited=True)
    account = Account(**emulator.account)
    try:
        with (
            secrets_extension(DEFAULT_API_KEY) as extension,
            tempfile.TemporaryDirectory(prefix="memory-") as tmp,
        ):
            env = function_environment(emulator.base_url, extension_port=extension.port)
            env["COALESCE_BATCHES"] = "true"
            event_path = Path(tmp) / "event.json"
            event_path.write_text(json.dumps(_batch(action, batch_size, account)), encoding="utf-8")
            imported = _child(env, action)
            batch = _child(env, action, str(event_path))
            event_mb = event_path.stat().st_size / 1024 / 1024
    finally:
        emulator.stop()
    return {
        "action": action,
        "batch_size": batch_size,
        "event_mb": event_mb,
        "outcomes": batch["outcomes"],
        "import_only_mb": imported["after_import_mb"],
        "batch_mb": batch["after_batch_mb"],
        "batch_cost_mb": batch["after_batch_mb"] - imported["after_import_mb"],
        "import_only_hwm_mb": imported.get("after_import_hwm_mb"),
        "batch_hwm_mb": batch.get("after_batch_hwm_mb"),
        "handed_back": batch["handed_back"],
        "records": batch["records"],
    }
