"""Issue 17: the results directory under attack.  Nothing outside it is
touched whatever another user plants in it; odd entries do not stop a
start; segment numbers and job ids cannot run out or go back; and a server
whose directory is wiped never writes into one it does not own, and
journals its unfinished jobs again before it hands out another id.

Every test here is deterministic: jobs run when the test says so (a pool
that holds its tasks), and a SIGKILL is a store whose descriptors are
closed without a word written."""

import json
import os
import shutil
import stat

import pytest

from lestats import files as files_module, jobs as jobs_module, journal as journal_module
from lestats.files import TooLarge, create_for_writing, read_regular
from lestats.jobs import JobManager
from lestats.journal import HIGHEST_JOB, AcceptedJob
from lestats import resultsdir as resultsdir_module
from lestats.resultsdir import DirectoryLost, ResultsDirectory
from lestats.storage import DirectoryInUse, JobStore, StoreError

from conftest import MUSCLE, OBESITY, descriptors_on

NOBODY = 65534   # the uid another user's plants get (the tests run as root)
ASK = {"question": OBESITY}


class HeldPool:
    """A pool that keeps its tasks until the test runs them, in the test's
    own thread: a job runs exactly when the test says."""

    worker_names = ["held-worker"]
    variant = "held"

    def __init__(self):
        self.tasks = []

    def submit(self, task, label=None):   # pylint: disable=unused-argument
        """Kept, not run."""
        self.tasks.append(task)
        return len(self.tasks)

    def run_next(self):
        """Run the oldest task kept."""
        self.tasks.pop(0)()

    @staticmethod
    def make_room(_count):
        """Room enough."""
        return False

    @staticmethod
    def taken():
        """No task is ever taken by a worker."""
        return 0

    def shutdown(self):
        """Nothing runs by itself."""


def manager_on(index, results, pool=None):
    manager = JobManager(index, pool or HeldPool(), JobStore(results))
    manager.start()
    return manager


def crash(store):
    """What SIGKILL leaves: the store's descriptors closed, nothing written."""
    os.close(store._journal.segments._fd)   # pylint: disable=protected-access
    store._owner.release()                  # pylint: disable=protected-access


def reopened(results):
    store = JobStore(results)
    recovered = store.open("data.csv")
    store.close()
    return recovered


def snapshot(*paths):
    """Each file under ``paths`` (or the path itself) with its bytes, mode and mtime."""
    found = {}
    for path in paths:
        for item in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
            info = item.lstat()
            found[str(item)] = (info.st_mode, info.st_mtime_ns,
                                item.read_bytes() if item.is_file() else None)
    return found


def plant(link, target):
    """Another user's symbolic link."""
    link.symlink_to(target)
    if os.geteuid() == 0:
        os.lchown(link, NOBODY, NOBODY)


@pytest.fixture
def victim(tmp_path):
    """A victim's directory and a root-owned 0600 file, outside the results."""
    docs = tmp_path / "victim"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    secret = tmp_path / "secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    return docs, secret


@pytest.fixture
def sticky(tmp_path):
    """A results directory like /tmp: every user may write, sticky."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


# -- 1. nothing outside the results directory ----------------------------------------

def test_a_planted_answers_link_never_leads_out_of_a_sticky_directory(sticky, victim,
                                                                      tiny_index):
    docs, secret = victim
    plant(sticky / ".answers", docs)
    before = snapshot(docs, secret)
    manager = manager_on(tiny_index, sticky)
    for _ in range(3):
        manager.submit("global_mean", ASK)
    for _ in range(3):
        manager._pool.run_next()   # pylint: disable=protected-access
    assert manager.result("job_id_3").status == "done"
    manager.close()
    manager_on(tiny_index, sticky).close()   # and a restart
    assert snapshot(docs, secret) == before


NAMES_THE_SERVER_USES = [".lestats.lock", ".journal-1.jsonl", ".journal-2.jsonl",
                         "job_id_1.json", ".job_id_1.json.tmp", "job_id_2.json",
                         ".job_id_2.json.tmp", "job_id_2.expired", "job_id_3.error",
                         ".job_id_3.error.tmp", ".answers"]


def test_links_planted_under_every_name_the_server_uses_are_never_followed(
        sticky, victim, tiny_index, caplog):
    docs, secret = victim
    for name in NAMES_THE_SERVER_USES:
        plant(sticky / name, secret if name != ".answers" else docs)
    before = snapshot(docs, secret)
    manager = JobManager(tiny_index, HeldPool(), JobStore(sticky), keep_results=1)
    manager.start()
    heard = []
    for _ in range(3):
        heard.append(manager.submit("global_mean", ASK))
        manager._pool.run_next()   # pylint: disable=protected-access
    statuses = [manager.result(job_id).status for job_id in heard]
    manager.close()
    assert heard == ["job_id_4", "job_id_5", "job_id_6"]   # above every planted name
    assert statuses == ["expired", "expired", "done"]
    manager_on(tiny_index, sticky).close()
    assert snapshot(docs, secret) == before
    assert "is not a regular file" in caplog.text


def test_another_users_files_in_a_shared_directory_are_not_taken_for_results(
        sticky, tiny_index, caplog):
    forged = sticky / "job_id_1.json"
    forged.write_text('{"global_mean": 99}')
    (sticky / ".journal-5.jsonl").write_text(
        '{"high":7}\n{"job":7,"statistic":"global_mean","question":"x","state":null}\n')
    for path in (forged, sticky / ".journal-5.jsonl"):
        os.chown(path, NOBODY, NOBODY)
    manager = manager_on(tiny_index, sticky)
    try:
        with pytest.raises(LookupError):
            manager.result("job_id_1")            # not served as job 1's answer
        assert manager.num_jobs() == 0           # job 7 is not run
        assert manager.submit("global_mean", ASK) == "job_id_2"   # ids still pass it by
    finally:
        manager.close()
    assert "belongs to another user (uid 65534)" in caplog.text
    assert "another user's (uid 65534)" in caplog.text


# -- 5. segment numbers that agree with recovery ----------------------------------------

def test_a_leftover_segment_at_the_old_limit_does_not_hide_the_next_one(tmp_path,
                                                                       tiny_index):
    results = tmp_path / "results"
    results.mkdir()
    (results / ".journal-999999999.jsonl").write_text(
        '{"high":1}\n{"job":1,"statistic":"global_mean","question":"%s","state":null}\n'
        % OBESITY)
    first = manager_on(tiny_index, results)
    heard = [first.submit("global_mean", ASK) for _ in range(4)]
    crash(first._store)   # pylint: disable=protected-access
    recovered = reopened(results)
    assert heard == ["job_id_2", "job_id_3", "job_id_4", "job_id_5"]
    assert [job.number for job in recovered.pending] == [1, 2, 3, 4, 5]
    assert recovered.next_number == 6


def test_segment_numbers_wrap_to_a_free_one_past_the_largest(tmp_path, stores_on):
    next_segment, maximum = journal_module.next_segment, journal_module.MAX_SEGMENT
    assert next_segment(set()) == 1 and next_segment({3, 9}) == 10
    assert next_segment({maximum, 1, 2}) == 3
    assert journal_module.following_segment(maximum) == 1
    (tmp_path / f".journal-{maximum}.jsonl").write_text(
        '{"high":4}\n{"job":4,"statistic":"s","question":"q","state":null}\n')
    store, recovered = stores_on(tmp_path)
    store.accept(AcceptedJob(5, "s", "q"))
    crash(store)
    assert sorted(p.name for p in tmp_path.glob(".journal-*")) == [".journal-1.jsonl"]
    again = reopened(tmp_path)
    assert [job.number for job in again.pending] == [4, 5] and recovered.next_number == 5


@pytest.fixture
def stores_on():
    """Opens JobStores; those not crashed are closed at the end."""
    opened = []

    def open_store(directory):
        store = JobStore(directory)
        opened.append(store)
        return store, store.open("data.csv")

    yield open_store
    for store in opened:
        if store._owner._fd >= 0:   # pylint: disable=protected-access
            store.close()


# -- 6. an id space that cannot run out -----------------------------------------------------

@pytest.mark.parametrize("name, text, where", [
    ("job_id_999999999999999999.json", '{"a": 1}', "job_id_999999999999999999.json"),
    (".journal-3.jsonl", '{"job":999999999999999999,"statistic":"s","question":"q"}\n',
     "the journal (.journal-3.jsonl)"),
    (".journal-3.jsonl", '{"high":999999999999999999}\n', "the journal (.journal-3.jsonl)"),
])
def test_an_entry_at_the_last_id_refuses_the_start_in_one_line(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(StoreError) as refused:
        JobStore(tmp_path).open("data.csv")
    assert str(refused.value) == (f"results directory {tmp_path}: no job ids left above"
                                  f" job_id_999999999999999999 (from {where}); delete that"
                                  " entry or use another directory")
    (tmp_path / name).unlink()   # the directory is not held: once fixed, it opens
    reopened(tmp_path)


def test_the_last_id_is_handed_out_and_then_none(tmp_path, tiny_index):
    (tmp_path / f"job_id_{HIGHEST_JOB - 1}.json").write_text('{"a": 1}')
    manager = manager_on(tiny_index, tmp_path)
    try:
        assert manager.submit("global_mean", ASK) == f"job_id_{HIGHEST_JOB}"
        with pytest.raises(jobs_module.NoIdsLeft, match=f"job_id_{HIGHEST_JOB} was the last"):
            manager.submit("global_mean", ASK)
        # The refusal leaves no trace: nothing queued, counted or listed.
        assert len(manager._pool.tasks) == 1   # pylint: disable=protected-access
        assert manager.num_jobs() == 1
        listed = json.loads(b"".join(manager.job_list()))["data"]
        assert [next(iter(row)) for row in listed] == [
            f"job_id_{HIGHEST_JOB - 1}", f"job_id_{HIGHEST_JOB}"]
        manager._pool.run_next()   # pylint: disable=protected-access
        assert manager.result(f"job_id_{HIGHEST_JOB}").status == "done"
    finally:
        manager.close()


# -- 7. odd entries do not stop a start ---------------------------------------------------

def make_dir(path):
    path.mkdir()


def make_full_dir(path):
    path.mkdir()
    (path / "inside").write_text("x")


ODD_ENTRIES = {
    "an empty directory named like a result": ("job_id_1.json", make_dir),
    "a directory with files named like a result": ("job_id_1.json", make_full_dir),
    ".answers as a file": (".answers", lambda path: path.write_text("x")),
    ".answers as a symlink loop": (".answers", lambda path: path.symlink_to(path)),
    "the next segment's name a symlink": (".journal-2.jsonl",
                                          lambda path: path.symlink_to("nowhere")),
    "the next segment's name a directory": (".journal-2.jsonl", make_dir),
    ".lestats.lock as a directory": (".lestats.lock", make_dir),
    ".lestats.lock as a symlink loop": (".lestats.lock", lambda path: path.symlink_to(path)),
    "an expiry mark as a directory": ("job_id_1.expired", make_dir),
}


@pytest.mark.parametrize("odd", sorted(ODD_ENTRIES))
def test_an_odd_entry_is_skipped_with_one_warning_and_the_server_starts(
        tmp_path, tiny_index, odd, caplog):
    name, make = ODD_ENTRIES[odd]
    results = tmp_path / "results"
    results.mkdir()
    (results / ".journal-1.jsonl").write_text('{"high":1}\n')
    make(results / name)
    manager = manager_on(tiny_index, results)
    try:
        job_id = manager.submit("global_mean", ASK)
        manager._pool.run_next()   # pylint: disable=protected-access
        assert manager.result(job_id).status == "done"
    finally:
        manager.close()
    manager_on(tiny_index, results).close()
    assert (results / name).exists() or (results / name).is_symlink()   # left alone
    warned = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warned) <= 2 and all(name in record.getMessage() for record in warned)


def test_a_pending_job_whose_result_name_is_a_directory_fails_alone(tmp_path, tiny_index):
    results = tmp_path / "results"
    results.mkdir()
    (results / ".journal-1.jsonl").write_text("".join(
        json.dumps({"job": n, "statistic": "global_mean", "question": OBESITY,
                    "state": None}) + "\n" for n in (1, 2)))
    make_full_dir(results / "job_id_1.json")
    manager = manager_on(tiny_index, results)
    try:
        manager._pool.run_next()   # pylint: disable=protected-access
        manager._pool.run_next()   # pylint: disable=protected-access
        assert manager.result("job_id_1").status == "error"
        assert manager.result("job_id_2").status == "done"
    finally:
        manager.close()


# -- 8. a wipe, then a second server on the same path -----------------------------------------

def test_a_wiped_server_never_writes_into_the_next_owners_directory(tmp_path, tiny_index):
    results = tmp_path / "results"
    first = manager_on(tiny_index, results)
    for _ in range(3):
        first.submit("global_mean", ASK)
    shutil.rmtree(results)                       # rm -rf results
    second = manager_on(tiny_index, results)     # server B starts on the same path
    second_job = second.submit("global_mean", {"question": MUSCLE})
    before = snapshot(results)
    first._pool.run_next()   # pylint: disable=protected-access   # A's queued job finishes
    result = first.result("job_id_1")
    assert result.status == "error" and "is owned by another lestats server" in result.reason
    with pytest.raises(OSError, match="this server writes nothing more there"):
        first.submit("global_mean", ASK)        # no id handed out any more
    assert snapshot(results) == before          # nothing of A's in B's directory
    second._pool.run_next()   # pylint: disable=protected-access
    assert json.loads(second.result(second_job).data_json) == {"global_mean": 45.0}
    first.close()
    second.close()


# -- 9. a wipe with jobs queued, then SIGKILL --------------------------------------------------

def test_a_wipe_then_a_finished_job_journals_every_unfinished_one_again(tmp_path,
                                                                         tiny_index):
    results = tmp_path / "results"
    first = manager_on(tiny_index, results)
    heard = [first.submit("global_mean", ASK) for _ in range(5)]
    shutil.rmtree(results)
    first._pool.run_next()   # pylint: disable=protected-access   # job 1 takes it back
    crash(first._store)      # pylint: disable=protected-access
    recovered = reopened(results)
    assert heard[-1] == "job_id_5" and recovered.finished == [1]
    assert [job.number for job in recovered.pending] == [2, 3, 4, 5]
    assert recovered.next_number == 6


def test_a_wipe_then_a_post_journals_every_unfinished_job_before_its_id(tmp_path,
                                                                          tiny_index):
    results = tmp_path / "results"
    first = manager_on(tiny_index, results)
    for _ in range(5):
        first.submit("global_mean", ASK)
    first._pool.run_next()   # pylint: disable=protected-access   # job 1 done
    shutil.rmtree(results)
    assert first.submit("global_mean", ASK) == "job_id_6"
    crash(first._store)      # pylint: disable=protected-access
    recovered = reopened(results)
    assert [job.number for job in recovered.pending] == [2, 3, 4, 5, 6]
    assert recovered.next_number == 7


def test_a_directory_re_created_by_another_user_is_not_taken(tmp_path, tiny_index):
    results = tmp_path / "results"
    first = manager_on(tiny_index, results)
    first.submit("global_mean", ASK)
    shutil.rmtree(results)
    results.mkdir()
    os.chown(results, NOBODY, NOBODY)
    first._pool.run_next()   # pylint: disable=protected-access
    assert "re-created by another user (uid 65534)" in first.result("job_id_1").reason
    assert list(results.iterdir()) == []
    first.close()


def test_a_directory_re_created_as_a_link_is_not_followed(tmp_path, tiny_index, victim):
    docs, secret = victim
    results = tmp_path / "results"
    first = manager_on(tiny_index, results)
    first.submit("global_mean", ASK)
    shutil.rmtree(results)
    plant(results, docs)
    before = snapshot(docs, secret)
    with pytest.raises(OSError, match="is now a symbolic link"):
        first.submit("global_mean", ASK)
    first.close()
    assert snapshot(docs, secret) == before
    assert stat.S_ISLNK(results.lstat().st_mode)


# -- the pieces: a lock held by an earlier version, the directory's identity, the files ---------

def test_a_lock_file_held_by_an_earlier_version_keeps_a_second_server_out(tmp_path):
    """Earlier versions lock only .lestats.lock: a server of this version
    must not start beside one of them."""
    import fcntl   # pylint: disable=import-outside-toplevel
    note = tmp_path / ".lestats.lock"
    note.write_text('{"pid": 4242}')
    with open(note, "r+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DirectoryInUse, match=r"\(pid 4242\)"):
            JobStore(tmp_path).open("data.csv")
    reopened(tmp_path)


def test_a_lock_file_of_another_users_is_left_alone(sticky, caplog):
    note = sticky / ".lestats.lock"
    note.write_text('{"pid": 1, "data": "theirs.csv"}')
    os.chown(note, NOBODY, NOBODY)
    reopened(sticky)
    assert note.read_text() == '{"pid": 1, "data": "theirs.csv"}'
    assert "belongs to uid 65534; left alone, the directory itself is locked" in caplog.text


def test_a_directory_renamed_or_replaced_is_no_longer_the_one_at_the_path(tmp_path):
    path = tmp_path / "results"
    owner = ResultsDirectory(str(path))
    owner.take()
    try:
        assert not owner.deleted(owner.fd())
        path.rename(tmp_path / "elsewhere")
        assert owner.deleted(owner.fd())           # the path names nothing
        path.mkdir()
        assert owner.deleted(owner.fd())           # the path names another directory
    finally:
        owner.release()


def test_files_made_where_the_user_says_are_never_a_link_a_fifo_or_another_name(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    os.link(target, tmp_path / "other-name")
    for name, why in [("link", "is a symbolic link"), ("fifo", "not a regular file"),
                      ("dir", "not a regular file"), ("other-name", "has other hard links")]:
        with pytest.raises(OSError, match=why):
            create_for_writing(str(tmp_path / name))
    assert target.read_text() == "keep"
    fd = create_for_writing(str(tmp_path / "new"))
    os.close(fd)
    assert (tmp_path / "new").read_bytes() == b""


def test_a_short_read_goes_on_to_the_end_and_never_past_the_limit(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x" * 100)
    real_read = os.read
    monkeypatch.setattr(files_module.os, "read", lambda fd, size: real_read(fd, min(size, 7)))
    assert read_regular("f", 100, os.open(tmp_path, os.O_RDONLY)) == b"x" * 100
    with pytest.raises(TooLarge):
        read_regular("f", 99, os.open(tmp_path, os.O_RDONLY))


def test_reading_a_file_leaves_no_descriptor_open_whatever_the_outcome(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    (tmp_path / "dir").mkdir()
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        before = descriptors_on(tmp_path)
        assert read_regular("f", 10, directory) == b"x" * 10
        with pytest.raises(TooLarge):
            read_regular("f", 9, directory)
        with pytest.raises(OSError, match="not a regular file"):
            read_regular("dir", 10, directory)
        assert descriptors_on(tmp_path) == before
    finally:
        os.close(directory)


def test_a_trace_file_whose_opening_is_interrupted_leaves_no_descriptor(tmp_path, monkeypatch):
    def interrupted(fd, length):
        raise KeyboardInterrupt   # Ctrl-C between the open and the truncation
    monkeypatch.setattr(files_module.os, "ftruncate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_for_writing(str(tmp_path / "trace.json"))
    assert descriptors_on(tmp_path) == set()


def test_a_directory_lost_to_a_link_is_lost_for_good(tmp_path):
    path, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    owner = ResultsDirectory(str(path))
    owner.take()
    try:
        shutil.rmtree(path)
        path.symlink_to(elsewhere)
        with pytest.raises(DirectoryLost, match="symbolic link"):
            owner.reclaim(lambda fd: None)
        with pytest.raises(DirectoryLost, match="symbolic link"):   # and at every later use
            owner.fd()
        assert os.listdir(elsewhere) == []
    finally:
        owner.release()


def test_taking_or_reclaiming_a_directory_interrupted_leaves_no_descriptor(tmp_path,
                                                                           monkeypatch):
    path = tmp_path / "results"
    real_lock = ResultsDirectory._lock   # pylint: disable=protected-access

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt   # Ctrl-C while the directory is being locked
    monkeypatch.setattr(ResultsDirectory, "_lock", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ResultsDirectory(str(path)).take()
    assert descriptors_on(tmp_path) == set()
    monkeypatch.setattr(ResultsDirectory, "_lock", real_lock)
    owner = ResultsDirectory(str(path))
    owner.take()
    try:
        held = descriptors_on(tmp_path)
        shutil.rmtree(path)

        def prepare(_fd):
            raise KeyboardInterrupt   # Ctrl-C while the first segment is written
        with pytest.raises(KeyboardInterrupt):
            owner.reclaim(prepare)
        assert descriptors_on(tmp_path) == held   # the old ones only: nothing of the new
    finally:
        owner.release()


def test_a_store_never_opened_reads_its_directory_and_leaves_no_descriptor(tmp_path):
    (tmp_path / "job_id_3.json").write_text('{"a": 1}')
    before = descriptors_on(tmp_path)
    assert JobStore(tmp_path).read_result(3) == b'{"a": 1}'
    assert descriptors_on(tmp_path) == before
