"""The time budget: the smallest of the lead's timeout, the invocation and the gateway."""

import pytest

from klaviyo_leads.budget import Budget, effective_budget_seconds


@pytest.mark.parametrize(
    ("requested", "remaining", "api", "expected"),
    [
        (None, None, False, 360.0),
        (30, None, False, 30.0),
        (360, 100.0, False, 97.0),
        (360, None, True, 27.0),
        (5, 100.0, True, 5.0),
        (360, 1.0, False, 0.5),
    ],
)
def test_effective_budget(requested, remaining, api, expected):
    assert effective_budget_seconds(requested, remaining, api) == expected


def test_budget_counts_down_and_describes_itself():
    now = [100.0]
    budget = Budget(12.0, clock=lambda: now[0])
    assert budget.remaining() == 12.0
    now[0] += 5
    assert budget.remaining() == 7.0
    now[0] += 10
    assert budget.expired and budget.remaining() == 0.0
    assert budget.describe() == "12"
    assert Budget(2.5).describe() == "2.5"
