"""``python -m devtools.runner demo`` and ``invoke``: the local runner end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from devtools import lambda_events as le
from devtools import runner, serve_client
from devtools.runner import DEMO_ORDER

ENV_SET_BY_THE_SANDBOX = ("AWS_ENDPOINT_URL", "KLAVIYO_API_KEY_SECRET_ID", "RESULTS_EVENT_BUS_NAME")


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "devtools.runner", *args],
        cwd=le.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _row(output: str, case: str, action: str, trigger: str) -> list[str]:
    """A table row's cells (columns are separated by two or more spaces)."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:3] == [case, action, trigger]:
            return cells
    raise AssertionError(f"no row {case!r} {action} {trigger} in:\n{output}")


@pytest.mark.slow
def test_demo_runs_every_case_as_expected() -> None:
    done = _run("demo")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"(\d+)/\1 cases as expected in [\d.]+ s: demo passed", out)
    assert "UNEXPECTED" not in out and "FAILED" not in out

    new = _row(out, "new lead", "create_profile", "api")
    assert new[3:5] == ["200", "success"]
    profile_id = new[6]
    assert re.fullmatch(r"[0-9A-Z]{26}", profile_id)
    assert _row(out, "same lead again", "create_profile", "api")[3:7] == [
        "422",
        "failure",
        "A profile with this email and phone number already exists",
        profile_id,
    ]
    assert _row(out, "invalid email", "create_profile", "api (form)")[3:6] == [
        "422",
        "failure",
        "Invalid email address",
    ]
    assert _row(out, "throttled", "create_profile", "api")[3:6] == [
        "503",
        "error",
        "Klaviyo returned HTTP 429 (rate limited)",
    ]
    for action in runner.DEMO_ORDER:
        for index, expected in enumerate(runner.SQS_EXPECTED[action]):
            assert _row(out, f"sample {index + 1}", action, "sqs")[4] == expected
    assert _row(out, "sample 1", "get_segment_profiles", "sqs")[-2:] == ["VIP customers", "ok"]
    assert _row(out, "Klaviyo down", "create_profile", "sqs")[4] == "handed back"
    assert _row(out, "delivered again", "create_profile", "sqs")[4] == "success"
    # Two sample leads per action through its queue, and the outage's delivered-again lead.
    assert f"{2 * len(DEMO_ORDER) + 1} results published on the bus" in out
    assert "0 messages left on the action queues, 0 in dead-letter queues" in out
    # A lead file's rows, in order, with their outcomes.
    assert "ok  a lead file: every row in the results file" in out
    file_rows = [
        re.split(r"\s{2,}", line.strip())
        for line in out.split("its results file:", 1)[1].split("\n\n", 1)[0].splitlines()
        if line[:1].isdigit()
    ]
    assert [cells[:3] for cells in file_rows] == [
        ["1", "Grace", "success"],
        ["2", "Alan", "failure"],
        ["3", "Edsger", "success"],
    ]

    # It ends with what to try next; its words are explained where they appear.
    results, _, next_steps = out.partition("\nNext: ")
    assert "make serve" in next_steps and "curl -s" in next_steps and "/results/" in next_steps
    assert "batchItemFailures" in results and "EventBridge" in results
    assert "@" not in results, "the demo's results show no email addresses"
    assert '"_aws"' not in out, "no metric (EMF) lines on stdout"


def test_demo_exits_non_zero_when_a_case_is_unexpected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {name: os.environ.get(name) for name in ENV_SET_BY_THE_SANDBOX}
    wrong = dict(runner.SQS_EXPECTED, get_segment_profiles=("success", "success"))
    monkeypatch.setattr(runner, "SQS_EXPECTED", wrong)

    assert runner.run_demo() == 1

    out = capsys.readouterr().out
    counted = re.search(r"(\d+)/(\d+) cases as expected", out)
    assert counted and int(counted[1]) == int(counted[2]) - 1
    assert "DEMO FAILED" in out
    row = _row(out, "sample 2", "get_segment_profiles", "sqs")
    assert row[4] == "failure"
    assert row[-1].startswith("UNEXPECTED (wanted success")
    # The sandbox gave the process its environment back.
    assert {name: os.environ.get(name) for name in ENV_SET_BY_THE_SANDBOX} == before


def test_the_suite_keeps_off_a_developers_make_serve() -> None:
    """What `invoke` and `serve` run by the suite read and write is the suite's own state
    file: a developer's serve (its .tools/serve.json) is neither used nor replaced."""
    done = _run_python("from devtools import serve_client; print(serve_client.serve_state_path())")
    used = done.stdout.strip()
    assert used and used != str(serve_client.DEFAULT_SERVE_STATE)
    assert used == os.environ[serve_client.SERVE_STATE_ENV]


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=le.ROOT, capture_output=True, text=True, timeout=60
    )


def test_invoke_runs_an_event_file_and_shows_what_was_published() -> None:
    done = _run("invoke", "create_profile", "events/create_profile/sqs.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"batchItemFailures": []}
    assert "Published 2 result event(s)" in done.stderr
    published = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [r["outcome"] for r in published] == ["success", "success"]


def test_invoke_api_event_answers_like_api_gateway() -> None:
    done = _run("invoke", "get_segment_profiles", "events/get_segment_profiles/api-rest.json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert (body["outcome"], body["list_name"]) == ("success", "VIP customers")


# Run in a process of its own: the handler tests' in-process moto (mock_aws) would otherwise
# answer the sandbox's AWS calls instead of moto's server.
OWN_QUEUE_SCRIPT = """
import json
from devtools.klaviyo_emulator import Fault
from devtools.sandbox import Sandbox

with Sandbox() as sandbox:
    sandbox.emulator.faults.add(Fault(status=503, times=None, path=r"^/api/profiles"))
    answer = sandbox.invoke("get_profiles", {"email": "queued@example.com"})
    sandbox.emulator.faults.clear()
    depths = {a: sandbox.queue_depth(a) for a in ("get_profiles", "create_profile")}
    messages = sandbox.receive("get_profiles")
print(json.dumps({"answer": answer, "depths": depths, "messages": messages}))
"""


@pytest.mark.slow
def test_each_function_has_its_own_queue_as_deployed() -> None:
    """A retryable direct lead goes onto its own action's queue, as in AWS (ACTION_QUEUE_URL)."""
    done = subprocess.run(
        [sys.executable, "-c", OWN_QUEUE_SCRIPT],
        cwd=le.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    answer = seen["answer"]
    assert (answer["outcome"], answer["reason"]) == ("error", "Queued for retry")
    assert seen["depths"] == {"get_profiles": [1, 0], "create_profile": [0, 0]}
    (message,) = seen["messages"]
    assert message["MessageId"] == answer["message_id"]
    assert json.loads(message["Body"]) == {"email": "queued@example.com"}


def test_the_docs_say_what_the_demo_covers_and_what_its_words_mean() -> None:
    text = (le.ROOT / "docs" / "development.md").read_text("utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `make demo` |")]
    for words in (
        "webhook",
        "SQS",
        "EventBridge",
        "direct",
        "handed-back",
        "OpenAPI document not found",
    ):
        assert words in row, f"docs/development.md's make demo row should mention {words!r}"
    assert "make serve" in runner.NEXT_STEPS and "/results/<message_id>" in runner.NEXT_STEPS
