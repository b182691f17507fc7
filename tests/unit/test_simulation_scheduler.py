"""The simulation's scheduler: one task at a time, handed the turn at each scheduling point,
and a run that stalls stops with every task ended (its ``finally`` run, no thread left)."""

from __future__ import annotations

import random

import pytest

from devtools.simulation.scheduler import Scheduler, Stalled


def _play(sched: Scheduler, rounds: int | None) -> list[str]:
    """Two tasks taking turns at points (forever when ``rounds`` is None) and a sleeper, run
    to the end (or the stall, raised after every task was ended); what they did, in order."""
    log: list[str] = []

    def spinner(name: str) -> None:
        try:
            for _ in range(rounds) if rounds is not None else iter(int, 1):
                sched.point(name)
                log.append(name)
        finally:
            log.append(f"{name} ended")

    sched.spawn("a", lambda: spinner("a"))
    sched.spawn("b", lambda: spinner("b"))
    sched.spawn("sleeper", lambda: (sched.sleep(30.0), log.append("woke")))
    try:
        sched.run(until=60.0)
    finally:
        sched.close()
    return log


def test_every_task_runs_to_its_end_and_the_clock_jumps_to_the_sleeper() -> None:
    sched = Scheduler(random.Random(7), 0.0)
    log = _play(sched, rounds=5)
    assert log.count("a") == log.count("b") == 5
    assert {"a ended", "b ended", "woke"} <= set(log)
    assert sched.now == 30.0
    assert all(task.done and task.error is None for task in sched.tasks)


def test_the_interleaving_is_the_seeds() -> None:
    def order(seed: int) -> tuple[str, ...]:
        return tuple(_play(Scheduler(random.Random(seed), 0.0), rounds=8))

    assert len({order(seed) for seed in range(6)}) > 1  # the turns follow the seed ...
    assert order(3) == order(3)  # ... and replay with it


def test_a_run_past_its_step_limit_stops_and_ends_every_task() -> None:
    sched = Scheduler(random.Random(1), 0.0, max_steps=40)
    with pytest.raises(Stalled, match="more than 40 steps"):
        _play(sched, rounds=None)
    for task in sched.tasks:
        if task.thread is not None:
            task.thread.join(timeout=5)
            assert not task.thread.is_alive()
        assert task.done


def test_a_run_still_waiting_past_its_time_limit_stops() -> None:
    sched = Scheduler(random.Random(1), 0.0)
    ended: list[str] = []

    def late() -> None:
        try:
            sched.sleep(120.0)
        finally:
            ended.append("late")

    sched.spawn("late", late)
    with pytest.raises(Stalled, match="after 60 s"):
        sched.run(until=60.0)
    sched.close()
    assert ended == ["late"] and sched.tasks[0].done
