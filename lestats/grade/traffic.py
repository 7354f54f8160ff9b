"""Load and watchers for the deep probes, through the course's API only.

* ``post_job`` and ``poll``: one request each, the answer read into a
  ``Seen`` (status, JSON value or None, and a preview for evidence);
* ``spread``: calls spread over threads (``burst``: many POSTs at once,
  ``poll_all``: one poll of each job);
* ``Monitor``: a thread polling ``/api/num_jobs`` while load runs, keeping
  the lowest value, the answers that were not a count, and the slowest
  answer;
* ``Scanner``: a thread reading every result file of ``--results-dir`` as
  soon as it appears, keeping those that were not JSON when read;
* ``wait_done``: poll jobs until each is done or they stop progressing.

Every loop here ends: on a deadline, a count, or an Event set by its owner.
"""

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .answers import NotJson, parse
from .client import Client, NoAnswer

MONITOR_INTERVAL = 0.01     # seconds between two num_jobs requests of the monitor
STALL_LIMIT = 10.0          # seconds without a job finishing before waiting stops
WAIT_LIMIT = 120.0          # seconds that waiting for jobs may take in all
POLL_PAUSE = 0.02           # between two rounds of polls while waiting
MAX_RESULT_FILE = 4 * 1024 * 1024   # bytes of a result file read
POLLERS = 8                 # threads polling jobs while waiting for them


@dataclass(frozen=True)
class Seen:
    """One answer as a probe saw it: HTTP status (0: no answer), the JSON
    value (None if it was not JSON), and a short text for evidence."""

    status: int
    value: Any
    text: str

    def get(self, name: str) -> Any:
        """``value[name]`` when the value is an object holding it, else None."""
        return self.value.get(name) if isinstance(self.value, dict) else None

    @property
    def is_error(self) -> bool:
        """An error answer: HTTP 4xx/5xx, or a JSON object whose status is "error"."""
        return self.status >= 400 or self.get("status") == "error"


def ask(client: Client, method: str, path: str, body: Optional[bytes] = None,
        max_answer: Optional[int] = None) -> Seen:
    """One request, never raising: what came back, as a Seen."""
    try:
        answer = client.request(method, path, body, max_answer)
    except NoAnswer as exc:
        return Seen(0, None, f"no answer: {exc}")
    try:
        value = parse(answer.body)
    except NotJson:
        value = None
    return Seen(answer.status, value, answer.preview(60))


def post_job(client: Client, endpoint: str, body: Any) -> Tuple[Optional[str], Seen]:
    """POST a statistic; (its job id if the answer gave one, the answer)."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    seen = ask(client, "POST", f"/api/{endpoint}", payload)
    job_id = seen.get("job_id")
    return (job_id if isinstance(job_id, str) and job_id else None), seen


def poll(client: Client, job_id: str) -> Seen:
    """GET a job's result once."""
    return ask(client, "GET", f"/api/get_results/{job_id}")


def job_number(job_id: Any) -> Optional[int]:
    """N of "job_id_N", else None."""
    if isinstance(job_id, str) and job_id.startswith("job_id_") and job_id[7:].isdigit():
        return int(job_id[7:])
    return None


def spread(items: Sequence[Any], threads: int, call: Callable[[Any], Any],
           together: bool = False) -> List[Any]:
    """``call(item)`` for each item, from ``threads`` threads, each taking
    every ``threads``-th item (``together``: they start at once, from a
    Barrier); the results in item order."""
    results: List[Any] = [None] * len(items)
    count = max(1, min(threads, len(items)))
    start = threading.Barrier(count)

    def work(first: int) -> None:
        if together:
            try:
                start.wait(30)
            except threading.BrokenBarrierError:
                pass
        for index in range(first, len(items), count):
            results[index] = call(items[index])   # one slot per index: no two threads share it

    workers = [threading.Thread(target=work, args=(first,), daemon=True)
               for first in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def burst(client: Client, requests: Sequence[Tuple[str, Any]], threads: int
          ) -> List[Tuple[Optional[str], Seen]]:
    """POST ``requests`` from ``threads`` threads that start together; the
    answers in request order."""
    return spread(requests, threads, lambda request: post_job(client, *request), together=True)


class _Watcher:   # pylint: disable=too-few-public-methods
    """A thread running ``_watch`` from the start of a ``with`` block until
    its end (``_stop`` is set then)."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)

    def __enter__(self) -> "_Watcher":
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        raise NotImplementedError


class Monitor(_Watcher):   # pylint: disable=too-few-public-methods
    """Polls /api/num_jobs every MONITOR_INTERVAL: the lowest count, the
    answers that were not a count, those that never came, the slowest one.
    Read them after the ``with`` block."""

    def __init__(self, client: Client):
        super().__init__("deep-monitor")
        self.client = client
        self.requests = 0
        self.lowest: Optional[int] = None
        self.odd: List[str] = []
        self.unanswered: List[str] = []
        self.slowest = 0.0

    def _watch(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL):
            began = time.monotonic()
            seen = ask(self.client, "GET", "/api/num_jobs")
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.requests += 1
            count = seen.get("num_jobs")
            if seen.status == 0:
                self.unanswered.append(seen.text)
            elif seen.status != 200 or not isinstance(count, int) or isinstance(count, bool):
                if len(self.odd) < 3:
                    self.odd.append(seen.text)
            else:
                self.lowest = count if self.lowest is None else min(self.lowest, count)


class Scanner(_Watcher):
    """Reads each ``job_id_*.json`` of a results folder as soon as it
    appears.  ``torn`` holds the first reads that were not JSON, by name,
    with what was read; a name read whole (JSON) is not read again.  Read
    them after the ``with`` block."""

    def __init__(self, folder: Path):
        super().__init__("deep-scanner")
        self.folder = folder
        self.reads = 0
        self.torn: Dict[str, str] = {}
        self._whole: Set[str] = set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                names = [entry.name for entry in os.scandir(self.folder)]
            except OSError:
                names = []
            for name in names:
                if name.startswith("job_id_") and name.endswith(".json") and (
                        name not in self._whole):
                    self._read(name)
            self._stop.wait(0.0005)   # this process's own pace, not the server's

    def _read(self, name: str) -> None:
        data = self._content(name)
        if data is None:
            return
        self.reads += 1
        if _is_json(data):
            self._whole.add(name)
        elif name not in self.torn and len(self.torn) < 20:
            self.torn[name] = f"{len(data):,} bytes, {data[:40]!r}"

    def _content(self, name: str) -> Optional[bytes]:
        try:
            with open(self.folder / name, "rb") as result:
                return result.read(MAX_RESULT_FILE)
        except OSError:
            return None

    def still_torn(self) -> Dict[str, str]:
        """The files read while not JSON that are JSON now (written in place)."""
        return {name: what for name, what in self.torn.items()
                if _is_json(self._content(name) or b"")}


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


@dataclass
class Waited:
    """What waiting for jobs found: the last answer of each job that never
    reached done, the first error answer, and how long it took."""

    unfinished: Dict[str, Seen]
    errors: Dict[str, Seen]
    seconds: float


def wait_done(client: Client, job_ids: Sequence[str]) -> Waited:
    """Poll each job (from POLLERS threads) until it answers done or an
    error; stop when no job has finished for STALL_LIMIT seconds or
    WAIT_LIMIT has passed."""
    began = time.monotonic()
    pending = list(dict.fromkeys(job_ids))
    last: Dict[str, Seen] = {}
    errors: Dict[str, Seen] = {}
    progress = began
    while pending:
        still = []
        for job_id, seen in zip(pending, poll_all(client, pending)):
            if seen.get("status") == "done" and seen.status == 200:
                progress = time.monotonic()
            elif seen.is_error:
                errors[job_id] = seen
                progress = time.monotonic()
            else:
                last[job_id] = seen
                still.append(job_id)
        pending = still
        now = time.monotonic()
        if pending and (now - progress > STALL_LIMIT or now - began > WAIT_LIMIT):
            break
        if pending:
            time.sleep(POLL_PAUSE)
    return Waited({job_id: last[job_id] for job_id in pending}, errors,
                  time.monotonic() - began)


def poll_all(client: Client, job_ids: Sequence[str]) -> List[Seen]:
    """One poll of each job, from up to POLLERS threads; the answers in order."""
    return spread(job_ids, POLLERS, lambda job_id: poll(client, job_id))
