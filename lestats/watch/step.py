"""Step mode: the pool's threads stop at their synchronization points, and
a student lets one of them go at a time.

While step mode is on, every worker and every producer stops before each
synchronization point of ``lestats/pool.py`` (``stepthread.POINTS``): taking the
Lock, ``wait()`` (which lets go of it), the wake-up (taking it back),
``notify``/``notify_all``, taking a task, running it, counting it done;
and a POST also stops before the job layer's Lock, under which its id is
read.  ``go(name)`` lets one stopped thread run to its next point; ``run()``
leaves step mode and lets every thread go on.  Who holds each Lock, who is
blocked acquiring it and who sleeps on which Condition is tracked as it
happens, and ``state()`` shows it with the line of real source (read with
``inspect``) each thread is at.

The stops are made by the Lock and Conditions of ``steplocks``, put in
place of the pool's (and the job layer's) when the server starts: while
step mode is off they cost one flag test each and call nothing here.

Rules that keep the page live and every stop releasable:

* A thread stops inside a critical section (notify, wait, take, done) only
  if it took the Lock during this session of step mode, so a thread that
  took it before finishes its critical section first.  Whenever a stopped
  thread holds the pool's Lock, ``_last_free`` is the pool's state as the
  Lock was last let go, so ``pool_snapshot`` never waits for a student.
* Only the pool's own methods stop at its Lock (its accessors, such as
  ``snapshot`` and ``queued``, do not), and only ``submit`` stops at the job
  layer's: the job layer's other users are tracked, never stopped.
* Every stop is released by ``go``, ``run``, ``close`` (the server is
  stopping) and by the last live page going away (``watcher_left``).
"""

import contextlib
import itertools
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from . import source
from .stepthread import (ACQUIRE, ASLEEP, BLOCKED, DONE, EXITED, JOBS, LEFT, NOTIFY, NOTIFY_ALL,
                         POOL, RUNNING, STOPPED, TAKE, WAIT, WAKE, WOKEN, SteppedThread)

INSIDE = frozenset((WAIT, NOTIFY, NOTIFY_ALL, TAKE, DONE))   # reached holding the Lock

SETTLED = frozenset((STOPPED, BLOCKED, ASLEEP, LEFT, EXITED))

# The pool's methods that take its Lock only to read: they never stop.
ACCESSORS = frozenset(("snapshot", "queued", "taken", "unfinished", "make_room"))
# A thread that is not a worker is named after the outermost call it made.
ROLES = {"submit": "producer", "shutdown": "shutdown", "join": "join", "drain": "join"}
SETTLE = 2.0          # seconds go() waits for the thread to reach its next point
FRAMES_SHOWN = 4      # frames of each thread's stack that state() shows
_HERE = frozenset((__file__, os.path.join(os.path.dirname(__file__), "steplocks.py"),
                   threading.Condition.wait.__code__.co_filename))


class Stepper:   # pylint: disable=too-many-instance-attributes
    """Step mode of one server: on or off, the threads it stopped, the
    Locks' holders, and the pool's state when its Lock was last free.

    ``_mutex`` guards ``_on``, ``_closed``, ``_session``, ``_seq``,
    ``_threads`` (and every SteppedThread), ``_holders``, ``_blocked``,
    ``_last_free``, ``_labels`` and ``_watchers``.  It is held for
    bookkeeping only; frames and source are read outside it.  Lock order:
    the job layer's Lock, the pool's, then this mutex, then the event bus's
    (a thread stops holding the Locks it has; its stop waits on this
    mutex's Conditions, which let go of it).  ``pool_snapshot`` and
    ``start`` only *try* the pool's Lock while holding this mutex, so the
    order is never reversed by a wait.

    ``_changed`` (on the mutex) is notified (all) at every change a waiter
    may be waiting for: a stop, a block, a sleep, a release, a leave, the
    mode.  Its waiters wait for different things (``go`` for its thread to
    settle, ``pool_snapshot`` for a release, the tests for a state), so
    all of them must look.  Each SteppedThread's ``ready`` is notified (one: its
    own thread is the only waiter) when it may go on.

    ``flag`` is a ``threading.Event`` set and cleared under the mutex with
    ``_on``: the Locks and Conditions of ``steplocks`` ask it without any
    lock, so that step mode off costs them one flag test.  ``_pool``,
    ``_jobs``, ``_workers``, ``_sources`` and ``_pool_files`` are set by
    ``attach_pool`` and ``attach_jobs`` while the server starts, before any
    other thread uses the stepper, and never change after.
    """

    def __init__(self, events: Any = None):
        self._events = events
        self.flag = threading.Event()
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._on = False
        self._closed = False
        self._session = 0
        self._seq = 0
        self._threads: Dict[int, SteppedThread] = {}
        self._holders: Dict[str, Tuple[int, str]] = {}   # lock -> its holder this session
        self._blocked: Dict[str, List[str]] = {POOL: [], JOBS: []}
        self._last_free: Optional[Dict[str, Any]] = None
        self._labels: Dict[str, Any] = {}
        self._watchers = 0
        self._starting = threading.Lock()   # one start() at a time; guards nothing else
        self._swaps: List[Callable[[bool], None]] = []
        self._pool: Any = None
        self._pool_raw: Any = None
        self._jobs: Any = None
        self._jobs_raw: Any = None
        self._workers: FrozenSet[str] = frozenset()
        self._sources: FrozenSet[str] = frozenset()
        self._pool_files: FrozenSet[str] = frozenset()

    # -- wiring (start-up only) -------------------------------------------------

    def attach_pool(self, pool: Any, raw: Any, swap: Callable[[bool], None]) -> None:
        """The pool whose threads stop (see ``steplocks.steppable``): its
        real Lock, and ``swap(on)``, which puts the stepping Lock in its
        ``_mutex`` (or the real one back)."""
        self._pool, self._pool_raw = pool, raw
        self._swaps.append(swap)
        self._workers = frozenset(pool.worker_names)
        self._pool_files = source.files(type(pool), _HERE)
        self._sources = self._sources | self._pool_files

    def attach_jobs(self, jobs: Any, raw: Any, swap: Callable[[bool], None]) -> None:
        """The job layer whose ``submit`` stops at its Lock (``raw`` and
        ``swap``: as for the pool)."""
        self._jobs, self._jobs_raw = jobs, raw
        self._swaps.append(swap)
        self._sources = self._sources | source.files(type(jobs), _HERE)

    # -- the mode ---------------------------------------------------------------

    def start(self) -> bool:
        """Enter step mode (a new session); False once the server is
        stopping.

        Step mode comes on while this thread holds the pool's real Lock:
        step mode being off, whoever held it lets go without stopping, and
        the pool's state then is the first "state when the Lock was free".
        Lock order: the pool's Lock, then ``_mutex``, as everywhere."""
        with self._starting:
            with self._mutex:
                if self._closed or self._on:
                    return not self._closed
            # Off, and no other start() under way: it stays off until below.
            with self._pool_raw if self._pool_raw is not None else contextlib.nullcontext():
                with self._mutex:
                    if self._closed:
                        return False
                    self._session += 1
                    self._threads.clear()
                    self._holders.clear()
                    self._blocked = {POOL: [], JOBS: []}
                    self._labels = {role: itertools.count(1) for role in set(ROLES.values())}
                    self._on = True
                    self.flag.set()
                    for swap in self._swaps:
                        swap(True)
                    if self._pool is not None:
                        self._last_free = self._pool._copy_state()   # pylint: disable=protected-access
                        self._know_workers(self._last_free)
                    self._tell("mode", on=True)
                    self._changed.notify_all()
            return True


    def run(self) -> None:
        """Leave step mode: every stopped thread goes on, and none stops again."""
        with self._mutex:
            self._leave()

    def close(self) -> None:
        """The server is stopping: leave step mode for good."""
        with self._mutex:
            self._closed = True
            self._leave()

    def _leave(self) -> None:
        """Hold ``_mutex``."""
        if not self._on:
            return
        self._on = False
        self.flag.clear()
        for swap in self._swaps:
            swap(False)
        for record in self._threads.values():
            record.ready.notify()
        self._changed.notify_all()
        self._tell("mode", on=False)

    def watcher_came(self) -> None:
        """A page opened its event stream."""
        with self._mutex:
            self._watchers += 1

    def watcher_left(self) -> None:
        """A page's event stream ended; when the last one does, nobody is
        left to let the stopped threads go, so step mode ends."""
        with self._mutex:
            self._watchers -= 1
            if self._watchers <= 0 and self._on:
                self._leave()

    def go(self, name: str, settle: float = SETTLE) -> Optional[str]:
        """Let the stopped thread ``name`` run to its next point, and wait
        (up to ``settle`` seconds) until it is there, blocked, asleep or
        gone, and every thread it woke is at its wake-up point; return its
        state then, or None if it was not stopped."""
        with self._mutex:
            record = next((r for r in self._threads.values()
                           if r.name == name and r.state == STOPPED), None)
            if record is None or not self._on:
                return None
            record.go = True
            record.state = RUNNING
            record.ready.notify()
            self._changed.wait_for(lambda: not self._on or (record.state in SETTLED and not any(
                r.state == WOKEN for r in self._threads.values())), settle)
            return record.state

    def until(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float) -> bool:
        """Wait until ``predicate(threads)`` holds, ``threads`` being each
        known thread's ``describe()`` by name (for tests and the lab)."""
        with self._mutex:
            return self._changed.wait_for(lambda: predicate(self._described()), timeout)

    # -- called by steplocks' Lock and Conditions, with step mode on ---------------

    def acquire(self, lock: Any, blocking: bool = True, timeout: float = -1) -> bool:
        """``lock.acquire``: stop first if this is a point, then take it."""
        if blocking:
            role = self._stops(lock.name)
            if role is not None:
                self._stop(ACQUIRE, role, lock=lock.name)
        return self._take(lock, blocking, timeout)

    def point(self, kind: str, lock: Any, condition: Optional[str] = None) -> None:
        """A point other than acquiring: stop there if this thread stops."""
        role = self._stops(lock.name)
        if role is None:
            return
        if kind in INSIDE:
            with self._mutex:
                if self._holders.get(lock.name, (0,))[0] != threading.get_ident():
                    return   # took the Lock before this session: finishes first
        self._stop(kind, role, lock=lock.name, condition=condition)

    def release(self, lock: Any) -> None:
        """The calling thread is about to let go of ``lock`` (it holds it)."""
        me = threading.get_ident()
        with self._mutex:
            if not self._on:
                return
            if lock.name == POOL:
                self._last_free = self._pool._copy_state()   # pylint: disable=protected-access
            if self._holders.get(lock.name, (0,))[0] == me:
                del self._holders[lock.name]
            record = self._threads.get(me)
            if record is not None:
                record.holds.discard(lock.name)
                self._maybe_left(record)
            self._changed.notify_all()

    def sleep(self, lock: Any, condition: str) -> None:
        """The calling thread is about to sleep in ``condition.wait()``
        (it holds ``lock``, which the wait lets go of): the WAIT point,
        then the bookkeeping.  (The wait has already put it among the
        Condition's waiters, but nobody can notify while it holds the Lock.)"""
        self.point(WAIT, lock, condition)
        me = threading.current_thread()
        role = self._role()
        with self._mutex:
            if not self._on:
                return
            self._last_free = self._pool._copy_state()   # pylint: disable=protected-access
            if self._holders.get(lock.name, (0,))[0] == me.ident:
                del self._holders[lock.name]
            record = self._record(me, role)
            record.holds.discard(lock.name)
            record.state, record.condition, record.notifies = ASLEEP, condition, 0
            record.arrived = self._next_seq()
            self._tell("sleep", record)
            self._changed.notify_all()

    def notified(self, condition: str, every: bool) -> None:
        """``condition`` was notified (all): mark whom it woke.  CPython's
        Condition wakes its waiters first in, first out."""
        with self._mutex:
            sleepers = sorted((r for r in self._threads.values()
                               if r.state == ASLEEP and r.condition == condition),
                              key=lambda r: r.arrived)
            for record in sleepers:
                record.notifies += 1
            for record in sleepers if every else sleepers[:1]:
                record.state = WOKEN
            self._changed.notify_all()

    def wake(self, lock: Any, condition: str) -> None:
        """Back from ``condition.wait()``: stop, then take ``lock`` back."""
        role = self._stops(lock.name)
        with self._mutex:
            record = self._threads.get(threading.get_ident())
            if record is not None and record.state in (ASLEEP, WOKEN):
                record.state = RUNNING
        if role is not None:
            self._stop(WAKE, role, lock=lock.name, condition=condition)
        self._take(lock)

    # -- stopping and tracking ---------------------------------------------------

    def _stops(self, lock: str) -> Optional[str]:
        """The calling thread's role if it stops at a point of ``lock``
        here, else None: only code of the pool or the job layer stops, and
        of it neither the pool's accessors nor the job layer's other users."""
        frame: Any = sys._getframe(1)   # pylint: disable=protected-access
        while frame is not None and frame.f_code.co_filename in _HERE:
            frame = frame.f_back
        if frame is None or frame.f_code.co_filename not in self._sources:
            return None
        function = frame.f_code.co_name
        if (lock == JOBS and function != "submit") or (lock == POOL and function in ACCESSORS):
            return None
        return self._role(frame)

    def _role(self, frame: Any = None) -> str:
        """"worker", or what the outermost call into the pool or the job layer was."""
        if threading.current_thread().name in self._workers:
            return "worker"
        frame = frame or sys._getframe(1)   # pylint: disable=protected-access
        outer = "other"
        while frame is not None:
            if frame.f_code.co_filename in self._sources:
                outer = frame.f_code.co_name
            frame = frame.f_back
        return ROLES.get(outer, outer)

    def _stop(self, kind: str, role: str, lock: Optional[str] = None,
              condition: Optional[str] = None) -> None:
        """Stop the calling thread at ``kind`` until it is let go."""
        me = threading.current_thread()
        with self._mutex:
            if not self._on:
                return
            record = self._record(me, role)
            record.state, record.point, record.go = STOPPED, kind, False
            record.lock, record.condition = lock, condition
            record.arrived = self._next_seq()
            session = self._session
            self._tell("stop", record)
            self._changed.notify_all()
            while self._on and self._session == session and not record.go:
                record.ready.wait()
            record.point = None
            if record.state == STOPPED:
                record.state = RUNNING

    def _take(self, lock: Any, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire ``lock``'s real lock, noting a wait for it and its holder."""
        me = threading.current_thread()
        if not lock.raw.acquire(False):
            if not blocking:
                return False
            with self._mutex:
                self._blocked[lock.name].append(me.name)
                record = self._threads.get(me.ident)
                if record is not None:
                    record.state, record.lock = BLOCKED, lock.name
                self._tell("blocked", record, lock=lock.name, thread=me.name)
                self._changed.notify_all()
            try:
                if not lock.raw.acquire(True, timeout):
                    return False
            finally:
                with self._mutex:
                    if me.name in self._blocked[lock.name]:
                        self._blocked[lock.name].remove(me.name)
                    record = self._threads.get(me.ident)
                    if record is not None and record.state == BLOCKED:
                        record.state = RUNNING
        with self._mutex:
            if self._on:
                if lock.name == POOL:   # the state as the Lock was last let go
                    self._last_free = self._pool._copy_state()   # pylint: disable=protected-access
                self._holders[lock.name] = (me.ident, me.name)
                record = self._threads.get(me.ident)
                if record is not None:
                    record.holds.add(lock.name)
        return True

    def _record(self, thread: threading.Thread, role: str) -> SteppedThread:
        """The calling thread's record, made on its first point.  Hold ``_mutex``."""
        record = self._threads.get(thread.ident)   # type: ignore[arg-type]
        if record is None:
            worker = role == "worker"
            counter = self._labels.get(role)
            label = thread.name if worker or counter is None else f"{role} {next(counter)}"
            record = SteppedThread(thread, role, label, worker, threading.Condition(self._mutex))
            self._threads[thread.ident] = record   # type: ignore[index]
        return record

    def _maybe_left(self, record: SteppedThread) -> None:
        """After ``record`` let go of a Lock: a thread other than a worker
        that holds none has left the pool.  Hold ``_mutex``."""
        if record.state == RUNNING and not record.holds and not record.worker:
            record.state = LEFT
            del self._threads[record.ident]
            self._tell("left", record)

    def exited(self) -> None:
        """The calling worker leaves its loop for good (``_exit``)."""
        with self._mutex:
            record = self._threads.get(threading.get_ident())
            if record is not None and self._on:
                record.state = EXITED
                self._tell("exited", record)
                self._changed.notify_all()

    def _holders_now(self) -> Dict[str, Tuple[int, str]]:
        """``_holders``, without a holder that has let go of its Lock
        unseen: a worker asleep since before step mode took its Lock back
        through the Condition (seen), but lets go of it with the ``with``
        it began before step mode, on the real lock.  Hold ``_mutex``."""
        for name, raw in ((POOL, self._pool_raw), (JOBS, self._jobs_raw)):
            if name in self._holders and (raw is None or not raw.locked()):
                del self._holders[name]
        return self._holders

    def _read_pool(self) -> bool:
        """Copy the pool's state if its Lock is free right now.  Hold
        ``_mutex`` (the pool's Lock is only tried, never waited for)."""
        raw = self._pool_raw
        if not raw.acquire(False):
            return False
        try:
            self._last_free = self._pool._copy_state()   # pylint: disable=protected-access
        finally:
            raw.release()
        return True

    def _know_workers(self, state: Dict[str, Any]) -> None:
        """At the start of a session: a record for each worker, asleep
        (in the order they went to sleep) or running.  Hold ``_mutex``."""
        by_name = {thread.name: thread for thread in threading.enumerate()}
        for worker in sorted(state["workers"], key=lambda w: w["since"]):
            thread = by_name.get(worker["name"])
            if thread is None or thread.ident in self._threads:   # it has stopped already
                continue
            record = self._record(thread, "worker")
            if worker["state"] == EXITED:
                record.state = EXITED
            elif worker["condition"] is not None:
                record.state, record.condition = ASLEEP, worker["condition"]
                record.arrived = self._next_seq()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _described(self) -> Dict[str, Dict[str, Any]]:
        """Hold ``_mutex``."""
        holders = self._holders_now()
        described = {}
        for record in self._threads.values():
            described[record.name] = record.describe()
            described[record.name]["holds"] = sorted(
                name for name, (ident, _) in holders.items() if ident == record.ident)
        return described

    def _tell(self, what: str, record: Optional[SteppedThread] = None, **fields: Any) -> None:
        """Publish a "step" event, if anyone listens.  Hold ``_mutex``."""
        events = self._events
        if events is None or not events.listening:
            return
        if record is not None:
            described = record.describe()
            fields.update({name: described[name] for name in (
                "name", "label", "role", "state", "point", "lock", "condition", "doing")})
            fields["thread"] = fields.pop("name")
        fields.update(what=what, t=time.time())
        events.publish("step", fields)

    # -- what the page shows -------------------------------------------------------

    @property
    def on(self) -> bool:
        """Is step mode on?"""
        return self.flag.is_set()

    def pool_snapshot(self) -> Optional[Dict[str, Any]]:
        """The pool's snapshot in step mode, without waiting for a stopped
        thread: now if its Lock is free, else as the Lock was last let go
        (known since ``start``).  None if step mode is off."""
        with self._mutex:
            if not self._on:
                return None
            self._read_pool()
            state, holder = self._last_free, self._holders_now().get(POOL)
        snapshot = self._pool._report(state)   # pylint: disable=protected-access
        snapshot["step"] = {"lock_holder": holder[1] if holder else None}
        return snapshot

    def state(self) -> Dict[str, Any]:
        """What the page's step panel shows, as JSON-ready data (the pool's
        snapshot is /api/pool's: see ``pool_snapshot``)."""
        with self._mutex:
            threads = sorted(self._described().values(),
                             key=lambda t: (not t["worker"], t["arrived"] if not t["worker"]
                                            else t["name"]))
            holders = self._holders_now()
            locks = {name: {"holder": holders[name][1] if name in holders else None,
                            "blocked": list(self._blocked[name])} for name in (POOL, JOBS)}
            sleepers: Dict[str, List[str]] = {"task_ready": [], "all_done": []}
            for record in sorted(self._threads.values(), key=lambda r: r.arrived):
                if record.state in (ASLEEP, WOKEN) and record.condition in sleepers:
                    sleepers[record.condition].append(record.name)
            on, closed, watchers = self._on, self._closed, self._watchers
        frames = sys._current_frames()   # pylint: disable=protected-access
        for thread in threads:
            files = self._pool_files if thread["worker"] else self._sources
            thread["frames"] = source.frames(frames.get(thread.pop("ident")), files, FRAMES_SHOWN)
        for name, lock in ((POOL, self._pool), (JOBS, self._jobs)):
            mutex = getattr(lock, "_mutex", None)
            locks[name]["locked"] = bool(mutex is not None and mutex.locked())
        return {"available": self._pool is not None, "on": on, "closed": closed,
                "watchers": watchers, "threads": threads, "locks": locks,
                "conditions": sleepers}
