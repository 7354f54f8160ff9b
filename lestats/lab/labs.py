"""The labs: one mistake each, run beside the correct code on the same
scenario in the same run, with the symptom measured for both.

A lab's ``run`` returns two ``Side`` records, broken first.  The harmful
interleaving is forced (see ``forcing``), so the symptom shows on every run;
where the symptom is a cost (CPU, wake-ups, time), it is measured over the
same interval for both variants.  Every wait is bounded, so a lab reports
instead of hanging.
"""

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Tuple

from lestats import cli
from lestats import files as file_helpers
from lestats.data import load
from lestats.jobs import JobManager
from lestats.pool import EXITED, ThreadPool
from lestats.storage import JobStore

from .broken import env, files, ids, pools
from .forcing import TIMEOUT, PausingCondition, Watch, held, race, slow_disk

IDLE_SECONDS = 0.3      # how long the idle labs watch an idle pool
QUEUED_AT_SHUTDOWN = 10
TASKS, TASK_SECONDS = 8, 0.025   # the throughput lab: tasks that wait (I/O), not compute
JOIN_TIMEOUT = 0.3      # what the lost-notify lab gives join()
EXIT_RULE = "a worker exits only when the pool is closed and the queue is empty"
QUESTION = "Percent of adults who like statistics"
RESULT = {"Alabama": 31.5, "Alaska": 29.25, "Arizona": 28.75, "Ohio": 33.5, "Utah": 24.25}


@dataclass(frozen=True)
class Side:
    """What one variant did in a lab's scenario: the measurement as people
    read it, whether the mistake's symptom showed, and the main number."""

    text: str
    symptom: bool
    number: float = 0.0


@dataclass(frozen=True)
class Lab:   # pylint: disable=too-many-instance-attributes
    """One mistake: what it is, where the broken and the correct code are,
    and the scenario that runs both (``run`` returns broken, correct).
    ``right`` is a piece of the line of ``correct`` that does it right;
    ``excerpt`` (lines before, after it) is what to show of ``correct``
    when ``broken`` is not an override of it (None: all of it)."""

    name: str
    summary: str
    mistake: str
    measured: str
    broken: Callable[..., Any]
    correct: Callable[..., Any]
    right: str
    run: Callable[[], Tuple[Side, Side]]
    excerpt: Optional[Tuple[int, int]] = None


# -- helpers -------------------------------------------------------------------

def _threads(pool: ThreadPool) -> List[threading.Thread]:
    return pool._threads   # pylint: disable=protected-access


def _watch(pool: ThreadPool) -> Watch:
    return pool._events   # pylint: disable=protected-access


def _stop(pool: ThreadPool) -> None:
    """Shut ``pool`` down and wait (bounded) for its threads to leave."""
    pool.shutdown()
    for thread in _threads(pool):
        thread.join(TIMEOUT)


def _settled(pool_class: type, size: int, name: str) -> ThreadPool:
    """A pool whose ``size`` workers have each run a task and are now idle
    (however the variant idles)."""
    pool = pool_class(size, name=name, events=Watch())
    everyone = threading.Barrier(size + 1)
    for _ in range(size):
        pool.submit(lambda: everyone.wait(TIMEOUT))
    everyone.wait(TIMEOUT)
    pool.join(TIMEOUT)
    return pool


def _exited(pool: ThreadPool) -> int:
    return sum(worker["state"] == EXITED for worker in pool.snapshot()["workers"])


def _exit_rule(pool: ThreadPool) -> str:
    """What the snapshot says of invariant 2, when it is broken."""
    return "" if pool.snapshot()["invariants"][EXIT_RULE] else " (invariant false)"


# -- idle workers: spinning and polling -------------------------------------------

def _idle_cost(pool_class: type) -> Tuple[float, int]:
    """Process CPU (share of one core) and pool wake-ups while two workers
    have nothing to do for IDLE_SECONDS."""
    pool = _settled(pool_class, 2, "lab-idle")
    try:
        wakeups = pool.snapshot()["counters"]["wakeups"]
        cpu = time.process_time()
        threading.Event().wait(IDLE_SECONDS)   # a fixed interval with nothing to do
        cpu = time.process_time() - cpu
        wakeups = pool.snapshot()["counters"]["wakeups"] - wakeups
    finally:
        _stop(pool)
    return cpu / IDLE_SECONDS, wakeups


def _spin_side(pool_class: type) -> Side:
    share, wakeups = _idle_cost(pool_class)
    return Side(f"{share:.0%} CPU, {wakeups:,} wake-ups", wakeups > 100, share)


def _poll_side(pool_class: type) -> Side:
    wakeups = _idle_cost(pool_class)[1]
    return Side(f"{wakeups} wake-ups", wakeups >= 2, wakeups)


def run_spin() -> Tuple[Side, Side]:
    """Spinning pool, then the correct one, each idle for IDLE_SECONDS."""
    return _spin_side(pools.SpinningPool), _spin_side(ThreadPool)


def run_poll() -> Tuple[Side, Side]:
    """Polling pool, then the correct one, each idle for IDLE_SECONDS."""
    return _poll_side(pools.PollingPool), _poll_side(ThreadPool)


# -- shutdown: drain, exit ---------------------------------------------------------

def _drain_side(pool_class: type) -> Side:
    """One worker busy, QUEUED_AT_SHUTDOWN tasks queued, then shutdown."""
    pool = pool_class(1, name="lab-drain", events=Watch())
    gate, ran = threading.Event(), []
    pool.submit(lambda: gate.wait(TIMEOUT))
    for number in range(QUEUED_AT_SHUTDOWN):
        pool.submit(lambda number=number: ran.append(number))   # read after the joins below
    pool.shutdown()
    gate.set()
    for thread in _threads(pool):   # both variants' workers leave
        thread.join(TIMEOUT)
    lost = QUEUED_AT_SHUTDOWN - len(ran)
    return Side(f"{lost} of {QUEUED_AT_SHUTDOWN} lost{_exit_rule(pool)}", lost > 0, lost)


def run_no_drain() -> Tuple[Side, Side]:
    """Shutdown with jobs queued: the pool that stops on the flag, then the correct one."""
    return _drain_side(pools.NoDrainPool), _drain_side(ThreadPool)


def _exit_side(pool_class: type) -> Side:
    """Two idle workers; shutdown; each one woken either leaves or waits again."""
    pool = _settled(pool_class, 2, "lab-exit")
    pool.shutdown()
    _watch(pool).until(pool, lambda: pool._woken == 0)   # pylint: disable=protected-access
    alive = 2 - _exited(pool)
    if not alive:
        _stop(pool)
    # Otherwise the workers stay behind: daemon threads asleep on the
    # Condition for the rest of the process (no CPU; that is the lesson).
    return Side(f"{alive} of 2 alive", alive > 0, alive)


def run_never_exit() -> Tuple[Side, Side]:
    """Shutdown of an idle pool: workers that ignore the flag, then the correct ones."""
    return _exit_side(pools.NeverExitPool), _exit_side(ThreadPool)


# -- if instead of while -------------------------------------------------------------

def _stolen_wakeup_side(pool_class: type) -> Side:
    """Two workers.  The idle one is woken for a task but stopped before it
    looks (PausingCondition); the busy one finishes its own task and takes
    the new one first; then the woken one looks and finds the queue empty."""
    pool = held(pool_class)(2, name="lab-wakeup", events=Watch())
    ready = PausingCondition(pool._mutex)   # pylint: disable=protected-access
    pool._task_ready = ready                # pylint: disable=protected-access
    pool.go.set()
    watch = _watch(pool)
    watch.idle(pool, 2)
    gate, running, taken = threading.Event(), threading.Event(), threading.Event()
    pool.submit(lambda: (running.set(), gate.wait(TIMEOUT)))
    running.wait(TIMEOUT)
    watch.idle(pool, 1)
    with pool._mutex:   # pylint: disable=protected-access
        ready.arm()
    pool.submit(taken.set)
    ready.pause.reached.wait(TIMEOUT)   # woken, lock let go, not looked yet
    gate.set()                          # the busy worker takes the task first
    taken.wait(TIMEOUT)
    ready.pause.release.set()           # the woken worker looks: nothing there
    pool.join(TIMEOUT)
    watch.until(pool, lambda: pool._woken == 0)   # pylint: disable=protected-access
    left = 2 - _exited(pool)
    rule = _exit_rule(pool)
    _stop(pool)
    return Side(f"{left} of 2 left{rule}", left < 2, left)


def run_if_not_while() -> Tuple[Side, Side]:
    """The stolen wake-up, forced: `if` around wait(), then `while`."""
    return _stolen_wakeup_side(pools.IfNotWhilePool), _stolen_wakeup_side(ThreadPool)


# -- a task run under the lock ---------------------------------------------------------

class _Overlap:
    """Tasks that wait (like I/O: they let go of the GIL) and count how
    many of them run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()   # guards running and peak
        self.running = 0
        self.peak = 0

    def task(self) -> None:
        """Wait TASK_SECONDS, counted as running meanwhile."""
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(TASK_SECONDS)   # the task's own work, not a wait for a state
        with self._lock:
            self.running -= 1


def _timed(pool_class: type, size: int) -> Tuple[float, int]:
    """Seconds to run TASKS tasks on ``size`` workers, and the most at once."""
    pool = pool_class(size, name="lab-speed")
    overlap = _Overlap()
    began = time.monotonic()
    for _ in range(TASKS):
        pool.submit(overlap.task)
    pool.join(TIMEOUT)
    elapsed = time.monotonic() - began
    _stop(pool)
    return elapsed, overlap.peak


def _speedup_side(pool_class: type) -> Side:
    one, _ = _timed(pool_class, 1)
    four, peak = _timed(pool_class, 4)
    speedup = one / four
    return Side(f"{speedup:.1f}x, {peak} at once", peak < 2, speedup)


def run_task_under_lock() -> Tuple[Side, Side]:
    """Throughput of 4 workers against 1: the task under the lock, then not."""
    return _speedup_side(pools.TaskUnderLockPool), _speedup_side(ThreadPool)


# -- a notification sent before anyone waits --------------------------------------------

def _join_side(pool_class: type) -> Side:
    """A task runs and finishes (the "all done" notify goes to nobody),
    then join() is called with JOIN_TIMEOUT."""
    pool = pool_class(1, name="lab-join", events=Watch())
    pool.submit(lambda: None)
    _watch(pool).until(pool, lambda: (pool._unfinished == 0   # pylint: disable=protected-access
                                      and pool._idle == 1))      # pylint: disable=protected-access
    began = time.monotonic()
    finished = pool.join(JOIN_TIMEOUT)
    waited = time.monotonic() - began
    _stop(pool)
    return Side(f"{finished} after {waited:.2f} s", not finished, waited)


def run_lost_notify() -> Tuple[Side, Side]:
    """join() after the work is done: a bare wait(), then wait_for(predicate)."""
    return _join_side(pools.LostNotifyPool), _join_side(ThreadPool)


# -- the shutdown check outside the enqueue lock -----------------------------------------

def _shutdown_race_side(pool_class: type) -> Side:
    """A submit reads "shut down?" and is stopped right there; meanwhile the
    pool is shut down and its workers leave; then the submit goes on."""
    pool = pool_class(1, name="lab-closed", events=Watch())
    _watch(pool).idle(pool, 1)
    ran = threading.Event()
    # The shutdown counts as done once the workers have left (or it waits for
    # the lock the stopped submit holds, and the submit goes on first).
    submitted, _ = race(lambda: pool.submit(ran.set), lambda: _stop(pool), pool, "_closed",
                        pool._mutex)   # pylint: disable=protected-access
    if submitted.error is not None:
        return Side("refused", False)
    if ran.is_set():
        return Side("accepted and run", False)
    return Side("accepted, never run", True, 1)


def run_check_outside_lock() -> Tuple[Side, Side]:
    """The forced shutdown race: the check before the lock, then under it."""
    return _shutdown_race_side(pools.CheckOutsideLockPool), _shutdown_race_side(ThreadPool)


# -- job ids ------------------------------------------------------------------------------

def _ids_side(first: Any, second: Any) -> Side:
    given = [first.value, second.value]
    repeats = len(given) - len(set(given))
    text = f"{given[0]} twice" if repeats else ", ".join(map(str, given))
    return Side(text, repeats > 0, repeats)


def _job_manager(directory: str) -> JobManager:
    """A real JobManager on a one-row CSV in ``directory``, with one worker."""
    data = os.path.join(directory, "one.csv")
    with open(data, "w", encoding="utf-8") as out:
        out.write("Question,LocationDesc,Data_Value,StratificationCategory1,Stratification1\n"
                  f"{QUESTION},Ohio,1,Total,Total\n")
    manager = JobManager(load(data), ThreadPool(1, name="lab-jobs"),
                         JobStore(os.path.join(directory, "results")))
    manager.start()
    return manager


def run_unlocked_ids() -> Tuple[Side, Side]:
    """Two requests take an id at once; the first is stopped right after it
    reads the counter: the unlocked counter, then JobManager.submit."""
    counter = ids.UnlockedIds()
    broken = _ids_side(*race(counter.next_id, counter.next_id, counter, "_counter"))
    with tempfile.TemporaryDirectory(prefix="lestats-lab-") as directory:
        jobs = _job_manager(directory)
        try:
            def submit() -> str:
                return jobs.submit("global_mean", {"question": QUESTION})
            correct = _ids_side(*race(submit, submit, jobs, "_next",
                                      jobs._mutex))   # pylint: disable=protected-access
        finally:
            jobs.shutdown()
            jobs.drain(TIMEOUT)
            jobs.close()
    return broken, correct


# -- TP_NUM_OF_THREADS -----------------------------------------------------------------------

def _workers_side(start: Callable[[Mapping[str, str]], int]) -> Side:
    try:
        count = start({"TP_NUM_OF_THREADS": "4"})
    except Exception as exc:   # pylint: disable=broad-except
        return Side(f"{type(exc).__name__}: {exc}", True)
    return Side(f"{count} workers", False, count)


def _broken_start(environ: Mapping[str, str]) -> int:
    return len(env.worker_threads(environ, lambda: None))


def _correct_start(environ: Mapping[str, str]) -> int:
    pool = ThreadPool(cli.worker_count(None, environ), name="lab-env")
    _stop(pool)
    return pool.size


def run_env_string() -> Tuple[Side, Side]:
    """Start-up with TP_NUM_OF_THREADS=4: the string as it comes, then cli.worker_count."""
    return _workers_side(_broken_start), _workers_side(_correct_start)


# -- a result file written in place --------------------------------------------------------------

def _half_read_side(write: Callable[[str, int, bytes], None]) -> Side:
    """The writer is stopped after half of the result is written; meanwhile
    a reader opens the result, as get_results does."""
    answer = json.dumps(RESULT).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="lestats-lab-") as directory:
        store = JobStore(directory)
        with slow_disk((file_helpers,), "lab-writer") as pause:   # write_all
            writer = threading.Thread(target=write, args=(directory, 1, answer),
                                      name="lab-writer")
            writer.start()
            pause.reached.wait(TIMEOUT)
            try:
                seen: Optional[bytes] = store.read_result(1)
            except FileNotFoundError:
                seen = None   # get_results: still running
            pause.release.set()
            writer.join(TIMEOUT)
        whole = store.read_result(1) == answer
    if seen is None:
        return Side(f"no file, then {len(answer)} bytes" if whole else "no file", not whole)
    valid = seen == answer
    return Side(f"{len(seen)} of {len(answer)} bytes{'' if valid else ', not JSON'}",
                not valid, len(seen))


def run_write_in_place() -> Tuple[Side, Side]:
    """A reader during a stopped write: in place, then temp file + rename."""
    def correct(directory: str, number: int, answer: bytes) -> None:
        JobStore(directory).write_result(number, answer)
    return (_half_read_side(files.write_result_in_place), _half_read_side(correct))


# -- the labs -------------------------------------------------------------------------------------

LABS: Tuple[Lab, ...] = (
    Lab("spin-wait", "idle workers spin on the queue instead of sleeping",
        "Waiting by asking again and again (`while q.empty(): pass`, a loop on"
        " get_nowait()): 11 of the 53 solutions read.  An idle server burns a core"
        " and slows every other thread down, since the spinners hold the GIL.  Wait"
        " on a Condition instead: a waiting thread costs nothing until notified.",
        f"idle {IDLE_SECONDS} s: CPU, wake-ups",
        pools.SpinningPool._wait_for_task, ThreadPool._wait_for_task,   # pylint: disable=protected-access
        "self._task_ready.wait()", run_spin),
    Lab("poll-timeout", "idle workers wake on a timer to look at the queue",
        "Waiting with a timeout that nothing needs (`q.get(timeout=1)` in a loop): 17"
        " of 53.  Each worker wakes every second, forever, to find nothing; on a"
        " laptop that keeps the CPU out of its sleep states.  The lab polls every"
        " 50 ms to be short: the count scales with 1/timeout.  A notified wait"
        " needs no timeout.",
        f"idle {IDLE_SECONDS} s: wake-ups",
        pools.PollingPool._wait_for_task, ThreadPool._wait_for_task,   # pylint: disable=protected-access
        "self._task_ready.wait()", run_poll),
    Lab("no-drain", "workers stop on the shutdown flag with jobs still queued",
        "Stopping as soon as the flag is up (`if shutting_down: break` before taking"
        " the next job): 9 of 53.  Every job accepted before the shutdown must still"
        " run, and graceful_shutdown must be able to say \"done\": a worker may leave"
        " only when the flag is up AND the queue is empty.",
        f"shutdown, {QUEUED_AT_SHUTDOWN} queued: lost",
        pools.NoDrainPool._next_task, ThreadPool._next_task,   # pylint: disable=protected-access
        "if not self._tasks:", run_no_drain),
    Lab("never-exit", "workers wait for work forever, even after shutdown",
        "A worker loop with no way out (`while True: job = q.get(); ...`): 7 of 53."
        "  After shutdown the workers sleep on, join() never returns, and the"
        " process only ends because the threads are daemons (or never).  The flag"
        " belongs in the predicate of the wait, and shutdown must notify_all.",
        "shutdown: workers alive",
        pools.NeverExitPool._next_task, ThreadPool._next_task,   # pylint: disable=protected-access
        "while not self._tasks and not self._closed:", run_never_exit),
    Lab("if-not-while", "`if` instead of `while` around wait()",
        "A Condition wakes a thread, but another thread may run first and take what"
        " it was woken for (or the wake-up is spurious, as POSIX allows).  With `if`"
        " the woken worker goes on as if there were a task: here it finds none and"
        " quits, and the pool is a worker short for good (with a bare pop() it would"
        " crash).  `while not predicate: wait()` looks again.",
        "empty wake-up: workers left",
        pools.IfNotWhilePool._next_task, ThreadPool._next_task,   # pylint: disable=protected-access
        "while not self._tasks and not self._closed:", run_if_not_while),
    Lab("task-under-lock", "each task runs while the worker holds the pool's lock",
        "Running the job inside `with lock:` (1 of 53).  Only one job runs at a time"
        " however many workers there are, every submit waits for the running job,"
        " and with the job layer's own lock the two lock orders cross: the server"
        " deadlocks (so --broken-pool-for-teaching does not offer this one).  Hold"
        " the lock to take a task, never to run it.",
        f"{TASKS} waits of {TASK_SECONDS * 1000:.0f} ms: 4 workers vs 1",
        pools.TaskUnderLockPool._work, ThreadPool._work,   # pylint: disable=protected-access
        "task()", run_task_under_lock),
    Lab("lost-notify", "a notify sent before the waiter waits is lost",
        "Waiting on a Condition without a predicate: the notify is not remembered,"
        " so if the work finished before join() began to wait, join() sleeps until"
        " its timeout (here 0.3 s; with none, forever) and then says \"not done\"."
        "  Wait for a state (wait_for(predicate)), not for a notification.",
        "join() after the work is done",
        pools.LostNotifyPool.join, ThreadPool.join,
        "wait_for(lambda: self._unfinished == 0", run_lost_notify),
    Lab("check-outside-lock", "\"shutting down?\" checked outside the lock that enqueues",
        "Every solution read in full checks the shutdown flag, then takes the lock"
        " and queues the job.  A shutdown can slip in between: the workers see an"
        " empty queue and leave, then the job is queued, accepted and never run."
        "  The check and the enqueue must be one step under one lock.",
        "shutdown between check and enqueue",
        pools.CheckOutsideLockPool.submit, ThreadPool.submit,
        "if self._closed:", run_check_outside_lock),
    Lab("unlocked-ids", "job ids from a counter that no lock guards",
        "`self.counter += 1` is read, add, write: two request threads can both read"
        " the same value (3 of 53).  Two jobs get one id, one result overwrites the"
        " other.  Take the id under the lock that also queues the job.",
        "ids of two requests at once",
        ids.UnlockedIds.next_id, JobManager.submit,
        "number = self._next", run_unlocked_ids, (2, 2)),
    Lab("env-string", "TP_NUM_OF_THREADS used as the string it is",
        "os.environ values are strings: `range(os.environ.get('TP_NUM_OF_THREADS',"
        " cpu_count))` works while the variable is unset and crashes as soon as the"
        " checker sets it (9 of 53).  Convert it, and say what is wrong when it is"
        " not a whole number >= 1.",
        "start with TP_NUM_OF_THREADS=4",
        env.worker_threads, cli.worker_count,
        "count = int(text)", run_env_string, (4, 5)),
    Lab("write-in-place", "a result file written under its final name",
        "Writing the result straight to job_id_N.json (52 of 53): a reader that"
        " opens it during the write (get_results, or the next start after a crash)"
        " gets half a file.  Write a temporary file, then rename it into place:"
        " rename replaces the name in one step, so it holds nothing or everything.",
        "what a reader sees mid-write",
        files.write_result_in_place, JobStore.write_result,
        "os.replace(temp", run_write_in_place),
)


def find(name: str) -> Optional[Lab]:
    """The lab called ``name``, or None."""
    return next((lab for lab in LABS if lab.name == name), None)
