"""A soak run: mixed traffic against a real server process while it is
killed, restarted, wiped, doubled and signalled; then a check that no
accepted job was lost and no job id was handed out twice.

    python3 -m lestats soak [--seconds 30] [--clients 6] [--kill-every S]

Several client threads send valid statistic requests (remembering every job
id they are given), invalid bodies and hostile raw requests, while the main
thread, at each event of the run (the 2nd, 3rd and 4th are special):

* kills the server with SIGKILL and starts it again on the same results
  directory, every ``--kill-every`` seconds (by default a sixth of the run,
  at most 5 s, so that a short run kills too);
* starts a second server on the same results directory, which must refuse
  (exit 2) without changing anything;
* runs ``rm -rf results/*`` (as the course checker does) under load, and
  kills the server right after;
* sends SIGTERM and SIGINT back to back, which must stop it at once (exit 0).

Then the server is stopped with SIGTERM (a drain), started once more, and
every job id a client received must be "done" with the right result.  Run
as root, it also fills a small tmpfs holding the results directory, and
checks that a full disk loses no accepted job and tears no journal line.
The server is started with its standard error a pipe nobody reads (after
the banner), so a server that writes much there would hang.  Exit 1 if a
job was lost or wrong, or an id was handed out twice.  Loopback only;
every loop is bounded in time.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..grade.compare import difference
from ..data import SHIPPED_DATA, DataIndex, load
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


SCENARIO_NOTES = {
    "accepted": "job ids the clients were given",
    "finished": "of those, done with the right result after the last restart",
    "lost": "given an id, then not done (must be 0)",
    "wrong": "done with another result than the statistic's (must be 0)",
    "duplicate_ids": "ids given out more than once (must be 0)",
    "wiped": "given out before a wipe and gone with it (the wipe deleted their results)",
    "num_jobs_after_restart": "jobs still unfinished after the final drain (must be 0)",
    "seconds": "how long the run took",
    "kills": "SIGKILL + restart cycles",
    "second_server": "what a second server on the same directory did (must refuse, exit 2)",
    "wipes": "rm -rf results/* under load, each followed by a kill",
    "double_signal_exit": "exit status after SIGTERM + SIGINT back to back (must be 0)",
    "sigterm_exit": "exit status of the final drain (must be 0)",
    "full_disk": "the full-disk check (root only)",
    "errors": "answers other than 200, and client-side errors, by kind",
    "peak_threads": "most threads the server had",
    "peak_rss_mib": "most memory the server used",
    "examples": "a few lost or wrong jobs, if any",
}


class Soak:  # pylint: disable=too-many-instance-attributes
    """One soak run; ``run`` returns the report as a dict."""

    def __init__(self, index: DataIndex, data: Path, workdir: Path, clients: int,
                 extra: Sequence[str], seed: int):
        self.index = index
        self.data = data
        self.workdir = workdir
        self.results = workdir / "results"
        self.log = workdir / "webserver.log"
        self.clients = clients
        self.extra = list(extra)
        self.seed = seed
        self.stop = threading.Event()
        self.server: Optional[ServerProcess] = None
        # Guards received, wiped_before, errors and the peaks: the client
        # threads, the monitor and the main thread all add to them.
        self.mutex = threading.Lock()
        self.received: List[Tuple[str, str, Dict[str, str]]] = []
        self.wiped_before = 0      # how many received ids came before the last wipe
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
        with self.mutex:
            self.peak_threads = max(self.peak_threads, status.get("Threads", 0))
            self.peak_rss_kib = max(self.peak_rss_kib, status.get("VmHWM", 0))

    def count(self, kind: str) -> None:
        """One more answer or error of ``kind``."""
        with self.mutex:
            self.errors[kind] += 1

    def client(self, number: int) -> None:
        """Send mixed traffic until told to stop."""
        rng = random.Random(self.seed * 1000 + number)
        while not self.stop.is_set():
            server = self.server
            kind = rng.random()
            try:
                if kind < 0.7:
                    name, body = random_request(self.index, rng)
                    status, answer = call(server.port, "POST", f"/api/{name}", body)
                    if status == 200:
                        with self.mutex:
                            self.received.append((answer["job_id"], name, body))
                    else:
                        self.count(f"valid POST answered {status}")
                elif kind < 0.85:
                    status, _ = call(server.port, "POST", "/api/state_mean",
                                     {"question": rng.choice(["nope", 7, None])})
                    self.count(f"invalid POST answered {status}")
                else:
                    self.hostile(server.port, rng.choice(HOSTILE))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.count(f"client saw {type(exc).__name__}")
                self.stop.wait(0.05)   # the server is being restarted: back off

    def hostile(self, port: int, raw: bytes) -> None:
        """Send ``raw`` and read whatever comes back."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            reply = sock.recv(100)
        status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "none"
        self.count(f"hostile request answered {status}")

    def monitor(self) -> None:
        """Sample the server's threads and RSS ten times a second."""
        while not self.stop.wait(0.1):
            self.note_peaks()

    def kill_and_restart(self) -> None:
        """SIGKILL, then the same server again on the same directory."""
        self.note_peaks()
        self.server.kill()
        self.start_server()

    def second_server(self) -> str:
        """Start another server on the results directory in use: it must stop."""
        other = subprocess.run(
            [sys.executable, str(RUN_PY), "--port", "0", "--data", str(self.data),
             "--results-dir", str(self.results), "--log-file", str(self.workdir / "second.log")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            cwd=self.workdir, check=False)
        refused = other.returncode == 2 and "is in use by another lestats server" in other.stderr
        return "refused, exit 2" if refused else f"exit {other.returncode}: {other.stderr[:200]}"

    def wipe_and_kill(self) -> None:
        """``rm -rf results/*`` under load, then a kill right after."""
        with self.mutex:
            self.wiped_before = len(self.received)
        for path in self.results.glob("[!.]*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        self.stop.wait(0.2)   # let some jobs be accepted after the wipe
        self.kill_and_restart()

    def double_signal(self) -> int:
        """SIGTERM and SIGINT back to back: the second means "stop now"."""
        self.note_peaks()
        self.server.process.send_signal(signal.SIGTERM)
        self.server.process.send_signal(signal.SIGINT)
        code = self.server.process.wait(timeout=30)
        self.server.process.stderr.close()
        self.start_server()
        return code

    def run(self, seconds: float, kill_every: float) -> Dict[str, Any]:
        """Traffic with kills, a second server, a wipe and a double signal
        for ``seconds`` (longer if need be: every kind of event happens at
        least once, however slow the machine), then the check."""
        started = time.monotonic()
        self.start_server()
        threads = [threading.Thread(target=self.client, args=(n,), daemon=True)
                   for n in range(self.clients)]
        threads.append(threading.Thread(target=self.monitor, daemon=True))
        for thread in threads:
            thread.start()
        report: Dict[str, Any] = {"kills": 0, "wipes": 0}
        # The 2nd, 3rd and 4th events are these, in place of a kill.
        special = {2: "second server", 3: "wipe", 4: "double signal"}
        deadline = started + seconds
        count = 0
        while not self.stop.wait(max(0.0, min(kill_every, deadline - time.monotonic()))):
            if time.monotonic() >= deadline and count >= max(special):
                break
            count += 1
            event = special.get(count, "kill")
            if event == "second server":
                report["second_server"] = self.second_server()
            elif event == "wipe":
                self.wipe_and_kill()
                report["wipes"] += 1
            elif event == "double signal":
                report["double_signal_exit"] = self.double_signal()
            else:
                self.kill_and_restart()
                report["kills"] += 1
        self.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        self.note_peaks()
        exit_code = self.server.stop()   # SIGTERM: drains
        report.update(self.verify())
        report.update(seconds=round(time.monotonic() - started, 1), sigterm_exit=exit_code,
                      errors=dict(sorted(self.errors.items())),
                      peak_threads=self.peak_threads,
                      peak_rss_mib=round(self.peak_rss_kib / 1024, 1))
        return report

    def verify(self) -> Dict[str, Any]:
        """Restart once more and check every received job id."""
        self.start_server()
        try:
            outcome = check_received(self.server.port, self.index, self.received,
                                     self.wiped_before)
            _, num_jobs = call(self.server.port, "GET", "/api/num_jobs")
        finally:
            self.server.stop()
        outcome["num_jobs_after_restart"] = num_jobs["num_jobs"]
        return outcome


def random_request(index: DataIndex, rng: random.Random) -> Tuple[str, Dict[str, str]]:
    """A statistic and a body ``index`` can answer."""
    name = rng.choice(sorted(STATISTICS))
    question = rng.choice(sorted(index.questions))
    body = {"question": question}
    if STATISTICS[name].needs_state:
        body["state"] = rng.choice(sorted(index.questions[question].state_means))
    return name, body


def check_received(port: int, index: DataIndex, received: List[Tuple[str, str, Dict[str, str]]],
                   wiped_before: int = 0) -> Dict[str, Any]:
    """Ask a server for every received job id: finished, lost, wrong,
    wiped (before ``wiped_before``: their results were deleted by a wipe),
    and ids given out twice."""
    counts = Counter()
    examples = []
    for position, (job_id, name, body) in enumerate(received):
        query = prepare(index, name, body)
        expected = json.loads(json.dumps(query.compute(index)))
        status, answer = call(port, "GET", f"/api/get_results/{job_id}")
        if status != 200 or answer.get("status") != "done":
            counts["wiped" if position < wiped_before else "lost"] += 1
            if position >= wiped_before:
                examples.append(f"{job_id}: {status} {answer}")
            continue
        found = difference(answer["data"], expected)
        if found:
            counts["wrong"] += 1
            examples.append(f"{job_id}: {found.text}")
        else:
            counts["finished"] += 1
    ids = [job_id for job_id, _, _ in received]
    return {"accepted": len(ids), "finished": counts["finished"], "lost": counts["lost"],
            "wrong": counts["wrong"], "duplicate_ids": len(ids) - len(set(ids)),
            "wiped": counts["wiped"], "examples": examples[:5]}


def full_disk(index: DataIndex, data: Path, workdir: Path, seconds: float) -> Dict[str, Any]:
    """Fill a 4 MiB tmpfs holding the results directory with result files,
    kill the server, give the disk room, restart: every job id given out
    must be done, and no journal line torn.  Root only (it mounts)."""
    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a small tmpfs"}
    disk = workdir / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs: {mounted.stderr.strip()[:200]}"}
    try:
        results, log = disk / "results", workdir / "full-disk.log"
        server = ServerProcess(data, results, log, ["--workers", "2", "--min-free-mb", "0"])
        received, refused = [], Counter()
        rng = random.Random(7)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and sum(refused.values()) < 200:
            name, body = random_request(index, rng)
            status, answer = call(server.port, "POST", f"/api/{name}", body)
            if status == 200:
                received.append((answer["job_id"], name, body))
            else:
                refused[status] += 1
        server.kill()
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        again = ServerProcess(data, results, log, ["--workers", "2"])
        try:
            outcome = check_received(again.port, index, received)
        finally:
            again.stop()
        damaged = log.read_text(encoding="utf-8", errors="replace").count("; skipped")
        return {"accepted": outcome["accepted"], "lost": outcome["lost"],
                "wrong": outcome["wrong"], "duplicate_ids": outcome["duplicate_ids"],
                "refused_while_full": dict(refused), "damaged_journal_lines": damaged}
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def main(argv: Optional[List[str]] = None) -> int:
    """Run a soak and print its report; exit 1 if a job was lost or wrong."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats soak",
                                     description=__doc__.split("\n\n", maxsplit=1)[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the run")
    parser.add_argument("--kill-every", type=float,
                        help="seconds between events (default: a sixth of the run, at most 5)")
    parser.add_argument("--clients", type=int, default=6, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="the server's worker threads")
    parser.add_argument("--client-timeout", type=float, default=2.0,
                        help="the server's --client-timeout")
    parser.add_argument("--data", type=Path, default=SHIPPED_DATA, help="the survey CSV")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic")
    parser.add_argument("--no-full-disk", action="store_true",
                        help="skip the full-disk check (it needs root)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    kill_every = args.kill_every or min(5.0, args.seconds / 6)
    extra = ["--workers", str(args.workers), "--client-timeout", str(args.client_timeout)]
    index = load(args.data)
    with tempfile.TemporaryDirectory(prefix="lestats-soak-") as workdir:
        report = Soak(index, args.data, Path(workdir), args.clients, extra,
                      args.seed).run(args.seconds, kill_every)
        if not args.no_full_disk:
            report["full_disk"] = full_disk(index, args.data, Path(workdir),
                                            min(10.0, args.seconds))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if passed(report) else 1


def passed(report: Dict[str, Any]) -> bool:
    """Nothing lost, wrong or given twice, here or on the full disk."""
    disk = report.get("full_disk", {})
    return (report["lost"] == report["wrong"] == report["duplicate_ids"] == 0
            and report.get("second_server", "refused, exit 2") == "refused, exit 2"
            and report.get("double_signal_exit", 0) == 0 and report["sigterm_exit"] == 0
            and disk.get("lost", 0) == disk.get("wrong", 0) == disk.get("duplicate_ids", 0) == 0
            and disk.get("damaged_journal_lines", 0) == 0)


def print_report(report: Dict[str, Any]) -> None:
    """Each line of the report, with what it means."""
    for key, value in report.items():
        note = SCENARIO_NOTES.get(key, "")
        if isinstance(value, dict) and key in ("errors", "full_disk"):
            print(f"{key}:  ({note})")
            for kind, count in value.items():
                print(f"  {kind}: {count}")
        else:
            print(f"{key}: {value}" + (f"  ({note})" if note else ""))
