"""A fixed-size thread pool built on one mutex and two Conditions.

This is the pool a student would write after reading CPython's
``Lib/queue.py``: one lock guards all shared state, and each Condition made
on that lock stands for one thing a thread can wait for.  Every wait sits in
``while not predicate: wait()``, because a Condition may wake a thread that
then finds the predicate false again (another thread got there first); the
loop re-checks under the lock before going on.

The pool also counts what it does (tasks, notifications, waits, wake-ups,
wake-ups that found nothing to do) and knows what each worker is doing, all
under the mutex it holds anyway, so that ``snapshot`` can show a student the
synchronization at work and check the invariants below on a live pool.
"""

import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

log = logging.getLogger(__name__)

Task = Callable[[], None]

# Worker states, as snapshot() and the live page name them.
WAITING = "waiting"
RUNNING = "running"
EXITED = "exited"

QUEUE_SHOWN = 100   # how many queued labels a snapshot lists
# The methods a subclass may override (the bug lab's broken pools each
# override one): see the class docstring.
EXTENSION_POINTS = ("submit", "join", "_work", "_next_task", "_wait_for_task")


class PoolClosed(RuntimeError):
    """``submit`` was called after ``shutdown``: the task was not accepted."""


class PoolFull(RuntimeError):
    """``submit`` found ``max_queued`` tasks waiting: the task was not accepted."""


class _Silent:   # pylint: disable=too-few-public-methods
    """The events sink of a pool nobody watches: never listening."""

    listening = False

    @staticmethod
    def publish(kind: str, fields: Dict[str, Any]) -> None:
        """Never called while ``listening`` is False."""


class _Worker:   # pylint: disable=too-few-public-methods
    """What one worker thread is doing; changed only under the pool's mutex."""

    __slots__ = ("name", "state", "label", "since", "asleep")

    def __init__(self, name: str):
        self.name = name
        self.state = WAITING   # until it first takes the mutex
        self.label: Any = None
        self.since = time.time()
        self.asleep = False    # inside _task_ready.wait()


class ThreadPool:
    """Runs submitted tasks on ``size`` threads created once, in ``__init__``.

    Invariants, true whenever ``_mutex`` is free (``snapshot`` evaluates each):

    1. ``_unfinished == len(_tasks) + (workers running a task)``: a task counts
       from the moment ``submit`` accepts it until it has returned.
    2. A worker exits only when ``_closed`` and ``_tasks`` is empty, so the
       last queued task always has a thread to run it.
    3. No wake-up is lost: while a worker sleeps with no notification counted
       for it (``_idle > 0``), every queued task has a counted notification
       on its way (``len(_tasks) <= _woken``).
    4. Once ``_closed`` is True it stays True and nothing more is accepted;
       everything accepted before it still runs (a drain, not a cancel).
    5. ``len(_tasks) <= max_queued``.
    6. The wake-up counts add up: ``_idle`` and ``_woken`` are never
       negative, and ``_idle + _woken`` is the number of workers asleep in
       ``_task_ready.wait()``.

    Invariants 3 and 6 rest on two counts of the threads inside
    ``_task_ready.wait()``: ``_idle`` (no notification counted for them) and
    ``_woken`` (notifications counted, not yet matched by a return from
    ``wait``).  A notify moves one thread's worth from ``_idle`` to
    ``_woken`` (``notify_all``, all of them).  Which thread the Condition
    really wakes is not known, and POSIX lets a wait return with no notify at
    all (a spurious wake-up), so a return from ``wait`` is counted against
    ``_woken`` if any notification is on its way, else against ``_idle``:
    that keeps 6 true whoever wakes.  A spurious waker re-checks the queue
    under the mutex like any other and takes a task if there is one, so the
    notification it used up leaves no task behind, and 3 stays true.

    No task runs while ``_mutex`` is held: a worker takes the mutex only to
    take a task and to count it finished.  A task that raises anything, even
    SystemExit, is logged and counted finished; its worker lives on, so the
    pool keeps its size.

    A full queue is refused (``PoolFull``), not waited on: the producers are
    HTTP request threads, which must never block on the pool (a client could
    hold them hostage), so nobody would wait on a "not full" Condition and
    there is none.

    Extension points: the bug lab (``lestats.lab.broken.pools``) builds
    each deliberately broken pool by overriding exactly one of
    ``EXTENSION_POINTS`` (``submit``, ``join``, ``_work``, ``_next_task``,
    ``_wait_for_task``), and calls the
    small helpers they use (``_take``, ``_exit``, ``_task_done``,
    ``_going_to_wait``, ``_back_from_wait``, ``_set_state``, ``_notify``,
    ``_publish``, ``_join_threads``).  The lab also forces interleavings on ``_mutex``,
    ``_task_ready`` and ``_closed``, and shows, as "done right", the lines
    of these methods that hold ``self._task_ready.wait()``, ``while not
    self._tasks and not self._closed:``, ``if not self._tasks:``,
    ``wait_for(lambda: self._unfinished == 0`` and ``if self._closed:``.  Keep
    those names and lines, or change the lab with them (its tests say so).

    ``events`` (optional) is told what happens: an object with a
    ``listening`` flag and ``publish(kind, fields)``, which is called with
    the mutex held and must not block (see ``lestats.watch.events``).  While
    nobody listens, the pool only asks the flag.

    Step mode (``lestats.watch.steplocks``, the live page's "you choose who
    runs next") makes a server's pool from a subclass of its class: its two
    Conditions are made on a stepping wrapper of ``_mutex`` before any
    worker first waits, and while step mode is on the wrapper (over the
    same lock) stands in ``_mutex``.  Nothing of it runs in this class.
    """

    def __init__(self, size: int, name: str = "lestats-worker",
                 max_queued: Optional[int] = None, events: Any = None):
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        self.max_queued = max_queued
        self._events = events if events is not None else _Silent()
        # Guards every attribute below, the _Worker records included, and
        # max_queued.  Held only for a few bytecodes at a time; never while
        # a task runs.
        self._mutex = threading.Lock()
        # Idle workers wait on it.  Notified (notify) when a task is added:
        # one task needs one worker, and every waiter waits for the same
        # thing, so waking one is enough (waking more would only make empty
        # wake-ups).  Notified (notify_all) when the pool is closed: every
        # idle worker must wake, see _closed and decide whether to exit.
        self._task_ready = threading.Condition(self._mutex)
        # join() waits on it.  Notified (notify_all) when _unfinished drops
        # to zero: any number of threads may be joining, and all must return.
        self._all_done = threading.Condition(self._mutex)
        self._tasks: Deque[Tuple[Any, Task]] = deque()   # (label, task)
        self._unfinished = 0
        self._closed = False
        self._idle = 0       # threads inside wait(), no notification counted for them
        self._woken = 0      # notifications counted, not yet matched by a return from wait()
        self._counts: Dict[str, int] = {
            "submitted": 0, "submitted_at_close": 0, "waits": 0, "wakeups": 0,
            "empty_wakeups": 0}
        # notify() and notify_all() calls, by Condition.
        self._notifies: Dict[str, int] = {"task_ready": 0, "all_done": 0}
        self._notify_alls: Dict[str, int] = {"task_ready": 0, "all_done": 0}
        self._workers = [_Worker(f"{name}-{i}") for i in range(1, size + 1)]
        self._threads: List[threading.Thread] = [
            threading.Thread(target=self._work, args=(worker,), name=worker.name, daemon=True)
            for worker in self._workers]
        for thread in self._threads:
            thread.start()

    # The bug lab's deliberately broken pools name themselves here.
    variant: Optional[str] = None

    @property
    def size(self) -> int:
        """The number of worker threads (fixed at creation)."""
        return len(self._threads)

    @property
    def worker_names(self) -> List[str]:
        """The worker threads' names, in order."""
        return [worker.name for worker in self._workers]

    def submit(self, task: Task, label: Any = None) -> int:
        """Queue ``task`` to run on a worker and return its ticket: 1 for
        the first task submitted, 2 for the next...  Raise PoolClosed after
        shutdown and PoolFull when ``max_queued`` tasks are waiting.
        ``label`` names the task in snapshots (a job id, say)."""
        with self._mutex:
            if self._closed:
                raise PoolClosed("the pool is shut down")
            if self.max_queued is not None and len(self._tasks) >= self.max_queued:
                raise PoolFull(f"{len(self._tasks)} tasks are queued already")
            self._tasks.append((label, task))
            self._unfinished += 1
            self._counts["submitted"] += 1
            self._notify(self._task_ready)
            return self._counts["submitted"]

    def make_room(self, count: int) -> bool:
        """Let at least ``count`` tasks wait in the queue, raising
        ``max_queued`` if it is lower (then return True): for tasks that must
        not be refused, such as the jobs an earlier run accepted.  Call before
        submitting them."""
        with self._mutex:
            if self.max_queued is None or self.max_queued >= count:
                return False
            self.max_queued = count
            return True

    def unfinished(self) -> int:
        """Tasks accepted and not yet finished (queued or running)."""
        with self._mutex:
            return self._unfinished

    def queued(self) -> int:
        """Tasks waiting in the queue."""
        with self._mutex:
            return len(self._tasks)

    def taken(self) -> int:
        """How many tasks workers have taken from the queue so far; a task
        with ticket T is T - taken() places from the front while queued."""
        with self._mutex:
            return self._counts["submitted"] - len(self._tasks)

    def shutdown(self) -> None:
        """Accept no more tasks; the queued ones still run.  Idempotent,
        returns at once: call ``join`` to wait for the drain."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._counts["submitted_at_close"] = self._counts["submitted"]
                self._publish("shutdown")
                if self._unfinished == 0:
                    self._publish("drain_done")
            # Every idle worker must wake, see _closed and decide to exit.
            self._notify(self._task_ready, every=True)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted task has finished; after ``shutdown``
        also wait for the worker threads to exit.  Return False if that takes
        longer than ``timeout`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._all_done:
            # wait_for is the `while not predicate: wait()` loop, with a deadline.
            if not self._all_done.wait_for(lambda: self._unfinished == 0, timeout):
                return False
            closed = self._closed
        return not closed or self._join_threads(deadline)

    def _join_threads(self, deadline: Optional[float]) -> bool:
        """Wait for the worker threads to exit, until ``deadline`` (a
        ``time.monotonic()`` value; None: as long as it takes).
        ``_threads`` is not guarded: it never changes after ``__init__``."""
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
        return True

    def snapshot(self) -> Dict[str, Any]:
        """What the pool is doing now, as JSON-ready data: its workers, queue,
        counters, and each invariant of the class docstring checked on it."""
        with self._mutex:
            state = self._copy_state()
        return self._report(state)

    def _copy_state(self) -> Dict[str, Any]:
        """Copies of what ``snapshot`` shows, for ``_report``.  Hold
        ``_mutex`` (step mode also calls it as a thread lets go of the
        mutex: see ``lestats.watch.steplocks``)."""
        return {
            "asleep": sum(w.asleep for w in self._workers),
            "workers": [{"name": w.name, "state": w.state,
                         "condition": "task_ready" if w.state == WAITING else None,
                         "job_id": w.label if w.state == RUNNING else None,
                         "since": w.since} for w in self._workers],
            "queue": [label for label, _ in itertools.islice(self._tasks, QUEUE_SHOWN)],
            "queued": len(self._tasks), "unfinished": self._unfinished, "closed": self._closed,
            "idle": self._idle, "woken": self._woken, "counts": dict(self._counts),
            "notifies": dict(self._notifies), "notify_alls": dict(self._notify_alls),
            "max_queued": self.max_queued,
        }

    @staticmethod
    def _report(state: Dict[str, Any]) -> Dict[str, Any]:
        """The snapshot of ``state`` (from ``_copy_state``), its invariants
        checked; needs no lock."""
        workers, queued, closed = state["workers"], state["queued"], state["closed"]
        unfinished, idle, woken, asleep = (state["unfinished"], state["idle"], state["woken"],
                                           state["asleep"])
        counts, max_queued = state["counts"], state["max_queued"]
        running = sum(w["state"] == RUNNING for w in workers)
        exited = sum(w["state"] == EXITED for w in workers)
        invariants = {
            "unfinished == queued + running": unfinished == queued + running,
            "a worker exits only when the pool is closed and the queue is empty":
                exited == 0 or (closed and queued == 0),
            "no lost wake-up: no task waits while a worker sleeps un-notified":
                idle == 0 or queued <= woken,
            "the wake-up counts add up: idle + woken == workers asleep in wait()":
                idle >= 0 and woken >= 0 and idle + woken == asleep,
            "nothing is accepted after shutdown":
                not closed or counts["submitted"] == counts["submitted_at_close"],
            "the queue holds at most max_queued tasks":
                max_queued is None or queued <= max_queued,
        }
        return {
            "size": len(workers), "workers": workers, "queued": queued, "queue": state["queue"],
            "unfinished": unfinished, "closed": closed,
            "counters": {
                "submitted": counts["submitted"],
                "notify": state["notifies"],
                "notify_all": state["notify_alls"],
                "waits": counts["waits"], "wakeups": counts["wakeups"],
                "empty_wakeups": counts["empty_wakeups"],
            },
            "invariants": invariants,
        }

    # -- the workers ----------------------------------------------------------

    def _work(self, me: _Worker) -> None:
        # The mutex is taken once per task: to count the last one finished and
        # to take the next, so a worker goes from one task to the next (or to
        # waiting) in one step that no snapshot can see half done.
        with self._mutex:
            task = self._next_task(me)
        while task is not None:
            try:
                task()
            except BaseException:   # pylint: disable=broad-except
                # Anything, even SystemExit: the worker must outlive its task.
                log.exception("a task raised; the worker goes on")
            with self._mutex:
                self._task_done()
                task = self._next_task(me)

    def _next_task(self, me: _Worker) -> Optional[Task]:
        """Wait for a task and take it, or return None once the pool is
        closed and drained (the worker then exits).  Hold ``_mutex``."""
        while not self._tasks and not self._closed:
            self._wait_for_task(me)
        if not self._tasks:    # closed and drained: this thread is done
            self._exit(me)
            return None
        return self._take(me)

    def _wait_for_task(self, me: _Worker) -> None:
        """Sleep on ``_task_ready`` once, counted; the caller's ``while``
        looks again on waking.  Hold ``_mutex`` (``wait`` lets go of it
        while asleep and has it back on return)."""
        self._going_to_wait(me)
        self._task_ready.wait()
        self._back_from_wait(me)

    def _going_to_wait(self, me: _Worker) -> None:
        """Count ``me`` idle, about to sleep in ``wait``.  Hold ``_mutex``."""
        self._set_state(me, WAITING)
        me.asleep = True
        self._idle += 1
        self._counts["waits"] += 1
        if self._events.listening:
            self._publish("worker_wait", worker=me.name, condition="task_ready")

    def _back_from_wait(self, me: _Worker) -> None:
        """Count a return from ``wait`` (see the class docstring: against a
        notification on its way if there is one, else against the idle),
        and whether it found nothing to do.  Hold ``_mutex``."""
        me.asleep = False
        if self._woken:
            self._woken -= 1
        else:              # no notification was counted for it: a spurious wake-up
            self._idle -= 1
        self._counts["wakeups"] += 1
        empty = not self._tasks and not self._closed
        if empty:          # another worker took the task first: wait again
            self._counts["empty_wakeups"] += 1
        if self._events.listening:
            self._publish("worker_wake", worker=me.name, condition="task_ready", empty=empty)

    def _take(self, me: _Worker) -> Task:
        """The first task of the queue, off it.  Hold ``_mutex``."""
        label, task = self._tasks.popleft()
        self._set_state(me, RUNNING, label)
        return task

    def _exit(self, me: _Worker) -> None:
        """Mark ``me`` exited.  Hold ``_mutex``."""
        self._set_state(me, EXITED)
        self._publish("worker_exit", worker=me.name)

    def _task_done(self) -> None:
        """Count a task finished.  Hold ``_mutex``."""
        self._unfinished -= 1
        if self._unfinished == 0:
            self._notify(self._all_done, every=True)
            if self._closed:
                self._publish("drain_done")

    # -- bookkeeping, all under _mutex ------------------------------------------

    def _set_state(self, worker: _Worker, state: str, label: Any = None) -> None:
        worker.state, worker.label, worker.since = state, label, time.time()

    def _notify(self, condition: threading.Condition, every: bool = False) -> None:
        """``notify()`` (or ``notify_all()``) ``condition``, counted.  Hold ``_mutex``."""
        name = "task_ready" if condition is self._task_ready else "all_done"
        if every:
            condition.notify_all()
            self._notify_alls[name] += 1
        else:
            condition.notify()
            self._notifies[name] += 1
        if condition is self._task_ready:
            woken = self._idle if every else min(self._idle, 1)
            self._idle -= woken
            self._woken += woken
        if self._events.listening:
            self._publish("notify", condition=name, all=every,
                          by=threading.current_thread().name)

    def _publish(self, kind: str, **fields: Any) -> None:
        """Tell the events sink, if it listens.  On the hot paths the caller
        asks ``listening`` first, so that nobody watching costs no event."""
        events = self._events
        if events.listening:
            fields["t"] = time.time()
            events.publish(kind, fields)
