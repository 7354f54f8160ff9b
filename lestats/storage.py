"""What jobs leave on disk: the journal of accepted jobs and the result files.

Everything lives in the results directory, which has exactly one owner:

* ``.lestats.lock``: the owner holds an exclusive ``flock`` on it and keeps
  its pid and data file in it.  A second server on the same directory finds
  it locked and stops before it has read or changed anything else.
* ``.journal-N.jsonl`` (N = 1, 2, ...): the journal, in segments.  A line
  ``{"job": N, "statistic": ..., "question": ..., "state": ...}`` is written
  for each accepted job *before* its id is given out, a batch of waiting
  lines at a time (see ``Journal``).  Each segment starts with ``{"high": H}``: every id up
  to H has been given out, so numbering never goes back even when every
  job line is gone.  A segment whose jobs have all finished is deleted, so
  the journal stays about as large as the unfinished work.
* ``job_id_N.json``: job N's result, written to a temporary file (created
  with O_EXCL|O_NOFOLLOW) and renamed into place, so a reader sees no file or
  the whole file.  It is a hard link to ``.answers/<name>.json``, the one
  copy of that answer (named by the job layer, once per question per run), so that asking the same thing again and again does
  not fill the disk; copies no result links to any more are deleted at
  start.  Results are not fsynced one by one: the journal is the durable
  record, and a job whose result is missing (or not valid JSON after a power
  cut) is simply run again at start.

The lock and the journal are dot files, so the course checker's
``rm -rf results/*`` leaves them alone.  If they are deleted all the same
(the directory wiped whole), the journal notices at its next write
and re-creates the directory, the lock and a segment with the high-water
mark; a result written meanwhile re-creates the directory too.

Durability: by default a journal line is in the operating system's cache
when its id is given out, which survives the process being killed, not the
machine losing power; with ``fsync`` it is on disk (``fdatasync``, once per
batch of lines written together).
"""

import errno
import fcntl
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

LOCK_NAME = ".lestats.lock"
ANSWERS = ".answers"                # one file per distinct answer; results link to them
_SEGMENT = re.compile(r"\.journal-([1-9][0-9]{0,8})\.jsonl")
_RESULT_FILE = re.compile(r"job_id_([1-9][0-9]{0,17})\.json")
_TEMP_FILE = re.compile(r"\.job_id_[1-9][0-9]{0,17}\.json\.tmp")
HIGHEST_JOB = 10 ** 18 - 1          # job ids have at most 18 digits (see jobs.job_number)
SEGMENT_LINES = 10_000              # a segment is closed after this many job lines
MAX_LINE = 64 * 1024                # a longer journal line is not ours: skipped
MAX_RESULT = 64 * 1024 * 1024       # a larger result file is not ours: refused
WARNINGS_SHOWN = 10                 # damaged journal lines logged one by one, then counted
MIB = 1024 * 1024
JOURNAL_TIMEOUT = 30.0              # seconds an append waits for its line to be written
EXPIRED_MARK = b'{"expired": "result deleted (--keep-results)"}\n'
"""What an expired job's result file holds: a hard link to one shared copy,
so an expired result takes a name and no space, and a restart knows the
job expired (a missing result would make it run again)."""
_EXPIRED_ANSWER = "expired"         # the shared copy's name in .answers/
_VALID, _EXPIRED = None, "expired"  # _result_state's answers besides a problem


class StoreError(Exception):
    """The results directory cannot be used; the message says why, in one line."""


class DirectoryInUse(StoreError):
    """Another server owns the results directory."""


class DiskFull(OSError):
    """Less free space than the floor: a job would not be recorded safely."""


class JournalError(OSError):
    """A journal line could not be written; the journal is as it was before."""


@dataclass(frozen=True)
class AcceptedJob:
    """A journal line: job ``number`` is ``statistic`` of ``question`` (and ``state``)."""

    number: int
    statistic: str
    question: str
    state: Optional[str] = None

    def line(self) -> bytes:
        """The journal line of this job."""
        record = {"job": self.number, "statistic": self.statistic,
                  "question": self.question, "state": self.state}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Recovered:
    """What a start finds in the results directory.

    ``finished``: job numbers with a valid result; ``failed``: job numbers
    whose result file is damaged and that cannot run again (no journal line),
    with the reason; ``pending``: accepted jobs without a valid result, to run
    again; ``next_number``: the first id never given out; ``earlier_data``:
    the data file the previous owner served, if it said; ``expired``: job
    numbers whose result holds EXPIRED_MARK.
    """

    finished: List[int]
    failed: Dict[int, str]
    pending: List[AcceptedJob]
    next_number: int
    earlier_data: Optional[str] = None
    expired: List[int] = field(default_factory=list)


def _high_line(high: int) -> bytes:
    return b'{"high":%d}\n' % high


def _job_number(value: object) -> Optional[int]:
    """``value`` if it is a usable job number (an int, not a bool, in range)."""
    if type(value) is int and 1 <= value <= HIGHEST_JOB:   # pylint: disable=unidiomatic-typecheck
        return value
    return None


def parse_journal_line(raw: bytes) -> Tuple[Optional[AcceptedJob], int, Optional[str]]:
    """(the job of a journal line or None, the highest id it vouches for,
    what is wrong with it or None)."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None, 0, "not valid JSON"
    if not isinstance(record, dict):
        return None, 0, "not a JSON object"
    if "high" in record:
        high = record["high"]
        if type(high) is int and 0 <= high <= HIGHEST_JOB:   # pylint: disable=unidiomatic-typecheck
            return None, high, None
        return None, 0, "bad high-water mark"
    number = _job_number(record.get("job"))
    if number is None:
        return None, 0, f"bad job number {str(record.get('job'))[:40]!r}"
    statistic, question, state = (record.get(key) for key in ("statistic", "question", "state"))
    if not isinstance(statistic, str) or not isinstance(question, str) or not (
            state is None or isinstance(state, str)):
        return None, number, "statistic, question or state is not a string"
    return AcceptedJob(number, statistic, sys.intern(question),
                       None if state is None else sys.intern(state)), number, None


def _lines(path: str) -> Iterator[Tuple[int, Optional[bytes]]]:
    """(line number, line) of a file; a line longer than MAX_LINE comes as
    None and is never held whole in memory."""
    with open(path, "rb") as stream:
        number = 0
        while True:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):   # skip the rest of it
                    line = stream.readline(MAX_LINE)
                yield number, None
            else:
                yield number, line


def open_no_follow(path: str, flags: int) -> int:
    """``os.open`` that refuses symbolic links and anything but a regular
    file (a FIFO would block a reader, a device would be read for ever)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if not flags & (os.O_WRONLY | os.O_RDWR):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: ``os.write`` may write less than
    it is given (a full disk, a signal); OSError if it cannot go on."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Entry:   # pylint: disable=too-few-public-methods
    """One line handed to the journal, and what became of it."""

    __slots__ = ("number", "line", "done", "error")

    def __init__(self, number: int, line: bytes):
        self.number = number
        self.line = line
        self.done = False
        self.error: Optional[OSError] = None


class Journal:
    """The journal: lines from many request threads, written a batch at a time.

    ``append`` puts its line among the waiting ones and waits, at most
    ``timeout`` seconds, until it is written.  The first appender to find no
    batch being written becomes the leader: it takes every line waiting (its
    own included), writes them together with the mutex let go (see
    ``Segments.write``: one ``os.write`` and, with fsync on, one
    ``fdatasync``: a group commit), then tells each of their appenders how it
    went (success, or the error every one of them gets).  Appenders whose
    lines came too late for that batch wait; when it is over, one of them
    leads the next.  A lone client's POST thus writes its own line, with no
    hand-off to another thread; busy ones share writes and flushes.

    ``_mutex`` guards ``_waiting``, ``_writing``, ``_closed`` and the
    ``_Entry`` records; it is never held while writing.  Only the leader
    (the thread that set ``_writing``) touches ``segments``.  ``_written``
    (on the mutex) is notified (all) when a batch is over: appenders wait
    on it, for their outcome or their turn to lead, and so does ``close``.
    """

    def __init__(self, segments: "Segments"):
        self.segments = segments
        self.timeout = JOURNAL_TIMEOUT
        self._mutex = threading.Lock()
        self._written = threading.Condition(self._mutex)
        self._waiting: List[_Entry] = []
        self._writing = False
        self._closed = False

    def append(self, job: AcceptedJob) -> None:
        """Write ``job``'s line; return once it is written (and, with fsync
        on, on disk).  Raise JournalError if it could not be: the journal is
        then as it was."""
        entry = _Entry(job.number, job.line())
        deadline = time.monotonic() + self.timeout
        with self._mutex:
            if self._closed:
                raise JournalError(errno.ESHUTDOWN, "the journal is closed")
            self._waiting.append(entry)
            while not entry.done:
                if not self._writing:
                    if self._closed:   # closed while this line waited for its turn
                        self._waiting.remove(entry)
                        raise JournalError(errno.ESHUTDOWN, "the journal is closed")
                    self._write_batch()
                elif entry not in self._waiting:
                    # In the batch being written: only its end tells how it went.
                    self._written.wait()
                elif not self._written.wait(deadline - time.monotonic()):
                    if entry in self._waiting:   # no batch took it: none ever will
                        self._waiting.remove(entry)
                        raise JournalError(errno.ETIMEDOUT, "the journal did not answer"
                                                            f" within {self.timeout:g} s")
        if entry.error is not None:
            raise JournalError(entry.error.errno, entry.error.strerror or str(entry.error))

    def close(self) -> None:
        """Wait (at most ``timeout`` seconds) for the batch being written,
        then close the segment; later appends are refused."""
        with self._mutex:
            self._closed = True
            idle = self._written.wait_for(lambda: not self._writing, self.timeout)
        if not idle:
            log.error("journal: a write did not end within %g s; closing without it",
                      self.timeout)
            return
        self.segments.close()

    def _write_batch(self) -> None:
        """Lead: write every waiting line, with the mutex let go.  Hold ``_mutex``."""
        self._writing = True
        batch, self._waiting = self._waiting, []
        self._mutex.release()
        try:
            error = self.segments.write(batch)
        except Exception as exc:   # pylint: disable=broad-except
            # A bug here must not leave the batch's appenders waiting for ever.
            log.exception("journal write failed")
            error = OSError(errno.EIO, f"journal write failed: {exc}")
        finally:
            self._mutex.acquire()   # pylint: disable=consider-using-with
            self._writing = False
        for written in batch:
            written.done, written.error = True, error
        self._written.notify_all()


class Segments:
    """The journal's files (``.journal-N.jsonl``), used by one thread at a
    time (the Journal's leader), so nothing here needs a lock of its own.

    Being the only writer, it knows where the open segment ended before a
    batch: a failed or short write is cut back there (``ftruncate``), so no
    torn line is ever followed by another.  A segment is closed after
    SEGMENT_LINES lines; a closed one is deleted once every job in it has
    finished (``finished_below``, set by the job layer without a lock: an int
    attribute, and reading an old value only delays a deletion).  Every new
    segment starts with the high-water mark ``_high``.
    """

    def __init__(self, directory: str, fsync: bool, high: int, first: int, *,
                 owner: "ResultsDirectory"):
        self._directory = directory
        self._fsync = fsync
        self._owner = owner
        self._high = high
        self._number = first             # of the open segment
        self._fd = -1
        self._size = 0
        self._lines = 0
        self._closed: List[Tuple[int, int]] = []   # (segment, highest job in it)
        self.finished_below = 0

    def start(self, lines: List[bytes]) -> None:
        """Open the first segment with ``lines`` (the unfinished jobs) in it."""
        self._open(lines)

    def write(self, batch: List[_Entry]) -> Optional[OSError]:
        """Append ``batch``; on failure cut the segment back and return the error."""
        try:
            self._check_still_there()
            if self._lines >= SEGMENT_LINES:
                self._rotate()
        except OSError as exc:
            log.error("journal: %s", exc)
            return exc
        data = b"".join(entry.line for entry in batch)
        before = self._size
        try:
            write_all(self._fd, data)
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back(before)
            log.error("journal write failed, %d line(s) refused: %s", len(batch), exc)
            return exc
        self._size += len(data)
        self._lines += len(batch)
        self._high = max(self._high, max(entry.number for entry in batch))
        return None

    def close(self) -> None:
        """Close the open segment (re-created first if it was wiped)."""
        if self._fd >= 0:
            self._check_still_there()
            os.close(self._fd)
            self._fd = -1

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
        except OSError as exc:   # cannot cut back: never append after the torn bytes
            log.error("journal: cannot cut segment %d back (%s); starting a new one",
                      self._number, exc)
            self._lines = SEGMENT_LINES

    def _path(self, number: int) -> str:
        return os.path.join(self._directory, f".journal-{number}.jsonl")

    def _open(self, lines: List[bytes]) -> None:
        """Start segment ``_number``: the high-water mark, then ``lines``, on
        disk (fsynced) before the previous segment is let go."""
        data = _high_line(self._high) + b"".join(lines)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(self._path(self._number), flags, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._size, self._lines = fd, len(data), len(lines)

    def _rotate(self) -> None:
        """Close the full segment, open the next, delete the finished ones."""
        self._closed.append((self._number, self._high))
        self._number += 1
        self._open([])
        finished = [item for item in self._closed if item[1] < self.finished_below]
        if not finished:
            return
        if self._fsync:
            os.sync()   # the results of those jobs, before their lines go
        for number, _ in finished:
            try:
                os.unlink(self._path(number))
            except FileNotFoundError:
                pass
        self._closed = [item for item in self._closed if item not in finished]

    def _check_still_there(self) -> None:
        """If the open segment was deleted (the directory wiped), re-create
        the directory, its lock and a segment with the high-water mark."""
        if os.fstat(self._fd).st_nlink > 0:
            return
        log.warning("the journal in %s was deleted; re-creating it (ids continue above %d)",
                    self._directory, self._high)
        os.makedirs(self._directory, exist_ok=True)
        self._owner.relock()
        self._closed = []
        self._open([])


class ResultsDirectory:
    """The one-owner lock of a results directory (see the module docstring).

    ``take`` locks, or raises DirectoryInUse naming the owner's pid without
    having changed anything; ``relock`` takes a fresh lock file after the
    directory was wiped.  Only the thread that opens the store and, later,
    the journal's leader use it, one at a time.
    """

    def __init__(self, directory: str, data_source: str):
        self.directory = directory
        self.data_source = data_source
        self.earlier_data: Optional[str] = None
        self._fd = -1

    def take(self) -> None:
        """Make sure the directory exists and is private enough, and lock it."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            mode = os.stat(self.directory).st_mode
        except OSError as exc:
            raise StoreError(f"results directory {self.directory}: "
                             f"{exc.strerror or exc}") from exc
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise StoreError(f"results directory {self.directory} is writable by every user"
                             " and has no sticky bit; use a private directory"
                             f" (chmod o-w {self.directory})")
        self._lock(first=True)

    def relock(self) -> None:
        """Lock a re-created lock file (the old one was deleted with the directory)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self._lock(first=False)
        except StoreError as exc:
            raise OSError(errno.EBUSY, str(exc)) from exc

    def release(self) -> None:
        """Unlock (the lock file stays, saying who served what)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _lock(self, first: bool) -> None:
        path = os.path.join(self.directory, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise StoreError(f"results directory {self.directory}: cannot open {LOCK_NAME}: "
                             f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_owner(fd).get("pid", "unknown")
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise DirectoryInUse(f"results directory {self.directory} is in use by "
                                     f"another lestats server (pid {owner})") from exc
            raise StoreError(f"results directory {self.directory}: cannot lock "
                             f"{LOCK_NAME}: {exc.strerror or exc}") from exc
        if first:
            earlier = _read_owner(fd).get("data")
            self.earlier_data = earlier if isinstance(earlier, str) else None
        note = json.dumps({"pid": os.getpid(), "data": self.data_source}).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note + b"\n", 0)
        self._fd = fd


def _read_owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class JobStore:
    """The journal and the result files of one results directory.

    ``open`` takes the directory, recovers what an earlier run left and
    starts the journal; then ``accept``, ``write_result``, ``read_result``,
    ``expire_result`` and ``remove_result`` may be called from any thread.
    File names are only ever built from an int, never from a client's text.
    """

    def __init__(self, directory: "os.PathLike[str] | str", fsync: bool = False,
                 min_free_mb: float = 0.0):
        self.directory = os.fspath(directory)
        self.fsync = fsync
        self.min_free_bytes = int(min_free_mb * MIB)
        self._owner: Optional[ResultsDirectory] = None
        self._journal: Optional[Journal] = None

    def open(self, data_source: str = "") -> Recovered:
        """Own the directory, read what an earlier run left, rewrite the
        journal with just the unfinished jobs and start it.  Raise
        DirectoryInUse (changing nothing) if another server owns it, and
        StoreError if it cannot be used."""
        self._owner = ResultsDirectory(self.directory, data_source)
        self._owner.take()
        try:
            return self._recover()
        except OSError as exc:
            self._owner.release()
            raise StoreError(f"results directory {self.directory}: "
                             f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        """Finish the journal's writes, close it and give up the directory."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._owner is not None:
            self._owner.release()

    def check_space(self) -> None:
        """Raise DiskFull if the results directory's file system has less
        free space than the floor (``min_free_mb``)."""
        if not self.min_free_bytes:
            return
        try:
            info = os.statvfs(self.directory)
        except OSError:
            return   # wiped: the journal re-creates it; a write would say what is wrong
        free = info.f_bavail * info.f_frsize
        if free < self.min_free_bytes:
            raise DiskFull(errno.ENOSPC, f"only {free / MIB:.1f} MiB free in {self.directory},"
                           f" {self.min_free_bytes / MIB:.0f} MiB needed (--min-free-mb)")

    def accept(self, job: AcceptedJob) -> None:
        """Record ``job`` in the journal (see Journal.append)."""
        self._journal.append(job)

    def finished_below(self, number: int) -> None:
        """Every job below ``number`` has finished: their journal lines may go."""
        self._journal.segments.finished_below = number

    def result_path(self, number: int) -> str:
        """Where the result of job ``number`` lives."""
        return os.path.join(self.directory, f"job_id_{number}.json")

    def write_result(self, number: int, answer: bytes, digest: Optional[str] = None) -> None:
        """Store ``answer`` (JSON text) as job ``number``'s result, atomically.

        With ``digest`` (a name that stands for this answer's content and no
        other: the job layer gives one per question per run), the result is a
        hard link to the one copy of that answer in ``.answers/``,
        so a thousand jobs asking the same thing take one answer's space on
        disk; where hard links cannot be made, it is a copy of its own.
        """
        temp = os.path.join(self.directory, f".job_id_{number}.json.tmp")
        if digest is None or not self._link_shared(digest, answer, temp):
            self._write_new(temp, answer)
        os.replace(temp, self.result_path(number))

    def _link_shared(self, digest: str, answer: bytes, temp: str) -> bool:
        """Link ``temp`` to the shared copy of the answer, writing that copy
        first if there is none; False if this file system will not link."""
        shared = os.path.join(self.directory, ANSWERS, f"{digest}.json")
        for _ in range(3):
            try:
                os.link(shared, temp, follow_symlinks=False)
                return True
            except FileExistsError:     # left by a crash, or planted
                os.unlink(temp)
            except OSError as exc:
                # A new answer (or the copies were wiped), or a copy with as
                # many links as the file system allows (65,000 on ext4): a
                # fresh copy takes its name; the old links keep the old one.
                if exc.errno not in (errno.ENOENT, errno.EMLINK):
                    return False        # no hard links on this file system
                os.makedirs(os.path.dirname(shared), exist_ok=True)
                fresh = f"{shared}.{threading.get_ident()}.tmp"
                self._write_new(fresh, answer)
                os.replace(fresh, shared)
        return False

    @staticmethod
    def _create(temp: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            return os.open(temp, flags, 0o644)
        except FileExistsError:   # left by a crash, or planted: never written through
            os.unlink(temp)
            return os.open(temp, flags, 0o644)

    def _write_new(self, temp: str, answer: bytes) -> None:
        try:
            fd = self._create(temp)
        except FileNotFoundError:   # the directory was wiped
            os.makedirs(os.path.dirname(temp), exist_ok=True)
            fd = self._create(temp)
        try:
            write_all(fd, answer)
        finally:
            os.close(fd)

    def read_result(self, number: int) -> bytes:
        """The JSON text of job ``number``'s result (a regular file only)."""
        fd = open_no_follow(self.result_path(number), os.O_RDONLY)
        with os.fdopen(fd, "rb") as result:
            return result.read(MAX_RESULT)

    def expire_result(self, number: int) -> None:
        """Replace job ``number``'s result by EXPIRED_MARK (result retention)."""
        self.write_result(number, EXPIRED_MARK, _EXPIRED_ANSWER)

    def remove_result(self, number: int) -> None:
        """Delete job ``number``'s result (a damaged one, to run the job again)."""
        try:
            os.unlink(self.result_path(number))
        except FileNotFoundError:
            pass

    # -- recovery ---------------------------------------------------------------

    def _recover(self) -> Recovered:
        results, expired, damaged = self._scan_results(self._prune_answers())
        accepted, high, segments = self._read_journal({*results, *expired})
        pending = [job for _, job in sorted(accepted.items())]
        for job in pending:
            if job.number in damaged:
                log.warning("job_id_%d: result %s; running it again", job.number,
                            damaged.pop(job.number))
                self.remove_result(job.number)
        for number, reason in damaged.items():
            log.warning("job_id_%d: result %s, and it is not in the journal", number, reason)
        highest = max([high, *results, *expired, *damaged])
        files = Segments(self.directory, self.fsync, highest, max(segments, default=0) + 1,
                         owner=self._owner)
        files.start([job.line() for job in pending])
        self._journal = Journal(files)
        for segment in segments:
            os.unlink(os.path.join(self.directory, f".journal-{segment}.jsonl"))
        failed = {number: f"result file {reason}" for number, reason in damaged.items()}
        return Recovered(sorted(results), failed, pending, highest + 1,
                         self._owner.earlier_data, sorted(expired))

    def _prune_answers(self) -> Dict[Tuple[int, int], Optional[str]]:
        """Delete the shared answers no result links to any more, damaged
        ones (a result would be linked to them again) and leftovers; return
        the state (see _result_state) of those kept, by (device, inode)."""
        kept: Dict[Tuple[int, int], Optional[str]] = {}
        try:
            entries = list(os.scandir(os.path.join(self.directory, ANSWERS)))
        except FileNotFoundError:
            return kept
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                log.warning("%s: a directory among the answers; left alone", entry.path)
                continue
            info = entry.stat(follow_symlinks=False)
            state = "leftover" if entry.name.endswith(".tmp") or not entry.is_file(
                follow_symlinks=False) or info.st_nlink == 1 else self._result_state(entry.path)
            if state in (_VALID, _EXPIRED):
                kept[info.st_dev, info.st_ino] = state
            else:
                os.unlink(entry.path)
        return kept

    def _scan_results(self, states: Dict[Tuple[int, int], Optional[str]]
                      ) -> Tuple[List[int], List[int], Dict[int, str]]:
        """Valid, expired and damaged result files; stale temporary files
        removed.  ``states`` (by inode, see _prune_answers) saves reading the
        shared answers again: results that are links to one are read once."""
        valid, expired, damaged = [], [], {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = _RESULT_FILE.fullmatch(entry.name)
                if match:
                    info = entry.stat(follow_symlinks=False)
                    inode = (info.st_dev, info.st_ino)
                    if inode not in states:
                        states[inode] = self._result_state(entry.path)
                    state = states[inode]
                    if state is _VALID:
                        valid.append(int(match.group(1)))
                    elif state == _EXPIRED:
                        expired.append(int(match.group(1)))
                    else:
                        damaged[int(match.group(1))] = state
                elif _TEMP_FILE.fullmatch(entry.name):
                    if entry.is_dir(follow_symlinks=False):
                        log.warning("%s: a directory named like a temporary file; left alone",
                                    entry.path)
                    else:
                        os.unlink(entry.path)   # a write cut short by a crash
        return valid, expired, damaged

    @staticmethod
    def _result_state(path: str) -> Optional[str]:
        """_VALID (None) for a result file we wrote, _EXPIRED for one that
        holds EXPIRED_MARK, else what is wrong with it."""
        try:
            fd = open_no_follow(path, os.O_RDONLY)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        with os.fdopen(fd, "rb") as result:
            data = result.read(MAX_RESULT + 1)
        if not data:
            return "is empty"
        if len(data) > MAX_RESULT:
            return "is too large"
        if data == EXPIRED_MARK:
            return _EXPIRED
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return "is not valid JSON"
        return _VALID if isinstance(value, dict) else "is not a JSON object"

    def _read_journal(self, finished: Set[int]) -> Tuple[Dict[int, AcceptedJob], int,
                                                          List[int]]:
        """The jobs of every segment that have not ``finished``, the highest
        id the journal vouches for, and the segment numbers.  Damaged lines
        are skipped with a warning.  Memory grows with the unfinished jobs,
        not with the journal."""
        segments = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = _SEGMENT.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    segments.append(int(match.group(1)))
        segments.sort()
        accepted: Dict[int, AcceptedJob] = {}
        high, damaged = 0, 0
        for segment in segments:
            path = os.path.join(self.directory, f".journal-{segment}.jsonl")
            for number, line in _lines(path):
                job, vouched, problem = (None, 0, "longer than 64 KiB") if line is None \
                    else parse_journal_line(line)
                high = max(high, vouched)
                if job is not None:
                    if job.number not in finished:
                        accepted[job.number] = job
                elif problem is not None:
                    damaged += 1
                    if damaged <= WARNINGS_SHOWN:
                        log.warning("journal %s line %d: %s; skipped", path, number, problem)
        if damaged > WARNINGS_SHOWN:
            log.warning("journal: %d damaged lines skipped in all", damaged)
        return accepted, high, segments
