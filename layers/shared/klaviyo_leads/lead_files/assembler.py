"""The assembler: every open run looked at on the schedule, its finished rows counted, its
progress written, and once every row has a result, its results file and its event."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from klaviyo_leads.lead_files.bucket import RUNS_PREFIX, finished_key, target_of
from klaviyo_leads.lead_files.checks import DEAD_LETTERED, NO_RESULT
from klaviyo_leads.lead_files.results_file import assemble
from klaviyo_leads.lead_files.row_bits import is_set, set_bit
from klaviyo_leads.lead_files.row_results import (
    MAX_KEYS_PER_GET,
    ROW_ATTRIBUTE,
    RUN_ATTRIBUTE,
    looked_up,
    lookup_key,
    manifest_entries,
)
from klaviyo_leads.lead_files.runs import (
    RunProblem,
    is_newest,
    progress_of,
    read_state,
    reason_of,
    set_aside,
)
from klaviyo_leads.lead_files.storage import Services, put_json
from klaviyo_leads.observability import count, logger

SOURCE = "klaviyo.lead-actions"
FINISHED_DETAIL_TYPE = "lead file finished"
# A sending run whose state is older than this has lost its splitter for good (a stopped one is
# resumed by the next notification of the upload, within the splitter's SENDER_STALE_SECONDS):
# the run is failed.
SENDER_GONE_SECONDS = 3600.0
# The assembler runs every minute and, while a run is open, looks again this often within it;
# sooner (not under LOOK_SOONEST_SECONDS) when a run's rows, at the pace they finished since
# the last look, would all be done before then.
LOOK_EVERY_SECONDS = 5.0
LOOK_SOONEST_SECONDS = 1.0
# A look starts no later than this into its minute, so the gap before the next scheduled run
# is two seconds at most. A look that runs past the minute (seconds at 100,000 rows) holds the
# next run back (the function's reserved concurrency is one; Lambda retries a throttled
# scheduled event within its minute of age): two looks never overlap.
LOOK_FOR_SECONDS = 58.0
# A run whose look fails (an AWS call refused, its state unreadable) is looked at again, on its
# own, for this long; then it is failed: its progress says why, and LeadFileRunsFailed alarms.
# The other runs go on either way.
FAILING_FOR_SECONDS = 15 * 60
RUNS_FAILED_METRIC = "LeadFileRunsFailed"  # the stack's LeadFileRunsFailedAlarm watches it


def open_runs(services: Services, bucket: str) -> list[str]:
    keys: list[str] = []
    paginator = services.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=RUNS_PREFIX):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/state.json")]
    return keys


def check_runs(services: Services, bucket: str) -> list[dict[str, Any]]:
    """Look at every open run once, each on its own: the progress of each (finished and
    failed ones included). A run whose look fails does not stop the others."""
    found = []
    for key in open_runs(services, bucket):
        try:
            found.append(check_run(services, bucket, key))
        except Exception as exc:
            found.append(_look_failed(services, bucket, key, exc))
    return found


def _look_failed(services: Services, bucket: str, state_key: str, exc: Exception) -> dict[str, Any]:
    """Note why the run's look failed in its state and progress; past FAILING_FOR_SECONDS,
    or when the state is none of a run's, the run is failed and its state set aside."""
    s3, reason = services.s3, reason_of(exc)
    logger.error(
        "A lead file run could not be looked at",
        extra={"state": state_key, "reason": reason, "error_type": type(exc).__name__},
    )
    count("LeadFileLooksFailed")
    try:
        state = read_state(s3, bucket, state_key)
    except Exception as unreadable:
        count(RUNS_FAILED_METRIC)
        problem = reason_of(unreadable)
        set_aside(s3, bucket, state_key)
        return {"state": state_key, "failed": True, "problem": problem, "finished": False}
    now = services.wall()
    since = float(state.get("failing_since") or now)
    state.update(problem=reason, failing_since=since)
    if now - since >= FAILING_FOR_SECONDS:
        state["failed"] = True
        count(RUNS_FAILED_METRIC)
    try:
        put_json(s3, bucket, state["progress"], progress_of(state))
        if state.get("failed"):
            set_aside(s3, bucket, state_key, state)
        else:
            put_json(s3, bucket, state_key, state)
    except Exception as unwritten:  # the next look tries again
        logger.error(
            "A lead file run's failure could not be written",
            extra={"state": state_key, "reason": reason_of(unwritten)},
        )
    return progress_of(state)


def _bitmap(state: Mapping[str, Any]) -> bytearray:
    packed = state.get("done_rows")
    if packed:
        return bytearray(zlib.decompress(base64.b64decode(packed)))
    return bytearray((int(state.get("last_row") or state["rows"]) + 8) // 8)


def check_run(services: Services, bucket: str, state_key: str) -> dict[str, Any]:
    """Count the run's finished rows; assemble the results file once every row has one."""
    s3 = services.s3
    state = read_state(s3, bucket, state_key)
    if state.get("sending"):
        heartbeat = float(state.get("heartbeat_at") or state["started_at"])
        if services.wall() - heartbeat > SENDER_GONE_SECONDS:
            raise RunProblem(
                f"The splitter stopped after row {int(state.get('sent_through') or 0):,} and "
                "was not run again: upload the file again"
            )
        return progress_of(state)
    plain_names = not state.get("finished") and not state.get("older_run")
    if plain_names and not is_newest(s3, bucket, state["key"], state["run_id"]):
        # The plain names are the newer upload's from now on.
        older = replace(target_of(state["key"]), older_run=state["run_id"])
        state.update(older_run=True, progress=older.progress_key, results=older.results_key)
    if not state.get("finished"):
        _count_finished(services, state)
        state.update(problem=None, failing_since=None)
        if int(state["done"]) < int(state["rows"]):
            put_json(s3, bucket, state_key, state)
            put_json(s3, bucket, state["progress"], progress_of(state))
            return progress_of(state)
        state["formula_rows"] = assemble(services, state)
        state["finished"] = True
        # Kept until the event is out: a refused event is sent again, the file not written again.
        put_json(s3, bucket, state_key, state)
        put_json(s3, bucket, state["progress"], progress_of(state))
    _announce(services, state)
    # What tells a late notification of the upload that its run is over (kept as the bucket's
    # files are: LeadFileRetentionDays).
    put_json(s3, bucket, finished_key(state["run_id"]), progress_of(state))
    s3.delete_object(Bucket=bucket, Key=state_key)
    return progress_of(state)


def _count_finished(services: Services, state: dict[str, Any]) -> None:
    """The rows that have their final result now, counted into the state once each."""
    bits = _bitmap(state)
    by_outcome: dict[str, int] = dict(state.get("by_outcome") or {})
    dead: dict[str, str] = dict(state.get("dead_letters") or {})
    # Refused rows were counted when the file was sent; they are marked done on first sight.
    first_look = not state.get("done_rows")

    def unfinished() -> Iterator[list[tuple[int, str]]]:
        """The manifest's rows without a result yet, a lookup's worth at a time."""
        pending: list[tuple[int, str]] = []
        for entry in manifest_entries(services, state):
            number, key = int(entry["r"]), lookup_key(state, entry)
            if key is None:
                if first_look:
                    set_bit(bits, number)
                continue
            if is_set(bits, number) or str(number) in dead:
                continue
            pending.append((number, key))
            if len(pending) == MAX_KEYS_PER_GET:
                yield pending
                pending = []
        if pending:
            yield pending

    left: list[int] = []
    for chunk, found in looked_up(services, unfinished(), lambda c: [k for _, k in c]):
        for number, key in chunk:
            fields = found.get(key)
            if fields is None:
                left.append(number)
                continue
            if is_set(bits, number):
                continue  # counted once, however many times the manifest names it
            set_bit(bits, number)
            outcome = str(fields.get("outcome"))
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    if left:
        for number in _dead_lettered(services, state, set(left)):
            dead[str(number)] = DEAD_LETTERED
            by_outcome["error"] = by_outcome.get("error", 0) + 1
        queued_at = float(state.get("queued_at") or state["started_at"])
        if services.wall() - queued_at > services.dead_letter_after_seconds:
            for number in left:
                if str(number) not in dead:
                    dead[str(number)] = NO_RESULT
                    by_outcome["error"] = by_outcome.get("error", 0) + 1
    done = sum(by_outcome.values())
    # The pace since the last look, whichever scheduled run made it: when to look next.
    now, looked = services.wall(), state.get("looked") or {}
    since = now - float(looked.get("at", now))
    state.update(
        done_rows=base64.b64encode(zlib.compress(bytes(bits))).decode(),
        by_outcome=by_outcome,
        dead_letters=dead,
        done=done,
        rows_per_second=(
            round((done - int(looked.get("done", done))) / since, 3) if since > 0 else None
        ),
        looked={"at": now, "done": done},
    )


def _dead_lettered(services: Services, state: Mapping[str, Any], waiting: set[int]) -> list[int]:
    """Rows of this run found in the action's dead-letter queue (looked at, left there)."""
    url = services.dead_letter_queue_urls.get(state["action"])
    if not url:
        return []
    found: list[int] = []
    for _ in range(10):
        try:
            answer = services.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=30,
                WaitTimeSeconds=0,
                MessageAttributeNames=[RUN_ATTRIBUTE, ROW_ATTRIBUTE],
            )
        except Exception:
            return found
        messages = answer.get("Messages", [])
        if not messages:
            break
        for message in messages:
            attributes = message.get("MessageAttributes", {})
            run = attributes.get(RUN_ATTRIBUTE, {}).get("StringValue")
            row = attributes.get(ROW_ATTRIBUTE, {}).get("StringValue")
            if run == state["run_id"] and str(row).isdigit() and int(row) in waiting:
                waiting.discard(int(row))
                found.append(int(row))
    return found


def _announce(services: Services, state: Mapping[str, Any]) -> None:
    if services.events is None or not services.bus_name:
        return
    detail = {
        "run_id": state["run_id"],
        "action": state["action"],
        "bucket": state["bucket"],
        "key": state["key"],
        "version_id": state.get("version_id"),
        "rows": state["rows"],
        "by_outcome": state.get("by_outcome", {}),
        "formula_rows": state.get("formula_rows"),
        "results": state["results"],
        "report": state["report"],
    }
    answer = services.events.put_events(
        Entries=[
            {
                "Source": SOURCE,
                "DetailType": FINISHED_DETAIL_TYPE,
                "Detail": json.dumps(detail, separators=(",", ":")),
                "EventBusName": services.bus_name,
            }
        ]
    )
    if answer.get("FailedEntryCount"):
        code = (answer.get("Entries") or [{}])[0].get("ErrorCode")
        raise RunProblem(f"The bus did not take the 'lead file finished' event ({code})")


def look(services: Services, bucket: str) -> list[dict[str, Any]]:
    """Look at the open runs every ``LOOK_EVERY_SECONDS`` while one is open, for at most
    ``LOOK_FOR_SECONDS``: a file's results are written seconds after its last row, not up to
    a minute (the schedule's), and one look ends before the next one starts."""
    started = services.clock()
    while True:
        runs = check_runs(services, bucket)
        open_runs = [run for run in runs if not run.get("finished") and not run.get("failed")]
        wait = next_look_in(open_runs)
        waited = services.clock() - started
        if not open_runs or waited + wait > LOOK_FOR_SECONDS:
            return runs
        services.sleep(wait)


def next_look_in(runs: list[dict[str, Any]]) -> float:
    """Seconds until the next look: ``LOOK_EVERY_SECONDS``, or when the open run soonest to
    finish would have its last row at the pace its rows finished since the look before
    (``rows_per_second``), not sooner than ``LOOK_SOONEST_SECONDS``: the results file follows
    its last row by about a second, not by up to five."""
    wait = LOOK_EVERY_SECONDS
    for run in runs:
        pace = run.get("rows_per_second") or 0
        if pace > 0:
            due = (int(run.get("rows") or 0) - int(run.get("done") or 0)) / pace
            wait = min(wait, max(LOOK_SOONEST_SECONDS, due))
    return wait
