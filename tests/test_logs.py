"""The log: UTC times ending in Z, rotation at the size limit, one line per
record whatever a message holds, and a log that cannot be written."""

import errno
import io
import logging
import re
from pathlib import Path

from lestats import logs
from lestats.tools.soak import ServerProcess, call


def test_records_are_stamped_in_utc_with_z_and_rotate(tmp_path):
    path = tmp_path / "webserver.log"
    handler = logs.configure(str(path), max_bytes=2000, backups=2)
    try:
        log = logging.getLogger("lestats.test")
        for i in range(100):
            log.info("record %d %s", i, "x" * 40)
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["webserver.log", "webserver.log.1", "webserver.log.2"]
    for name in files:
        text = (tmp_path / name).read_text()
        assert 0 < len(text) <= 2000
        for line in text.splitlines():
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", line), line
    assert "record 99 " in path.read_text()


def test_an_existing_log_counts_toward_the_limit(tmp_path):
    path = tmp_path / "webserver.log"
    path.write_text("x" * 1990 + "\n")
    handler = logs.configure(str(path), max_bytes=2000, backups=1)
    try:
        logging.getLogger("lestats.test").info("this one rolls the file over")
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    assert (tmp_path / "webserver.log.1").read_text() == "x" * 1990 + "\n"
    assert "rolls the file over" in path.read_text()


class FullDisk(io.RawIOBase):
    """A log file on a full disk."""

    def writable(self):
        return True

    def write(self, _data):
        raise OSError(errno.ENOSPC, "No space left on device")


def lose_three_records_then_write_one(handler, monkeypatch):
    log = logging.getLogger("lestats.test")
    handler.stream.close()
    handler.stream = FullDisk()
    monkeypatch.setattr(handler, "_open", FullDisk)   # reopening does not help yet
    for i in range(3):
        log.info("lost %d", i)
    monkeypatch.undo()
    log.info("written again")


def test_records_that_cannot_be_written_are_counted_and_reported_later(tmp_path, monkeypatch,
                                                                       capfd):
    path = tmp_path / "webserver.log"
    handler = logs.configure(str(path))
    try:
        lose_three_records_then_write_one(handler, monkeypatch)
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    assert lines[-2].endswith("WARNING MainThread lestats.test: 3 log records lost: the log"
                              " could not be written")
    assert lines[-1].endswith("lestats.test: written again") and len(lines) == 2
    assert capfd.readouterr().err == ""   # a short failure is told in the log alone


def test_a_log_failing_longer_than_note_every_is_told_on_stderr_in_one_line(
        tmp_path, monkeypatch, capfd):
    path = tmp_path / "webserver.log"
    handler = logs.configure(str(path))
    handler.note_every = 0.0   # as if every failure came 10 minutes after the last note
    try:
        lose_three_records_then_write_one(handler, monkeypatch)
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    assert capfd.readouterr().err.splitlines() == [
        f"lestats: cannot write the log {path}: [Errno 28] No space left on device"
        f" ({count} records lost so far)" for count in (1, 2, 3)]


def test_messages_are_escaped_into_one_line_and_tracebacks_keep_their_lines(tmp_path):
    path = tmp_path / "webserver.log"
    handler = logs.configure(str(path))
    log = logging.getLogger("lestats.test")
    try:
        log.info("a\nb\rc\x85d\u2028e\x1bf %s", "g\x0bh\\n")
        try:
            raise ValueError("bad\x1c value\nsecond line")
        except ValueError:
            log.exception("failed\x0c here")
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    lines = path.read_text().split("\n")
    assert lines[0].endswith(r"lestats.test: a\nb\rc\x85d\u2028e\x1bf g\x0bh\n")
    assert lines[1].endswith(r"lestats.test: failed\x0c here") and lines[2] == (
        "Traceback (most recent call last):")
    assert r"ValueError: bad\x1c value" in lines and "second line" in lines


def test_a_log_on_a_full_disk_and_a_stderr_nobody_reads_never_stop_the_server(tmp_path):
    """ServerProcess reads the banner, then never reads its stderr pipe."""
    server = ServerProcess(None, tmp_path / "results", Path("/dev/full"))
    try:
        for _ in range(300):
            assert call(server.port, "GET", "/api/num_jobs", timeout=5) == (200, {"num_jobs": 0})
    finally:
        assert server.stop(timeout=10) == 0
