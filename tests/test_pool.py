"""The thread pool: each invariant of its docstring, each promise of its
methods, and the interleavings that would break them, forced with Events,
Barriers and switch points (see lestats/lab/forcing.py), never hoped for."""

import logging
import threading
import time

import pytest

from lestats.pool import PoolClosed, PoolFull, ThreadPool

from lestats.lab.forcing import (TIMEOUT, PausingCondition, Watch, WatchedLock, in_thread,
                                 in_threads, pause_after_read, voluntary_switches)


def watched_pool(size, name, pool_class=ThreadPool, **options):
    """A pool with a Watch as its events sink."""
    return pool_class(size, name=name, events=Watch(), **options)


@pytest.fixture
def pool():
    pool = watched_pool(3, "test-pool")
    yield pool
    pool.shutdown()
    pool.join(timeout=TIMEOUT)


def threads_named(prefix):
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def wait_until_idle(pool, count):
    """Wait until ``count`` workers wait for a task (no polling: see Watch)."""
    assert pool._events.idle(pool, count), f"not {count} workers idle"   # pylint: disable=protected-access


def assert_runs_a_task(pool):
    """A task submitted now runs (the pool still has a worker for it)."""
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(TIMEOUT)


# -- what every caller relies on ----------------------------------------------

def test_every_submitted_task_runs_once(pool):
    ran = []
    for i in range(500):
        pool.submit(lambda i=i: ran.append(i))   # list.append is atomic
    assert pool.join(timeout=TIMEOUT)
    assert sorted(ran) == list(range(500))
    assert pool.unfinished() == 0


def test_a_task_submitted_to_an_idle_pool_wakes_a_worker():
    pool = watched_pool(2, "idle-submit")
    try:
        wait_until_idle(pool, 2)
        assert_runs_a_task(pool)
    finally:
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


def test_threads_are_created_once_and_reused(pool):
    before = {t.ident for t in threads_named("test-pool")}
    seen = set()
    for _ in range(100):
        pool.submit(lambda: seen.add(threading.get_ident()))
    assert pool.join(timeout=TIMEOUT)
    after = {t.ident for t in threads_named("test-pool")}
    assert pool.size == 3 and len(before) == 3
    assert before == after and seen <= before


def test_submit_returns_tickets_in_queue_order_and_taken_counts_from_the_front():
    pool = watched_pool(1, "tickets")
    gate = threading.Event()
    try:
        assert pool.submit(gate.wait) == 1
        assert [pool.submit(lambda: None) for _ in range(3)] == [2, 3, 4]
    finally:
        gate.set()
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)
    assert pool.taken() == 4


def test_unfinished_counts_queued_and_running_tasks(pool):
    gate = threading.Event()
    started = threading.Barrier(4)   # the 3 workers and this test

    def blocked():
        started.wait(timeout=TIMEOUT)
        gate.wait(timeout=TIMEOUT)

    for _ in range(3):
        pool.submit(blocked)
    started.wait(timeout=TIMEOUT)   # all three are running now
    pool.submit(lambda: None)
    assert pool.unfinished() == 4 and pool.queued() == 1
    assert not pool.join(timeout=0.05)
    gate.set()
    assert pool.join(timeout=TIMEOUT)
    assert pool.unfinished() == 0


def test_a_failing_task_is_logged_counted_finished_and_the_worker_survives(pool, caplog):
    def boom():
        raise ZeroDivisionError("boom")

    with caplog.at_level(logging.ERROR, logger="lestats.pool"):
        for _ in range(6):
            pool.submit(boom)
        assert pool.join(timeout=TIMEOUT)
    failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert len(failures) == 6
    assert len(threads_named("test-pool")) == 3
    assert_runs_a_task(pool)


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_task_raising_a_base_exception_does_not_kill_its_worker(error, caplog):
    pool = watched_pool(1, "base-exception")

    def task():
        raise error

    try:
        with caplog.at_level(logging.ERROR, logger="lestats.pool"):
            pool.submit(task)
            assert pool.join(timeout=TIMEOUT)   # counted finished
        assert len(threads_named("base-exception")) == 1
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(timeout=TIMEOUT)
    finally:
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


# -- shutdown and join ----------------------------------------------------------

def test_shutdown_drains_queued_tasks_then_the_threads_exit():
    pool = watched_pool(1, "drain-pool")
    gate = threading.Event()
    ran = []
    pool.submit(gate.wait)
    for i in range(10):
        pool.submit(lambda i=i: ran.append(i))
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(lambda: ran.append("late"))
    gate.set()
    assert pool.join(timeout=TIMEOUT)
    assert ran == list(range(10))
    assert not threads_named("drain-pool")


def test_shutdown_wakes_every_idle_worker_and_is_idempotent():
    pool = watched_pool(4, "idle-pool")
    wait_until_idle(pool, 4)
    pool.shutdown()
    pool.shutdown()
    assert pool.join(timeout=TIMEOUT)
    assert not threads_named("idle-pool")
    assert all(w["state"] == "exited" for w in pool.snapshot()["workers"])


def test_every_thread_waiting_in_join_returns(pool):
    gate = threading.Event()
    pool.submit(gate.wait)
    results = []
    joiners = [threading.Thread(target=lambda: results.append(pool.join(timeout=TIMEOUT)))
               for _ in range(3)]
    for joiner in joiners:
        joiner.start()
    gate.set()
    for joiner in joiners:
        joiner.join(timeout=TIMEOUT + 1)
    assert results == [True, True, True]


def test_join_on_an_idle_pool_returns_true_at_once(pool):
    assert pool.join(timeout=TIMEOUT)
    assert pool.join(timeout=0)


def test_join_returns_within_its_timeout_even_after_shutdown():
    pool = watched_pool(2, "stuck-pool")
    gate = threading.Event()
    try:
        pool.submit(gate.wait)
        pool.shutdown()
        began = time.monotonic()
        assert not pool.join(timeout=0.2)
        assert time.monotonic() - began < 2.0
    finally:
        gate.set()
    assert pool.join(timeout=TIMEOUT)


def test_joins_deadline_covers_the_wait_for_the_threads_too():
    """After shutdown, join also waits for the threads to exit: within the
    same deadline, even if one of them does not."""
    pool = watched_pool(1, "deadline")
    pool.shutdown()
    stuck = threading.Event()
    straggler = threading.Thread(target=stuck.wait, args=(TIMEOUT,), daemon=True)
    straggler.start()
    pool._threads.append(straggler)   # pylint: disable=protected-access
    try:
        began = time.monotonic()
        assert not pool.join(timeout=0.2)
        assert time.monotonic() - began < 2.0
    finally:
        stuck.set()


def test_a_full_queue_refuses_and_the_invariant_holds():
    pool = watched_pool(1, "full-pool", max_queued=2)
    gate = threading.Event()
    started = threading.Event()
    try:
        pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
        assert started.wait(TIMEOUT)
        pool.submit(lambda: None)
        pool.submit(lambda: None)
        with pytest.raises(PoolFull):
            pool.submit(lambda: None)
        snapshot = pool.snapshot()
        assert snapshot["queued"] == 2 and all(snapshot["invariants"].values())
    finally:
        gate.set()
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


def test_make_room_raises_the_limit_for_tasks_that_must_not_be_refused():
    pool = watched_pool(1, "room-pool", max_queued=2)
    gate, started = threading.Event(), threading.Event()
    try:
        assert not pool.make_room(2)
        assert pool.make_room(4)
        pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
        assert started.wait(TIMEOUT)
        for _ in range(4):
            pool.submit(lambda: None)
        with pytest.raises(PoolFull):
            pool.submit(lambda: None)
        assert all(pool.snapshot()["invariants"].values())
    finally:
        gate.set()
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


# -- waiting: no spinning, no lost or wasted wake-ups ---------------------------

def test_an_idle_pool_sleeps(pool):
    """Idle workers wait on the Condition: no CPU, no wake-ups, no timed waits."""
    wait_until_idle(pool, 3)
    workers = threads_named("test-pool")
    switches = [voluntary_switches(t) for t in workers]
    wakeups = pool.snapshot()["counters"]["wakeups"]
    cpu = time.process_time()
    idle = threading.Event()
    idle.wait(0.3)   # the test itself sleeps; the pool must not wake
    assert time.process_time() - cpu < 0.05
    assert pool.snapshot()["counters"]["wakeups"] == wakeups
    if None not in switches:   # Linux, Python 3.8+: the kernel's own count
        # At most the one sleep of a worker that had just counted itself idle
        # (a worker polling every 10 ms would sleep some 30 times).
        after = [voluntary_switches(t) for t in workers]
        assert all(now - before <= 1 for before, now in zip(switches, after)), (switches, after)


class HeldPool(ThreadPool):
    """A pool whose workers start only once ``go`` is set, so that a test can
    put a Condition of its own in place first."""

    def __init__(self, *args, **kwargs):
        self.go = threading.Event()
        super().__init__(*args, **kwargs)

    def _work(self, me):
        self.go.wait(TIMEOUT)
        super()._work(me)


def with_watched_lock(pool, switch):
    """Give a HeldPool (workers not started) a WatchedLock and its Conditions."""
    mutex = pool._mutex = WatchedLock(switch)   # pylint: disable=protected-access
    pool._task_ready = threading.Condition(mutex)   # pylint: disable=protected-access
    pool._all_done = threading.Condition(mutex)   # pylint: disable=protected-access


def test_a_wake_up_that_finds_the_queue_empty_waits_again():
    """Two workers.  One is woken for a task, but the other, finishing its
    own task, takes that one first.  The woken worker must re-check and wait
    again: the `while` loop doing its job (with an `if` it would run on, or
    leave the pool a worker short)."""
    pool = watched_pool(2, "empty-wake", HeldPool)
    ready = pool._task_ready = PausingCondition(pool._mutex)   # pylint: disable=protected-access
    pool.go.set()
    wait_until_idle(pool, 2)
    first_gate, first_running, ran = threading.Event(), threading.Event(), []
    pool.submit(lambda: (first_running.set(), first_gate.wait(TIMEOUT)))
    assert first_running.wait(TIMEOUT)
    wait_until_idle(pool, 1)                  # one busy, one waiting
    second_ran = threading.Event()
    with pool._mutex:   # pylint: disable=protected-access
        ready.arm()                           # the worker woken next stops before its re-check
    pool.submit(lambda: (ran.append(threading.current_thread().name), second_ran.set()))
    assert ready.pause.reached.wait(TIMEOUT)  # woken, lock let go, not yet re-checked
    first_gate.set()                          # the busy worker finishes and takes the task
    assert second_ran.wait(TIMEOUT)
    ready.pause.release.set()                 # the woken worker re-checks: nothing to do
    try:
        assert pool.join(timeout=TIMEOUT)
        wait_until_idle(pool, 2)
        snapshot = pool.snapshot()
        assert len(ran) == 1
        assert snapshot["counters"]["empty_wakeups"] == 1
        assert [w["state"] for w in snapshot["workers"]] == ["waiting", "waiting"]
        assert all(snapshot["invariants"].values()), snapshot["invariants"]
        assert_runs_a_task(pool)
    finally:
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


class SpuriousFor(PausingCondition):
    """A Condition on which the first wait of the thread called ``name`` ends
    when ``spurious`` is set, with no notify (as POSIX allows); that thread
    is not among the Condition's waiters meanwhile, so a notify wakes
    another.  Other waits are PausingCondition's."""

    def __init__(self, lock, name):
        super().__init__(lock)
        self.name = name
        self.spurious = threading.Event()
        self.asleep = threading.Event()

    def wait(self, timeout=None):
        if threading.current_thread().name != self.name or self.asleep.is_set():
            return super().wait(timeout)
        self.asleep.set()
        self.release()
        try:
            self.spurious.wait(TIMEOUT)
        finally:
            self.acquire()
        return True


def test_a_spurious_wake_up_while_a_notify_is_on_its_way_keeps_the_counts_true():
    """Both workers sleep; a task's notify wakes worker 1, but before it has
    the lock back, worker 2 wakes with no notify at all and takes the task.
    Worker 1 then finds nothing and waits again.  No count may go negative
    and every invariant must hold: the model of who was woken is about
    counts, not about which thread."""
    pool = watched_pool(2, "spurious", HeldPool)
    ready = pool._task_ready = SpuriousFor(pool._mutex, "spurious-2")   # pylint: disable=protected-access
    pool.go.set()
    wait_until_idle(pool, 2)
    assert ready.asleep.wait(TIMEOUT)
    ran = []
    with pool._mutex:   # pylint: disable=protected-access
        ready.arm()                           # worker 1, once woken, stops before its re-check
    pool.submit(lambda: ran.append(threading.current_thread().name))
    assert ready.pause.reached.wait(TIMEOUT)
    ready.spurious.set()                      # worker 2 wakes for nothing it was told of
    try:
        assert pool.join(timeout=TIMEOUT)     # ... and runs the task
        ready.pause.release.set()             # worker 1 re-checks: nothing to do
        assert pool._events.seen(pool, 1, "worker_wake", worker="spurious-1")   # pylint: disable=protected-access
        wait_until_idle(pool, 2)
        assert ran == ["spurious-2"]
        with pool._mutex:   # pylint: disable=protected-access
            counts = pool._idle, pool._woken   # pylint: disable=protected-access
        assert counts == (2, 0)
        snapshot = pool.snapshot()
        assert all(snapshot["invariants"].values()), snapshot["invariants"]
        assert snapshot["counters"]["empty_wakeups"] == 1
        assert_runs_a_task(pool)
    finally:
        ready.pause.release.set()
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)


def test_the_closed_check_and_the_enqueue_are_one_step():
    """A submit reads ``_closed`` and is switched out right after: a shutdown
    must not slip in between (the task would be queued on a pool whose
    workers have left).  Either the task runs, or submit refuses it."""
    pool = watched_pool(1, "closed-race", HeldPool)
    switch = pause_after_read(pool, "_closed", in_threads("submitter", "stopper"), times=2)
    with_watched_lock(pool, switch)
    pool.go.set()
    wait_until_idle(pool, 1)
    ran = threading.Event()
    outcome = []

    def submitter():
        try:
            pool.submit(ran.set)
            outcome.append("accepted")
        except PoolClosed:
            outcome.append("refused")

    thread = threading.Thread(target=submitter, name="submitter")
    thread.start()
    assert switch.reached.wait(TIMEOUT)
    stopper = threading.Thread(target=pool.shutdown, name="stopper")
    stopper.start()
    if switch.second_thread() == "arrived":   # submit checked outside the lock:
        switch.let_go("stopper")              # the shutdown ends, the worker leaves,
        stopper.join(TIMEOUT)
        for worker in pool._threads:   # pylint: disable=protected-access
            worker.join(TIMEOUT)
    switch.release.set()                      # and only then does the submit go on
    thread.join(timeout=TIMEOUT)
    stopper.join(timeout=TIMEOUT)
    assert pool.join(timeout=TIMEOUT)
    assert outcome == ["refused"] or (outcome == ["accepted"] and ran.is_set())


def test_the_unfinished_count_is_updated_under_the_lock():
    """Two workers finish at once; the first to read ``_unfinished`` is
    switched out right after the read.  Under the lock the second must wait
    for the lock; without it, it reads the same count too, both write it
    less one, and join never sees zero."""
    pool = watched_pool(2, "count-race", HeldPool)
    switch = pause_after_read(pool, "_unfinished", in_thread("count-race"), times=2)
    with_watched_lock(pool, switch)
    pool.go.set()
    wait_until_idle(pool, 2)
    both = threading.Barrier(2)
    for _ in range(2):
        pool.submit(lambda: both.wait(TIMEOUT))
    assert switch.reached.wait(TIMEOUT)
    switch.second_thread()     # "blocked" here; "arrived" where the count has no lock
    switch.release.set()
    try:
        assert pool.join(timeout=TIMEOUT)
        assert pool.unfinished() == 0
    finally:
        pool.shutdown()
        pool.join(timeout=TIMEOUT)


# -- what the pool tells (snapshot, counters, events) -----------------------------

def test_the_snapshot_shows_each_worker_the_queue_and_the_counters():
    pool = watched_pool(2, "snap")
    gate = threading.Event()
    running = threading.Barrier(3)
    try:
        wait_until_idle(pool, 2)
        idle = pool.snapshot()
        assert [(w["state"], w["condition"]) for w in idle["workers"]] == [
            ("waiting", "task_ready")] * 2
        for label in ("job_id_1", "job_id_2"):
            pool.submit(lambda: (running.wait(TIMEOUT), gate.wait(TIMEOUT)), label=label)
        pool.submit(lambda: None, label="job_id_3")
        running.wait(TIMEOUT)
        busy = pool.snapshot()
        assert sorted(w["job_id"] for w in busy["workers"]) == ["job_id_1", "job_id_2"]
        assert {w["state"] for w in busy["workers"]} == {"running"}
        assert busy["queue"] == ["job_id_3"] and busy["queued"] == 1
        assert busy["unfinished"] == 3 and not busy["closed"]
        assert all(busy["invariants"].values()), busy["invariants"]
    finally:
        gate.set()
    assert pool.join(timeout=TIMEOUT)
    pool.shutdown()
    assert pool.join(timeout=TIMEOUT)
    done = pool.snapshot()
    counters = done["counters"]
    assert counters["submitted"] == 3
    assert counters["notify"] == {"task_ready": 3, "all_done": 0}
    assert counters["notify_all"]["task_ready"] == 1   # the shutdown
    assert counters["notify_all"]["all_done"] >= 1
    assert counters["wakeups"] <= counters["waits"]
    assert done["closed"] and {w["state"] for w in done["workers"]} == {"exited"}
    assert all(done["invariants"].values()), done["invariants"]


def test_an_invariant_shows_false_when_its_state_is_broken(pool):
    """The snapshot's checks are real: break a counter by hand, see it red."""
    with pool._mutex:   # pylint: disable=protected-access
        pool._unfinished += 1   # pylint: disable=protected-access
    invariants = pool.snapshot()["invariants"]
    assert invariants["unfinished == queued + running"] is False
    with pool._mutex:   # pylint: disable=protected-access
        pool._unfinished -= 1   # pylint: disable=protected-access
        pool._tasks.append((None, lambda: None))   # a task no worker was told of
    wait_until_idle(pool, 3)
    invariants = pool.snapshot()["invariants"]
    assert invariants["no lost wake-up: no task waits while a worker sleeps un-notified"] is False
    with pool._mutex:   # pylint: disable=protected-access
        pool._tasks.clear()   # pylint: disable=protected-access
        pool._woken += 1      # a notification nobody sleeps for   # pylint: disable=protected-access
    invariants = pool.snapshot()["invariants"]
    assert invariants["the wake-up counts add up: idle + woken == workers asleep in wait()"] \
        is False
    with pool._mutex:   # pylint: disable=protected-access
        pool._woken -= 1   # pylint: disable=protected-access
    assert all(pool.snapshot()["invariants"].values())


def test_events_tell_each_wait_notify_and_wake_in_order():
    pool = watched_pool(1, "events")
    recorder = pool._events   # pylint: disable=protected-access
    try:
        wait_until_idle(pool, 1)
        assert_runs_a_task(pool)
        assert pool.join(timeout=TIMEOUT)
        wait_until_idle(pool, 1)
    finally:
        pool.shutdown()
        assert pool.join(timeout=TIMEOUT)
    kinds = recorder.kinds()
    assert kinds[:3] == ["worker_wait", "notify", "worker_wake"]
    assert kinds[-5:] == ["shutdown", "drain_done", "notify", "worker_wake", "worker_exit"]
    notify = dict(recorder.events[1][1])
    assert notify["condition"] == "task_ready" and notify["all"] is False
    assert all(isinstance(fields["t"], float) for _, fields in recorder.events)
    assert "drain_done" in kinds


def test_nobody_listening_means_nothing_is_published():
    recorder = Watch(listening=False)
    pool = ThreadPool(2, name="silent", events=recorder)
    for _ in range(20):
        pool.submit(lambda: None)
    pool.shutdown()
    assert pool.join(timeout=TIMEOUT)
    assert recorder.events == []


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError):
        ThreadPool(0)
