"""A demo HSM tree for ``aminspect demo``: jobs with child activities and timers, at human pace."""

from __future__ import annotations

import enum
import random
import threading
import time
from dataclasses import dataclass

from aminspect.machines.hsm import (
    Key,
    MachineDef,
    MsgpackSerializer,
    Node,
    Registry,
    Task,
    TransitionDef,
    TransitionOutput,
)
from aminspect.machines.hsm_store import MemoryTreeStore, TreeStore, save_tree
from aminspect.machines.hsm_trace import trace_tree
from aminspect.machines.hsm_tree import Tree
from tracer.sinks import Sink

__all__ = ["demo_registry", "run_demo"]


class JobState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ActivityState(enum.Enum):
    SCHEDULED = "scheduled"
    STARTED = "started"
    BACKING_OFF = "backing_off"
    COMPLETED = "completed"
    FAILED = "failed"


class TimerState(enum.Enum):
    ARMED = "armed"
    FIRED = "fired"
    CANCELLED = "cancelled"


@dataclass
class Job:
    state: JobState = JobState.PENDING
    activities: int = 0


@dataclass
class Activity:
    state: ActivityState = ActivityState.SCHEDULED
    attempt: int = 1
    max_attempts: int = 3


@dataclass
class Timer:
    state: TimerState = TimerState.ARMED
    deadline: float = 0.0


def demo_registry() -> Registry:
    """The demo's machine types: ``job``, ``activity`` and ``timer``."""
    reg = Registry()
    reg.register_machine(MachineDef("job", MsgpackSerializer(Job), tuple(s.name for s in JobState)))
    reg.register_machine(
        MachineDef("activity", MsgpackSerializer(Activity), tuple(s.name for s in ActivityState))
    )
    reg.register_machine(
        MachineDef("timer", MsgpackSerializer(Timer), tuple(s.name for s in TimerState))
    )
    reg.register_task("backoff")
    return reg


A = ActivityState
START: TransitionDef[ActivityState, Activity, None] = TransitionDef(
    frozenset({A.SCHEDULED}), A.STARTED, name="start"
)
COMPLETE: TransitionDef[ActivityState, Activity, None] = TransitionDef(
    frozenset({A.STARTED}), A.COMPLETED, name="complete"
)


def _backoff(act: Activity, now: float) -> TransitionOutput:
    act.attempt += 1
    return TransitionOutput((Task("backoff", deadline=round(now + 2.0, 3)),))


FAIL_RETRY: TransitionDef[ActivityState, Activity, float] = TransitionDef(
    frozenset({A.STARTED}), A.BACKING_OFF, _backoff, name="fail"
)
RETRY: TransitionDef[ActivityState, Activity, None] = TransitionDef(
    frozenset({A.BACKING_OFF}), A.SCHEDULED, name="retry"
)
GIVE_UP: TransitionDef[ActivityState, Activity, None] = TransitionDef(
    frozenset({A.STARTED}), A.FAILED, name="give_up"
)


class _JobRun:
    """One job tree being driven step by step."""

    def __init__(self, number: int, rng: random.Random, target: str | Sink, store: TreeStore):
        self.rng = rng
        self.store = store
        self.tree = Tree(demo_registry(), "job", Job(), tree_id=f"job-{number}")
        kw = {"url": target} if isinstance(target, str) else {"sink": target}
        self.tracer = trace_tree(self.tree, **kw)
        save_tree(store, self.tree)

    def _activities(self) -> list[Node]:
        return self.tree.root.collection("activity", Activity).list()

    def step(self) -> bool:
        """Advance one thing; False when the job is over."""
        root, rng, now = self.tree.root, self.rng, time.time()
        job = root.data(Job)
        if job.state is JobState.PENDING:
            n = rng.randint(2, 4)

            def begin(j: Job) -> None:
                j.state, j.activities = JobState.RUNNING, n

            root.transition(begin, Job, name="start")
            for i in range(1, n + 1):
                root.add_child(Key("activity", f"a{i}"), Activity())
            root.add_child(Key("timer", "deadline"), Timer(deadline=now + 60))
        elif job.state is JobState.RUNNING:
            live = [
                a
                for a in self._activities()
                if a.data(Activity).state not in (A.COMPLETED, A.FAILED)
            ]
            if not live:
                self._finish(root)
            else:
                self._advance(rng.choice(live), now)
        else:
            return False
        save_tree(self.store, self.tree)
        return True

    def _advance(self, node: Node, now: float) -> None:
        act = node.data(Activity)
        if act.state is A.SCHEDULED:
            START.on(node, None)
        elif act.state is A.BACKING_OFF:
            RETRY.on(node, None)
        elif self.rng.random() < 0.3:
            if act.attempt < act.max_attempts:
                node.transition(lambda a: FAIL_RETRY.apply(a, now), Activity, name="fail")
            else:
                GIVE_UP.on(node, None)
        else:
            COMPLETE.on(node, None)

    def _finish(self, root: Node) -> None:
        failed = any(a.data(Activity).state is A.FAILED for a in self._activities())

        def stop_timer(t: Timer) -> None:
            # a failed job lets its deadline fire; a completed one cancels it
            t.state = TimerState.FIRED if failed else TimerState.CANCELLED

        timer = root.child([Key("timer", "deadline")])
        timer.transition(stop_timer, Timer, name="fire" if failed else "cancel")
        root.delete_child(Key("timer", "deadline"))  # a finished timer leaves the tree

        def end(j: Job) -> None:
            j.state = JobState.FAILED if failed else JobState.COMPLETED

        root.transition(end, Job, name="fail" if failed else "complete")

    def close(self) -> None:
        self.tracer.flush(2)
        self.tracer.detach()


def run_demo(
    url_or_sink: str | Sink,
    stop: threading.Event,
    *,
    pace: float = 0.8,
    jobs: int | None = None,
    seed: int = 11,
    store: TreeStore | None = None,
) -> None:
    """Drive job trees until ``stop`` is set (or ``jobs`` jobs are done).

    Args:
        url_or_sink: a ``ws://`` URL of an inspector, or a sink.
        stop: set it to stop (the current job is left as it is).
        pace: seconds between steps (0 = flat out, for tests).
        jobs: stop after this many jobs.
        seed: the random choices.
        store: where trees are saved after every step (default: in memory).
    """
    rng = random.Random(seed)
    store = store or MemoryTreeStore()
    # continue after the jobs a persistent store already holds (their ids are taken)
    number = sum(1 for i in store.ids() if i.startswith("job-"))
    done = 0
    while not stop.is_set() and (jobs is None or done < jobs):
        number += 1
        done += 1
        run = _JobRun(number, rng, url_or_sink, store)
        try:
            while not stop.is_set() and run.step():
                if pace:
                    stop.wait(rng.uniform(0.5, 1.5) * pace)
        finally:
            run.close()
