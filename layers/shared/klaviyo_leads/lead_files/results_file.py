"""The results file: every input row, in the input's order, with its result appended."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Mapping
from typing import Any

from klaviyo_leads.actions.action import Action
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.lead_files.checks import NO_RESULT, RESULT_EXPIRED, unanswered
from klaviyo_leads.lead_files.csv_safety import csv_cells
from klaviyo_leads.lead_files.row_results import (
    MAX_KEYS_PER_GET,
    looked_up,
    lookup_key,
    manifest_entries,
)
from klaviyo_leads.lead_files.rows import Layout, Row, read_rows
from klaviyo_leads.lead_files.storage import S3Writer, Services, version_args


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def result_columns(action: Action, columns: list[str]) -> list[tuple[str, str]]:
    """(appended field, its column name): prefixed ``result.`` where an input column has it."""
    names = list(unanswered(action, NO_RESULT))
    taken = set(columns)
    return [(name, f"result.{name}" if name in taken else name) for name in names]


def assemble(services: Services, state: Mapping[str, Any]) -> int:
    """Stream the results file: every input row, in order, with its result appended; the
    rows of a results CSV with a cell neutralised (``is_formula``)."""
    s3, bucket = services.s3, state["bucket"]
    action = ACTIONS[state["action"]]
    jsonl = state["format"] == "jsonl"
    source = s3.get_object(Bucket=bucket, Key=state["key"], **version_args(state.get("version_id")))
    rows = (row for row in read_rows(source["Body"], jsonl, Layout()) if not row.blank)
    columns = list(state["columns"])
    appended = result_columns(action, columns)
    writer = S3Writer(s3, bucket, state["results"], "application/x-ndjson" if jsonl else "text/csv")
    text = io.StringIO()
    out = csv.writer(text, delimiter=state.get("delimiter") or ",", lineterminator="\r\n")
    if not jsonl:
        if state.get("byte_order_mark"):
            text.write("\ufeff")  # as the input had: Excel reads such a file as UTF-8
        out.writerow(csv_cells(columns + [name for _, name in appended])[0])
    dead = state.get("dead_letters") or {}
    formula_rows = 0
    try:
        manifest = manifest_entries(services, state)
        pairs = zip(rows, manifest, strict=True)
        chunks = iter(lambda: list(itertools.islice(pairs, MAX_KEYS_PER_GET)), [])

        def keys(chunk: list[tuple[Row, dict[str, Any]]]) -> list[str]:
            return [k for _, entry in chunk if (k := lookup_key(state, entry)) is not None]

        for chunk, found in looked_up(services, chunks, keys):
            for row, entry in chunk:
                key = lookup_key(state, entry)
                if key is None:
                    fields = entry["x"]
                elif key in found:
                    fields = found[key]
                else:
                    fields = unanswered(action, dead.get(str(entry["r"]), RESULT_EXPIRED))
                if "m" in entry and not fields.get("message_id"):
                    # The row's queue message: GET /results/<id>, or its dead letter.
                    fields = {**fields, "message_id": entry["m"]}
                if jsonl:
                    record = dict(row.raw) if isinstance(row.raw, dict) else {"line": row.raw}
                    record.update({name: fields.get(key) for key, name in appended})
                    text.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
                else:
                    cells, changed = csv_cells(
                        list(row.raw) + [_cell(fields.get(key)) for key, _ in appended]
                    )
                    formula_rows += changed
                    out.writerow(cells)
            writer.write(text.getvalue().encode())
            text.seek(0)
            text.truncate()
        writer.write(text.getvalue().encode())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return formula_rows
