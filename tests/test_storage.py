"""The journal of accepted jobs, the result files, and recovery at start."""

import json
import os
import threading

import pytest

from lestats.storage import JOURNAL_NAME, AcceptedJob, GroupSync, JobStore


def job(number, question="q"):
    return AcceptedJob(number, "global_mean", {"question": question})


def test_a_result_file_appears_whole_under_its_name(tmp_path):
    store = JobStore(tmp_path)
    store.recover()
    store.write_result(5, b'{"a": 1}')
    assert store.read_result(5) == b'{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [JOURNAL_NAME, "job_id_5.json"]


def test_accepted_jobs_are_journaled_and_come_back_until_they_have_a_result(tmp_path):
    store = JobStore(tmp_path)
    assert store.recover().next_number == 1
    for number in (1, 2, 3):
        store.accept(job(number))
    store.write_result(2, b'{"global_mean": 1.0}')
    store.close()
    again = JobStore(tmp_path).recover()
    assert again.finished == [2]
    assert again.pending == [job(1), job(3)]
    assert again.next_number == 4


def test_recovery_compacts_the_journal_to_the_pending_jobs(tmp_path):
    store = JobStore(tmp_path)
    store.recover()
    for number in range(1, 101):
        store.accept(job(number))
        if number != 50:
            store.write_result(number, b"{}")
    store.close()
    assert JobStore(tmp_path).recover().pending == [job(50)]
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert [json.loads(line)["job"] for line in lines] == [50]


def test_a_torn_last_line_and_leftovers_of_a_crash_are_ignored(tmp_path, caplog):
    (tmp_path / JOURNAL_NAME).write_text(
        '{"job": 1, "endpoint": "global_mean", "body": {"question": "q"}}\n{"job": 2, "endp')
    (tmp_path / ".job_id_1.json.tmp").write_text("{")
    (tmp_path / "job_id_3.json").write_text("")   # renamed, never flushed: a power cut
    recovered = JobStore(tmp_path).recover()
    assert recovered.pending == [job(1)] and recovered.finished == []
    assert recovered.next_number == 2
    assert "1 unreadable journal line(s) ignored" in caplog.text
    assert not (tmp_path / ".job_id_1.json.tmp").exists()
    assert not (tmp_path / "job_id_3.json").exists()


@pytest.mark.parametrize("fsync", [True, False])
def test_many_threads_append_whole_lines(tmp_path, fsync):
    store = JobStore(tmp_path, fsync=fsync)
    store.recover()
    start = threading.Barrier(8)

    def writer(first):
        start.wait(timeout=5)
        for number in range(first, first + 100):
            store.accept(job(number, "x" * (number % 300)))

    threads = [threading.Thread(target=writer, args=(1 + 100 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    store.close()
    pending = JobStore(tmp_path).recover().pending
    assert [j.number for j in pending] == list(range(1, 801))
    assert all(j.body == {"question": "x" * (j.number % 300)} for j in pending)


def test_group_sync_flushes_once_for_the_writes_waiting_behind_a_flush(tmp_path, monkeypatch):
    """Forced interleaving: the leader's flush is held until three more
    writers are waiting; one more flush then covers all three."""
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    sync = GroupSync(fd)
    flushes = []
    in_flush = threading.Event()
    release = threading.Event()

    def slow_fdatasync(descriptor):
        flushes.append(descriptor)
        if len(flushes) == 1:
            in_flush.set()
            assert release.wait(timeout=5)

    class CountingCondition(threading.Condition):
        """Sets ``three_waiting`` when three threads wait on it."""
        waiting = 0
        three_waiting = threading.Event()

        def wait(self, timeout=None):
            CountingCondition.waiting += 1   # under the mutex, like all of sync()
            if CountingCondition.waiting == 3:
                CountingCondition.three_waiting.set()
            return super().wait(timeout)

    sync._flushed = CountingCondition(sync._mutex)   # pylint: disable=protected-access
    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    leader = threading.Thread(target=sync.sync)
    leader.start()
    assert in_flush.wait(timeout=5)
    followers = [threading.Thread(target=sync.sync) for _ in range(3)]
    for follower in followers:
        follower.start()
    assert CountingCondition.three_waiting.wait(timeout=5)
    release.set()
    for thread in [leader, *followers]:
        thread.join(timeout=5)
    os.close(fd)
    assert len(flushes) == 2


def test_a_failed_flush_is_reported_to_its_caller_and_the_next_one_retries(tmp_path,
                                                                            monkeypatch):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    sync = GroupSync(fd)
    calls = []

    def failing_once(_fd):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fdatasync", failing_once)
    with pytest.raises(OSError):
        sync.sync()
    sync.sync()
    os.close(fd)
    assert len(calls) == 2
