"""The lead trail locally: delivered as in AWS, and asked the same questions with the same SQL.

    python -m devtools.trail --email ada@example.com     # a lead's history (make trail EMAIL=)
    python -m devtools.trail --phone "+15125550100"      # by phone (any form; read as E.164)
    python -m devtools.trail --vendor acme               # a vendor's leads (TrailVendorField)
    python -m devtools.trail --query outcomes-by-reason-per-day
    python -m devtools.trail --sql "SELECT count(*) FROM lead_trail"
    python -m devtools.trail --list                      # the named queries

**Delivery.** In AWS, CloudWatch Logs hands the trail lines of each action's log group to the
trail writer in batches. ``LocalTrail`` plays CloudWatch Logs for the local runner: it collects
each function's lines, makes them the batch a subscription filter would send, and files them
with the writer's own code (``trail.delivery.objects_of``) in the local stack's trail bucket and,
as the same objects, under ``.tools/trail/`` (kept after the stack is gone). What it does not
play: CloudWatch Logs itself (its filter, batching and retries) and Lambda's invocation of the
writer; the writer's handler is tested on the event CloudWatch Logs sends.

**Queries.** DuckDB reads the gzipped JSON Lines under a directory laid out as the bucket is
(``trail/action=<action>/day=<day>/``: ``.tools/trail``, or a copy of the real bucket made with
``aws s3 sync s3://<TrailBucketName>/trail ./trail``) as the view ``lead_trail``, with the
columns of the Athena table. The named queries are read from template.yaml, so ``make trail``
runs the very text Athena runs. A few of Athena's (Trino's) functions are defined for DuckDB as
macros: ``to_utf8``, ``to_hex`` (DuckDB's ``sha256`` already gives hex) and
``json_extract_scalar``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devtools.lambda_events import ROOT, ensure_layer_on_path

ensure_layer_on_path()

from klaviyo_leads.trail import delivery as trail_delivery  # noqa: E402
from klaviyo_leads.trail.records import COLUMNS, PARTITIONS  # noqa: E402

# Where the local runner mirrors its stack's trail (``LOCAL_TRAIL_DIR`` moves it: the tests do).
DEFAULT_DIR = Path(os.environ.get("LOCAL_TRAIL_DIR") or ROOT / ".tools" / "trail")
TEMPLATE = ROOT / "template.yaml"
EMAIL_QUERY, PHONE_QUERY, VENDOR_QUERY = (
    "lead-history-by-email",
    "lead-history-by-phone",
    "leads-of-a-vendor",
)
# Athena's functions the named queries use that DuckDB names otherwise.
ATHENA_MACROS = (
    "CREATE OR REPLACE MACRO to_utf8(s) AS encode(s)",
    "CREATE OR REPLACE MACRO to_hex(x) AS x",
    "CREATE OR REPLACE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)",
)


# -- Delivery ------------------------------------------------------------------------------------


class LocalTrail:
    """CloudWatch Logs' part, locally: each function's trail lines, as subscription batches,
    filed by the trail writer's code in the stack's trail bucket and under ``directory``."""

    DEFAULT_DIR = DEFAULT_DIR

    def __init__(
        self, s3: Any = None, bucket: str | None = None, directory: Path | None = DEFAULT_DIR
    ) -> None:
        self.s3, self.bucket, self.directory = s3, bucket, directory
        self._lock = threading.Lock()
        self._lines: dict[str, list[tuple[int, str]]] = {}
        self._ids = itertools.count(1)
        self.failed = 0  # objects that could not be filed
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)  # a new stack: a new, empty trail
            directory.mkdir(parents=True, exist_ok=True)

    def writer(self, function: str) -> Callable[[str], None]:
        """Where a function's trail lines go (its log group, in AWS)."""

        def write(line: str) -> None:
            with self._lock:
                self._lines.setdefault(function, []).append((next(self._ids), line))

        return write

    def flush(self) -> list[str]:
        """File what was written since the last flush; the keys of the objects written."""
        with self._lock:
            pending, self._lines = self._lines, {}
        keys: list[str] = []
        for function, lines in pending.items():
            batch = {
                "messageType": "DATA_MESSAGE",
                "logGroup": f"/aws/lambda/{function}",
                "logStream": f"local/{function}",
                "logEvents": [
                    {"id": f"{time.time_ns()}-{number}", "timestamp": 0, "message": line}
                    for number, line in lines
                ],
            }
            for key, body in trail_delivery.objects_of(batch).items():
                try:
                    if self.s3 is not None and self.bucket:
                        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                    if self.directory is not None:
                        path = self.directory / key
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(body)
                except Exception:  # the writer's failure (in AWS: retried, then dead-lettered)
                    self.failed += 1
                    continue
                keys.append(key)
        return keys


# -- Queries -------------------------------------------------------------------------------------


def named_queries(template: Path = TEMPLATE) -> dict[str, str]:
    """The stack's Athena named queries, by name: their SQL as deployed."""
    from devtools.aws import load_template

    resources = load_template(template)["Resources"]
    return {
        r["Properties"]["Name"]: r["Properties"]["QueryString"]
        for r in resources.values()
        if r["Type"] == "AWS::Athena::NamedQuery"
    }


def duckdb_type(athena_type: str) -> str:
    """An Athena (Hive) column type as DuckDB writes it."""
    simple = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT"}
    simple |= {"double": "DOUBLE", "boolean": "BOOLEAN"}
    if athena_type in simple:
        return simple[athena_type]
    if athena_type.startswith("array<") and athena_type.endswith(">"):
        return duckdb_type(athena_type[6:-1]) + "[]"
    if athena_type.startswith("struct<") and athena_type.endswith(">"):
        fields = [f.split(":", 1) for f in athena_type[7:-1].split(",")]
        return "STRUCT(" + ", ".join(f"{n} {duckdb_type(t)}" for n, t in fields) + ")"
    raise ValueError(f"no DuckDB type for {athena_type}")


def connect(directory: Path) -> Any:
    """DuckDB with the view ``lead_trail`` over the trail files under ``directory``."""
    import duckdb

    connection = duckdb.connect()
    for macro in ATHENA_MACROS:
        connection.execute(macro)
    columns = ", ".join(f"'{name}': '{duckdb_type(kind)}'" for name, kind in COLUMNS)
    partitions = ", ".join(f"'{name}': 'VARCHAR'" for name in PARTITIONS)
    files = sorted(directory.glob("trail/action=*/day=*/*.json.gz"))
    if files:
        pattern = str(directory / "trail" / "action=*" / "day=*" / "*.json.gz")
        source = (
            f"read_json('{pattern}', format = 'newline_delimited', hive_partitioning = true, "
            f"hive_types = {{{partitions}}}, columns = {{{columns}}})"
        )
    else:  # no trail yet: the same columns, no rows
        names = [*(name for name, _ in COLUMNS), *PARTITIONS]
        types = [*(duckdb_type(kind) for _, kind in COLUMNS), *("VARCHAR" for _ in PARTITIONS)]
        casts = ", ".join(f"NULL::{t} AS {n}" for n, t in zip(names, types, strict=True))
        source = f"(SELECT {casts} WHERE false)"
    connection.execute(f"CREATE VIEW lead_trail AS SELECT * FROM {source}")
    return connection


def run(directory: Path, sql: str, parameters: Sequence[Any] = ()) -> tuple[list[str], list[Any]]:
    """(column names, rows) of ``sql`` on the trail under ``directory``."""
    connection = connect(directory)
    cursor = connection.execute(sql, list(parameters))
    names = [d[0] for d in cursor.description]
    return names, cursor.fetchall()


def as_e164(phone: str, region: str = "US") -> str:
    """The phone as the trail hashed it (E.164), however it is written."""
    from klaviyo_leads.lead.phone import to_e164

    return to_e164(phone, region)


def table(names: list[str], rows: list[Any]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(
            f"{c['operation']} {c['status']}x{c['count']} {c['ms']}ms"
            if isinstance(c, dict)
            else str(c)
            for c in value
        )
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.trail", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the trail's files")
    asked = parser.add_mutually_exclusive_group(required=True)
    asked.add_argument("--email")
    asked.add_argument("--phone")
    asked.add_argument("--vendor")
    asked.add_argument("--query", help="a named query without parameters, by name")
    asked.add_argument("--sql")
    asked.add_argument("--list", action="store_true", help="the named queries")
    parser.add_argument("--region", default="US", help="region of phones without +")
    args = parser.parse_args(argv)
    queries = named_queries()
    if args.list:
        for name, sql in queries.items():
            print(f"-- {name}\n{sql}\n")
        return 0
    if args.email is not None:
        sql, parameters = queries[EMAIL_QUERY], [args.email]
    elif args.phone is not None:
        sql, parameters = queries[PHONE_QUERY], [as_e164(args.phone, args.region)]
    elif args.vendor is not None:
        sql, parameters = queries[VENDOR_QUERY], [args.vendor]
    elif args.query is not None:
        if args.query not in queries:
            parser.error(f"no named query {args.query!r}: {', '.join(queries)}")
        sql, parameters = queries[args.query], []
    else:
        sql, parameters = args.sql, []
    names, rows = run(args.dir, sql, parameters)
    print(table(names, rows))
    print(f"({len(rows)} rows; trail under {args.dir})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
