"""The course checker's rules, per edition, as data and small functions.

These are facts about the course's published checkers (2024 and 2025),
which ``check`` follows case for case:

* a case POSTs its input, takes ``job_id`` from the answer's JSON (the POST's
  HTTP status is not looked at), then polls ``get_results`` every
  ``POLL_INTERVAL`` seconds; every poll must be answered 200 with a JSON
  object; ``done`` is compared, ``running`` is polled again;
* a job fails when a ``running`` answer comes after ``timedelta.seconds >
  job_timeout``: whole seconds, so a job may take up to job_timeout + 1 s;
* any other status: 2024 polls again at once, with no sleep and no time
  check (its checker hangs on a status that never changes); 2025 fails
  the case;
* a suite's points are ``min(round(10 * passed / cases), 10)`` with
  Python's ``round()`` (halves to even); a suite never stops early;
* 2024's total starts at 0 and pylint below 8 costs 5 points (so a total
  can go below 0); 2025's starts at 10, is capped at 100, and pylint below
  8 costs 10; 2025 also fails every suite that starts more than 5 minutes
  after the checker did;
* ``rm -rf results/*``: before each suite in 2024, once at the start in 2025;
* suites run in alphabetical order (unittest's), cases in the order the
  directory lists them.
"""

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

POLL_INTERVAL = 0.2
SUITE_POINTS = 10
PYLINT_FLOOR = 8.0


@dataclass(frozen=True)
class Edition:   # pylint: disable=too-many-instance-attributes
    """One edition's rules (see the module's docstring)."""

    name: str
    job_timeout: int                 # whole seconds
    start_points: int                # what the total starts from
    cap: Optional[int]               # the total's ceiling, if any
    pylint_penalty: int              # points lost when pylint rates below PYLINT_FLOOR
    wipe_each_suite: bool            # rm -rf results/* before each suite (else once)
    other_status_fails: bool         # a status neither running nor done fails the case
    global_limit: Optional[float]    # seconds; a suite starting later scores 0

    def total(self, points: Sequence[int], pylint: Optional[float]) -> int:
        """The course's total for these suite points and pylint score (None:
        not evaluated, so no penalty)."""
        score = self.start_points + sum(points)
        if pylint is not None and pylint < PYLINT_FLOOR:
            score -= self.pylint_penalty
        return score if self.cap is None else min(score, self.cap)

    def possible(self, suites: int) -> int:
        """The highest total with ``suites`` suites."""
        return self.total([SUITE_POINTS] * suites, None)

    def timed_out(self, elapsed: float) -> bool:
        """Does a ``running`` answer ``elapsed`` seconds after the POST fail
        the case?  (``timedelta.seconds``: whole seconds, rounded down.)"""
        return int(elapsed) > self.job_timeout


EDITIONS = {
    "2024": Edition("2024", job_timeout=1, start_points=0, cap=None, pylint_penalty=5,
                    wipe_each_suite=True, other_status_fails=False, global_limit=None),
    "2025": Edition("2025", job_timeout=3, start_points=10, cap=100, pylint_penalty=10,
                    wipe_each_suite=False, other_status_fails=True, global_limit=300.0),
}


def suite_points(passed: int, cases: int) -> int:
    """A suite's points, as the course counts them."""
    if not cases:
        return 0
    return min(round(SUITE_POINTS * passed / cases), SUITE_POINTS)


def edition_of(folder: Path) -> Optional[str]:
    """"2024" or "2025" when the folder's name holds exactly one of them."""
    found = [name for name in EDITIONS if name in folder.resolve().name]
    return found[0] if len(found) == 1 else None


def wipe_results(results_dir: Path) -> None:
    """``rm -rf results/*``: every entry whose name does not start with a dot."""
    for path in glob.glob(os.path.join(glob.escape(str(results_dir)), "*")):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
