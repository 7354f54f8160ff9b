"""The command line: ``python3 run.py`` / ``python3 -m lestats``.

``serve`` loads the data, wires data -> pool -> jobs -> HTTP server, serves
until SIGINT or SIGTERM, then drains the accepted jobs and returns 0.  A
problem found before serving (bad option, bad data, results directory in
use, port in use) is one line on stderr and exit status 2.

``python3 -m lestats TOOL ...`` runs one of the tools instead of the server
(see ``TOOLS``); a tool is imported only when it is asked for.
"""

import argparse
import errno
import importlib
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Mapping, NoReturn, Optional, Tuple, Type

from . import logs
from .data import DataError, DataIndex, find_data_file, load
from .jobs import JobManager
from .pool import ThreadPool
from .resultsdir import missing_guarantees
from .storage import JobStore, StoreError
from .watch.events import EventBus
from .watch.step import Stepper
from .watch.steplocks import steppable, steppable_jobs
from .watch.trace import TraceWriter
from .connections import DEFAULT_MAX_CONNECTIONS, fit_connection_cap
from .http11 import DEFAULT_CLIENT_TIMEOUT
from .webserver import StatsServer

log = logging.getLogger(__name__)

EXIT_USAGE = 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The bytes the drain's thread sends the main thread when the drain ends;
# signal numbers are 1 to 64, so neither is taken for a signal.
DRAINED = 0           # every accepted job has finished
DRAIN_TIMED_OUT = 255  # --drain-timeout ended it first
SHIPPED_NOTE = ("the shipped data: the course's CSV rebuilt from its published outputs,"
                " synthetic rows with the course's means")

# python3 -m lestats NAME ...: the tools that are not the server.
TOOLS = {
    "check": "lestats.grade.check",
    "grade": "lestats.grade.grade",
    "bench": "lestats.tools.bench",
    "soak": "lestats.tools.soak",
    "demo": "lestats.tools.demo",
    "lab": "lestats.lab",
    "pyz": "lestats.tools.pyz",
}


class StartError(Exception):
    """Start-up cannot go on; the message is the one line shown to the user."""


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none to show
    (the help then says what happens without the option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: Callable[[str], Any], low: float, inclusive: bool = True,
            high: Optional[float] = None) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, at least (or above) ``low``,
    at most ``high``."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or (value < low if inclusive else value <= low) or (
                high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else (
                f"at least {low}" if inclusive else f"more than {low}")
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
        return value
    convert.__name__ = kind.__name__
    return convert


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The options of API.md."""
    parser = Parser(prog="lestats", formatter_class=DefaultsFormatter,
                    description="Serve the Le Stats Sportif statistics API.  "
                                "Tools: python3 -m lestats {check,grade,bench,soak,demo,lab,pyz} --help.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on")
    add("--port", type=_number(int, 0, high=65535), default=5000,
        help="port to listen on (0: any free port)")
    add("--data", help="survey CSV (default: $LESTATS_DATA, then "
        "./nutrition_activity_obesity_usa_subset.csv, then the data set shipped in data/)")
    add("--results-dir", default="results", help="where results and the journal are written")
    add("--log-file", default="webserver.log", help="the log file (rotated)")
    add("--workers", type=_number(int, 1),
        help="worker threads (default: $TP_NUM_OF_THREADS, then the CPU count)")
    add("--fsync", action="store_true",
        help="have each accepted job on disk before its id is given out"
        " (survives a power cut, not only a killed server; slower)")
    add("--client-timeout", type=_number(float, 0, inclusive=False),
        default=DEFAULT_CLIENT_TIMEOUT,
        help="seconds a request may take to arrive and its answer to leave")
    add("--max-connections", type=_number(int, 1), default=DEFAULT_MAX_CONNECTIONS,
        help="open connections at most")
    add("--max-queued", type=_number(int, 1), default=100_000,
        help="jobs waiting at most; more are answered 503 with Retry-After")
    add("--min-free-mb", type=_number(float, 0), default=100.0,
        help="refuse new jobs (507) when the results directory has less free space")
    add("--keep-results", type=_number(int, 1), metavar="N",
        help="expire the oldest results beyond the newest N: their files become a"
        " shared one-line mark, and get_results answers 410 (default: keep all)")
    add("--drain-timeout", type=_number(float, 0, inclusive=False), default=300.0,
        help="seconds the drain after SIGTERM/SIGINT may take; unfinished jobs stay"
        " in the journal and run at the next start")
    add("--slow-motion", type=_number(float, 0), default=0.0, metavar="MS",
        help="teaching: every job takes at least MS milliseconds, to watch the pool at /")
    add("--trace", metavar="FILE",
        help="teaching: write the pool's events to FILE as Chrome Trace Event JSON")
    add("--broken-pool-for-teaching", metavar="NAME",
        help="teaching only, DELIBERATELY BROKEN: serve with the bug lab's broken pool NAME"
        " (python3 -m lestats lab lists the mistakes) to watch its mistake on the live"
        " page; the server then loses, stalls or wastes work as that lab shows")
    add("--step", action="store_true",
        help="teaching: start in step mode: the pool's threads stop at each synchronization"
        " point until let go from the live page at / (which can also turn it on and off)")
    return parser.parse_args(argv)


def worker_count(option: Optional[int], environ: Mapping[str, str]) -> int:
    """--workers, else $TP_NUM_OF_THREADS, else the CPU count."""
    if option is not None:
        return option
    text = environ.get("TP_NUM_OF_THREADS", "").strip()
    if not text:
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        raise StartError(f"TP_NUM_OF_THREADS must be a whole number, not {text!r}") from None
    if count < 1:
        raise StartError(f"TP_NUM_OF_THREADS must be at least 1, not {count}")
    return count


def pool_class(broken: Optional[str]) -> Tuple[Type[ThreadPool], Type[JobManager]]:
    """ThreadPool and JobManager; with --broken-pool-for-teaching NAME, the
    bug lab's deliberately broken pool (or job layer) NAME instead (the lab
    is imported only then)."""
    if broken is None:
        return ThreadPool, JobManager
    lab = importlib.import_module("lestats.lab.broken.pools")
    layers = importlib.import_module("lestats.lab.broken.ids").FOR_THE_SERVER
    pools = lab.FOR_THE_SERVER
    if broken not in pools and broken not in layers:
        why = lab.NOT_FOR_THE_SERVER.get(broken, f"no broken pool is called {broken!r}")
        raise StartError(f"--broken-pool-for-teaching: {why}; the broken pools are:"
                         f" {', '.join([*pools, *layers])}")
    log.warning("DELIBERATELY BROKEN pool %r in use, for teaching only: this server"
                " does not work correctly", broken)
    return pools.get(broken, ThreadPool), layers.get(broken, JobManager)


class Service:
    """The running parts, wired in dependency order and stopped in reverse:
    the event bus (and trace), step mode, the pool, the job manager, the
    HTTP server.  The pool and the job manager get step mode's Lock and
    Conditions (``lestats.watch.steplocks``), so that the live page can
    turn it on; while it is off they cost a flag test each."""

    def __init__(self, index: DataIndex, args: argparse.Namespace,
                 environ: Mapping[str, str]):
        workers = worker_count(args.workers, environ)
        pool, jobs = pool_class(args.broken_pool_for_teaching)
        self.events = EventBus()
        try:
            self.trace = TraceWriter(self.events, args.trace) if args.trace else None
        except OSError as exc:
            raise StartError(f"--trace {args.trace}: {exc.strerror or exc}") from exc
        self.stepper = Stepper(self.events)
        self.pool = steppable(pool)(workers, max_queued=args.max_queued, events=self.events,
                                    stepper=self.stepper)
        try:
            self.jobs = jobs(
                index, self.pool, JobStore(args.results_dir, fsync=args.fsync,
                                           min_free_mb=args.min_free_mb),
                events=self.events, slow_motion_ms=args.slow_motion,
                keep_results=args.keep_results)
            steppable_jobs(self.jobs, self.stepper)
            self.jobs.start()
        except StoreError as exc:
            self._stop_teaching()
            self.pool.shutdown()
            raise StartError(str(exc)) from exc
        max_connections, note = fit_connection_cap(args.max_connections)
        if note:
            log.warning("%s", note)
        try:
            self.server = StatsServer((args.host, args.port), self.jobs, args.client_timeout,
                                      max_connections)
        except OSError as exc:
            self.jobs.close()
            self._stop_teaching()
            self.pool.shutdown()
            hint = "" if exc.errno != errno.EADDRINUSE else (
                f"; another program has port {args.port} (on macOS, AirPlay Receiver often"
                " holds 5000): choose another with --port")
            raise StartError(f"cannot listen on {args.host}:{args.port}: "
                             f"{exc.strerror or exc}{hint}") from exc
        self.serving = threading.Thread(target=self.server.serve_forever, name="lestats-http")
        log.info("listening on %s:%d with %d workers, results in %s",
                 args.host, self.server.server_port, workers, args.results_dir)

    def stop(self, wait_for_requests: bool) -> None:
        """Stop accepting connections, end the event streams, let requests in
        flight be answered (unless told not to wait), then close everything."""
        self.server.shutdown()
        self.serving.join()
        self.events.close()
        if wait_for_requests:
            self.server.close_connections()
        if self.trace is not None:
            self.trace.close()
        self.jobs.close()
        self.server.server_close()

    def _stop_teaching(self) -> None:
        self.events.close()
        if self.trace is not None:
            self.trace.close()


class SignalWaiter:
    """Waits in the main thread for SIGINT/SIGTERM or for the drain to end.

    The signals are caught with ``signal.set_wakeup_fd``: Python's C-level
    handler writes the signal's number to a socket in whatever thread the
    kernel delivers it to, so no signal is lost, and the main thread sleeps
    in ``select()`` on the other end (not in a lock, which a signal delivered
    to another thread would never interrupt).  The drain's thread writes its
    outcome (DRAINED or DRAIN_TIMED_OUT) to the same socket, so the main
    thread learns it the way it learns of a signal, and no state is shared.
    Use it as a context manager in the main thread: the previous handlers
    are put back on exit.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous: dict = {}
        self._previous_fd = -1
        self._pending: List[int] = []

    def __enter__(self) -> "SignalWaiter":
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno())
        for signum in STOP_SIGNALS:
            # The handler does nothing: the number arrives on the socket.
            self._previous[signum] = signal.signal(signum, lambda *_: None)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def wake(self, outcome: int) -> None:
        """Tell the waiting main thread how the drain ended (any thread):
        DRAINED or DRAIN_TIMED_OUT."""
        try:
            self._writer.send(bytes([outcome]))
        except OSError:   # closed: nobody waits any more (a second signal ended the drain)
            pass

    def wait(self) -> int:
        """The next signal number, or how the drain ended (see ``wake``)."""
        while not self._pending:
            select.select([self._reader], [], [])
            try:
                self._pending.extend(self._reader.recv(64))
            except BlockingIOError:
                continue
        return self._pending.pop(0)


def drain_in_background(jobs: JobManager, timeout: float, signals: SignalWaiter) -> None:
    """Wait, in a thread of its own, for the accepted jobs to finish (at
    most ``timeout`` seconds), then send the outcome to the main thread on
    the signal socket, where a second signal may arrive first."""
    def drain() -> None:
        signals.wake(DRAINED if jobs.drain(timeout) else DRAIN_TIMED_OUT)

    threading.Thread(target=drain, name="lestats-drain", daemon=True).start()


def serve_until_signalled(service: Service, drain_timeout: float, banner: str) -> None:
    """Serve until SIGINT or SIGTERM, then stop taking jobs and drain the
    accepted ones, at most ``drain_timeout`` seconds; a second signal ends
    the drain at once.  Jobs left unfinished stay in the journal and run at
    the next start.  ``banner`` goes to stderr once the handlers are in
    place.  Must run in the main thread."""
    with SignalWaiter() as signals:
        service.serving.start()
        print(banner, file=sys.stderr, flush=True)
        signum = signals.wait()
        jobs = service.jobs
        service.stepper.close()   # no thread may stay stopped: the drain must end
        name, count = signal.Signals(signum).name, jobs.num_jobs()
        log.info("signal %s received: draining %d job(s), at most %g s", name, count,
                 drain_timeout)
        _say(f"{name}: draining {count} job(s), at most {drain_timeout:g} s;"
             f" {'Ctrl-C again' if signum == signal.SIGINT else 'a second signal'} stops now"
             " (unfinished jobs stay in the journal for the next start)")
        jobs.shutdown()
        drain_in_background(jobs, drain_timeout, signals)
        signum = signals.wait()
        if signum in (DRAINED, DRAIN_TIMED_OUT):
            if signum == DRAINED:
                _say("drain done: every accepted job has finished; stopped")
            else:
                log.warning("drain timeout after %g s: %d unfinished job(s) stay in the"
                            " journal and run at the next start", drain_timeout,
                            jobs.num_jobs())
                _say(f"drain timeout after {drain_timeout:g} s: {jobs.num_jobs()} unfinished"
                     " job(s) stay in the journal; stopped")
        else:
            log.warning("second signal %s: stopping now; %d unfinished job(s) stay in"
                        " the journal", signal.Signals(signum).name, jobs.num_jobs())
            _say(f"{signal.Signals(signum).name} again: stopped now; {jobs.num_jobs()}"
                 " unfinished job(s) stay in the journal for the next start")
        # After a second signal, stop at once; else answer the requests in flight.
        service.stop(wait_for_requests=signum in (DRAINED, DRAIN_TIMED_OUT))
    log.info("stopped")


def _say(line: str) -> None:
    """One line on the terminal (stderr), for whoever pressed Ctrl-C; a
    terminal or pipe that is gone does not stop the drain."""
    try:
        print(f"lestats: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    """Run the server, or the tool named first; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    return serve(argv)


def serve(argv: List[str]) -> int:
    """Run the server; return the exit status."""
    args = parse_args(argv)
    missing = missing_guarantees()
    if missing:
        _error(f"this platform lacks {'; '.join(missing)}; lestats serves on Linux, macOS"
               " and other POSIX systems (on Windows, use WSL)")
        return EXIT_USAGE
    data_path = find_data_file(args.data, os.environ, Path.cwd())
    try:
        index = load(data_path)
        handler = logs.configure(args.log_file)
    except DataError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"--log-file {args.log_file}: {exc.strerror or exc}")
        return EXIT_USAGE
    try:
        log.info("data %s: %d rows, %d skipped (empty or non-numeric Data_Value),"
                 " %d questions%s", index.source, index.rows, index.skipped,
                 len(index.questions), f" -- {SHIPPED_NOTE}" if index.is_shipped else "")
        try:
            service = Service(index, args, os.environ)
        except StartError as exc:
            _error(str(exc))
            return EXIT_USAGE
        notes = [note for note in (service.jobs.start_note, _slow_motion_note(args),
                                   _step_note(args)) if note]
        for note in notes:
            log.info("%s", note)
        broken = _broken_pool_note(args)   # logged as a warning by pool_class
        port = service.server.server_port
        banner = "\n".join(logs.escape(line) for line in [
            f"lestats: serving {index.source} on http://{args.host}:{port}/"
            f"{f' ({SHIPPED_NOTE})' if index.is_shipped else ''}",
            *(f"lestats: {note}" for note in [*notes, broken] if note)])
        if args.step:
            service.stepper.start()
        serve_until_signalled(service, args.drain_timeout, banner)
        return 0
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()


def _error(message: str) -> None:
    """The one line that says why start-up stops (escaped: a path may hold
    a newline or a terminal's escape sequences)."""
    print(f"lestats: error: {logs.escape(message)}", file=sys.stderr)


def _broken_pool_note(args: argparse.Namespace) -> Optional[str]:
    if args.broken_pool_for_teaching is None:
        return None
    return (f"WARNING: DELIBERATELY BROKEN pool {args.broken_pool_for_teaching!r}"
            " (--broken-pool-for-teaching): for teaching only, see the live page")


def _step_note(args: argparse.Namespace) -> Optional[str]:
    if not args.step:
        return None
    return ("step mode (teaching): the pool's threads stop at each synchronization point;"
            " let them go from the live page")


def _slow_motion_note(args: argparse.Namespace) -> Optional[str]:
    if not args.slow_motion:
        return None
    return f"slow motion: every job takes at least {args.slow_motion:g} ms (teaching)"
