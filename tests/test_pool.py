"""The thread pool: fixed threads, drain on shutdown, exact counts, survival
of failing tasks.  Interleavings are forced with Events, never with sleeps."""

import logging
import threading
import time

import pytest

from lestats.pool import PoolClosed, ThreadPool


@pytest.fixture
def pool():
    pool = ThreadPool(3, name="test-pool")
    yield pool
    pool.shutdown()
    pool.join(timeout=5)


def test_every_submitted_task_runs_once(pool):
    ran = []
    lock = threading.Lock()

    def task(i):
        with lock:
            ran.append(i)

    for i in range(500):
        pool.submit(lambda i=i: task(i))
    assert pool.join(timeout=5)
    assert sorted(ran) == list(range(500))
    assert pool.unfinished() == 0


def test_threads_are_created_once_and_reused(pool):
    before = {t.ident for t in threading.enumerate() if t.name.startswith("test-pool")}
    seen = set()
    for _ in range(100):
        pool.submit(lambda: seen.add(threading.get_ident()))
    pool.join(timeout=5)
    after = {t.ident for t in threading.enumerate() if t.name.startswith("test-pool")}
    assert pool.size == 3 and len(before) == 3
    assert before == after and seen <= before


def test_unfinished_counts_queued_and_running_tasks(pool):
    gate = threading.Event()
    started = threading.Barrier(4)   # the 3 workers and this test

    def blocked():
        started.wait(timeout=5)
        gate.wait(timeout=5)

    for _ in range(3):
        pool.submit(blocked)
    started.wait(timeout=5)   # all three are running now
    pool.submit(lambda: None)
    assert pool.unfinished() == 4
    assert not pool.join(timeout=0.05)
    gate.set()
    assert pool.join(timeout=5)
    assert pool.unfinished() == 0


def test_a_failing_task_is_logged_and_the_worker_survives(pool, caplog):
    def boom():
        raise ZeroDivisionError("boom")

    with caplog.at_level(logging.ERROR, logger="lestats.pool"):
        for _ in range(6):
            pool.submit(boom)
        pool.join(timeout=5)
    failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert len(failures) == 6
    alive = [t for t in threading.enumerate() if t.name.startswith("test-pool")]
    assert len(alive) == 3
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(timeout=5)


def test_shutdown_drains_queued_tasks_then_the_threads_exit():
    pool = ThreadPool(1, name="drain-pool")
    gate = threading.Event()
    ran = []
    pool.submit(gate.wait)
    for i in range(10):
        pool.submit(lambda i=i: ran.append(i))
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(lambda: ran.append("late"))
    gate.set()
    assert pool.join(timeout=5)
    assert ran == list(range(10))
    assert not [t for t in threading.enumerate() if t.name.startswith("drain-pool")]


def test_shutdown_wakes_idle_workers_and_is_idempotent():
    pool = ThreadPool(4, name="idle-pool")
    pool.shutdown()
    pool.shutdown()
    assert pool.join(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("idle-pool")]


def test_an_idle_pool_does_not_spin(pool):
    pool.join(timeout=1)
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.05


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError):
        ThreadPool(0)
