"""DELIBERATELY BROKEN: job ids from a counter that no lock guards."""


class UnlockedIds:   # pylint: disable=too-few-public-methods
    """Hands out ``job_id_1``, ``job_id_2``, ... to request threads."""

    def __init__(self) -> None:
        self._counter = 0

    def next_id(self) -> str:
        """The next job id."""
        self._counter += 1                 # BROKEN: read, add, write: no lock makes it one step
        return f"job_id_{self._counter}"   # and read again, maybe after another thread's +1
