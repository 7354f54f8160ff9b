"""Hostile clients against a real server process, measured.

    python3 -m lestats.tools.hostile [--tricklers 1000] [--seconds 20] [--run-py run.py]

Each ``measure_*`` function returns a dict of numbers and prints nothing, so
that the benchmark's hostile mode can call it; ``main`` starts a server
(``python3 run.py``, or another checkout's with ``--run-py``) for each, and
prints one line per measurement:

* header stuffing: the server's RSS per connection that sent 99 header lines
  of 64 KiB and never finished its head;
* slowloris: the share of a normal client's requests answered while 1,000
  sockets trickle a request head one byte every 5 s, reconnecting when cut;
* the open-file limit: the server's CPU while more clients are connected
  than its descriptors allow, and whether a new client is answered;
* ``Expect: 100-continue``: how long a client waits for its ``100 Continue``.

Loopback only; every loop is bounded in time.
"""

import argparse
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


# -- the command ------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    """Run every measurement against fresh servers and print the numbers."""
    parser = argparse.ArgumentParser(prog="lestats hostile", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run-py", type=Path, default=RUN_PY,
                        help="the server to measure (another checkout's run.py for a before/after)")
    parser.add_argument("--data", type=Path, help="survey CSV (default: the demo data)")
    parser.add_argument("--tricklers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the normal client runs among the tricklers")
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="the slowloris server's connection cap")
    parser.add_argument("--fd-limit", type=int, default=256)
    args = parser.parse_args(argv)
    entry = (str(args.run_py),)
    with tempfile.TemporaryDirectory(prefix="lestats-hostile-") as tmp:
        work = Path(tmp)

        def start(name: str, extra: Sequence[str] = (),
                  python: Sequence[str] = (sys.executable,)) -> ServerProcess:
            (work / name).mkdir()
            return ServerProcess(args.data, work / name / "results", work / name / "log",
                                 extra, python=python, entry=entry)

        runs = [
            ("header stuffing", lambda s: measure_header_stuffing(s.port, s.pid), (), None),
            ("slowloris",
             lambda s: measure_slowloris(s.port, args.tricklers, args.seconds, pid=s.pid),
             ("--max-connections", str(args.max_connections)), None),
            ("open-file limit", lambda s: measure_fd_limit(s, args.fd_limit + 64),
             ("--max-connections", "1000"), limited_python(args.fd_limit)),
            ("expect 100-continue",
             lambda s: {**measure_expect_continue(s.port), **measure_curl_expect(s.port)},
             (), None),
        ]
        for name, measure, extra, python in runs:
            server = start(name.replace(" ", "-"), extra, python or (sys.executable,))
            try:
                numbers = measure(server)
            finally:
                server.kill()
            print(f"{name}: " + ", ".join(
                f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                for key, value in numbers.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
