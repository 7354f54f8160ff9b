"""The results directory: one owner, the journal (group commit, cut back on
failure, segments, re-created after a wipe), result files (atomic, never
through a link), and recovery from whatever a crash or a person left."""

import errno
import json
import os
import shutil
import stat
import threading
import time
import tracemalloc

import pytest

from lestats import journal as journal_module, storage
from lestats.journal import AcceptedJob, JournalError, parse_journal_line
from lestats.storage import LOCK_NAME, DirectoryInUse, DiskFull, JobStore, StoreError

from lestats.lab.forcing import TIMEOUT, CountingCondition


def job(number, question="q"):
    return AcceptedJob(number, "global_mean", question)


@pytest.fixture
def stores():
    """Opens JobStores and closes them all at the end."""
    opened = []

    def open_store(directory, **options):
        store = JobStore(directory, **options)
        recovered = store.open("data.csv")
        opened.append(store)
        return store, recovered

    yield open_store
    for store in opened:
        store.close()


def segments(directory):
    return sorted(p.name for p in directory.glob(".journal-*.jsonl"))


def journal_lines(directory):
    return [json.loads(line) for name in segments(directory)
            for line in (directory / name).read_text().splitlines()]


def listing(directory):
    """Every entry under ``directory`` with its bytes (or link target) and mtime."""
    found = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        content = os.readlink(path) if path.is_symlink() else (
            path.read_bytes() if path.is_file() else None)
        found[str(path)] = (info.st_mode, info.st_mtime_ns, content)
    return found


# -- result files -----------------------------------------------------------------

def test_a_result_file_appears_whole_under_its_name(tmp_path, stores):
    store, _ = stores(tmp_path)
    store.write_result(5, b'{"a": 1}')
    assert store.read_result(5) == b'{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".journal-1.jsonl", LOCK_NAME, "job_id_5.json"]


def test_results_of_the_same_answer_are_files_of_their_own(tmp_path, stores):
    """Issue 17 (3): a write to one result file changes that job alone."""
    store, _ = stores(tmp_path)
    for number in range(1, 101):
        store.write_result(number, b'{"a": 1}')
    assert {(tmp_path / f"job_id_{n}.json").stat().st_nlink for n in range(1, 101)} == {1}
    with open(tmp_path / "job_id_7.json", "r+b") as edited:   # edited in place
        edited.write(b'{"b": 2}')
    assert store.read_result(7) == b'{"b": 2}'
    assert all(store.read_result(n) == b'{"a": 1}' for n in range(1, 101) if n != 7)
    assert not list(tmp_path.glob(".job_id_*.tmp")) and not (tmp_path / ".answers").exists()


def test_a_truncated_result_fails_that_job_alone_after_a_restart(tmp_path, stores):
    """Issue 17 (3): a damaged result never fails jobs whose own files are intact."""
    store = JobStore(tmp_path)
    store.open("data.csv")
    for number in range(1, 51):
        store.accept(job(number))
        store.write_result(number, b'{"a": 1}')
    store.finished_below(51)
    store.close()
    (tmp_path / "job_id_20.json").write_bytes(b"")          # a careless >
    for segment in tmp_path.glob(".journal-*.jsonl"):       # the journal rolled over
        segment.write_text('{"high":50}\n')
    _, recovered = stores(tmp_path)
    assert recovered.failed == {20: "result file is empty"}
    assert recovered.finished == [n for n in range(1, 51) if n != 20]


def test_results_from_the_shared_copies_of_earlier_versions_are_still_read(tmp_path, stores):
    answers = tmp_path / ".answers"
    answers.mkdir()
    (answers / "old.json").write_text('{"a": 1}')
    for number in (1, 2):
        os.link(answers / "old.json", tmp_path / f"job_id_{number}.json")
    (tmp_path / "job_id_3.json").write_bytes(storage.EXPIRED_MARK)   # an old expiry mark
    store, recovered = stores(tmp_path)
    assert recovered.finished == [1, 2] and recovered.expired == [3]
    assert store.read_result(2) == b'{"a": 1}'
    assert (answers / "old.json").exists()   # never touched: nothing reads .answers/


def test_a_result_larger_than_the_limit_is_not_written_and_not_served(tmp_path, stores,
                                                                      monkeypatch):
    """Issue 17 (4): a result file is served whole or not at all."""
    store, _ = stores(tmp_path)
    store.max_result = 10
    with pytest.raises(storage.ResultTooLarge, match="more than the"):
        store.write_result(1, b'{"a": "' + b"x" * 20 + b'"}')
    assert not (tmp_path / "job_id_1.json").exists()
    (tmp_path / "job_id_2.json").write_bytes(b'{"a": "' + b"x" * 20 + b'"}')   # planted
    with pytest.raises(OSError, match="larger than 10 bytes"):
        store.read_result(2)
    monkeypatch.setattr(storage, "MAX_RESULT", 10)
    store.close()
    _, recovered = stores(tmp_path)
    assert recovered.failed == {2: "result file is too large"}


def test_a_planted_link_is_never_followed(tmp_path, stores):
    secret = tmp_path / "secret"
    secret.write_text("root's")
    results = tmp_path / "results"
    store, _ = stores(results)
    (results / "job_id_7.json").symlink_to(secret)
    (results / ".job_id_9.json.tmp").symlink_to(secret)
    with pytest.raises(OSError):
        store.read_result(7)
    store.write_result(9, b'{"x": 1}')
    assert secret.read_text() == "root's"
    assert store.read_result(9) == b'{"x": 1}'
    assert not (results / "job_id_9.json").is_symlink()


def test_a_fifo_is_not_read(tmp_path, stores):
    store, _ = stores(tmp_path)
    os.mkfifo(tmp_path / "job_id_3.json")
    with pytest.raises(OSError, match="not a regular file"):
        store.read_result(3)


# -- one owner --------------------------------------------------------------------

def test_a_second_store_on_a_directory_in_use_stops_and_changes_nothing(tmp_path, stores):
    store, _ = stores(tmp_path)
    store.accept(job(1))
    (tmp_path / ".job_id_4.json.tmp").write_text("{")   # what a restart would clean up
    (tmp_path / "job_id_6.json").write_text("")          # and this
    before = listing(tmp_path)
    with pytest.raises(DirectoryInUse, match=f"in use by another lestats server "
                                             f"\\(pid {os.getpid()}\\)"):
        JobStore(tmp_path).open("other.csv")
    assert listing(tmp_path) == before
    store.accept(job(2))   # the owner goes on
    assert [line.get("job") for line in journal_lines(tmp_path)] == [None, 1, 2]


def test_a_closed_store_lets_the_next_owner_in(tmp_path, stores):
    first = JobStore(tmp_path)
    first.open("data.csv")
    first.accept(job(1))
    first.close()
    _, recovered = stores(tmp_path)
    assert [j.number for j in recovered.pending] == [1]


def test_a_directory_every_user_may_write_is_refused_unless_sticky(tmp_path, stores):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(StoreError, match="writable by every user"):
        JobStore(shared).open("data.csv")
    assert list(shared.iterdir()) == []
    shared.chmod(0o777 | stat.S_ISVTX)
    stores(shared)


# -- the journal ---------------------------------------------------------------------

def test_accepted_jobs_come_back_until_they_have_a_result(tmp_path, stores, caplog):
    store = JobStore(tmp_path)
    assert store.open("data.csv").next_number == 1
    store.close()
    store = JobStore(tmp_path)
    assert store.open("data.csv").next_number == 1   # an empty journal is not a damaged one
    for number in (1, 2, 3):
        store.accept(job(number))
    store.write_result(2, b'{"global_mean": 1.0}')
    store.close()
    _, again = stores(tmp_path)
    assert again.finished == [2]
    assert again.pending == [job(1), job(3)]
    assert again.next_number == 4
    assert "skipped" not in caplog.text


def test_recovery_rewrites_the_journal_with_just_the_pending_jobs(tmp_path, stores):
    store = JobStore(tmp_path)
    store.open("data.csv")
    for number in range(1, 101):
        store.accept(job(number))
        if number != 50:
            store.write_result(number, b"{}")
    store.close()
    _, recovered = stores(tmp_path)
    assert recovered.pending == [job(50)]
    assert segments(tmp_path) == [".journal-2.jsonl"]
    assert journal_lines(tmp_path) == [
        {"high": 100}, {"job": 50, "statistic": "global_mean", "question": "q", "state": None}]


@pytest.mark.parametrize("fsync", [True, False])
def test_many_threads_append_whole_lines_and_every_one_returns(tmp_path, fsync):
    store = JobStore(tmp_path, fsync=fsync)
    store.open("data.csv")
    store._journal.timeout = 3.0   # pylint: disable=protected-access
    start = threading.Barrier(8)
    failures = []

    def writer(first):
        start.wait(timeout=TIMEOUT)
        for number in range(first, first + 100):
            try:
                store.accept(job(number, "x" * (number % 300)))
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=writer, args=(1 + 100 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT * 2)
    store.close()
    assert failures == []
    again = JobStore(tmp_path)
    pending = again.open("data.csv").pending
    again.close()
    assert [j.number for j in pending] == list(range(1, 801))
    assert all(j.question == "x" * (j.number % 300) for j in pending)


class StuckWrite:
    """Replaces os.write for one file descriptor: the first call stops at a
    gate (or fails after writing ``partial`` bytes); other descriptors are
    written as usual."""

    def __init__(self, fd, partial=None, gate=None):
        self.fd, self.partial, self.gate = fd, partial, gate
        self.entered = threading.Event()
        self.real = os.write

    def __call__(self, fd, data):
        if fd != self.fd:
            return self.real(fd, data)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(TIMEOUT)
        if self.partial is not None:
            self.real(fd, bytes(data)[:self.partial])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd, data)


def test_fsync_works_where_there_is_no_fdatasync(tmp_path, stores, monkeypatch):
    """Issue 17 (13): macOS has no os.fdatasync; --fsync then uses fsync."""
    monkeypatch.delattr(journal_module.os, "fdatasync")
    store, _ = stores(tmp_path, fsync=True)
    store.accept(job(1))
    assert [line.get("job") for line in journal_lines(tmp_path)] == [None, 1]


def test_a_short_write_is_cut_back_and_the_appender_told(tmp_path, stores, monkeypatch):
    store, _ = stores(tmp_path)
    store.accept(job(1))
    segment = tmp_path / segments(tmp_path)[0]
    before = segment.read_bytes()
    monkeypatch.setattr(storage.os, "write",
                        StuckWrite(store._journal.segments._fd, partial=10))   # pylint: disable=protected-access
    with pytest.raises(JournalError, match="No space left on device"):
        store.accept(job(2))
    monkeypatch.undo()
    assert segment.read_bytes() == before
    store.accept(job(3))
    store.close()
    _, recovered = stores(tmp_path)
    assert [j.number for j in recovered.pending] == [1, 3]
    assert recovered.next_number == 4


def test_a_failed_flush_is_reported_to_every_appender_it_covered(tmp_path, stores,
                                                                 monkeypatch):
    store, _ = stores(tmp_path, fsync=True)
    gate, calls = threading.Event(), []
    in_flush = threading.Event()

    def fdatasync(_fd):
        calls.append(1)
        if len(calls) == 1:
            in_flush.set()
            gate.wait(TIMEOUT)        # the first batch's flush, held
        else:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage.os, "fdatasync", fdatasync)
    outcomes = {}

    def append(number):
        try:
            store.accept(job(number))
            outcomes[number] = "ok"
        except JournalError as exc:
            outcomes[number] = exc.strerror

    journal = store._journal   # pylint: disable=protected-access
    journal._written = CountingCondition(journal._mutex)   # pylint: disable=protected-access
    first = threading.Thread(target=append, args=(1,))
    first.start()
    assert in_flush.wait(TIMEOUT)     # job 1's appender leads, its flush held
    others = [threading.Thread(target=append, args=(n,)) for n in (2, 3)]
    for thread in others:
        thread.start()
    assert journal._written.wait_for_waiters(2)   # pylint: disable=protected-access
    gate.set()   # batch 1 succeeds; batch 2 (jobs 2 and 3) fails its one flush
    for thread in [first, *others]:
        thread.join(timeout=TIMEOUT)
    assert outcomes == {1: "ok", 2: "Input/output error", 3: "Input/output error"}
    assert len(calls) == 2


def test_every_appender_is_woken_as_soon_as_its_line_is_written(tmp_path, stores,
                                                                monkeypatch):
    """Three appenders wait behind a stuck write; the next batch writes all
    three lines, and all three must be woken then (not after a timeout)."""
    store, _ = stores(tmp_path)
    journal = store._journal   # pylint: disable=protected-access
    journal._written = CountingCondition(journal._mutex)   # pylint: disable=protected-access
    stuck = StuckWrite(journal.segments._fd, gate=threading.Event())   # pylint: disable=protected-access
    monkeypatch.setattr(storage.os, "write", stuck)
    threads = [threading.Thread(target=store.accept, args=(job(n),)) for n in range(1, 5)]
    threads[0].start()
    assert stuck.entered.wait(TIMEOUT)
    for thread in threads[1:]:
        thread.start()
    assert journal._written.wait_for_waiters(3)   # pylint: disable=protected-access
    stuck.gate.set()
    for thread in threads:
        thread.join(timeout=2.0)   # the journal's own timeout is 5 s here
    assert not any(thread.is_alive() for thread in threads)


def test_the_writer_holds_no_lock_while_it_writes(tmp_path, stores, monkeypatch):
    store, _ = stores(tmp_path)
    journal = store._journal   # pylint: disable=protected-access
    stuck = StuckWrite(journal.segments._fd, gate=threading.Event())   # pylint: disable=protected-access
    monkeypatch.setattr(storage.os, "write", stuck)
    appender = threading.Thread(target=store.accept, args=(job(1),))
    appender.start()
    assert stuck.entered.wait(TIMEOUT)
    try:
        assert journal._mutex.acquire(timeout=1.0)   # pylint: disable=protected-access
        journal._mutex.release()   # pylint: disable=protected-access
    finally:
        stuck.gate.set()
    appender.join(timeout=TIMEOUT)


def test_a_line_still_waiting_when_the_journal_closes_is_refused_not_written(tmp_path, stores,
                                                                             monkeypatch):
    """Job 1's write is stuck; job 2 waits for its turn and close() for the
    write to end.  Once it ends, job 2 must be refused ("closed"), never
    written after (or while) the segment is closed."""
    store, _ = stores(tmp_path)
    journal = store._journal   # pylint: disable=protected-access
    journal._written = CountingCondition(journal._mutex)   # pylint: disable=protected-access
    stuck = StuckWrite(journal.segments._fd, gate=threading.Event())   # pylint: disable=protected-access
    monkeypatch.setattr(storage.os, "write", stuck)
    outcomes = {}

    def append(number):
        try:
            store.accept(job(number))
            outcomes[number] = "ok"
        except JournalError as exc:
            outcomes[number] = exc.strerror

    first, second = (threading.Thread(target=append, args=(n,)) for n in (1, 2))
    closer = threading.Thread(target=journal.close)
    first.start()
    assert stuck.entered.wait(TIMEOUT)
    second.start()
    assert journal._written.wait_for_waiters(1)   # pylint: disable=protected-access
    closer.start()
    assert journal._written.wait_for_waiters(2)   # pylint: disable=protected-access
    stuck.gate.set()
    for thread in (first, second, closer):
        thread.join(timeout=TIMEOUT)
    assert outcomes == {1: "ok", 2: "the journal is closed"}
    lines = (tmp_path / segments(tmp_path)[0]).read_bytes().splitlines()
    assert [json.loads(line).get("job") for line in lines[1:]] == [1]


def test_an_append_waits_behind_a_stuck_write_no_longer_than_its_timeout(tmp_path, stores,
                                                                         monkeypatch):
    store, _ = stores(tmp_path)
    journal = store._journal   # pylint: disable=protected-access
    journal.timeout = 0.2
    stuck = StuckWrite(journal.segments._fd, gate=threading.Event())   # pylint: disable=protected-access
    monkeypatch.setattr(storage.os, "write", stuck)
    leader = threading.Thread(target=store.accept, args=(job(1),))
    leader.start()
    try:
        assert stuck.entered.wait(TIMEOUT)   # job 1's appender is writing, and stuck
        with pytest.raises(JournalError, match="did not answer within 0.2 s"):
            store.accept(job(2))
    finally:
        stuck.gate.set()
        leader.join(timeout=TIMEOUT)
    store.accept(job(3))
    store.close()
    again = JobStore(tmp_path)
    assert [j.number for j in again.open("data.csv").pending] == [1, 3]
    again.close()


class CallCountingCondition(CountingCondition):
    """A CountingCondition that also counts calls to ``wait``."""

    def __init__(self, lock):
        super().__init__(lock)
        self.calls = 0

    def wait(self, timeout=None):
        self.calls += 1   # wait() is called with the lock held
        return super().wait(timeout)


def test_an_append_whose_line_is_being_written_sleeps_past_its_deadline(tmp_path, stores,
                                                                        monkeypatch):
    """Jobs 2 and 3 wait behind job 1's stuck write; then one of them leads
    a batch of both, and that write is stuck past the journal's timeout.
    The other appender's line is in that batch: it must sleep until the
    batch ends (one wait or so), not spin on a timed-out wait."""
    store, _ = stores(tmp_path)
    journal = store._journal   # pylint: disable=protected-access
    journal.timeout = 0.2
    journal._written = CallCountingCondition(journal._mutex)   # pylint: disable=protected-access
    fd, real = journal.segments._fd, os.write   # pylint: disable=protected-access
    entered, gates, calls = [threading.Event(), threading.Event()], [threading.Event(),
                                                                      threading.Event()], []

    def write(to, data):
        if to == fd and len(calls) < 2:
            calls.append(bytes(data))
            entered[len(calls) - 1].set()
            gates[len(calls) - 1].wait(TIMEOUT)
        return real(to, data)

    monkeypatch.setattr(storage.os, "write", write)
    threads = [threading.Thread(target=store.accept, args=(job(n),)) for n in (1, 2, 3)]
    threads[0].start()
    assert entered[0].wait(TIMEOUT)
    for thread in threads[1:]:
        thread.start()
    assert journal._written.wait_for_waiters(2)   # pylint: disable=protected-access
    gates[0].set()
    assert entered[1].wait(TIMEOUT)           # the batch of jobs 2 and 3, stuck
    assert journal._written.wait_for_waiters(1)   # pylint: disable=protected-access
    calls_before = journal._written.calls   # pylint: disable=protected-access
    time.sleep(3 * journal.timeout)           # well past the waiting appender's deadline
    spun = journal._written.calls - calls_before   # pylint: disable=protected-access
    gates[1].set()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert spun <= 2, f"{spun} waits while its line was being written"
    assert calls[1].count(b"\n") == 2


def test_segments_of_finished_jobs_are_deleted_and_no_others(tmp_path, stores, monkeypatch):
    monkeypatch.setattr(journal_module, "SEGMENT_LINES", 5)
    store, _ = stores(tmp_path)
    for number in range(1, 13):          # segments: 1..5 | 6..10 | 11, 12
        store.accept(job(number))
    assert segments(tmp_path) == [".journal-1.jsonl", ".journal-2.jsonl", ".journal-3.jsonl"]
    store.finished_below(10)             # jobs 1-9 are done, job 10 is not
    for number in range(13, 17):         # fills segment 3; the next append rotates
        store.accept(job(number))
    store.accept(job(17))
    assert segments(tmp_path) == [".journal-2.jsonl", ".journal-3.jsonl", ".journal-4.jsonl"]
    store.finished_below(11)             # now segment 2 (jobs 6-10) is all done
    for number in range(18, 23):
        store.accept(job(number))
    assert segments(tmp_path) == [".journal-3.jsonl", ".journal-4.jsonl", ".journal-5.jsonl"]
    store.close()
    _, recovered = stores(tmp_path)
    assert [j.number for j in recovered.pending] == list(range(11, 23))


def test_a_wiped_directory_is_re_created_and_numbering_goes_on(tmp_path, stores):
    results = tmp_path / "results"
    store, _ = stores(results)
    for number in (1, 2):
        store.accept(job(number))
    shutil.rmtree(results)               # rm -rf results, dot files and all
    store.accept(job(3))
    assert (results / LOCK_NAME).exists()
    assert journal_lines(results) == [
        {"high": 2}, {"job": 3, "statistic": "global_mean", "question": "q", "state": None}]
    with pytest.raises(DirectoryInUse):  # and it is owned again
        JobStore(results).open("data.csv")
    store.close()
    _, recovered = stores(results)
    assert [j.number for j in recovered.pending] == [3] and recovered.next_number == 4


def test_a_wipe_with_nothing_accepted_after_it_keeps_numbering_at_close(tmp_path, stores):
    store = JobStore(tmp_path / "results")
    store.open("data.csv")
    store.accept(job(1))
    shutil.rmtree(tmp_path / "results")
    store.close()
    _, recovered = stores(tmp_path / "results")
    assert recovered.next_number == 2


def test_the_course_checkers_wipe_leaves_the_journal_alone(tmp_path, stores):
    """``rm -rf results/*``: the shell's * does not match dot files."""
    store, _ = stores(tmp_path)
    store.accept(job(1))
    store.write_result(1, b"{}")
    store.accept(job(2))
    for path in tmp_path.iterdir():
        if not path.name.startswith("."):
            path.unlink()
    assert segments(tmp_path) and (tmp_path / LOCK_NAME).exists()
    store.accept(job(3))
    store.close()
    _, recovered = stores(tmp_path)
    assert [j.number for j in recovered.pending] == [1, 2, 3]


def test_too_little_free_space_is_disk_full(tmp_path, stores):
    store, _ = stores(tmp_path, min_free_mb=1 << 40)
    with pytest.raises(DiskFull, match=r"MiB free in .*, \d+ MiB needed \(--min-free-mb\)"):
        store.check_space()
    roomy, _ = stores(tmp_path / "other", min_free_mb=1)
    roomy.check_space()


# -- recovery from what a crash or a person left ------------------------------------

@pytest.mark.parametrize("line, problem", [
    (b'{"job": 1e400, "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": -5, "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": 0, "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": 1.9, "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": true, "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": "7", "statistic": "s", "question": "q"}', "bad job number"),
    (b'{"job": ' + str(10 ** 30).encode() + b', "statistic": "s", "question": "q"}',
     "bad job number"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"job": 3, "statistic": 7, "question": "q"}', "not a string"),
    (b'{"job": 3, "statistic": "s", "question": "q", "state": []}', "not a string"),
    (b'["job", 3]', "not a JSON object"),
    (b"\0\0\0\0", "not valid JSON"),
    (b'{"high": -1}', "bad high-water mark"),
    (b'{"high": true}', "bad high-water mark"),
])
def test_a_damaged_journal_line_is_named(line, problem):
    found, _, why = parse_journal_line(line)
    assert found is None and problem in why


def test_start_up_skips_every_damaged_line_with_its_number(tmp_path, stores, caplog):
    good = AcceptedJob(4, "global_mean", "q").line()
    bad = [b'{"job": 1e400}', b"[" * 30_000, b'{"job": -5}', b'{"job": 0}', b'{"job": 1.9}',
           b'{"job": true}', b'{"job": "7"}', b'{"job": 1000000000000000000000000000000}',
           b"x" * 100_000, b'{"job":36,']
    (tmp_path / ".journal-1.jsonl").write_bytes(b"\n".join(bad) + b"\n" + good + b"\0" * 50)
    _, recovered = stores(tmp_path)
    assert recovered.pending == [AcceptedJob(4, "global_mean", "q")]
    assert recovered.next_number == 5
    assert "line 1: bad job number" in caplog.text
    assert "line 2: not valid JSON" in caplog.text
    assert "line 9: longer than 64 KiB" in caplog.text
    assert "damaged lines skipped in all" in caplog.text
    assert not list(tmp_path.glob("job_id_-5*"))


def test_numbering_never_goes_back_even_with_no_job_lines_left(tmp_path, stores):
    (tmp_path / ".journal-3.jsonl").write_text('{"high":41}\n{"job":36,')
    _, recovered = stores(tmp_path)
    assert recovered.next_number == 42


def test_leftovers_of_a_crash_and_odd_entries_are_cleaned_or_skipped(tmp_path, stores,
                                                                     caplog):
    (tmp_path / ".job_id_1.json.tmp").write_text("{")
    (tmp_path / ".job_id_2.json.tmp").mkdir()                    # odd: left alone, named
    (tmp_path / "job_id_3.json").write_text("")                  # renamed, never flushed
    (tmp_path / "job_id_4.json").symlink_to(tmp_path / "nowhere")   # dangling
    (tmp_path / "job_id_5.json").write_bytes(b"garbage")
    _, recovered = stores(tmp_path)
    assert not (tmp_path / ".job_id_1.json.tmp").exists()
    assert (tmp_path / ".job_id_2.json.tmp").is_dir()
    assert ".job_id_2.json.tmp in" in caplog.text and "is not a regular file" in caplog.text
    assert "job_id_4.json in" in caplog.text   # a link: skipped, never followed
    assert recovered.failed == {3: "result file is empty", 5: "result file is not valid JSON"}
    assert recovered.next_number == 6


def test_recovery_memory_does_not_grow_with_the_journal(tmp_path, stores):
    with open(tmp_path / ".journal-1.jsonl", "wb") as journal:
        for _ in range(20):
            journal.write(b'{"job": 1, "pad": "' + b"x" * (1 << 20) + b'"}\n')
        journal.write(AcceptedJob(2, "global_mean", "q").line())
    tracemalloc.start()
    try:
        _, recovered = stores(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [j.number for j in recovered.pending] == [2]
    assert peak < 1 << 20   # a 1 MiB line is never held whole
