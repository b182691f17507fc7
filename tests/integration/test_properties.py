"""Arbitrary input at every handler: a result with a reason and a status, never an exception."""

from __future__ import annotations

import json
import re

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
from klaviyo_leads import outcomes
from klaviyo_leads.actions.action import result_fields
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.lead.fields import LEAD_FIELDS, VARIABLES
from klaviyo_leads.outcomes import Outcome, Result, every_reason

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


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(text)))


REASONS = [(r.outcome.value, _pattern(r.text)) for r in every_reason().values()]
STATUS_BY_OUTCOME = {"success": {200}, "failure": {422}, "error": {400, 409, 415, 502, 503, 504}}


def check(action: str, fields: dict, status: int | None = None) -> None:
    """A whole, well-formed result: the action's fields, a known reason, a matching status."""
    assert list(fields) == list(result_fields(ACTIONS[action], Result(Outcome.SUCCESS)))
    outcome, reason = fields["outcome"], fields["reason"]
    assert outcome in STATUS_BY_OUTCOME
    if outcome != "success":
        assert isinstance(reason, str) and reason
    if reason is not None:
        # A reason the code declares, for this outcome; never a bug's "Internal error".
        assert any(o == outcome and p.fullmatch(reason) for o, p in REASONS), reason
        assert reason != outcomes.INTERNAL.text
    errors = fields["errors"]
    assert set(errors) == {"id", "code", "title", "detail"}
    assert len({len(column) for column in errors.values()}) == 1  # parallel arrays
    if status is not None:
        assert status in STATUS_BY_OUTCOME[outcome]


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(payload=payloads)
def test_api_gateway_answers_anything(action, payload, runtime, klaviyo_emulator):
    body = json.dumps(payload, allow_nan=True)
    event = api_gateway_event(
        "POST", ACTIONS[action].route, {"Content-Type": "application/json"}, body
    )
    response = load_handler(action)(event, LambdaContext.for_action(action))
    check(action, json.loads(response["body"]), response["statusCode"])


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(payload=payloads)
def test_direct_invocation_answers_anything(action, payload, runtime, klaviyo_emulator):
    result = load_handler(action)(payload, LambdaContext.for_action(action))
    several = isinstance(payload, dict) and set(payload) == {"leads"}
    several = several and isinstance(payload["leads"], list)
    answers = result["results"] if several else [result]
    if several:
        assert len(answers) == len(payload["leads"])  # one result per lead, in order
    for fields in answers:
        check(action, fields)


@SETTINGS
@given(
    bodies=st.lists(
        st.one_of(st.text(max_size=60), json_values.map(json.dumps)), min_size=1, max_size=5
    )
)
def test_sqs_settles_every_record(bodies, runtime, klaviyo_emulator):
    messages = [sqs_message(body) for body in bodies]
    ids = [m["MessageId"] for m in messages]
    for action in ("subscribe_profile_to_list", "create_profile"):
        response = load_handler(action)(
            sqs_event(messages, queue_arn("q")), LambdaContext.for_action(action)
        )
        assert set(response) == {"batchItemFailures"}
        handed_back = [f["itemIdentifier"] for f in response["batchItemFailures"]]
        assert set(handed_back) <= set(ids)
        # What no retry can fix is done, never handed back to come round forever.
        for message_id, body in zip(ids, bodies, strict=True):
            if not _is_json_object(body):
                assert message_id not in handed_back


def _is_json_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("action", sorted(ACTIONS))
@SETTINGS
@given(raw=st.binary(max_size=80))
def test_raw_bytes_bodies(action, raw, runtime, klaviyo_emulator):
    event = api_gateway_event(
        "POST", ACTIONS[action].route, {"Content-Type": "application/json"}, raw
    )
    response = load_handler(action)(event, LambdaContext.for_action(action))
    check(action, json.loads(response["body"]), response["statusCode"])
