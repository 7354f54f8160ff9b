"""The journal's durability edges: what reaches the disk before what, what a
stuck write may hold up, and that no descriptor is left behind by a failure,
whatever it is (KeyboardInterrupt included)."""

import os
import threading
import time

import pytest

from lestats import files, journal as journal_module
from lestats.journal import AcceptedJob
from lestats.lab.forcing import TIMEOUT
from lestats.storage import JobStore

from conftest import descriptors_on


def job(number):
    return AcceptedJob(number, "global_mean", "q")


@pytest.fixture
def store(tmp_path):
    opened = []

    def open_store(**options):
        made = JobStore(tmp_path / "results", **options)
        made.open("data.csv")
        opened.append(made)
        return made

    yield open_store
    for made in opened:
        made.close()


class Calls:
    """Stands in for an os function, noting each call (and what it was
    given) in ``order``, a list shared between several of them."""

    def __init__(self, name, real, order, fail=None):
        self.name, self.real, self.order, self.fail = name, real, order, fail

    def __call__(self, *args, **kwargs):
        self.order.append((self.name, args[0] if args else None))
        if self.fail is not None:
            raise self.fail
        return self.real(*args, **kwargs)


def test_a_new_segment_is_fsynced_at_start_and_at_each_rotation(store, monkeypatch):
    order = []
    monkeypatch.setattr(journal_module, "SEGMENT_LINES", 2)
    monkeypatch.setattr(journal_module.os, "fsync", Calls("fsync", os.fsync, order))
    opened = store()
    assert [name for name, _ in order] == ["fsync"]   # the first segment, at start
    for number in range(1, 6):
        opened.accept(job(number))
    assert [name for name, _ in order] == ["fsync"] * 3   # and each new one, 2 rotations


def test_with_fsync_old_segments_go_only_after_a_sync_of_their_results(store, monkeypatch,
                                                                      tmp_path):
    """Rotating with fsync on: the results of the finished jobs are made
    durable (os.sync) before the journal lines that vouch for them go."""
    order = []
    monkeypatch.setattr(journal_module, "SEGMENT_LINES", 2)
    monkeypatch.setattr(journal_module.os, "sync", Calls("sync", os.sync, order))
    monkeypatch.setattr(journal_module.os, "unlink", Calls("unlink", os.unlink, order))
    opened = store(fsync=True)
    for number in range(1, 4):
        opened.accept(job(number))
    opened.finished_below(4)               # jobs 1 to 3 are done
    for number in range(4, 8):
        opened.accept(job(number))         # rotations delete the finished segments
    names = [name for name, _ in order]
    assert "unlink" in names, "no finished segment was deleted"
    assert names.index("sync") < names.index("unlink")


def test_without_fsync_old_segments_go_without_a_sync(store, monkeypatch):
    order = []
    monkeypatch.setattr(journal_module, "SEGMENT_LINES", 2)
    monkeypatch.setattr(journal_module.os, "sync", Calls("sync", os.sync, order))
    opened = store()
    for number in range(1, 4):
        opened.accept(job(number))
    opened.finished_below(4)
    for number in range(4, 8):
        opened.accept(job(number))
    assert order == []


def test_close_waits_for_a_stuck_write_no_longer_than_its_timeout(store, monkeypatch):
    opened = store()
    journal = opened._journal   # pylint: disable=protected-access
    journal.timeout = 0.2
    gate, entered = threading.Event(), threading.Event()
    real_write = journal.segments.write

    def stuck(*args):
        entered.set()
        gate.wait(TIMEOUT)
        return real_write(*args)

    monkeypatch.setattr(journal.segments, "write", stuck)
    appender = threading.Thread(target=opened.accept, args=(job(1),))
    appender.start()
    try:
        assert entered.wait(TIMEOUT)
        began = time.monotonic()
        journal.close()
        assert time.monotonic() - began < TIMEOUT / 2, "close() waited past its timeout"
    finally:
        gate.set()
        appender.join(TIMEOUT)


@pytest.mark.parametrize("failure", [OSError(5, "Input/output error"), KeyboardInterrupt()])
def test_a_segment_that_cannot_be_made_durable_leaves_no_descriptor_open(store, monkeypatch,
                                                                         failure, tmp_path):
    opened = store()
    monkeypatch.setattr(journal_module, "SEGMENT_LINES", 1)
    opened.accept(job(1))
    before = descriptors_on(tmp_path)
    monkeypatch.setattr(journal_module.os, "fsync", Calls("fsync", os.fsync, [], failure))
    with pytest.raises(type(failure)):
        opened._journal.segments._rotate(0)   # pylint: disable=protected-access
    assert descriptors_on(tmp_path) == before


@pytest.mark.parametrize("failure", [OSError(5, "Input/output error"), KeyboardInterrupt()])
def test_an_open_that_fails_after_the_descriptor_exists_closes_it(tmp_path, monkeypatch,
                                                                  failure):
    path = tmp_path / "file"
    path.write_bytes(b"{}")
    before = descriptors_on(tmp_path)
    monkeypatch.setattr(files.os, "fstat", Calls("fstat", os.fstat, [], failure))
    with pytest.raises(type(failure)):
        files.open_regular(str(path), os.O_RDONLY)
    monkeypatch.undo()
    assert descriptors_on(tmp_path) == before


def test_a_result_that_cannot_be_written_leaves_no_descriptor_open(store, monkeypatch, tmp_path):
    opened = store()
    opened.write_result(1, b'{"a": 1}')
    before = descriptors_on(tmp_path)

    def full(_fd, _data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(OSError):
        opened.write_result(2, b'{"a": 2}')
    monkeypatch.undo()
    assert descriptors_on(tmp_path) == before
