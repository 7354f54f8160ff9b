"""A standard-library stand-in for the course checker.

    python3 -m lestats check CASES_DIR [--url 127.0.0.1:5000] [--timeout SECONDS]

CASES_DIR is in the course layout: ``<endpoint>/input/in-N.json`` holds a
request body and ``<endpoint>/output/out-N.json`` the expected ``data``.  Like
the course checker, each request uses a new connection; a job is polled
every 0.2 s until it is done or its time limit passes (by default the
course's: 1 s per job for the 2024 cases, 3 s for the 2025 ones); numbers
match within an absolute 0.01 and keys must match exactly (their order is not
checked).  Each endpoint suite is worth 10 points, shared equally among its
cases; the course's score rounds each suite's points to a whole number.

The server is asked once before any case runs; if it cannot be reached, the
run stops there.  A suite stops after MAX_CONSECUTIVE_TIMEOUTS timeouts in a
row, and its remaining cases count as failed, so a server whose jobs never
finish is graded in seconds.
"""

import argparse
import http.client
import json
import math
import socket
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_PORT = 5000                         # the course skeleton's
POLL_INTERVAL = 0.2
TOLERANCE = 0.01
POINTS_PER_SUITE = 10
EDITION_TIMEOUTS = {"2024": 1.0, "2025": 3.0}   # the course checker's limit per job
OTHER_TIMEOUT = 3.0
MAX_CONSECUTIVE_TIMEOUTS = 3
PROBE_PATH = "/api/num_jobs"                # cheap, and in the course's API
# What the course's final score counts beyond the endpoint suites, by edition.
FINAL_SCORE_NOTES = {
    "2025": "the 2025 checker's final score is out of 100: 10 of its points come from "
            "checks that are not among these cases",
}


class CheckError(Exception):
    """The run cannot start (bad argument, no cases, server unreachable);
    the message is the one line shown to the user."""


def first_difference(expected: Any, actual: Any, where: str = "data") -> Optional[str]:
    """Where ``actual`` first differs from ``expected``, or None if it matches
    (numbers within TOLERANCE, dict keys exactly, lists in order)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return _dict_difference(expected, actual, where)
    if isinstance(expected, list) and isinstance(actual, list):
        return _list_difference(expected, actual, where)
    if _same_value(expected, actual):
        return None
    return f"{where}: expected {expected!r}, got {actual!r}"


def _same_value(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(expected - actual) <= TOLERANCE
    return expected == actual


def _dict_difference(expected: dict, actual: dict, where: str) -> Optional[str]:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        return f"{where}: missing keys {missing[:3]}, unexpected keys {extra[:3]}"
    for key in expected:
        difference = first_difference(expected[key], actual[key], f"{where}[{key!r}]")
        if difference:
            return difference
    return None


def _list_difference(expected: list, actual: list, where: str) -> Optional[str]:
    if len(expected) != len(actual):
        return f"{where}: expected {len(expected)} items, got {len(actual)}"
    for i, (want, got) in enumerate(zip(expected, actual)):
        difference = first_difference(want, got, f"{where}[{i}]")
        if difference:
            return difference
    return None


def parse_url(text: str) -> Tuple[str, int]:
    """(host, port) of a ``--url``: ``host``, ``host:port`` or
    ``http://host:port``, with or without a final ``/``; the port defaults to
    5000.  Raises CheckError for another scheme, a path, or a bad port."""
    parts = urlsplit(text if "://" in text else "http://" + text)
    if parts.scheme != "http":
        raise CheckError(f"--url {text}: scheme {parts.scheme!r} is not supported, only http://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise CheckError(f"--url {text}: give the server only (host:port), without a path")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        port = DEFAULT_PORT
    if not 0 < port < 65536:
        raise CheckError(f"--url {text}: the port must be a number from 1 to 65535")
    if not parts.hostname:
        raise CheckError(f"--url {text}: no host")
    return parts.hostname, port


def edition_of(cases_dir: Path) -> Optional[str]:
    """"2024" or "2025" when the cases directory's name says so, else None."""
    name = cases_dir.resolve().name
    found = [edition for edition in EDITION_TIMEOUTS if edition in name]
    return found[0] if len(found) == 1 else None


def default_timeout(cases_dir: Path) -> float:
    """The course checker's time limit per job for these cases."""
    return EDITION_TIMEOUTS.get(edition_of(cases_dir) or "", OTHER_TIMEOUT)


# The course checker rounds each suite's points to a whole number.  Its code is
# not at hand here, so whether it rounds halves up or to even (Python's round(),
# banker's rounding) cannot be known.  In the published cases it matters only for
# the 20-case suites with an odd number passed (5/20 is 2.5 points: 3 rounded
# half up, 2 rounded to even).
# We round half up, the usual reading of "rounded to whole numbers", on exact
# Fractions so that a half is exactly a half.
def round_half_up(value: Fraction) -> int:
    """``value`` rounded to the nearest whole number, halves upwards."""
    return math.floor(value + Fraction(1, 2))


@dataclass
class Outcome:
    """One case: its name, the first difference (None when it passed), whether
    its first poll found the job still running, and whether it failed because
    the server did not answer or finish in time."""

    name: str
    failure: Optional[str]
    first_poll_running: bool = False
    timed_out: bool = False


@dataclass
class SuiteResult:
    """One endpoint suite: an outcome per case, in case order; the last
    ``skipped`` were not run (the suite stopped after repeated timeouts) and
    count as failed."""

    name: str
    outcomes: List[Outcome]
    skipped: int = 0

    @property
    def passed(self) -> int:
        """How many cases passed."""
        return sum(outcome.failure is None for outcome in self.outcomes)

    @property
    def points(self) -> Fraction:
        """POINTS_PER_SUITE shared equally among the cases, exactly."""
        if not self.outcomes:
            return Fraction(0)
        return Fraction(POINTS_PER_SUITE * self.passed, len(self.outcomes))

    @property
    def course_points(self) -> int:
        """The points as the course counts them: a whole number."""
        return round_half_up(self.points)


class Client:
    """HTTP against one server, a new connection per request (as the course's
    ``requests`` calls do); a request not answered within ``timeout`` seconds
    raises socket.timeout."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host = host
        self.port = port
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The server's URL, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def request(self, method: str, path: str, body: Any = None) -> Tuple[int, bytes]:
        """Send one request; return (status, raw body)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        """Send one request; return (status, decoded JSON body)."""
        status, raw = self.request(method, path, body)
        return status, json.loads(raw.decode("utf-8"))

    def probe(self) -> None:
        """Raise CheckError unless the server answers HTTP (any status)."""
        try:
            self.request("GET", PROBE_PATH)
        except (OSError, http.client.HTTPException) as exc:
            raise CheckError(f"cannot reach {self.url}: "
                             f"{str(exc) or type(exc).__name__}") from None


Case = Tuple[str, Any, Any]
"""(name, request body, expected data)."""


def run_case(client: Client, endpoint: str, case: Case, timeout: float) -> Outcome:
    """POST one case, poll its job until it is no longer running, compare its data."""
    name, body, expected = case
    try:
        status, answer = client.call("POST", f"/api/{endpoint}", body)
        if status != 200 or not isinstance(answer, dict) or "job_id" not in answer:
            return Outcome(name, f"POST answered {status} {answer!r}")
        path = f"/api/get_results/{answer['job_id']}"
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            status, answer = client.call("GET", path)
            polls += 1
            if answer.get("status") != "running":
                break
            if time.monotonic() > deadline:
                return Outcome(name, f"still running after {timeout:g} s", True, True)
            time.sleep(POLL_INTERVAL)   # the course checker's pace
    except socket.timeout:
        return Outcome(name, f"no answer within {timeout:g} s", timed_out=True)
    except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
        return Outcome(name, f"request failed: {exc!r}")
    first_poll_running = polls > 1
    if status != 200 or answer.get("status") != "done":
        return Outcome(name, f"get_results answered {status} {answer!r}", first_poll_running)
    return Outcome(name, first_difference(expected, answer.get("data")), first_poll_running)


def run_suite(client: Client, endpoint: str, cases: List[Case], timeout: float) -> SuiteResult:
    """Run the cases in order; after MAX_CONSECUTIVE_TIMEOUTS timeouts in a row,
    mark the rest as failed without running them."""
    outcomes: List[Outcome] = []
    timeouts_in_a_row = 0
    for case in cases:
        outcome = run_case(client, endpoint, case, timeout)
        outcomes.append(outcome)
        timeouts_in_a_row = timeouts_in_a_row + 1 if outcome.timed_out else 0
        if timeouts_in_a_row == MAX_CONSECUTIVE_TIMEOUTS:
            break
    rest = cases[len(outcomes):]
    outcomes += [Outcome(name, "not run: the suite stopped after repeated timeouts")
                 for name, _, _ in rest]
    return SuiteResult(endpoint, outcomes, len(rest))


def _case_number(path: Path) -> int:
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return int(digits) if digits else 0


def load_suite(directory: Path) -> List[Case]:
    """The cases of one endpoint directory: (name, body, expected), in number
    order.  Raises CheckError naming a case file that cannot be read."""
    cases = []
    for source in sorted((directory / "input").glob("in-*.json"), key=_case_number):
        number = _case_number(source)
        cases.append((f"{directory.name}/in-{number}", _read_json(source),
                      _read_json(directory / "output" / f"out-{number}.json")))
    return cases


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckError(f"cannot read case file {path}: {exc}") from None


def load_suites(cases_dir: Path) -> List[Tuple[str, List[Case]]]:
    """(endpoint, cases) of every suite under ``cases_dir``, by endpoint name.
    Raises CheckError if there is none."""
    if not cases_dir.is_dir():
        raise CheckError(f"{cases_dir} is not a directory")
    suites = [(path.name, load_suite(path))
              for path in sorted(cases_dir.iterdir()) if (path / "input").is_dir()]
    if not suites:
        raise CheckError(f"no endpoint suites under {cases_dir} (expected "
                         "<endpoint>/input/in-N.json and <endpoint>/output/out-N.json)")
    return suites


def run(cases_dir: Path, url: str = DEFAULT_URL, timeout: Optional[float] = None,
        out: Optional[TextIO] = None) -> Tuple[bool, List[Outcome]]:
    """Run every suite under ``cases_dir`` against the server at ``url``, each
    job allowed ``timeout`` seconds (default: default_timeout), print the
    report to ``out`` (default: standard output); return (all passed, every
    outcome).  Raises CheckError, before running any case, on a bad URL or
    timeout, no cases, or a server that cannot be reached."""
    out = out or sys.stdout
    host, port = parse_url(url)
    if timeout is not None and not 0 < timeout < math.inf:
        raise CheckError(f"--timeout {timeout}: give a positive number of seconds")
    suites = load_suites(cases_dir)
    edition = edition_of(cases_dir)
    limit = default_timeout(cases_dir) if timeout is None else timeout
    # A request not answered within the job's limit cannot give a job done in time.
    client = Client(host, port, limit)
    client.probe()
    print(f"checking {client.url} with {cases_dir}: {len(suites)} suites, "
          f"{sum(len(cases) for _, cases in suites)} cases, {limit:g} s per job "
          f"({_timeout_origin(edition, timeout)})", file=out, flush=True)
    results = []
    for endpoint, cases in suites:
        results.append(run_suite(client, endpoint, cases, limit))
        _print_suite(results[-1], out)
    _print_total(results, edition, out)
    outcomes = [outcome for result in results for outcome in result.outcomes]
    return all(outcome.failure is None for outcome in outcomes), outcomes


def _timeout_origin(edition: Optional[str], timeout: Optional[float]) -> str:
    if timeout is not None:
        return "--timeout"
    if edition:
        return f"the course's limit for the {edition} cases"
    return "default"


def _print_suite(result: SuiteResult, out: TextIO) -> None:
    print(f"{result.name:24} {result.passed:3}/{len(result.outcomes):<3} passed  "
          f"{float(result.points):5.2f}/{POINTS_PER_SUITE} points  "
          f"(course: {result.course_points})", file=out, flush=True)
    for outcome in result.outcomes[:len(result.outcomes) - result.skipped]:
        if outcome.failure:
            print(f"  FAIL {outcome.name}: {outcome.failure}", file=out)
    if result.skipped:
        rest = ("1 remaining case counts" if result.skipped == 1
                else f"{result.skipped} remaining cases count")
        print(f"  STOPPED {result.name} after {MAX_CONSECUTIVE_TIMEOUTS} timeouts in a row: "
              f"its {rest} as failed", file=out)


def _print_total(results: List[SuiteResult], edition: Optional[str], out: TextIO) -> None:
    passed = sum(result.passed for result in results)
    cases = sum(len(result.outcomes) for result in results)
    possible = POINTS_PER_SUITE * len(results)
    exact = float(sum(result.points for result in results))
    course = sum(result.course_points for result in results)
    print(f"total: {passed}/{cases} cases, {exact:.2f}/{possible} points; "
          f"course score (each suite rounded): {course}/{possible}", file=out)
    if edition in FINAL_SCORE_NOTES:
        print(FINAL_SCORE_NOTES[edition], file=out)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m lestats check``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m lestats check",
        description="Run the course's checker cases against a running server, the way "
                    "the course checker does, and print each endpoint's points.",
        epilog=f"A suite stops after {MAX_CONSECUTIVE_TIMEOUTS} timeouts in a row; its "
               "remaining cases count as failed. Exit status: 0 when every case passes, "
               "1 when one fails, 2 when the run cannot start (bad argument, no cases, "
               "server unreachable).")
    parser.add_argument(
        "cases_dir", type=Path, metavar="CASES_DIR",
        help="the cases, in the course layout: <endpoint>/input/in-N.json (request body) "
             "and <endpoint>/output/out-N.json (expected data), e.g. "
             "../shared/checker/cases/2024 (required)")
    parser.add_argument(
        "--url", default=DEFAULT_URL,
        help="the server: host, host:port or http://host:port; the port defaults to "
             f"{DEFAULT_PORT} (default: {DEFAULT_URL})")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help="how long one job may take before its case fails (default: the course's "
             "limit, 1 when the name of CASES_DIR contains 2024, 3 when it contains 2025 "
             "or neither)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 when every case passes, 1 when one fails, 2 when the run cannot start."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        all_passed, _ = run(args.cases_dir, args.url, args.timeout)
    except CheckError as exc:
        print(f"lestats.check: error: {exc}", file=sys.stderr)
        return 2
    print(f"time: {time.monotonic() - started:.2f} s")
    return 0 if all_passed else 1
