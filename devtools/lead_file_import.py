"""A lead file through the local stack, as the deployed lead-files bucket takes it.

    python -m devtools.lead_file_import leads.csv subscribe_profile_to_list [--dry-run]
        [--metadata klaviyo.list_id=Y6nRLr ...]

The file goes into the stack's bucket in moto under ``<action>/`` (``dry-run/<action>/``), the
splitter runs on the "Object Created" event S3 would send, the action's queue is drained the
way Lambda's event source mapping drains it, and the assembler looks at the run until every
row has its result (on a running ``make serve``'s stack when there is one, as ``make invoke``
does). The report and the results file are written beside the input
(``leads.csv.report.json``, ``leads.csv.results.csv``); the last line names the results file.
When the results carry each row's consent (Get Profiles, Subscribe: ``email_consent``,
``sms_consent``), a line per channel before it counts them: the consent report ("who on this
list can we email or text?"). Exit
0 when every row got a result, whatever the outcomes; 1 when the file was not taken (its
report says why); 2 for a missing file or an unknown action.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import aws
from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from klaviyo_leads.actions.table import ACTIONS  # noqa: E402
from klaviyo_leads.handlers import lead_files as lead_file_handlers  # noqa: E402
from klaviyo_leads.lead_files.assembler import check_run  # noqa: E402
from klaviyo_leads.lead_files.bucket import DRY_RUN_PREFIX, RUNS_PREFIX, is_jsonl_name, target_of  # noqa: E402
from klaviyo_leads.lead_files.results_file import result_columns  # noqa: E402
from klaviyo_leads.lead_files.storage import Services  # noqa: E402

MAX_ROUNDS = 10_000  # queue drains and looks: a bound, never reached by a file that finishes


def function_environment(sandbox: Any, logical_id: str) -> dict[str, str]:
    stack = sandbox.stack()
    configuration = aws.client("lambda", stack.endpoint_url).get_function_configuration(
        FunctionName=stack.physical_ids[logical_id]
    )
    return {k: str(v) for k, v in configuration["Environment"]["Variables"].items()}


def services_of(sandbox: Any, **overrides: Any) -> Services:
    """The splitter's and the assembler's view of the stack (their deployed environments)."""
    endpoint = sandbox.stack().endpoint_url
    env = {
        **function_environment(sandbox, "LeadFileSplitterFunction"),
        **function_environment(sandbox, "LeadFileAssemblerFunction"),
    }
    services = Services.from_env(env)
    services.s3 = aws.client("s3", endpoint)
    services.sqs = aws.client("sqs", endpoint)
    services.dynamodb = aws.client("dynamodb", endpoint)
    services.events = aws.client("events", endpoint)
    for name, value in overrides.items():
        setattr(services, name, value)
    return services


def bucket_of(sandbox: Any) -> str:
    return str(sandbox.stack().outputs["LeadFilesBucketName"])


def object_created(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    """The EventBridge event S3 sends for a new object (the fields the splitter reads)."""
    stack_time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj: dict[str, Any] = {"key": key}
    if version_id:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "time": stack_time,
        "region": aws.REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"bucket": {"name": bucket}, "object": obj, "reason": "PutObject"},
    }


def upload(
    sandbox: Any, data: bytes, key: str, metadata: Mapping[str, str] | None = None
) -> str | None:
    """Put the file in the bucket; its version id."""
    s3 = aws.client("s3", sandbox.stack().endpoint_url)
    answer = s3.put_object(Bucket=bucket_of(sandbox), Key=key, Body=data, Metadata=metadata or {})
    version = answer.get("VersionId")
    return str(version) if version else None


def split(sandbox: Any, services: Services, key: str, version_id: str | None) -> Any:
    """What the splitter does on the file's "Object Created" event."""
    lead_file_handlers._services = services  # the handler's per-container services
    try:
        return lead_file_handlers.split_handler(
            object_created(bucket_of(sandbox), key, version_id), None
        )
    finally:
        lead_file_handlers._services = None


def drain(
    sandbox: Any,
    services: Services,
    action: str,
    state_key: str,
    on_progress: Callable[[Mapping[str, Any]], None] = lambda progress: None,
) -> dict[str, Any]:
    """Run the action's queue and the assembler until the run has its results file."""
    bucket = bucket_of(sandbox)
    progress: dict[str, Any] = {}
    for _ in range(MAX_ROUNDS):
        batches = sandbox.process_queue(action)
        # Handed back (a retryable answer): SQS would redeliver after the visibility timeout.
        sandbox.redeliver_now(batches)
        progress = check_run(services, bucket, state_key)
        on_progress(progress)
        if progress.get("finished"):
            return progress
        if not batches and sandbox.queue_depth(action) == (0, 0):
            # Nothing left on the queue and rows still open: their messages dead-lettered
            # or their results are gone. The assembler's deadline answers them.
            services.dead_letter_after_seconds = 0
    raise RuntimeError(f"the lead file's run did not finish: {progress}")


def progress_bar(progress: Mapping[str, Any], width: int = 30) -> str:
    rows = int(progress.get("rows") or 0)
    done = int(progress.get("done") or 0)
    filled = width * done // rows if rows else width
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted((progress.get("by_outcome") or {}).items()))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{rows} rows" + (
        f" ({outcomes})" if outcomes else ""
    )


def import_file(
    sandbox: Any,
    path: Path,
    action: str,
    *,
    dry_run: bool = False,
    metadata: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, dict[str, Any], Path | None]:
    """(exit code, report, results file written beside ``path`` or None)."""
    key = f"{DRY_RUN_PREFIX if dry_run else ''}{action}/{path.name}"
    services = services_of(sandbox)
    version_id = upload(sandbox, path.read_bytes(), key, metadata)
    split(sandbox, services, key, version_id)
    s3 = services.s3
    bucket = bucket_of(sandbox)
    target = target_of(key)
    report = json.loads(s3.get_object(Bucket=bucket, Key=target.report_key)["Body"].read())
    report_path = path.with_name(f"{path.name}.report.json")
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out(
        f"{report['rows_read']} rows read, {report['rows_to_send']} to send, "
        f"{report['rows_refused']} refused, {report['duplicate_rows']['count']} duplicate(s); "
        f"report: {report_path}"
    )
    if not report["accepted"]:
        out(f"The file was not taken: {report['problem']}")
        return 1, report, None
    if dry_run:
        out("Dry run: nothing was sent.")
        return 0, report, None
    state_key = f"{RUNS_PREFIX}{report['run_id']}/state.json"

    def show(state: Mapping[str, Any]) -> None:
        if progress is not None:
            progress(progress_bar(state))

    drain(sandbox, services, action, state_key, show)
    if progress is not None:
        progress("\n")
    results = s3.get_object(Bucket=bucket, Key=target.results_key)["Body"].read()
    suffix = ".results.jsonl" if target.jsonl else ".results.csv"
    results_path = path.with_name(f"{path.name}{suffix}")
    results_path.write_bytes(results)
    for line in consent_report(ACTIONS[action], report["columns"], results, target.jsonl):
        out(line)
    out(f"Results: {results_path}")
    return 0, report, results_path


def import_on_serve(
    base: str, path: Path, action: str, dry_run: bool, metadata: Mapping[str, str]
) -> int:
    """The file through a running `make serve` (its emulator and stack, so its profiles are
    the ones the served API finds); the report and results written beside ``path``."""
    import base64
    import urllib.request

    from devtools.serve_client import LOCAL_IMPORT_PREFIX

    print(f"(against the running make serve at {base}: its emulator and stack)", file=sys.stderr)
    request = urllib.request.Request(
        f"{base}{LOCAL_IMPORT_PREFIX}{action}",
        data=json.dumps(
            {
                "name": path.name,
                "data": base64.b64encode(path.read_bytes()).decode(),
                "dry_run": dry_run,
                "metadata": dict(metadata),
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=3600) as answer:
        done = json.loads(answer.read())
    if "error" in done:
        print(f"import: the served stack raised {done['error']}", file=sys.stderr)
        return 1
    report_path = path.with_name(f"{path.name}.report.json")
    report_path.write_text(json.dumps(done["report"], indent=2) + "\n", encoding="utf-8")
    for line in done["lines"]:
        head, said, _ = line.rpartition("; report: ")  # the server's copy: this one instead
        if not line.startswith("Results: "):
            print(f"{head}; report: {report_path}" if said else line)
    if done["results"] is not None:
        suffix = ".results.jsonl" if is_jsonl_name(path.name) else ".results.csv"
        results_path = path.with_name(f"{path.name}{suffix}")
        results_path.write_bytes(base64.b64decode(done["results"]))
        print(f"Results: {results_path}")
    return int(done["code"])


# The consent report's words, in the order it counts them (``klaviyo_leads.lead.fields``).
CONSENT_ORDER = (
    "subscribed",
    "pending",
    "suppressed",
    "unsubscribed",
    "never_subscribed",
    "not_applied",
    "not_confirmed",
)
NO_PROFILE = "no profile"


def consent_report(action: Any, columns: list[str], results: bytes, jsonl: bool) -> list[str]:
    """A line per channel counting the rows' consent, when the results carry it: how many can
    be sent to (subscribed), wait for the person (pending), are held back (suppressed), said
    no (unsubscribed), never said yes, or have no profile (the row found none, or failed)."""
    named = dict(result_columns(action, columns))
    wanted = {c: named.get(f"{c}_consent") for c in ("email", "sms")}
    if not all(wanted.values()):
        return []
    text = results.decode("utf-8-sig")
    if jsonl:
        rows: list[Mapping[str, Any]] = [json.loads(line) for line in text.splitlines() if line]
    else:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
        rows = list(csv.DictReader(io.StringIO(text), dialect=dialect))
    lines = []
    for channel, column in wanted.items():
        counts = Counter((row.get(column or "") or NO_PROFILE) for row in rows)
        order = [w for w in CONSENT_ORDER if counts[w]] + sorted(
            w for w in counts if w not in CONSENT_ORDER
        )
        shown = ", ".join(f"{counts[w]} {w.replace('_', ' ')}" for w in order)
        lines.append(f"Consent, {channel}: {shown or 'no rows'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make import", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a CSV or JSON Lines file of leads")
    parser.add_argument("action", help="the action, e.g. subscribe_profile_to_list")
    parser.add_argument("--dry-run", action="store_true", help="check and report, send nothing")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every row, as S3 object metadata (a column overrides it)",
    )
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"No such file: {args.file}", file=sys.stderr)
        return 2
    if args.action not in ACTIONS:
        print(f"Unknown action {args.action!r}; one of: {', '.join(ACTIONS)}", file=sys.stderr)
        return 2
    metadata = {}
    for item in args.metadata:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"--metadata needs KEY=VALUE, not {item!r}", file=sys.stderr)
            return 2
        metadata[name.strip()] = value
    from devtools.sandbox import Sandbox
    from devtools.serve_client import running_serve

    base = running_serve()
    if base is not None:
        return import_on_serve(base, args.file, args.action, args.dry_run, metadata)

    def bar(text: str) -> None:
        sys.stderr.write(text if text == "\n" else f"\r{text}")
        sys.stderr.flush()

    with Sandbox() as sandbox:
        code, _, _ = import_file(
            sandbox, args.file, args.action, dry_run=args.dry_run, metadata=metadata, progress=bar
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
