"""Switch points: how the lab makes the harmful interleaving happen on
every run instead of hoping for it.

CPython switches threads every few milliseconds, so a race in three lines
of code almost never shows when it is merely run many times.  The lab puts
a stop exactly where the race bites and lets the other thread through:

* ``Pause``: a thread stops at a switch point until the lab releases it.
* ``pause_after_read``: the chosen thread reads an attribute, then stops.
* ``race``: two calls, the first stopped right after a read, the second
  run meanwhile; the first goes on once the second has returned, or is
  shown to be held up by the lock the first one holds.
* ``PausingCondition``: the next waiter woken lets go of the lock and stops
  before its re-check, so another thread can take the task first.
* ``Watch``: a pool's events sink, to wait until the pool reaches a state.
* ``slow_disk``: the chosen thread's first ``os.write`` writes half and stops.

Every wait here is bounded (TIMEOUT), so broken code makes a lab report a
failure instead of hanging.
"""

import contextlib
import os
import threading
from types import ModuleType
from typing import Any, Callable, Iterator, List, Optional, Tuple

TIMEOUT = 5.0   # no switch point or wait of the lab waits longer


class Pause:
    """A switch point: ``reached`` is set when the chosen thread stops there;
    it goes on once ``release`` is set (or after TIMEOUT)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def stop_here(self) -> None:
        """Called by the chosen thread at the switch point."""
        self.reached.set()
        self.release.wait(TIMEOUT)


def pause_after_read(obj: Any, name: str, thread_name: str) -> Pause:
    """Make the next read of ``obj.name`` by the thread called ``thread_name``
    stop right after the value is read (it goes on with that value)."""
    pause = Pause()
    kept = f"_lab_{name}"
    obj.__dict__[kept] = obj.__dict__.pop(name)
    armed = [True]

    def read(self: Any) -> Any:
        value = self.__dict__[kept]
        if armed[0] and threading.current_thread().name == thread_name:
            armed[0] = False
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
    pause = pause_after_read(obj, name, "lab-first")
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
    """A pool's events sink (see ThreadPool) that lets the lab wait until
    the pool is in a given state: the pool publishes under its mutex after
    each change of its workers, and ``until`` re-checks on each event."""

    listening = True

    def __init__(self) -> None:
        self._published = threading.Condition()
        self.kinds: List[str] = []

    def publish(self, kind: str, fields: Any) -> None:   # pylint: disable=unused-argument
        """Called by the pool, with its mutex held."""
        with self._published:
            self.kinds.append(kind)
            self._published.notify_all()

    def until(self, pool: Any, predicate: Callable[[], bool]) -> bool:
        """Wait until ``predicate()`` (which reads the pool without its lock)
        holds, then until whoever made it true has let go of the mutex."""
        with self._published:
            reached = self._published.wait_for(predicate, TIMEOUT)
        with pool._mutex:   # pylint: disable=protected-access
            pass   # the worker that changed it last is in wait(), or gone
        return reached

    def idle(self, pool: Any, count: int) -> bool:
        """Wait until ``count`` workers of ``pool`` wait for a task."""
        return self.until(pool, lambda: pool._idle == count)   # pylint: disable=protected-access


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
