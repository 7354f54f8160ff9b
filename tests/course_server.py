"""A small server of the course's API, written the way the course skeleton
has students write it, with one deliberate mistake chosen on the command
line: what the deep probes must find, in a server that is not lestats.

    python3 tests/course_server.py [--port 0] [--mistake NAME] [--results-dir results]
                                   [--workers 2] [--log-file webserver.log]
                                   [--job-seconds 0]

It is what a student's Flask app is, on the standard library: a
ThreadingHTTPServer, a pool of worker threads taking jobs from a
``queue.Queue``, a job counter, a status per job, results written to
``results/job_id_N.json`` and read back by ``get_results``, and a log line
per request (the course asks for one).  It prints "listening on
http://127.0.0.1:PORT/" on standard error once it serves.

Mistakes (the default, "none", makes none of them):

* ``unlocked-ids``: the counter is read, the job queued and logged, and
  only then the counter increased, with no lock: two requests at once can
  get the same id;
* ``write-in-place``: a result is written under its final name, and
  ``get_results`` calls a job done as soon as its file exists;
* ``status-after-queue``: the job is queued and logged before its status
  is set to running, so a quick worker's "done" can be overwritten.
"""

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# pylint: disable=wrong-import-position
from lestats.data import SHIPPED_DATA, load                 # noqa: E402
from lestats.statistics import QueryError, prepare          # noqa: E402

MISTAKES = ("none", "unlocked-ids", "write-in-place", "status-after-queue")
log = logging.getLogger("course_server")


class Course:   # pylint: disable=too-many-instance-attributes
    """The app: data, pool, counter, statuses, results folder."""

    def __init__(self, mistake, results, workers, job_seconds=0.0):
        self.mistake = mistake
        self.job_seconds = job_seconds   # extra time per job, as a skeleton's pandas takes
        self.index = load(SHIPPED_DATA)
        self.results = Path(results)
        self.results.mkdir(exist_ok=True)
        self.lock = threading.Lock()
        self.counter = 1
        self.status = {}
        self.jobs = queue.Queue()
        self.closed = False
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def submit(self, name, body):
        """Queue a job; its id."""
        query = prepare(self.index, name, body)
        if self.mistake == "unlocked-ids":
            number = self.counter
            self.enqueue(number, query)
            self.counter = number + 1
            return number
        with self.lock:
            if self.closed:
                raise RuntimeError("shutting down")
            number = self.counter
            self.counter += 1
            self.enqueue(number, query)
        return number

    def enqueue(self, number, query):
        """Hand the job to the workers and set its status (in the mistake's order)."""
        if self.mistake == "status-after-queue":
            self.jobs.put((number, query))
            log.info("job_id_%d queued", number)
            self.status[number] = "running"
            return
        self.status[number] = "running"
        self.jobs.put((number, query))
        log.info("job_id_%d queued", number)

    def work(self):
        """A worker: take a job, compute, write its result, mark it done."""
        while True:
            job = self.jobs.get()
            if job is None:
                return
            number, query = job
            if self.job_seconds:
                time.sleep(self.job_seconds)   # the work of a slower statistic, not a wait
            result = query.compute(self.index)
            final = self.results / f"job_id_{number}.json"
            if self.mistake == "write-in-place":
                with open(final, "w", encoding="utf-8") as out:
                    json.dump(result, out)
            else:
                temporary = final.with_suffix(".tmp")
                with open(temporary, "w", encoding="utf-8") as out:
                    json.dump(result, out)
                os.replace(temporary, final)
            self.status[number] = "done"

    def result(self, number):
        """(status, data) of job ``number``; KeyError if unknown."""
        path = self.results / f"job_id_{number}.json"
        if self.mistake == "write-in-place":
            if path.exists():
                with open(path, encoding="utf-8") as source:
                    return "done", json.load(source)
            return self.status[number], None
        if self.status[number] == "done":
            return "done", json.loads(path.read_text(encoding="utf-8"))
        return self.status[number], None

    def shutdown(self):
        """Accept nothing more; the workers leave once the queue is empty."""
        with self.lock:
            if not self.closed:
                self.closed = True
                for _ in self.threads:
                    self.jobs.put(None)

    def unfinished(self):
        """Jobs not done yet."""
        return sum(status != "done" for status in list(self.status.values()))


class Handler(BaseHTTPRequestHandler):
    """The routes of the course's API."""

    app: Course = None   # set by main

    def answer(self, code, value):
        """Send ``value`` as JSON."""
        body = json.dumps(value).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):   # pylint: disable=invalid-name
        """A statistic."""
        log.info("POST %s", self.path)
        name = self.path.rsplit("/", 1)[-1]
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if not isinstance(body, dict):
                raise QueryError("the body is not an object")
            number = self.app.submit(name, body)
        except RuntimeError:
            self.answer(503, {"status": "error", "reason": "shutting down"})
        except (ValueError, QueryError, KeyError) as exc:
            self.answer(400, {"status": "error", "reason": str(exc)})
        else:
            self.answer(200, {"job_id": f"job_id_{number}"})

    def do_GET(self):   # pylint: disable=invalid-name
        """Results, counts, shutdown."""
        log.info("GET %s", self.path)
        if self.path.startswith("/api/get_results/job_id_"):
            number = self.path.rsplit("_", 1)[-1]
            try:
                status, data = self.app.result(int(number) if number.isdigit() else 0)
            except KeyError:
                self.answer(404, {"status": "error", "reason": "Invalid job_id"})
            except (OSError, ValueError) as exc:   # a result file that cannot be read
                self.answer(500, {"status": "error", "reason": str(exc)})
            else:
                self.answer(200, {"status": status, "data": data} if data is not None
                            else {"status": status})
        elif self.path == "/api/num_jobs":
            self.answer(200, {"num_jobs": self.app.unfinished()})
        elif self.path == "/api/jobs":
            statuses = sorted(dict(self.app.status).items())
            self.answer(200, {"status": "done", "data": [{f"job_id_{number}": status}
                                                         for number, status in statuses]})
        elif self.path == "/api/graceful_shutdown":
            self.app.shutdown()
            self.answer(200, {"status": "running" if self.app.unfinished() else "done"})
        else:
            self.answer(404, {"status": "error", "reason": "Invalid job_id"})

    def log_message(self, *_args):   # pylint: disable=arguments-differ
        """Quiet: the log file has every request."""


def main():
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLASK_RUN_PORT", 0)))
    parser.add_argument("--mistake", choices=MISTAKES, default="none")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-file", default="webserver.log")
    parser.add_argument("--job-seconds", type=float, default=0.0,
                        help="extra seconds each job takes (a course skeleton's jobs are slower)")
    args = parser.parse_args()
    logging.basicConfig(filename=args.log_file, level=logging.INFO)
    Handler.app = Course(args.mistake, args.results_dir, args.workers, args.job_seconds)
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
