"""The read-back's benchmark runs, and counts what it says it counts (its figures: docs/
performance.md)."""

from __future__ import annotations

from bench import consent_readback


def test_the_read_back_costs_one_search_per_100_leads_a_look():
    rows = {(r["case"], r["apply_delay_seconds"]): r for r in consent_readback.measure(30)}
    batch = rows[("queued batch of 1,000", 0.0)]
    assert batch["with"]["by_operation"]["get_profiles"] == 1  # 30 leads: one search
    assert batch["calls_with_read_back"] - batch["calls_without"] == 1
    assert "get_profiles" not in batch["without"]["by_operation"]
    later = rows[("queued batch of 1,000", 5.0)]
    assert later["with"]["by_operation"]["get_profiles"] > 1  # looked until it applied
    alone = rows[("one lead at a time", 0.0)]
    assert alone["with"]["by_operation"]["get_profiles"] == 30
    for row in rows.values():
        assert row["with"]["outcomes"] == {"success": 30} == row["without"]["outcomes"]
