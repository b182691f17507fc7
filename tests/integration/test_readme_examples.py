"""The README's examples run as written: the block between ``<!-- examples ... -->`` and
``<!-- /examples -->``.

Its ``make serve`` line is started for real (with ``PORT=0``, so any free port; the emulator
behind it), and every other command runs in order through ``sh`` from the repository root, with
``http://127.0.0.1:8080`` pointed at that port. A command must exit 0, and the ``# →`` line after
it is part of its answer: every key it shows has that value in the JSON the command printed (a
list item matches any item of the answer's list). The deploy lines are checked against the guide.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools import lambda_events as le

README = le.ROOT / "README.md"
GUIDE = le.ROOT / "docs" / "deploying.md"
DOCUMENTED_BASE = "http://127.0.0.1:8080"
ANSWER_PREFIX = "# → "
STARTUP_SECONDS = 90
EVENTUALLY_SECONDS = 15  # queued work shows up at /results within this


@dataclass
class Example:
    command: str
    answer: Any | None  # the `# →` line after it, as JSON


def examples(text: str) -> list[Example]:
    block = re.search(r"<!-- examples\b.*?-->\s*```sh\n(.*?)```\s*<!-- /examples -->", text, re.S)
    assert block, "README.md has no <!-- examples --> block"
    found: list[Example] = []
    for line in block.group(1).splitlines():
        if line.startswith(ANSWER_PREFIX):
            assert found and found[-1].answer is None, f"an answer without a command: {line}"
            found[-1].answer = json.loads(line.removeprefix(ANSWER_PREFIX))
        elif line.strip() and not line.startswith("#"):
            found.append(Example(line, None))
    return found


def contains(actual: Any, expected: Any) -> bool:
    """Whether ``actual`` has everything ``expected`` shows."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and all(
            any(contains(item, wanted) for item in actual) for wanted in expected
        )
    return bool(actual == expected)


def printed_json(output: str) -> Any:
    """The JSON document a command printed (after whatever make echoed first)."""
    start = re.search(r"^[{\[]", output, re.M)
    assert start, f"no JSON in:\n{output}"
    value, _ = json.JSONDecoder().raw_decode(output[start.start() :])
    return value


@dataclass
class Served:
    process: subprocess.Popen[str]
    base_url: str
    output: list[str]


def _serve(command: str) -> Served:
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_API_KEY"}
    process = subprocess.Popen(
        [*shlex.split(command, comments=True), "PORT=0"],
        cwd=le.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and the runner under it stop together
    )
    output: list[str] = []
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("Listening on "):
                found.put(line.split()[2])

    threading.Thread(target=read, daemon=True).start()
    try:
        return Served(process, found.get(timeout=STARTUP_SECONDS), output)
    except queue.Empty:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("make serve did not start:\n" + "".join(output)) from None


@pytest.fixture(scope="module")
def readme_examples() -> list[Example]:
    return examples(README.read_text("utf-8"))


@pytest.fixture(scope="module")
def served(readme_examples: list[Example]) -> Iterator[Served]:
    (serve,) = [e for e in readme_examples if e.command.startswith("make serve")]
    running = _serve(serve.command)
    yield running
    os.killpg(running.process.pid, signal.SIGTERM)
    running.process.wait(timeout=20)


# ``name=$(command)``: the line sets a shell variable that later lines read, as in a terminal.
ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=\$\((.*)\)$")


def _run(command: str, variables: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_API_KEY"}
    env.update(variables or {})
    return subprocess.run(
        ["sh", "-c", command], cwd=le.ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_examples_poll_a_queued_result_by_its_message_id(
    readme_examples: list[Example],
) -> None:
    """The README waits for the queued lead as a user would, on the deployed route."""
    commands = [e.command for e in readme_examples]
    queued = [c for c in commands if ASSIGNMENT.match(c) and "/async" in c]
    assert queued, "the README keeps the async answer's message_id"
    name = ASSIGNMENT.match(queued[0]).group(1)  # type: ignore[union-attr]
    assert any(c.startswith("until ") and f"/results/${name}" in c for c in commands), (
        "the README polls GET /results/<message_id> until the result is there"
    )
    assert not any(re.search(r"/results(\s|$|')", c) for c in commands)


@pytest.mark.slow
def test_the_readme_examples_run_as_written(readme_examples: list[Example], served: Served) -> None:
    others = [e for e in readme_examples if not e.command.startswith("make serve")]
    assert any("/async" in e.command for e in others), "the examples show the async route"
    assert any(e.command.startswith("make invoke") for e in others)
    variables: dict[str, str] = {}
    for example in others:
        command = example.command.replace(DOCUMENTED_BASE, served.base_url)
        assignment = ASSIGNMENT.match(command)
        if assignment:
            done = _run(assignment.group(2), variables)
            assert done.returncode == 0, f"{example.command}\n{done.stdout}{done.stderr}"
            variables[assignment.group(1)] = done.stdout.strip()
            assert variables[assignment.group(1)], f"{example.command} printed nothing"
            continue
        deadline = time.monotonic() + EVENTUALLY_SECONDS
        while True:
            done = _run(f"timeout {EVENTUALLY_SECONDS} sh -c {shlex.quote(command)}", variables)
            assert done.returncode == 0, f"{example.command}\n{done.stdout}{done.stderr}"
            answer = printed_json(done.stdout) if example.answer is not None else None
            if example.answer is None or contains(answer, example.answer):
                break
            # Only what queued work publishes may take a moment.
            assert "/results" in command and time.monotonic() < deadline, (
                f"{example.command}\nanswered {json.dumps(answer)}\n"
                f"the README shows {json.dumps(example.answer)}"
            )
            time.sleep(0.3)
    served_output = "".join(served.output)
    assert "Traceback" not in served_output, served_output


def test_the_examples_check_fails_on_an_answer_the_readme_does_not_show() -> None:
    text = """<!-- examples -->
```sh
curl -s http://127.0.0.1:8080/results
# → {"results": [{"detail": {"result": {"outcome": "success"}}}]}
```
<!-- /examples -->"""
    (example,) = examples(text)
    assert example.command == "curl -s http://127.0.0.1:8080/results"
    good = {"results": [{"detail": {"result": {"outcome": "success", "id": "x"}}}]}
    assert contains(good, example.answer)
    assert not contains({"results": [{"detail": {"result": {"outcome": "error"}}}]}, example.answer)
    assert not contains({"results": []}, example.answer)
    assert printed_json('make: echo\n{\n  "a": 1\n}\nmore') == {"a": 1}


# --- Deploying: one sequence, in the README and the guide -----------------------------------


def _deploy_commands(text: str) -> list[str]:
    found = re.findall(r"`(make deploy[^`]*)`|^(make deploy[^#\n]*)", text, re.M)
    return [(inline or block).strip() for inline, block in found]


def test_the_readme_deploys_as_the_guide_does() -> None:
    readme_text = README.read_text("utf-8")
    readme = _deploy_commands(readme_text)
    assert "make deploy ENV=dev GUIDED=1" in readme, "the first deploy of an environment is guided"
    assert set(readme) <= set(_deploy_commands(GUIDE.read_text("utf-8"))), readme
    # A guided deploy without --config-env saves the secret's ARN under no named environment.
    assert not re.search(r"sam deploy --guided(?![^`\n]*--config-env)", readme_text)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_a_guided_deploy_saves_the_secret_for_its_environment(environment: str) -> None:
    done = subprocess.run(
        ["make", "-n", "deploy", f"ENV={environment}", "GUIDED=1"],
        cwd=le.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (deploy,) = [line for line in done.stdout.splitlines() if "sam deploy" in line]
    assert f"--config-env {environment}" in deploy and "--guided" in deploy
    assert f"devtools.deploy_check {environment} --guided" in done.stdout
