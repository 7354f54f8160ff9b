"""The start-up step: at each size (19k rows, the checker's CSV; 200k and
1M rows made from it by ``lestats demo``'s scaler), in fresh processes
taking turns, each keeping its best of a few rounds:

* lestats (``python3 run.py``): from process start to its first answered
  request, and its peak RSS (``VmHWM``) then, its bytecode compiled first
  (as Python leaves it after any first run; with ``PYTHONDONTWRITEBYTECODE``
  set, every start would compile lestats' modules again, as no floor does);
* the fair floor (``FAIR_FLOOR``): a process that imports ``http.server``,
  reads the file with ``csv.DictReader`` in one pass summing ``Data_Value``
  per question (so that the loop is not empty), starts a
  ``ThreadingHTTPServer`` and answers one request: from process start to
  that answer, and its peak RSS;
* the bare pass (``BARE_PASS``): ``csv.DictReader`` over every row, doing
  nothing, from process start to exit.
"""

import compileall
import http.client
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ...data import load
from ..demo import scale
from ..soak import RUN_PY, ServerProcess, proc_status

BARE_PASS = ("import csv, sys\n"
             "with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:\n"
             "    for row in csv.DictReader(f):\n"
             "        pass\n")

FAIR_FLOOR = """\
import csv, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
sums = {}
with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:
    for row in csv.DictReader(f):
        try:
            value = float(row['Data_Value'])
        except ValueError:
            continue
        question = row['Question']
        sums[question] = sums.get(question, 0.0) + value
class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        body = b'{"questions": %d}' % len(sums)
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
print('port', server.server_address[1], flush=True)
server.serve_forever()
"""


def time_process(command: List[str]) -> float:
    """Seconds from starting ``command`` to its exit."""
    start = time.monotonic()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def first_answer(port: int) -> None:
    """One GET on a new connection, read whole."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/api/num_jobs")
        connection.getresponse().read()
    finally:
        connection.close()


def startup(data: Path, workdir: Path) -> Tuple[float, float]:
    """lestats: (seconds from process start to the first answer, peak RSS in MiB)."""
    start = time.monotonic()
    server = ServerProcess(data, workdir / "results-startup", workdir / "startup.log",
                           ["--workers", "1"])
    try:
        first_answer(server.port)
        elapsed = time.monotonic() - start
        peak = proc_status(server.pid).get("VmHWM", 0) / 1024
    finally:
        server.stop()
    return elapsed, peak


def fair_floor_startup(data: Path) -> Tuple[float, float]:
    """The fair floor: (seconds from process start to its one answer, peak RSS in MiB)."""
    start = time.monotonic()
    floor = subprocess.Popen(   # pylint: disable=consider-using-with
        [sys.executable, "-c", FAIR_FLOOR, str(data)], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, text=True)
    try:
        first_answer(int(floor.stdout.readline().split()[1]))
        elapsed = time.monotonic() - start
        peak = proc_status(floor.pid).get("VmHWM", 0) / 1024
    finally:
        floor.terminate()   # no handler: SIGTERM ends it at once
        floor.wait(timeout=60)
        floor.stdout.close()
    return elapsed, peak


def sized_file(source: Path, size: int, workdir: Path) -> Path:
    """``source`` itself for size 0, else a file of ``size`` rows made from it."""
    if size == 0:
        return source
    path = workdir / f"rows-{size}.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        scale(source, out, size, seed=size)
    return path


def measure_size(path: Path, rounds: int, workdir: Path) -> Dict[str, Any]:
    """One row of the start-up table: the three processes, taking turns."""
    best = {"lestats": float("inf"), "fair": float("inf"), "bare": float("inf")}
    peak = {"lestats": 0.0, "fair": 0.0}
    for _ in range(rounds):
        for name, measure in (("lestats", lambda: startup(path, workdir)),
                              ("fair", lambda: fair_floor_startup(path))):
            elapsed, rss = measure()
            best[name], peak[name] = min(best[name], elapsed), max(peak[name], rss)
        best["bare"] = min(best["bare"], time_process([sys.executable, "-c", BARE_PASS,
                                                       str(path)]))
    return {"file_mib": round(path.stat().st_size / 2**20, 1),
            "startup_s": round(best["lestats"], 3),
            "fair_floor_s": round(best["fair"], 3),
            "ratio_to_fair_floor": round(best["lestats"] / best["fair"], 2),
            "dictreader_pass_s": round(best["bare"], 3),
            "ratio_to_bare_pass": round(best["lestats"] / best["bare"], 2),
            "peak_rss_mib": round(peak["lestats"], 1),
            "fair_floor_peak_rss_mib": round(peak["fair"], 1)}


def step_sizes(source: Path, sizes: Sequence[int], workdir: Path,
               report: Dict[str, Any]) -> Dict[int, Path]:
    """Start-up and peak RSS at each size (0: ``source`` itself), against
    the fair floor and the bare pass; the files made, by size."""
    compileall.compile_dir(str(RUN_PY.parent / "lestats"), quiet=1)
    files = {}
    rows = {}
    for size in sizes:
        files[size] = path = sized_file(source, size, workdir)
        label = size or load(path).rows
        rows[label] = measure_size(path, 2 if size >= 1_000_000 else 3, workdir)
    report["startup"] = rows
    return files
