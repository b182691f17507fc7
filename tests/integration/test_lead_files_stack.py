"""Lead files through the local stack: the bucket in moto, the splitter on S3's "Object Created"
event, the action's queue drained as Lambda drains it, the assembler until the results file.

Invariants: every input row has exactly one row in the results file, in the input's order,
with every input column and the appended fields; a row's result is the one the queue path
gave its lead (or the refusal the report named, or an error saying it dead-lettered); a dry
run sends nothing; a file that is not taken queues nothing.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import lead_file_import as imports
from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import ROOT
from devtools.sandbox import Sandbox
from klaviyo_leads.lead_files.checks import DEAD_LETTERED
from klaviyo_leads.lead_files.storage import PART_BYTES, S3Writer

pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as box:
        yield box


@pytest.fixture(autouse=True)
def _no_faults(sandbox: Sandbox) -> Iterator[None]:
    yield
    sandbox.emulator.faults.clear()


def results_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode())))


def run(
    sandbox: Sandbox, tmp_path: Path, name: str, data: bytes, action: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Path | None]:
    path = tmp_path / name
    path.write_bytes(data)
    return imports.import_file(sandbox, path, action, out=lambda line: None, **kwargs)


def profiles_with(sandbox: Sandbox, email: str) -> list[dict[str, Any]]:
    return [p for p in sandbox.emulator.profiles() if p["attributes"].get("email") == email]


def test_a_csv_becomes_created_profiles_and_a_results_file_in_the_input_order(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    data = (
        "\ufeffEmail;First Name;Klaviyo Custom Favorite Color\r\n"
        "order1@example.com;Ann;blue\r\n"
        "not-an-email;Bob;\r\n"
        'order3@example.com;"Cy; the third";"red\r\nand green"\r\n'
    ).encode()
    code, report, results = run(sandbox, tmp_path, "order.csv", data, "create_profile")
    assert code == 0 and results is not None and results.name == "order.csv.results.csv"
    assert report["rows_read"] == 3 and report["rows_to_send"] == 2
    assert report["file"]["delimiter"] == ";" and report["file"]["byte_order_mark"]
    assert results.read_bytes().startswith(b"\xef\xbb\xbf")  # the input's byte-order mark
    rows = list(csv.reader(io.StringIO(results.read_bytes().decode("utf-8-sig")), delimiter=";"))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["Email", "First Name", "Klaviyo Custom Favorite Color"]
    assert {"outcome", "reason", "id", "errors"} <= set(header)
    assert [r[0] for r in body] == ["order1@example.com", "not-an-email", "order3@example.com"]
    got = [dict(zip(header, r, strict=True)) for r in body]
    assert [r["outcome"] for r in got] == ["success", "failure", "success"]
    assert got[1]["reason"] == "Invalid email address" and got[1]["id"] == ""
    assert got[1]["message_id"] == "" and got[0]["message_id"] and got[2]["message_id"]
    assert got[2]["Klaviyo Custom Favorite Color"] == "red\r\nand green"
    (third,) = profiles_with(sandbox, "order3@example.com")
    assert got[2]["id"] == third["id"] and third["attributes"]["first_name"] == "Cy; the third"
    assert third["attributes"]["properties"]["favorite_color"] == "red\r\nand green"
    # The progress object says the run finished, and the bus heard it.
    s3 = imports.services_of(sandbox).s3
    progress = json.loads(
        s3.get_object(
            Bucket=imports.bucket_of(sandbox), Key="results/create_profile/order.csv.progress.json"
        )["Body"].read()
    )
    assert progress["finished"] and progress["done"] == 3
    assert progress["by_outcome"] == {"failure": 1, "success": 2}
    finished = [e for e in sandbox.collect_results() if e["detail-type"] == "lead file finished"]
    assert [e["detail"]["key"] for e in finished] == ["create_profile/order.csv"]
    assert finished[0]["detail"]["by_outcome"] == {"failure": 1, "success": 2}


def test_a_dry_run_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    before = len(sandbox.emulator.profiles())
    data = b"email\ndry1@example.com\ndry2@example.com\nbad@\n"
    code, report, results = run(sandbox, tmp_path, "dry.csv", data, "create_profile", dry_run=True)
    assert code == 0 and results is None and report["dry_run"]
    assert report["rows_to_send"] == 2 and report["rows_refused"] == 1
    assert sandbox.queue_depth("create_profile") == (0, 0)
    assert len(sandbox.emulator.profiles()) == before
    assert (tmp_path / "dry.csv.report.json").is_file()


def test_metadata_settings_and_a_column_overriding_them(sandbox: Sandbox, tmp_path: Path) -> None:
    first = sandbox.emulator.create_list("File list A")
    second = sandbox.emulator.create_list("File list B")
    for email in ("meta1@example.com", "meta2@example.com"):
        sandbox.call_api("create_profile", json.dumps({"email": email}))
    data = f"email,Klaviyo List Id\nmeta1@example.com,\nmeta2@example.com,{second}\n".encode()
    code, _, results = run(
        sandbox,
        tmp_path,
        "meta.csv",
        data,
        "add_profile_to_list",
        metadata={"klaviyo.list_id": first},
    )
    assert code == 0 and results is not None
    got = results_of(results)
    assert [r["outcome"] for r in got] == ["success", "success"], [r["reason"] for r in got]
    assert [r["list_name"] for r in got] == ["File list A", "File list B"]


def test_json_lines_in_json_lines_out(sandbox: Sandbox, tmp_path: Path) -> None:
    data = b'{"email": "jsonl1@example.com", "first_name": "Jo"}\n[1, 2]\n{"email": "nope"}\n'
    code, _, results = run(sandbox, tmp_path, "leads.jsonl", data, "create_profile")
    assert code == 0 and results is not None and results.name == "leads.jsonl.results.jsonl"
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    # An array is no lead: the webhook answers such a body with an error, and so does the file.
    assert [line.get("outcome") for line in lines] == ["success", "error", "failure"]
    assert lines[0]["email"] == "jsonl1@example.com" and lines[0]["first_name"] == "Jo"


def test_a_file_uploaded_twice_is_a_new_run_whose_creates_are_duplicates(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    data = b"email\ntwice@example.com\n"
    _, first_report, first = run(sandbox, tmp_path, "twice.csv", data, "create_profile")
    assert first is not None and results_of(first)[0]["outcome"] == "success"
    created = results_of(first)[0]["id"]
    _, second_report, second = run(sandbox, tmp_path, "twice.csv", data, "create_profile")
    assert second is not None and second_report["run_id"] != first_report["run_id"]
    (row,) = results_of(second)
    assert row["outcome"] == "failure" and row["duplicate_profile_id"] == created
    assert row["reason"] == "A profile with this email already exists"
    assert len(profiles_with(sandbox, "twice@example.com")) == 1


def test_a_row_also_sent_by_webhook_is_one_profile_with_true_outcomes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The webhook creates the lead while the file's row waits on the queue."""
    path = tmp_path / "race.csv"
    path.write_bytes(b"email\nrace@example.com\n")
    services = imports.services_of(sandbox)
    version = imports.upload(sandbox, path.read_bytes(), "create_profile/race.csv")
    answer = imports.split(sandbox, services, "create_profile/race.csv", version)
    (taken,) = answer["files"]
    webhook = sandbox.call_api("create_profile", '{"email": "race@example.com"}')
    assert webhook.json()["outcome"] == "success"
    state = f"results/.lead-files/runs/{taken['run_id']}/state.json"
    imports.drain(sandbox, services, "create_profile", state)
    body = services.s3.get_object(
        Bucket=imports.bucket_of(sandbox), Key="results/create_profile/race.csv.results.csv"
    )["Body"].read()
    (row,) = list(csv.DictReader(io.StringIO(body.decode())))
    assert row["outcome"] == "failure" and row["duplicate_profile_id"] == webhook.json()["id"]
    assert len(profiles_with(sandbox, "race@example.com")) == 1


def test_a_row_that_dead_letters_gets_its_error(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.emulator.faults.add(Fault(operation_id="create_profile", status=503, times=None))
    data = b"email\ndead@example.com\n"
    code, _, results = run(sandbox, tmp_path, "dead.csv", data, "create_profile")
    assert code == 0 and results is not None
    (row,) = results_of(results)
    assert row["outcome"] == "error"
    assert row["reason"] == DEAD_LETTERED and "dead-letter queue" in row["reason"]
    assert sum(sandbox.queue_depth("create_profile", dead_letter=True)) >= 1


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("empty.csv", b"", "The file is empty"),
        ("latin.csv", b"email\n\xe9@example.com\n", "not valid UTF-8"),
        ("wide.csv", b"email\na@example.com,extra\n", "more than the header"),
    ],
)
def test_a_bad_file_gets_a_report_and_queues_nothing(
    sandbox: Sandbox, tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    code, report, results = run(sandbox, tmp_path, name, data, "create_profile")
    assert code == 1 and results is None and not report["accepted"]
    assert says in report["problem"]
    assert sandbox.queue_depth("create_profile") == (0, 0)


def test_a_file_over_the_stacks_limit_is_refused_whole(sandbox: Sandbox, tmp_path: Path) -> None:
    services = imports.services_of(sandbox, max_file_bytes=10)
    version = imports.upload(sandbox, b"email\nbig@example.com\n", "create_profile/big.csv")
    imports.split(sandbox, services, "create_profile/big.csv", version)
    report = json.loads(
        services.s3.get_object(
            Bucket=imports.bucket_of(sandbox), Key="results/create_profile/big.csv.report.json"
        )["Body"].read()
    )
    assert not report["accepted"] and "larger than the stack's limit" in report["problem"]
    assert sandbox.queue_depth("create_profile") == (0, 0)


def test_a_file_under_no_action_gets_a_report(sandbox: Sandbox) -> None:
    services = imports.services_of(sandbox)
    version = imports.upload(sandbox, b"email\nx@example.com\n", "subscribe/x.csv")
    imports.split(sandbox, services, "subscribe/x.csv", version)
    report = json.loads(
        services.s3.get_object(
            Bucket=imports.bucket_of(sandbox), Key="results/subscribe/x.csv.report.json"
        )["Body"].read()
    )
    assert not report["accepted"] and "not under an action's prefix" in report["problem"]


def test_the_same_notification_twice_queues_the_rows_once(sandbox: Sandbox) -> None:
    services = imports.services_of(sandbox)
    version = imports.upload(sandbox, b"email\nonce@example.com\n", "get_profiles/once.csv")
    imports.split(sandbox, services, "get_profiles/once.csv", version)
    imports.split(sandbox, services, "get_profiles/once.csv", version)
    assert sandbox.queue_depth("get_profiles") == (1, 0)
    sandbox.process_queue("get_profiles")


def test_make_import_writes_the_results_beside_the_input(tmp_path: Path) -> None:
    """The command as a user runs it: its own local stack, its last line names the results."""
    path = tmp_path / "cli.csv"
    path.write_bytes(b"email\ncli@example.com\n")

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devtools.lead_file_import", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    done = command(str(path), "create_profile")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"Results: {tmp_path / 'cli.csv.results.csv'}"
    assert "1/1 rows" in done.stderr  # the progress bar
    assert results_of(tmp_path / "cli.csv.results.csv")[0]["outcome"] == "success"
    missing = command(str(tmp_path / "missing.csv"), "create_profile")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("No such file")
    assert command(str(path), "no_such_action").returncode == 2


class _ReportsRefused:
    """An S3 client that refuses to write reports (a full quota, a denied key)."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(".report.json"):
            raise RuntimeError("AccessDenied")
        return self._s3.put_object(**kwargs)


def test_a_file_whose_report_cannot_be_written_sends_no_row(sandbox: Sandbox) -> None:
    services = imports.services_of(sandbox)
    services.s3 = _ReportsRefused(services.s3)
    version = imports.upload(sandbox, b"email\nunreported@example.com\n", "create_profile/u.csv")
    with pytest.raises(RuntimeError, match="AccessDenied"):
        imports.split(sandbox, services, "create_profile/u.csv", version)
    assert sandbox.queue_depth("create_profile") == (0, 0)


def test_a_large_object_is_written_in_parts_as_it_grows(sandbox: Sandbox) -> None:
    """The manifest and the results file are multipart uploads past one part: same bytes."""
    s3 = imports.services_of(sandbox).s3
    bucket = imports.bucket_of(sandbox)
    writer = S3Writer(s3, bucket, "results/large.bin", "application/octet-stream")
    line = b"x" * 1023 + b"\n"
    chunks = PART_BYTES // len(line) * 2 + 7
    for _ in range(chunks):
        writer.write(line)
    assert len(writer._parts) == 2  # two full parts sent while writing, the rest at close
    writer.close()
    body = s3.get_object(Bucket=bucket, Key="results/large.bin")["Body"].read()
    assert body == line * chunks


class _SqsWrapper:
    """The splitter's SQS client, around moto's: its SendMessageBatch can be made to fail."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.calls = 0
        self.entries = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def forward(self, **kwargs: Any) -> Any:
        with self.lock:
            self.entries += len(kwargs["Entries"])
        return self._sqs.send_message_batch(**kwargs)


class _AnswerLost(_SqsWrapper):
    """SQS takes the first batch, but its answer never comes back (a read timeout)."""

    def send_message_batch(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ReadTimeoutError

        with self.lock:  # batches are sent from several threads
            self.calls += 1
            first = self.calls == 1
        answer = self.forward(**kwargs)
        if first:
            raise ReadTimeoutError(endpoint_url="https://sqs.example")
        return answer


class _SentTwice(_SqsWrapper):
    """Every batch reaches the queue twice (an SDK's retry after a lost answer)."""

    def send_message_batch(self, **kwargs: Any) -> Any:
        self.forward(**kwargs)
        return self.forward(**kwargs)


def _send_file(
    sandbox: Sandbox, sqs: type[_SqsWrapper], name: str, rows: int
) -> tuple[_SqsWrapper, list[dict[str, str]], list[str]]:
    services = imports.services_of(sandbox)
    services.sqs = wrapper = sqs(services.sqs)
    emails = [f"{name}{i}@example.com" for i in range(rows)]
    key = f"create_profile/{name}.csv"
    version = imports.upload(sandbox, ("email\n" + "\n".join(emails) + "\n").encode(), key)
    (taken,) = imports.split(sandbox, services, key, version)["files"]
    state = f"results/.lead-files/runs/{taken['run_id']}/state.json"
    imports.drain(sandbox, services, "create_profile", state)
    body = services.s3.get_object(
        Bucket=imports.bucket_of(sandbox), Key=f"results/{key}.results.csv"
    )["Body"].read()
    return wrapper, list(csv.DictReader(io.StringIO(body.decode()))), emails


def test_rows_sqs_took_without_answering_are_not_queued_again_and_get_their_results(
    sandbox: Sandbox,
) -> None:
    sqs, rows, emails = _send_file(sandbox, _AnswerLost, "lostanswer", 12)
    assert sqs.entries == 12  # each row once: the batch without an answer was not sent again
    assert [r["email"] for r in rows] == emails
    assert [r["outcome"] for r in rows] == ["success"] * 12, [r["reason"] for r in rows]
    for email in emails:
        assert len(profiles_with(sandbox, email)) == 1


def test_a_row_queued_twice_is_processed_and_answered_once(sandbox: Sandbox) -> None:
    sqs, rows, emails = _send_file(sandbox, _SentTwice, "queuedtwice", 3)
    assert sqs.entries == 6
    assert [r["outcome"] for r in rows] == ["success"] * 3, [r["reason"] for r in rows]
    for row, email in zip(rows, emails, strict=True):
        (profile,) = profiles_with(sandbox, email)
        assert row["id"] == profile["id"]
    # Each of the row's two messages has the row's one result (the second, replayed, once
    # the first has it: handed back meanwhile).
    for _ in range(5):
        sandbox.redeliver_now(sandbox.process_queue("create_profile"))
    assert sandbox.queue_depth("create_profile") == (0, 0)
    results = [e for e in sandbox.collect_results() if e["detail-type"] == "create_profile result"]
    by_email: dict[str, list[dict[str, Any]]] = {}
    for event in results:
        by_email.setdefault(event["detail"]["lead"].get("email"), []).append(event["detail"])
    for email in emails:
        answers = by_email[email]
        assert len({a["message_id"] for a in answers}) == 2
        assert {(a["result"]["outcome"], a["result"]["id"]) for a in answers} == {
            ("success", profiles_with(sandbox, email)[0]["id"])
        }


def test_the_newest_upload_of_a_key_is_the_one_its_results_describe(sandbox: Sandbox) -> None:
    """A file overwritten while its run is going: the older run finishing last does not make
    its results the current ones; they are kept under its run id."""
    services = imports.services_of(sandbox)
    bucket, key = imports.bucket_of(sandbox), "create_profile/overwritten.csv"
    older = imports.upload(sandbox, b"email\nolder-upload@example.com\n", key)
    (first,) = imports.split(sandbox, services, key, older)["files"]
    newer = imports.upload(sandbox, b"email\nnewer-upload@example.com\n", key)
    (second,) = imports.split(sandbox, services, key, newer)["files"]
    assert first["run_id"] != second["run_id"]
    for taken in (second, first):  # the older run finishes last
        imports.drain(
            sandbox,
            services,
            "create_profile",
            f"results/.lead-files/runs/{taken['run_id']}/state.json",
        )

    def read(name: str) -> str:
        return services.s3.get_object(Bucket=bucket, Key=name)["Body"].read().decode()

    assert "newer-upload@example.com" in read(f"results/{key}.results.csv")
    assert "older-upload@example.com" in read(f"results/{key}.{first['run_id']}.results.csv")
    assert json.loads(read(f"results/{key}.progress.json"))["run_id"] == second["run_id"]
    assert json.loads(read(f"results/{key}.report.json"))["run_id"] == second["run_id"]
    # Split in the other order (S3's notifications can come so): the older one's report too.
    again = imports.upload(sandbox, b"email\nlate-notice@example.com\n", key)
    newest = imports.upload(sandbox, b"email\nnewest@example.com\n", key)
    (latest,) = imports.split(sandbox, services, key, newest)["files"]
    (late,) = imports.split(sandbox, services, key, again)["files"]
    assert json.loads(read(f"results/{key}.report.json"))["run_id"] == latest["run_id"]
    assert (
        json.loads(read(f"results/{key}.{late['run_id']}.report.json"))["run_id"] == late["run_id"]
    )
    for taken in (late, latest):
        imports.drain(
            sandbox,
            services,
            "create_profile",
            f"results/.lead-files/runs/{taken['run_id']}/state.json",
        )
    assert "newest@example.com" in read(f"results/{key}.results.csv")


def test_get_profiles_on_a_file_is_a_consent_report(sandbox: Sandbox, tmp_path: Path) -> None:
    """Who on this list can be emailed or texted: each row's consent and suppression columns,
    and a line per channel counting them."""
    emulator = sandbox.emulator
    opted = emulator.create_list("Report list", opt_in="single")
    lead = {"email": "rep-sub@example.com", "phone_1": "+15125550170"}
    lead |= {"klaviyo.list_id": opted, "klaviyo.channels": "email,sms"}
    assert sandbox.call_api("subscribe_profile_to_list", json.dumps(lead)).status == 200
    bounced = emulator.create_profile(email="rep-bounced@example.com")
    emulator.suppress(bounced, "HARD_BOUNCE")
    emulator.create_profile(email="rep-never@example.com")
    data = (
        b"email\nrep-sub@example.com\nrep-bounced@example.com\nrep-never@example.com\n"
        b"rep-nobody@example.com\n"
    )
    path = tmp_path / "report.csv"
    path.write_bytes(data)
    said: list[str] = []
    code, _, results = imports.import_file(sandbox, path, "get_profiles", out=said.append)
    assert code == 0 and results is not None
    rows = results_of(results)
    assert [r["email_consent"] for r in rows] == [
        "subscribed",
        "suppressed",
        "never_subscribed",
        "",
    ]
    assert [r["sms_consent"] for r in rows] == [
        "subscribed",
        "never_subscribed",
        "never_subscribed",
        "",
    ]
    assert rows[1]["email_marketing_subscription_suppression_reason"] == "HARD_BOUNCE"
    assert said[-3:-1] == [
        "Consent, email: 1 subscribed, 1 suppressed, 1 never subscribed, 1 no profile",
        "Consent, sms: 1 subscribed, 2 never subscribed, 1 no profile",
    ]


def test_a_file_of_past_opt_ins_is_a_historical_import(sandbox: Sandbox, tmp_path: Path) -> None:
    """As docs/lead-files.md shows it: no confirmation is sent, the consent is held at once."""
    emulator = sandbox.emulator
    confirmed = emulator.create_list("Past opt-ins")  # double opt-in, as Klaviyo makes lists
    before = len(emulator.confirmations())
    data = (
        b"Email,Klaviyo Consented At,TrustedForm Certificate URL\n"
        b"hist1@example.com,2024-05-01T10:00:00Z,https://cert.trustedform.com/"
        b"0123456789abcdef0123456789abcdef01234567\n"
        b"hist2@example.com,,\n"
    )
    metadata = {"klaviyo.list_id": confirmed, "klaviyo.historical_import": "true"}
    code, report, results = run(
        sandbox, tmp_path, "opt-ins.csv", data, "subscribe_profile_to_list", metadata=metadata
    )
    assert code == 0 and results is not None
    rows = results_of(results)
    assert [(r["outcome"], r["email_consent"]) for r in rows] == [
        ("success", "subscribed"),
        ("failure", ""),
    ]
    assert rows[1]["reason"].startswith("Klaviyo Consented At is missing")
    assert report["rows_refused"] == 1  # found by the check, before anything was sent
    assert len(emulator.confirmations()) == before
    (profile,) = profiles_with(sandbox, "hist1@example.com")
    marketing = profile["attributes"]["subscriptions"]["email"]["marketing"]
    assert marketing["consent_timestamp"].startswith("2024-05-01T10:00:00")


def test_a_file_of_past_events_is_backfilled(sandbox: Sandbox, tmp_path: Path) -> None:
    data = (
        b"Email,Klaviyo Metric Name,Klaviyo Event Time,Klaviyo Unique Id,plan\n"
        b"past1@example.com,Placed Order,2025-03-02T09:00:00Z,order-1001,gold\n"
    )
    code, _, results = run(
        sandbox, tmp_path, "orders.csv", data, "track_event", metadata={"klaviyo.backfill": "true"}
    )
    assert code == 0 and results is not None
    assert [r["outcome"] for r in results_of(results)] == ["success"]
    (event,) = sandbox.emulator.events(metric="Placed Order")
    assert event["backfill"] is True and event["unique_id"] == "order-1001"
