"""The Lock and Conditions of step mode, and how a server's pool and job
layer get them.

``StepLock`` and ``StepCondition`` behave as ``threading.Lock`` and
``threading.Condition``; while step mode is off each use costs one flag
test more (``Stepper.flag``) and nothing else.  While it is on, they hand
each use to the ``Stepper``: taking the Lock, ``wait()``, the wake-up,
``notify`` and ``notify_all`` are points where a thread may stop.

``steppable(pool_class)`` is the pool class of a server: the same class
(the correct pool, or a broken pool of the lab), whose Lock and Conditions
are a StepLock and StepConditions and whose ``_take`` and ``_task_done``
(helpers pool.py names; no broken pool overrides them) are points too, as
is running a task.  ``steppable_jobs`` gives a job manager a StepLock.
Both are done while the server starts, before any other thread uses them.
"""

import threading
from typing import Any, Callable, Dict, Optional

from .step import DONE, JOBS, NOTIFY, NOTIFY_ALL, POOL, RUN, TAKE, WAIT, Stepper


class StepLock:
    """A Lock whose users may stop, in step mode, before taking it.

    ``raw`` is the real lock.  ``name`` says which it is to the stepper
    (POOL or JOBS).  ``_is_owned`` is what ``threading.Condition`` asks;
    the Lock keeps no owner (neither does ``threading.Lock``)."""

    def __init__(self, stepper: Stepper, name: str):
        self.raw = threading.Lock()
        self.name = name
        self._stepper = stepper
        self._stepping = stepper.flag

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Lock.acquire (a point in step mode)."""
        if self._stepping.is_set():
            return self._stepper.acquire(self, blocking, timeout)
        return self.raw.acquire(blocking, timeout)

    def __enter__(self) -> bool:
        if self._stepping.is_set():
            return self._stepper.acquire(self)
        return self.raw.acquire()

    def release(self) -> None:
        """Lock.release."""
        if self._stepping.is_set():
            self._stepper.release(self)
        self.raw.release()

    def __exit__(self, *exc_info: Any) -> None:
        if self._stepping.is_set():
            self._stepper.release(self)
        self.raw.release()

    def locked(self) -> bool:
        """Lock.locked."""
        return self.raw.locked()

    def _is_owned(self) -> bool:
        """Held by anyone (as threading.Condition assumes of a Lock)."""
        if self.raw.acquire(False):   # pylint: disable=consider-using-with
            self.raw.release()
            return False
        return True


class StepCondition(threading.Condition):
    """A Condition on a StepLock whose ``wait``, wake-up, ``notify`` and
    ``notify_all`` are points in step mode.

    It overrides ``threading.Condition``'s ``_release_save`` (``wait``
    letting go of the Lock) and ``_acquire_restore`` (taking it back on
    waking), the two hooks the standard Condition calls on its lock, so the
    wake-up can stop *before* the Lock is taken back.  ``_every`` is True
    while ``notify_all`` runs (it calls ``notify``); it is guarded by the
    Lock, which every notifier holds."""

    def __init__(self, lock: StepLock, name: str):
        super().__init__(lock)   # type: ignore[arg-type]
        self.name = name
        self._step_lock = lock
        self._stepper = lock._stepper   # pylint: disable=protected-access
        self._stepping = self._stepper.flag
        self._every = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._stepping.is_set():
            self._stepper.point(WAIT, self._step_lock, self.name)
        return super().wait(timeout)

    def notify(self, n: int = 1) -> None:
        if self._stepping.is_set() and not self._every:
            self._stepper.point(NOTIFY, self._step_lock, self.name)
            super().notify(n)
            self._stepper.notified(self.name, every=False)
        else:
            super().notify(n)

    def notify_all(self) -> None:
        stepping = self._stepping.is_set()
        if stepping:
            self._stepper.point(NOTIFY_ALL, self._step_lock, self.name)
        self._every = True
        try:
            super().notify_all()
        finally:
            self._every = False
        if stepping:
            self._stepper.notified(self.name, every=True)

    def _release_save(self) -> None:
        if self._stepping.is_set():
            self._stepper.sleep(self._step_lock, self.name)
        self._step_lock.raw.release()

    def _acquire_restore(self, _state: Any) -> None:
        if self._stepping.is_set():
            self._stepper.wake(self._step_lock, self.name)   # stops, then takes it
        else:
            self._step_lock.raw.acquire()


def steppable(pool_class: type) -> type:
    """``pool_class`` with step mode's Lock and Conditions (see the module).
    Make it with ``stepper=`` besides the pool's own arguments."""

    class Steppable(pool_class):   # type: ignore[valid-type,misc]
        """``pool_class``, its synchronization points stoppable."""

        def __init__(self, size: int, *, stepper: Stepper, **options: Any):
            self.stepper = stepper
            self._stepping = stepper.flag
            self._installed = threading.Event()
            # The workers start in the constructor: they wait (see _work)
            # until the Lock and Conditions below are in place.
            super().__init__(size, **options)
            self._mutex = StepLock(stepper, POOL)
            self._task_ready = StepCondition(self._mutex, "task_ready")
            self._all_done = StepCondition(self._mutex, "all_done")
            stepper.attach_pool(self)
            self._installed.set()

        def _work(self, me: Any) -> None:
            self._installed.wait()
            super()._work(me)

        def _take(self, me: Any) -> Callable[[], None]:
            if not self._stepping.is_set():
                return super()._take(me)
            self.stepper.point(TAKE, self._mutex)
            return _stopping_before(super()._take(me), self.stepper, self._mutex)

        def _task_done(self) -> None:
            if self._stepping.is_set():
                self.stepper.point(DONE, self._mutex)
            super()._task_done()

        def snapshot(self) -> Dict[str, Any]:
            """In step mode, without waiting for a thread stopped holding the Lock."""
            if self._stepping.is_set():
                return self.stepper.pool_snapshot()
            return super().snapshot()

    Steppable.__name__ = Steppable.__qualname__ = pool_class.__name__
    return Steppable


def _stopping_before(task: Callable[[], None], stepper: Stepper,
                     lock: StepLock) -> Callable[[], None]:
    """``task``, with the RUN point before it (if step mode is still on)."""
    def run() -> None:
        if stepper.flag.is_set():
            stepper.point(RUN, lock)
        task()
    return run


def steppable_jobs(jobs: Any, stepper: Stepper) -> None:
    """Give ``jobs`` (a JobManager, not started yet) a StepLock as its
    mutex, so that a POST stops before it reads its id."""
    jobs._mutex = StepLock(stepper, JOBS)   # pylint: disable=protected-access
    stepper.attach_jobs(jobs)
