"""The journal of accepted jobs: its line format, its segments, and the
group commit that writes it.

A line ``{"job": N, "statistic": ..., "question": ..., "state": ...}`` is
written for each accepted job *before* its id is given out.  The journal is
kept in segments, ``.journal-N.jsonl`` in the results directory; each starts
with ``{"high": H}``: every id up to H has been given out, so numbering never
goes back even when every job line is gone.  A segment whose jobs have all
finished is deleted, so the journal stays about as large as the unfinished
work.  ``read_journal`` reads them back at start, in any order (a job's
lines all say the same; the high-water mark is the largest), so a segment
number only has to be free: the next is the one after the largest in use,
or, past MAX_SEGMENT, the lowest free one (``next_segment``), and every
number the server can reach is one recovery reads.

Durability: by default a line is in the operating system's cache when its
id is given out, which survives the process being killed, not the machine
losing power; with ``fsync`` it is on disk (``fdatasync``, once per batch of
lines written together).

If the segment is deleted (a wipe), the next batch starts a new one with
the high-water mark *and a line for every job still unfinished*, after
taking the directory back if it went too (see ``resultsdir``): whatever was
accepted and not finished is in the journal again before the next id goes
out.

``Journal`` is one of the project's Condition patterns (a leader/follower
group commit): see its docstring.
"""

import errno
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from .files import read_lines, write_all

log = logging.getLogger(__name__)

HIGHEST_JOB = 10 ** 18 - 1          # job ids have at most 18 digits (see records.job_number)
SEGMENT_LINES = 10_000              # a segment is closed after this many job lines
MAX_LINE = 64 * 1024                # a longer journal line is not ours: skipped
WARNINGS_SHOWN = 10                 # damaged lines logged one by one, then counted
JOURNAL_TIMEOUT = 30.0              # seconds an append waits for its turn to be written
SEGMENT = re.compile(r"\.journal-([1-9][0-9]{0,17})\.jsonl")
MAX_SEGMENT = 10 ** 18 - 1          # the largest number SEGMENT matches
SEGMENT_TRIES = 100                 # names tried when the next ones are taken (planted)

Unfinished = Callable[[], Tuple[List["AcceptedJob"], int]]
"""What the job layer tells a journal re-created after a wipe: the jobs
accepted and not finished, and the highest id handed out so far."""


class JournalError(OSError):
    """A journal line could not be written; the journal is as it was before."""


class AcceptedJob(NamedTuple):
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


def segment_name(number: int) -> str:
    """The name of segment ``number`` of the journal."""
    return f".journal-{number}.jsonl"


def following_segment(number: int) -> int:
    """The segment number tried after ``number``: the next, or 1 past the last."""
    return number + 1 if number < MAX_SEGMENT else 1


def next_segment(taken: Set[int]) -> int:
    """A segment number nothing in ``taken`` has: one past the largest, or
    (past MAX_SEGMENT) the lowest free one."""
    if not taken:
        return 1
    if max(taken) < MAX_SEGMENT:
        return max(taken) + 1
    return min(set(range(1, len(taken) + 2)) - taken)


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


class JournalContents:   # pylint: disable=too-few-public-methods
    """What ``read_journal`` found: the unfinished jobs by number, the
    highest id vouched for and the segment that vouched for it, the
    segments read (to delete once their lines are copied), and every
    segment number in use (odd entries included: never reused)."""

    __slots__ = ("accepted", "high", "high_segment", "segments", "taken")

    def __init__(self) -> None:
        self.accepted: Dict[int, AcceptedJob] = {}
        self.high = 0
        self.high_segment = ""
        self.segments: List[int] = []
        self.taken: Set[int] = set()


def read_journal(dir_fd: int, finished: Set[int],
                 trusted: Callable[[Any], bool] = lambda info: True) -> JournalContents:
    """The jobs of every segment in directory ``dir_fd`` that have not
    ``finished``, and the rest of JournalContents.  Damaged lines are
    skipped with a warning; so is a segment name that is not a regular file
    or not ``trusted`` (its lstat: another user's, in a shared directory).
    Memory grows with the unfinished jobs, not with the journal."""
    found = _segments(dir_fd, trusted)
    damaged = 0
    for segment in found.segments:
        name = segment_name(segment)
        for number, line in read_lines(name, MAX_LINE, dir_fd):
            job, vouched, problem = (None, 0, "longer than 64 KiB") if line is None \
                else parse_journal_line(line)
            if vouched > found.high:
                found.high, found.high_segment = vouched, name
            if job is not None:
                if job.number not in finished:
                    found.accepted[job.number] = job
            elif problem is not None:
                damaged += 1
                if damaged <= WARNINGS_SHOWN:
                    log.warning("journal %s line %d: %s; skipped", name, number, problem)
    if damaged > WARNINGS_SHOWN:
        log.warning("journal: %d damaged lines skipped in all", damaged)
    return found


def _segments(dir_fd: int, trusted: Callable[[Any], bool]) -> JournalContents:
    """The segments of directory ``dir_fd`` to read (sorted), and every
    segment number taken (see read_journal)."""
    found = JournalContents()
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            match = SEGMENT.fullmatch(entry.name)
            if not match:
                continue
            found.taken.add(int(match.group(1)))
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or not trusted(info):
                log.warning("journal: %s is %s; skipped", entry.name,
                            "not a regular file" if not stat.S_ISREG(info.st_mode) else
                            f"another user's (uid {info.st_uid})")
            else:
                found.segments.append(int(match.group(1)))
    found.segments.sort()
    return found


# An entry's way through the journal.
QUEUED = "queued"           # waiting for a leader to take it
IN_BATCH = "in batch"       # taken by a leader, being written
WRITTEN = "written"         # written (or failed: see error); its appender may go
WITHDRAWN = "withdrawn"     # its appender gave up waiting; no leader takes it


class _Entry:   # pylint: disable=too-few-public-methods
    """One line handed to the journal, and what became of it.  ``number``
    and ``line`` never change; ``state`` and ``error`` are guarded by the
    Journal's mutex."""

    __slots__ = ("number", "line", "state", "error")

    def __init__(self, number: int, line: bytes):
        self.number = number
        self.line = line
        self.state = QUEUED
        self.error: Optional[OSError] = None


class _Batch:   # pylint: disable=too-few-public-methods
    """What a leader writes: the entries it took, and how far the jobs had
    finished when it took them (closed segments below that may go)."""

    __slots__ = ("entries", "finished_below")

    def __init__(self, entries: List[_Entry], finished_below: int):
        self.entries = entries
        self.finished_below = finished_below


class Journal:
    """Lines from many request threads, written a batch at a time.

    ``append`` puts its line among the waiting ones and waits for one of two
    things: its line written by another thread, or its turn to lead.  The
    first appender to find no batch being written becomes the leader: under
    the mutex it takes every waiting line (its own included), writes them
    together with the mutex let go (``Segments.write``: one ``os.write`` and,
    with fsync on, one ``fdatasync``: a group commit), then, under the mutex
    again, tells each of their appenders how it went (success, or the error
    every one of them gets) and wakes them.  Appenders whose lines came too
    late for that batch wait; when it is over, one of them leads the next.
    A lone client's POST thus writes its own line, with no hand-off to
    another thread; busy ones share writes and flushes.

    ``_mutex`` guards ``_waiting``, ``_writing``, ``_closed``,
    ``_finished_below`` and the ``state`` and ``error`` of every entry.  It is
    never held while writing.  ``_written`` (on the mutex) is notified (all)
    when a batch is over: the batch's appenders must all learn its outcome,
    the late ones must all look whether to lead, and ``close`` waits for it.

    The segments are touched by one thread at a time: the leader (the thread
    that set ``_writing``), or ``close`` once the last batch is over and no
    leader can start any more (``_closed`` is set).

    Waiting is bounded where it can be: a line not yet in a batch waits at
    most ``timeout`` seconds for its turn (then it is withdrawn, and the
    append fails); a line in the batch being written waits for that write to
    end, without a deadline, because only its end says whether the line is in
    the journal (and the write itself is bounded by the file system).
    """

    def __init__(self, segments: "Segments"):
        self.segments = segments
        self.timeout = JOURNAL_TIMEOUT
        self._mutex = threading.Lock()
        self._written = threading.Condition(self._mutex)
        self._waiting: List[_Entry] = []
        self._writing = False
        self._closed = False
        self._finished_below = 0

    def append(self, job: AcceptedJob) -> None:
        """Write ``job``'s line; return once it is written (and, with fsync
        on, on disk).  Raise JournalError if it could not be: the journal is
        then as it was."""
        self._commit(_Entry(job.number, job.line()))

    def sync(self) -> None:
        """Return once a batch has been through the segments' checks: if the
        results directory was wiped, it is taken back (and the unfinished
        jobs journaled again) by then.  Raise JournalError if it could not
        be (DirectoryLost's message, if it is lost)."""
        self._commit(_Entry(0, b""))

    def _commit(self, entry: "_Entry") -> None:
        with self._mutex:
            batch, error = self._wait_for_turn(entry)
        if batch is not None:                     # this thread leads a batch
            error = self._write(batch)            # the mutex let go
            with self._mutex:
                self._report(batch, error)
        if error is not None:
            raise JournalError(error.errno, error.strerror or str(error))

    def finished_below(self, number: int) -> None:
        """Every job below ``number`` has finished: their lines may go."""
        with self._mutex:
            self._finished_below = max(self._finished_below, number)

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

    def _wait_for_turn(self, entry: _Entry) -> Tuple[Optional[_Batch], Optional[OSError]]:
        """Queue ``entry`` and wait until it is written by another thread
        (then return None and the outcome) or this thread is to lead (then
        return the batch to write).  Raise JournalError once closed or past
        the timeout.  Hold ``_mutex``."""
        if self._closed:
            raise JournalError(errno.ESHUTDOWN, "the journal is closed")
        self._waiting.append(entry)
        deadline = time.monotonic() + self.timeout
        while entry.state != WRITTEN:
            if not self._writing:
                if self._closed:   # closed while this line waited for its turn
                    entry.state = WITHDRAWN
                    raise JournalError(errno.ESHUTDOWN, "the journal is closed")
                return self._take_batch(), None
            if entry.state == IN_BATCH:
                self._written.wait()   # only the end of that write tells how it went
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:   # no batch took it in time: give it up
                entry.state = WITHDRAWN
                raise JournalError(errno.ETIMEDOUT, "the journal did not answer within"
                                                    f" {self.timeout:g} s")
            self._written.wait(remaining)
        return None, entry.error

    def _take_batch(self) -> _Batch:
        """Become the leader: take every line still waiting.  Hold ``_mutex``."""
        entries = [entry for entry in self._waiting if entry.state == QUEUED]
        self._waiting = []
        for entry in entries:
            entry.state = IN_BATCH
        self._writing = True
        return _Batch(entries, self._finished_below)

    def _write(self, batch: _Batch) -> Optional[OSError]:
        """Write ``batch`` to the segments; the error, if it failed.  Called
        by the leader with ``_mutex`` let go."""
        try:
            return self.segments.write(batch.entries, batch.finished_below)
        except Exception as exc:   # pylint: disable=broad-except
            # A bug here must not leave the batch's appenders waiting for ever.
            log.exception("journal write failed")
            return OSError(errno.EIO, f"journal write failed: {exc}")

    def _report(self, batch: _Batch, error: Optional[OSError]) -> None:
        """Tell the batch's appenders how it went and let the next leader
        start.  Hold ``_mutex``."""
        for entry in batch.entries:
            entry.state, entry.error = WRITTEN, error
        self._writing = False
        self._written.notify_all()


class Segments:
    """The journal's files, used by one thread at a time (see Journal), so
    nothing here needs a lock of its own.

    Being the only writer, it knows where the open segment ended before a
    batch: a failed or short write is cut back there (``ftruncate``), so no
    torn line is ever followed by another.  A segment is closed after
    SEGMENT_LINES lines; a closed one is deleted once every job in it has
    finished.  Every new segment starts with the high-water mark ``_high``,
    and is created with O_EXCL (a name taken by something else is skipped).
    If the open segment was deleted, the next write starts a new one with
    the high-water mark and every job ``unfinished`` names, in the results
    directory taken back first if it was deleted too (``owner.reclaim``).
    """

    def __init__(self, owner: Any, fsync: bool, high: int, first: int,
                 unfinished: Unfinished):
        self._owner = owner                # resultsdir.ResultsDirectory
        self._fsync = fsync
        self._unfinished = unfinished
        self._high = high
        self._number = first               # of the open segment
        self._fd = -1
        self._size = 0
        self._lines = 0
        self._closed: List[Tuple[int, int]] = []   # (segment, highest job in it)

    def start(self, lines: List[bytes]) -> None:
        """Open the first segment with ``lines`` (the unfinished jobs) in it."""
        self._open(lines, self._owner.fd())

    def write(self, entries: List[_Entry], finished_below: int) -> Optional[OSError]:
        """Append the lines of ``entries``; on failure cut the segment back
        and return the error.  Closed segments whose jobs are all below
        ``finished_below`` may be deleted on the way."""
        try:
            self._check_still_there()
            if self._lines >= SEGMENT_LINES:
                self._rotate(finished_below)
        except OSError as exc:
            log.error("journal: %s", exc)
            return exc
        lines = [entry.line for entry in entries if entry.line]
        if not lines:      # only syncs: the check was the point
            return None
        data = b"".join(lines)
        before = self._size
        try:
            write_all(self._fd, data)
            if self._fsync:
                getattr(os, "fdatasync", os.fsync)(self._fd)   # macOS has no fdatasync
        except OSError as exc:
            self._cut_back(before)
            log.error("journal write failed, %d line(s) refused: %s", len(lines), exc)
            return exc
        self._size += len(data)
        self._lines += len(lines)
        self._high = max(self._high, max(entry.number for entry in entries))
        return None

    def close(self) -> None:
        """Close the open segment (re-created first if it was wiped)."""
        if self._fd >= 0:
            try:
                self._check_still_there()
            except OSError as exc:
                log.error("journal: %s", exc)
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

    def _open(self, lines: List[bytes], dir_fd: int) -> None:
        """Start a segment, at ``_number`` or the first free name after it,
        in directory ``dir_fd``: the high-water mark, then ``lines``, on disk
        (fsynced) before the previous segment is let go."""
        data = _high_line(self._high) + b"".join(lines)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        for _ in range(SEGMENT_TRIES):
            try:
                fd = os.open(segment_name(self._number), flags, 0o644, dir_fd=dir_fd)
                break
            except FileExistsError:
                log.warning("journal: %s is taken by something this server did not"
                            " write; skipped", segment_name(self._number))
                self._number = following_segment(self._number)
        else:
            raise OSError(errno.EEXIST, f"{SEGMENT_TRIES} journal segment names in a row"
                                        " are taken")
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._size, self._lines = fd, len(data), len(lines)

    def _rotate(self, finished_below: int) -> None:
        """Close the full segment, open the next, delete the finished ones."""
        self._closed.append((self._number, self._high))
        self._number = following_segment(self._number)
        directory = self._owner.fd()
        self._open([], directory)
        finished = [item for item in self._closed if item[1] < finished_below]
        if not finished:
            return
        if self._fsync:
            os.sync()   # the results of those jobs, before their lines go
        for number, _ in finished:
            try:
                os.unlink(segment_name(number), dir_fd=directory)
            except FileNotFoundError:
                pass
        self._closed = [item for item in self._closed if item not in finished]

    def _check_still_there(self) -> None:
        """If the open segment was deleted (a wipe), start a new one with
        the high-water mark and the unfinished jobs, taking the directory
        back first if it went too."""
        if os.fstat(self._fd).st_nlink > 0:
            return
        directory = self._owner.fd()      # DirectoryLost if it is lost already
        jobs, last_id = self._unfinished()
        self._high = max(self._high, last_id)
        lines = [job.line() for job in jobs]
        self._closed = []
        self._number = following_segment(self._number)
        if self._owner.deleted(directory):
            log.warning("the results directory %s was deleted; re-creating it with %d"
                        " unfinished job(s) (ids continue above %d)", self._owner.path,
                        len(lines), self._high)
            self._owner.reclaim(lambda fd: self._open(lines, fd))
        else:
            log.warning("the journal in %s was deleted; re-creating it with %d unfinished"
                        " job(s) (ids continue above %d)", self._owner.path, len(lines),
                        self._high)
            self._open(lines, directory)
