"""What jobs leave on disk: the journal of accepted jobs and the result files.

Everything lives in the results directory:

* ``accepted.jsonl``: one line ``{"job": N, "endpoint": ..., "body": ...}``
  per accepted job, written *before* the client is told its job id.  By
  default the line is then in the operating system's cache, which survives
  the process being killed (SIGKILL, a crash) but not the machine losing
  power.  With fsync on (``--fsync``) it has also reached the disk: appends
  are flushed with one ``fdatasync`` for as many as are waiting (a group
  commit, see ``GroupSync``).
* ``job_id_N.json``: job N's result, written to a temporary file and renamed
  into place, so a reader sees no file or the whole file.  Results are not
  fsynced: the journal is the durable record, and a job whose result is
  missing (or empty after a power cut) is simply run again at start.

At start, ``JobStore.recover`` reads both, rewrites the journal with just
the jobs that have no result (so it does not grow without end), and says
which jobs to run again and where numbering continues.
"""

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping

log = logging.getLogger(__name__)

JOURNAL_NAME = "accepted.jsonl"
_RESULT_FILE = re.compile(r"job_id_([1-9][0-9]{0,17})\.json")
_TEMP_SUFFIX = ".tmp"


class GroupSync:
    """Makes appends to one file durable, many with one ``fdatasync``.

    A thread calls ``sync()`` after its ``os.write`` has returned.  The first
    caller to find no flush running becomes the leader: it notes how many
    writes have asked so far, flushes outside the lock, then marks all of
    them synced and wakes the rest.  A caller whose write came after the
    leader's note waits for the next flush, which it may lead itself.

    ``_mutex`` guards ``_asked``, ``_synced`` and ``_flushing``; it is never
    held during the flush.  ``_flushed`` (on the mutex) is notified after
    every flush.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._mutex = threading.Lock()
        self._flushed = threading.Condition(self._mutex)
        self._asked = 0       # writes that called sync()
        self._synced = 0      # writes known to be on disk
        self._flushing = False

    def sync(self) -> None:
        """Return once every write made before this call is on disk."""
        with self._mutex:
            self._asked += 1
            ticket = self._asked
            while self._synced < ticket:
                if self._flushing:
                    self._flushed.wait()
                    continue
                self._flushing = True
                target = self._asked
                self._mutex.release()
                try:
                    os.fdatasync(self._fd)
                finally:
                    self._mutex.acquire()   # pylint: disable=consider-using-with
                    self._flushing = False
                    self._flushed.notify_all()
                self._synced = max(self._synced, target)


@dataclass(frozen=True)
class AcceptedJob:
    """A journal line: job ``number`` is statistic ``endpoint`` for ``body``."""

    number: int
    endpoint: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Recovered:
    """What a restart finds: the finished job numbers, the accepted jobs
    that have no result yet, and the next free job number."""

    finished: List[int]
    pending: List[AcceptedJob]
    next_number: int


def _journal_line(job: AcceptedJob) -> bytes:
    record = {"job": job.number, "endpoint": job.endpoint, "body": job.body}
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


class JobStore:
    """The journal and the result files of one results directory.

    File names are only ever built from an int, never from a client's text.
    ``accept`` may be called from many threads at once: each journal line is
    one ``os.write`` to a file opened with O_APPEND, which the kernel appends
    whole, so no Python lock is needed for it.
    """

    def __init__(self, directory: "os.PathLike[str] | str", fsync: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._journal_path = self.directory / JOURNAL_NAME
        self._journal_fd = -1
        self._sync = None

    def recover(self) -> Recovered:
        """Read what an earlier run left, compact the journal and open it for
        appending.  Call once, before ``accept``."""
        for stale in self.directory.glob(f".*{_TEMP_SUFFIX}"):
            stale.unlink()   # a write cut short by a crash
        finished = self._finished_numbers()
        accepted = self._read_journal()
        done = set(finished)
        pending = [job for number, job in sorted(accepted.items()) if number not in done]
        highest = max([0, *finished, *accepted])
        self._rewrite_journal(pending)
        self._journal_fd = os.open(self._journal_path,
                                   os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sync = GroupSync(self._journal_fd)
        return Recovered(finished, pending, highest + 1)

    def accept(self, job: AcceptedJob) -> None:
        """Record ``job`` in the journal; with fsync on, on disk when this returns."""
        data = _journal_line(job)
        if os.write(self._journal_fd, data) != len(data):
            raise OSError(f"short write to {self._journal_path}")
        if self.fsync:
            self._sync.sync()

    def close(self) -> None:
        """Close the journal."""
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1

    def result_path(self, number: int) -> Path:
        """Where the result of job ``number`` lives."""
        return Path(self._result_file(number))

    def _result_file(self, number: int, prefix: str = "", suffix: str = "") -> str:
        # The one place a result file name is made, from an int only; a str
        # path, since pathlib costs more than the write itself on this hot path.
        return os.path.join(self.directory, f"{prefix}job_id_{number}.json{suffix}")

    def write_result(self, number: int, answer: bytes) -> None:
        """Store ``answer`` (JSON text) as job ``number``'s result, atomically."""
        final = self._result_file(number)
        temp = self._result_file(number, prefix=".", suffix=_TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(answer)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, final)

    def read_result(self, number: int) -> bytes:
        """The JSON text of job ``number``'s result."""
        with open(self._result_file(number), "rb") as result:
            return result.read()

    def _finished_numbers(self) -> List[int]:
        numbers = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = _RESULT_FILE.fullmatch(entry.name)
                if match is None:
                    continue
                if entry.stat().st_size == 0:   # renamed but never flushed: a power cut
                    os.unlink(entry.path)
                    continue
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _read_journal(self) -> Dict[int, AcceptedJob]:
        accepted: Dict[int, AcceptedJob] = {}
        if not self._journal_path.exists():
            return accepted
        torn = 0
        with open(self._journal_path, "rb") as journal:
            for line in journal:
                try:
                    record = json.loads(line)
                    job = AcceptedJob(int(record["job"]), str(record["endpoint"]),
                                      dict(record["body"]))
                except (ValueError, KeyError, TypeError):
                    torn += 1   # only a crash mid-append leaves one, at the end
                    continue
                accepted[job.number] = job
        if torn:
            log.warning("%s: %d unreadable journal line(s) ignored", self._journal_path, torn)
        return accepted

    def _rewrite_journal(self, pending: List[AcceptedJob]) -> None:
        temp = self.directory / f".{JOURNAL_NAME}{_TEMP_SUFFIX}"
        with open(temp, "wb") as out:
            out.writelines(_journal_line(job) for job in pending)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self._journal_path)
