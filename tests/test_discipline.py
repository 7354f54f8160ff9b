"""Lock discipline: each class touches the state its docstring says a mutex
guards only with that mutex held (see guards.py): the pool, the connection
table, the journal, the job manager, the event bus and step mode.

Each test swaps the class's mutex for an OwnedLock (before any Condition is
made on it or any thread uses it), guards the attributes its docstring
names, drives every method from several threads, and expects no touch
without the lock.  A mistake of that kind fails here on every run, whether
or not the scheduler happened to interleave the threads badly."""

import shutil
import threading

import pytest

from lestats import connections as connections_module
from lestats import statistics
from lestats import jobs as jobs_module
from lestats import journal as journal_module
from lestats import storage as storage_module
from lestats.connections import RECEIVING, SERVING, WAITING, ConnectionTable
from lestats.jobs import JobManager
from lestats.journal import AcceptedJob
from lestats.lab.forcing import TIMEOUT, Watch, held
from lestats.pool import PoolFull, ThreadPool
from lestats.resultsdir import ResultsDirectory
from lestats.storage import JobStore
from lestats.watch import events as events_module
from lestats.watch import scenarios
from lestats.watch import step as step_module
from lestats.watch.events import EventBus, SseStream
from lestats.watch.stepweb import Watched

from conftest import MUSCLE, OBESITY
from guards import OwnedLock, guard, guarded_class
from test_step import Stepping, play

POOL_STATE = ["_tasks", "_unfinished", "_closed", "_idle", "_woken", "_counts", "_notifies",
              "_notify_alls", "max_queued"]
WORKER_STATE = ["state", "label", "since", "asleep"]


@pytest.fixture
def log():
    """The touches without a lock; each test expects none."""
    touches = []
    yield touches
    assert touches == [], "\n".join(touches[:20])


def run_all(*calls):
    """Run each call in a thread of its own, all started together; re-raise
    the first failure."""
    start, errors = threading.Barrier(len(calls)), []

    def run(call):
        start.wait(TIMEOUT)
        try:
            call()
        except BaseException as exc:   # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a call did not return"
    if errors:
        raise errors[0]


# -- the pool ----------------------------------------------------------------------------

def guarded_pool(size, log, **options):
    """A pool whose workers wait for ``go``, with an OwnedLock and guards."""
    pool = held(ThreadPool)(size, name="discipline", events=Watch(), **options)
    lock = pool._mutex = OwnedLock()   # pylint: disable=protected-access
    pool._task_ready = threading.Condition(lock)   # pylint: disable=protected-access
    pool._all_done = threading.Condition(lock)   # pylint: disable=protected-access
    guard(pool, lock, POOL_STATE, log)
    for worker in pool._workers:   # pylint: disable=protected-access
        guard(worker, lock, WORKER_STATE, log)
    pool.go.set()
    return pool


def test_the_pool_touches_its_state_only_under_its_mutex(log):
    pool = guarded_pool(3, log, max_queued=50)
    assert pool._events.idle(pool, 3)   # pylint: disable=protected-access
    ran, ran_mutex = [], threading.Lock()

    def task(number):
        with ran_mutex:
            ran.append(number)
        if number % 7 == 0:
            raise ValueError("a task that fails")

    def producer(first):
        for number in range(first, first + 10):
            try:
                pool.submit(lambda number=number: task(number), label=number)
            except PoolFull:
                pass
            pool.queued()
            pool.taken()
            pool.unfinished()

    run_all(lambda: producer(0), lambda: producer(10), lambda: producer(20),
            pool.snapshot, lambda: pool.make_room(60), lambda: pool.join(TIMEOUT))
    assert pool.join(TIMEOUT)
    snapshot = pool.snapshot()
    assert all(snapshot["invariants"].values()), snapshot["invariants"]
    run_all(pool.shutdown, pool.shutdown, lambda: pool.join(TIMEOUT), pool.snapshot)
    assert pool.join(TIMEOUT)
    assert sorted(ran) == list(range(30))


# -- the connection table ------------------------------------------------------------------

def guarded_table(capacity, log, monkeypatch):
    """A ConnectionTable with an OwnedLock, its state and its rows guarded."""
    table = ConnectionTable(capacity)
    lock = table.mutex = OwnedLock()
    table.gone = threading.Condition(lock)
    table.unshut = threading.Condition(lock)
    guard(table, lock, ["_open", "_waiting", "_evicted", "_closing", "_paused"], log)
    monkeypatch.setattr(connections_module, "Connection", guarded_class(
        connections_module.Connection, lambda _row: lock, ["phase", "since", "shutting"], log))
    return table


class Sock:   # pylint: disable=too-few-public-methods
    """Stands for a socket: the table only keys its rows by it."""


def test_the_connection_table_touches_its_state_only_under_its_mutex(log, monkeypatch):
    table = guarded_table(3, log, monkeypatch)
    socks = [Sock() for _ in range(5)]
    rows = [table.admit(sock, ("127.0.0.1", n))[0] for n, sock in enumerate(socks[:3])]
    assert all(rows)
    assert table.enter(socks[0], RECEIVING) and table.enter(socks[1], SERVING)
    assert table.pressed() and not table.closing() and not table.paused()
    row, victim = table.admit(socks[3], ("127.0.0.1", 3))   # evicts socks[0], the oldest wait
    assert row is not None and victim.sock is socks[0] and table.was_evicted(socks[0])
    table.pause_accepting()
    assert table.paused()
    table.resume_accepting()
    table.snapshot()
    run_all(lambda: table.leave(socks[0]),       # waits until the victim is released
            lambda: table.released([victim]),
            lambda: table.enter(socks[2], WAITING),
            table.snapshot)
    table.pause_accepting()
    assert table.leave(socks[3])                 # it was paused: the caller wakes the loop
    closed = table.close_waiting()               # socks[2] was waiting: closed at once
    assert [r.sock for r in closed] == [socks[2]] and table.closing()
    assert table.admit(socks[4], None) == (None, None)
    assert not table.enter(socks[1], WAITING)    # no next request while closing
    run_all(lambda: table.wait_empty(TIMEOUT),
            lambda: table.released(closed),
            lambda: table.leave(socks[2]),
            lambda: table.leave(socks[1]))
    assert table.wait_empty(0) == []


# -- the journal -----------------------------------------------------------------------

def test_the_journal_touches_its_state_only_under_its_mutex(log, monkeypatch, tmp_path):
    store = JobStore(tmp_path / "results")
    store.open("data.csv")
    journal = store._journal   # pylint: disable=protected-access
    lock = journal._mutex = OwnedLock()   # pylint: disable=protected-access
    journal._written = threading.Condition(lock)   # pylint: disable=protected-access
    guard(journal, lock, ["_waiting", "_writing", "_closed", "_finished_below"], log)
    monkeypatch.setattr(journal_module, "_Entry", guarded_class(
        journal_module._Entry, lambda _entry: lock, ["state", "error"], log))   # pylint: disable=protected-access

    def appender(first):
        for number in range(first, first + 20):
            store.accept(AcceptedJob(number, "global_mean", OBESITY))
            store.finished_below(number)

    run_all(*(lambda first=first: appender(first) for first in (1, 21, 41, 61)))
    store.close()
    again = JobStore(tmp_path / "results")
    assert len(again.open("data.csv").pending) == 80
    again.close()


# -- the job manager -----------------------------------------------------------------------

JOB_STATE = ["_next", "_unfinished", "_first_open", "_done_order", "_waiters"]
TABLE_STATE = ["numbers", "status", "accepted", "started", "finished", "queries", "workers",
               "tickets", "reasons"]
CACHE_STATE = ["_answers", "_queries"]


def guarded_manager(index, pool, results, log, monkeypatch, **options):
    """A JobManager (not started) whose mutexes are OwnedLocks, its state guarded."""
    manager = JobManager(index, pool, JobStore(results), **options)
    lock = manager._mutex = OwnedLock()   # pylint: disable=protected-access
    cache_lock = manager._cache_mutex = OwnedLock()   # pylint: disable=protected-access
    guard(manager, lock, JOB_STATE, log)
    guard(manager, cache_lock, CACHE_STATE, log)
    guard(manager._table, lock, TABLE_STATE, log)   # pylint: disable=protected-access
    monkeypatch.setattr(jobs_module, "_Waiter", guarded_class(
        jobs_module._Waiter, lambda _waiter: lock, ["count"], log))   # pylint: disable=protected-access
    return manager


def test_the_job_manager_touches_its_state_only_under_its_mutexes(log, monkeypatch, tmp_path,
                                                                   tiny_index):
    def failing(_means):
        raise ArithmeticError("a statistic that fails")

    monkeypatch.setitem(statistics.STATISTICS, "worst5", statistics.Statistic(failing))
    pool = ThreadPool(2)
    manager = guarded_manager(tiny_index, pool, tmp_path / "results", log, monkeypatch,
                              keep_results=5)
    manager.start()

    def client(body):
        for _ in range(6):
            job_id = manager.submit("global_mean", body)
            manager.result(job_id, wait=TIMEOUT)
            manager.record(job_id)
            manager.num_jobs()

    def reader():
        for _ in range(6):
            b"".join(manager.job_list())
            manager.pool_snapshot()
            manager.questions()

    def failing_client():
        for _ in range(3):
            job_id = manager.submit("worst5", {"question": OBESITY})
            assert manager.result(job_id, wait=TIMEOUT).status == "error"
            assert manager.record(job_id)["reason"]

    run_all(lambda: client({"question": OBESITY}), lambda: client({"question": MUSCLE}),
            lambda: client({"question": OBESITY, "state": "Ohio"}), reader, failing_client)
    assert manager.drain(TIMEOUT)
    manager.shutdown()
    manager.close()
    assert pool.join(TIMEOUT)


def test_a_result_found_unreadable_has_its_status_read_again_under_the_mutex(
        log, monkeypatch, tmp_path, tiny_index):
    pool = ThreadPool(1)
    manager = guarded_manager(tiny_index, pool, tmp_path / "results", log, monkeypatch)
    manager.start()
    job_id = manager.submit("global_mean", {"question": OBESITY})
    assert manager.result(job_id, wait=TIMEOUT).status == "done"
    (tmp_path / "results" / f"{job_id}.json").unlink()   # lost since
    answer = manager.result(job_id)
    assert answer.status == "error" and answer.reason.startswith("result file unreadable")
    manager.shutdown()
    manager.close()
    assert pool.join(TIMEOUT)


class KilledPool:
    """A pool that accepts tasks and never runs them: a server killed with
    its jobs queued."""

    worker_names = ["killed-worker"]

    @staticmethod
    def submit(_task, label=None):   # pylint: disable=unused-argument
        """Accepted, never run."""
        return 1

    @staticmethod
    def make_room(_count):
        """Room enough."""
        return False


def test_a_restarted_job_manager_touches_its_state_only_under_its_mutexes(
        log, monkeypatch, tmp_path, tiny_index):
    first = JobManager(tiny_index, KilledPool(), JobStore(tmp_path / "results"))
    first.start()
    for _ in range(4):
        first.submit("global_mean", {"question": OBESITY})
    first.close()   # the four jobs are in the journal only
    pool = ThreadPool(2)
    manager = guarded_manager(tiny_index, pool, tmp_path / "results", log, monkeypatch,
                              keep_results=2)
    manager.start()
    assert manager.drain(TIMEOUT)
    statuses = [manager.record(f"job_id_{n}")["status"] for n in range(1, 5)]
    assert sorted(statuses) == ["done", "done", "expired", "expired"]   # in finishing order
    manager.shutdown()
    manager.close()
    assert pool.join(TIMEOUT)


# -- the results directory ---------------------------------------------------------------

DIRECTORY_STATE = ["_fd", "_held", "_lost"]


def owned_directory_class(log):
    """ResultsDirectory with an OwnedLock, its state guarded."""
    class OwnedDirectory(ResultsDirectory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._mutex = OwnedLock()

    return guarded_class(OwnedDirectory, lambda directory: directory._mutex,   # pylint: disable=protected-access
                         DIRECTORY_STATE, log)


def test_the_results_directory_touches_its_state_only_under_its_mutex_through_wipes(
        log, monkeypatch, tmp_path, tiny_index):
    """Jobs written and read from several threads while the directory is
    wiped (taken back), then wiped and taken by another server (lost)."""
    monkeypatch.setattr(storage_module, "ResultsDirectory", owned_directory_class(log))
    results = tmp_path / "results"
    pool = ThreadPool(2)
    manager = guarded_manager(tiny_index, pool, results, log, monkeypatch)
    manager.start()

    def client(body):
        for _ in range(4):
            try:
                job_id = manager.submit("global_mean", body)
            except OSError:
                continue   # lost: no id handed out
            manager.result(job_id, wait=TIMEOUT)
            manager.num_jobs()

    run_all(lambda: client({"question": OBESITY}), lambda: client({"question": MUSCLE}))
    shutil.rmtree(results)
    run_all(lambda: client({"question": OBESITY}), lambda: client({"question": MUSCLE}))
    assert (results / ".lestats.lock").exists()          # taken back
    shutil.rmtree(results)
    other = JobStore(results)
    other.open("other.csv")
    run_all(lambda: client({"question": OBESITY}), lambda: client({"question": MUSCLE}))
    assert not list(results.glob("job_id_*"))            # lost: nothing written there
    other.close()
    assert manager.drain(TIMEOUT)
    manager.shutdown()
    manager.close()
    assert pool.join(TIMEOUT)


# -- the event bus -----------------------------------------------------------------------

def test_the_event_bus_touches_its_state_only_under_its_mutex(log, monkeypatch):
    bus = EventBus()
    lock = bus._mutex = OwnedLock()   # pylint: disable=protected-access
    guard(bus, lock, ["_subscribers", "_seq", "_closed"], log)
    monkeypatch.setattr(events_module, "Subscription", guarded_class(
        events_module.Subscription, lambda sub: sub.bus._mutex,   # pylint: disable=protected-access
        ["_buffer", "closed", "dropped", "lost"], log))
    monkeypatch.setattr(events_module, "Event", guarded_class(
        events_module.Event, lambda _event: lock, ["sse"], log))
    monkeypatch.setattr(events_module, "GATHER", 0.001)
    streams = [SseStream(bus.subscribe()) for _ in range(2)]
    slow = SseStream(bus.subscribe(limit=5))          # falls behind: dropped
    lossy = bus.subscribe(limit=5, lossy=True)        # falls behind: counts its losses
    read = []

    def reader(stream):
        for chunk in stream:
            read.append(len(chunk))

    def publisher(kind):
        for number in range(50):
            if bus.listening:
                bus.publish(kind, {"n": number, "t": 0.0})

    readers = [threading.Thread(target=reader, args=(stream,)) for stream in streams]
    for thread in readers:
        thread.start()
    run_all(lambda: publisher("a"), lambda: publisher("b"))
    assert next(slow) == b"retry: 2000\n\n" and b"dropped" in next(slow)
    slow.close()
    lossy.get(0)
    assert lossy.lost_count() > 0
    lossy.close()
    bus.close()
    for thread in readers:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert read and not bus.listening


# -- step mode -----------------------------------------------------------------------------

STEPPER_STATE = ["_on", "_closed", "_session", "_seq", "_threads", "_holders", "_blocked",
                 "_last_free", "_labels", "_watchers"]
STEPPED_THREAD_STATE = ["state", "point", "lock", "condition", "go", "arrived", "holds",
                        "notifies"]


def test_step_mode_touches_its_state_only_under_its_mutex(log, monkeypatch, tmp_path,
                                                          tiny_index):
    monkeypatch.setattr(step_module, "SteppedThread", guarded_class(
        step_module.SteppedThread, lambda _thread: lock, STEPPED_THREAD_STATE, log))

    class GuardedStepper(step_module.Stepper):
        """A stepper whose mutex is an OwnedLock and whose state is guarded."""

        def __init__(self, events):
            super().__init__(events)
            self._mutex = lock
            self._changed = threading.Condition(lock)
            guard(self, lock, STEPPER_STATE, log)

    lock = OwnedLock()
    setup = Stepping(tiny_index, tmp_path / "results", stepper_class=GuardedStepper)
    try:
        setup.idle()
        pages = [Watched(SseStream(EventBus().subscribe()), setup.stepper) for _ in range(2)]
        for page in pages:
            next(page)   # read: a page watches
        assert play(setup, scenarios.find("empty-wakeup"))
        run_all(setup.stepper.state, setup.jobs.pool_snapshot, setup.stepper.state)
        setup.submit("late-post")
        setup.at("late-post", "acquire", "jobs")
        run_all(pages[0].close, pages[1].close, setup.stepper.state)
        assert not setup.stepper.on
        setup.finish()
        assert setup.stepper.start()
        setup.stepper.run()
    finally:
        setup.close()
