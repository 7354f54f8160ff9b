"""What jobs leave on disk: the result files, and what a start finds there.

Everything lives in the results directory, which has exactly one owner and
is worked on through a descriptor, never through its path (``resultsdir``):

* ``.lestats.lock``: the owner's pid and data file.
* ``.journal-N.jsonl``: the journal of accepted jobs (``journal``).
* ``job_id_N.json``: job N's result, a file of its own (no other job's
  result shares it: a write to or damage of one result file changes that
  job alone).  It is written to a temporary file (created with
  O_EXCL|O_NOFOLLOW) and renamed into place, so a reader sees no file or the
  whole file.  A result larger than ``max_result`` (64 MiB) is never
  written: the job fails instead.  Results are not fsynced one by one: the
  journal is the durable record, and a job whose result is missing (or not
  valid JSON after a power cut) is simply run again at start.
* ``job_id_N.error``: job N failed while computing; the file holds the
  reason, so the job is not run again at every start.
* ``job_id_N.expired``: an empty mark, made when ``--keep-results`` deletes
  job N's result, so that a restart still answers 410 for it (an empty
  file takes a name and an inode, no data block).

The lock and the journal are dot files, so the course checker's
``rm -rf results/*`` leaves them alone.  A wipe of the whole directory is
``resultsdir``'s and the journal's business: a result write that finds its
directory deleted asks the journal to take it back, then writes once more.

``JobStore`` is what the job layer uses: ``open`` (take the directory and
recover), then ``accept``, ``write_result``, ``read_result``... from any
thread.  Nothing here is shared between threads but the journal and the
directory, which lock for themselves, and the file system.  ``_owner`` and
``_journal`` are set by ``open`` before any other thread uses the store.
"""

import errno
import json
import logging
import os
import re
import stat
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar

from .files import TooLarge, create_exclusive, read_regular, write_all
from .journal import (HIGHEST_JOB, AcceptedJob, Journal, Segments, Unfinished,
                      next_segment, read_journal, segment_name)
from .resultsdir import (LOCK_NAME, DirectoryInUse, DirectoryLost, ResultsDirectory,
                         StoreError)

__all__ = ["LOCK_NAME", "MAX_RESULT", "DirectoryInUse", "DirectoryLost", "DiskFull",
           "JobStore", "Recovered", "ResultTooLarge", "StoreError"]

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"job_id_([1-9][0-9]{0,17})\.(json|error|expired)")
_TEMP_FILE = re.compile(r"\.job_id_[1-9][0-9]{0,17}\.(json|error)\.tmp")
MAX_RESULT = 64 * 1024 * 1024       # a larger answer is not served: the job fails
MAX_REASON = 4096                   # bytes of a failed job's reason kept on disk
MIB = 1024 * 1024
EXPIRED_MARK = b'{"expired": "result deleted (--keep-results)"}\n'
"""What an expired job's result file held before expiry marks were files of
their own (read at start, never written any more)."""
_VALID, _EXPIRED = None, "expired"  # _result_state's answers besides a problem
T = TypeVar("T")


class DiskFull(OSError):
    """Less free space than the floor: a job would not be recorded safely."""


class ResultTooLarge(ValueError):
    """An answer is larger than a result file may be."""


class Recovered(NamedTuple):
    """What a start finds in the results directory.

    ``finished``: job numbers with a valid result; ``failed``: job numbers
    that failed (their reason recorded) or whose result file is damaged and
    that cannot run again (no journal line), with the reason; ``pending``:
    accepted jobs without a result, to run again; ``next_number``: the first
    id never given out; ``earlier_data``: the data file the previous owner
    served, if it said; ``expired``: job numbers whose result was deleted
    by ``--keep-results``.
    """

    finished: List[int]
    failed: Dict[int, str]
    pending: List[AcceptedJob]
    next_number: int
    earlier_data: Optional[str] = None
    expired: Sequence[int] = ()


class _Scan:   # pylint: disable=too-few-public-methods
    """The job files a start finds, by job number, and the largest number
    any of them (odd ones included) has, with its name."""

    __slots__ = ("valid", "expired", "errors", "damaged", "highest")

    def __init__(self) -> None:
        self.valid: Set[int] = set()
        self.expired: Set[int] = set()
        self.errors: Dict[int, str] = {}
        self.damaged: Dict[int, str] = {}
        self.highest: Tuple[int, str] = (0, "")


class JobStore:
    """The journal and the job files of one results directory.

    ``open`` takes the directory, recovers what an earlier run left and
    starts the journal; then ``accept``, ``write_result``, ``read_result``,
    ``record_failure`` and ``expire_result`` may be called from any thread.
    File names are only ever built from an int, never from a client's text.
    A store that was never opened (the bug lab's) reads and writes its
    directory as it finds it, without owning it.
    """

    def __init__(self, directory: "os.PathLike[str] | str", fsync: bool = False,
                 min_free_mb: float = 0.0):
        self.directory = os.fspath(directory)
        self.fsync = fsync
        self.min_free_bytes = int(min_free_mb * MIB)
        self.max_result = MAX_RESULT
        self._owner: Optional[ResultsDirectory] = None
        self._journal: Optional[Journal] = None

    def open(self, data_source: str = "",
             unfinished: Unfinished = lambda: ([], 0)) -> Recovered:
        """Own the directory, read what an earlier run left, rewrite the
        journal with just the unfinished jobs and start it.  Raise
        DirectoryInUse (changing nothing) if another server owns it, and
        StoreError if it cannot be used.  ``unfinished`` is what the journal
        asks if the directory is wiped (see journal.Unfinished)."""
        owner = ResultsDirectory(self.directory, data_source)
        owner.take()
        self._owner = owner
        try:
            return self._recover(owner, unfinished)
        except StoreError:
            owner.release()
            raise
        except OSError as exc:
            owner.release()
            raise StoreError(f"results directory {self.directory}: "
                             f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        """Finish the journal's writes, close it and give up the directory."""
        if self._journal is not None:
            self._journal.close()   # kept: later appends are refused, not crashed
        if self._owner is not None:
            self._owner.release()

    def check_space(self) -> None:
        """Raise DiskFull if the results directory's file system has less
        free space than the floor (``min_free_mb``)."""
        if not self.min_free_bytes:
            return
        try:
            info = os.statvfs(self._owner.fd())
        except OSError:
            return   # lost or gone: the journal's write says what is wrong
        free = info.f_bavail * info.f_frsize
        if free < self.min_free_bytes:
            raise DiskFull(errno.ENOSPC, f"only {free / MIB:.1f} MiB free in {self.directory},"
                           f" {self.min_free_bytes / MIB:.0f} MiB needed (--min-free-mb)")

    def accept(self, job: AcceptedJob) -> None:
        """Record ``job`` in the journal (see Journal.append)."""
        self._journal.append(job)

    def finished_below(self, number: int) -> None:
        """Every job below ``number`` has finished: their journal lines may go."""
        self._journal.finished_below(number)

    def result_path(self, number: int) -> str:
        """Where the result of job ``number`` is (for people; the store
        itself never opens a path)."""
        return os.path.join(self.directory, f"job_id_{number}.json")

    def write_result(self, number: int, answer: bytes, kind: str = "json") -> None:
        """Store ``answer`` (JSON text) as job ``number``'s result: a reader
        finds no file or the whole file.  ResultTooLarge if it is larger
        than ``max_result``.  (``kind`` "error" is ``record_failure``'s.)"""
        if len(answer) > self.max_result:
            raise ResultTooLarge(f"the answer is {len(answer) / MIB:.1f} MiB, more than the"
                                 f" {self.max_result / MIB:g} MiB a result may have")
        name, temp = f"job_id_{number}.{kind}", f".job_id_{number}.{kind}.tmp"

        def write(fd: int) -> None:
            out = create_exclusive(temp, fd)
            try:
                write_all(out, answer)
            except OSError:
                os.close(out)
                os.unlink(temp, dir_fd=fd)   # a full disk keeps nothing half written
                raise
            os.close(out)
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)   # one step: none or all
        self._in_directory(write, writes=True)

    def record_failure(self, number: int, reason: str) -> None:
        """Keep job ``number``'s failure, so a restart does not run it again."""
        self.write_result(number, reason.encode("utf-8")[:MAX_REASON], kind="error")

    def read_result(self, number: int) -> bytes:
        """The JSON text of job ``number``'s result, whole (a regular file
        only; TooLarge over ``max_result``)."""
        return self._in_directory(
            lambda fd: read_regular(f"job_id_{number}.json", self.max_result, fd))

    def expire_result(self, number: int) -> None:
        """Delete job ``number``'s result, leaving its expiry mark (result retention)."""
        def expire(fd: int) -> None:
            os.close(create_exclusive(f"job_id_{number}.expired", fd))
            try:
                os.unlink(f"job_id_{number}.json", dir_fd=fd)
            except FileNotFoundError:
                pass
        self._in_directory(expire, writes=True)

    def _in_directory(self, action: Callable[[int], T], writes: bool = False) -> T:
        """``action(fd)`` in the results directory.  A write that finds the
        directory deleted has the journal take it back (or say it is lost),
        then runs once more there."""
        owner = self._owner
        if owner is None:   # never opened: the directory as it is, not owned
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                return action(fd)
            finally:
                os.close(fd)
        fd = owner.fd()
        try:
            return action(fd)
        except FileNotFoundError:
            if not writes or self._journal is None or not owner.deleted(fd):
                raise
        log.warning("a write found the results directory %s deleted", self.directory)
        self._journal.sync()   # the journal's leader takes it back, or it is lost
        return action(owner.fd())

    # -- recovery ---------------------------------------------------------------

    def _recover(self, owner: ResultsDirectory, unfinished: Unfinished) -> Recovered:
        fd = owner.fd()
        scan = self._scan(fd, owner)
        journal = read_journal(fd, {*scan.valid, *scan.expired, *scan.errors}, owner.trusted)
        pending = [job for _, job in sorted(journal.accepted.items())]
        for job in pending:
            if job.number in scan.damaged:
                log.warning("job_id_%d: result %s; running it again", job.number,
                            scan.damaged.pop(job.number))
                os.unlink(f"job_id_{job.number}.json", dir_fd=fd)
        for number, reason in scan.damaged.items():
            log.warning("job_id_%d: result %s, and it is not in the journal", number, reason)
        highest, where = max(scan.highest, (journal.high, f"the journal ({journal.high_segment})"))
        if highest >= HIGHEST_JOB:
            raise StoreError(f"results directory {self.directory}: no job ids left above"
                             f" job_id_{highest} (from {where}); delete that entry or use"
                             " another directory")
        files = Segments(owner, self.fsync, highest, next_segment(journal.taken), unfinished)
        files.start([job.line() for job in pending])
        self._journal = Journal(files)
        for segment in journal.segments:
            os.unlink(segment_name(segment), dir_fd=fd)
        failed = {number: f"result file {reason}" for number, reason in scan.damaged.items()}
        failed.update(scan.errors)
        return Recovered(sorted(scan.valid), failed, pending, highest + 1,
                         owner.earlier_data, sorted(scan.expired))

    def _scan(self, fd: int, owner: ResultsDirectory) -> _Scan:
        """The job files of directory ``fd``; leftovers of a crash removed,
        odd entries skipped with a warning each."""
        found = _Scan()
        with os.scandir(fd) as entries:
            for entry in entries:
                match = _ENTRY.fullmatch(entry.name)
                if match:
                    number = int(match.group(1))
                    found.highest = max(found.highest, (number, entry.name))
                    info = entry.stat(follow_symlinks=False)
                    if self._usable(entry.name, info, owner):
                        self._classify(entry.name, number, match.group(2), fd, found)
                elif _TEMP_FILE.fullmatch(entry.name):
                    info = entry.stat(follow_symlinks=False)
                    if self._usable(entry.name, info, owner):
                        os.unlink(entry.name, dir_fd=fd)   # a write cut short by a crash
        for number in found.expired & found.valid:        # an expiry cut short by a crash
            os.unlink(f"job_id_{number}.json", dir_fd=fd)
        found.valid -= found.expired
        for number in {*found.valid, *found.expired}:
            found.errors.pop(number, None)
        for number in {*found.valid, *found.expired, *found.errors}:
            found.damaged.pop(number, None)
        return found

    @staticmethod
    def _usable(name: str, info: os.stat_result, owner: ResultsDirectory) -> bool:
        """A regular file this server may have written; else False, with a warning."""
        if not stat.S_ISREG(info.st_mode):
            log.warning("%s in %s is not a regular file; skipped", name, owner.path)
            return False
        if not owner.trusted(info):
            log.warning("%s in %s belongs to another user (uid %d); skipped", name,
                        owner.path, info.st_uid)
            return False
        return True

    def _classify(self, name: str, number: int, kind: str, fd: int, found: _Scan) -> None:
        if kind == "expired":
            found.expired.add(number)
        elif kind == "error":
            try:
                reason = read_regular(name, MAX_REASON, fd).decode("utf-8", "replace")
            except OSError as exc:
                reason = f"failed (its reason cannot be read: {exc.strerror or exc})"
            found.errors[number] = reason or "failed"
        else:
            state = self._result_state(name, fd)
            if state is _VALID:
                found.valid.add(number)
            elif state == _EXPIRED:
                found.expired.add(number)
            else:
                found.damaged[number] = state

    def _result_state(self, name: str, fd: int) -> Optional[str]:
        """_VALID (None) for a result file we wrote, _EXPIRED for one that
        holds EXPIRED_MARK, else what is wrong with it."""
        try:
            data = read_regular(name, self.max_result, fd)
        except TooLarge:
            return "is too large"
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if not data:
            return "is empty"
        if data == EXPIRED_MARK:
            return _EXPIRED
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return "is not valid JSON"
        return _VALID if isinstance(value, dict) else "is not a JSON object"
