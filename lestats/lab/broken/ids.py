"""DELIBERATELY BROKEN: job ids from a counter that no lock guards."""

from typing import Any, Mapping

from lestats.jobs import JobManager, NoIdsLeft
from lestats.journal import HIGHEST_JOB, AcceptedJob
from lestats.statistics import prepare


class UnlockedIds:   # pylint: disable=too-few-public-methods
    """Hands out ``job_id_1``, ``job_id_2``, ... to request threads."""

    def __init__(self) -> None:
        self._counter = 0

    def next_id(self) -> str:
        """The next job id."""
        self._counter += 1                 # BROKEN: read, add, write: no lock makes it one step
        return f"job_id_{self._counter}"   # and read again, maybe after another thread's +1


class UnlockedIdsJobs(JobManager):
    """The same mistake in a server's job layer (``--broken-pool-for-teaching
    unlocked-ids``): ``submit`` reads the next id before it takes the lock
    that queues the job, so two POSTs can read the same one.  Two jobs then
    share an id, and one result overwrites the other."""

    variant = "unlocked-ids"

    def submit(self, name: str, body: Mapping[str, Any]) -> str:
        query = self._shared(prepare(self._index, name, body))
        self._store.check_space()
        number = self._next   # BROKEN: read outside the lock: another POST may read it too
        with self._mutex:
            if number > HIGHEST_JOB:
                raise NoIdsLeft(f"no job ids left: job_id_{HIGHEST_JOB} was the last")
            self._queue(number, query)
            self._next = number + 1
        self._store.accept(AcceptedJob(number, name, query.question, query.state))
        return f"job_id_{number}"


# The broken job layers the server may run with (--broken-pool-for-teaching NAME).
FOR_THE_SERVER = {UnlockedIdsJobs.variant: UnlockedIdsJobs}
