"""The splitter: an uploaded file checked, its report written, and its rows queued, ten to a
``SendMessageBatch``, with the manifest of which message each row got checkpointed as it goes."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import IO, Any, cast

from klaviyo_leads.aws.queue import ORIGIN, lead_file_row_key
from klaviyo_leads.lead_files.bucket import (
    DRY_RUN_PREFIX,
    RESULTS_PREFIX,
    RUNS_PREFIX,
    FileProblem,
    Target,
    output_key,
    state_key_of,
    target_of,
)
from klaviyo_leads.lead_files.checks import NOT_QUEUED, checked, fields_of, lead_of, unanswered
from klaviyo_leads.lead_files.report import Report, check_file
from klaviyo_leads.lead_files.row_results import ROW_ATTRIBUTE, RUN_ATTRIBUTE
from klaviyo_leads.lead_files.rows import Layout, read_rows
from klaviyo_leads.lead_files.runs import (
    Taken,
    is_newest,
    progress_of,
    reason_of,
    run_id_of,
    taken_of,
)
from klaviyo_leads.lead_files.storage import Services, precondition_failed, put_json, version_args
from klaviyo_leads.observability import logger

MAX_BATCH = 10  # SendMessageBatch's limit
SEND_TRIES = 3  # calls of a batch SQS refused or never received
SEND_BACK_OFF_SECONDS = 0.5  # before the second call, twice that before the third
MAX_BATCH_BYTES = 240 * 1024  # SendMessageBatch's 256 KiB for all bodies, with a margin
# A sending splitter checkpoints (a manifest segment, then its state) this often; a run whose
# state is older than SENDER_STALE_SECONDS has lost its splitter: the next notification of the
# upload (Lambda's retry) resumes it. Past the assembler's SENDER_GONE_SECONDS, none will.
CHECKPOINT_SECONDS = 20.0
SENDER_STALE_SECONDS = 60.0
SEND_THREADS = 16  # SendMessageBatch calls at once: a call takes tens of milliseconds
IN_FLIGHT_ENTRIES = 4 * SEND_THREADS  # batches (and refused rows) held before writing
MANIFEST_SEGMENT_BYTES = 1024 * 1024  # manifest lines held before a checkpoint writes them


def take_file(services: Services, bucket: str, key: str, version_id: str | None = None) -> Report:
    """Check an uploaded file, write its report, and (unless a dry run) queue its rows.

    S3 telling the splitter again of an upload (or Lambda retrying it) queues nothing twice:
    a run being sent by a live splitter, or sent already, is left alone; a run whose splitter
    stopped part-way is resumed from its last checkpoint.
    """
    s3 = services.s3
    dry_run = key.startswith(DRY_RUN_PREFIX)
    try:
        target = target_of(key)
    except FileProblem as problem:
        # Not read (the splitter may read only under the actions' prefixes): only reported.
        report = Report(
            bucket, key, version_id, run_id_of(bucket, key, version_id, None), None, dry_run
        )
        report.problem = str(problem)
        put_json(s3, bucket, output_key(key, ".report.json", RESULTS_PREFIX), report.as_json())
        return report
    head_args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        head_args["VersionId"] = version_id
    head = s3.head_object(**head_args)
    version_id = version_id or head.get("VersionId")
    if version_id == "null":
        version_id = None
    run_id = run_id_of(bucket, key, version_id, head.get("ETag"), head.get("LastModified"))
    report = Report(bucket, key, version_id, run_id, None, dry_run)
    report.size = int(head.get("ContentLength", 0))
    report.action = target.action.name
    if not is_newest(s3, bucket, key, run_id):
        target = replace(target, older_run=run_id)
    report.results_key, report.progress_key = target.results_key, target.progress_key
    taken = None if target.dry_run else taken_of(services, bucket, run_id)
    if taken is not None:
        taken = _sender_gone(services, bucket, run_id, taken)
        if taken is None:
            report.again = True
            return report

    def open_stream() -> IO[bytes]:
        return cast(
            IO[bytes], s3.get_object(Bucket=bucket, Key=key, **version_args(version_id))["Body"]
        )

    if report.size > services.max_file_bytes:
        limit = services.max_file_bytes / (1024 * 1024)
        report.problem = (
            f"The file is larger than the stack's limit of {limit:g} MB (LeadFileMaxBytes)"
        )
    elif target.action.name not in services.queue_urls and not target.dry_run:
        report.problem = f"The stack has no queue for {target.action.name}"
    else:
        metadata = head.get("Metadata") or {}
        check_file(open_stream, report, target, metadata, services.settings)
        if target.dry_run and report.accepted and services.klaviyo is not None:
            from klaviyo_leads.lead_files.dry_run import would

            report.would = would(
                target.action,
                _leads_to_send(open_stream, report, target),
                services.klaviyo,
                services.dry_run_seconds,
                report.rows_to_send,
            )
    # The report first: when it cannot be written this raises, and no row is sent.
    put_json(s3, bucket, target.report_key, report.as_json())
    if target.dry_run or not report.accepted:
        return report
    send_rows(services, report, target, open_stream, taken)
    return report


def _leads_to_send(
    open_stream: Callable[[], IO[bytes]], report: Report, target: Target
) -> Iterator[dict[str, Any]]:
    """The leads of the rows the check did not refuse, in the file's order."""
    for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
        if row.problem is None and not row.blank and not report.was_refused(row.number):
            yield lead_of(row, report.defaults)


def _sender_gone(services: Services, bucket: str, run_id: str, taken: Taken) -> Taken | None:
    """The run when its splitter stopped while sending (no checkpoint for
    ``SENDER_STALE_SECONDS``), for this one to finish; None when the run is sent, or being
    sent by a splitter that is still checkpointing (waited for once, to tell)."""
    state = taken.state
    if state is None or not state.get("sending"):
        return None
    age = services.wall() - float(state.get("heartbeat_at") or state["started_at"])
    if age <= SENDER_STALE_SECONDS:
        services.sleep(SENDER_STALE_SECONDS - age + 1)
        again = taken_of(services, bucket, run_id)
        if again is None or again.state is None or again.etag != taken.etag:
            return None
    return taken


def send_rows(
    services: Services,
    report: Report,
    target: Target,
    open_stream: Callable[[], IO[bytes]],
    resumed: Taken | None = None,
) -> None:
    """Queue the checked file's rows; the manifest records each row's message (or result).

    The manifest is written in segments: every ``CHECKPOINT_SECONDS`` the rows queued so far
    are written, then the state (``sent_through`` the last of them), which is also the
    sender's heartbeat. A splitter resuming a run queues the rows after ``sent_through``;
    rows it queues again were queued under another message, and are still one row
    (``aws.queue.lead_file_row_key``). Every state write is conditional on the one before:
    a splitter whose run was taken over stops.
    """
    s3, bucket = services.s3, report.bucket
    state_key = state_key_of(report.run_id)
    if resumed is not None and resumed.state is not None:
        state, etag = resumed.state, resumed.etag
        logger.warning(
            "Resuming a lead file run whose splitter stopped",
            extra={"run_id": report.run_id, "sent_through": state.get("sent_through")},
        )
    else:
        state = {
            "run_id": report.run_id,
            "bucket": bucket,
            "key": report.key,
            "version_id": report.version_id,
            "action": target.action.name,
            "format": report.layout.format,
            "delimiter": report.layout.delimiter,
            "byte_order_mark": report.layout.bom,
            "columns": report.layout.columns,
            "report": target.report_key,
            "progress": target.progress_key,
            "results": target.results_key,
            "manifest": f"{RUNS_PREFIX}{report.run_id}/manifest/",
            "segments": 0,
            "sent_through": 0,
            "row_keys": True,
            "rows": report.rows_read,
            "last_row": report.last_row,
            "started_at": services.wall(),
            "queued": 0,
            "by_outcome": {},
            "sending": True,
        }
        etag = None
    counts = {"queued": int(state.get("queued") or 0)}
    refused: dict[str, int] = dict(state.get("by_outcome") or {})
    sent_through = int(state.get("sent_through") or 0)
    segment = bytearray()  # the manifest's lines since the last checkpoint
    last_row = {"number": sent_through}
    state_exists = {"yes": resumed is not None}

    def save(**changes: Any) -> None:
        """The state, on condition that it is still this splitter's (else ``_TakenOver``)."""
        nonlocal etag
        state.update(
            changes,
            queued=counts["queued"],
            by_outcome=refused,
            sent_through=last_row["number"],
            heartbeat_at=services.wall(),
        )
        condition = (
            {"IfMatch": etag} if etag else {} if state_exists["yes"] else {"IfNoneMatch": "*"}
        )
        try:
            etag = put_json(s3, bucket, state_key, state, **condition).get("ETag")
            state_exists["yes"] = True
        except Exception as exc:
            if precondition_failed(exc):
                raise _TakenOver from exc
            raise

    try:
        save()
    except _TakenOver:
        return  # another notification's splitter has it
    queue_url = services.queue_urls[target.action.name]
    pending: list[tuple[int, dict[str, Any], str]] = []
    # Batches in flight, oldest first: the manifest is written in the file's order, and at
    # most a few batches' rows are held at once (SQS's latency, not the file, sets the pace).
    in_flight: collections.deque[Future[list[tuple[int, bytes, bool | None]]]] = collections.deque()

    def lines_of(
        batch: list[tuple[int, dict[str, Any], str]],
    ) -> list[tuple[int, bytes, bool | None]]:
        """The batch's manifest lines, each with whether SQS took the row."""
        ids, in_doubt = _send_batch(services, queue_url, report.run_id, batch)
        lines: list[tuple[int, bytes, bool | None]] = []
        for (number, _, _), message_id in zip(batch, ids, strict=True):
            if message_id is not None:
                lines.append((number, _line({"r": number, "m": message_id}), True))
            elif in_doubt:
                # SQS did not answer: it may have the row. Not sent again; its result is
                # looked up by row like any other, and it has none if SQS had not taken it.
                lines.append((number, _line({"r": number, "q": 1}), True))
            else:
                fields = unanswered(target.action, NOT_QUEUED)
                lines.append((number, _line({"r": number, "x": fields}), False))
        return lines

    def written(limit: int) -> None:
        while len(in_flight) > limit:
            for number, line, taken in in_flight.popleft().result():
                if taken:
                    counts["queued"] += 1
                elif taken is False:
                    refused["error"] = refused.get("error", 0) + 1
                segment.extend(line)
                last_row["number"] = number

    def done_now(number: int, line: bytes) -> Future[list[tuple[int, bytes, bool | None]]]:
        """A refused row's line (counted already), in its place among the batches."""
        future: Future[list[tuple[int, bytes, bool | None]]] = Future()
        future.set_result([(number, line, None)])
        return future

    checkpointed = {"at": services.wall()}

    def checkpoint(final: bool = False) -> None:
        """The rows queued so far into a manifest segment, then the state."""
        written(0)
        if segment:
            s3.put_object(
                Bucket=bucket,
                Key=f"{state['manifest']}{int(state['segments']):06d}.jsonl",
                Body=bytes(segment),
                ContentType="application/x-ndjson",
            )
            state["segments"] = int(state["segments"]) + 1
            segment.clear()
        if final:
            save(sending=False, queued_at=services.wall(), done=sum(refused.values()))
        else:
            save()
        checkpointed["at"] = services.wall()

    def due() -> bool:
        return (
            services.wall() - checkpointed["at"] >= CHECKPOINT_SECONDS
            or len(segment) >= MANIFEST_SEGMENT_BYTES
        )

    pool = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="lead-file-send")
    try:
        size = 0
        for row in read_rows(open_stream(), True if target.jsonl else None, Layout()):
            if row.number <= sent_through or row.blank:
                continue  # in the manifest already (sent by the splitter before), or blank
            if report.was_refused(row.number):
                result, lead = checked(target.action, row, report.defaults, services.settings)
            else:
                result, lead = None, lead_of(row, report.defaults)
            if result is not None:
                if pending:
                    in_flight.append(pool.submit(lines_of, pending))
                    pending, size = [], 0
                refused[result.outcome.value] = refused.get(result.outcome.value, 0) + 1
                line = _line({"r": row.number, "x": fields_of(target.action, result)})
                in_flight.append(done_now(row.number, line))
                written(IN_FLIGHT_ENTRIES)
                continue
            body = json.dumps(lead, separators=(",", ":"), default=str)
            if pending and (len(pending) == MAX_BATCH or size + len(body) > MAX_BATCH_BYTES):
                in_flight.append(pool.submit(lines_of, pending))
                pending, size = [], 0
                written(IN_FLIGHT_ENTRIES)
                if due():
                    checkpoint()
            pending.append((row.number, lead, body))
            size += len(body)
        if pending:
            in_flight.append(pool.submit(lines_of, pending))
        checkpoint(final=True)
    except _TakenOver:
        logger.warning("A lead file run was taken over", extra={"run_id": report.run_id})
        return
    except BaseException:
        for future in in_flight:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    put_json(s3, bucket, target.progress_key, progress_of(state))


class _TakenOver(Exception):
    """Another splitter wrote the run's state since this one did: it sends the rest."""


def _send_batch(
    services: Services, queue_url: str, run_id: str, rows: list[tuple[int, dict[str, Any], str]]
) -> tuple[list[str | None], bool]:
    """Each row's message id, None where SQS did not take it; and whether SQS left the rest
    in doubt (a call without an answer: sent again, it could queue them twice, so it is not).
    A call SQS answered with an error, or that never reached it, is made again."""
    ids: list[str | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    for attempt in range(SEND_TRIES):
        if attempt:
            services.sleep(SEND_BACK_OFF_SECONDS * attempt)
        entries = [
            {
                "Id": str(index),
                "MessageBody": rows[index][2],
                "MessageAttributes": {
                    RUN_ATTRIBUTE: {"DataType": "String", "StringValue": run_id},
                    ROW_ATTRIBUTE: {"DataType": "Number", "StringValue": str(rows[index][0])},
                    ORIGIN: {
                        "DataType": "String",
                        "StringValue": lead_file_row_key(run_id, rows[index][0]),
                    },
                },
            }
            for index in todo
        ]
        try:
            answer = services.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:
            answered = _not_taken(exc)
            logger.warning(
                "SendMessageBatch failed for lead file rows",
                extra={
                    "run_id": run_id,
                    "rows": len(todo),
                    "reason": reason_of(exc),
                    "sent_again": answered and attempt + 1 < SEND_TRIES,
                },
            )
            if not answered:
                return ids, True
            continue
        for sent in answer.get("Successful", []):
            ids[int(sent["Id"])] = str(sent["MessageId"])
        failed = answer.get("Failed", [])
        if failed:
            logger.warning(
                "SQS refused lead file rows",
                extra={
                    "run_id": run_id,
                    "rows": len(failed),
                    "codes": sorted({str(f.get("Code")) for f in failed}),
                },
            )
        # An entry refused for what it is (SenderFault) is refused again: not sent again.
        todo = [
            int(f["Id"]) for f in failed if not f.get("SenderFault") and ids[int(f["Id"])] is None
        ]
        if not todo:
            break
    return ids, False


def _not_taken(exc: Exception) -> bool:
    """Whether a failed call surely queued nothing: SQS answered with an error, or the call
    never reached it. A call that timed out waiting for the answer may have."""
    if isinstance(getattr(exc, "response", None), dict):
        return True
    try:
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
    except ImportError:  # pragma: no cover - botocore is in every Lambda runtime
        return False
    return isinstance(exc, ConnectTimeoutError | EndpointConnectionError)


def _line(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), default=str) + "\n").encode()
