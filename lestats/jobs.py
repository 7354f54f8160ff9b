"""Jobs: their ids, their records, and how each one runs.

A job is one accepted statistic request.  ``JobManager.submit`` checks the
request, gives it the next id (``job_id_1``, ``job_id_2``, ... with no gaps),
queues it on the pool and records it in the journal before the id goes back
to the client; a worker computes it and writes its result file, and only
then marks it done, so a reader that sees "done" always finds the whole
file.  At start, jobs that an earlier run accepted but did not finish are
queued again (see ``storage``).

Every job keeps a small record (statistic, question, state, status, times,
worker, queue position, reason): see ``records.JobTable``.
"""

import bisect
import json
import logging
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

from .data import DataIndex
from .pool import PoolClosed, PoolFull, ThreadPool
from .statistics import Query, QueryError, prepare
from .journal import HIGHEST_JOB, AcceptedJob
from .records import (COURSE_NAMES, DONE, ERROR, EXPIRED, QUEUED, RUNNING, STATUS_NAMES,
                      UNFINISHED, JobResult, JobTable, UnknownJob, job_number, list_piece,
                      record_answer)
from .storage import JobStore, Recovered, ResultTooLarge

log = logging.getLogger(__name__)

LIST_CHUNK = 2048   # jobs rendered per piece of a /api/jobs answer


class ShuttingDown(RuntimeError):
    """A job was submitted after graceful shutdown began."""


class QueueFull(RuntimeError):
    """A job was submitted while ``max_queued`` jobs were waiting."""


class NoIdsLeft(RuntimeError):
    """Every job id up to the largest the server can serve has been handed out."""


class _Waiter:   # pylint: disable=too-few-public-methods
    """What the ``result(wait=...)`` calls waiting for one job share: a
    Condition on the job manager's mutex, notified (all) when that job
    finishes, and how many of them wait on it (the last one out removes it).
    Guarded by that mutex."""

    __slots__ = ("finished", "count")

    def __init__(self, mutex: Any):
        self.finished = threading.Condition(mutex)
        self.count = 0


class JobManager:   # pylint: disable=too-many-instance-attributes
    """Accepts jobs, runs them on a ThreadPool, and answers for their state.

    ``start`` owns the results directory and queues again the jobs an
    earlier run left unfinished; then ``submit``, ``result``... may be
    called from any thread.

    ``_mutex`` guards ``_table``, ``_next``, ``_unfinished``, ``_first_open``,
    ``_done_order`` and ``_waiters``.  It is held for bookkeeping only, never
    while a job computes or a file is read or written.  ``submit`` takes the
    next id and hands the job to the pool while holding it (lock order: this
    mutex, then the pool's; the pool never calls back), which is what makes
    "ids are handed out in the order jobs are queued, without gaps" true.
    "No job is accepted after shutdown" is the pool's: it refuses tasks once
    closed, under its own mutex, and ``submit`` turns that into ShuttingDown.

    Each ``_Waiter`` in ``_waiters`` belongs to one job that ``result``
    calls are waiting for; its Condition is notified (all) when that job
    finishes: a finishing job wakes only its own waiters, and all of them,
    since each is a client waiting for the same answer.  (In a server, step
    mode puts a stepping wrapper over the same lock in ``_mutex`` while it
    is on, so that a POST stops before it reads its id: see
    ``lestats.watch.steplocks``.)

    Invariants: ``_unfinished`` is the number of slots QUEUED or RUNNING;
    ``_table`` holds its jobs in ascending id order (recovered ones are
    entered in order, new ones are always above them); every slot before
    ``_first_open`` is finished.

    ``_answers`` memoizes the encoded result of each Query (the index never
    changes, so neither does an answer), and ``_queries`` the one Query
    object shared by every job that asks the same thing.  ``_cache_mutex``
    guards the two; an answer is computed with it let go, so two workers
    racing on a new Query at worst compute the same bytes twice, and the
    first one kept wins.  Both dicts hold at most one entry per statistic,
    question and state of the data.  (Each job's result is a file of its
    own on disk: see ``storage``.)
    """

    # The bug lab's deliberately broken job layer names itself here.
    variant: Optional[str] = None

    def __init__(self, index: DataIndex, pool: ThreadPool, store: JobStore, *,
                 events: Any = None, slow_motion_ms: float = 0.0,
                 keep_results: Optional[int] = None):
        self._index = index
        self._pool = pool
        self._store = store
        self._events = events
        self.slow_motion_ms = slow_motion_ms
        self._keep_results = keep_results
        self._worker_index = {name: i for i, name in enumerate(pool.worker_names, 1)}
        self._cache_mutex = threading.Lock()
        self._answers: Dict[Query, bytes] = {}
        self._queries: Dict[Query, Query] = {}
        self._mutex = threading.Lock()
        self._waiters: Dict[int, _Waiter] = {}   # by slot
        self._table = JobTable()
        self._unfinished = 0
        self._first_open = 0
        self._next = 1
        self._done_order: Deque[int] = deque()   # slots of done jobs, oldest first
        self.start_note: Optional[str] = None

    def start(self) -> None:
        """Own the results directory, read what an earlier run left there,
        and queue again the jobs it accepted and did not finish.  Raise
        storage.StoreError (DirectoryInUse) if it cannot be used."""
        recovered = self._store.open(self._index.source, self._unfinished_jobs)
        with self._mutex:
            self._next = recovered.next_number
        self._enter_recovered(recovered)
        self.start_note = self._start_note(recovered)

    # -- accepting and running ------------------------------------------------

    def submit(self, name: str, body: Mapping[str, Any]) -> str:
        """Accept statistic ``name`` for ``body`` and return its job id once
        the job is in the journal.

        Raise QueryError for a bad body, storage.DiskFull when free space is
        below the floor, ShuttingDown after shutdown, QueueFull when the pool
        is full, NoIdsLeft past the largest id, OSError if the journal cannot
        be written (the job then runs, but its id is never given out).
        """
        query = self._shared(prepare(self._index, name, body))
        self._store.check_space()
        with self._mutex:
            number = self._next
            if number > HIGHEST_JOB:
                raise NoIdsLeft(f"no job ids left: job_id_{HIGHEST_JOB} was the last")
            self._queue(number, query)
            self._next += 1
        self._store.accept(AcceptedJob(number, name, query.question, query.state))
        return f"job_id_{number}"

    def _queue(self, number: int, query: Query) -> None:
        """Give job ``number`` to the pool, then enter it as queued: only
        after the step that can fail.  Hold ``_mutex``."""
        slot = len(self._table)
        job_id = f"job_id_{number}"
        try:
            ticket = self._pool.submit(lambda: self._run(slot, number, query), label=job_id)
        except PoolFull as exc:
            raise QueueFull(f"the queue is full ({exc}); try again later") from exc
        except PoolClosed as exc:
            raise ShuttingDown("shutting down") from exc
        self._table.add(number, QUEUED, query, time.time(), ticket)
        self._unfinished += 1
        if self._watched():
            self._publish("job_accepted", job_id=job_id, statistic=query.name,
                          question=query.question, state=query.state,
                          queued=self._pool.queued())

    def _run(self, slot: int, number: int, query: Query) -> None:
        """A job, as a pool task: compute, write the result, then say so.
        A job whose answer cannot be computed or kept (too large) fails
        for good: its reason is kept on disk, and it does not run again at
        the next start.  One whose result cannot be written (a full disk)
        fails in this run only."""
        began = time.monotonic()
        self._mark_started(slot, number, query)
        status, reason, writing = DONE, None, False
        try:
            answer = self._answer(query)
            writing = True
            self._store.write_result(number, answer)
        except BaseException as exc:   # pylint: disable=broad-except
            # Anything, even SystemExit from a statistic: the job must end.
            log.exception("job_id_%d failed", number)
            status, reason = ERROR, f"job failed: {type(exc).__name__}: {exc}"
            if not writing or isinstance(exc, ResultTooLarge):
                self._keep_failure(number, reason)
        if self.slow_motion_ms:
            # Teaching only: make the job last long enough to be watched.
            time.sleep(max(0.0, began + self.slow_motion_ms / 1000 - time.monotonic()))
        self._finish(slot, number, status, reason)

    def _shared(self, query: Query) -> Query:
        """The one Query object every job asking the same thing refers to
        (so a job's record costs a pointer, not a copy of the question)."""
        with self._cache_mutex:
            return self._queries.setdefault(query, query)

    def _keep_failure(self, number: int, reason: str) -> None:
        try:
            self._store.record_failure(number, reason)
        except OSError as exc:
            log.error("job_id_%d: its failure cannot be kept (%s); it runs again at the"
                      " next start", number, exc)

    def _answer(self, query: Query) -> bytes:
        """The answer's JSON text, computed once per Query."""
        with self._cache_mutex:
            answer = self._answers.get(query)
        if answer is not None:
            return answer
        try:
            text = json.dumps(query.compute(self._index), allow_nan=False)
        except ValueError as exc:
            raise ArithmeticError("the answer holds a number JSON cannot represent"
                                  " (infinite or not a number)") from exc
        data = text.encode("utf-8")
        with self._cache_mutex:
            return self._answers.setdefault(query, data)

    def _mark_started(self, slot: int, number: int, query: Query) -> None:
        worker = threading.current_thread().name
        with self._mutex:
            self._table.status[slot] = RUNNING
            self._table.started[slot] = time.time()
            self._table.workers[slot] = self._worker_index.get(worker, 0)
            if self._watched():
                self._publish("job_started", job_id=f"job_id_{number}", worker=worker,
                              statistic=query.name, question=query.question,
                              state=query.state, queued=self._pool.queued())

    def _finish(self, slot: int, number: int, status: int, reason: Optional[str]) -> None:
        expired: List[int] = []
        table = self._table
        with self._mutex:
            table.status[slot] = status
            table.finished[slot] = time.time()
            if reason is not None:
                table.reasons[slot] = reason
            self._unfinished -= 1
            waiter = self._waiters.get(slot)
            if waiter is not None:
                waiter.finished.notify_all()
            first_open = self._advance_first_open()
            if status == DONE and self._keep_results is not None:
                self._done_order.append(slot)
                expired = self._beyond_keep()
            if self._watched():
                self._publish("job_finished", job_id=f"job_id_{number}",
                              worker=threading.current_thread().name,
                              status=STATUS_NAMES[status])
        self._store.finished_below(first_open)
        for old in expired:
            self._store.expire_result(old)

    def _advance_first_open(self) -> int:
        """Move ``_first_open`` past the finished jobs; the number of the
        first unfinished job (``_next`` if none).  Hold ``_mutex``."""
        table = self._table
        while self._first_open < len(table) and table.status[self._first_open] not in (
                UNFINISHED):
            self._first_open += 1
        return table.numbers[self._first_open] if self._first_open < len(table) else self._next

    def _beyond_keep(self) -> List[int]:
        """Mark the oldest done jobs beyond ``keep_results`` EXPIRED and
        return their numbers: the caller replaces their result files, with
        the mutex let go.  Hold ``_mutex``."""
        numbers = []
        while len(self._done_order) > self._keep_results:
            oldest = self._done_order.popleft()
            self._table.status[oldest] = EXPIRED
            numbers.append(self._table.numbers[oldest])
        return numbers

    # -- answering --------------------------------------------------------------

    def result(self, job_id: str, wait: float = 0.0) -> JobResult:
        """The state of ``job_id``, after waiting up to ``wait`` seconds for
        it to finish if it has not; raise UnknownJob if it was never issued."""
        number = job_number(job_id)
        with self._mutex:
            slot = self._find(job_id, number)
            if wait > 0 and self._table.status[slot] in UNFINISHED:
                self._wait_for(slot, wait)
            status = self._table.status[slot]
            reason = self._table.reasons.get(slot)
        if status == DONE:
            try:
                return JobResult("done", data_json=self._store.read_result(number))
            except OSError as exc:
                with self._mutex:
                    status = self._table.status[slot]
                if status != EXPIRED:   # else it expired since its status was read
                    return JobResult("error", reason=f"result file unreadable: "
                                                     f"{exc.strerror or exc}")
        if status == EXPIRED:
            reason = self._expired_reason()
        return JobResult(COURSE_NAMES[status], reason=reason)

    def _expired_reason(self) -> str:
        if self._keep_results is None:   # expired in an earlier run
            return "result deleted (--keep-results)"
        return f"result deleted: only the last {self._keep_results} are kept"

    def _find(self, job_id: str, number: int) -> int:
        slot = self._table.find(number)
        if slot is None:
            raise UnknownJob(job_id)
        return slot

    def _wait_for(self, slot: int, timeout: float) -> None:
        """Wait until job ``slot`` finishes or ``timeout`` passes, on a
        Condition of its own.  Hold ``_mutex``."""
        waiter = self._waiters.get(slot)
        if waiter is None:
            waiter = self._waiters[slot] = _Waiter(self._mutex)
        waiter.count += 1
        try:
            waiter.finished.wait_for(lambda: self._table.status[slot] not in UNFINISHED,
                                     timeout)
        finally:
            waiter.count -= 1
            if not waiter.count:
                del self._waiters[slot]

    def job_list(self, since: int = 0, limit: Optional[int] = None) -> Iterator[bytes]:
        """``{"status": "done", "data": [{"job_id_N": status}, ...]}`` in id
        order, for the jobs above ``since`` (at most ``limit`` of them), in
        pieces: the answer is never built whole, and the mutex is taken once
        per piece, never while a piece is sent."""
        table = self._table   # the table itself never changes; its rows are guarded
        with self._mutex:
            start = bisect.bisect_right(table.numbers, since)
            end = len(table) if limit is None else min(len(table), start + limit)
        yield b'{"status": "done", "data": ['
        for low in range(start, end, LIST_CHUNK):
            high = min(end, low + LIST_CHUNK)
            with self._mutex:
                numbers, statuses = table.numbers[low:high], table.status[low:high]
            piece = list_piece(numbers, statuses)
            yield piece if low == start else b", " + piece
        yield b"]}"

    def record(self, job_id: str) -> Dict[str, Any]:
        """Job ``job_id``'s record (API.md: ``/api/jobs/job_id_N``)."""
        number = job_number(job_id)
        with self._mutex:
            slot = self._find(job_id, number)
            (status, query, accepted, started, finished, worker, ticket,
             reason) = self._table.record(slot)
        position = ticket - self._pool.taken() if status == QUEUED else None
        if status == EXPIRED:
            reason = self._expired_reason()
        return record_answer(job_id, status, query, (accepted, started, finished),
                             self._pool.worker_names[worker - 1] if worker else None,
                             position, reason)

    def num_jobs(self) -> int:
        """Jobs accepted and not yet finished."""
        with self._mutex:
            return self._unfinished

    def questions(self) -> Dict[str, List[str]]:
        """Each question of the data and the states it has rows for, sorted."""
        return {question: sorted(means.state_means)
                for question, means in sorted(self._index.questions.items())}

    @property
    def events(self) -> Any:
        """The event bus this manager and its pool publish to (or None)."""
        return self._events

    def pool_snapshot(self) -> Dict[str, Any]:
        """The pool's snapshot (see ThreadPool.snapshot), with the teaching
        settings the live page shows."""
        snapshot = self._pool.snapshot()
        snapshot["slow_motion_ms"] = self.slow_motion_ms
        snapshot["variant"] = self._pool.variant or self.variant
        return snapshot

    @property
    def stepper(self) -> Any:
        """The pool's step mode (``lestats.watch.step``), or None."""
        return getattr(self._pool, "stepper", None)

    # -- stopping ---------------------------------------------------------------

    def shutdown(self) -> None:
        """Accept no more jobs and let the pool drain the accepted ones.
        Idempotent; returns at once."""
        self._pool.shutdown()

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted job has finished; False on timeout."""
        return self._pool.join(timeout)

    def close(self) -> None:
        """Close the journal and give up the results directory (after ``drain``)."""
        self._store.close()

    # -- start-up ---------------------------------------------------------------

    def _enter_recovered(self, recovered: Recovered) -> None:
        pending = {job.number: job for job in recovered.pending}
        if self._pool.make_room(len(pending)):
            log.warning("--max-queued raised to %d: the jobs an earlier run accepted are"
                        " never refused", len(pending))
        expired = set(recovered.expired)
        numbers = sorted({*recovered.finished, *recovered.failed, *pending, *expired})
        with self._mutex:
            for number in numbers:
                if number in pending:
                    self._resume(pending[number])
                elif number in recovered.failed:
                    slot = self._table.add(number, ERROR)
                    self._table.reasons[slot] = recovered.failed[number]
                elif number in expired:
                    self._table.add(number, EXPIRED)
                else:
                    slot = self._table.add(number, DONE)
                    if self._keep_results is not None:
                        self._done_order.append(slot)   # they count towards N
            self._first_open = 0
            self._advance_first_open()
            expire = self._beyond_keep() if self._keep_results is not None else []
        for number in expire:
            self._store.expire_result(number)
        if expire:
            log.info("%d result(s) beyond --keep-results %d expired", len(expire),
                     self._keep_results)
        if pending:
            log.info("%d job(s) accepted by an earlier run queued again", len(pending))

    def _resume(self, job: AcceptedJob) -> None:
        """Queue a job an earlier run accepted.  Hold ``_mutex``."""
        body = {"question": job.question}
        if job.state is not None:
            body["state"] = job.state
        try:
            query = self._shared(prepare(self._index, job.statistic, body))
        except (QueryError, KeyError) as exc:   # the data changed since it was accepted
            slot = self._table.add(job.number, ERROR)
            self._table.reasons[slot] = f"cannot run again on this data: {exc}"
            return
        self._queue(job.number, query)

    def _start_note(self, recovered: Recovered) -> Optional[str]:
        """One line when the results directory holds jobs from another data file."""
        with self._mutex:
            jobs, next_number = len(self._table), self._next
        earlier = recovered.earlier_data
        if not jobs or not earlier or earlier == self._index.source:
            return None
        return (f"{self._store.directory} holds {jobs} jobs from {earlier};"
                f" numbering continues at {next_number}")

    def _unfinished_jobs(self) -> Tuple[List[AcceptedJob], int]:
        """The jobs accepted and not finished, and the highest id handed out
        (for a journal re-created after a wipe: see journal.Unfinished)."""
        table = self._table
        with self._mutex:
            open_jobs = [(table.numbers[slot], table.queries[slot])
                         for slot in range(self._first_open, len(table))
                         if table.status[slot] in UNFINISHED]
            last = self._next - 1
        return [AcceptedJob(number, query.name, query.question, query.state)
                for number, query in open_jobs if query is not None], last

    def _watched(self) -> bool:
        """Is anyone listening to the events?  Checked before an event is
        even built, so that nobody watching costs one attribute read."""
        return self._events is not None and self._events.listening

    def _publish(self, kind: str, **fields: Any) -> None:
        fields["t"] = time.time()
        self._events.publish(kind, fields)
