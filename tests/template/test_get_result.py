"""GET /results/{message_id} as deployed: functions/get_result/app.py, in the environment the
stack gives it, reading the results table the stack made, as the actions write it.

The layer's ``klaviyo_leads.aws.result_store``
writes and reads the items; this checks the wiring: the
function's handler, its ``RESULTS_TABLE_NAME``, and the table's key (moto refuses an item
without it). The route, its auth and its permission are checked on the template
(test_template_invariants.py, test_deploy_moto.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.aws import CONFLICTING_ENV, LocalStack, client, lambda_environment
from devtools.lambda_events import LambdaContext, api_gateway_event, load_handler


@pytest.fixture
def deployed(
    stack: LocalStack, aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStack]:
    """get_result's own environment, as deployed (the results module keeps its table for the
    container's life, so it is forgotten around each test)."""
    from klaviyo_leads.aws import result_store as results

    function = client("lambda").get_function_configuration(
        FunctionName=stack.get_result_function_name
    )
    for name in CONFLICTING_ENV:
        monkeypatch.delenv(name, raising=False)
    credentials = {k: v for k, v in lambda_environment(stack).items() if k.startswith("AWS_")}
    for name, value in {**credentials, **function["Environment"]["Variables"]}.items():
        monkeypatch.setenv(name, str(value))
    results._store = None
    yield stack
    results._store = None


def get(message_id: str) -> dict[str, Any]:
    event = api_gateway_event("GET", f"/results/{message_id}", {}, None)
    event["resource"] = "/results/{message_id}"
    event["pathParameters"] = {"message_id": message_id}
    handler = load_handler("get_result")
    answer = handler(event, LambdaContext(function_name="klaviyo-lead-actions-get-result"))
    return {"status": answer["statusCode"], **json.loads(answer["body"])}


def test_a_result_the_actions_stored_is_answered_and_an_unknown_id_is_404(
    deployed: LocalStack,
) -> None:
    from klaviyo_leads.aws.result_store import ResultStore
    from klaviyo_leads.config import Settings

    # Where an action's function writes: its table, from its own environment.
    table = Settings.from_env(deployed.environment).results_table_name
    assert table is not None
    fields = {"outcome": "success", "reason": None, "id": "01ABC"}
    stored = ResultStore(table).put([("m-1", "create_profile", fields)])
    assert stored == [True]

    assert get("m-1") == {
        "status": 200,
        "message_id": "m-1",
        "action": "create_profile",
        "result": fields,
    }
    assert get("m-unknown")["status"] == 404


@pytest.mark.parametrize(
    "message_id",
    ["m" * 2049, "m" * 101, "nachricht-\u00fc", "\u6d88\u606f", "m-\x00", "m-\x1b[31m", "m 1"],
    ids=["over DynamoDB's key limit", "over 100", "non-ASCII", "CJK", "NUL", "escape", "space"],
)
def test_an_id_that_no_message_has_is_a_400_result_not_a_function_error(
    deployed: LocalStack, message_id: str
) -> None:
    assert get(message_id) == {
        "status": 400,
        "message_id": None,
        "outcome": "error",
        "reason": "The message id must be 1 to 100 printable ASCII characters",
        "errors": {"id": [], "code": [], "title": [], "detail": []},
    }


def test_not_found_is_a_result_too(deployed: LocalStack) -> None:
    answer = get("5fea7756-0ea4-451a-a703-a558b933e274")
    assert (answer["status"], answer["outcome"]) == (404, "error")
    assert answer["message_id"] == "5fea7756-0ea4-451a-a703-a558b933e274"
    assert answer["reason"].startswith("No result for this message id")
    assert answer["errors"] == {"id": [], "code": [], "title": [], "detail": []}


def test_debug_logging_writes_no_stored_result(
    deployed: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Invariant: whatever the log level, botocore writes nothing below WARNING, so the
    results (lead data) DynamoDB returns never reach the logs."""
    import logging

    from klaviyo_leads.observability import QUIET_LIBRARIES

    for name in QUIET_LIBRARIES:  # as a fresh container has them
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    assert get("5fea7756-0ea4-451a-a703-a558b933e274")["status"] == 404
    chatty = [r for r in caplog.records if r.name.split(".")[0] in QUIET_LIBRARIES]
    assert [r for r in chatty if r.levelno < logging.WARNING] == []
