"""Logs never contain lead data or the API key, whatever happens to the lead."""

from __future__ import annotations

import io
import json
import logging

import pytest

from devtools.klaviyo_emulator import Fault
from devtools.lambda_events import (
    LambdaContext,
    api_gateway_event,
    eventbridge_event,
    load_handler,
    queue_arn,
    sqs_event,
    sqs_message,
)
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.observability import logger
from tests.conftest import API_KEY

PERSON = {
    "email": "priya.secret@example.com",
    "phone_1": "(512) 555-0199",
    "first_name": "Priyanka",
    "last_name": "Zylberstein",
    "address_1": "742 Evergreen Terrace",
    "reference": "crm-private-77",
}
SENSITIVE = [
    "priya.secret",
    "5550199",
    "555-0199",
    "Priyanka",
    "Zylberstein",
    "Evergreen",
    "crm-private-77",
    API_KEY,
]


@pytest.fixture
def log_lines(monkeypatch):
    """Every log record, formatted exactly as Lambda would receive it (JSON), at DEBUG."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    previous = logger.log_level
    logger.setLevel(logging.DEBUG)
    yield buffer
    logger.setLevel(previous)
    logger._logger.removeHandler(handler)


def test_a_full_run_logs_no_lead_data(log_lines, runtime, klaviyo_emulator):
    list_id = klaviyo_emulator.create_list("Newsletter")
    segment_id = klaviyo_emulator.create_segment("VIP")
    lead = {**PERSON, "klaviyo.list_id": list_id, "klaviyo.segment_id": segment_id}
    broken = {**PERSON, "email": "priya.secret@@example", "phone_1": "555-0199**"}
    for action in sorted(ACTIONS):
        handler = load_handler(action)
        context = LambdaContext.for_action(action)
        for body in (lead, broken):
            event = api_gateway_event(
                "POST",
                ACTIONS[action].route,
                {"Content-Type": "application/json"},
                json.dumps(body),
            )
            handler(event, context)
        handler(sqs_event([sqs_message(json.dumps(lead))], queue_arn("q")), context)
        handler(eventbridge_event(f"{action} lead", lead, source="crm"), context)
        klaviyo_emulator.faults.add(Fault(status=500, times=None))
        handler(lead, context)
        klaviyo_emulator.faults.clear()
    # An unexpected bug whose message quotes the lead must not leak it either.
    runtime.client.call = _raise_with_lead_data  # type: ignore[method-assign]
    load_handler("get_profiles")(lead, LambdaContext.for_action("get_profiles"))

    text = log_lines.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) >= 6 * 5
    assert any(line.get("message") == "Unexpected error" for line in lines)
    assert all("correlation_id" in line for line in lines if line["message"] == "Lead processed")
    leaked = [word for word in SENSITIVE if word in text]
    assert leaked == []


def _raise_with_lead_data(*args, **kwargs):
    raise ValueError(f"cannot handle {PERSON['email']} / {PERSON['phone_1']}")
