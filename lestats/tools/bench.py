"""The benchmark: lestats against the floor of its own stack, in one run.

    python3 -m lestats bench [--quick] [--json PATH] [--data CSV] [--cases DIR]

Every server is a child process on loopback; every client runs in this
process.  It measures and prints:

1. the floor: a bare ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, Nagle off,
   each response sent with one write) answering a constant small JSON to a
   POST and then to a GET: the fastest "submit + fetch" cycle of the stack;
2. lestats cycles (POST a statistic, GET until done, keep-alive) at 1, 4 and
   16 clients over a mix of all nine statistics, and the ratio to the floor;
3. job latency: from the client having its POST answer to the result file
   existing (both on CLOCK_MONOTONIC, which every process shares), p50/p99/max;
4. the checker: ``lestats check`` over both editions against lestats and
   against a server that computes in the request thread, and how many first
   polls found a job still running;
5. start-up (process start to the first answer) and peak RSS at 19k, 200k and
   1M rows, beside a bare ``csv.DictReader`` pass (what the loader is built
   on) over the same file in a fresh process;
6. compute per job for each statistic at 19k and 1M rows.

``--quick`` shortens every step to a few seconds in all (CI runs it so that
the benchmark cannot rot); its numbers are not for comparing.
"""

import argparse
import http.client
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import hostile
from ..data import COURSE_FILE_NAME, SHIPPED_DATA, DataIndex, load, open_csv
from ..grade.cases import SHIPPED_CASES
from ..grade.check import Outcome, check_edition
from ..grade.client import Client
from ..grade.course import EDITIONS
from .demo import scale
from ..records import JobResult, job_number
from .soak import RUN_PY, ServerProcess, proc_status
from ..statistics import STATISTICS, prepare
from ..storage import JobStore

REPO = Path(__file__).resolve().parents[2]
FLOOR_POST = b'{"job_id": "job_id_1"}'
FLOOR_GET = b'{"status": "done", "data": {"global_mean": 1.0}}'
CONCURRENCY = (1, 4, 16)


# -- the servers this benchmark starts (each in its own process) -------------

class FloorHandler(BaseHTTPRequestHandler):
    """The floor: a constant answer, the stack's best honest configuration."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1                     # headers and body leave in one send
    disable_nagle_algorithm = True    # no wait on a delayed ACK

    def _answer(self, body: bytes) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:   # pylint: disable=invalid-name
        """Answer as a job submission would."""
        self._answer(FLOOR_POST)

    def do_GET(self) -> None:   # pylint: disable=invalid-name
        """Answer as a finished get_results would."""
        self._answer(FLOOR_GET)

    def log_message(self, format: str, *args: Any) -> None:   # pylint: disable=redefined-builtin
        pass


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


def serve(kind: str, data: Optional[str] = None, results: Optional[str] = None) -> int:
    """Run one of the benchmark's servers in this process (a child of the
    benchmark) until SIGTERM; print ``port N`` when ready."""
    # pylint: disable=import-outside-toplevel
    from ..webserver import StatsServer
    if kind == "floor":
        server = ThreadingHTTPServer(("127.0.0.1", 0), FloorHandler)
        server.daemon_threads = True
    else:
        index = load(data)
        server = StatsServer(("127.0.0.1", 0), SyncJobs(index, JobStore(results)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    stop.wait()
    return 0


def serve_lestats_timed(argv: List[str], timings: str) -> int:
    """Run lestats (``cli.main``) recording when each result file appears;
    the times are written to ``timings`` as JSON on exit."""
    # pylint: disable=import-outside-toplevel
    from .. import cli
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


class Child:
    """A benchmark server in a child process (``python3 -m lestats bench --serve``)."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(   # pylint: disable=consider-using-with
            [sys.executable, "-m", "lestats", "bench", "--serve", *args],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            cwd=REPO)
        self.port = int(self.process.stdout.readline().split()[1])

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.process.stdout.close()


# -- clients -----------------------------------------------------------------

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


class CycleClient:
    """One keep-alive client doing POST-then-GET-until-done cycles."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.posts: List[Tuple[str, float, float]] = []   # (job id, sent, answered)
        self.cycles = 0
        self.polls = 0

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

    def run(self, mix: List[Tuple[str, bytes]], until: float, offset: int) -> None:
        """Cycle through ``mix`` until the monotonic time ``until``."""
        i = offset
        while time.monotonic() < until:
            name, body = mix[i % len(mix)]
            self.cycle(name, body)
            i += 1
        self.connection.close()


def measure_cycles(port: int, mix: List[Tuple[str, bytes]], clients: int,
                   seconds: float) -> Tuple[float, List[CycleClient]]:
    """Cycles per second with ``clients`` concurrent keep-alive clients."""
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
    return sum(client.cycles for client in workers) / elapsed, workers


# -- the steps ---------------------------------------------------------------

def step_cycles(data: Path, index: DataIndex, seconds: float, workdir: Path,
                report: Dict[str, Any]) -> None:
    """Steps 1 to 3: the floor, lestats cycles, job latency."""
    mix = requests_mix(index, 900)
    floor = Child("floor")
    try:
        report["floor_cycles_per_s"] = {
            c: round(measure_cycles(floor.port, mix, c, seconds)[0]) for c in CONCURRENCY}
    finally:
        floor.stop()
    timings = workdir / "timings.json"
    server = ServerProcess(data, workdir / "results-cycles", workdir / "cycles.log",
                           ["--bench-timings", str(timings)], cwd=REPO,
                           entry=("-m", "lestats", "bench", "--serve-lestats"))
    latency_clients: List[CycleClient] = []
    try:
        report["lestats_cycles_per_s"] = {}
        for clients in CONCURRENCY:
            rate, workers = measure_cycles(server.port, mix, clients, seconds)
            report["lestats_cycles_per_s"][clients] = round(rate)
            if clients == 1:
                latency_clients = workers
            report.setdefault("polls_per_cycle", {})[clients] = round(
                sum(w.polls for w in workers) / max(1, sum(w.cycles for w in workers)), 3)
    finally:
        server.stop()
    durable = ServerProcess(data, workdir / "results-fsync", workdir / "fsync.log", ["--fsync"])
    try:
        report["lestats_fsync_cycles_per_s"] = {
            c: round(measure_cycles(durable.port, mix, c, seconds)[0]) for c in CONCURRENCY}
    finally:
        durable.stop()
    report["ratio_to_floor"] = {
        c: round(report["lestats_cycles_per_s"][c] / report["floor_cycles_per_s"][c], 2)
        for c in CONCURRENCY}
    finished = {int(k): v for k, v in json.loads(timings.read_text()).items()}
    latencies, round_trips = [], []
    for client in latency_clients:
        for job_id, sent, answered in client.posts:
            round_trips.append(answered - sent)
            done = finished.get(int(job_id[7:]))
            if done is not None:
                latencies.append(max(0.0, done - answered))
    report["job_latency_ms"] = {
        "p50": round(percentile(latencies, 0.5) * 1000, 3),
        "p99": round(percentile(latencies, 0.99) * 1000, 3),
        "max": round(max(latencies, default=float("nan")) * 1000, 3),
        "jobs": len(latencies),
        "done_before_post_answered": sum(1 for x in latencies if x == 0.0)}
    report["post_round_trip_ms_c1"] = {"p50": round(percentile(round_trips, 0.5) * 1000, 3)}


def run_checker(cases: Path, port: int) -> Tuple[bool, List[Outcome]]:
    """``lestats check`` over each edition under ``cases`` (its rules, no report):
    (all passed, every outcome)."""
    results = [check_edition(Client("127.0.0.1", port), cases / name, EDITIONS[name],
                             io.StringIO()) for name in sorted(EDITIONS) if (cases / name).is_dir()]
    return (all(result.all_passed for result in results),
            [outcome for result in results for outcome in result.outcomes])


def step_checker(data: Path, cases: Optional[Path], workdir: Path,
                 report: Dict[str, Any]) -> None:
    """Step 4: lestats check over both editions, against lestats and a synchronous server."""
    if cases is None:
        report["checker"] = "skipped: no checker cases (see --cases)"
        return

    def run_all(port: int) -> Tuple[float, int, int, bool]:
        start = time.monotonic()
        passed, outcomes = run_checker(cases, port)
        running = sum(outcome.first_poll_running for outcome in outcomes)
        return time.monotonic() - start, running, len(outcomes), passed

    server = ServerProcess(data, workdir / "results-checker", workdir / "checker.log")
    try:
        seconds, running, count, passed = run_all(server.port)
    finally:
        server.stop()
    sync = Child("sync", str(data), str(workdir / "results-sync"))
    try:
        sync_seconds, _, _, sync_passed = run_all(sync.port)
    finally:
        sync.stop()
    report["checker"] = {
        "cases": count, "all_passed": passed and sync_passed,
        "lestats_s": round(seconds, 3), "synchronous_s": round(sync_seconds, 3),
        "ratio": round(seconds / sync_seconds, 2),
        "first_polls_running": running,
        "first_polls_running_pct": round(100 * running / max(1, count), 2)}


class Subscriber:
    """A client of GET /api/events that reads every event until closed."""

    def __init__(self, port: int):
        self.events = 0
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._connection.request("GET", "/api/events")
        self._response = self._connection.getresponse()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                if line.startswith(b"event: "):
                    self.events += 1
        except Exception:   # pylint: disable=broad-except
            pass   # http.client fails in many ways when close() shuts the socket under it

    def close(self) -> None:
        """Hang up."""
        self._connection.sock.shutdown(2)
        self._connection.close()
        self._thread.join(timeout=10)


def step_watching(data: Path, index: DataIndex, cases: Optional[Path], seconds: float,
                  rounds: int, workdir: Path, report: Dict[str, Any]) -> None:
    """Step 7: what watching costs.  On one server, cycles/s at 1 and 4
    clients with no page open and with 10 event-stream subscribers, taking
    turns (so that the machine's drift counts against neither), and the
    checker's results with 10 subscribers."""
    mix = requests_mix(index, 900)
    server = ServerProcess(data, workdir / "results-watch", workdir / "watch.log")
    rates: Dict[str, Dict[int, List[float]]] = {"none": {1: [], 4: []}, "10": {1: [], 4: []}}
    events = 0
    try:
        for _ in range(rounds):
            for clients in (1, 4):
                rates["none"][clients].append(measure_cycles(server.port, mix, clients,
                                                             seconds)[0])
                subscribers = [Subscriber(server.port) for _ in range(10)]
                rates["10"][clients].append(measure_cycles(server.port, mix, clients,
                                                           seconds)[0])
                events += sum(subscriber.events for subscriber in subscribers)
                for subscriber in subscribers:
                    subscriber.close()
        result: Dict[str, Any] = {
            f"c{clients}": {"none": round(max(rates["none"][clients])),
                            "10_subscribers": round(max(rates["10"][clients])),
                            "ratio": round(max(rates["10"][clients])
                                           / max(rates["none"][clients]), 3)}
            for clients in (1, 4)}
        result["events_received"] = events
        if cases is not None:
            subscribers = [Subscriber(server.port) for _ in range(10)]
            passed, outcomes = run_checker(cases, server.port)
            for subscriber in subscribers:
                subscriber.close()
            result["checker_with_10_subscribers"] = {
                "all_passed": passed, "cases": len(outcomes),
                "first_polls_running": sum(o.first_poll_running for o in outcomes)}
    finally:
        server.stop()
    report["watching"] = result


def step_compare(data: Path, index: DataIndex, other: Path, seconds: float, rounds: int,
                 workdir: Path, report: Dict[str, Any]) -> None:
    """Step 9 (``--compare RUN_PY``): cycles/s of this checkout and of
    another one's ``run.py`` (the version before a change, say), taking
    turns round after round, each keeping its best round."""
    mix = requests_mix(index, 900)
    best: Dict[str, Dict[int, float]] = {"this": {}, "other": {}}
    for round_number in range(rounds):
        for name, entry in (("this", (str(RUN_PY),)), ("other", (str(other),))):
            server = ServerProcess(data, workdir / f"results-{name}-{round_number}",
                                   workdir / f"{name}.log", entry=entry)
            try:
                for clients in CONCURRENCY:
                    rate = measure_cycles(server.port, mix, clients, seconds)[0]
                    best[name][clients] = max(best[name].get(clients, 0.0), rate)
            finally:
                server.stop()
    report["compare"] = {
        "other": str(other),
        "cycles_per_s": {c: {"this": round(best["this"][c]), "other": round(best["other"][c]),
                             "ratio": round(best["this"][c] / best["other"][c], 3)}
                         for c in CONCURRENCY}}


def instructions_per_cycle(run_py: Path, data: Path, index: DataIndex,
                           workdir: Path) -> Optional[int]:
    """CPU instructions a server (``run_py``) spends per cycle at one
    client, counted by callgrind: the difference between 250 and 50 cycles,
    over 200 (so start-up and exit cancel out).  Unlike a rate, the count is
    the same from run to run, within about 1%, whatever else the machine
    does.  None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    mix = requests_mix(index, 900)
    totals = []
    for cycles in (50, 250):
        out = workdir / f"callgrind-{run_py.parent.name}-{cycles}.out"
        server = ServerProcess(data, workdir / f"results-cg-{cycles}", workdir / "cg.log",
                               ["--workers", "2"], python=(valgrind, "-q", "--tool=callgrind",
                               f"--callgrind-out-file={out}", sys.executable),
                               entry=(str(run_py),))
        client = CycleClient(server.port)
        for i in range(cycles):
            client.cycle(*mix[i % len(mix)])
        client.connection.close()
        # Dump the counts, then kill: a signal's drain under valgrind is slow.
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True,
                       check=False)
        time.sleep(3)   # callgrind_control returns before the dump is written
        server.kill()
        totals.append(max(int(line.split()[1]) for path in workdir.glob(out.name + "*")
                          for line in path.read_text(errors="replace").splitlines()
                          if line.startswith(("summary:", "totals:"))))
    return (totals[1] - totals[0]) // 200


def step_instructions(data: Path, index: DataIndex, other: Optional[Path], workdir: Path,
                      report: Dict[str, Any]) -> None:
    """Step 10 (``--callgrind``): instructions per cycle of this checkout
    (and of ``--compare``'s)."""
    result: Dict[str, Any] = {"this": instructions_per_cycle(RUN_PY, data, index, workdir)}
    if other is not None and result["this"] is not None:
        result["other"] = instructions_per_cycle(other, data, index, workdir)
        result["ratio"] = round(result["this"] / result["other"], 3)
    report["instructions_per_cycle"] = result


def serve_memory(jobs: str, data: str, results: str) -> int:
    """Child of step 8: accept ``jobs`` jobs in this process (in batches, as
    a busy server would) and print the memory they keep, as JSON."""
    # pylint: disable=import-outside-toplevel
    import gc
    import tracemalloc
    from ..jobs import JobManager
    from ..pool import ThreadPool
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


def step_memory(data: Path, jobs: int, workdir: Path, report: Dict[str, Any]) -> None:
    """Step 8: the memory ``jobs`` finished jobs keep (their records)."""
    result = subprocess.run(
        [sys.executable, "-m", "lestats", "bench", "--serve-memory", str(jobs), str(data),
         str(workdir / "results-memory")], cwd=REPO, capture_output=True, text=True,
        check=True)
    report["memory_per_job"] = json.loads(result.stdout)


def time_process(command: List[str]) -> float:
    """Seconds from starting ``command`` to its exit."""
    start = time.monotonic()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def startup(data: Path, workdir: Path) -> Tuple[float, float]:
    """(seconds from process start to the first answer, peak RSS in MiB)."""
    start = time.monotonic()
    server = ServerProcess(data, workdir / "results-startup", workdir / "startup.log",
                           ["--workers", "1"])
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/api/num_jobs")
        connection.getresponse().read()
        elapsed = time.monotonic() - start
        connection.close()
        peak = proc_status(server.pid).get("VmHWM", 0) / 1024
    finally:
        server.stop()
    return elapsed, peak


BARE_PASS = ("import csv, sys\n"
             "with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:\n"
             "    for row in csv.DictReader(f):\n"
             "        pass\n")


def step_sizes(source: Path, sizes: Sequence[int], workdir: Path,
               report: Dict[str, Any]) -> Dict[int, Path]:
    """Step 5: start-up and peak RSS at each size, beside a bare csv.DictReader pass."""
    files = {}
    rows = {}
    for size in sizes:
        path = workdir / f"rows-{size}.csv"
        if size == 0:
            path = source
        else:
            with open(path, "w", newline="", encoding="utf-8") as out:
                scale(source, out, size, seed=size)
        files[size] = path
        best_start, best_bare, peak = float("inf"), float("inf"), 0.0
        for _ in range(2 if size and size >= 1_000_000 else 3):
            elapsed, rss = startup(path, workdir)
            best_start, peak = min(best_start, elapsed), max(peak, rss)
            best_bare = min(best_bare, time_process([sys.executable, "-c", BARE_PASS,
                                                     str(path)]))
        label = size or load(path).rows
        rows[label] = {"startup_s": round(best_start, 3), "dictreader_pass_s": round(best_bare, 3),
                       "ratio": round(best_start / best_bare, 2), "peak_rss_mib": round(peak, 1),
                       "file_mib": round(path.stat().st_size / 2**20, 1)}
    report["startup"] = rows
    return files


def _queries(index: DataIndex, name: str) -> List[Any]:
    queries = []
    for question in sorted(index.questions):
        body = {"question": question}
        if STATISTICS[name].needs_state:
            body["state"] = sorted(index.questions[question].state_means)[0]
        queries.append(prepare(index, name, body))
    return queries


def compute_per_job(indexes: Sequence[DataIndex], repeats: int,
                    rounds: int = 15) -> List[Dict[str, float]]:
    """Microseconds to compute and encode each statistic (no cache) over
    every question, for each index.  The indexes take turns, round after
    round, and each keeps its best round, so that a busy moment of the
    machine counts against neither."""
    timings: List[Dict[str, float]] = [{} for _ in indexes]
    for name in sorted(STATISTICS):
        work = [(index, _queries(index, name)) for index in indexes]
        best = [float("inf")] * len(indexes)
        for _ in range(rounds):
            for i, (index, queries) in enumerate(work):
                start = time.perf_counter()
                for _ in range(repeats):
                    for query in queries:
                        json.dumps(query.compute(index))
                best[i] = min(best[i], time.perf_counter() - start)
        for i, (_, queries) in enumerate(work):
            timings[i][name] = round(best[i] / (repeats * len(queries)) * 1e6, 1)
    return timings


def step_compute(small: Path, large: Optional[Path], repeats: int,
                 report: Dict[str, Any]) -> None:
    """Step 6: per-job compute at the smallest and largest size."""
    paths = [small] if large is None else [small, large]
    timings = compute_per_job([load(path) for path in paths], repeats,
                              rounds=3 if large is None else 15)
    result: Dict[str, Any] = {"small_us": timings[0]}
    if large is not None:
        result["large_us"] = timings[1]
        result["ratio"] = {name: round(timings[1][name] / timings[0][name], 2)
                           for name in timings[0]}
    report["compute_per_job"] = result


# -- the report --------------------------------------------------------------

def print_report(report: Dict[str, Any], out=None) -> None:
    """The report as aligned tables."""
    out = out or sys.stdout
    print(f"machine: {report['cpus']} CPUs, Python {report['python']}"
          f"{' (quick mode: not for comparing)' if report['quick'] else ''}", file=out)
    print("\ncycles/s (POST + GET until done, keep-alive)", file=out)
    print(f"  {'clients':>8} {'floor':>8} {'lestats':>8} {'ratio':>6} {'polls/cycle':>12}"
          f" {'--fsync':>8}", file=out)
    for c in CONCURRENCY:
        print(f"  {c:>8} {report['floor_cycles_per_s'][c]:>8} "
              f"{report['lestats_cycles_per_s'][c]:>8} {report['ratio_to_floor'][c]:>6} "
              f"{report['polls_per_cycle'][c]:>12} {report['lestats_fsync_cycles_per_s'][c]:>8}",
              file=out)
    latency = report["job_latency_ms"]
    print(f"\njob latency, POST answered -> result file (c=1, {latency['jobs']} jobs): "
          f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
          f"{latency['done_before_post_answered']} done before the answer arrived;"
          f" POST round trip p50 {report['post_round_trip_ms_c1']['p50']} ms", file=out)
    checker = report["checker"]
    if isinstance(checker, dict):
        print(f"\nchecker, {checker['cases']} cases (both editions), all passed: "
              f"{checker['all_passed']}: lestats {checker['lestats_s']} s, synchronous "
              f"{checker['synchronous_s']} s, ratio {checker['ratio']}; first polls running: "
              f"{checker['first_polls_running']} ({checker['first_polls_running_pct']}%)",
              file=out)
    else:
        print(f"\nchecker: {checker}", file=out)
    print("\nstart-up (process start -> first answer) and memory", file=out)
    print(f"  {'rows':>9} {'file MiB':>9} {'start-up s':>11} {'DictReader s':>13} {'ratio':>6}"
          f" {'peak RSS MiB':>13}", file=out)
    for rows, row in report["startup"].items():
        print(f"  {rows:>9} {row['file_mib']:>9} {row['startup_s']:>11} "
              f"{row['dictreader_pass_s']:>13} {row['ratio']:>6} {row['peak_rss_mib']:>13}",
              file=out)
    compute = report["compute_per_job"]
    print("\ncompute per job (us, no cache)", file=out)
    print(f"  {'statistic':>24} {'19k rows':>9} {'1M rows':>9} {'ratio':>6}", file=out)
    for name, small in compute["small_us"].items():
        large = compute.get("large_us", {}).get(name, "-")
        ratio = compute.get("ratio", {}).get(name, "-")
        print(f"  {name:>24} {small:>9} {large:>9} {ratio:>6}", file=out)
    watching = report["watching"]
    print("\nwatching the pool: cycles/s with no page open and with 10 event-stream subscribers",
          file=out)
    for clients in (1, 4):
        row = watching[f"c{clients}"]
        print(f"  c={clients}: {row['none']} vs {row['10_subscribers']} (ratio {row['ratio']})",
              file=out)
    if "checker_with_10_subscribers" in watching:
        checked = watching["checker_with_10_subscribers"]
        print(f"  checker with 10 subscribers: {checked['cases']} cases, all passed "
              f"{checked['all_passed']}, first polls running {checked['first_polls_running']}",
              file=out)
    if "compare" in report:
        print(f"\ncycles/s, this checkout vs {report['compare']['other']}"
              " (turn about, best of each)", file=out)
        for clients, row in report["compare"]["cycles_per_s"].items():
            print(f"  c={clients}: {row['this']} vs {row['other']} (ratio {row['ratio']})",
                  file=out)
    if "instructions_per_cycle" in report:
        counted = report["instructions_per_cycle"]
        print(f"\ninstructions per cycle at one client (callgrind): this checkout "
              f"{counted['this']}" + (f", {report['compare']['other']} {counted['other']}"
                                      f" (ratio {counted['ratio']})" if "other" in counted
                                      else ""), file=out)
    memory = report["memory_per_job"]
    print(f"\nmemory kept by {memory['jobs']} finished jobs: {memory['kept_bytes_per_job']}"
          f" bytes per job (tracemalloc), RSS +{memory['rss_mib']} MiB", file=out)


def plain_csv(data: Path, workdir: Path) -> Path:
    """``data``, or for a .gz file its plain copy in ``workdir``."""
    if data.suffix != ".gz":
        return data
    plain = workdir / COURSE_FILE_NAME
    with open_csv(data) as source, open(plain, "w", newline="", encoding="utf-8") as out:
        shutil.copyfileobj(source, out)
    return plain


def bench_hostile(data: Path, quick: bool, json_path: Optional[Path]) -> int:
    """The hostile mode: tools.hostile's measurements, as one table."""
    report = hostile.run_all(data, jobs=2_000 if quick else 200_000,
                             tricklers=100 if quick else 1000, seconds=2.0 if quick else 20.0)
    print(f"lestats under hostile clients ({os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}{', quick mode: not for comparing' if quick else ''})")
    hostile.print_table(report)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark (or, with --serve*, one of its servers)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(*argv[1:])
    if argv[:1] == ["--serve-memory"]:
        return serve_memory(*argv[1:])
    if argv[:1] == ["--serve-lestats"]:
        rest = argv[1:]
        at = rest.index("--bench-timings")
        timings = rest[at + 1]
        return serve_lestats_timed(rest[:at] + rest[at + 2:], timings)
    parser = argparse.ArgumentParser(prog="python3 -m lestats bench",
                                     description="Measure lestats against its stack's floor.")
    parser.add_argument("--quick", action="store_true", help="a few seconds in all")
    parser.add_argument("--hostile", action="store_true",
                        help="instead, measure the server under hostile clients (one table)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--data", type=Path, default=SHIPPED_DATA,
                        help="the survey CSV (default: the shipped one; a .gz is unpacked"
                        " first, so that start-up is timed on a plain CSV)")
    parser.add_argument("--cases", type=Path, default=SHIPPED_CASES,
                        help="the checker's cases, one folder per edition (default: the"
                        " shipped ones)")
    parser.add_argument("--compare", type=Path, metavar="RUN_PY",
                        help="also measure another checkout's run.py, turn about with this one")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per cycle under valgrind (slow; with"
                        " --compare, for both)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per concurrency level (default 3)")
    args = parser.parse_args(argv)
    if args.hostile:
        return bench_hostile(args.data, args.quick, args.json)
    seconds = 0.3 if args.quick else args.seconds
    sizes = [0] if args.quick else [0, 200_000, 1_000_000]
    report: Dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "quick": args.quick, "data": str(args.data)}
    cases = args.cases if args.cases.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="lestats-bench-") as tmp:
        workdir = Path(tmp)
        source = plain_csv(args.data, workdir)
        index = load(source)
        step_cycles(source, index, seconds, workdir, report)
        step_checker(source, cases, workdir, report)
        files = step_sizes(source, sizes, workdir, report)
        step_compute(files[0], files.get(sizes[-1]) if len(sizes) > 1 else None,
                     1 if args.quick else 3, report)
        step_watching(source, index, cases,
                      seconds, 1 if args.quick else 3, workdir, report)
        step_memory(source, 2_000 if args.quick else 200_000, workdir, report)
        if args.compare:
            step_compare(source, index, args.compare, seconds, 1 if args.quick else 3,
                         workdir, report)
        if args.callgrind:
            step_instructions(source, index, args.compare, workdir, report)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
