"""Running mutants: copies of the checkout, the baseline, the time limits.

Each worker owns one copy of the checkout (made once, in a temporary
directory); a mutant is written into the copy, its tests run, and the file
is put back.  The real tree is never touched.

A mutant runs the tests that execute its lines (see ``coverage_map``) that
passed on the unmutated copy in the baseline run (those of the module's own
test file first, then the others; each group fastest first), with ``-x``, in
a process group of its own that is killed whole when it takes longer than
``factor`` times the baseline time of those tests plus ``margin`` seconds.
Each test also has pytest-timeout's limit of five times the slowest one's
baseline time (10 s at least), so that a mutant that makes one test hang is
known in seconds, not minutes.  Either limit makes the mutant HUNG (killed).
A test that fails is run again, alone, on the same mutant: a kill counts only
if it fails again.  If it passes, it failed by chance and the tests after it
go on; a mutant whose only failures were such is FLAKY-KILL (a survivor).
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from .coverage_map import copy_tree, test_environment
from .sites import Mutant

KILLED, HUNG, SURVIVED, FLAKY, EQUIVALENT, NO_TESTS, ERROR = (
    "KILLED", "HUNG", "SURVIVED", "FLAKY-KILL", "EQUIVALENT", "NO-TESTS", "ERROR")
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S.*?)(?: - .*)?$", re.MULTILINE)
_SUMMARY = "short test summary info"
_TIMED_OUT = re.compile(r"^(?:FAILED|ERROR) \S.* - Failed: Timeout", re.MULTILINE)
TEST_TIMEOUT_FLOOR = 10.0       # seconds a single test may take under a mutant, at least
TEST_TIMEOUT_FACTOR = 5.0       # ... or this times the slowest selected test's baseline
MAX_CHANCE_FAILURES = 3         # tests that failed once but not again, before giving up
_DURATION = re.compile(r"^\s*([0-9.]+)s (?:setup|call|teardown)\s+(.+?)\s*$", re.MULTILINE)
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov", "-rfE")


@dataclass
class Outcome:
    """What became of one mutant."""

    mutant: Mutant
    status: str
    test: Optional[str] = None      # the test that killed it
    seconds: float = 0.0            # the mutant's run (the first one)
    tests: int = 0                  # how many tests were selected
    limit: float = 0.0              # its time limit
    note: str = ""                  # the equivalence reason, an error...


@dataclass
class Run:
    """One pytest run: its exit status (None: killed at the time limit),
    its output and how long it took."""

    status: Optional[int]
    output: str
    seconds: float

    def summary(self) -> str:
        """pytest's short summary (``-rfE``) at the end of the output."""
        at = self.output.rfind(_SUMMARY)
        return self.output[at:] if at >= 0 else ""

    def failed(self) -> List[str]:
        """The ids of the tests that failed or errored, in order."""
        return _FAILED.findall(self.summary())

    def timed_out(self) -> bool:
        """Did a test fail by pytest-timeout's per-test limit?"""
        return bool(_TIMED_OUT.search(self.summary()))


_LIVE: Set[subprocess.Popen] = set()   # pytest runs going on, killed by ``stop_all``
_LIVE_LOCK = threading.Lock()


def stop_all() -> None:
    """Kill every pytest run going on, with all it started (the tool is stopping)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        _kill_group(process)


def run_pytest(copy: Path, env: Dict[str, str], args: Sequence[str],
               limit: Optional[float]) -> Run:
    """pytest in ``copy`` with ``args``, in a process group of its own,
    killed whole (with whatever it started) after ``limit`` seconds.  The
    group is killed at the end in any case: nothing a test left behind
    outlives its run."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        began = time.monotonic()
        process = subprocess.Popen([*PYTEST, *args], cwd=copy, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            status: Optional[int] = process.wait(limit)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            took = time.monotonic() - began
            _kill_group(process)
            with _LIVE_LOCK:
                _LIVE.discard(process)
        out.seek(0)
        return Run(status, out.read(), took)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


class Baseline:
    """The selected tests on the unmutated copy: which pass, and how long
    each takes (setup, call and teardown)."""

    def __init__(self, durations: Dict[str, float], failed: Set[str], seconds: float):
        self.durations = durations
        self.failed = failed
        self.seconds = seconds

    def passing(self, tests: Set[str], module: str) -> List[str]:
        """``tests`` that passed: those of the module's own test file first
        (``tests/test_pool.py`` for ``pool``, ``tests/test_watch.py`` for
        ``watch.events``), each group fastest first."""
        own = tuple(f"tests/test_{part}.py::" for part in module.split("."))
        good = [test for test in tests if test in self.durations and test not in self.failed]
        return sorted(good, key=lambda test: (not test.startswith(own), self.durations[test],
                                              test))

    def time_of(self, tests: Sequence[str]) -> float:
        """The baseline time of ``tests``."""
        return sum(self.durations[test] for test in tests)


def run_baseline(copy: Path, env: Dict[str, str], tests: Set[str]) -> Baseline:
    """Run ``tests`` once on the unmutated copy (no ``-x``, no limit)."""
    run = run_pytest(copy, env, ["--durations=0", "--durations-min=0", *sorted(tests)], None)
    durations: Dict[str, float] = defaultdict(float)
    for seconds, test in _DURATION.findall(run.output):
        durations[test] += float(seconds)
    return Baseline(dict(durations), set(run.failed()), run.seconds)


class Worker:
    """A copy of the checkout in which mutants are run, one at a time."""

    def __init__(self, repo: Path, root: Path, number: int, factor: float, margin: float):
        self.copy = copy_tree(repo, root / f"worker-{number}")
        self.env = test_environment(repo)
        self.factor = factor
        self.margin = margin

    def limit(self, baseline: Baseline, tests: Sequence[str]) -> float:
        """The hard time limit of a run of ``tests``."""
        return self.factor * baseline.time_of(tests) + self.margin

    def run(self, mutant: Mutant, tests: List[str], baseline: Baseline) -> Outcome:
        """Apply ``mutant``, run ``tests`` (and a kill's test again), restore."""
        target = self.copy / mutant.path
        original = target.read_text(encoding="utf-8")
        target.write_text(mutant.text, encoding="utf-8")
        try:
            return self._judge(mutant, tests, baseline)
        finally:
            target.write_text(original, encoding="utf-8")

    def _judge(self, mutant: Mutant, tests: List[str], baseline: Baseline) -> Outcome:
        """Run ``tests`` with ``-x``; a test that fails is run again alone.
        One that then passes failed by chance: the tests after it go on
        (at most MAX_CHANCE_FAILURES times), so that a later test can still
        kill the mutant for a reason the mutant causes."""
        slowest = max(baseline.durations[test] for test in tests)
        per_test = f"--timeout={max(TEST_TIMEOUT_FLOOR, TEST_TIMEOUT_FACTOR * slowest):.0f}"
        outcome = Outcome(mutant, SURVIVED, tests=len(tests), limit=self.limit(baseline, tests))
        remaining = tests
        chance: List[str] = []
        while remaining and len(chance) < MAX_CHANCE_FAILURES:
            run = run_pytest(self.copy, self.env, ["-x", per_test, *remaining],
                             self.limit(baseline, remaining))
            outcome.seconds += run.seconds
            if run.status is None or run.timed_out():
                outcome.status, outcome.test = HUNG, (run.failed() or [None])[0]
                return outcome
            if run.status == 0:
                break
            if run.status not in (1, 2) and run.status > 0:
                outcome.status = ERROR
                outcome.note = f"pytest exit status {run.status}: {run.output[-300:]!r}"
                return outcome
            failed = (run.failed() or [None])[0]
            again = [failed] if failed else remaining
            second = run_pytest(self.copy, self.env, ["-x", per_test, *again],
                                self.limit(baseline, [t for t in again if t in tests]))
            if second.status != 0:
                outcome.status, outcome.test = KILLED, failed or f"exit status {run.status}"
                return outcome
            chance.append(failed or "?")
            remaining = remaining[remaining.index(failed) + 1:] if failed in remaining else []
        if chance:
            outcome.status, outcome.test = FLAKY, chance[0]
            outcome.note = f"failed once each, then passed alone: {', '.join(chance)}"
        return outcome


def run_all(jobs: List[Tuple[Mutant, List[str]]], workers: List[Worker], baseline: Baseline,
            report: Callable[[Outcome], None]) -> List[Outcome]:
    """Run every (mutant, tests) on the workers, one thread each;
    ``report`` is called with each outcome as it comes (under a lock)."""
    pending = list(reversed(jobs))
    outcomes: List[Outcome] = []
    lock = threading.Lock()

    def work(worker: Worker) -> None:
        while True:
            with lock:
                if not pending:
                    return
                mutant, tests = pending.pop()
            outcome = worker.run(mutant, tests, baseline)
            with lock:
                outcomes.append(outcome)
                report(outcome)

    threads = [threading.Thread(target=work, args=(worker,), daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
