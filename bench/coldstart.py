"""Cold start: fresh interpreters, from their start to the first lead answered.

Each run spawns ``bench/cold_child.py`` in a new interpreter with the function's
environment and one API Gateway event (Create Profile, a new email each run). The time is
taken by this process from just before the spawn to the moment the child's answer line
arrives (interpreter start, imports, reading the secret, the Klaviyo call); the child adds
its own breakdown measured from its first line. Variants:

- ``ours_extension``: our Create Profile function, the key from the Parameters and Secrets
  Lambda Extension (a local stand-in), as in Lambda with the extension layer.
- ``ours_boto3``: our function, the key through Powertools Parameters (boto3) from the stack's
  secret in moto.
- ``baseline``: ``bench/baseline_handler.py``, the common way (boto3 client at import,
  klaviyo-api SDK, Powertools Logger and Tracer), the key from the same moto server.

Bytecode is compiled first (``compileall``) so every variant imports ``.pyc`` files, as a
deployed package does; one discarded run per variant warms the OS file cache alike.
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.standins import SECRET_NAME, SESSION_TOKEN, deployed_stack, secrets_extension
from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator
from devtools.lambda_events import FUNCTIONS_DIR, LAYER_DIR, api_gateway_event

BENCH_DIR = Path(__file__).resolve().parent
CHILD = BENCH_DIR / "cold_child.py"
MARKER = "COLD-START-RESULT "
OURS = FUNCTIONS_DIR / "create_profile" / "app.py"
BASELINE = BENCH_DIR / "baseline_handler.py"
# klaviyo-api sends its own revision; the emulator must accept it (ours is older).
SDK_REVISION = "2026-10-15"

VARIANTS = {
    "ours_extension": "ours, key from the Parameters and Secrets extension",
    "ours_boto3": "ours, key via Powertools Parameters (boto3)",
    "baseline": "baseline: boto3 client + klaviyo-api SDK + Logger + Tracer",
}

# Variables of this shell that would change how the child imports or what it talks to.
_DROPPED_PREFIXES = ("AWS_", "POWERTOOLS_", "KLAVIYO_", "PARAMETERS_SECRETS_", "BOTO")
_DROPPED = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPATH",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONSTARTUP",
    "PYTHONVERBOSE",
    "PYTHONNOUSERSITE",
    "COALESCE_BATCHES",
    "DEFAULT_PHONE_REGION",
    "IDEMPOTENCY_TABLE_NAME",
    "RESULTS_EVENT_BUS_NAME",
}


def precompile() -> None:
    """Write ``.pyc`` files for everything the children import."""
    paths = sysconfig.get_paths()
    for directory in {LAYER_DIR, FUNCTIONS_DIR, BENCH_DIR, paths["purelib"], paths["platlib"]}:
        compileall.compile_dir(str(directory), quiet=2, workers=2)


def function_environment(
    base_url: str,
    secret_id: str = SECRET_NAME,
    *,
    moto_url: str | None = None,
    extension_port: int | None = None,
) -> dict[str, str]:
    """The function's environment: template.yaml's variables, credentials, the layer path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
    }
    env.update(
        {
            "PYTHONPATH": str(LAYER_DIR),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
            "POWERTOOLS_SERVICE_NAME": "klaviyo-lead-actions",
            "POWERTOOLS_METRICS_NAMESPACE": "KlaviyoLeadActions",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "KLAVIYO_API_KEY_SECRET_ID": secret_id,
            "KLAVIYO_BASE_URL": base_url,
        }
    )
    if moto_url:
        env["AWS_ENDPOINT_URL"] = moto_url
    if extension_port:
        env["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] = str(extension_port)
    return env


def run_child(handler: Path, event: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter: the child's report plus the wall time seen from here."""
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        event_path = Path(tmp) / "event.json"
        event_path.write_text(json.dumps(event), encoding="utf-8")
        stderr_path = Path(tmp) / "stderr.txt"
        with stderr_path.open("w") as stderr:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(handler), str(event_path)],
                env=env,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            report: dict[str, Any] | None = None
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MARKER):
                    wall = time.perf_counter() - started
                    report = json.loads(line[len(MARKER) :])
                    report["wall_s"] = wall
                    break
            proc.stdout.read()
            proc.wait(timeout=60)
        if report is None:
            raise RuntimeError(
                f"cold-start child for {handler.name} failed (exit {proc.returncode}):\n"
                + stderr_path.read_text()[-3000:]
            )
    return report


def _event(email: str) -> dict[str, Any]:
    body = json.dumps({"email": email, "first_name": "Cold", "last_name": "Start"})
    return api_gateway_event(
        "POST", "/create-profile", headers={"Content-Type": "application/json"}, body=body
    )


def _succeeded(variant: str, report: dict[str, Any]) -> bool:
    if report.get("status") != 200:
        return False
    body = json.loads(report.get("body") or "{}")
    return body.get("outcome") == "success" and bool(body.get("id"))


def measure(runs: int, progress: Any = None) -> dict[str, Any]:
    precompile()
    emulator = KlaviyoEmulator(revision=SDK_REVISION).start()
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    failures: list[str] = []
    try:
        with (
            deployed_stack(DEFAULT_API_KEY) as stack,
            secrets_extension(DEFAULT_API_KEY, stack.secret_arn) as extension,
        ):
            moto_url, secret = stack.endpoint_url, stack.secret_arn
            envs = {
                "ours_extension": function_environment(
                    emulator.base_url, secret, moto_url=moto_url, extension_port=extension.port
                ),
                "ours_boto3": function_environment(emulator.base_url, secret, moto_url=moto_url),
                "baseline": function_environment(emulator.base_url, secret, moto_url=moto_url),
            }
            handlers = {"ours_extension": OURS, "ours_boto3": OURS, "baseline": BASELINE}
            for run in range(-1, runs):  # run -1 warms the file cache and is not counted
                for name in VARIANTS:
                    email = f"cold-{name.replace('_', '-')}-{run + 1}-{time.time_ns()}@example.com"
                    report = run_child(handlers[name], _event(email), envs[name])
                    if not _succeeded(name, report):
                        failures.append(
                            f"{name}: status {report.get('status')} {report.get('body')}"
                        )
                    if run >= 0:
                        samples[name].append(report)
                if progress:
                    progress(run + 1, runs)
            extension_requests = extension.requests
    finally:
        emulator.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name]) * 1000.0

    results: dict[str, Any] = {"runs": runs, "variants": {}, "failures": failures}
    for name, title in VARIANTS.items():
        results["variants"][name] = {
            "title": title,
            "median_ms": median(name, "wall_s"),
            "min_ms": min(s["wall_s"] for s in samples[name]) * 1000.0,
            "max_ms": max(s["wall_s"] for s in samples[name]) * 1000.0,
            "child_median_ms": {
                key: median(name, f"{key}_s")
                for key in ("bootstrap", "import", "first_answer", "total")
            },
            "samples_ms": [s["wall_s"] * 1000.0 for s in samples[name]],
        }
    variants = results["variants"]
    baseline = variants["baseline"]["median_ms"]
    results["ratio_ours_extension_to_baseline"] = variants["ours_extension"]["median_ms"] / baseline
    results["ratio_ours_boto3_to_baseline"] = variants["ours_boto3"]["median_ms"] / baseline
    results["extension_requests"] = extension_requests
    return results
