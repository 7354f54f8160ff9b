"""Hostile clients against a real server process, measured: the
benchmark's hostile mode (``python3 -m lestats bench --hostile``).

Each ``measure_*`` function returns a dict of numbers and prints nothing;
``run_all`` starts a server (``python3 run.py``, or another checkout's) for
each, and ``print_table`` shows them in one table:

* GET /api/jobs at 200,000 jobs to 60 clients that never read: the server's
  RSS, and how long other clients wait meanwhile;
* one client flooding the by-category statistics: the disk written per
  second, and when the free-space floor answers 507;

* header stuffing: the server's RSS per connection that sent 99 header lines
  of 64 KiB and never finished its head;
* slowloris: the share of a normal client's requests answered while 1,000
  sockets trickle a request head one byte every 5 s, reconnecting when cut;
* the open-file limit: the server's CPU while more clients are connected
  than its descriptors allow, and whether a new client is answered;
* ``Expect: 100-continue``: how long a client waits for its ``100 Continue``.

Loopback only; every loop is bounded in time.
"""

import heapq
import http.client
import itertools
import json
import os
import random
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..data import SHIPPED_DATA
from .soak import RUN_PY, ServerProcess, proc_status

TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: lestats\r\nX-Trickle: "
REQUEST_TIMEOUT = 5.0    # seconds a normal client waits for an answer
NORMAL_INTERVAL = 0.05   # seconds between the starts of a normal client's requests


def raise_open_file_limit(needed: int) -> None:
    """Let this process hold ``needed`` descriptors, if the hard limit allows."""
    try:
        import resource   # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_status(port: int, path: str = "/api/num_jobs", timeout: float = REQUEST_TIMEOUT) -> int:
    """The status of one GET on a new connection; 0 if it was not answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# -- header stuffing --------------------------------------------------------

def measure_header_stuffing(port: int, pid: int, connections: int = 20, lines: int = 99,
                            line_bytes: int = 64 * 1024 - 16) -> Dict[str, float]:
    """Open ``connections``, each sending ``lines`` header lines of
    ``line_bytes`` and never the blank line that ends the head; return the
    server's RSS growth per connection (KiB) and how many were answered 431."""
    head = b"GET / HTTP/1.1\r\n" + b"".join(
        b"X-%03d: " % i + b"a" * (line_bytes - 9) + b"\r\n" for i in range(lines))
    before = proc_status(pid).get("VmRSS", 0)
    held: List[socket.socket] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            try:
                sock.sendall(head)
            except OSError:
                pass   # cut off early: the point of a head limit
        time.sleep(1.0)   # let the server take in what it was sent
        after = proc_status(pid).get("VmRSS", 0)
        refused = sum(_answered_431(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()
    return {"connections": connections, "head_bytes": len(head),
            "rss_growth_kib": after - before,
            "rss_per_connection_kib": (after - before) / connections,
            "answered_431": refused}


def _answered_431(sock: socket.socket) -> int:
    sock.settimeout(0.05)
    try:
        return int(sock.recv(64).startswith(b"HTTP/1.1 431"))
    except OSError:
        return 0


# -- slowloris --------------------------------------------------------------

class Tricklers:  # pylint: disable=too-many-instance-attributes
    """``count`` sockets that each send a request head one byte every
    ``byte_every`` seconds and never finish it, reconnecting whenever the
    server answers or cuts them.  One thread drives them all with a selector."""

    def __init__(self, port: int, count: int, byte_every: float, seed: int = 1):
        self.address = ("127.0.0.1", port)
        self.count = count
        self.byte_every = byte_every
        self.connects = 0
        self.connected = threading.Event()   # set once every socket has connected once
        self._stop = threading.Event()
        self._random = random.Random(seed)
        self._selector = selectors.DefaultSelector()
        self._sent: Dict[socket.socket, int] = {}   # socket -> bytes sent so far
        self._due: List[Any] = []                    # heap of (time, n, socket)
        self._order = itertools.count()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def start(self, timeout: float = 60.0) -> bool:
        """Connect every socket; True once all have connected (within ``timeout``)."""
        raise_open_file_limit(self.count + 256)
        self._thread.start()
        return self.connected.wait(timeout)

    def stop(self) -> None:
        """Close every socket and end the thread."""
        self._stop.set()
        self._wake_writer.send(b"x")
        self._thread.join(timeout=30)
        self._wake_reader.close()
        self._wake_writer.close()

    def _run(self) -> None:
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        try:
            for _ in range(self.count):
                self._connect()
            while not self._stop.is_set():
                timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
                for key, events in self._selector.select(timeout):
                    if key.fileobj is not self._wake_reader:
                        self._on_event(key.fileobj, events)
                self._send_due()
        finally:
            for sock in list(self._sent):
                self._selector.unregister(sock)
                sock.close()
            self._selector.close()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.address)
        self._sent[sock] = -1   # connecting
        self._selector.register(sock, selectors.EVENT_WRITE)

    def _on_event(self, sock: Any, events: int) -> None:
        if self._sent.get(sock) == -1 and events & selectors.EVENT_WRITE:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._reconnect(sock)
                return
            self.connects += 1
            if self.connects >= self.count:
                self.connected.set()
            self._sent[sock] = 0
            self._selector.modify(sock, selectors.EVENT_READ)
            # The first byte at once; the first sockets' next ones spread over a period.
            delay = self._random.uniform(0, self.byte_every) if self.connects <= self.count \
                else self.byte_every
            self._send_byte(sock, time.monotonic() + delay)
        elif events & selectors.EVENT_READ:
            self._reconnect(sock)   # answered (503, 408...) or cut: start again

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, _, sock = heapq.heappop(self._due)
            if self._sent.get(sock, -1) >= 0:   # not reconnected since
                self._send_byte(sock, now + self.byte_every)

    def _send_byte(self, sock: Any, next_time: float) -> None:
        sent = self._sent[sock]
        try:
            sock.send(TRICKLE_HEAD[sent:sent + 1] or b"a")
        except OSError:
            self._reconnect(sock)
            return
        self._sent[sock] = sent + 1
        heapq.heappush(self._due, (next_time, next(self._order), sock))

    def _reconnect(self, sock: Any) -> None:
        self._selector.unregister(sock)
        del self._sent[sock]
        sock.close()
        if not self._stop.is_set():
            self._connect()


def normal_client(port: int, seconds: float) -> Dict[str, Any]:
    """A GET every ``NORMAL_INTERVAL`` seconds for ``seconds``, each on a new
    connection, given up after ``REQUEST_TIMEOUT``: how many, how answered,
    how fast."""
    latencies: List[float] = []
    statuses: Dict[int, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        status = get_status(port, timeout=REQUEST_TIMEOUT)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.monotonic() - started)
        time.sleep(max(0.0, started + NORMAL_INTERVAL - time.monotonic()))   # its pace
    requests = sum(statuses.values())
    return {"requests": requests, "answered": len(latencies),
            "answered_share": len(latencies) / requests if requests else 0.0,
            "refused_503": statuses.get(503, 0), "unanswered": statuses.get(0, 0),
            "p50_ms": _percentile(latencies, 0.5) * 1000,
            "p99_ms": _percentile(latencies, 0.99) * 1000}


def measure_slowloris(port: int, tricklers: int = 1000, seconds: float = 20.0,
                      byte_every: float = 5.0, pid: Optional[int] = None) -> Dict[str, float]:
    """``normal_client``'s numbers while ``tricklers`` sockets trickle, and
    (given the server's ``pid``) the server's CPU use meanwhile."""
    attack = Tricklers(port, tricklers, byte_every)
    try:
        all_connected = attack.start()
        cpu = cpu_seconds(pid) if pid else 0.0
        numbers = normal_client(port, seconds)
        cpu_percent = (cpu_seconds(pid) - cpu) / seconds * 100 if pid else float("nan")
        reconnects = attack.connects - tricklers
    finally:
        attack.stop()
    return {"tricklers": tricklers, "all_connected": int(all_connected), **numbers,
            "trickler_reconnects": reconnects, "server_cpu_percent": cpu_percent}


# -- the open-file limit ----------------------------------------------------

def limited_python(fd_limit: int) -> List[str]:
    """A command that runs a script (the next argument) with RLIMIT_NOFILE
    set to ``fd_limit``, soft and hard."""
    script = ("import resource, runpy, sys\n"
              f"resource.setrlimit(resource.RLIMIT_NOFILE, ({fd_limit}, {fd_limit}))\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return [sys.executable, "-c", script]


def measure_fd_limit(server: ServerProcess, held: int,
                     seconds: float = 3.0) -> Dict[str, float]:
    """With ``held`` idle connections open to ``server`` (started with a low
    open-file limit), return the server's CPU use over ``seconds`` and what a
    new client gets (status, 0 if none, and time)."""
    raise_open_file_limit(held + 256)
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
               for _ in range(held)]
    try:
        time.sleep(0.5)   # let the server accept what it can
        cpu = cpu_seconds(server.pid)
        time.sleep(seconds)   # the measurement window
        cpu_percent = (cpu_seconds(server.pid) - cpu) / seconds * 100
        started = time.monotonic()
        status = get_status(server.port, timeout=REQUEST_TIMEOUT)
        waited = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
    return {"held": held, "cpu_percent": cpu_percent, "new_client_status": status,
            "new_client_ms": waited * 1000}


# -- Expect: 100-continue ---------------------------------------------------

def measure_expect_continue(port: int, timeout: float = 3.0) -> Dict[str, float]:
    """Send a POST head with ``Expect: 100-continue`` and no body yet; return
    how long the ``100 Continue`` took (``timeout`` if it never came) and the
    final status once the body is sent."""
    body = json.dumps({"question": "no such question"}).encode()
    head = (b"POST /api/states_mean HTTP/1.1\r\nHost: lestats\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head)
        try:
            interim = sock.recv(4096)
        except socket.timeout:
            interim = b""
        waited = time.monotonic() - started
        sock.sendall(body)
        sock.settimeout(10)
        final = interim
        while final.startswith(b"HTTP/1.1 100") or b"\r\n" not in final:
            if final.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in final:
                final = final.partition(b"\r\n\r\n")[2]
                continue
            more = sock.recv(4096)
            if not more:
                break
            final += more
    status = int(final.split(b" ", 2)[1]) if final.startswith(b"HTTP/1.") else 0
    return {"got_100": int(interim.startswith(b"HTTP/1.1 100")),
            "wait_ms": waited * 1000, "status": status}


def measure_curl_expect(port: int) -> Dict[str, float]:
    """curl's total time for a small POST sent with ``Expect: 100-continue``
    (curl waits up to 1 s for the 100 before sending the body anyway); {} if
    there is no curl."""
    curl = shutil.which("curl")
    if curl is None:
        return {}
    result = subprocess.run(
        [curl, "-s", "-o", os.devnull, "-w", "%{time_total}", "-H", "Expect: 100-continue",
         "-H", "Content-Type: application/json", "--data-binary", '{"question": "x"}',
         f"http://127.0.0.1:{port}/api/states_mean"],
        capture_output=True, text=True, timeout=30, check=False)
    return {"curl_total_ms": float(result.stdout or "nan") * 1000}


# -- GET /api/jobs to clients that never read -------------------------------

def seed_results(directory: Path, jobs: int) -> None:
    """Make ``directory`` hold ``jobs`` finished jobs, as an earlier run
    would leave them (every result a link to one answer, as lestats writes
    them), so that a server started on it lists them all."""
    answers = directory / ".answers"
    answers.mkdir(parents=True)
    for number in range(1, jobs + 1):
        shared = answers / f"seed-{number // 60_000}.json"   # under ext4's 65,000 links
        if not shared.exists():
            shared.write_text('{"global_mean": 1.0}', encoding="ascii")
        os.link(shared, directory / f"job_id_{number}.json")


def measure_jobs_listing(port: int, pid: int, clients: int = 60,
                         settle: float = 2.0) -> Dict[str, float]:
    """``clients`` connections ask for GET /api/jobs and never read the
    answer; return the server's RSS before and with them (MiB), its peak,
    and how long another client then waits for num_jobs and a page of jobs."""
    before = proc_status(pid)
    held: List[socket.socket] = []
    try:
        for _ in range(clients):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: lestats\r\n\r\n")
            held.append(sock)
        time.sleep(settle)   # let the server write what the sockets take
        during = proc_status(pid)
        started = time.monotonic()
        num_jobs = get_status(port)
        num_jobs_ms = (time.monotonic() - started) * 1000
        started = time.monotonic()
        page = get_status(port, "/api/jobs?since=1000&limit=100")
        page_ms = (time.monotonic() - started) * 1000
    finally:
        for sock in held:
            sock.close()
    return {"clients": clients, "rss_before_mib": before.get("VmRSS", 0) / 1024,
            "rss_with_clients_mib": during.get("VmRSS", 0) / 1024,
            "peak_rss_mib": during.get("VmHWM", 0) / 1024,
            "num_jobs_status": num_jobs, "num_jobs_ms": num_jobs_ms,
            "page_status": page, "page_ms": page_ms}


# -- a client flooding the disk ------------------------------------------------

def written_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to storage so far."""
    with open(f"/proc/{pid}/io", encoding="ascii") as io_counters:
        for line in io_counters:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def measure_disk_flood(port: int, pid: int, directory: Path, data: Path,
                       seconds: float = 10.0) -> Dict[str, float]:
    """One keep-alive client POSTs the by-category statistics (the largest
    answers) as fast as it can for ``seconds``, or until refused with 507:
    the disk it makes the server write per second, and the space it uses."""
    # pylint: disable=import-outside-toplevel
    from ..data import load
    from ..statistics import STATISTICS
    index = load(data)
    rng = random.Random(3)
    bodies = []
    for question, means in sorted(index.questions.items()):
        for name in ("mean_by_category", "state_mean_by_category"):
            body = {"question": question}
            if STATISTICS[name].needs_state:
                body["state"] = rng.choice(sorted(means.state_means))
            bodies.append((name, json.dumps(body).encode()))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    free_before = shutil.disk_usage(directory).free
    written_before = written_bytes(pid)
    started = time.monotonic()
    posts, refused_507, elapsed = 0, None, 0.0
    try:
        while elapsed < seconds:
            name, body = bodies[posts % len(bodies)]
            connection.request("POST", f"/api/{name}", body=body)
            response = connection.getresponse()
            response.read()
            posts += 1
            elapsed = time.monotonic() - started
            if response.status == 507:
                refused_507 = elapsed
                break
    finally:
        connection.close()
    written = written_bytes(pid) - written_before
    used = free_before - shutil.disk_usage(directory).free
    return {"posts": posts, "seconds": elapsed,
            "written_mib_per_s": written / elapsed / 2**20,
            "space_used_mib": used / 2**20,
            "written_per_post_kib": written / max(1, posts) / 1024,
            "refused_507_after_s": refused_507 if refused_507 is not None else float("nan")}


# -- all of them, for the benchmark's hostile mode ------------------------------

def run_all(data: Optional[Path], jobs: int = 200_000, tricklers: int = 1000,
            seconds: float = 20.0, fd_limit: int = 256,
            run_py: Path = RUN_PY) -> Dict[str, Dict[str, Any]]:
    """Every measurement, each against a fresh server (``run_py``, so that
    another checkout can be measured for a before/after)."""
    entry = (str(run_py),)
    report: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lestats-hostile-") as tmp:
        work = Path(tmp)

        def start(name: str, extra: Sequence[str] = (), python: Sequence[str] = (
                sys.executable,), results: Optional[Path] = None) -> ServerProcess:
            (work / name).mkdir(exist_ok=True)
            return ServerProcess(data, results or work / name / "results",
                                 work / name / "log", extra, python=python, entry=entry)

        def measured(name: str, server: ServerProcess, measure: Any) -> None:
            try:
                report[name] = measure(server)
            finally:
                server.kill()

        seeded = work / "listing" / "results"
        seed_results(seeded, jobs)
        measured("jobs listing", start("listing", results=seeded),
                 lambda server: {"jobs": jobs, **measure_jobs_listing(server.port, server.pid)})
        measured("header stuffing", start("headers"),
                 lambda server: measure_header_stuffing(server.port, server.pid))
        measured("slowloris", start("slowloris", ("--max-connections", "1000")),
                 lambda server: measure_slowloris(server.port, tricklers, seconds,
                                                  pid=server.pid))
        measured("open-file limit", start("fd", ("--max-connections", "1000"),
                                          limited_python(fd_limit)),
                 lambda server: measure_fd_limit(server, fd_limit + 64))
        measured("expect 100-continue", start("expect"), lambda server: {
            **measure_expect_continue(server.port), **measure_curl_expect(server.port)})
        report["disk flood"] = _disk_flood(work, data or SHIPPED_DATA, start, min(10.0, seconds))
    return report


def _disk_flood(work: Path, data: Path, start: Any, seconds: float) -> Dict[str, Any]:
    """The disk flood on a 64 MiB tmpfs whose floor (--min-free-mb 56)
    leaves 8 MiB to fill, when this process may mount one; else on the
    work directory's own disk, with no floor reached."""
    disk = work / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
        capture_output=True, check=False).returncode == 0
    try:
        extra = ("--min-free-mb", "56") if mounted else ()
        server = start("flood", extra, results=disk / "results")
        try:
            numbers = measure_disk_flood(server.port, server.pid, disk, data, seconds)
        finally:
            server.kill()
        numbers["where"] = "64 MiB tmpfs, floor 56 MiB" if mounted else "the work disk, no floor"
        return numbers
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


def print_table(report: Dict[str, Dict[str, Any]], out: Any = None) -> None:
    """The hostile measurements as one table: what, the figure, the details."""
    out = out or sys.stdout
    listing, stuffing = report["jobs listing"], report["header stuffing"]
    loris, fds = report["slowloris"], report["open-file limit"]
    expect, flood = report["expect 100-continue"], report["disk flood"]
    rows = [
        (f"GET /api/jobs at {listing['jobs']:,} jobs, {listing['clients']} clients that"
         " never read", f"RSS {listing['rss_with_clients_mib']:.1f} MiB",
         f"before {listing['rss_before_mib']:.1f} MiB, peak {listing['peak_rss_mib']:.1f} MiB;"
         f" num_jobs meanwhile {listing['num_jobs_ms']:.1f} ms"),
        (f"{stuffing['connections']} connections stuffing 99 header lines of 64 KiB",
         f"{stuffing['rss_per_connection_kib']:.0f} KiB each",
         f"{stuffing['answered_431']} answered 431"),
        (f"a normal client among {loris['tricklers']:,} trickling sockets",
         f"{loris['answered_share'] * 100:.1f}% answered",
         f"{loris['answered']} of {loris['requests']}, p99 {loris['p99_ms']:.0f} ms,"
         f" server CPU {loris['server_cpu_percent']:.0f}%"),
        (f"{fds['held']} connections past the open-file limit",
         f"CPU {fds['cpu_percent']:.1f}%",
         f"a new client: {fds['new_client_status']} in {fds['new_client_ms']:.1f} ms"),
        ("a POST with Expect: 100-continue", f"{expect['wait_ms']:.1f} ms to the 100",
         f"100 sent: {bool(expect['got_100'])}, then {expect['status']};"
         f" curl's whole request {expect.get('curl_total_ms', float('nan')):.1f} ms"),
        ("one client flooding by-category jobs",
         f"{flood['written_mib_per_s']:.2f} MiB/s written",
         f"{flood['space_used_mib']:.2f} MiB used by {flood['posts']} jobs in"
         f" {flood['seconds']:.1f} s ({flood['where']}); 507 after "
         f"{flood['refused_507_after_s']:.1f} s" if flood["refused_507_after_s"] ==
         flood["refused_507_after_s"] else f"{flood['space_used_mib']:.2f} MiB used by"
         f" {flood['posts']} jobs in {flood['seconds']:.1f} s ({flood['where']}); no 507"),
    ]
    width = max(len(row[0]) for row in rows)
    for what, figure, details in rows:
        print(f"  {what:<{width}}  {figure:>22}  {details}", file=out)
