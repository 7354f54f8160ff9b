"""Jobs: gap-free ids, records, atomic result files, restart numbering,
failures, waiting for a result, and the races around them (forced)."""

import errno
import json
import logging
import threading
import time

import pytest

from lestats import jobs as jobs_module, storage as storage_module
from lestats.jobs import JobManager, QueueFull, ShuttingDown
from lestats.records import DONE, ERROR, EXPIRED, UnknownJob, job_number
from lestats.pool import ThreadPool
from lestats.statistics import Query, QueryError
from lestats.storage import JobStore

from conftest import MUSCLE, OBESITY
from lestats.lab.forcing import (TIMEOUT, CountingCondition, Pause, PausingLock,
                                 SpuriousCondition, WatchedLock, in_function, in_thread,
                                 in_threads, pause_after_read)
from lestats.watch.events import EventBus

ASK = {"question": OBESITY}


class Managers:
    """Makes JobManagers on tmp_path and closes them all at the end."""

    def __init__(self, index, tmp_path):
        self.index = index
        self.tmp_path = tmp_path
        self.made = []

    def __call__(self, workers=2, directory="results", pool=None, **options):
        pool = pool or ThreadPool(workers)
        manager = JobManager(self.index, pool, JobStore(self.tmp_path / directory), **options)
        manager.start()
        self.made.append((manager, pool))
        return manager

    def close(self, manager):
        """Drain ``manager``, stop its pool and give up its directory."""
        for made, pool in self.made:
            if made is manager:
                pool.shutdown()
                assert pool.join(timeout=TIMEOUT)
                made.close()
        self.made = [(m, p) for m, p in self.made if m is not manager]


@pytest.fixture
def managers(tiny_index, tmp_path):
    made = Managers(tiny_index, tmp_path)
    yield made
    for manager, _ in list(made.made):
        made.close(manager)


@pytest.fixture
def manager(managers):
    return managers()


def held_pool():
    """A one-worker pool whose worker is held until the returned gate is set."""
    pool, gate, started = ThreadPool(1), threading.Event(), threading.Event()
    pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    return pool, gate


@pytest.fixture
def waiters_made(monkeypatch):
    """Every job waiter's Condition counts the threads inside ``wait``;
    ``waiters_made(i, n)`` waits until the i-th waiter made has n of them,
    and returns it."""
    made, changed = [], threading.Condition()

    class CountedWaiter(jobs_module._Waiter):   # pylint: disable=protected-access
        def __init__(self, mutex):
            super().__init__(mutex)
            self.finished = CountingCondition(mutex)
            with changed:
                made.append(self)
                changed.notify_all()

    def wait_for(index, count):
        with changed:
            assert changed.wait_for(lambda: len(made) > index, TIMEOUT)
        assert made[index].finished.wait_for_waiters(count)
        return made[index]

    monkeypatch.setattr(jobs_module, "_Waiter", CountedWaiter)
    return wait_for


def statuses(manager):
    return json.loads(b"".join(manager.job_list()))["data"]


def test_ids_count_from_one_and_results_are_files(manager, tmp_path):
    ids = [manager.submit("global_mean", ASK) for _ in range(3)]
    assert ids == ["job_id_1", "job_id_2", "job_id_3"]
    assert manager.drain(timeout=TIMEOUT)
    result = manager.result("job_id_2")
    assert result.status == "done"
    assert json.loads(result.data_json) == {"global_mean": pytest.approx(14.5)}
    assert json.loads((tmp_path / "results" / "job_id_2.json").read_text()) == json.loads(
        result.data_json)
    assert statuses(manager) == [{"job_id_1": "done"}, {"job_id_2": "done"},
                                 {"job_id_3": "done"}]
    assert manager.num_jobs() == 0


def test_a_bad_body_uses_no_id(manager):
    with pytest.raises(QueryError):
        manager.submit("global_mean", {"question": "nope"})
    assert manager.submit("global_mean", ASK) == "job_id_1"


def test_a_queued_job_is_running_for_the_course_and_queued_in_its_record(managers):
    pool, gate = held_pool()
    manager = managers(pool=pool)
    try:
        manager.submit("global_mean", ASK)
        assert manager.result("job_id_1").status == "running"
        assert statuses(manager) == [{"job_id_1": "running"}]
        assert manager.record("job_id_1")["status"] == "queued"
        assert manager.num_jobs() == 1
    finally:
        gate.set()
    assert manager.drain(timeout=TIMEOUT)
    assert manager.num_jobs() == 0 and manager.record("job_id_1")["status"] == "done"


@pytest.mark.parametrize("job_id", [
    "job_id_0", "job_id_01", "job_id_-1", "job_id_+1", "job_id_1x", "job_id_", "job_id_1 ",
    "../job_id_1", "job_id_1/../x", "job_id_%31", "JOB_ID_1", "job_id_\u0661",
    "job_id_" + "9" * 30, "", "..", "%2F",
])
def test_malformed_job_ids_are_unknown(manager, job_id):
    with pytest.raises(UnknownJob):
        manager.result(job_id)
    with pytest.raises(UnknownJob):
        manager.record(job_id)


def test_an_id_never_issued_is_unknown(manager):
    manager.submit("global_mean", ASK)
    with pytest.raises(UnknownJob):
        manager.result("job_id_2")
    assert job_number("job_id_1") == 1


def test_job_list_pages_through_many_jobs_in_id_order(manager):
    for _ in range(5000):   # more than one piece of the answer
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    assert statuses(manager) == [{f"job_id_{n}": "done"} for n in range(1, 5001)]
    page = json.loads(b"".join(manager.job_list(since=4000, limit=3000)))["data"]
    assert page == [{f"job_id_{n}": "done"} for n in range(4001, 5001)]


# -- restarts ---------------------------------------------------------------------

def test_accepted_jobs_without_a_result_run_again_after_a_restart(managers, tmp_path):
    first = managers(workers=1)
    first.submit("global_mean", ASK)
    first.submit("state_mean", {"question": OBESITY, "state": "Ohio"})
    managers.close(first)
    (tmp_path / "results" / "job_id_2.json").unlink()   # as if killed before job 2 finished
    again = managers()
    assert again.drain(timeout=TIMEOUT)
    assert json.loads(again.result("job_id_2").data_json) == {"Ohio": 6.0}
    assert statuses(again) == [{"job_id_1": "done"}, {"job_id_2": "done"}]
    assert again.submit("global_mean", ASK) == "job_id_3"
    record = again.record("job_id_2")
    assert (record["statistic"], record["state"]) == ("state_mean", "Ohio")


def test_more_jobs_left_unfinished_than_max_queued_all_run_after_a_restart(managers, tmp_path,
                                                                           caplog):
    results = tmp_path / "results"
    results.mkdir()
    (results / ".journal-1.jsonl").write_text("".join(
        f'{{"job":{n},"statistic":"global_mean","question":"{OBESITY}","state":null}}\n'
        for n in range(1, 6)))
    manager = managers(pool=ThreadPool(1, max_queued=2))
    assert manager.drain(timeout=TIMEOUT)
    assert statuses(manager) == [{f"job_id_{n}": "done"} for n in range(1, 6)]
    assert "--max-queued raised to 5" in caplog.text


def test_results_kept_by_keep_results_stay_so_across_restarts(managers, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lestats")
    first = managers(workers=1, keep_results=2)
    for _ in range(5):
        first.submit("global_mean", ASK)
    assert first.drain(timeout=TIMEOUT)
    managers.close(first)
    again = managers(keep_results=2)
    assert "queued again" not in caplog.text          # the expired ones do not run again
    assert statuses(again) == [{"job_id_1": "expired"}, {"job_id_2": "expired"},
                               {"job_id_3": "expired"}, {"job_id_4": "done"},
                               {"job_id_5": "done"}]
    again.submit("global_mean", ASK)
    assert again.drain(timeout=TIMEOUT)
    assert [list(s.values())[0] for s in statuses(again)][3:] == ["expired", "done", "done"]
    managers.close(again)
    fewer = managers(keep_results=1)                    # a smaller N applies at once
    assert [list(s.values())[0] for s in statuses(fewer)][4:] == ["expired", "done"]
    assert "1 result(s) beyond --keep-results 1 expired" in caplog.text
    managers.close(fewer)
    plain = managers()                                  # without the option: still expired
    result = plain.result("job_id_1")
    assert (result.status, result.reason) == ("expired", "result deleted (--keep-results)")
    results = sorted(p.name for p in (tmp_path / "results").glob("job_id_*.json"))
    marks = sorted(p.name for p in (tmp_path / "results").glob("job_id_*.expired"))
    assert len(results) == 1 and len(marks) == 5
    assert all((tmp_path / "results" / name).stat().st_size == 0 for name in marks)


def test_a_result_expiring_while_it_is_read_is_expired_not_an_error(manager, monkeypatch):
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)

    def expired_meanwhile(_number):
        with manager._mutex:   # pylint: disable=protected-access
            manager._table.status[0] = EXPIRED   # pylint: disable=protected-access
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(manager._store, "read_result",   # pylint: disable=protected-access
                        expired_meanwhile)
    assert manager.result("job_id_1").status == "expired"


def test_jobs_asking_the_same_thing_have_result_files_of_their_own(managers, tmp_path):
    """Issue 17 (3): editing one result file in place changes that job alone."""
    manager = managers(workers=1)
    for _ in range(20):
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    results = tmp_path / "results"
    assert {(results / f"job_id_{n}.json").stat().st_nlink for n in range(1, 21)} == {1}
    with open(results / "job_id_5.json", "r+b") as edited:
        edited.write(b'{"global_mean": 99.0}')
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    answers = {n: json.loads(manager.result(f"job_id_{n}").data_json) for n in range(1, 22)}
    assert answers.pop(5) == {"global_mean": 99.0}
    assert set(map(json.dumps, answers.values())) == {'{"global_mean": 14.5}'}


def test_a_damaged_result_fails_its_job_alone_after_the_journal_rolled_over(managers,
                                                                            tmp_path):
    """Issue 17 (3): a truncated result never fails jobs whose files are intact."""
    manager = managers(workers=1)
    for _ in range(20):
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    managers.close(manager)
    results = tmp_path / "results"
    (results / "job_id_7.json").write_bytes(b"")        # a careless >, or a power cut
    for segment in results.glob(".journal-*.jsonl"):   # rolled over: nothing to run again
        segment.write_text('{"high":20}\n')
    again = managers()
    assert [n for n in range(1, 21) if again.result(f"job_id_{n}").status != "done"] == [7]
    assert again.result("job_id_7").reason == "result file is empty"


def test_an_answer_over_the_result_limit_fails_its_job_once(managers, monkeypatch):
    """Issue 17 (4): never served cut to the limit, and not run again at each start."""
    monkeypatch.setattr(storage_module, "MAX_RESULT", 100)
    computed = []
    real_compute = Query.compute
    monkeypatch.setattr(Query, "compute", lambda self, index: (
        computed.append(self.name), real_compute(self, index))[1])
    manager = managers(workers=1)
    manager.submit("mean_by_category", ASK)              # some 300 bytes of JSON
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    failed = manager.result("job_id_1")
    assert failed.status == "error" and "more than the" in failed.reason
    assert manager.result("job_id_2").status == "done"
    managers.close(manager)
    again = managers()
    assert again.num_jobs() == 0 and computed == ["mean_by_category", "global_mean"]
    assert again.result("job_id_1").reason == failed.reason


def test_a_job_that_cannot_run_on_new_data_ends_in_error(managers, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / ".journal-1.jsonl").write_text(
        '{"job":4,"statistic":"global_mean","question":"gone","state":null}\n')
    manager = managers()
    result = manager.result("job_id_4")
    assert result.status == "error" and "cannot run again" in result.reason
    assert manager.submit("global_mean", ASK) == "job_id_5"


def test_numbering_continues_after_a_restart(managers, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "job_id_7.json").write_text('{"global_mean": 1.0}')
    (results / "job_id_3.json").write_text('{"global_mean": 2.0}')
    for name in ("job_id_08.json", "job_id_x.json", "notes.txt"):
        (results / name).write_text("ignored")
    (results / ".job_id_9.json.tmp").write_text('{"half')   # a crash mid-write
    manager = managers()
    assert statuses(manager) == [{"job_id_3": "done"}, {"job_id_7": "done"}]
    assert manager.submit("global_mean", ASK) == "job_id_8"
    assert not (results / ".job_id_9.json.tmp").exists()
    assert json.loads(manager.result("job_id_7").data_json) == {"global_mean": 1.0}
    assert manager.record("job_id_3")["statistic"] is None   # an earlier run's: unknown


def test_a_damaged_result_of_a_journaled_job_runs_again_else_is_an_error(managers, tmp_path):
    first = managers()
    first.submit("global_mean", ASK)
    managers.close(first)
    results = tmp_path / "results"
    (results / "job_id_1.json").write_bytes(b"\0" * 40)            # NUL-filled by a power cut
    (results / "job_id_5.json").write_text('{"global_mean": 14.')  # not ours, and truncated
    again = managers()
    assert again.drain(timeout=TIMEOUT)
    assert json.loads(again.result("job_id_1").data_json) == {"global_mean": 14.5}
    failed = again.result("job_id_5")
    assert failed.status == "error" and "not valid JSON" in failed.reason
    assert again.submit("global_mean", ASK) == "job_id_6"


def test_a_results_directory_from_another_data_file_is_named_at_start(managers, tmp_path,
                                                                       tiny_index):
    first = managers()
    first.submit("global_mean", ASK)
    managers.close(first)
    lock = tmp_path / "results" / ".lestats.lock"
    lock.write_text(json.dumps({"pid": 1, "data": "/elsewhere/demo.csv"}))
    again = managers()
    assert again.start_note == (f"{tmp_path / 'results'} holds 1 jobs from /elsewhere/demo.csv;"
                                " numbering continues at 2")
    managers.close(again)
    assert managers().start_note is None   # the same data file as last time: nothing to say


# -- failures ------------------------------------------------------------------------

def test_a_result_that_cannot_be_written_ends_in_error_and_the_pool_goes_on(
        manager, monkeypatch, caplog):
    original = JobStore.write_result

    def disk_full(store, number, *answer):
        if number == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(store, number, *answer)

    monkeypatch.setattr(JobStore, "write_result", disk_full)
    manager.submit("global_mean", ASK)
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    failed = manager.result("job_id_1")
    assert failed.status == "error" and "No space left on device" in failed.reason
    assert manager.result("job_id_2").status == "done"
    assert statuses(manager) == [{"job_id_1": "error"}, {"job_id_2": "done"}]
    assert manager.record("job_id_1")["reason"] == failed.reason
    assert "job_id_1 failed" in caplog.text


def test_a_statistic_that_raises_ends_in_error(manager, monkeypatch):
    from lestats import statistics

    def broken(_means):
        raise ArithmeticError("broken statistic")

    monkeypatch.setitem(statistics.STATISTICS, "global_mean", statistics.Statistic(broken))
    for _ in range(5):
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    result = manager.result("job_id_1")
    assert result.status == "error" and "broken statistic" in result.reason
    assert manager.num_jobs() == 0


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_statistic_that_raises_systemexit_still_ends_in_error(manager, monkeypatch, raised):
    from lestats import statistics

    def leaving(_means):
        raise raised("a statistic that leaves")

    monkeypatch.setitem(statistics.STATISTICS, "global_mean", statistics.Statistic(leaving))
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    assert manager.num_jobs() == 0
    result = manager.result("job_id_1")
    assert result.status == "error" and raised.__name__ in result.reason
    assert manager.record("job_id_1")["status"] == "error"


def test_an_answer_that_is_not_finite_is_an_error_not_invalid_json(manager, monkeypatch):
    from lestats import statistics
    monkeypatch.setitem(statistics.STATISTICS, "global_mean",
                        statistics.Statistic(lambda _means: {"global_mean": float("inf")}))
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    result = manager.result("job_id_1")
    assert result.status == "error" and "JSON cannot represent" in result.reason


def test_a_result_file_deleted_behind_our_back_is_an_error(manager, tmp_path):
    manager.submit("global_mean", ASK)
    manager.drain(timeout=TIMEOUT)
    (tmp_path / "results" / "job_id_1.json").unlink()
    result = manager.result("job_id_1")
    assert result.status == "error" and "unreadable" in result.reason


def test_a_job_the_pool_refuses_leaves_no_trace(managers):
    """The job is entered only after the pool took it: a refusal must not
    leave a job "running" for ever, nor use up an id."""
    pool = ThreadPool(1, max_queued=1)
    gate, started = threading.Event(), threading.Event()
    pool.submit(lambda: (started.set(), gate.wait(TIMEOUT)))
    assert started.wait(TIMEOUT)
    manager = managers(pool=pool)
    try:
        manager.submit("global_mean", ASK)
        with pytest.raises(QueueFull):
            manager.submit("global_mean", ASK)
        assert manager.num_jobs() == 1 and statuses(manager) == [{"job_id_1": "running"}]
    finally:
        gate.set()
    assert manager.drain(timeout=TIMEOUT)
    assert manager.submit("global_mean", ASK) == "job_id_2"
    assert manager.drain(timeout=TIMEOUT) and manager.num_jobs() == 0


def test_shutdown_refuses_new_jobs_and_is_idempotent(manager):
    manager.submit("global_mean", ASK)
    manager.shutdown()
    with pytest.raises(ShuttingDown):
        manager.submit("global_mean", ASK)
    manager.shutdown()
    assert manager.drain(timeout=TIMEOUT)
    assert statuses(manager) == [{"job_id_1": "done"}]


# -- races, forced -----------------------------------------------------------------

def test_ids_are_taken_under_the_lock(managers):
    """A submit reads the next id and is switched out right after: another
    submit must not get the same id (nor leave a gap)."""
    manager = managers()
    switch = pause_after_read(manager, "_next", in_threads("first", "second"), times=2)
    manager._mutex = WatchedLock(switch)   # pylint: disable=protected-access
    ids = []
    first = threading.Thread(target=lambda: ids.append(manager.submit("global_mean", ASK)),
                             name="first")
    first.start()
    assert switch.reached.wait(TIMEOUT)
    second = threading.Thread(target=lambda: ids.append(manager.submit("global_mean", ASK)),
                              name="second")
    second.start()
    switch.second_thread()   # "blocked" here; "arrived" (and read the same id) without the lock
    switch.release.set()
    first.join(timeout=TIMEOUT)
    second.join(timeout=TIMEOUT)
    assert sorted(ids) == ["job_id_1", "job_id_2"]
    assert manager.drain(timeout=TIMEOUT)
    assert statuses(manager) == [{"job_id_1": "done"}, {"job_id_2": "done"}]


def test_the_unfinished_count_is_updated_under_the_lock(managers):
    """Two jobs finish at once, each switched out right after reading the
    count; without the lock one decrement is lost and num_jobs never
    returns to zero."""
    manager = managers(workers=2)
    switch = pause_after_read(manager, "_unfinished", in_thread("lestats-worker"), times=2)
    manager._mutex = WatchedLock(switch)   # pylint: disable=protected-access
    both = threading.Barrier(2)   # the two jobs finish together
    original = manager._store.write_result   # pylint: disable=protected-access
    manager._store.write_result = lambda *args: (   # pylint: disable=protected-access
        both.wait(TIMEOUT), original(*args))
    manager.submit("global_mean", ASK)
    manager.submit("global_mean", {"question": MUSCLE})
    assert switch.reached.wait(TIMEOUT)
    switch.second_thread()     # "blocked" here; "arrived" where the count has no lock
    switch.release.set()
    assert manager.drain(timeout=TIMEOUT)
    assert manager.num_jobs() == 0


def test_submits_racing_a_shutdown_are_each_run_once_or_refused(tiny_index, tmp_path,
                                                               monkeypatch):
    runs = []   # job numbers whose result was written; list.append is atomic
    original = JobStore.write_result

    def counted(store, number, *answer):
        runs.append(number)
        original(store, number, *answer)

    monkeypatch.setattr(JobStore, "write_result", counted)
    for round_number in range(20):
        runs.clear()
        pool = ThreadPool(2)
        manager = JobManager(tiny_index, pool, JobStore(tmp_path / str(round_number)))
        manager.start()
        start = threading.Barrier(9)
        accepted, refused = [], []

        def client():
            start.wait(timeout=TIMEOUT)
            for _ in range(5):
                try:
                    accepted.append(manager.submit("global_mean", ASK))
                except ShuttingDown:
                    refused.append(True)

        def stopper():
            start.wait(timeout=TIMEOUT)
            manager.shutdown()

        threads = [threading.Thread(target=client) for _ in range(8)]
        threads.append(threading.Thread(target=stopper))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        assert manager.drain(timeout=TIMEOUT)
        manager.close()
        assert len(accepted) + len(refused) == 40
        assert sorted(runs) == sorted(job_number(job_id) for job_id in accepted)
        numbers = sorted(job_number(job_id) for job_id in accepted)
        assert numbers == list(range(1, len(accepted) + 1))


# -- waiting for a result ------------------------------------------------------------

def test_result_waits_for_a_running_job_and_is_woken_when_it_finishes(managers, waiters_made):
    pool, gate = held_pool()
    manager = managers(pool=pool)
    try:
        manager.submit("global_mean", ASK)
        assert manager.result("job_id_1", wait=0.02).status == "running"   # gave up waiting
        answers = []
        pollers = [threading.Thread(target=lambda: answers.append(
            manager.result("job_id_1", wait=30)), daemon=True) for _ in range(2)]
        for poller in pollers:
            poller.start()
        waiters_made(1, 2)   # the second waiter of job 1 (the first gave up), with both pollers
    finally:
        gate.set()   # the job runs; its finish wakes both pollers, long before 30 s
    for poller in pollers:
        poller.join(timeout=TIMEOUT)
        assert not poller.is_alive(), "a poller was not woken when its job finished"
    assert [answer.status for answer in answers] == ["done", "done"]
    assert manager._waiters == {}   # pylint: disable=protected-access


def test_a_waiter_that_wakes_for_nothing_waits_again(managers):
    """POSIX allows a wake-up without a notify: the wait must re-check."""
    pool, gate = held_pool()
    manager = managers(pool=pool)
    try:
        manager.submit("global_mean", ASK)
        spurious = SpuriousCondition(manager._mutex)   # pylint: disable=protected-access
        waiter = jobs_module._Waiter(manager._mutex)   # pylint: disable=protected-access
        waiter.finished = spurious
        manager._waiters[0] = waiter   # pylint: disable=protected-access
        answers = []
        poller = threading.Thread(target=lambda: answers.append(
            manager.result("job_id_1", wait=30)), daemon=True)
        poller.start()
        assert spurious.second_wait.wait(2.0), "the first (spurious) wake-up was believed"
    finally:
        gate.set()
    poller.join(timeout=TIMEOUT)
    assert [answer.status for answer in answers] == ["done"]


def test_a_finishing_job_wakes_only_its_own_waiters(managers, waiters_made):
    """Each waited-for job has a Condition of its own: a poller of job 2 is
    not woken when job 1 finishes."""
    pool, gate = held_pool()
    manager = managers(pool=pool)
    second_gate = threading.Event()
    try:
        manager.submit("global_mean", ASK)
        pool.submit(lambda: second_gate.wait(TIMEOUT))   # holds the worker after job 1
        manager.submit("global_mean", {"question": MUSCLE})
        poller = threading.Thread(target=lambda: manager.result("job_id_2", wait=30),
                                  daemon=True)
        poller.start()
        condition = waiters_made(0, 1).finished   # job 2's, with its poller in it
        notified = []
        original = condition.notify_all
        condition.notify_all = lambda: (notified.append(1), original())
        gate.set()   # job 1 runs and finishes
        assert manager.result("job_id_1", wait=TIMEOUT).status == "done"
        assert notified == []
    finally:
        gate.set()
        second_gate.set()
    poller.join(timeout=TIMEOUT)
    assert not poller.is_alive() and notified == [1]


def watched_manager(managers, pause, where):
    """A one-worker manager on an event bus, whose worker stops right after
    letting go of the job mutex in the method called ``where``; and a
    subscription to the bus."""
    bus = EventBus()
    manager = managers(pool=ThreadPool(1, events=bus), events=bus)
    manager._mutex = PausingLock(pause, in_function(where))   # pylint: disable=protected-access
    return manager, bus.subscribe()


def kinds_of(subscription):
    return [(kind, fields.get("job_id")) for batch in [subscription.get(0)] for _, kind, fields
            in batch or []]


def test_a_job_is_told_finished_before_anyone_can_see_it_done(managers):
    """Once a job reads done, its job_finished event is already out (it is
    published inside the same critical section), so a page never shows a
    result before the event that explains it."""
    pause = Pause()
    manager, subscription = watched_manager(managers, pause, "_finish")
    job_id = manager.submit("global_mean", ASK)
    try:
        assert pause.reached.wait(TIMEOUT)   # the worker has just let go of the mutex
        assert manager.result(job_id).status == "done"
        assert ("job_finished", job_id) in kinds_of(subscription)
    finally:
        pause.release.set()


def test_a_job_is_told_started_before_anyone_can_see_it_running(managers):
    pause = Pause()
    manager, subscription = watched_manager(managers, pause, "_mark_started")
    job_id = manager.submit("global_mean", ASK)
    try:
        assert pause.reached.wait(TIMEOUT)
        assert manager.record(job_id)["status"] == "running"
        assert ("job_started", job_id) in kinds_of(subscription)
    finally:
        pause.release.set()


# -- the rest -------------------------------------------------------------------------

def test_equal_queries_are_computed_once(manager, monkeypatch):
    from lestats import statistics
    calls = []

    def counted(means):
        calls.append(1)
        return {"global_mean": means.global_mean}

    monkeypatch.setitem(statistics.STATISTICS, "global_mean", statistics.Statistic(counted))
    for _ in range(10):
        manager.submit("global_mean", ASK)
        manager.drain(timeout=TIMEOUT)
    manager.submit("global_mean", {"question": MUSCLE})
    manager.drain(timeout=TIMEOUT)
    assert len(calls) == 2
    assert json.loads(manager.result("job_id_10").data_json) == {"global_mean": 14.5}


def test_slow_motion_makes_each_job_last_at_least_that_long(managers):
    manager = managers(workers=1, slow_motion_ms=60)
    began = time.monotonic()
    manager.submit("global_mean", ASK)
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    assert time.monotonic() - began >= 0.12
    assert manager.pool_snapshot()["slow_motion_ms"] == 60


def test_statuses_are_kept_small(manager):
    """Records are parallel arrays: a job costs a few dozen bytes, not a
    dict and a record object (the benchmark measures the whole server)."""
    table = manager._table   # pylint: disable=protected-access
    for _ in range(1000):
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=TIMEOUT)
    assert table.status[0] == DONE and len(table) == 1000
    assert len({id(query) for query in table.queries}) == 1   # one shared Query
    assert ERROR not in table.status
