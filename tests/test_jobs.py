"""Jobs: gap-free ids, statuses, atomic result files, restart numbering,
failures, and submit racing shutdown (forced with Events)."""

import errno
import json
import threading

import pytest

from lestats.jobs import (DONE, ERROR, RUNNING, AlreadyShuttingDown, JobManager,
                          ShuttingDown, UnknownJob, job_number)
from lestats.storage import JobStore
from lestats.pool import ThreadPool
from lestats.statistics import QueryError

from conftest import MUSCLE, OBESITY

ASK = {"question": OBESITY}


@pytest.fixture
def pool():
    pool = ThreadPool(2)
    yield pool
    pool.shutdown()
    pool.join(timeout=5)


@pytest.fixture
def manager(tiny_index, pool, tmp_path):
    return JobManager(tiny_index, pool, JobStore(tmp_path / "results"))


def test_ids_count_from_one_and_results_are_files(manager, tmp_path):
    ids = [manager.submit("global_mean", ASK) for _ in range(3)]
    assert ids == ["job_id_1", "job_id_2", "job_id_3"]
    assert manager.drain(timeout=5)
    result = manager.result("job_id_2")
    assert result.status == DONE
    assert json.loads(result.data_json) == {"global_mean": pytest.approx(14.5)}
    assert json.loads((tmp_path / "results" / "job_id_2.json").read_text()) == json.loads(
        result.data_json)
    assert manager.statuses() == [("job_id_1", DONE), ("job_id_2", DONE), ("job_id_3", DONE)]
    assert manager.num_jobs() == 0


def test_a_bad_body_uses_no_id(manager):
    with pytest.raises(QueryError):
        manager.submit("global_mean", {"question": "nope"})
    assert manager.submit("global_mean", ASK) == "job_id_1"


def test_status_and_num_jobs_agree_while_a_job_waits(tiny_index, tmp_path):
    gate = threading.Event()
    pool = ThreadPool(1)
    try:
        manager = JobManager(tiny_index, pool, JobStore(tmp_path))
        pool.submit(gate.wait)   # keeps the only worker busy
        manager.submit("global_mean", ASK)
        assert manager.result("job_id_1").status == RUNNING
        assert manager.statuses() == [("job_id_1", RUNNING)]
        assert manager.num_jobs() == 1
        gate.set()
        assert manager.drain(timeout=5)
        assert manager.num_jobs() == 0
    finally:
        gate.set()
        pool.shutdown()


@pytest.mark.parametrize("job_id", [
    "job_id_0", "job_id_01", "job_id_-1", "job_id_+1", "job_id_1x", "job_id_", "job_id_1 ",
    "../job_id_1", "job_id_1/../x", "job_id_%31", "JOB_ID_1", "job_id_\u0661",
    "job_id_" + "9" * 30, "", "..", "%2F",
])
def test_malformed_job_ids_are_unknown(manager, job_id):
    with pytest.raises(UnknownJob):
        manager.result(job_id)


def test_an_id_never_issued_is_unknown(manager):
    manager.submit("global_mean", ASK)
    with pytest.raises(UnknownJob):
        manager.result("job_id_2")
    assert job_number("job_id_1") == 1


def test_accepted_jobs_without_a_result_run_again_after_a_restart(tiny_index, pool, tmp_path):
    first = JobManager(tiny_index, ThreadPool(1), JobStore(tmp_path))
    first.submit("global_mean", ASK)
    first.submit("state_mean", {"question": OBESITY, "state": "Ohio"})
    first.drain(timeout=5)
    (tmp_path / "job_id_2.json").unlink()   # as if killed before job 2 finished
    again = JobManager(tiny_index, pool, JobStore(tmp_path))
    assert again.drain(timeout=5)
    assert json.loads(again.result("job_id_2").data_json) == {"Ohio": 6.0}
    assert again.statuses() == [("job_id_1", DONE), ("job_id_2", DONE)]
    assert again.submit("global_mean", ASK) == "job_id_3"


def test_a_job_that_cannot_run_on_new_data_ends_in_error(tiny_index, pool, tmp_path):
    (tmp_path / "accepted.jsonl").write_text(
        '{"job": 4, "endpoint": "global_mean", "body": {"question": "gone"}}\n')
    manager = JobManager(tiny_index, pool, JobStore(tmp_path))
    result = manager.result("job_id_4")
    assert result.status == ERROR and "cannot run again" in result.reason
    assert manager.submit("global_mean", ASK) == "job_id_5"


def test_numbering_continues_after_a_restart(tiny_index, pool, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "job_id_7.json").write_text('{"global_mean": 1.0}')
    (results / "job_id_3.json").write_text('{"global_mean": 2.0}')
    for name in ("job_id_08.json", "job_id_x.json", "notes.txt"):
        (results / name).write_text("ignored")
    (results / ".job_id_9.json.tmp").write_text('{"half')   # a crash mid-write
    manager = JobManager(tiny_index, pool, JobStore(results))
    assert manager.statuses() == [("job_id_3", DONE), ("job_id_7", DONE)]
    assert manager.submit("global_mean", ASK) == "job_id_8"
    assert not (results / ".job_id_9.json.tmp").exists()
    assert json.loads(manager.result("job_id_7").data_json) == {"global_mean": 1.0}


def test_a_result_that_cannot_be_written_ends_in_error_and_the_pool_goes_on(
        manager, monkeypatch, caplog):
    original = JobStore.write_result

    def disk_full(store, number, data):
        if number == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(store, number, data)

    monkeypatch.setattr(JobStore, "write_result", disk_full)
    manager.submit("global_mean", ASK)
    manager.submit("global_mean", ASK)
    assert manager.drain(timeout=5)
    failed = manager.result("job_id_1")
    assert failed.status == ERROR and "No space left on device" in failed.reason
    assert manager.result("job_id_2").status == DONE
    assert manager.statuses() == [("job_id_1", ERROR), ("job_id_2", DONE)]
    assert "job_id_1 failed" in caplog.text


def test_a_statistic_that_raises_ends_in_error(manager, monkeypatch):
    from lestats import statistics

    def broken(_means):
        raise ArithmeticError("broken statistic")

    monkeypatch.setitem(statistics.STATISTICS, "global_mean", statistics.Statistic(broken))
    workers_before = {t for t in threading.enumerate() if t.name.startswith("lestats-worker")}
    for _ in range(5):
        manager.submit("global_mean", ASK)
    assert manager.drain(timeout=5)
    result = manager.result("job_id_1")
    assert result.status == ERROR and "broken statistic" in result.reason
    assert manager.num_jobs() == 0
    workers_after = {t for t in threading.enumerate() if t.name.startswith("lestats-worker")}
    assert workers_after == workers_before and len(workers_after) >= 2   # the pool keeps its size


def test_a_result_file_deleted_behind_our_back_is_an_error(manager, tmp_path):
    manager.submit("global_mean", ASK)
    manager.drain(timeout=5)
    (tmp_path / "results" / "job_id_1.json").unlink()
    result = manager.result("job_id_1")
    assert result.status == ERROR and "unreadable" in result.reason


def test_shutdown_refuses_new_jobs_and_a_second_shutdown(manager):
    manager.submit("global_mean", ASK)
    manager.shutdown()
    with pytest.raises(ShuttingDown):
        manager.submit("global_mean", ASK)
    with pytest.raises(AlreadyShuttingDown):
        manager.shutdown()
    assert manager.drain(timeout=5)
    assert manager.statuses() == [("job_id_1", DONE)]


class GatedPool(ThreadPool):
    """A pool whose submit or shutdown stops at a gate, to force an interleaving."""

    def __init__(self, size):
        super().__init__(size)
        self.in_submit = threading.Event()
        self.release_submit = threading.Event()
        self.release_submit.set()

    def submit(self, task):
        self.in_submit.set()
        assert self.release_submit.wait(timeout=5)
        super().submit(task)


def test_a_shutdown_that_arrives_mid_submit_waits_and_the_job_still_runs(tiny_index, tmp_path):
    pool = GatedPool(1)
    manager = JobManager(tiny_index, pool, JobStore(tmp_path))
    pool.release_submit.clear()
    submitted = []
    submitter = threading.Thread(target=lambda: submitted.append(
        manager.submit("global_mean", ASK)))
    submitter.start()
    assert pool.in_submit.wait(timeout=5)       # the submit holds the manager's mutex
    shut = threading.Event()
    stopper = threading.Thread(target=lambda: (manager.shutdown(), shut.set()))
    stopper.start()
    assert not shut.wait(timeout=0.1)            # shutdown waits for the submit
    pool.release_submit.set()
    submitter.join(timeout=5)
    stopper.join(timeout=5)
    assert shut.is_set() and submitted == ["job_id_1"]
    assert manager.drain(timeout=5)
    assert manager.statuses() == [("job_id_1", DONE)]
    with pytest.raises(ShuttingDown):
        manager.submit("global_mean", ASK)


def numbers_of(job_ids):
    return sorted(job_number(job_id) for job_id in job_ids)


def test_submits_racing_a_shutdown_are_each_run_once_or_refused(tiny_index, tmp_path,
                                                               monkeypatch):
    runs = []   # job numbers whose result was written; list.append is atomic
    original = JobStore.write_result

    def counted(store, number, data):
        runs.append(number)
        original(store, number, data)

    monkeypatch.setattr(JobStore, "write_result", counted)
    for round_number in range(30):
        runs.clear()
        pool = ThreadPool(2)
        manager = JobManager(tiny_index, pool, JobStore(tmp_path / str(round_number)))
        start = threading.Barrier(9)
        accepted, refused = [], []

        def client():
            start.wait(timeout=5)
            for _ in range(5):
                try:
                    accepted.append(manager.submit("global_mean", ASK))
                except ShuttingDown:
                    refused.append(True)

        def stopper():
            start.wait(timeout=5)
            manager.shutdown()

        threads = [threading.Thread(target=client) for _ in range(8)]
        threads.append(threading.Thread(target=stopper))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert manager.drain(timeout=10)
        assert len(accepted) + len(refused) == 40
        assert sorted(runs) == numbers_of(accepted)   # each accepted job ran exactly once
        numbers = sorted(job_number(job_id) for job_id in accepted)
        assert numbers == list(range(1, len(accepted) + 1))
        assert manager.statuses() == [(f"job_id_{n}", DONE) for n in numbers]
        written = sorted(int(p.stem[7:]) for p in (tmp_path / str(round_number)).glob("job_id_*"))
        assert written == numbers


def test_result_waits_a_little_for_a_running_job(tiny_index, tmp_path):
    gate = threading.Event()
    pool = ThreadPool(1)
    try:
        manager = JobManager(tiny_index, pool, JobStore(tmp_path))
        pool.submit(gate.wait)
        manager.submit("global_mean", ASK)
        assert manager.result("job_id_1", wait=0.02).status == RUNNING   # gave up waiting
        waiting = []
        poller = threading.Thread(target=lambda: waiting.append(
            manager.result("job_id_1", wait=10)))
        poller.start()
        gate.set()   # the job can now run; the waiting poller is woken when it finishes
        poller.join(timeout=10)
        assert waiting[0].status == DONE
    finally:
        gate.set()
        pool.shutdown()


def test_equal_queries_are_computed_once(manager, monkeypatch):
    from lestats import statistics
    calls = []

    def counted(means):
        calls.append(1)
        return {"global_mean": means.global_mean}

    monkeypatch.setitem(statistics.STATISTICS, "global_mean", statistics.Statistic(counted))
    for _ in range(10):
        manager.submit("global_mean", ASK)
        manager.drain(timeout=5)
    manager.submit("global_mean", {"question": MUSCLE})
    manager.drain(timeout=5)
    assert len(calls) == 2
    assert json.loads(manager.result("job_id_10").data_json) == {"global_mean": 14.5}
