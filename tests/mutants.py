"""Inject one synchronization mistake at a time into a copy of the checkout
and run the tests that should catch it; every one must fail them.

    python3 tests/mutants.py [-k SUBSTRING]

Not a test module (pytest does not collect it): it takes some ten minutes.
Each line says which test caught the mistake, or MISSED, or HUNG.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONLY = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""

POOL_TESTS = ["tests/test_pool.py"]
JOB_TESTS = ["tests/test_jobs.py", "tests/test_http.py"]
STORE_TESTS = ["tests/test_storage.py", "tests/test_jobs.py"]

MUTANTS = [
    # (name, file, old, new, tests)
    ("pool: submit does not notify", "lestats/pool.py",
     "            self._counts[\"submitted\"] += 1\n            self._notify(self._task_ready)\n",
     "            self._counts[\"submitted\"] += 1\n", POOL_TESTS),
    ("pool: shutdown notify instead of notify_all", "lestats/pool.py",
     "            self._notify(self._task_ready, every=True)\n",
     "            self._notify(self._task_ready)\n", POOL_TESTS),
    ("pool: all_done notify instead of notify_all", "lestats/pool.py",
     "            self._notify(self._all_done, every=True)\n",
     "            self._notify(self._all_done)\n", POOL_TESTS),
    ("pool: if instead of while", "lestats/pool.py",
     "        while not self._tasks and not self._closed:\n            self._wait_for_task(me)",
     "        if not self._tasks and not self._closed:\n            self._wait_for_task(me)",
     POOL_TESTS),
    ("pool: closed checked outside the lock", "lestats/pool.py",
     "        with self._mutex:\n            if self._closed:\n                raise PoolClosed(\"the pool is shut down\")\n",
     "        if self._closed:\n            raise PoolClosed(\"the pool is shut down\")\n        with self._mutex:\n",
     POOL_TESTS),
    ("pool: unfinished decremented outside the lock", "lestats/pool.py",
     "            with self._mutex:\n                self._task_done()\n                task = self._next_task(me)\n",
     "            self._unfinished -= 1\n            with self._mutex:\n                self._unfinished += 1\n"
     "                self._unfinished -= 1\n                if self._unfinished == 0:\n"
     "                    self._notify(self._all_done, every=True)\n"
     "                task = self._next_task(me)\n", POOL_TESTS),
    ("pool: idle workers poll with wait(0.01)", "lestats/pool.py",
     "        self._task_ready.wait()\n", "        self._task_ready.wait(0.01)\n", POOL_TESTS),
    ("pool: except Exception, not BaseException", "lestats/pool.py",
     "            except BaseException:   # pylint: disable=broad-except\n",
     "            except Exception:   # pylint: disable=broad-except\n", POOL_TESTS),
    ("pool: a raising task is never counted finished", "lestats/pool.py",
     "            try:\n                task()\n            except BaseException:   # pylint: disable=broad-except\n"
     "                # Anything, even SystemExit: the worker must outlive its task.\n"
     "                log.exception(\"a task raised; the worker goes on\")\n"
     "            with self._mutex:\n                self._task_done()\n",
     "            try:\n                task()\n                failed = False\n"
     "            except BaseException:   # pylint: disable=broad-except\n"
     "                log.exception(\"a task raised; the worker goes on\")\n                failed = True\n"
     "            with self._mutex:\n                if not failed:\n                    self._task_done()\n",
     POOL_TESTS),
    ("pool: join waits for threads without its deadline", "lestats/pool.py",
     "            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))\n",
     "            thread.join()\n", POOL_TESTS),
    ("pool: join with one wait instead of wait_for", "lestats/pool.py",
     "            if not self._all_done.wait_for(lambda: self._unfinished == 0, timeout):\n",
     "            if not self._all_done.wait(timeout):\n", POOL_TESTS),
    ("pool: notify bookkeeping forgets the idle count", "lestats/pool.py",
     "            self._idle -= woken\n", "", POOL_TESTS),
    ("pool: full check off by one", "lestats/pool.py",
     "len(self._tasks) >= self.max_queued:", "len(self._tasks) > self.max_queued:",
     POOL_TESTS + ["tests/test_http.py"]),
    ("jobs: finishing job does not notify its waiters", "lestats/jobs.py",
     "                waiter[0].notify_all()\n", "                pass\n", JOB_TESTS),
    ("jobs: waiters notify instead of notify_all", "lestats/jobs.py",
     "                waiter[0].notify_all()\n", "                waiter[0].notify()\n", JOB_TESTS),
    ("jobs: one wait instead of wait_for in result", "lestats/jobs.py",
     "            waiter[0].wait_for(lambda: self._table.status[slot] not in UNFINISHED, timeout)\n",
     "            waiter[0].wait(timeout)\n", JOB_TESTS),
    ("jobs: ids taken outside the lock", "lestats/jobs.py",
     "        with self._mutex:\n            number = self._next\n            self._queue(number, query)\n            self._next += 1\n",
     "        number = self._next\n        self._next += 1\n        with self._mutex:\n            self._queue(number, query)\n",
     JOB_TESTS),
    ("jobs: id advanced before the pool accepts", "lestats/jobs.py",
     "            number = self._next\n            self._queue(number, query)\n            self._next += 1\n",
     "            number = self._next\n            self._next += 1\n            self._queue(number, query)\n",
     JOB_TESTS),
    ("jobs: entered before the step that can fail", "lestats/jobs.py",
     "        try:\n            ticket = self._pool.submit(lambda: self._run(slot, number, query), label=job_id)\n",
     "        self._table.add(number, QUEUED, query, time.time(), 0)\n        self._unfinished += 1\n"
     "        try:\n            ticket = self._pool.submit(lambda: self._run(slot, number, query), label=job_id)\n",
     JOB_TESTS),
    ("jobs: unfinished decremented outside the lock", "lestats/jobs.py",
     "        with self._mutex:\n            table.status[slot] = status\n            table.finished[slot] = time.time()\n"
     "            if reason is not None:\n                table.reasons[slot] = reason\n            self._unfinished -= 1\n",
     "        self._unfinished -= 1\n        with self._mutex:\n            table.status[slot] = status\n"
     "            table.finished[slot] = time.time()\n            if reason is not None:\n"
     "                table.reasons[slot] = reason\n", JOB_TESTS),
    ("storage: writer notify instead of notify_all", "lestats/storage.py",
     "        self._written.notify_all()\n", "        self._written.notify()\n",
     ["tests/test_storage.py"]),
    ("storage: a leader never hands over", "lestats/storage.py",
     "            self._mutex.acquire()   # pylint: disable=consider-using-with\n            self._writing = False\n",
     "            self._mutex.acquire()   # pylint: disable=consider-using-with\n",
     ["tests/test_storage.py"]),
    ("storage: no cut back after a failed write", "lestats/storage.py",
     "            self._cut_back(before)\n", "", ["tests/test_storage.py"]),
    ("storage: only the first of a batch hears the error", "lestats/storage.py",
     "        for written in batch:\n            written.done, written.error = True, error\n",
     "        for i, written in enumerate(batch):\n            written.done, written.error = True, error if i == 0 else None\n",
     ["tests/test_storage.py"]),
    ("storage: the leader holds the lock while writing", "lestats/storage.py",
     "        self._mutex.release()\n        try:\n            error = self.segments.write(batch)\n",
     "        try:\n            error = self.segments.write(batch)\n", ["tests/test_storage.py"],
     "            self._mutex.acquire()   # pylint: disable=consider-using-with\n", ""),
    ("storage: a line waiting when the journal closes is still written", "lestats/storage.py",
     "                    if self._closed:   # closed while this line waited for its turn\n"
     "                        self._waiting.remove(entry)\n"
     "                        raise JournalError(errno.ESHUTDOWN, \"the journal is closed\")\n",
     "", STORE_TESTS),
    ("storage: an appender whose line is being written spins past its deadline",
     "lestats/storage.py",
     "                elif entry not in self._waiting:\n"
     "                    # In the batch being written: only its end tells how it went.\n"
     "                    self._written.wait()\n", "", STORE_TESTS),
    ("storage: no flock", "lestats/storage.py",
     "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n", "            pass\n",
     ["tests/test_storage.py", "tests/test_cli.py"]),
    ("storage: temp file without O_EXCL", "lestats/storage.py",
     "        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW\n",
     "        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC\n", ["tests/test_storage.py"]),
    ("storage: results read through links", "lestats/storage.py",
     "    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)\n",
     "    fd = os.open(path, flags | os.O_NONBLOCK)\n", ["tests/test_storage.py"]),
    ("storage: a segment deleted while its last job runs", "lestats/storage.py",
     "        finished = [item for item in self._closed if item[1] < self.finished_below]\n",
     "        finished = [item for item in self._closed if item[1] <= self.finished_below]\n",
     ["tests/test_storage.py"]),
    ("storage: wipe not noticed", "lestats/storage.py",
     "        if os.fstat(self._fd).st_nlink > 0:\n            return\n", "        return\n",
     ["tests/test_storage.py"]),
    ("storage: bools taken for job numbers", "lestats/storage.py",
     "    if type(value) is int and 1 <= value <= HIGHEST_JOB:",
     "    if isinstance(value, (int, float)) and 0 <= value:", ["tests/test_storage.py"]),
]


def run(name, file, old, new, tests, old2=None, new2=None, timeout=180):
    """Apply one mistake to a copy of the checkout and run ``tests``."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = Path(tmp) / "main"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "results",
                                                                  ".tox", ".venv*"))
        target = copy / file
        text = target.read_text()
        if text.count(old) != 1:
            return f"NOT APPLIED ({text.count(old)} matches)"
        text = text.replace(old, new)
        if old2 is not None:
            if text.count(old2) != 1:
                return f"NOT APPLIED (second part: {text.count(old2)} matches)"
            text = text.replace(old2, new2)
        target.write_text(text)
        began = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-cov",
                 "-m", "not slow", *tests], cwd=copy, capture_output=True, text=True,
                timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"HUNG (> {timeout} s)"
        took = time.monotonic() - began
        if result.returncode == 0:
            return f"MISSED ({took:.0f} s)"
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        return f"caught in {took:.0f} s: {failed[0][7:90] if failed else result.stdout[-200:]}"


def main():
    """Run every mistake (or those whose name has -k's SUBSTRING)."""
    for name, file, old, new, tests, *second in MUTANTS:
        if ONLY and ONLY not in name:
            continue
        print(f"{name:55} {run(name, file, old, new, tests, *second)}", flush=True)


main()
