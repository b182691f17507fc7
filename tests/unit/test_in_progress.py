"""How long a lead waits while another lead is creating the same person."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from klaviyo_leads.actions.create.identity import MAX_CLAIM_RETRY_SECONDS, in_progress

NOW = 1_000.0


def wait(delivery: int, hold_until: float, job_running: bool = False) -> float:
    ctx = SimpleNamespace(delivery=delivery)
    result = in_progress(ctx, hold_until, NOW, job_running=job_running)  # type: ignore[arg-type]
    assert result.retry_after is not None
    return result.retry_after


def test_waits_grow_by_delivery():
    assert [wait(d, NOW + 3600) for d in (1, 2, 3, 4)] == [2, 8, 30, 30]
    assert MAX_CLAIM_RETRY_SECONDS == 30


def test_a_running_hold_ends_the_wait_early():
    assert wait(3, NOW + 5) == 5


@pytest.mark.parametrize("delivery", [2, 3, 4])
def test_a_passed_hold_keeps_the_back_off(delivery):
    """Invariant: the holder went past its hold but still has the record (its job is slow):
    five deliveries must still span the back-off, not five one-second hand-backs (which sent
    a repeat to the dead-letter queue in the soak)."""
    assert wait(delivery, NOW - 10) == wait(delivery, NOW + 3600) > 1


def test_a_running_job_is_waited_for_beyond_the_hold():
    assert wait(3, NOW + 5, job_running=True) == MAX_CLAIM_RETRY_SECONDS
