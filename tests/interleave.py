"""Tools to force an interleaving instead of hoping for it.

CPython switches threads only every few milliseconds, so a race in a few
lines of straight-line code almost never shows under load.  These tools put
a switch point exactly where a race would bite:

* ``pause_after_read(obj, name, ...)``: the chosen thread reads attribute
  ``name``, then stops (as if the scheduler switched away) until released,
  and goes on with the value it read.  If the code reads it under a lock,
  every other thread that needs the lock waits too; if not, they overtake.
* ``SwitchingCondition``: a Condition whose chosen waiter, once woken, stops
  before it re-takes the lock, so other threads can run first (the window
  every ``while not predicate: wait()`` loop exists for).
* ``SpuriousCondition``: a Condition whose first wait returns at once, as
  POSIX allows a wake-up to.
* ``voluntary_switches(thread)``: how often a thread has gone to sleep, from
  /proc (an idle thread that polls sleeps many times a second).
"""

import threading
from typing import Callable, Optional

# The bug lab forces the same interleaving with the same tool.
from lestats.lab.forcing import PausingCondition as SwitchingCondition  # noqa: F401

TIMEOUT = 5.0   # no forced pause or gate in these tests waits longer


class Pause:
    """A switch point: ``reached`` is set when a chosen thread stops there;
    ``release.set()`` lets every thread stopped there (now or later) go on,
    ``let_go(name)`` just one; a thread goes on after TIMEOUT anyway, so
    that a test of broken code fails instead of hanging.  ``changed`` is
    notified at each arrival (and by a WatchedLock made with it), so a test
    can wait for "a second thread came here, or is blocked on the lock"
    (``second_thread``)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.count = 0
        self.changed = threading.Condition()
        self.lock: Optional["WatchedLock"] = None
        self.release = _ReleaseAll(self)
        self.released_all = False
        self._let_go: set = set()

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
                lambda: self.count >= 2 or (self.lock is not None and self.lock.waiting),
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
    wait for it: ``waiting`` counts those threads.  Put it in place of an
    object's mutex before any Condition is made on it."""

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

    def __exit__(self, *exc_info) -> None:
        self.release()


class IdleWatch:
    """An events sink for a ThreadPool that lets a test wait until a given
    number of workers wait for a task (the pool publishes under its mutex,
    right after each change of its idle count).  It also keeps the events."""

    def __init__(self, listening: bool = True) -> None:
        self.listening = listening
        self.events: list = []
        self._changed = threading.Condition()

    def publish(self, kind: str, fields: dict) -> None:
        """Called by the pool with its mutex held."""
        with self._changed:
            self.events.append((kind, fields))
            self._changed.notify_all()

    def kinds(self) -> list:
        """The kinds of the events so far."""
        return [kind for kind, _ in self.events]

    def wait_events(self, pool, count: int, kind: str, **fields) -> None:
        """Wait until ``count`` events of ``kind`` with ``fields`` were
        published, then until the thread that published the last one has
        let go of the pool's mutex."""
        def seen() -> int:
            return sum(1 for published, values in self.events if published == kind and all(
                values.get(name) == value for name, value in fields.items()))
        with self._changed:
            assert self._changed.wait_for(lambda: seen() >= count, TIMEOUT), (
                f"{seen()} {kind} events {fields}, not {count}")
        with pool._mutex:   # pylint: disable=protected-access
            pass

    def wait_idle(self, pool, count: int) -> None:
        """Wait until ``count`` workers of ``pool`` wait on its Condition."""
        with self._changed:
            assert self._changed.wait_for(
                lambda: pool._idle == count, TIMEOUT), (   # pylint: disable=protected-access
                f"{pool._idle} workers idle, not {count}")   # pylint: disable=protected-access
        with pool._mutex:   # pylint: disable=protected-access
            pass   # whoever counted itself idle last has let go of it in wait()


def pause_after_read(obj: object, name: str, chosen: Callable[[], bool],
                     times: int = 1) -> Pause:
    """Make the next ``times`` reads of ``obj.name`` by a thread for which
    ``chosen()`` is true stop right after the read (see Pause)."""
    pause = Pause()
    value_key = f"_paused_{name}"
    obj.__dict__[value_key] = obj.__dict__.pop(name)
    left = [times]

    def read(self):
        value = self.__dict__[value_key]
        if left[0] > 0 and chosen():
            left[0] -= 1
            pause.stop_here()
        return value

    def write(self, value):
        self.__dict__[value_key] = value

    obj.__class__ = type(obj.__class__.__name__, (obj.__class__,),
                         {name: property(read, write)})
    return pause


def in_thread(name_prefix: str) -> Callable[[], bool]:
    """A ``chosen`` test: the current thread's name starts with ``name_prefix``."""
    return lambda: threading.current_thread().name.startswith(name_prefix)


def in_threads(*names: str) -> Callable[[], bool]:
    """A ``chosen`` test: the current thread is one of ``names``."""
    return lambda: threading.current_thread().name in names


class CountingCondition(threading.Condition):
    """A Condition that counts the threads waiting on it, so that a test can
    wait (``wait_for_waiters``) until they are all in place."""

    def __init__(self, lock):
        super().__init__(lock)
        self._waiting = 0
        self._counted = threading.Condition()

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
    """A Condition whose first wait returns at once without a notify;
    ``waits`` counts every call, and ``second_wait`` is set on the second."""

    def __init__(self, lock):
        super().__init__(lock)
        self.waits = 0
        self.second_wait = threading.Event()

    def wait(self, timeout: Optional[float] = None) -> bool:
        self.waits += 1
        if self.waits == 1:
            return True
        self.second_wait.set()
        return super().wait(timeout)


def native_id(thread: threading.Thread) -> Optional[int]:
    """The kernel's id of ``thread`` (Python 3.8+), or None."""
    return getattr(thread, "native_id", None)


def voluntary_switches(thread: threading.Thread) -> Optional[int]:
    """How many times ``thread`` has gone to sleep (Linux), or None."""
    tid = native_id(thread)
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
