"""The command line: ``python3 run.py`` / ``python3 -m lestats``.

``python3 -m lestats TOOL ...`` runs one of the tools instead of the server
(see ``TOOLS``); a tool is imported only when it is asked for.

``main`` loads the data, wires data -> pool -> jobs -> HTTP server, serves
until SIGINT or SIGTERM, then drains the accepted jobs and returns 0.  A
problem found before serving (bad data, port in use, bad option) is one line
on stderr and exit status 2.
"""

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import List, Mapping, Optional

from . import logs
from .data import DataError, DataIndex, find_data_file, load
from .jobs import AlreadyShuttingDown, JobManager
from .pool import ThreadPool
from .storage import JobStore
from .webserver import DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, StatsServer

log = logging.getLogger(__name__)

EXIT_USAGE = 2

# python3 -m lestats NAME ...: the tools that are not the server.
TOOLS = {
    "check": "lestats.tools.check",
    "bench": "lestats.tools.bench",
    "soak": "lestats.tools.soak",
    "demo": "lestats.tools.demo",
    "pyz": "lestats.tools.pyz",
}


class StartError(Exception):
    """Start-up cannot go on; the message is the one line shown to the user."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The options of API.md."""
    parser = argparse.ArgumentParser(
        prog="lestats", description="Serve the Le Stats Sportif statistics API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--data", help="survey CSV (default: $LESTATS_DATA, then "
                        "./nutrition_activity_obesity_usa_subset.csv, then the demo data)")
    parser.add_argument("--results-dir", default="results", help="where results are written")
    parser.add_argument("--log-file", default="webserver.log", help="the log file")
    parser.add_argument("--workers", type=int,
                        help="worker threads (default: $TP_NUM_OF_THREADS, then the CPU count)")
    parser.add_argument("--fsync", action="store_true",
                        help="have each accepted job on disk before its id is given out"
                        " (survives a power cut, not only a killed server; slower)")
    parser.add_argument("--client-timeout", type=float, default=DEFAULT_CLIENT_TIMEOUT,
                        help="seconds a request may take to arrive, and a kept-alive"
                        " connection may stay idle")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="open connections at most; more are answered 503")
    return parser.parse_args(argv)


def worker_count(option: Optional[int], environ: Mapping[str, str]) -> int:
    """--workers, else $TP_NUM_OF_THREADS, else the CPU count."""
    if option is not None:
        count, origin = option, "--workers"
    elif environ.get("TP_NUM_OF_THREADS"):
        origin = "TP_NUM_OF_THREADS"
        try:
            count = int(environ["TP_NUM_OF_THREADS"])
        except ValueError:
            raise StartError(f"{origin} must be a whole number, "
                             f"not {environ['TP_NUM_OF_THREADS']!r}") from None
    else:
        return os.cpu_count() or 1
    if count < 1:
        raise StartError(f"{origin} must be at least 1, not {count}")
    return count


def build_server(index: DataIndex, args: argparse.Namespace,
                 environ: Mapping[str, str]) -> StatsServer:
    """Wire the pool, the job manager and the HTTP server (bound, not yet
    serving).  Raise StartError if the results directory or port is unusable."""
    workers = worker_count(args.workers, environ)
    pool = ThreadPool(workers)
    try:
        jobs = JobManager(index, pool, JobStore(args.results_dir, fsync=args.fsync))
    except OSError as exc:
        pool.shutdown()
        raise StartError(f"results directory {args.results_dir}: {exc.strerror or exc}") from exc
    try:
        server = StatsServer((args.host, args.port), jobs, args.client_timeout,
                             args.max_connections)
    except OSError as exc:
        pool.shutdown()
        raise StartError(f"cannot listen on {args.host}:{args.port}: "
                         f"{exc.strerror or exc}") from exc
    log.info("listening on %s:%d with %d workers, results in %s",
             args.host, server.server_port, workers, args.results_dir)
    return server


def serve_until_signalled(server: StatsServer, banner: str) -> None:
    """Serve until SIGINT or SIGTERM, then stop taking jobs, finish the
    accepted ones and close the server.  ``banner`` goes to stderr once the
    signal handlers are in place, so whoever waits for it may signal at once.
    Must run in the main thread; the previous handlers are put back on return."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda number, _frame: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    serving = threading.Thread(target=server.serve_forever, name="lestats-http")
    serving.start()
    print(banner, file=sys.stderr, flush=True)
    try:
        stop.wait()
        log.info("signal received: draining the accepted jobs")
        try:
            server.jobs.shutdown()
        except AlreadyShuttingDown:
            pass
        server.jobs.drain()   # GETs are still answered meanwhile
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("stopped")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the server, or the tool named first; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    return serve(argv)


def serve(argv: List[str]) -> int:
    """Run the server; return the exit status."""
    args = parse_args(argv)
    data_path = find_data_file(args.data, os.environ, Path.cwd())
    try:
        index = load(data_path)
        handler = logs.configure(args.log_file)
    except (DataError, OSError) as exc:
        print(f"lestats: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        log.info("data %s: %d rows, %d skipped (empty or non-numeric Data_Value),"
                 " %d questions%s", index.source, index.rows, index.skipped,
                 len(index.questions), " -- SYNTHETIC demo data" if index.is_demo else "")
        try:
            server = build_server(index, args, os.environ)
        except StartError as exc:
            print(f"lestats: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        serve_until_signalled(
            server, f"lestats: serving {index.source} on http://{args.host}:"
                    f"{server.server_port}/{' (synthetic demo data)' if index.is_demo else ''}")
        return 0
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
