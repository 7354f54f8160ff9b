"""A soak run: mixed traffic against a real server process that is killed
with SIGKILL and restarted, then a check that no accepted job was lost.

    python3 -m lestats soak [--seconds 30] [--clients 6] [--kill-every 5]

Several client threads send valid statistic requests (remembering every job
id they are given), invalid bodies, and hostile raw requests, while the main
thread kills the server with SIGKILL every few seconds and starts it again on
the same results directory.  At the end the server is stopped with SIGTERM
(which drains it), started once more, and every job id any client received
must be "done" with the right result.  It prints accepted, finished, lost,
errors by kind, peak threads and peak RSS, and exits 1 if anything was lost.
Loopback only; every loop is bounded in time.
"""

import argparse
import http.client
import json
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .check import first_difference
from ..data import DEMO_FILE, DataIndex, load
from ..statistics import STATISTICS, prepare

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"


def proc_status(pid: int) -> Dict[str, int]:
    """Threads, VmRSS and VmHWM (peak RSS) of a process, in KiB; {} if unknown."""
    found = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("Threads", "VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


class ServerProcess:
    """``python3 run.py`` (or another ``entry`` taking its options) in a child
    process on an ephemeral loopback port."""

    def __init__(self, data: Optional[Path], results_dir: Path, log_file: Path,
                 extra: Sequence[str] = (), python: Sequence[str] = (sys.executable,),
                 cwd: Optional[Path] = None, entry: Sequence[str] = (str(RUN_PY),)):
        command = [*python, *entry, "--port", "0", "--results-dir", str(results_dir),
                   "--log-file", str(log_file), *extra]
        if data is not None:
            command += ["--data", str(data)]
        self.process = subprocess.Popen(   # pylint: disable=consider-using-with
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, cwd=cwd or results_dir.parent)
        self.banner = self.process.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", self.banner)
        if match is None:
            self.process.kill()
            raise RuntimeError(f"server did not start: {self.banner}"
                               f"{self.process.stderr.read()}")
        self.port = int(match.group(1))
        self.pid = self.process.pid

    def status(self) -> Dict[str, int]:
        """proc_status of the server process."""
        return proc_status(self.pid)

    def kill(self) -> None:
        """SIGKILL: no drain, no clean-up, like a crash."""
        self.process.kill()
        self.process.wait(timeout=30)
        self.process.stderr.close()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Send ``signum`` and return the exit status."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        self.process.stderr.close()
        return code


def call(port: int, method: str, path: str, body: Any = None,
         timeout: float = 10) -> Tuple[int, Any]:
    """One request on a new connection: (status, decoded JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        connection.request(method, path, body=payload)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


HOSTILE = [
    b"GARBAGE\r\n\r\n",
    b"POST /api/best5 HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /api/best5 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /api/get_results/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 60000\r\n\r\n" + b"[" * 60_000,
    b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 50\r\n\r\n{",   # stalls, cut off
]


class Soak:  # pylint: disable=too-many-instance-attributes
    """One soak run; ``run`` returns the report as a dict."""

    def __init__(self, index: DataIndex, data: Path, workdir: Path, clients: int,
                 workers: int, client_timeout: float, seed: int):
        self.index = index
        self.data = data
        self.results = workdir / "results"
        self.log = workdir / "webserver.log"
        self.clients = clients
        self.extra = ["--workers", str(workers), "--client-timeout", str(client_timeout)]
        self.seed = seed
        self.stop = threading.Event()
        self.server: Optional[ServerProcess] = None
        self.received: List[Tuple[str, str, Dict[str, str]]] = []   # list.append is atomic
        self.errors: Counter = Counter()
        self.peak_threads = 0
        self.peak_rss_kib = 0
        self.questions = sorted(index.questions)

    def start_server(self) -> None:
        """Start (or restart) the server on the same results directory."""
        self.server = ServerProcess(self.data, self.results, self.log, self.extra)

    def note_peaks(self) -> None:
        """Fold the current server's thread count and peak RSS into the report."""
        status = self.server.status() if self.server else {}
        self.peak_threads = max(self.peak_threads, status.get("Threads", 0))
        self.peak_rss_kib = max(self.peak_rss_kib, status.get("VmHWM", 0))

    def valid_request(self, rng: random.Random) -> Tuple[str, Dict[str, str]]:
        """A statistic and a body the data can answer."""
        name = rng.choice(sorted(STATISTICS))
        question = rng.choice(self.questions)
        body = {"question": question}
        if STATISTICS[name].needs_state:
            body["state"] = rng.choice(sorted(self.index.questions[question].state_means))
        return name, body

    def client(self, number: int) -> None:
        """Send mixed traffic until told to stop."""
        rng = random.Random(self.seed * 1000 + number)
        while not self.stop.is_set():
            server = self.server
            kind = rng.random()
            try:
                if kind < 0.7:
                    name, body = self.valid_request(rng)
                    status, answer = call(server.port, "POST", f"/api/{name}", body)
                    if status == 200:
                        self.received.append((answer["job_id"], name, body))
                    else:
                        self.errors[f"valid POST answered {status}"] += 1
                elif kind < 0.85:
                    status, _ = call(server.port, "POST", "/api/state_mean",
                                     {"question": rng.choice(["nope", 7, None])})
                    self.errors[f"invalid POST answered {status}"] += 1
                else:
                    self.hostile(server.port, rng.choice(HOSTILE))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.errors[f"client saw {type(exc).__name__}"] += 1
                self.stop.wait(0.05)   # the server is being restarted: back off

    def hostile(self, port: int, raw: bytes) -> None:
        """Send ``raw`` and read whatever comes back."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            reply = sock.recv(100)
        status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "none"
        self.errors[f"hostile request answered {status}"] += 1

    def monitor(self) -> None:
        """Sample the server's threads and RSS ten times a second."""
        while not self.stop.wait(0.1):
            self.note_peaks()

    def run(self, seconds: float, kill_every: float) -> Dict[str, Any]:
        """Traffic with kills for ``seconds``, then the check."""
        started = time.monotonic()
        self.start_server()
        threads = [threading.Thread(target=self.client, args=(n,), daemon=True)
                   for n in range(self.clients)]
        threads.append(threading.Thread(target=self.monitor, daemon=True))
        for thread in threads:
            thread.start()
        kills = 0
        deadline = started + seconds
        while not self.stop.wait(max(0.0, min(kill_every, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            self.note_peaks()
            self.server.kill()
            kills += 1
            self.start_server()
        self.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        self.note_peaks()
        exit_code = self.server.stop()   # SIGTERM: drains
        report = self.verify()
        report.update(seconds=round(time.monotonic() - started, 1), kills=kills,
                      sigterm_exit=exit_code, errors=dict(sorted(self.errors.items())),
                      peak_threads=self.peak_threads,
                      peak_rss_mib=round(self.peak_rss_kib / 1024, 1))
        return report

    def verify(self) -> Dict[str, Any]:
        """Restart once more and check every received job id."""
        self.start_server()
        try:
            finished = lost = wrong = 0
            examples = []
            for job_id, name, body in self.received:
                query = prepare(self.index, name, body)
                expected = json.loads(json.dumps(query.compute(self.index)))
                status, answer = call(self.server.port, "GET", f"/api/get_results/{job_id}")
                if status != 200 or answer.get("status") != "done":
                    lost += 1
                    examples.append(f"{job_id}: {status} {answer}")
                    continue
                difference = first_difference(expected, answer["data"])
                if difference:
                    wrong += 1
                    examples.append(f"{job_id}: {difference}")
                else:
                    finished += 1
            _, num_jobs = call(self.server.port, "GET", "/api/num_jobs")
        finally:
            self.server.stop()
        return {"accepted": len(self.received), "finished": finished, "lost": lost,
                "wrong": wrong, "num_jobs_after_restart": num_jobs["num_jobs"],
                "examples": examples[:5]}


def main(argv: Optional[List[str]] = None) -> int:
    """Run a soak and print its report; exit 1 if a job was lost or wrong."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats soak",
                                     description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=5.0,
                        help="seconds between SIGKILL/restart cycles")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-timeout", type=float, default=2.0)
    parser.add_argument("--data", type=Path, default=DEMO_FILE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lestats-soak-") as workdir:
        soak = Soak(load(args.data), args.data, Path(workdir), args.clients, args.workers,
                    args.client_timeout, args.seed)
        report = soak.run(args.seconds, args.kill_every)
    for key, value in report.items():
        if key == "errors":
            print("errors by kind:")
            for kind, count in value.items():
                print(f"  {kind}: {count}")
        else:
            print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["lost"] == 0 and report["wrong"] == 0 else 1
