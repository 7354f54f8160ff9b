"""The benchmark's clients, all in the benchmark's own process: the request
mix, the keep-alive cycle client and the cycles/s measurement, and an
event-stream subscriber.

A cycle is what a course client does: POST a statistic, then GET its result
until it is done, on one kept-alive connection.
"""

import http.client
import json
import random
import threading
import time
from typing import Any, List, Optional, Sequence, Tuple

from ...data import DataIndex
from ...statistics import STATISTICS

CONCURRENCY = (1, 4, 16)
MIX_SIZE = 900   # requests in the mix every cycles step uses (the contract floor memoizes them)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def requests_mix(index: DataIndex, count: int, seed: int = 7) -> List[Tuple[str, bytes]]:
    """``count`` (statistic, body) pairs over all nine statistics."""
    rng = random.Random(seed)
    questions = sorted(index.questions)
    mix = []
    for i in range(count):
        name = sorted(STATISTICS)[i % len(STATISTICS)]
        question = rng.choice(questions)
        body = {"question": question}
        if STATISTICS[name].needs_state:
            body["state"] = rng.choice(sorted(index.questions[question].state_means))
        mix.append((name, json.dumps(body).encode()))
    return mix


class ClientDied(Exception):
    """A client of a measurement failed: its rate would count the others only."""


class CycleClient:
    """One keep-alive client doing POST-then-GET-until-done cycles.  Its
    counters and ``error`` are written by the thread running it and read by
    another only after joining that thread."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.posts: List[Tuple[str, float, float]] = []   # (job id, sent, answered)
        self.cycles = 0
        self.polls = 0
        self.error: Optional[Exception] = None   # what ended ``run`` early

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> Any:
        """One request on the kept-alive connection."""
        headers = {"Content-Type": "application/json"} if body else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return json.loads(response.read())

    def cycle(self, name: str, body: bytes) -> None:
        """POST, then GET until done."""
        sent = time.monotonic()
        job_id = self.request("POST", f"/api/{name}", body)["job_id"]
        self.posts.append((job_id, sent, time.monotonic()))
        while True:
            self.polls += 1
            if self.request("GET", f"/api/get_results/{job_id}")["status"] == "done":
                break
        self.cycles += 1

    def cycles_from(self, mix: List[Tuple[str, bytes]], count: int, offset: int = 0) -> None:
        """``count`` cycles through ``mix``, from its ``offset``-th request."""
        for i in range(offset, offset + count):
            self.cycle(*mix[i % len(mix)])

    def run(self, mix: List[Tuple[str, bytes]], until: float, offset: int) -> None:
        """Cycle through ``mix`` until the monotonic time ``until``; a
        failure ends the run and is kept in ``error``."""
        i = offset
        try:
            while time.monotonic() < until:
                name, body = mix[i % len(mix)]
                self.cycle(name, body)
                i += 1
        except Exception as exc:   # pylint: disable=broad-except
            self.error = exc
        finally:
            self.connection.close()


def measure_cycles(port: int, mix: List[Tuple[str, bytes]], clients: int,
                   seconds: float) -> Tuple[float, List[CycleClient]]:
    """Cycles per second with ``clients`` concurrent keep-alive clients;
    ClientDied if any of them failed."""
    workers = [CycleClient(port) for _ in range(clients)]
    workers[0].cycle(*mix[0])   # warm up
    workers[0].cycles = 0
    workers[0].posts.clear()
    start = time.monotonic()
    until = start + seconds
    threads = [threading.Thread(target=client.run, args=(mix, until, n * 7))
               for n, client in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    dead = [client for client in workers if client.error is not None]
    if dead:
        raise ClientDied(f"{len(dead)} of {clients} clients of the server on port {port} "
                         f"failed: {dead[0].error!r}") from dead[0].error
    return sum(client.cycles for client in workers) / elapsed, workers


class Subscriber:
    """A client of GET /api/events that reads every event until closed."""

    def __init__(self, port: int):
        self._events = 0
        self._events_mutex = threading.Lock()   # the reader counts; the benchmark reads
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._connection.request("GET", "/api/events")
        self._response = self._connection.getresponse()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                if line.startswith(b"event: "):
                    with self._events_mutex:
                        self._events += 1
        except Exception:   # pylint: disable=broad-except
            pass   # http.client fails in many ways when close() shuts the socket under it

    def events(self) -> int:
        """The events read so far."""
        with self._events_mutex:
            return self._events

    def close(self) -> None:
        """Hang up."""
        self._connection.sock.shutdown(2)
        self._connection.close()
        self._thread.join(timeout=10)
