"""Where each queued row's result is: the run's manifest (which message carried which row)
and the results table, looked up a hundred rows a call, several calls at once."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from klaviyo_leads.aws.queue import LEAD_FILE_ROW, LEAD_FILE_RUN, lead_file_row_key
from klaviyo_leads.lead_files.storage import Services

# Message attributes of a queued row: which file run, which row.
RUN_ATTRIBUTE = LEAD_FILE_RUN
ROW_ATTRIBUTE = LEAD_FILE_ROW
LOOKUP_THREADS = 8  # BatchGetItem calls at once
MAX_KEYS_PER_GET = 100  # BatchGetItem's limit


def manifest_entries(services: Services, state: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The manifest's entries in the file's order, one per row."""
    manifest = state["manifest"]
    if "segments" in state:
        keys = [f"{manifest}{index:06d}.jsonl" for index in range(int(state["segments"]))]
    else:  # a run sent before manifests were written in segments
        keys = [manifest]
    last = 0
    for key in keys:
        body = services.s3.get_object(Bucket=state["bucket"], Key=key)["Body"]
        for line in body.iter_lines():
            if line.strip():
                entry = json.loads(line)
                if int(entry["r"]) > last:
                    last = int(entry["r"])
                    yield entry


def lookup_key(state: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    """Where a queued row's result is kept: by row (whichever message carried it), or, for a
    run sent before results were kept by row, by its message; None for a refused row."""
    if "x" in entry:
        return None
    if state.get("row_keys"):
        return lead_file_row_key(state["run_id"], entry["r"])
    return str(entry["m"])


def looked_up(
    services: Services,
    chunks: Iterator[list[Any]],
    message_ids: Callable[[list[Any]], list[str]],
) -> Iterator[tuple[list[Any], dict[str, dict[str, Any]]]]:
    """Each chunk with its rows' stored results, in order; ``LOOKUP_THREADS`` lookups at once
    (a BatchGetItem takes milliseconds: one after another, 100,000 rows would take seconds)."""
    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lead-file-lookup") as pool:
        window: collections.deque[tuple[list[Any], Future[dict[str, dict[str, Any]]]]] = (
            collections.deque()
        )
        for chunk in chunks:
            window.append((chunk, pool.submit(stored_results, services, message_ids(chunk))))
            if len(window) >= 2 * LOOKUP_THREADS:
                done, found = window.popleft()
                yield done, found.result()
        while window:
            done, found = window.popleft()
            yield done, found.result()


def stored_results(services: Services, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Stored results by message id (the results table of ``aws.result_store``)."""
    if not message_ids or not services.results_table or services.dynamodb is None:
        return {}
    found: dict[str, dict[str, Any]] = {}
    keys = [{"message_id": {"S": m}} for m in dict.fromkeys(message_ids)]
    table = services.results_table
    for _ in range(5):
        answer = services.dynamodb.batch_get_item(
            RequestItems={
                table: {
                    "Keys": keys,
                    "ProjectionExpression": "message_id, #r",
                    "ExpressionAttributeNames": {"#r": "result"},
                }
            }
        )
        for item in answer.get("Responses", {}).get(table, []):
            found[item["message_id"]["S"]] = json.loads(item["result"]["S"])
        keys = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        if not keys:
            break
    return found
