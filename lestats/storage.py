"""What jobs leave on disk: the results directory, its owner, the result
files, and what a start finds there.

Everything lives in the results directory, which has exactly one owner:

* ``.lestats.lock``: the owner holds an exclusive ``flock`` on it and keeps
  its pid and data file in it (``ResultsDirectory``).  A second server on
  the same directory finds it locked and stops before it has read or
  changed anything else.
* ``.journal-N.jsonl``: the journal of accepted jobs (``journal``).
* ``job_id_N.json``: job N's result, written to a temporary file (created
  with O_EXCL|O_NOFOLLOW) and renamed into place, so a reader sees no file or
  the whole file.  It is a hard link to ``.answers/<name>.json``, the one
  copy of that answer (named by the job layer, once per question per run),
  so that asking the same thing again and again does not fill the disk;
  copies no result links to any more are deleted at start.  Results are not
  fsynced one by one: the journal is the durable record, and a job whose
  result is missing (or not valid JSON after a power cut) is simply run
  again at start.

The lock and the journal are dot files, so the course checker's
``rm -rf results/*`` leaves them alone.  If they are deleted all the same
(the directory wiped whole), the journal notices at its next write and
re-creates the directory, the lock and a segment with the high-water mark;
a result written meanwhile re-creates the directory too.

``JobStore`` is what the job layer uses: ``open`` (take the directory and
recover), then ``accept``, ``write_result``, ``read_result``... from any
thread.  Nothing here is shared between threads but the journal, which
locks for itself, and the file system.
"""

import errno
import fcntl
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .files import create_exclusive, open_no_follow, write_all
from .journal import (AcceptedJob, Journal, Segments, read_journal,
                      segment_path)

log = logging.getLogger(__name__)

LOCK_NAME = ".lestats.lock"
ANSWERS = ".answers"                # one file per distinct answer; results link to them
_RESULT_FILE = re.compile(r"job_id_([1-9][0-9]{0,17})\.json")
_TEMP_FILE = re.compile(r"\.job_id_[1-9][0-9]{0,17}\.json\.tmp")
MAX_RESULT = 64 * 1024 * 1024       # a larger result file is not ours: refused
MIB = 1024 * 1024
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
            self._journal.close()   # kept: later appends are refused, not crashed
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
        self._journal.finished_below(number)

    def result_path(self, number: int) -> str:
        """Where the result of job ``number`` lives."""
        return os.path.join(self.directory, f"job_id_{number}.json")

    def write_result(self, number: int, answer: bytes, digest: Optional[str] = None) -> None:
        """Store ``answer`` (JSON text) as job ``number``'s result: a reader
        finds no file or the whole file.

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

    def _write_new(self, temp: str, answer: bytes) -> None:
        try:
            fd = create_exclusive(temp)
        except FileNotFoundError:   # the directory was wiped
            os.makedirs(os.path.dirname(temp), exist_ok=True)
            fd = create_exclusive(temp)
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
        accepted, high, segments = read_journal(self.directory, {*results, *expired})
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
                         relock=self._owner.relock)
        files.start([job.line() for job in pending])
        self._journal = Journal(files)
        for segment in segments:
            os.unlink(segment_path(self.directory, segment))
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
