"""Grade many submissions in one run: one CSV row each.

    python3 -m lestats grade SUBMISSION... [--edition 2025] [--out grades.csv] [--deep]

For each submission folder in turn: start its server the course's way
(``submissions``), wait until it listens, run the course's checker on it
(``check``, with its ``results/`` wiped as the course does and pylint on
its ``app/`` when pylint is importable), then the deep probes if asked,
and stop its whole process group.  A submission that does not start, hangs
or crashes gets its row with the reason, and the next one still runs: the
checker is bounded against any server, and past ``--time-limit`` the
server is stopped, which ends whatever was still waiting on it.

The CSV has a row per submission: its name, how it was started, its
status, the points of each suite, the course's total, the cases passed,
pylint's rating, the deep probes' findings and the wall time.  The server's
own output goes to ``<out>-logs/<name>.log``.  The terminal shows a
progress line per step and a short table at the end.
"""

import argparse
import csv
import io
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from . import deep
from .cases import SHIPPED_CASES, CaseError, Suite, load_suites
from .check import EditionResult, check_edition
from .client import DEADLINE, Client
from .course import EDITIONS, Edition
from .submissions import START_TIMEOUT, Server, SubmissionError, entry_point, place_course_csv
from ..data import SHIPPED_DATA

TIME_LIMIT = 900.0


@dataclass
class Row:   # pylint: disable=too-many-instance-attributes
    """One submission's line of the CSV."""

    submission: str
    started: str = ""
    status: str = ""
    points: Dict[str, int] = field(default_factory=dict)
    total: Optional[int] = None
    possible: Optional[int] = None
    passed: str = ""
    pylint: str = ""
    deep: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Settings:   # pylint: disable=too-many-instance-attributes
    """What applies to every submission of a run."""

    edition: Edition
    cases: Path
    course_csv: Path
    python: str
    logs: Path
    deep: bool = False
    deep_shutdown: bool = False
    pylint: bool = True
    start_timeout: float = START_TIMEOUT
    time_limit: float = TIME_LIMIT
    request_timeout: float = DEADLINE
    server_args: Sequence[str] = ()


def grade_one(folder: Path, settings: Settings, suites: List[Suite], out: TextIO) -> Row:
    """Start, check, probe and stop one submission; its row."""
    began = time.monotonic()
    row = Row(folder.name)
    placed = None
    server = None
    try:
        command, row.started = entry_point(folder, settings.python)
        command += settings.server_args
        placed = place_course_csv(folder, settings.course_csv)
        with open(settings.logs / f"{folder.name}.log", "w", encoding="utf-8") as log:
            server = Server(folder, command, log)
            _progress(out, folder, f"starting ({row.started})")
            server.wait_listening(settings.start_timeout)
            _run(folder, settings, suites, server, row, out=out)
    except SubmissionError as exc:
        row.status = f"did not start: {exc}{_last_line(settings.logs / f'{folder.name}.log')}"
    except OSError as exc:
        row.status = f"cannot be graded: {exc}"
    finally:
        if server is not None:
            server.stop()
        if placed is not None:
            placed.unlink()
        row.seconds = round(time.monotonic() - began, 1)
    return row


def _run(folder: Path, settings: Settings, suites: List[Suite], server: Server, row: Row, *,
         out: TextIO) -> None:
    """The checker (and the deep probes) against a listening server, within
    the time limit; fills ``row``."""
    fired = threading.Event()
    limit = threading.Timer(settings.time_limit, lambda: (fired.set(), server.stop()))
    limit.daemon = True
    limit.start()
    try:
        client = Client("127.0.0.1", server.listening_port, settings.request_timeout)
        app = folder / "app" if settings.pylint else None
        _progress(out, folder, f"checking on port {server.listening_port}"
                               f" ({settings.edition.name} rules)")
        result = check_edition(client, settings.cases, settings.edition, io.StringIO(),
                               app=app if app and app.is_dir() else None,
                               results_dir=folder / "results")
        _fill(row, result)
        if settings.deep and server.exit_status() is None:
            _progress(out, folder, "deep probes")
            findings = deep.run(client, suites, io.StringIO(), pid=server.listener,
                                results_dir=folder / "results",
                                shutdown=settings.deep_shutdown, edition=settings.edition)
            row.deep = deep.summary(findings)
    finally:
        limit.cancel()
    code = server.exit_status()
    if fired.is_set():
        row.status = f"stopped at the time limit ({settings.time_limit:g} s)"
    elif code is not None and not settings.deep_shutdown:
        row.status = (f"the server exited (status {code}) while being graded"
                      f"{_last_line(settings.logs / f'{folder.name}.log')}")
    else:
        row.status = "graded"


def _fill(row: Row, result: EditionResult) -> None:
    row.points = {suite.endpoint: suite.points for suite in result.suites}
    row.total, row.possible = result.total, result.possible
    row.passed = f"{sum(o.passed for o in result.outcomes)}/{len(result.outcomes)}"
    row.pylint = (f"{result.quality.score:.2f}" if result.quality.score is not None
                  else "not evaluated")
    if result.hang is not None:
        row.passed += f" (the course's checker would hang at {result.hang.name})"


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f"; its output ends: {lines[-1][:160]}" if lines else ""


def _progress(out: TextIO, folder: Path, step: str) -> None:
    print(f"  {folder.name}: {step}", file=out, flush=True)


def write_csv(path: Path, rows: Sequence[Row], suites: Sequence[str]) -> None:
    """The rows as CSV, one column per suite."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["submission", "started", "status", *suites, "total", "possible",
                         "cases passed", "pylint", "deep", "seconds"])
        for row in rows:
            writer.writerow([row.submission, row.started, row.status,
                             *(row.points.get(suite, "") for suite in suites),
                             "" if row.total is None else row.total,
                             "" if row.possible is None else row.possible,
                             row.passed, row.pylint, row.deep, row.seconds])


def print_table(rows: Sequence[Row], out: TextIO) -> None:
    """The short table: submission, total, seconds, status and deep findings."""
    width = max([len("submission")] + [len(row.submission) for row in rows])
    print(f"{'submission':{width}}  {'total':>7}  {'seconds':>7}  status", file=out)
    for row in rows:
        total = "-" if row.total is None else f"{row.total}/{row.possible}"
        print(f"{row.submission:{width}}  {total:>7}  {row.seconds:7.1f}  {row.status}"
              f"{'; deep: ' + row.deep if row.deep else ''}", file=out)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m lestats grade``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m lestats grade",
        description="Start each submission's server the course's way, run the course's "
                    "checker on it (and the deep probes), and write one CSV row per "
                    "submission.")
    parser.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION",
                        help="a submission's folder, in the course skeleton's layout")
    parser.add_argument("--edition", choices=sorted(EDITIONS), default="2025",
                        help="the course edition whose cases and rules apply (default: 2025)")
    parser.add_argument("--cases", type=Path,
                        help="the cases (default: the shipped ones of the edition)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"),
                        help="the CSV to write (default: grades.csv); the servers' output "
                             "goes to <out>-logs/")
    parser.add_argument("--course-csv", type=Path, default=SHIPPED_DATA,
                        help="the data put in a submission that has none (default: the "
                             "shipped rebuild of the course's CSV)")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python that runs the submissions (one with Flask, for "
                             "Flask apps; default: this one)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="an argument added to every submission's command, e.g. "
                             "--server-arg=--port=0 for lestats' run.py, which otherwise "
                             "binds 5000 (repeatable)")
    parser.add_argument("--deep", action="store_true", help="also run the deep probes")
    parser.add_argument("--deep-shutdown", action="store_true",
                        help="with --deep: also probe graceful_shutdown (last)")
    parser.add_argument("--no-pylint", action="store_true",
                        help="skip the pylint step (else run on app/ when pylint is "
                             "importable)")
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT,
                        help=f"seconds a server has to listen (default: {START_TIMEOUT:g})")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                        help=f"seconds a submission may take in all (default: {TIME_LIMIT:g})")
    parser.add_argument("--request-timeout", type=float, default=DEADLINE,
                        help=f"seconds one request may take (default: {DEADLINE:g})")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 once every submission has its row; 2 when the run cannot start."""
    args = build_parser().parse_args(argv)
    cases = args.cases or SHIPPED_CASES / args.edition
    problem = _problem(args, cases)
    if problem:
        print(f"lestats grade: error: {problem}", file=sys.stderr)
        return 2
    try:
        suites = load_suites(cases)
    except CaseError as exc:
        print(f"lestats grade: error: {exc}", file=sys.stderr)
        return 2
    logs = args.out.with_name(args.out.stem + "-logs")
    logs.mkdir(parents=True, exist_ok=True)
    settings = Settings(EDITIONS[args.edition], cases, args.course_csv, args.python, logs,
                        args.deep, args.deep_shutdown, not args.no_pylint, args.start_timeout,
                        args.time_limit, args.request_timeout, tuple(args.server_arg))
    rows = []
    for number, folder in enumerate(args.submissions, 1):
        print(f"[{number}/{len(args.submissions)}] {folder}", flush=True)
        rows.append(grade_one(folder.resolve(), settings, suites, sys.stdout))
        total = "-" if rows[-1].total is None else f"{rows[-1].total}/{rows[-1].possible}"
        print(f"  {rows[-1].submission}: {total} in {rows[-1].seconds:g} s: {rows[-1].status}",
              flush=True)
        write_csv(args.out, rows, [suite.endpoint for suite in suites])
    print_table(rows, sys.stdout)
    print(f"{len(rows)} rows in {args.out}; the servers' output in {logs}/")
    return 0


def _problem(args: argparse.Namespace, cases: Path) -> Optional[str]:
    """Why the run cannot start, or None."""
    missing = [str(folder) for folder in args.submissions if not folder.is_dir()]
    names = [folder.resolve().name for folder in args.submissions]
    bad_seconds = [f"{name} {value:g}" for name, value in (
        ("--start-timeout", args.start_timeout), ("--time-limit", args.time_limit),
        ("--request-timeout", args.request_timeout)) if not 0 < value <= 86400]
    problems = [
        (not cases.is_dir(), f"no cases at {cases}"),
        (bool(missing), f"not a folder: {', '.join(missing)}"),
        (len(set(names)) != len(names),
         "two submissions have the same folder name (the rows are named after it)"),
        (bool(bad_seconds), f"{', '.join(bad_seconds)}: give a number of seconds above 0"),
        (args.deep_shutdown and not args.deep, "--deep-shutdown goes with --deep"),
        (not args.course_csv.is_file(), f"no course CSV at {args.course_csv}"),
    ]
    return next((message for found, message in problems if found), None)
