"""A mirror file taken: planned, reported, held to the removal cap, and (unless a dry run)
applied, a thousand profiles a call, removals and additions side by side."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

from klaviyo_leads.actions.lookup import path_id
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context
from klaviyo_leads.lead_files.bucket import (
    DRY_RUN_PREFIX,
    RESULTS_PREFIX,
    FileProblem,
    is_jsonl_name,
    output_key,
)
from klaviyo_leads.lead_files.checks import defaults_of
from klaviyo_leads.lead_files.rows import Layout, read_rows
from klaviyo_leads.lead_files.storage import put_json
from klaviyo_leads.mirror.files import CONFIRM, PREFIX, lowered
from klaviyo_leads.mirror.members import Parallel, Streams, threads
from klaviyo_leads.mirror.plan import Plan, plan
from klaviyo_leads.outcomes import Result

DEFAULT_MAX_REMOVAL_SHARE = 0.2
MAX_IDS_PER_CALL = 1000  # add_profiles_to_list and remove_profiles_from_list take 1000
# Time kept from the invocation's deadline for writing the results.
MARGIN_SECONDS = 10.0


@dataclass
class Done:
    """What the writes did."""

    added: int = 0
    removed: int = 0
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "failed": [
                {"change": change, "reason": reason, "profiles": count}
                for (change, reason), count in sorted(self.failed.items())
            ],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def apply(streams: Streams, planned: Plan, parallel: Parallel = threads) -> Done:
    """The removals and the additions, a thousand profiles a call, side by side."""
    done = Done()
    path = f"/api/lists/{path_id(planned.list_id, 'list')}/relationships/profiles"

    def change(method: str, ids: list[str]) -> tuple[int, Counter[tuple[str, str]]]:
        changed, failed, ctx = 0, Counter[tuple[str, str]](), streams()
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            chunk = ids[start : start + MAX_IDS_PER_CALL]
            body = {"data": [{"type": "profile", "id": profile_id} for profile_id in chunk]}
            try:
                ctx.call(method, path, body=body, expect=(204,))
            except Result as problem:
                failed[(method, problem.reason or problem.outcome.value)] += len(chunk)
                continue
            changed += len(chunk)
        return changed, failed

    changes = [("DELETE", planned.remove), ("POST", list(planned.add))]
    (done.removed, removal_failures), (done.added, add_failures) = parallel(
        lambda item: change(*item), changes
    )
    for (method, reason), count in (removal_failures + add_failures).items():
        done.failed[("remove" if method == "DELETE" else "add", reason)] += count
    return done


# -- the file ----------------------------------------------------------------------------------


@dataclass
class MirrorServices:
    """What a mirror run needs: S3, a Klaviyo context maker, and the stack's removal cap."""

    s3: Any
    # A context for a stream of calls (``Streams``) with this many seconds of budget.
    context: Callable[[float], Context]
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE
    parallel: Parallel = threads  # how calls go side by side (a benchmark's virtual clock)


def list_id_of(key: str, metadata: Mapping[str, str]) -> str | None:
    """The list: ``mirror/<list_id>/...``, or an Add Profile to List file's ``klaviyo.list_id``."""
    rest = key.removeprefix(DRY_RUN_PREFIX)
    if rest.startswith(PREFIX):
        list_id, _, name = rest[len(PREFIX) :].partition("/")
        return list_id if list_id and name else None
    defaults, _ = defaults_of(metadata)
    value = defaults.get("klaviyo.list_id")
    return value.strip() if isinstance(value, str) and value.strip() else None


def confirmed(metadata: Mapping[str, str], removals: int) -> bool:
    """Whether the file's metadata confirms this many removals."""
    value = str(lowered(metadata).get(CONFIRM, "")).strip().lower()
    if value == "all":
        return True
    return value.isdigit() and int(value) >= removals


def take_file(
    services: MirrorServices,
    bucket: str,
    key: str,
    version_id: str | None = None,
    seconds: float = 840.0,
) -> dict[str, Any]:
    """Plan, report, and (unless a dry run or refused) apply; the report."""
    s3 = services.s3
    version = {"VersionId": version_id} if version_id else {}
    head = s3.head_object(Bucket=bucket, Key=key, **version)
    metadata = {str(k): str(v) for k, v in (head.get("Metadata") or {}).items()}
    dry_run = key.startswith(DRY_RUN_PREFIX)
    report: dict[str, Any] = {
        "file": {"bucket": bucket, "key": key, "version_id": head.get("VersionId")},
        "mirror": True,
        "dry_run": dry_run,
        "accepted": False,
        "problem": None,
        "max_removal_share": services.max_removal_share,
        "removals_confirmed": False,
    }
    list_id = list_id_of(key, metadata)
    started = time.monotonic()
    planned: Plan | None = None
    if list_id is None:
        report["problem"] = (
            "The file names no list: put it under mirror/<list_id>/, or give an Add Profile "
            "to List file the metadata klaviyo.list_id"
        )
    else:
        deadline = time.monotonic() + seconds - MARGIN_SECONDS

        def streams() -> Context:
            return services.context(max(1.0, deadline - time.monotonic()))

        body = s3.get_object(Bucket=bucket, Key=key, **version)["Body"]
        defaults, _ = defaults_of(metadata)
        try:
            rows = read_rows(cast(IO[bytes], body), True if is_jsonl_name(key) else None, Layout())
            planned = plan(streams, list_id, rows, defaults, services.parallel)
        except FileProblem as problem:
            report["problem"] = str(problem)
        except Result as problem:  # the list cannot be read: nothing is planned or written
            report["problem"] = problem.reason
        if planned is not None:
            report.update(planned.as_json())
            report["removals_confirmed"] = confirmed(metadata, len(planned.remove))
            over = planned.removal_share > services.max_removal_share
            if over and not report["removals_confirmed"]:
                report["problem"] = (
                    f"The file would remove {len(planned.remove)} of the list's "
                    f"{planned.members_before} members ({planned.removal_share:.0%}), more than "
                    f"the stack allows ({services.max_removal_share:.0%}, "
                    f"MirrorMaxRemovalPercent): confirm with the metadata {CONFIRM}: "
                    f"{len(planned.remove)}"
                )
            else:
                report["accepted"] = True
    report["planned_in_seconds"] = round(time.monotonic() - started, 3)
    report["results"] = None if dry_run or not report["accepted"] else results_key(key)
    # The report first: when it cannot be written this raises, and nothing is changed.
    put_json(s3, bucket, report_key(key), report)
    if dry_run or not report["accepted"] or planned is None:
        return report
    done = apply(streams, planned, services.parallel)
    put_json(s3, bucket, results_key(key), {"report": report_key(key), **done.as_json()})
    report["done"] = done.as_json()
    return report


def report_key(key: str) -> str:
    """Where a mirror file's report goes: under ``results/``, as every lead file's does."""
    return output_key(key, ".report.json", RESULTS_PREFIX)


def results_key(key: str) -> str:
    return output_key(key, ".mirror.json", RESULTS_PREFIX)


def max_removal_share(env: Mapping[str, str]) -> float:
    """``MIRROR_MAX_REMOVAL_PERCENT`` as a share (0-100 %); the default when unset or wrong."""
    try:
        percent = float(env.get("MIRROR_MAX_REMOVAL_PERCENT") or 100 * DEFAULT_MAX_REMOVAL_SHARE)
    except ValueError:
        return DEFAULT_MAX_REMOVAL_SHARE
    return percent / 100 if 0 <= percent <= 100 else DEFAULT_MAX_REMOVAL_SHARE


def stream_contexts(
    settings: Settings, api_key: Callable[[bool], str], **wiring: Any
) -> Callable[[float], Context]:
    """Contexts for streams of calls side by side: each with a client and pacer of its own
    (``Runtime.wired``'s other parts, such as a clock, as ``wiring`` gives them)."""
    from klaviyo_leads.runtime import Runtime

    def context(seconds: float) -> Context:
        runtime = Runtime.wired(settings, api_key, **wiring)
        return runtime.context(runtime.budget(seconds))

    return context
