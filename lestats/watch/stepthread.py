"""The threads step mode knows, as the stepper records them (see ``step``),
and the points where they stop, as the page names them."""

import threading
from typing import Any, Dict, Optional, Set

ACQUIRE, WAIT, WAKE, NOTIFY, NOTIFY_ALL, TAKE, RUN, DONE = (
    "acquire", "wait", "wake", "notify", "notify_all", "take", "run", "done")
POINTS = {
    ACQUIRE: "about to acquire {lock}",
    WAIT: "about to wait on {condition}: wait() lets go of the Lock while it sleeps",
    WAKE: "woken on {condition}: about to take the Lock back (wait() returns holding it)",
    NOTIFY: "about to call {condition}.notify(): it wakes the thread that waited longest",
    NOTIFY_ALL: "about to call {condition}.notify_all(): it wakes every waiter",
    TAKE: "about to take the first task off the queue",
    RUN: "about to run its task, outside the Lock",
    DONE: "about to count its task finished",
}
# What a thread is doing, as state() names it.
STOPPED, RUNNING, BLOCKED, ASLEEP, WOKEN, LEFT, EXITED = (
    "stopped", "running", "blocked", "asleep", "woken", "left", "exited")
POOL, JOBS = "pool", "jobs"   # the Locks step mode knows
LOCK_NAMES = {POOL: "the pool's Lock", JOBS: "the job layer's Lock"}


class SteppedThread:   # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """A thread step mode knows: a worker, or a thread inside the pool
    (a POST's producer, a shutdown, a join).  Guarded by its Stepper's
    mutex; ``ready`` (a Condition on that mutex) is notified when the
    thread may go on."""

    __slots__ = ("name", "ident", "role", "label", "worker", "state", "point", "lock",
                 "condition", "go", "ready", "arrived", "holds", "notifies")

    def __init__(self, thread: threading.Thread, role: str, label: str, worker: bool,
                 ready: threading.Condition):
        self.name, self.ident, self.role, self.label = thread.name, thread.ident, role, label
        self.worker = worker
        self.state = RUNNING
        self.point: Optional[str] = None
        self.lock: Optional[str] = None
        self.condition: Optional[str] = None
        self.go = False
        self.ready = ready
        self.arrived = 0
        self.holds: Set[str] = set()
        self.notifies = 0

    def describe(self) -> Dict[str, Any]:
        """JSON-ready: who, what it does, where it stopped."""
        doing = None
        if self.state == STOPPED and self.point is not None:
            doing = POINTS[self.point].format(lock=LOCK_NAMES.get(self.lock or POOL),
                                              condition=f"_{self.condition}")
        return {"name": self.name, "ident": self.ident, "role": self.role, "label": self.label,
                "worker": self.worker, "state": self.state, "point": self.point,
                "lock": self.lock, "condition": self.condition, "doing": doing,
                "holds": sorted(self.holds), "notifies": self.notifies, "arrived": self.arrived}
