"""``make mirror``: a mirror lead file through the local stack (docs/lead-files.md).

    python -m devtools.mirror_import people.csv <list_id> [--dry-run] [--metadata K=V ...]

The file is put under ``mirror/<list_id>/`` (``dry-run/mirror/...``) in the local stack's
lead-files bucket and taken as the mirror function takes it on the upload's event: with the
function's deployed environment, against the Klaviyo emulator (seeded with the demo data; its
"Newsletter" list is ``Y6nRLr``). The report (the plan) and, unless a dry run or refused, the
results are written beside the input. Exit 0: done or planned; 1: refused (the report says why);
2: no such file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devtools import aws
from devtools.lambda_events import ensure_layer_on_path
from devtools.lead_file_import import bucket_of, function_environment, upload

ensure_layer_on_path()

from klaviyo_leads.aws.secrets import ApiKeyProvider  # noqa: E402
from klaviyo_leads.config import Settings  # noqa: E402
from klaviyo_leads.lead_files.bucket import DRY_RUN_PREFIX  # noqa: E402
from klaviyo_leads.mirror.files import PREFIX  # noqa: E402
from klaviyo_leads.mirror.sync import MirrorServices, max_removal_share, stream_contexts, take_file  # noqa: E402


def mirror_services(sandbox: Any) -> MirrorServices:
    """The mirror function's view of the stack: its environment, its Klaviyo key and pacer."""
    env = function_environment(sandbox, "MirrorFunction")
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        settings = Settings.from_env()  # the mirror function's, as deployed on the local stack
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    api_key = ApiKeyProvider(settings.api_key_secret_id)
    return MirrorServices(
        aws.client("s3", sandbox.stack().endpoint_url),
        stream_contexts(settings, api_key),
        max_removal_share(env),
    )


def mirror_file(
    sandbox: Any,
    path: Path,
    list_id: str,
    *,
    dry_run: bool = False,
    metadata: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
) -> tuple[int, dict[str, Any]]:
    """(exit code, report); the report and any results are written beside ``path``."""
    key = f"{DRY_RUN_PREFIX if dry_run else ''}{PREFIX}{list_id}/{path.name}"
    version_id = upload(sandbox, path.read_bytes(), key, metadata)
    report = take_file(mirror_services(sandbox), bucket_of(sandbox), key, version_id)
    beside = path.with_name(f"{path.name}.report.json")
    beside.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if report.get("would_add") is not None:
        out(
            f"{report['members_before']} members; would add {report['would_add']}, keep "
            f"{report['would_keep']}, remove {report['would_remove']}; "
            f"{report['rows_without_profile']['count']} rows without a profile; "
            f"report: {beside}"
        )
    if not report["accepted"]:
        out(f"Not mirrored: {report['problem']}")
        return 1, report
    if dry_run:
        out("Dry run: nothing was changed.")
        return 0, report
    done = report["done"]
    results = path.with_name(f"{path.name}.mirror.json")
    results.write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
    out(f"Added {done['added']}, removed {done['removed']}; results: {results}")
    return 0, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a CSV or JSON Lines file of people")
    parser.add_argument("list_id", help="the Klaviyo list to mirror")
    parser.add_argument("--dry-run", action="store_true", help="the plan only")
    parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"No such file: {args.file}", file=sys.stderr)
        return 2
    metadata = dict(item.partition("=")[::2] for item in args.metadata)
    from devtools.sandbox import Sandbox

    with Sandbox() as sandbox:
        code, _ = mirror_file(
            sandbox, args.file, args.list_id, dry_run=args.dry_run, metadata=metadata
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
