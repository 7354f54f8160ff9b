"""A job's record: its status names, its id's form, and the table that keeps
every job's record in a few dozen bytes.

Nothing here locks: ``JobTable`` is guarded by the job manager's mutex
(see ``jobs.JobManager``), and the rest are constants and pure functions.
"""

import bisect
import re
import time
from array import array
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

from .statistics import Query

# A job's status, as stored in JobTable.status.
QUEUED, RUNNING, DONE, ERROR, EXPIRED = range(5)
STATUS_NAMES = ("queued", "running", "done", "error", "expired")
# What the course's routes say: a queued job is "running" there too.
COURSE_NAMES = ("running", "running", "done", "error", "expired")
_COURSE_BYTES = tuple(name.encode("ascii") for name in COURSE_NAMES)
UNFINISHED = (QUEUED, RUNNING)

_JOB_ID = re.compile(r"job_id_([1-9][0-9]{0,17})")


class UnknownJob(LookupError):
    """The job id is malformed or was never issued."""


def job_number(job_id: str) -> int:
    """The N of ``job_id_N``; raise UnknownJob if ``job_id`` is not exactly
    that form (no sign, no leading zero, no path characters)."""
    match = _JOB_ID.fullmatch(job_id)
    if match is None:
        raise UnknownJob(job_id)
    return int(match.group(1))


def utc_iso(moment: float) -> Optional[str]:
    """``moment`` (seconds since the epoch) as ISO 8601 UTC with a Z; None for 0."""
    if not moment:
        return None
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    return f"{seconds}.{int(moment * 1000) % 1000:03d}Z"


class JobResult(NamedTuple):
    """What get_results answers: a status (as the course names it) and, when
    done, the result's JSON text, or, on error, the reason."""

    status: str
    data_json: Optional[bytes] = None
    reason: Optional[str] = None


class JobTable:
    """Every job's record, in id order, a few dozen bytes each.

    Parallel arrays indexed by a job's slot (its place in id order): the
    number, the status, three times (floats, 0 for "not yet"), the Query
    (shared by every job that asks the same thing), the worker's index
    (0 for none) and the pool ticket.  Reasons are kept only for failed jobs.
    Slots are only ever appended, with rising numbers, so ``find`` is a
    binary search.  Not thread-safe: JobManager's mutex guards it.
    """

    def __init__(self) -> None:
        self.numbers = array("q")
        self.status = bytearray()
        self.accepted = array("d")
        self.started = array("d")
        self.finished = array("d")
        self.queries: List[Optional[Query]] = []
        self.workers = array("H")
        self.tickets = array("q")
        self.reasons: Dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.numbers)

    def add(self, number: int, status: int, query: Optional[Query] = None,
            accepted: float = 0.0, ticket: int = 0) -> int:
        """Append job ``number`` (higher than any before); return its slot."""
        self.numbers.append(number)
        self.status.append(status)
        self.accepted.append(accepted)
        self.started.append(0.0)
        self.finished.append(0.0)
        self.queries.append(query)
        self.workers.append(0)
        self.tickets.append(ticket)
        return len(self.numbers) - 1

    def find(self, number: int) -> Optional[int]:
        """The slot of job ``number``, or None if there is no such job."""
        slot = bisect.bisect_left(self.numbers, number)
        if slot < len(self.numbers) and self.numbers[slot] == number:
            return slot
        return None

    def record(self, slot: int) -> tuple:
        """(status, query, accepted, started, finished, worker, ticket,
        reason) of ``slot``."""
        return (self.status[slot], self.queries[slot], self.accepted[slot],
                self.started[slot], self.finished[slot], self.workers[slot],
                self.tickets[slot], self.reasons.get(slot))


def list_piece(numbers: Iterable[int], statuses: Iterable[int]) -> bytes:
    """A piece of the ``/api/jobs`` answer: ``{"job_id_N": status}`` items,
    joined, with the course's status names."""
    return b", ".join(b'{"job_id_%d": "%s"}' % (number, _COURSE_BYTES[status])
                      for number, status in zip(numbers, statuses))


def record_answer(job_id: str, status: int, query: Optional[Query], times: tuple,
                  worker: Optional[str], position: Optional[int],
                  reason: Optional[str]) -> Dict[str, Any]:
    """The answer of ``/api/jobs/job_id_N``: ``times`` is (accepted, started,
    finished), each 0 for "not yet"; ``position`` the queue position of a
    queued job."""
    return {
        "job_id": job_id,
        "statistic": query.name if query else None,
        "question": query.question if query else None,
        "state": query.state if query else None,
        "status": STATUS_NAMES[status],
        "accepted_at": utc_iso(times[0]), "started_at": utc_iso(times[1]),
        "finished_at": utc_iso(times[2]),
        "worker": worker,
        "queue_position": position if position is None else max(1, position),
        "reason": reason,
    }
