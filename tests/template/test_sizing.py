"""The parameters that size the functions against Klaviyo's limits mean what they say.

Klaviyo limits each endpoint per account; the functions' pacer spreads what the account leaves
over the containers that run, and ``KlaviyoRateLimitShare`` caps the bundle's part. Queue
concurrency (a default and per-action values) and reserved concurrency decide how many
containers there are. CloudFormation cannot relate one parameter to another, so what must hold
between them is checked here, for the defaults and every samconfig.toml environment.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.template.cfn_template import ACTIONS, parameter_values, samconfig_environments

LOWEST_MAXIMUM_CONCURRENCY = 2  # what Lambda accepts for an SQS event source


@pytest.fixture(params=samconfig_environments())
def environment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def queue_concurrency(values: dict[str, str], prefix: str) -> int:
    own = int(values[f"{prefix}MaximumConcurrency"])
    return own or int(values["MaximumConcurrency"])


def test_every_share_the_parameter_allows_is_read_as_that_percentage(
    sam_template: dict[str, Any],
) -> None:
    """The functions read KLAVIYO_MAX_SHARE as a fraction when it is 1 or less, so 1 (one
    percent to whoever sets it) would be the whole limit: the parameter starts above it."""
    from klaviyo_leads.config import Settings

    parameter = sam_template["Parameters"]["KlaviyoRateLimitShare"]
    lowest, highest = int(parameter["MinValue"]), int(parameter["MaxValue"])
    assert (lowest, highest, parameter["Default"]) == (2, 100, 100)
    for percent in range(lowest, highest + 1):
        share = Settings.from_env({"KLAVIYO_MAX_SHARE": str(percent)}).klaviyo_max_share
        assert share == pytest.approx(percent / 100), percent
    assert Settings.from_env({"KLAVIYO_MAX_SHARE": str(lowest - 1)}).klaviyo_max_share == 1.0


def test_each_action_has_its_own_concurrency_parameters(sam_template: dict[str, Any]) -> None:
    """0 means the stack's default queue concurrency, and no reservation."""
    parameters = sam_template["Parameters"]
    for action in ACTIONS:
        for kind in ("MaximumConcurrency", "ReservedConcurrency"):
            parameter = parameters[f"{action.prefix}{kind}"]
            assert (parameter["Type"], parameter["Default"]) == ("Number", 0), action.name
            assert parameter["Description"].startswith(f"{action.name}: "), action.name


def test_queue_concurrency_is_one_lambda_accepts(
    sam_template: dict[str, Any], environment: str
) -> None:
    """An action's own value is 0 (the default) or 2-1000: Lambda refuses 1, which the
    parameter's range cannot exclude."""
    values = parameter_values(sam_template, environment)
    for action in ACTIONS:
        own = int(values[f"{action.prefix}MaximumConcurrency"])
        assert own == 0 or own >= LOWEST_MAXIMUM_CONCURRENCY, (environment, action.name)
        assert queue_concurrency(values, action.prefix) >= LOWEST_MAXIMUM_CONCURRENCY


def test_reserved_concurrency_leaves_room_beyond_the_queue(
    sam_template: dict[str, Any], environment: str
) -> None:
    """Reserved concurrency caps the function over all its triggers. At or below the queue's
    maximum concurrency, the queue's batches are throttled (and count towards the dead-letter
    queue) and the API has nothing left."""
    values = parameter_values(sam_template, environment)
    for action in ACTIONS:
        reserved = int(values[f"{action.prefix}ReservedConcurrency"])
        if reserved:
            assert reserved > queue_concurrency(values, action.prefix), (environment, action.name)
