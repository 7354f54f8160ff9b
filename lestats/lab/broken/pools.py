"""DELIBERATELY BROKEN thread pools, one mistake each.

Each class overrides the one method of ``lestats.pool.ThreadPool`` that it
gets wrong and keeps everything else (the counters, the snapshot with its
invariants, the events), so the live page can show it at work and the diff
against the correct method is the whole lesson.  ``variant`` is the lab's
name for it: the server's /api/pool reports it and the page shows it in red.

Where a broken method repeats lines of the correct one, it is on purpose:
the lab shows the diff, and the diff must be the mistake alone.
"""
# pylint: disable=duplicate-code,consider-using-with

import logging
import time
from typing import Any, Dict, Optional, Type

from lestats.pool import WAITING, PoolClosed, PoolFull, Task, ThreadPool, _Worker

log = logging.getLogger(__name__)


class SpinningPool(ThreadPool):
    """Idle workers ask "anything yet?" in a loop instead of sleeping on the
    Condition: the ``while q.empty(): pass`` or ``get_nowait()`` loop."""

    variant = "spin-wait"

    def _wait_for_task(self, me: _Worker) -> None:
        self._set_state(me, WAITING)
        # BROKEN: let go of the lock and take it back at once instead of wait():
        # the worker never sleeps; it spends a core asking again and again.
        self._mutex.release()
        self._mutex.acquire()
        self._counts["wakeups"] += 1


class PollingPool(ThreadPool):
    """Idle workers wake on a timer to look at the queue: the
    ``queue.get(timeout=1)`` loop (here every 50 ms, so the lab is short)."""

    variant = "poll-timeout"
    poll_seconds = 0.05

    def _wait_for_task(self, me: _Worker) -> None:
        self._going_to_wait(me)
        # BROKEN: a timeout on a wait that needs none: every worker wakes
        # every poll_seconds, forever, to find (mostly) nothing.
        self._task_ready.wait(self.poll_seconds)
        self._back_from_wait(me)


class NoDrainPool(ThreadPool):
    """Workers stop as soon as the shutdown flag is up, with tasks still
    queued: accepted jobs are never run."""

    variant = "no-drain"

    def _next_task(self, me: _Worker) -> Optional[Task]:
        while not self._tasks and not self._closed:
            self._wait_for_task(me)
        if self._closed:       # BROKEN: stops on the flag, with tasks still queued
            self._exit(me)
            return None
        return self._take(me)


class IfNotWhilePool(ThreadPool):
    """``if`` instead of ``while`` around ``wait()``: a worker woken for a
    task that another worker took first does not look again."""

    variant = "if-not-while"

    def _next_task(self, me: _Worker) -> Optional[Task]:
        if not self._tasks and not self._closed:   # BROKEN: `if`, so no re-check after waking
            self._wait_for_task(me)
        if not self._tasks:    # closed and drained: this thread is done
            self._exit(me)
            return None
        return self._take(me)


class NeverExitPool(ThreadPool):
    """Workers wait for the next task whatever happens, even after shutdown:
    ``while True: task = q.get(); task()``.  They can never exit."""

    variant = "never-exit"

    def _next_task(self, me: _Worker) -> Optional[Task]:
        while not self._tasks:   # BROKEN: the shutdown flag is not part of the predicate
            self._wait_for_task(me)
        if not self._tasks:    # closed and drained: this thread is done
            self._exit(me)
            return None
        return self._take(me)


class TaskUnderLockPool(ThreadPool):
    """Workers run each task while holding the pool's mutex: one task at a
    time, however many workers, and every submit waits for it."""

    variant = "task-under-lock"

    def _work(self, me: _Worker) -> None:
        with self._mutex:
            task = self._next_task(me)
            while task is not None:
                try:
                    task()     # BROKEN: runs with the mutex held
                except BaseException:   # pylint: disable=broad-except
                    log.exception("a task raised; the worker goes on")
                self._task_done()
                task = self._next_task(me)


class LostNotifyPool(ThreadPool):
    """``join`` waits for the "all done" notification without a predicate:
    a notification sent before it waits is lost, and it sleeps on."""

    variant = "lost-notify"

    def join(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._all_done:
            # BROKEN: no predicate: if the work finished before this wait, the
            # notify came and went, and this waits for one that never comes.
            if not self._all_done.wait(timeout):
                return False
            closed = self._closed
        return not closed or self._join_threads(deadline)


class CheckOutsideLockPool(ThreadPool):
    """``submit`` checks "shut down?" before it takes the lock that guards
    the queue: a shutdown can slip in between, and the task is queued on a
    pool whose workers have left (accepted, never run)."""

    variant = "check-outside-lock"

    def submit(self, task: Task, label: Any = None) -> int:
        if self._closed:   # BROKEN: checked before the lock, so it may be stale by the append
            raise PoolClosed("the pool is shut down")
        with self._mutex:
            if self.max_queued is not None and len(self._tasks) >= self.max_queued:
                raise PoolFull(f"{len(self._tasks)} tasks are queued already")
            self._tasks.append((label, task))
            self._unfinished += 1
            self._counts["submitted"] += 1
            self._notify(self._task_ready)
            return self._counts["submitted"]


# The variants the server may run with (--broken-pool-for-teaching NAME).
FOR_THE_SERVER: Dict[str, Type[ThreadPool]] = {
    pool.variant: pool for pool in (
        SpinningPool, PollingPool, NoDrainPool, IfNotWhilePool, NeverExitPool,
        LostNotifyPool, CheckOutsideLockPool)}

# And why the others may not.  A job takes the job layer's mutex while it
# runs, and JobManager.submit holds that mutex while it calls pool.submit:
# with the task under the pool's mutex the two lock orders cross.
NOT_FOR_THE_SERVER = {
    TaskUnderLockPool.variant: "it deadlocks the server on the first job submitted while"
                               " another runs (see python3 -m lestats lab task-under-lock)",
}
