"""Shared fixtures: tiny hand-made CSVs, a live server on an ephemeral port,
and the course checker material (the copy shipped in data/)."""

import csv
import socket
import http.client
import json
import os
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

from lestats import journal
from lestats.data import COURSE_FILE_NAME, load
from lestats.tools.demo import HEADER
from lestats.jobs import JobManager
from lestats.pool import ThreadPool
from lestats.storage import JobStore
from lestats.watch.events import EventBus
from lestats.webserver import StatsServer

REPO = Path(__file__).resolve().parent.parent
# The course's data and cases: the copy shipped in data/ (the CSV gzipped), or
# a folder with the plain CSV and cases/ that $LESTATS_CHECKER_DIR names.
CHECKER_DIR = Path(os.environ.get("LESTATS_CHECKER_DIR", REPO / "data"))
CHECKER_CSV = next((path for path in (CHECKER_DIR / COURSE_FILE_NAME,
                                      CHECKER_DIR / f"{COURSE_FILE_NAME}.gz") if path.is_file()),
                   CHECKER_DIR / COURSE_FILE_NAME)

OBESITY = "Percent of adults aged 18 years and older who have obesity"
MUSCLE = "Percent of adults who engage in muscle-strengthening activities on 2 or more days a week"
UNRANKED = "Percent of adults who like statistics"


def write_csv(path, rows, header=HEADER):
    """Write ``rows`` (dicts of the columns that matter) as a survey CSV."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def row(question, state, value, category="", stratification=""):
    """One CSV row as a dict."""
    return {"Question": question, "LocationDesc": state, "Data_Value": value,
            "StratificationCategory1": category, "Stratification1": stratification}


# Hand-checkable data.  Obesity (lowest is best):
#   Alabama 10, 20 -> 15; Alaska 30 -> 30; Ohio 5, 7 -> 6 (and a row with no value);
#   Utah 15 -> 15 (ties Alabama); global (10+20+30+5+7+15)/6 = 14.5
# Muscle (highest is best): Alabama 40, Ohio 50.  Unranked: Ohio 1.
TINY_ROWS = [
    row(OBESITY, "Alabama", "10", "Gender", "Male"),
    row(OBESITY, "Alabama", "20", "Gender", "Female"),
    row(OBESITY, "Alaska", "30", "Gender", "Male"),
    row(OBESITY, "Ohio", "5", "Age (years)", "18 - 24"),
    row(OBESITY, "Ohio", "7", "Age (years)", "18 - 24"),
    row(OBESITY, "Ohio", "", "Age (years)", "25 - 34"),
    row(OBESITY, "Utah", "15", "Total", ""),
    row(MUSCLE, "Alabama", "40", "Total", "Total"),
    row(MUSCLE, "Ohio", "50", "Total", "Total"),
    row(UNRANKED, "Ohio", "1", "Total", "Total"),
]


@pytest.fixture(autouse=True)
def quick_journal_timeout(monkeypatch):
    """An append that waits for a stuck journal gives up after 5 s in tests
    (30 s in the server), so that a broken journal fails tests, fast."""
    monkeypatch.setattr(journal, "JOURNAL_TIMEOUT", 5.0)


@pytest.fixture
def tiny_csv(tmp_path):
    """A CSV of TINY_ROWS."""
    return write_csv(tmp_path / "tiny.csv", TINY_ROWS)


@pytest.fixture
def tiny_index(tiny_csv):
    """The DataIndex of TINY_ROWS."""
    return load(tiny_csv)


@pytest.fixture(scope="session")
def checker_dir():
    """The folder of the course's CSV and its cases/: data/ (or
    $LESTATS_CHECKER_DIR); skips the test if they are absent."""
    if not CHECKER_CSV.is_file() or not (CHECKER_DIR / "cases").is_dir():
        pytest.skip(f"course checker material not found at {CHECKER_DIR} "
                    "(set LESTATS_CHECKER_DIR to its path)")
    return CHECKER_DIR


@pytest.fixture(scope="session")
def checker_csv(checker_dir):
    """The course's CSV (the shipped one is gzipped)."""
    return CHECKER_CSV


@pytest.fixture(scope="session")
def checker_index(checker_csv):
    """The DataIndex of the checker CSV, loaded once per session."""
    return load(checker_csv)


class LiveServer:
    """A StatsServer serving in a background thread on 127.0.0.1:<ephemeral>."""

    def __init__(self, index, results_dir, workers=2, client_timeout=5.0, pool=None,
                 max_connections=1000, **job_options):
        self.events = EventBus()
        self.pool = pool or ThreadPool(workers, events=self.events)
        self.store = JobStore(results_dir)
        self.jobs = JobManager(index, self.pool, self.store, events=self.events, **job_options)
        self.jobs.start()
        self.server = StatsServer(("127.0.0.1", 0), self.jobs, client_timeout, max_connections)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def call(self, method, path, body=None, headers=None, raw=None):
        """One request on a new connection; returns (status, headers, decoded body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = raw if raw is not None else (
                None if body is None else json.dumps(body).encode())
            connection.request(method, path, body=payload, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "")
            if content_type.startswith("application/json"):
                data = json.loads(data)
            return response.status, response, data
        finally:
            connection.close()

    def submit(self, endpoint, body):
        """POST a statistic; return its job id."""
        status, _, answer = self.call("POST", f"/api/{endpoint}", body)
        assert status == 200, answer
        return answer["job_id"]

    def wait_result(self, job_id, timeout=10.0):
        """Poll get_results until the job is no longer running."""
        deadline = time.monotonic() + timeout
        while True:
            status, _, answer = self.call("GET", f"/api/get_results/{job_id}")
            if answer.get("status") != "running" or time.monotonic() > deadline:
                return status, answer
            time.sleep(0.01)

    def connections_gone(self, timeout=10.0):
        """True once every connection has left the table.  A connection the
        client has closed still counts (as serving its last answer) until its
        thread sees the close, and a table full of them refuses a newcomer."""
        return self.server.connections.wait_empty(timeout) == []

    def close(self):
        """Stop serving, stop the pool and give up the results directory."""
        self.server.shutdown()
        self.events.close()
        self.server.server_close()
        self.pool.shutdown()
        self.pool.join(timeout=10)
        self.jobs.close()


@pytest.fixture
def serve(tmp_path):
    """A factory of LiveServers, all closed at the end of the test."""
    servers = []

    def start(index, **options):
        live = LiveServer(index, tmp_path / f"results{len(servers)}", **options)
        servers.append(live)
        return live

    yield start
    for live in servers:
        live.close()


@pytest.fixture
def tiny_server(serve, tiny_index):
    """A live server on TINY_ROWS."""
    return serve(tiny_index)


def cli_args(**overrides):
    """An argparse Namespace like cli.parse_args gives, for build_server."""
    values = {"host": "127.0.0.1", "port": 0, "data": None, "results_dir": "results",
              "log_file": "webserver.log", "workers": 1, "client_timeout": 5.0,
              "fsync": True, "max_connections": 100}
    values.update(overrides)
    return Namespace(**values)


# -- raw sockets, for what http.client would hide --------------------------------

def connect(live):
    return socket.create_connection(("127.0.0.1", live.port), timeout=5)


def recv_until(sock, marker, limit=1 << 20):
    """Bytes received until ``marker`` has arrived (or the connection ends)."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_exactly(sock, size):
    """The next ``size`` bytes (fewer only if the connection ends)."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock):
    """Everything received until the server closes the connection."""
    data = b""
    chunk = sock.recv(65536)
    while chunk:
        data += chunk
        chunk = sock.recv(65536)
    return data


def non_reading_client(live):
    """A connection with a tiny receive buffer, for a client that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", live.port))
    return sock


def connection_thread(sock, timeout=5.0):
    """The server thread of the connection ``sock`` is the client end of."""
    name = f"lestats-connection-{sock.getsockname()[1]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for thread in threading.enumerate():
            if thread.name == name and thread.is_alive():
                return thread
        time.sleep(0.01)   # the accept loop has not started it yet
    raise AssertionError(f"no thread {name}")


def descriptors_on(path):
    """This process's open descriptors on files under ``path`` (other
    threads' descriptors elsewhere cannot disturb the count)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue   # closed meanwhile
        if target.startswith(str(path)):
            found.add(int(name))
    return found
