"""Run the functions locally, without Docker or an AWS account.

    python -m devtools.runner demo                      # every trigger, every action, checked
    python -m devtools.runner serve [--port 8080]       # the API on 127.0.0.1, for curl
    python -m devtools.runner invoke ACTION EVENT.json   # one event file, like `sam local invoke`

Each runs the functions in a ``Sandbox`` (``devtools.sandbox``: the Klaviyo emulator and
moto's server with template.yaml deployed in it); ``serve`` is ``devtools.serve`` and talks to
the real Klaviyo instead when ``KLAVIYO_API_KEY`` is set; ``invoke`` runs in a running
``serve``'s stack when there is one (``devtools.serve_client``). This module is the command
line and the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import events as samples
from devtools import lambda_events as le
from devtools.sandbox import ApiAnswer, Sandbox
from devtools.serve import run_serve
from devtools.serve_client import LOCAL_INVOKE_PREFIX, running_serve

le.ensure_layer_on_path()

from klaviyo_leads.actions.table import ACTIONS  # noqa: E402  (the layer is on the path now)

# Order the demo runs the actions in: later samples look up the people earlier ones create.
DEMO_ORDER = (
    "create_profile",
    "get_profiles",
    "get_segment_profiles",
    "update_profile",
    "add_profile_to_list",
    "subscribe_profile_to_list",
    "unsubscribe_profile",
    "remove_profile_from_list",
    "upsert_profile",
    "track_event",
    "delete_profile",
)


# -- Output --------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Rows as aligned text columns; None shows as '-'."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


# -- demo ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One lead's way through one trigger, what came out, and what the demo expected."""

    case: str
    action: str
    trigger: str
    expected: str  # outcome, or "handed back"
    expected_status: int | None = None
    status: int | None = None
    outcome: str | None = None
    reason: str | None = None
    profile_id: str | None = None
    list_name: str | None = None
    problems: list[str] = field(default_factory=list)
    message_id: str | None = None
    lead: Any = None

    def take(self, fields: Mapping[str, Any]) -> None:
        self.outcome = fields.get("outcome")
        self.reason = fields.get("reason")
        self.profile_id = fields.get("id")
        self.list_name = fields.get("list_name")

    @property
    def ok(self) -> bool:
        if self.problems:
            return False
        if self.expected_status is not None and self.status != self.expected_status:
            return False
        return self.outcome == self.expected

    def cells(self) -> list[Any]:
        verdict = "ok" if self.ok else "UNEXPECTED"
        if not self.ok:
            wanted = self.expected + (f" {self.expected_status}" if self.expected_status else "")
            verdict += f" (wanted {wanted}" + "".join(f"; {p}" for p in self.problems) + ")"
        return [
            self.case,
            self.action,
            self.trigger,
            self.status,
            self.outcome,
            self.reason,
            self.profile_id,
            self.list_name,
            verdict,
        ]


DEMO_COLUMNS = [
    "case",
    "action",
    "trigger",
    "http",
    "outcome",
    "reason",
    "id",
    "list_name",
    "check",
]

NEW_LEAD = {
    "email": "nia.okafor@example.com",
    "phone_1": "(512) 555-0123",
    "first_name": "Nia",
    "last_name": "Okafor",
    "company": {"name": "Tailspin Toys"},
    "klaviyo": {"custom": {"lead_source": "pricing page"}},
}
INVALID_EMAIL_FORM = "email=nia.okafor%40example&first_name=Nia&company.name=Tailspin+Toys"
THROTTLED_LEAD = {"email": "ravi.patel@example.com", "first_name": "Ravi", "timeout_seconds": 5}
RETRIED_LEAD = {
    "email": "jordan.blake@example.com",
    "phone_1": "415-555-0199",
    "timeout_seconds": 2,
}

# The outcome each sample lead (devtools.events) has when the demo runs it through its queue.
SQS_EXPECTED = {
    "create_profile": ("success", "success"),
    "get_profiles": ("success", "success"),
    "get_segment_profiles": ("success", "failure"),
    "update_profile": ("success", "success"),
    "add_profile_to_list": ("success", "success"),
    "subscribe_profile_to_list": ("success", "success"),
    "unsubscribe_profile": ("success", "success"),
    "remove_profile_from_list": ("success", "success"),
    "upsert_profile": ("success", "success"),
    "track_event": ("success", "success"),
    "delete_profile": ("success", "success"),
}


def _api_row(sandbox: Sandbox, row: Row, body: str, content_type: str) -> ApiAnswer:
    answer = sandbox.call_api(row.action, body, headers={"Content-Type": content_type})
    row.status = answer.status
    try:
        row.take(answer.json())
    except ValueError:
        row.problems.append("the body is not JSON")
    return answer


def demo_api(sandbox: Sandbox) -> list[Row]:
    """Create Profile over the synchronous API: new, duplicate, invalid email."""
    rows = []
    new = Row("new lead", "create_profile", "api", "success", 200)
    _api_row(sandbox, new, json.dumps(NEW_LEAD), "application/json")
    if not new.profile_id:
        new.problems.append("no profile id")
    rows.append(new)

    again = Row("same lead again", "create_profile", "api", "failure", 422)
    _api_row(sandbox, again, json.dumps(NEW_LEAD), "application/json")
    if new.profile_id and again.profile_id != new.profile_id:
        again.problems.append("id is not the existing profile's")
    rows.append(again)

    invalid = Row("invalid email", "create_profile", "api (form)", "failure", 422)
    _api_row(sandbox, invalid, INVALID_EMAIL_FORM, "application/x-www-form-urlencoded")
    if invalid.reason != "Invalid email address":
        invalid.problems.append("reason")
    rows.append(invalid)
    return rows


def demo_throttled(sandbox: Sandbox) -> Row:
    """Klaviyo answers 429 with a Retry-After longer than the lead's budget."""
    from devtools.klaviyo_emulator import Fault

    sandbox.emulator.faults.add(
        Fault(status=429, retry_after=30, times=1, method="POST", path=r"^/api/profiles/?$")
    )
    row = Row("throttled", "create_profile", "api", "error", 503)
    answer = _api_row(sandbox, row, json.dumps(THROTTLED_LEAD), "application/json")
    if answer.headers.get("Retry-After") != "30":
        row.problems.append(f"Retry-After {answer.headers.get('Retry-After')!r}")
    sandbox.emulator.faults.clear()
    return row


def demo_queues(sandbox: Sandbox) -> list[Row]:
    """Every action's sample leads through its queue, as the event source mapping runs them."""
    rows: list[Row] = []
    for action in DEMO_ORDER:
        leads = samples.SAMPLE_LEADS[action]
        sent = []
        for index, lead in enumerate(leads):
            row = Row(f"sample {index + 1}", action, "sqs", SQS_EXPECTED[action][index])
            row.lead = lead
            row.message_id = sandbox.send_to_queue(action, json.dumps(lead))
            sent.append(row)
        batches = sandbox.process_queue(action)
        seen = {m for b in batches for m in b.message_ids}
        for row in sent:
            if row.message_id not in seen:
                row.problems.append("never delivered")
            for batch in batches:
                if batch.error and row.message_id in batch.message_ids:
                    row.problems.append(f"the handler raised {batch.error}")
                if row.message_id in batch.failed:
                    row.outcome = "handed back"
        rows.extend(sent)
    return rows


def demo_retry(sandbox: Sandbox) -> list[Row]:
    """A Klaviyo outage: the record goes back to the queue, and succeeds when delivered again."""
    from devtools.klaviyo_emulator import Fault

    action = "create_profile"
    sandbox.emulator.faults.add(
        Fault(status=503, times=None, method="POST", path=r"^/api/profiles")
    )
    first = Row("Klaviyo down", action, "sqs", "handed back")
    first.lead = RETRIED_LEAD
    first.message_id = sandbox.send_to_queue(action, json.dumps(RETRIED_LEAD))
    batches = sandbox.process_queue(action)
    sandbox.emulator.faults.clear()
    if first.message_id in {m for b in batches for m in b.failed}:
        first.outcome = "handed back"
        first.reason = "in batchItemFailures: stays on the queue"
    if sandbox.queue_depth(action) != (0, 1):
        first.problems.append(f"queue (visible, in flight) = {sandbox.queue_depth(action)}")
    # The visibility timeout (6 x the function timeout) would pass here; skip the wait.
    sandbox.redeliver_now(batches)

    second = Row("delivered again", action, "sqs", "success")
    second.lead = RETRIED_LEAD
    second.message_id = first.message_id
    batches = sandbox.process_queue(action)
    counts = [
        r["attributes"].get("ApproximateReceiveCount")
        for b in batches
        for r in b.event["Records"]
        if r["messageId"] == second.message_id
    ]
    if counts != ["2"]:
        second.problems.append(f"receive counts {counts}")
    if sandbox.queue_depth(action) != (0, 0):
        second.problems.append("message left on the queue")
    return [first, second]


def match_published(rows: list[Row], published: list[dict[str, Any]]) -> list[str]:
    """Fill the SQS rows from the published results; return what is wrong with publishing."""
    problems = []
    by_message: dict[str, list[dict[str, Any]]] = {}
    for event in published:
        detail = event.get("detail") or {}
        by_message.setdefault(str(detail.get("message_id")), []).append(event)
    queued = [r for r in rows if r.trigger == "sqs"]
    finished = [r for r in queued if r.outcome != "handed back"]
    for row in finished:
        events = by_message.get(str(row.message_id), [])
        if len(events) != 1:
            row.problems.append(f"published {len(events)} times")
            continue
        event = events[0]
        detail = event["detail"]
        row.take(detail.get("result") or {})
        if event.get("detail-type") != f"{row.action} result" or detail.get("action") != row.action:
            row.problems.append("published under the wrong action")
        if detail.get("lead") != row.lead:
            row.problems.append("the published lead is not the one sent")
    expected = len(finished)
    if len(published) != expected:
        problems.append(f"{len(published)} results published, expected {expected}")
    return problems


def run_demo(verbose: bool = False) -> int:
    from devtools.klaviyo_emulator.contract import default_spec_path

    started = time.monotonic()
    print("Starting the Klaviyo emulator and moto ...", flush=True)
    spec = default_spec_path()
    spec = spec if spec.is_file() else None
    # Klaviyo's answers take as long as the emulator's realistic model says (its figures are
    # assumptions, see devtools/klaviyo_emulator/latency.py).
    with Sandbox(
        log_level="INFO" if verbose else "WARNING", openapi_path=spec, latency="realistic"
    ) as sandbox:
        stack = sandbox.stack()
        print(f"  Klaviyo emulator  {sandbox.klaviyo_url}  (list Y6nRLr, segment VIPseg)")
        print(
            f"  moto              {stack.endpoint_url}  (template.yaml deployed as {stack.name}: "
            f"{len(stack.physical_ids)} resources)"
        )
        print()
        rows = demo_api(sandbox)
        rows += demo_queues(sandbox)
        rows += demo_retry(sandbox)
        rows.append(demo_throttled(sandbox))
        published = sandbox.collect_results()
        problems = match_published(rows, published)

        print("Create Profile through API Gateway (REST, proxy) and every action through SQS:")
        print()
        print(table(DEMO_COLUMNS, [r.cells() for r in rows]))
        print()
        print("  (sqs rows show the result each record published on the event bus, read back")
        print("   from the results queue. A record is 'handed back' when the function reports it")
        print("   in batchItemFailures: SQS delivers it again after the visibility timeout, so it")
        print("   publishes nothing yet. The demo covers the webhook (API Gateway) and queue (SQS)")
        print("   paths, and a lead file below; EventBridge and direct invocation are covered by")
        print("   the tests, not here.)")
        print()
        file_ok = demo_lead_file(sandbox)
        dead = sum(sandbox.queue_depth(a, dead_letter=True)[0] for a in ACTIONS)
        left = sum(sum(sandbox.queue_depth(a)) for a in ACTIONS)
        checks = [
            ("a lead file: every row in the results file, with the outcome expected", file_ok),
            (
                f"{len(published)} results published on the bus (one per finished SQS record, "
                "none for the handed-back delivery)",
                not problems,
            ),
            (
                f"{left} messages left on the action queues, {dead} in dead-letter queues",
                left == 0 and dead == 0,
            ),
        ]
        if spec is not None:
            violations = sandbox.emulator.contract_violations
            checks.append(
                (f"{len(violations)} violations of Klaviyo's OpenAPI document", not violations)
            )
            problems += [f"contract: {v}" for v in violations]
        else:
            print(
                f"  --  Klaviyo's OpenAPI document not found at {default_spec_path()}: the"
                " emulator's requests and answers were not checked against it (the demo still ran)"
            )
        for text, good in checks:
            print(f"  {'ok' if good else 'FAILED'}  {text}")
        for problem in problems:
            print(f"  FAILED  {problem}")
        failed = [r for r in rows if not r.ok]
        good = not failed and all(ok for _, ok in checks)
        elapsed = time.monotonic() - started
        print()
        print(
            f"{len(rows) - len(failed)}/{len(rows)} cases as expected in {elapsed:.1f} s: "
            + ("demo passed" if good else "DEMO FAILED")
        )
        print()
        print(NEXT_STEPS)
        return 0 if good else 1


DEMO_FILE = (
    "Email,First Name,Klaviyo List Id\n"
    "grace@example.com,Grace,Y6nRLr\n"
    "not-an-email,Alan,Y6nRLr\n"
    "edsger@example.com,Edsger,Y6nRLr\n"
)
DEMO_FILE_OUTCOMES = ["success", "failure", "success"]


def demo_lead_file(sandbox: Sandbox) -> bool:
    """A three-row file through the lead-files bucket, as `make import` sends it."""
    import csv
    import tempfile

    from devtools import lead_file_import

    print("A lead file through S3 (make import FILE=... ACTION=...):")
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        path = Path(tmp) / "trade-show.csv"
        path.write_text(DEMO_FILE, encoding="utf-8")
        code, _, results = lead_file_import.import_file(
            sandbox, path, "subscribe_profile_to_list", out=lambda line: None
        )
        print(f"  {path.name}: 3 rows, queued on subscribe_profile_to_list; its results file:")
        rows = list(csv.DictReader(results.open(encoding="utf-8"))) if results else []
    sandbox.collect_results()  # the rows' results and the file's event, shown by the file
    print(
        table(
            ["row", "First Name", "outcome", "reason"],
            [[i, r["First Name"], r["outcome"], r["reason"]] for i, r in enumerate(rows, 1)],
        )
    )
    print()
    return code == 0 and [r["outcome"] for r in rows] == DEMO_FILE_OUTCOMES


NEXT_STEPS = """Next: `make serve` keeps the same stack running on http://127.0.0.1:8080, then try
  curl -s -X POST http://127.0.0.1:8080/create-profile -d 'email=ada@example.com'
  curl -s -X POST http://127.0.0.1:8080/subscribe-profile-to-list/async \\
       -d 'email=ada@example.com&klaviyo.list_id=Y6nRLr'     # 202 with a message_id
  curl -s http://127.0.0.1:8080/results/<message_id>         # its result, once the queue ran it
(README.md "Try it"; make invoke ACTION=... EVENT=... runs one event file; make import
FILE=leads.csv ACTION=... sends a file of leads, docs/lead-files.md.)"""


# -- invoke --------------------------------------------------------------------------------


def _print_published(published: list[dict[str, Any]]) -> None:
    if published:
        print(f"\nPublished {len(published)} result event(s):", file=sys.stderr)
        for item in published:
            print(json.dumps(item.get("detail", {}).get("result")), file=sys.stderr)


def _invoke_on_serve(base: str, action: str, event: Any) -> int:
    import urllib.request

    print(f"(against the running make serve at {base}: its emulator and stack)", file=sys.stderr)
    request = urllib.request.Request(
        f"{base}{LOCAL_INVOKE_PREFIX}{action}",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=le.FUNCTION_TIMEOUT_SECONDS + 30) as answer:
        done = json.loads(answer.read())
    if "error" in done:
        print(f"invoke: the handler raised {done['error']}", file=sys.stderr)
        return 1
    print(json.dumps(done["response"], indent=2))
    _print_published(done.get("published") or [])
    return 0


def run_invoke(action: str, event_path: Path, timeout_seconds: float | None) -> int:
    try:
        event = json.loads(event_path.read_text("utf-8"))
    except FileNotFoundError:
        print(
            f"invoke: no event file {event_path} (the samples are in events/<action>/, "
            "e.g. make invoke ACTION=create_profile EVENT=events/create_profile/sqs.json)",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as exc:
        print(f"invoke: cannot read {event_path} as JSON: {exc}", file=sys.stderr)
        return 2
    base = running_serve() if timeout_seconds is None else None
    if base is not None:
        return _invoke_on_serve(base, action, event)
    with Sandbox() as sandbox:
        response = sandbox.invoke(action, event, timeout_seconds)
        print(json.dumps(response, indent=2))
        published = sandbox.collect_results()
        if published:
            print(f"\nPublished {len(published)} result event(s):", file=sys.stderr)
            for item in published:
                print(json.dumps(item.get("detail", {}).get("result")), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.runner",
        description="Run the Lambda functions locally against the Klaviyo emulator and moto.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run every trigger and action; exit 1 if unexpected")
    demo.add_argument("--verbose", action="store_true", help="show the functions' INFO logs")
    serve = commands.add_parser("serve", help="serve the API on 127.0.0.1 for curl")
    serve.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--verbose", action="store_true", help="also show the functions' INFO logs and metrics"
    )
    invoke = commands.add_parser("invoke", help="run one event file through a function")
    invoke.add_argument("action", choices=sorted(ACTIONS))
    invoke.add_argument("event", type=Path, help="event JSON, e.g. events/create_profile/sqs.json")
    invoke.add_argument("--timeout", type=float, default=None, help="function timeout (s)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.verbose)
    if args.command == "serve":
        return run_serve(args.port, args.host, args.verbose)
    return run_invoke(args.action, args.event, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
