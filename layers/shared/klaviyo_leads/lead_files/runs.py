"""A file run's state in the bucket: its id, what an earlier notification left, the checks
that a state is one the splitter wrote, its progress, setting it aside."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.lead_files.bucket import (
    RESULTS_PREFIX,
    RUNS_PREFIX,
    SET_ASIDE_PREFIX,
    STATE_PREFIX,
    FileProblem,
    finished_key,
    state_key_of,
)
from klaviyo_leads.lead_files.storage import Services, is_missing, put_json, read_json
from klaviyo_leads.observability import logger


class RunProblem(Exception):
    """A run cannot go on as it is; the text names no lead data."""


def run_id_of(
    bucket: str, key: str, version_id: str | None, etag: str | None, modified: Any = None
) -> str:
    """One upload, one run: the same for a repeated notification, new for a new upload (its
    version id; when versioning is off, its time: the same bytes uploaded again are a new run)."""
    text = f"{bucket}/{key}#{version_id or ''}#{etag or ''}#{modified or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def is_newest(s3: Any, bucket: str, key: str, run_id: str) -> bool:
    """Whether the run's upload is still the key's newest (a deleted key has none newer)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if is_missing(exc):
            return True
        raise
    version_id = head.get("VersionId")
    version_id = None if version_id == "null" else version_id
    newest = run_id_of(bucket, key, version_id, head.get("ETag"), head.get("LastModified"))
    return newest == run_id


@dataclass
class Taken:
    """A run begun before: its state and the state's ETag, or no state (the run is over)."""

    state: dict[str, Any] | None
    etag: str | None = None


def taken_of(services: Services, bucket: str, run_id: str) -> Taken | None:
    """The run as an earlier notification left it; None when it never began."""
    s3 = services.s3
    try:
        answer = s3.get_object(Bucket=bucket, Key=state_key_of(run_id))
        return Taken(json.loads(answer["Body"].read()), answer.get("ETag"))
    except Exception as exc:
        if not is_missing(exc):
            raise
    for over in (finished_key(run_id), SET_ASIDE_PREFIX + f"{run_id}/state.json"):
        try:
            s3.head_object(Bucket=bucket, Key=over)
            return Taken(None)
        except Exception as exc:
            if not is_missing(exc):
                raise
    return None


def progress_of(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": state["run_id"],
        "key": state["key"],
        "action": state["action"],
        "rows": state["rows"],
        "queued": state.get("queued", 0),
        "done": state.get("done", 0),
        "by_outcome": state.get("by_outcome", {}),
        "rows_per_second": state.get("rows_per_second"),
        "formula_rows": state.get("formula_rows"),
        "finished": bool(state.get("finished")),
        "results": state["results"] if state.get("finished") else None,
        "failed": bool(state.get("failed")),
        "problem": state.get("problem"),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


_STATE_FIELDS = ("run_id", "bucket", "key", "action", "format", "columns", "rows", "results")


def read_state(s3: Any, bucket: str, state_key: str) -> dict[str, Any]:
    """A run's state, or ``RunProblem`` when it is none the splitter wrote for this bucket:
    the keys it names are the run's own (its file, its outputs), never others."""
    try:
        state = read_json(s3, bucket, state_key)
    except ValueError as exc:
        raise RunProblem("The run's state is not JSON") from exc
    run_id = state_key.removeprefix(RUNS_PREFIX).partition("/")[0]
    if not isinstance(state, dict) or any(name not in state for name in _STATE_FIELDS):
        raise RunProblem("The run's state is not one the splitter wrote")
    if state["run_id"] != run_id or state["bucket"] != bucket or state["action"] not in ACTIONS:
        raise RunProblem("The run's state names another run, bucket or action")
    if not all(_is_own(state, name, check) for name, check in _OWN_KEYS.items()):
        raise RunProblem("The run's state names keys that are not a run's outputs")
    if not str(state.get("manifest", "")).startswith(f"{RUNS_PREFIX}{run_id}/"):
        raise RunProblem("The run's state names a manifest that is not the run's own")
    return cast(dict[str, Any], state)


# What each output a state names must look like: the assembler writes nothing else.
_OWN_KEYS: dict[str, Callable[[str], bool]] = {
    "results": lambda k: _is_output(k) and k.endswith((".results.csv", ".results.jsonl")),
    "progress": lambda k: _is_output(k) and k.endswith(".progress.json"),
    "report": lambda k: _is_output(k) and k.endswith(".report.json"),
}


def _is_output(key: str) -> bool:
    return key.startswith(RESULTS_PREFIX) and not key.startswith(STATE_PREFIX)


def _is_own(state: Mapping[str, Any], name: str, check: Callable[[str], bool]) -> bool:
    value = state.get(name)
    return isinstance(value, str) and check(value)


def reason_of(exc: Exception) -> str:
    """What stopped a look, naming no lead data: the AWS call and its error code, or ours."""
    if isinstance(exc, RunProblem | FileProblem):
        return str(exc)
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code:
        return f"{getattr(exc, 'operation_name', None) or 'An AWS call'} was refused: {code}"
    return f"An unexpected error ({type(exc).__name__})"


def set_aside(s3: Any, bucket: str, state_key: str, state: Mapping[str, Any] | None = None) -> None:
    """Out of the open runs: kept under ``.lead-files/failed/`` for whoever looks into it."""
    aside = SET_ASIDE_PREFIX + state_key.removeprefix(RUNS_PREFIX)
    try:
        if state is not None:
            put_json(s3, bucket, aside, state)
        else:
            s3.copy_object(
                Bucket=bucket, Key=aside, CopySource={"Bucket": bucket, "Key": state_key}
            )
        s3.delete_object(Bucket=bucket, Key=state_key)
    except Exception as exc:  # looked at again next time, and failed again
        logger.error(
            "A lead file run's state could not be set aside",
            extra={"state": state_key, "reason": reason_of(exc)},
        )
