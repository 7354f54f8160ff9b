"""A fixed-size thread pool built on one mutex and two Conditions.

This is the pool a student would write after reading CPython's
``Lib/queue.py``: one lock guards all shared state, and each Condition made
on that lock stands for one thing a thread can wait for.  Every wait sits in
``while not predicate: wait()``, because a Condition may wake a thread that
then finds the predicate false again (another thread got there first, or the
wake-up was spurious); the loop re-checks under the lock before going on.
"""

import logging
import threading
from collections import deque
from typing import Callable, Deque, List, Optional

log = logging.getLogger(__name__)

Task = Callable[[], None]


class PoolClosed(RuntimeError):
    """``submit`` was called after ``shutdown``: the task was not accepted."""


class ThreadPool:
    """Runs submitted tasks on ``size`` threads created once, in ``__init__``.

    Invariants, true whenever ``_mutex`` is free:

    * ``_unfinished == len(_tasks) + (number of tasks being run)``: a task
      counts from the moment ``submit`` accepts it until it has returned.
    * once ``_closed`` is True it stays True, and ``_tasks`` only shrinks:
      nothing is accepted after ``shutdown``, and everything accepted before
      it is still run (a drain, not a cancel).
    * a worker thread exits only when ``_closed`` and ``_tasks`` is empty, so
      the last queued task always has a thread to run it.

    No task runs while ``_mutex`` is held: a worker takes the mutex only to
    pop a task and to count it finished.  A task that raises is logged and
    counted as finished; its worker lives on, so the pool keeps its size.
    """

    def __init__(self, size: int, name: str = "lestats-worker"):
        if size < 1:
            raise ValueError("a pool needs at least one thread")
        # Guards _tasks, _unfinished and _closed.  Held only for a few
        # bytecodes at a time; never while a task runs.
        self._mutex = threading.Lock()
        # Notified when a task is added or the pool is closed: a worker
        # waits on it while there is nothing to run.
        self._task_ready = threading.Condition(self._mutex)
        # Notified when _unfinished drops to zero: join() waits on it.
        self._all_done = threading.Condition(self._mutex)
        self._tasks: Deque[Task] = deque()
        self._unfinished = 0
        self._closed = False
        self._threads: List[threading.Thread] = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(1, size + 1)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        """The number of worker threads (fixed at creation)."""
        return len(self._threads)

    def submit(self, task: Task) -> None:
        """Queue ``task`` to run on a worker; raise PoolClosed after shutdown."""
        with self._mutex:
            if self._closed:
                raise PoolClosed("the pool is shut down")
            self._tasks.append(task)
            self._unfinished += 1
            self._task_ready.notify()

    def unfinished(self) -> int:
        """Tasks accepted and not yet finished (queued or running)."""
        with self._mutex:
            return self._unfinished

    def shutdown(self) -> None:
        """Accept no more tasks; the queued ones still run.  Idempotent,
        returns at once: call ``join`` to wait for the drain."""
        with self._mutex:
            self._closed = True
            # Every idle worker must wake, see _closed and decide to exit.
            self._task_ready.notify_all()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted task has finished; after ``shutdown``
        also wait for the worker threads to exit.  Return False on timeout."""
        with self._all_done:
            # wait_for is the `while not predicate: wait()` loop, with a deadline.
            if not self._all_done.wait_for(lambda: self._unfinished == 0, timeout):
                return False
            closed = self._closed
        if closed:
            for thread in self._threads:
                thread.join()   # quick: the queue is empty and closed
        return True

    def _work(self) -> None:
        while True:
            with self._task_ready:
                while not self._tasks and not self._closed:
                    self._task_ready.wait()
                if not self._tasks:   # closed and drained: this thread is done
                    return
                task = self._tasks.popleft()
            try:
                task()
            except Exception:   # pylint: disable=broad-except
                log.exception("a task raised; the worker goes on")
            with self._mutex:
                self._unfinished -= 1
                if self._unfinished == 0:
                    self._all_done.notify_all()
