"""The servers the benchmark starts, each in a child process of its own
(``python3 -m lestats bench --serve KIND ...``), and the other child entry
points behind ``--serve-lestats`` and ``--serve-memory``.

* the floor: a bare ``ThreadingHTTPServer`` answering a constant: the
  fastest "submit + fetch" cycle of the stack;
* the contract floor: the same server keeping the contract the naive way
  (``ContractServer``, below);
* the synchronous server: lestats' own HTTP server and log (the entry and
  exit of every request, as the contract asks) with jobs computed in the
  request thread (the checker's floor).
"""

import json
import logging
import logging.handlers
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...data import DataIndex, load
from ...logs import BACKUPS, DATE_FORMAT, FORMAT, MAX_BYTES
from ...records import JobResult, job_number
from ...statistics import STATISTICS, QueryError, prepare
from ...storage import JobStore
from ...webserver import StatsServer
from ..soak import proc_status
from .clients import MIX_SIZE, requests_mix

REPO = Path(__file__).resolve().parents[3]
FLOOR_POST = b'{"job_id": "job_id_1"}'
FLOOR_GET = b'{"status": "done", "data": {"global_mean": 1.0}}'
RESULT_PATH = re.compile(r"/api/get_results/(job_id_[0-9]+)")


class FloorHandler(BaseHTTPRequestHandler):
    """The floor: a constant answer, the stack's best honest configuration."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1                     # headers and body leave in one send
    disable_nagle_algorithm = True    # no wait on a delayed ACK

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:   # pylint: disable=invalid-name
        """Answer as a job submission would."""
        self._body()
        self._answer(FLOOR_POST)

    def do_GET(self) -> None:   # pylint: disable=invalid-name
        """Answer as a finished get_results would."""
        self._answer(FLOOR_GET)

    def log_message(self, format: str, *args: Any) -> None:   # pylint: disable=redefined-builtin
        pass


class FloorServer(ThreadingHTTPServer):
    """The floors' server: ``ThreadingHTTPServer`` with lestats' listen
    backlog.  Its default of 5 overflows when 16 clients connect at once on
    a loaded machine: the kernel drops their handshakes (a client then waits
    a second for the retransmission, or is reset), which would count against
    the floor and not against lestats."""

    daemon_threads = True
    request_queue_size = StatsServer.request_queue_size


def contract_log(log_file: Path) -> logging.Logger:
    """The contract floor's log: a plain RotatingFileHandler (10 MB, 5
    backups) with UTC times ending in Z, lines shaped like lestats' own."""
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=MAX_BYTES,
                                                   backupCount=BACKUPS, encoding="utf-8")
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    log = logging.getLogger("lestats.bench.contract")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def contract_answers(index: DataIndex) -> Dict[Tuple[str, bytes], bytes]:
    """The answer of every request in the benchmark's mix, keyed by
    (statistic, body): the contract floor computes nothing while measured.
    A request that is not a question of ``index`` has none."""
    answers = {}
    for name, body in requests_mix(index, MIX_SIZE):
        try:
            answers[(name, body)] = json.dumps(
                prepare(index, name, json.loads(body)).compute(index)).encode()
        except QueryError:
            pass   # answered 400, like lestats
    return answers


class ContractServer(FloorServer):
    """The contract floor: what any server keeping the contract must do,
    done the naive way, with the floor's HTTP set-up.  Every request logs its
    entry (with its body) and its exit (status and job id) at INFO; a POST
    parses its JSON body, takes the next job id under a lock, writes the
    answer to a temporary file in the results directory and renames it
    ``job_id_N.json``, then answers the id; ``GET /api/get_results/job_id_N``
    reads the file back and answers it as done.  Computing is free: the
    answers are made before serving (``answers``, never changed after), and
    a request outside them is computed in the request thread."""

    def __init__(self, address: Tuple[str, int], index: DataIndex, results: Path,
                 log_file: Path, answers: Dict[Tuple[str, bytes], bytes]):
        super().__init__(address, ContractHandler)
        self.index = index
        self.results = results
        self.answers = answers
        self.log = contract_log(log_file)
        self._mutex = threading.Lock()   # guards _next
        self._next = 1
        results.mkdir(parents=True, exist_ok=True)

    def submit(self, name: str, raw: bytes) -> str:
        """Write the answer of (``name``, ``raw``) as the next job's result
        file; its id.  ValueError for a body that is not a question."""
        answer = self.answers.get((name, raw))
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body is not a JSON object")
        if answer is None:
            answer = json.dumps(prepare(self.index, name, body).compute(self.index)).encode()
        with self._mutex:
            number = self._next
            self._next += 1
        temp = self.results / f".job_id_{number}.json.tmp"
        with open(temp, "wb") as out:
            out.write(answer)
        os.replace(temp, self.results / f"job_id_{number}.json")
        return f"job_id_{number}"

    def result(self, job_id: str) -> bytes:
        """The result file of ``job_id``, read back (OSError if there is none)."""
        with open(self.results / f"{job_id}.json", "rb") as source:
            return source.read()


class ContractHandler(FloorHandler):
    """The contract floor's requests (see ContractServer)."""

    server: ContractServer

    def _exit(self, status: int, body: bytes, job_id: str) -> None:
        self.server.log.info("%s %s end %d %s", self.command, self.path, status, job_id)
        self._answer(body, status)

    def do_POST(self) -> None:   # pylint: disable=invalid-name
        """Submit a job: its result file exists when the id is answered."""
        raw = self._body()
        self.server.log.info("%s %s begin body=%r", self.command, self.path, raw[:201])
        name = self.path[len("/api/"):]
        if not self.path.startswith("/api/") or name not in STATISTICS:
            self._exit(404, b'{"status": "error", "reason": "no such route"}', "-")
            return
        try:
            job_id = self.server.submit(name, raw)
        except ValueError:   # not JSON, or a QueryError
            self._exit(400, b'{"status": "error", "reason": "not a question"}', "-")
            return
        self._exit(200, b'{"job_id": "%s"}' % job_id.encode(), job_id)

    def do_GET(self) -> None:   # pylint: disable=invalid-name
        """A job's result, read back from its file."""
        self.server.log.info("%s %s begin", self.command, self.path)
        match = RESULT_PATH.fullmatch(self.path)
        try:
            data = self.server.result(match.group(1)) if match else None
        except OSError:
            data = None
        if data is None:
            self._exit(404, b'{"status": "error", "reason": "Invalid job_id"}', "-")
        else:
            self._exit(200, b'{"status": "done", "data": ' + data + b"}", match.group(1))


class SyncJobs:
    """The part of JobManager that the checker uses, computing in the request
    thread: the POST is answered once the result file exists."""

    def __init__(self, index: DataIndex, store: JobStore):
        self._index = index
        self._store = store
        self._lock = threading.Lock()   # guards _next
        self._next = store.open(index.source).next_number

    def submit(self, name: str, body: Any) -> str:
        """Compute, write the result, then hand out the id."""
        query = prepare(self._index, name, body)
        with self._lock:
            number = self._next
            self._next += 1
        self._store.write_result(number, json.dumps(query.compute(self._index)).encode())
        return f"job_id_{number}"

    @staticmethod
    def num_jobs() -> int:
        """Nothing is ever left running."""
        return 0

    def result(self, job_id: str, wait: float = 0.0) -> JobResult:   # pylint: disable=unused-argument
        """Always done."""
        return JobResult("done", data_json=self._store.read_result(job_number(job_id)))


def serve(kind: str, *args: str) -> int:
    """Run one of the benchmark's servers in this process (a child of the
    benchmark) until SIGTERM; print ``port N`` when ready.  ``kind`` is
    ``floor``, ``contract DATA RESULTS LOG`` or ``sync DATA RESULTS LOG``."""
    # pylint: disable=import-outside-toplevel
    server: ThreadingHTTPServer
    if kind == "floor":
        server = FloorServer(("127.0.0.1", 0), FloorHandler)
    elif kind == "contract":
        index = load(args[0])
        server = ContractServer(("127.0.0.1", 0), index, Path(args[1]), Path(args[2]),
                                contract_answers(index))
    else:
        from ...logs import configure
        configure(args[2])
        server = StatsServer(("127.0.0.1", 0), SyncJobs(load(args[0]), JobStore(args[1])))
    # SIGTERM is blocked in every thread (the server's inherit this one's
    # mask) and taken by sigwait here: a lock's wait would not wake when the
    # kernel delivers the signal to another thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    signal.sigwait({signal.SIGTERM})
    return 0


def serve_lestats_timed(argv: List[str], timings: str) -> int:
    """Run lestats (``cli.main``) recording when each result file appears;
    the times are written to ``timings`` as JSON on exit."""
    # pylint: disable=import-outside-toplevel
    from ... import cli
    finished: Dict[int, float] = {}
    finished_mutex = threading.Lock()   # the workers write finished; the main thread reads it
    write_result = JobStore.write_result

    def timed(store: JobStore, number: int, *answer: Any) -> None:
        write_result(store, number, *answer)
        moment = time.monotonic()
        with finished_mutex:
            finished[number] = moment

    JobStore.write_result = timed
    try:
        return cli.main(argv)
    finally:
        with finished_mutex:
            text = json.dumps(finished)
        Path(timings).write_text(text, encoding="utf-8")


def serve_memory(jobs: str, data: str, results: str) -> int:
    """Accept ``jobs`` jobs in this process (in batches, as a busy server
    would) and print the memory they keep, as JSON (the memory step's child)."""
    # pylint: disable=import-outside-toplevel
    import gc
    import tracemalloc
    from ...jobs import JobManager
    from ...pool import ThreadPool
    count = int(jobs)
    index = load(data)
    pool = ThreadPool(2)
    manager = JobManager(index, pool, JobStore(results))
    manager.start()
    bodies = [(name, json.loads(body)) for name, body in requests_mix(index, 500)]
    tracemalloc.start()
    gc.collect()
    rss_before = proc_status(os.getpid())["VmRSS"]
    traced_before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        manager.submit(*bodies[i % len(bodies)])
        if i % 1000 == 999:
            manager.drain()
    manager.drain()
    gc.collect()
    rss_after, traced_after = proc_status(os.getpid())["VmRSS"], tracemalloc.get_traced_memory()[0]
    pool.shutdown()
    manager.close()
    print(json.dumps({"jobs": count, "rss_mib": round((rss_after - rss_before) / 1024, 1),
                      "kept_bytes_per_job": round((traced_after - traced_before) / count, 1)}))
    return 0


def child_main(argv: List[str]) -> Optional[int]:
    """Run the child entry point ``argv`` names (``--serve...``); None if it names none."""
    if argv[:1] == ["--serve"]:
        return serve(*argv[1:])
    if argv[:1] == ["--serve-memory"]:
        return serve_memory(*argv[1:])
    if argv[:1] == ["--serve-lestats"]:
        rest = argv[1:]
        at = rest.index("--bench-timings")
        return serve_lestats_timed(rest[:at] + rest[at + 2:], rest[at + 1])
    return None


class Child:
    """A benchmark server in a child process (``python3 -m lestats bench --serve``)."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(   # pylint: disable=consider-using-with
            [sys.executable, "-m", "lestats", "bench", "--serve", *args],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            cwd=REPO)
        self.port = int(self.process.stdout.readline().split()[1])
        self.pid = self.process.pid

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.process.stdout.close()
