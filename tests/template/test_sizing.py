"""The parameters that size the functions against Klaviyo's limits mean what they say.

Klaviyo limits each endpoint per account; the functions' pacer spreads what the account leaves
over the containers that run, and ``KlaviyoRateLimitShare`` caps the bundle's part.
"""

from __future__ import annotations

from typing import Any

import pytest


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
