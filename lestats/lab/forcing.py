"""Switch points: how the bug lab and the tests make a harmful interleaving
happen on every run instead of hoping for it.

CPython switches threads every few milliseconds, so a race in three lines
of code almost never shows when it is merely run many times.  These tools
put a stop exactly where the race bites and let the other thread through:

* ``Pause``: a thread stops at a switch point until it is let go.
* ``pause_after_read``: a chosen thread reads an attribute, then stops.
* ``WatchedLock``: a lock that says when a thread has to wait for it, so a
  caller can tell "the code holds the lock here" from "it does not".
* ``PausingLock``: a lock whose chosen thread stops right after letting go
  of it, so a caller can check what was done inside the critical section.
* ``race``: two calls, the first stopped right after a read, the second
  run meanwhile; the first goes on once the second has returned, or is
  shown to be held up by the lock the first one holds.
* ``PausingCondition``: the next waiter woken lets go of the lock and stops
  before its re-check, so another thread can take the task first.
* ``SpuriousCondition``: a wait that returns with no notify, as POSIX allows.
* ``CountingCondition``: counts the threads waiting on it.
* ``Watch``: a pool's events sink, to wait until the pool reaches a state.
* ``held``: a pool whose workers start only when told.
* ``slow_disk``: the chosen thread's first ``os.write`` writes half and stops.
* ``voluntary_switches``: how often a thread went to sleep (from /proc).

The lab (``labs``) and the test suite share them.  Every wait here is
bounded (TIMEOUT), so broken code makes a lab report, or a test fail,
instead of hanging.
"""

import contextlib
import os
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

TIMEOUT = 5.0   # no switch point or wait of the lab or the tests waits longer


class Pause:
    """A switch point: ``reached`` is set when a chosen thread stops there;
    ``release.set()`` lets every thread stopped there (now or later) go on,
    ``let_go(name)`` just one; a thread goes on after TIMEOUT anyway, so
    that a lab or a test of broken code fails instead of hanging.
    ``changed`` is notified at each arrival (and by a WatchedLock made with
    it), so that a caller can wait for "a second thread came here, or is
    blocked on the lock" (``second_thread``).  Everything is guarded by
    ``changed``'s lock."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.count = 0
        self.changed = threading.Condition()
        self.lock: Optional["WatchedLock"] = None
        self.release = _ReleaseAll(self)
        self.released_all = False
        self._let_go: Set[str] = set()

    def stop_here(self) -> None:
        """Called by the chosen thread at the switch point."""
        name = threading.current_thread().name
        with self.changed:
            self.count += 1
            self.changed.notify_all()
            self.reached.set()
            self.changed.wait_for(lambda: self.released_all or name in self._let_go, TIMEOUT)

    def let_go(self, name: str) -> None:
        """Let the thread called ``name`` go on from the switch point."""
        with self.changed:
            self._let_go.add(name)
            self.changed.notify_all()

    def second_thread(self) -> str:
        """Wait until a second thread reaches the switch point (code without
        the lock lets it) or waits for the lock (code with it makes it), and
        say which: "arrived" or "blocked"."""
        with self.changed:
            assert self.changed.wait_for(
                lambda: self.count >= 2 or (self.lock is not None and self.lock.waiting > 0),
                TIMEOUT), "the second thread neither came nor waited for the lock"
            return "arrived" if self.count >= 2 else "blocked"


class _ReleaseAll:   # pylint: disable=too-few-public-methods
    """``Pause.release``: its ``set()`` lets every stopped thread go on."""

    def __init__(self, pause: Pause):
        self._pause = pause

    def set(self) -> None:
        """Let everyone go."""
        with self._pause.changed:
            self._pause.released_all = True
            self._pause.changed.notify_all()


class WatchedLock:
    """A Lock that says (through ``pause.changed``) when a thread has to
    wait for it: ``waiting`` (guarded by ``pause.changed``) counts those
    threads.  Put it in place of an object's mutex before any Condition is
    made on it."""

    def __init__(self, pause: Pause):
        self._lock = threading.Lock()
        self._pause = pause
        self.waiting = 0
        pause.lock = self

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Lock.acquire, noting a wait."""
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        with self._pause.changed:
            self.waiting += 1
            self._pause.changed.notify_all()
        try:
            return self._lock.acquire(True, timeout)
        finally:
            with self._pause.changed:
                self.waiting -= 1

    def release(self) -> None:
        """Lock.release."""
        self._lock.release()

    def locked(self) -> bool:
        """Lock.locked."""
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class PausingLock:
    """A Lock whose chosen thread stops right after it lets go of the lock
    (when ``chosen()`` is true then): the moment at which anything the code
    does after its critical section has not happened yet, while everything
    done inside it is visible.  A test checks there that what must be done
    inside (an event told, a state set) already is."""

    def __init__(self, pause: Pause, chosen: Callable[[], bool]):
        self._lock = threading.Lock()
        self._pause = pause
        self._chosen = chosen

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Lock.acquire."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Lock.release, then the stop."""
        self._lock.release()
        if self._chosen():
            self._pause.stop_here()

    def locked(self) -> bool:
        """Lock.locked."""
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def in_function(name: str) -> Callable[[], bool]:
    """A ``chosen`` test: a function called ``name`` is on the current stack."""
    def chosen() -> bool:
        frame: Any = sys._getframe(1)   # pylint: disable=protected-access
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False
    return chosen


def in_thread(name_prefix: str) -> Callable[[], bool]:
    """A ``chosen`` test: the current thread's name starts with ``name_prefix``."""
    return lambda: threading.current_thread().name.startswith(name_prefix)


def in_threads(*names: str) -> Callable[[], bool]:
    """A ``chosen`` test: the current thread is one of ``names``."""
    return lambda: threading.current_thread().name in names


def pause_after_read(obj: Any, name: str, chosen: Callable[[], bool],
                     times: int = 1) -> Pause:
    """Make the next ``times`` reads of ``obj.name`` by a thread for which
    ``chosen()`` is true stop right after the read (see Pause); the thread
    goes on with the value it read."""
    pause = Pause()
    kept = f"_paused_{name}"
    obj.__dict__[kept] = obj.__dict__.pop(name)
    left = [times]   # guarded by pause.changed

    def read(self: Any) -> Any:
        value = self.__dict__[kept]
        if chosen():
            with pause.changed:
                stop = left[0] > 0
                if stop:
                    left[0] -= 1
            if stop:
                pause.stop_here()
        return value

    def write(self: Any, value: Any) -> None:
        self.__dict__[kept] = value

    obj.__class__ = type(obj.__class__.__name__, (obj.__class__,),
                         {name: property(read, write)})
    return pause


class Outcome:   # pylint: disable=too-few-public-methods
    """What a call in a thread of ``race`` returned or raised."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def run(self, call: Callable[[], Any]) -> None:
        """Call ``call`` and keep what it returns or raises."""
        try:
            self.value = call()
        except Exception as exc:   # pylint: disable=broad-except
            self.error = exc
        finally:
            self.done.set()


def race(first: Callable[[], Any], second: Callable[[], Any], obj: Any, name: str,
         lock: Any = None) -> Tuple[Outcome, Outcome]:
    """Run ``first`` in a thread that stops right after it reads ``obj.name``;
    meanwhile run ``second`` in another thread.  The first goes on once the
    second has returned, or has found ``lock`` (if any) taken, because the
    first read under it, and waits for it.  Return both outcomes, once both
    threads are done."""
    pause = pause_after_read(obj, name, in_threads("lab-first"))
    outcomes = Outcome(), Outcome()
    moved = threading.Event()   # the second returned, or waits for the lock

    def contender() -> None:
        if lock is None or lock.acquire(blocking=False):
            if lock is not None:
                lock.release()
        else:
            moved.set()   # held by the stopped first thread: it must go on first
        outcomes[1].run(second)
        moved.set()

    threads = [threading.Thread(target=outcomes[0].run, args=(first,), name="lab-first"),
               threading.Thread(target=contender, name="lab-second")]
    threads[0].start()
    pause.reached.wait(TIMEOUT)
    threads[1].start()
    moved.wait(TIMEOUT)
    pause.release.set()
    for thread in threads:
        thread.join(TIMEOUT)
    return outcomes


class PausingCondition(threading.Condition):
    """A Condition whose next waiter to wake after ``arm()`` lets go of the
    lock and stops at ``pause`` before it takes the lock back and returns."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.pause = Pause()
        self._armed = False

    def arm(self) -> None:
        """The next waiter to wake stops.  Hold the lock."""
        self._armed = True

    def wait(self, timeout: Optional[float] = None) -> bool:
        woken = super().wait(timeout)
        if self._armed:
            self._armed = False
            self.release()
            try:
                self.pause.stop_here()
            finally:
                self.acquire()
        return woken


class Watch:
    """A pool's events sink (see ThreadPool) that keeps what it is told and
    lets a caller wait until the pool reaches a state.

    The pool publishes with its mutex held, after each change of its
    workers, so the checks of ``until`` are evaluated there, where reading
    the pool's state is safe; ``until`` also checks once itself, under the
    pool's mutex, after registering, so that no change is missed.
    ``_published`` guards ``events`` and ``_checks``.
    """

    def __init__(self, listening: bool = True) -> None:
        self.listening = listening   # never changes
        self._published = threading.Condition()
        self.events: List[Tuple[str, Any]] = []
        self._checks: List[Tuple[Callable[[], bool], threading.Event]] = []

    def publish(self, kind: str, fields: Any) -> None:
        """Called by the pool, with its mutex held."""
        with self._published:
            self.events.append((kind, dict(fields)))
            for predicate, reached in self._checks:
                if predicate():
                    reached.set()
            self._published.notify_all()

    def kinds(self) -> List[str]:
        """The kinds of the events so far."""
        with self._published:
            return [kind for kind, _ in self.events]

    def until(self, pool: Any, predicate: Callable[[], bool]) -> bool:
        """Wait until ``predicate()`` (which reads the pool) holds, then
        until whoever made it true has let go of the pool's mutex."""
        check = (predicate, threading.Event())
        with self._published:
            self._checks.append(check)
        try:
            with pool._mutex:   # pylint: disable=protected-access
                if predicate():
                    check[1].set()
            reached = check[1].wait(TIMEOUT)
        finally:
            with self._published:
                self._checks.remove(check)
        with pool._mutex:   # pylint: disable=protected-access
            pass   # the worker that changed it last is in wait(), or gone
        return reached

    def idle(self, pool: Any, count: int) -> bool:
        """Wait until ``count`` workers of ``pool`` wait for a task."""
        return self.until(pool, lambda: pool._idle == count)   # pylint: disable=protected-access

    def seen(self, pool: Any, count: int, kind: str, **fields: Any) -> bool:
        """Wait until ``count`` events of ``kind`` with ``fields`` were
        published, then until the thread that published the last one has
        let go of the pool's mutex."""
        def matching() -> int:
            return sum(1 for published, values in self.events if published == kind and all(
                values.get(name) == value for name, value in fields.items()))
        with self._published:
            reached = self._published.wait_for(lambda: matching() >= count, TIMEOUT)
        with pool._mutex:   # pylint: disable=protected-access
            pass
        return reached


def held(pool_class: type) -> type:
    """A subclass of ``pool_class`` whose workers start working only once its
    ``go`` Event is set, so that the lab can put a Condition of its own in
    place first."""
    go = threading.Event()

    def work(self: Any, me: Any) -> None:
        go.wait(TIMEOUT)
        pool_class._work(self, me)   # pylint: disable=protected-access

    return type(pool_class.__name__, (pool_class,), {"_work": work, "go": go})


class _SlowOs:   # pylint: disable=too-few-public-methods
    """The ``os`` module, but the chosen thread's first ``write`` writes half
    of what it is given and stops at ``pause``, as a slow disk might."""

    def __init__(self, thread_name: str, pause: Pause):
        self._thread_name = thread_name
        self._pause = pause
        self._stopped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        """``os.write``, cut short and stopped once (see the class)."""
        if self._stopped or threading.current_thread().name != self._thread_name:
            return os.write(fd, data)
        self._stopped = True
        written = os.write(fd, data[:max(1, len(data) // 2)])
        self._pause.stop_here()
        return written


@contextlib.contextmanager
def slow_disk(modules: Tuple[ModuleType, ...], thread_name: str) -> Iterator[Pause]:
    """While in the block, ``os`` as the ``modules`` see it is a slow disk
    for the thread called ``thread_name`` (see _SlowOs)."""
    pause = Pause()
    slow = _SlowOs(thread_name, pause)
    saved = [module.os for module in modules]   # type: ignore[attr-defined]
    for module in modules:
        module.os = slow   # type: ignore[attr-defined]
    try:
        yield pause
    finally:
        for module, real in zip(modules, saved):
            module.os = real   # type: ignore[attr-defined]


class CountingCondition(threading.Condition):
    """A Condition that counts the threads waiting on it, so that a caller
    can wait (``wait_for_waiters``) until they are all in place."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self._waiting = 0
        self._counted = threading.Condition()   # guards _waiting

    def wait(self, timeout: Optional[float] = None) -> bool:
        with self._counted:
            self._waiting += 1
            self._counted.notify_all()
        try:
            return super().wait(timeout)
        finally:
            with self._counted:
                self._waiting -= 1

    def wait_for_waiters(self, count: int, timeout: float = TIMEOUT) -> bool:
        """True once ``count`` threads wait on this Condition."""
        with self._counted:
            return self._counted.wait_for(lambda: self._waiting >= count, timeout)


class SpuriousCondition(threading.Condition):
    """A Condition whose first wait returns at once without a notify, as
    POSIX allows; ``waits`` counts every call (made with the lock held), and
    ``second_wait`` is set on the second."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.waits = 0
        self.second_wait = threading.Event()

    def wait(self, timeout: Optional[float] = None) -> bool:
        self.waits += 1
        if self.waits == 1:
            return True
        self.second_wait.set()
        return super().wait(timeout)


def voluntary_switches(thread: threading.Thread) -> Optional[int]:
    """How many times ``thread`` has gone to sleep (Linux, Python 3.8+), or
    None: an idle thread that polls sleeps many times a second."""
    tid = getattr(thread, "native_id", None)
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
