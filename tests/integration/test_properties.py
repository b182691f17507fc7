"""Arbitrary input at every handler: a result with a reason and a status, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.lambda_events import (
    LambdaContext,
    api_gateway_event,
    load_handler,
    queue_arn,
    sqs_event,
    sqs_message,
)
from klaviyo_leads.actions import ACTIONS
from klaviyo_leads.fields import LEAD_FIELDS, VARIABLES

KNOWN_KEYS = [f.key for f in LEAD_FIELDS] + [v.key for v in VARIABLES if "<" not in v.key]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["a@example.com", "(512) 555-0100", "email", "sms", "newest update date"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=12,
)
leads = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=15), json_values, max_size=8)
payloads = st.one_of(leads, json_values)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(fields: dict) -> None:
    assert fields["outcome"] in {"success", "failure", "error"}
    if fields["outcome"] != "success":
        assert isinstance(fields["reason"], str) and fields["reason"]
    assert set(fields["errors"]) == {"id", "code", "title", "detail"}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(payload=payloads)
def test_api_gateway_answers_anything(action, payload, runtime, klaviyo_emulator):
    body = json.dumps(payload, allow_nan=True)
    event = api_gateway_event(
        "POST", ACTIONS[action].route, {"Content-Type": "application/json"}, body
    )
    response = load_handler(action)(event, LambdaContext.for_action(action))
    assert response["statusCode"] in {200, 400, 422, 502, 503, 504}
    check(json.loads(response["body"]))


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(payload=payloads)
def test_direct_invocation_answers_anything(action, payload, runtime, klaviyo_emulator):
    result = load_handler(action)(payload, LambdaContext.for_action(action))
    for fields in (
        result["results"] if isinstance(result, dict) and "results" in result else [result]
    ):
        check(fields)


@SETTINGS
@given(
    bodies=st.lists(
        st.one_of(st.text(max_size=60), json_values.map(json.dumps)), min_size=1, max_size=5
    )
)
def test_sqs_settles_every_record(bodies, runtime, klaviyo_emulator):
    messages = [sqs_message(body) for body in bodies]
    for action in ("subscribe_profile_to_list", "create_profile"):
        response = load_handler(action)(
            sqs_event(messages, queue_arn("q")), LambdaContext.for_action(action)
        )
        assert set(response) == {"batchItemFailures"}


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(raw=st.binary(max_size=80))
def test_raw_bytes_bodies(action, raw, runtime, klaviyo_emulator):
    event = api_gateway_event(
        "POST", ACTIONS[action].route, {"Content-Type": "application/json"}, raw
    )
    response = load_handler(action)(event, LambdaContext.for_action(action))
    assert response["statusCode"] in {200, 400, 422, 502, 503, 504}
    check(json.loads(response["body"]))
