"""The lead-files bucket: what a key means (an action's file, a dry run), where each output
and a run's state go, and which objects an event names."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klaviyo_leads.actions.action import Action
from klaviyo_leads.actions.table import ACTIONS

DRY_RUN_PREFIX = "dry-run/"
# Everything the stack writes in the bucket is under this prefix (reports, progress, results,
# and its working state): the splitter's rule takes every other new object, so none of the
# stack's own writes starts it.
RESULTS_PREFIX = "results/"
STATE_PREFIX = RESULTS_PREFIX + ".lead-files/"
RUNS_PREFIX = STATE_PREFIX + "runs/"
# Where a run's state goes when the run has failed, or a state there is none of ours.
SET_ASIDE_PREFIX = STATE_PREFIX + "failed/"
FINISHED_PREFIX = STATE_PREFIX + "finished/"  # a marker per finished run: it is not sent again
MAX_KEY_BYTES = 1024  # S3's limit on an object's key
KEY_HASH_CHARS = 16  # hex digits of a shortened key's SHA-256


class FileProblem(Exception):
    """The file cannot be taken: nothing of it is sent. The text names no lead data."""


@dataclass(frozen=True)
class Target:
    """What an object's key says: the action, a dry run, and where its outputs go."""

    key: str
    action: Action
    dry_run: bool
    jsonl: bool
    # The run of an upload that is no longer the key's newest: its outputs carry its id, and
    # the plain names describe the newest upload.
    older_run: str | None = None

    @property
    def report_key(self) -> str:
        return output_key(self.key, f"{self._run}.report.json", RESULTS_PREFIX)

    @property
    def progress_key(self) -> str:
        return output_key(self.key, f"{self._run}.progress.json", RESULTS_PREFIX)

    @property
    def results_key(self) -> str:
        suffix = f"{self._run}.results.{'jsonl' if self.jsonl else 'csv'}"
        return output_key(self.key, suffix, RESULTS_PREFIX)

    @property
    def _run(self) -> str:
        return f".{self.older_run}" if self.older_run else ""


def is_own_output(key: str) -> bool:
    """Keys the lead-file path writes itself, never read as a file of leads."""
    return key.startswith(RESULTS_PREFIX)


def output_key(key: str, suffix: str, prefix: str = "") -> str:
    """``prefix + key + suffix``: an output named after the whole key, so two files never
    share one (``coll.csv``, ``coll.txt``), within S3's 1,024 bytes. A key too long for that
    keeps its first bytes and ends in ``~`` and 16 hex digits of its SHA-256."""
    name = f"{prefix}{key}{suffix}"
    if len(name.encode()) <= MAX_KEY_BYTES:
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()[:KEY_HASH_CHARS]
    room = MAX_KEY_BYTES - len(f"{prefix}~{digest}{suffix}".encode())
    head = key.encode()[:room].decode("utf-8", "ignore")  # never half a character
    return f"{prefix}{head}~{digest}{suffix}"


def is_jsonl_name(key: str) -> bool:
    return key.lower().endswith((".jsonl", ".ndjson", ".jsonlines"))


def target_of(key: str) -> Target:
    """The key's action; ``FileProblem`` when its prefix names none."""
    dry_run = key.startswith(DRY_RUN_PREFIX)
    rest = key[len(DRY_RUN_PREFIX) :] if dry_run else key
    name, _, file_name = rest.partition("/")
    action = ACTIONS.get(name)
    if action is None or not file_name:
        known = ", ".join(sorted(ACTIONS))
        raise FileProblem(
            "The file is not under an action's prefix: put it under <action>/ "
            f"(or dry-run/<action>/), where <action> is one of {known}"
        )
    return Target(key, action, dry_run, is_jsonl_name(key))


def state_key_of(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/state.json"


def finished_key(run_id: str) -> str:
    return f"{FINISHED_PREFIX}{run_id}.json"


def objects_of(event: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(bucket, key, version id) of an EventBridge "Object Created" event or an S3
    notification (whose keys are URL-encoded)."""
    from urllib.parse import unquote_plus

    detail = event.get("detail")
    if isinstance(detail, Mapping):
        obj = detail.get("object") or {}
        return [(detail["bucket"]["name"], obj["key"], obj.get("version-id"))]
    found = []
    for record in event.get("Records", []):
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        key = unquote_plus(obj.get("key", ""))
        found.append((s3.get("bucket", {}).get("name", ""), key, obj.get("versionId")))
    return found
