"""bench/mirror.py in small: the stand-in Klaviyo and the virtual clock still run the mirror's
code to a list that is the file's people, with the bound counted from its calls."""

from __future__ import annotations

from bench import mirror as bench


def test_the_mirror_benchmark_runs_to_a_list_that_is_the_file():
    run = bench.run(members=3000, churn=0.1, phase=0.0)
    assert run["list_is_the_file"]
    assert run["plan"] == {"would_add": 300, "would_keep": 2700, "would_remove": 300}
    assert run["done"] == {"added": 300, "removed": 300}
    assert run["calls"]["get_profiles_for_list"]["calls"] >= 30  # every page of the list
    assert sum(c["429"] for c in run["calls"].values()) == 0
    assert run["bound_seconds"] == bench.bound_seconds(bench.Account(3000, 0.1))
    assert run["virtual_seconds"] > 0
