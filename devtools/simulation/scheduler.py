"""A deterministic scheduler: many tasks, one virtual clock, one task running at a time.

Every actor of the simulated fleet (a container's invocation, a webhook sender, an SQS poller)
is a task on its own thread, but only one ever runs: a task runs until it reaches a
scheduling point (every call to Klaviyo or AWS, every sleep), and the scheduler picks which
ready task goes next. When none is ready the clock jumps to the next wake-up. Nothing waits in
real time, and a seed replays exactly.

Each task draws from its own seeded generator (from the seed, its name and how many tasks of
that name came before): its priority each time it becomes ready (the lowest goes next), and
whatever the simulation draws while it runs (``random()``: ids, jitter, lost answers). A task's
choices therefore do not shift when another task is added or dropped, which is what lets a
failing scenario be shrunk without losing its failure.

The scheduler has no thread of its own while tasks run: a task that reaches a point picks
the next task itself and hands the turn straight to it (or just goes on, when it is its own
pick), so a step costs one thread switch at most, not two. The caller of ``run`` waits until
no task is left (or the run stalls) and is handed the turn back then.

A task can be killed: at its next scheduling point it raises ``Killed`` (a ``BaseException``,
so no ``except Exception`` in the code under test stops it), and every scheduling point it
reaches afterwards (a ``finally`` that would write) raises again: a killed process does
nothing more.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _held() -> threading.Lock:
    """A lock taken at birth: one thread waits on it until another hands it over by releasing
    it (a plain lock, not an ``Event``: the hand-over is every scheduling point, and a lock's
    hand-over costs a fraction of an event's)."""
    lock = threading.Lock()
    lock.acquire()
    return lock


class Killed(BaseException):
    """The task's process ends here: nothing after this runs, nothing is cleaned up."""


class Stalled(Exception):
    """The simulation ran past its step or time limit (a livelock, or a task that never ends)."""


@dataclass(eq=False)
class Task:
    name: str
    run: Callable[[], Any]
    context: Any = None  # what the task runs in (its container): read by the task's clocks
    killed: bool = False
    done: bool = False
    error: BaseException | None = None
    go: threading.Lock = field(default_factory=_held)  # released: the task may run
    thread: threading.Thread | None = None
    rng: random.Random = field(default_factory=random.Random)
    priority: float = 0.0


class Scheduler:
    def __init__(self, rng: random.Random, start: float, max_steps: int = 200_000) -> None:
        self.rng = rng  # draws made outside any task (setting up)
        self._salt = rng.getrandbits(64)
        self._names: dict[str, int] = {}
        self.now = start
        self.start = start
        self.max_steps = max_steps
        self.steps = 0
        self._ready: list[Task] = []
        self._sleeping: list[tuple[float, int, Task]] = []
        self._order = itertools.count()
        self._back = _held()  # released by the running task when it hands back
        self._current: Task | None = None
        self._local = threading.local()
        self.tasks: list[Task] = []
        self.trace: list[str] = []
        self.tracing = False
        self.on_point: Callable[[Task, str], None] | None = None
        self._until: float | None = None  # the running ``run``'s limit on the clock
        self._stalled: Stalled | None = None  # why the running ``run`` stopped early
        self._closing = False

    # -- tasks -------------------------------------------------------------------------------

    def spawn(
        self, name: str, run: Callable[[], Any], at: float | None = None, context: Any = None
    ) -> Task:
        nth = self._names[name] = self._names.get(name, 0) + 1
        task = Task(name, run, context, rng=random.Random(f"{self._salt}/{name}/{nth}"))
        self.tasks.append(task)
        heapq.heappush(self._sleeping, (max(at or self.now, self.now), next(self._order), task))
        return task

    @property
    def current(self) -> Task | None:
        return getattr(self._local, "task", None)

    def random(self) -> random.Random:
        """The running task's generator (the scheduler's own outside any task)."""
        task = self.current
        return task.rng if task is not None else self.rng

    def _make_ready(self, task: Task) -> None:
        task.priority = task.rng.random()
        self._ready.append(task)

    def kill(self, task: Task) -> None:
        task.killed = True

    # -- what tasks call -------------------------------------------------------------------

    def point(self, label: str) -> None:
        """A scheduling point: another ready task may run before this one goes on."""
        task = self.current
        if task is None:
            return  # called outside the simulation (setting up): nothing to schedule
        if task.killed:
            raise Killed(label)
        if self.on_point is not None:
            self.on_point(task, label)  # may kill the task here
            if task.killed:
                raise Killed(label)
        if self.tracing:
            self.trace.append(f"{self.now - self.start:9.3f}  {task.name}: {label}")
        self._make_ready(task)
        self._switch_out(task)

    def sleep(self, seconds: float) -> None:
        task = self.current
        if task is None:
            self.now += max(0.0, seconds)
            return
        if task.killed:
            raise Killed("sleep")
        heapq.heappush(self._sleeping, (self.now + max(0.0, seconds), next(self._order), task))
        self._switch_out(task)

    def _switch_out(self, task: Task) -> None:
        chosen = self._next()
        if chosen is not task:  # its own pick: it just goes on, no thread switch at all
            self._hand_to(chosen)
            task.go.acquire()
        if task.killed:
            raise Killed("resumed")

    # -- running ---------------------------------------------------------------------------------

    def run(self, until: float | None = None) -> None:
        """Run until every task is done (or ``until`` seconds have passed on the clock)."""
        self._until = until
        self._stalled = None
        chosen = self._next()
        if chosen is not None:
            self._hand_to(chosen)
            self._back.acquire()  # handed back when no task is left to run, or it stalled
        if self._stalled is not None:
            raise self._stalled

    def _next(self) -> Task | None:
        """The task that runs next, the clock moved on to its wake-up if none is ready; None
        when every task is done or the run stalled (``_stalled`` says which). Runs on whichever
        thread gives up the turn."""
        if self._closing:
            return None  # close() resumes each task itself, one at a time
        while True:
            if not self._ready:
                if not self._sleeping:
                    return None
                wake = self._sleeping[0][0]
                if self._until is not None and wake > self.start + self._until:
                    self._stalled = Stalled(f"tasks still waiting after {self._until:g} s")
                    return None
                self.now = max(self.now, wake)
                while self._sleeping and self._sleeping[0][0] <= self.now:
                    self._make_ready(heapq.heappop(self._sleeping)[2])
                continue
            self.steps += 1
            if self.steps > self.max_steps:
                self._stalled = Stalled(f"more than {self.max_steps} steps")
                return None
            index = min(range(len(self._ready)), key=lambda i: self._ready[i].priority)
            return self._ready.pop(index)

    def _hand_to(self, task: Task | None) -> None:
        """Let ``task`` run (None: hand the turn back to the caller of ``run`` or ``close``)."""
        if task is None:
            self._back.release()
        elif task.thread is None:
            task.thread = threading.Thread(target=self._body, args=(task,), daemon=True)
            task.thread.start()
        else:
            task.go.release()

    def _body(self, task: Task) -> None:
        self._local.task = task
        try:
            if task.killed:
                raise Killed("before it started")
            task.run()
        except Killed:
            pass
        except BaseException as exc:  # reported by the simulation's checks
            task.error = exc
        finally:
            task.done = True
            self._hand_to(self._next())

    def close(self) -> None:
        """Let every task still parked at a point end (killed), so no thread is left behind."""
        self._closing = True
        for _, _, task in self._sleeping:
            self._ready.append(task)
        self._sleeping.clear()
        while self._ready:
            task = self._ready.pop()
            task.killed = True
            if task.thread is not None and not task.done:
                self._hand_to(task)
                self._back.acquire()
