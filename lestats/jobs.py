"""Jobs: their ids and their statuses.

A job is one accepted statistic request.  ``JobManager.submit`` checks the
request, gives it the next id (``job_id_1``, ``job_id_2``, ... with no gaps),
queues it on the pool and records it in the journal before the id goes back
to the client; a worker computes it and writes its result file, and only
then marks it done, so a reader that sees "done" always finds the whole
file.  At start, jobs that an earlier run accepted but did not finish are
queued again (see ``storage``).
"""

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .data import DataIndex
from .pool import ThreadPool
from .statistics import Query, QueryError, prepare
from .storage import AcceptedJob, JobStore

log = logging.getLogger(__name__)

RUNNING = "running"
DONE = "done"
ERROR = "error"

_JOB_ID = re.compile(r"job_id_([1-9][0-9]{0,17})")


class ShuttingDown(RuntimeError):
    """A job was submitted after graceful shutdown began."""


class AlreadyShuttingDown(RuntimeError):
    """Graceful shutdown was asked for a second time."""


class UnknownJob(LookupError):
    """The job id is malformed or was never issued."""


def job_number(job_id: str) -> int:
    """The N of ``job_id_N``; raise UnknownJob if ``job_id`` is not exactly
    that form (no sign, no leading zero, no path characters)."""
    match = _JOB_ID.fullmatch(job_id)
    if match is None:
        raise UnknownJob(job_id)
    return int(match.group(1))


@dataclass(frozen=True)
class JobResult:
    """What get_results answers: a status and, when done, the result's JSON
    text, or, on error, the reason."""

    status: str
    data_json: Optional[bytes] = None
    reason: Optional[str] = None


class JobManager:
    """Accepts jobs, runs them on a ThreadPool, and answers for their state.

    ``_mutex`` guards ``_next``, ``_status``, ``_reasons``, ``_running`` and
    ``_accepting``.  It is held for dictionary updates only, never while a job
    computes or a file is read or written.  ``submit`` and ``shutdown`` call
    into the pool while holding it (lock order: this mutex, then the pool's;
    the pool never calls back), which is what makes "the ids are handed out in
    the order jobs are queued" and "no job is accepted after shutdown" true.

    ``_job_finished`` (on ``_mutex``) is notified whenever a job finishes;
    ``result`` may wait on it a little, so that a client polling right after
    its POST gets the result instead of "running".

    Invariants: ``_running`` is the number of values in ``_status`` equal to
    RUNNING, so ``num_jobs`` and ``jobs`` agree at every moment; and
    ``_status`` holds its job numbers in ascending order (recovered ones are
    entered in order, new ones are always above them), so ``jobs`` lists
    them in id order without sorting.

    ``_answers`` memoizes the encoded result of each Query (the index never
    changes, so neither does an answer).  It needs no lock: a dict's ``get``
    and ``setdefault`` are atomic, and two workers racing on a new Query at
    worst compute the same bytes twice.  It holds at most one entry per
    statistic, question and state of the data.
    """

    def __init__(self, index: DataIndex, pool: ThreadPool, store: JobStore):
        self._index = index
        self._pool = pool
        self._store = store
        self._mutex = threading.Lock()
        self._job_finished = threading.Condition(self._mutex)
        self._answers: Dict[Query, bytes] = {}
        recovered = store.recover()
        self._status: Dict[int, str] = {}
        self._reasons: Dict[int, str] = {}
        self._next = recovered.next_number
        self._running = 0
        self._accepting = True
        pending = {job.number: job for job in recovered.pending}
        for number in sorted([*recovered.finished, *pending]):
            if number in pending:
                self._resume(pending[number])
            else:
                self._status[number] = DONE
        if recovered.pending:
            log.info("%d job(s) accepted by an earlier run queued again",
                     len(recovered.pending))

    def submit(self, name: str, body: Mapping[str, Any]) -> str:
        """Accept statistic ``name`` for ``body`` and return its job id once
        the job is in the journal.

        Raise QueryError for a bad body, ShuttingDown after shutdown, OSError
        if the journal cannot be written (the job then runs, but its id was
        never given out).
        """
        query = prepare(self._index, name, body)
        with self._mutex:
            if not self._accepting:
                raise ShuttingDown("Server is shutting down")
            number = self._next
            self._next += 1
            self._queue(number, query)
        self._store.accept(AcceptedJob(number, name, body))
        return f"job_id_{number}"

    def result(self, job_id: str, wait: float = 0.0) -> JobResult:
        """The state of ``job_id``, after waiting up to ``wait`` seconds for
        it to finish if it is running; raise UnknownJob if it was never issued."""
        number = job_number(job_id)
        with self._mutex:
            if wait > 0 and self._status.get(number) == RUNNING:
                self._job_finished.wait_for(lambda: self._status[number] != RUNNING, wait)
            status = self._status.get(number)
            reason = self._reasons.get(number)
        if status is None:
            raise UnknownJob(job_id)
        if status == DONE:
            try:
                return JobResult(DONE, data_json=self._store.read_result(number))
            except OSError as exc:
                return JobResult(ERROR, reason=f"result file unreadable: {exc}")
        return JobResult(status, reason=reason)

    def statuses(self) -> List[Tuple[str, str]]:
        """(job id, status) of every job, in id order."""
        with self._mutex:
            items = list(self._status.items())
        return [(f"job_id_{number}", status) for number, status in items]

    def num_jobs(self) -> int:
        """Jobs accepted and not yet finished."""
        with self._mutex:
            return self._running

    def shutdown(self) -> None:
        """Accept no more jobs and let the pool drain the accepted ones;
        raise AlreadyShuttingDown the second time.  Returns at once."""
        with self._mutex:
            if not self._accepting:
                raise AlreadyShuttingDown("Server is already shutting down")
            self._accepting = False
            self._pool.shutdown()

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted job has finished; False on timeout."""
        return self._pool.join(timeout)

    def _resume(self, job: AcceptedJob) -> None:
        try:
            query = prepare(self._index, job.endpoint, job.body)
        except (QueryError, KeyError) as exc:   # the data changed since it was accepted
            with self._mutex:
                self._status[job.number] = ERROR
                self._reasons[job.number] = f"cannot run again on this data: {exc}"
            return
        with self._mutex:
            self._queue(job.number, query)

    def _queue(self, number: int, query: Query) -> None:
        """Mark job ``number`` running and give it to the pool.  Hold _mutex."""
        self._status[number] = RUNNING
        self._running += 1
        self._pool.submit(lambda: self._run(number, query))

    def _answer(self, query: Query) -> bytes:
        answer = self._answers.get(query)
        if answer is None:
            answer = json.dumps(query.compute(self._index)).encode("utf-8")
            answer = self._answers.setdefault(query, answer)
        return answer

    def _run(self, number: int, query: Query) -> None:
        try:
            self._store.write_result(number, self._answer(query))
        except Exception as exc:   # pylint: disable=broad-except
            log.exception("job_id_%d failed", number)
            self._finish(number, ERROR, f"job failed: {type(exc).__name__}: {exc}")
        else:
            self._finish(number, DONE)

    def _finish(self, number: int, status: str, reason: Optional[str] = None) -> None:
        with self._mutex:
            self._status[number] = status
            if reason is not None:
                self._reasons[number] = reason
            self._running -= 1
            self._job_finished.notify_all()
