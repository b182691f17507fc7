"""GET /results/{message_id} as deployed: functions/get_result/app.py, in the environment the
stack gives it, reading the results table the stack made, as the actions write it.

The layer's ``klaviyo_leads.results`` writes and reads the items; this checks the wiring: the
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
    from klaviyo_leads import results

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
    from klaviyo_leads.config import Settings
    from klaviyo_leads.results import ResultStore

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
