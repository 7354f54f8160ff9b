"""The Lock and Conditions of step mode, and how a server's pool and job
layer get them.

``StepLock`` wraps a real lock and ``StepCondition`` is a Condition on it;
while step mode is on they hand each use to the ``Stepper``: taking the
Lock, ``wait()``, the wake-up, ``notify`` and ``notify_all`` are points
where a thread may stop.

``steppable(pool_class)`` is the pool class of a server: the same class
(the correct pool, or a broken pool of the lab) whose Conditions are
StepConditions and whose ``_take`` and ``_task_done`` (helpers pool.py
names; no broken pool overrides them) are points too, as is running a
task (``_exit`` tells step mode a worker has left).  ``steppable_jobs``
does the same for a job manager's Lock.

What step mode costs while it is off: the pool's and the job layer's
``_mutex`` are their real locks, untouched; ``Stepper.start`` puts a
StepLock *over the same real lock* in their place, and ``run`` puts the
real one back.  A thread that read either one holds the same lock, so the
swap needs no care.  The Conditions cannot be swapped (threads sleep on
them), so they are StepConditions from the start: one flag test
(``Stepper.flag``) per notify and wake-up, as is each of the two helpers.
"""

import threading
from typing import Any, Callable, Dict

from .step import Stepper
from .stepthread import DONE, JOBS, NOTIFY, NOTIFY_ALL, POOL, RUN, TAKE


class StepLock:
    """A Lock whose users may stop, in step mode, before taking it.

    ``raw`` is the real lock it wraps.  ``name`` says which it is to the
    stepper (POOL or JOBS).  ``_is_owned`` is what ``threading.Condition`` asks;
    the Lock keeps no owner (neither does ``threading.Lock``)."""

    def __init__(self, stepper: Stepper, name: str, raw: Any):
        self.raw = raw
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
    letting go of the Lock: the WAIT point) and ``_acquire_restore``
    (taking it back on waking), the two hooks the standard Condition calls
    on its lock, so the wake-up can stop *before* the Lock is taken back.  ``_every`` is True
    while ``notify_all`` runs (it calls ``notify``); it is guarded by the
    Lock, which every notifier holds."""

    def __init__(self, lock: StepLock, name: str):
        super().__init__(lock)   # type: ignore[arg-type]
        self.name = name
        self._step_lock = lock
        self._stepper = lock._stepper   # pylint: disable=protected-access
        self._stepping = self._stepper.flag
        self._every = False

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
            # until the Conditions below are in place.
            super().__init__(size, **options)
            raw = self._mutex
            lock = StepLock(stepper, POOL, raw)
            self._task_ready = StepCondition(lock, "task_ready")
            self._all_done = StepCondition(lock, "all_done")
            stepper.attach_pool(self, raw, _swap(self, lock))
            self._installed.set()

        def _work(self, me: Any) -> None:
            self._installed.wait()
            super()._work(me)

        def _take(self, me: Any) -> Callable[[], None]:
            if not self._stepping.is_set():
                return super()._take(me)
            lock = self._task_ready._lock   # pylint: disable=protected-access
            self.stepper.point(TAKE, lock)
            return _stopping_before(super()._take(me), self.stepper, lock)

        def _task_done(self) -> None:
            if self._stepping.is_set():
                self.stepper.point(DONE, self._task_ready._lock)   # pylint: disable=protected-access
            super()._task_done()

        def _exit(self, me: Any) -> None:
            super()._exit(me)
            if self._stepping.is_set():
                self.stepper.exited()

        def snapshot(self) -> Dict[str, Any]:
            """In step mode, without waiting for a thread stopped holding the Lock."""
            stepped = self.stepper.pool_snapshot() if self._stepping.is_set() else None
            return stepped if stepped is not None else super().snapshot()

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
    """Let step mode put a StepLock over ``jobs``' (a JobManager's) real
    mutex while it is on, so that a POST stops before it reads its id."""
    lock = StepLock(stepper, JOBS, jobs._mutex)   # pylint: disable=protected-access
    stepper.attach_jobs(jobs, lock.raw, _swap(jobs, lock))


def _swap(owner: Any, lock: StepLock) -> Callable[[bool], None]:
    """``swap(on)``: ``owner._mutex`` is ``lock`` while step mode is on,
    else the real lock ``lock`` wraps (see the module)."""
    def swap(on: bool) -> None:
        owner._mutex = lock if on else lock.raw   # pylint: disable=protected-access
    return swap
