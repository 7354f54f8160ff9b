"""The course's checker, rule for rule, against any server of its API.

    python3 -m lestats check [CASES_DIR] [--edition 2024|2025] [--url HOST:PORT]
                             [--app DIR] [--results-dir DIR] [--deep ...]

Without CASES_DIR it runs the published cases that ship with lestats, both
editions, one after the other.  With it, the edition is ``--edition``, else
the one the folder's name holds (and says so).  Each edition's rules are
``course.EDITIONS``' (see ``course`` for the list); the "course score"
printed is the total the course's checker prints for the same answers, on
any server on which that checker finishes.

Where the course's checker would not finish (its requests have no timeout;
2024 polls a status other than running/done again at once, for ever), this
one stops the case, says so, and counts it failed: every request here has
a deadline and a size cap (``client``), every body a nesting limit
(``answers``).  After ``HANGS_TO_STOP_SUITE`` such cases in a row the rest
of the suite is not run, after ``HANGS_TO_STOP_RUN`` the rest of the run,
so a run against any server is bounded in time.

Failures are grouped by kind (``report``): the first of each is shown with
its answer, the others counted; when most answers hold other keys or
numbers than the course's data, the report says the server seems to be on
other data.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NoReturn, Optional, TextIO, Tuple
from urllib.parse import quote, urlsplit

from . import course
from .answers import NotJson, parse
from .cases import SHIPPED_CASES, Case, CaseError, Suite, load_suites
from .client import DEADLINE, Answer, Client, NoAnswer
from .compare import difference
from .course import EDITIONS, POLL_INTERVAL, Edition
from .quality import Quality, evaluate
from .report import FailureLog

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_PORT = 5000                     # the course skeleton's
HANGS_TO_STOP_SUITE = 3
HANGS_TO_STOP_RUN = 6
EXIT_USAGE = 2


class CheckError(Exception):
    """The run cannot start (a bad argument, no cases); the message is the
    one line shown to the user."""


@dataclass
class Outcome:   # pylint: disable=too-many-instance-attributes
    """One case.  ``failure`` is None when it passed; ``kind`` groups like
    failures; ``answer`` is the failing answer's status and first bytes;
    ``hang`` says the course's checker would have waited there for ever;
    ``other_data`` that the data had other keys or numbers than expected."""

    name: str
    failure: Optional[str] = None
    kind: str = ""
    answer: str = ""
    hang: bool = False
    other_data: bool = False
    first_poll_running: bool = False

    @property
    def passed(self) -> bool:
        """Did the case pass?"""
        return self.failure is None


@dataclass
class SuiteResult:
    """One suite's outcomes, in the course's case order; ``not_run`` says
    why its last cases were not run, if some were not."""

    endpoint: str
    outcomes: List[Outcome]
    not_run: str = ""

    @property
    def passed(self) -> int:
        """How many cases passed."""
        return sum(outcome.passed for outcome in self.outcomes)

    @property
    def points(self) -> int:
        """The suite's points, as the course counts them."""
        return course.suite_points(self.passed, len(self.outcomes))


@dataclass
class EditionResult:
    """One edition's run: its suites and the pylint step."""

    edition: Edition
    folder: Path
    suites: List[SuiteResult] = field(default_factory=list)
    quality: Quality = Quality(None, "not evaluated")

    @property
    def outcomes(self) -> List[Outcome]:
        """Every case's outcome."""
        return [outcome for suite in self.suites for outcome in suite.outcomes]

    @property
    def all_passed(self) -> bool:
        """Did every case pass?"""
        return all(outcome.passed for outcome in self.outcomes)

    @property
    def total(self) -> int:
        """The course's total for these answers."""
        return self.edition.total([suite.points for suite in self.suites], self.quality.score)

    @property
    def possible(self) -> int:
        """The highest total these suites allow."""
        return self.edition.possible(len(self.suites))

    @property
    def hang(self) -> Optional[Outcome]:
        """The first case at which the course's checker would have hung."""
        return next((outcome for outcome in self.outcomes if outcome.hang), None)


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


class Checker:
    """Runs one edition's suites against one server, as the course does."""

    def __init__(self, client: Client, edition: Edition, out: TextIO,
                 results_dir: Optional[Path] = None):
        self.client = client
        self.edition = edition
        self.out = out
        self.results_dir = results_dir
        self.failures = FailureLog(out)
        self._started = time.monotonic()
        self._hangs = 0     # cases in a row at which the course's checker would hang

    def run(self, suites: List[Suite]) -> List[SuiteResult]:
        """Every suite, in order, each printed as it ends."""
        self._started = time.monotonic()
        if self.results_dir is not None and not self.edition.wipe_each_suite:
            course.wipe_results(self.results_dir)
        results = []
        for suite in suites:
            result = self.run_suite(suite)
            results.append(result)
            self._print_suite(result)
        return results

    def run_suite(self, suite: Suite) -> SuiteResult:
        """One suite's cases, unless the run is past the edition's global
        limit or the server has stopped answering."""
        limit = self.edition.global_limit
        elapsed = time.monotonic() - self._started
        if limit is not None and elapsed > limit:
            return self._not_run(suite, [], f"the suite started {elapsed:.0f} s into the run,"
                                 f" past the {self.edition.name} checker's {limit:g} s limit")
        if self._hangs >= HANGS_TO_STOP_RUN:
            return self._not_run(suite, [], f"the server stopped answering ({self._hangs} cases"
                                 " in a row had no answer)")
        if self.results_dir is not None and self.edition.wipe_each_suite:
            course.wipe_results(self.results_dir)
        outcomes: List[Outcome] = []
        in_suite = 0
        for case in suite.cases:
            outcome = self.run_case(suite.endpoint, case)
            outcomes.append(outcome)
            self._hangs = self._hangs + 1 if outcome.hang else 0
            in_suite = in_suite + 1 if outcome.hang else 0
            if in_suite >= HANGS_TO_STOP_SUITE and len(outcomes) < len(suite.cases):
                return self._not_run(suite, outcomes, f"{in_suite} cases in a row had no"
                                     " answer the course's checker would ever get")
        return SuiteResult(suite.endpoint, outcomes)

    @staticmethod
    def _not_run(suite: Suite, outcomes: List[Outcome], why: str) -> SuiteResult:
        rest = [Outcome(case.name, f"not run: {why}", "not run")
                for case in suite.cases[len(outcomes):]]
        return SuiteResult(suite.endpoint, outcomes + rest, why)

    def run_case(self, endpoint: str, case: Case) -> Outcome:
        """POST the case, poll its job as the course does, compare its data."""
        try:
            answer = self.client.request("POST", f"/api/{endpoint}",
                                         json.dumps(case.body).encode("utf-8"))
        except NoAnswer as exc:
            return _no_answer(case, "POST", exc)
        try:
            posted = parse(answer.body)
        except NotJson as exc:
            return _failed(case, f"the POST's answer is {exc}", f"POST: {exc.kind}", answer)
        if not isinstance(posted, dict) or "job_id" not in posted:
            return _failed(case, "the POST's answer has no job_id", "POST: no job_id", answer)
        path = "/api/get_results/" + quote(str(posted["job_id"]), safe="/:@!$&'()*+,;=~")
        return self._poll(case, path)

    def _poll(self, case: Case, path: str) -> Outcome:
        """Poll until an answer decides the case, as the course's loop does."""
        start = time.monotonic()
        polls = 0
        while True:
            try:
                answer = self.client.request("GET", path)
            except NoAnswer as exc:
                return _no_answer(case, "get_results", exc)
            polls += 1
            outcome = self._judge(case, answer, time.monotonic() - start, polls > 1)
            if outcome is not None:
                return outcome

    def _judge(self, case: Case, answer: Answer, elapsed: float,
               first_poll_running: bool) -> Optional[Outcome]:
        """The case's outcome if this poll's answer decides it; else None
        after the course's pause (0.2 s after running; none in 2024 after
        another status)."""
        if answer.status != 200:
            return _failed(case, f"get_results answered {answer.status}",
                           f"get_results: HTTP {answer.status}", answer)
        try:
            result = parse(answer.body)
        except NotJson as exc:
            return _failed(case, f"get_results' answer is {exc}", f"get_results: {exc.kind}",
                           answer)
        if not isinstance(result, dict) or "status" not in result:
            return _failed(case, "get_results' answer is not an object with a status",
                           "get_results: no status", answer)
        return self._judge_status(case, result, answer, elapsed, first_poll_running)

    def _judge_status(self, case: Case, result: dict, answer: Answer, elapsed: float,
                      first_poll_running: bool) -> Optional[Outcome]:
        status = result["status"]
        if status == "done":
            return self._compare(case, result, answer, first_poll_running)
        if status == "running":
            if self.edition.timed_out(elapsed):
                return _failed(case, f"still running {elapsed:.1f} s after the POST (the"
                               f" {self.edition.name} checker fails a running job after"
                               f" {self.edition.job_timeout} s in whole seconds)",
                               "still running past the course's limit", answer)
            time.sleep(POLL_INTERVAL)
            return None
        if self.edition.other_status_fails:
            return _failed(case, f"get_results answered status {_short(status)}",
                           f"get_results: status {_short(status, 20)}", answer)
        if elapsed > self.client.deadline:
            outcome = _failed(case, f"status {_short(status)} for {elapsed:.0f} s: the 2024"
                              " checker polls it again at once, with no time limit, for ever",
                              f"get_results: status {_short(status, 20)} for ever", answer)
            outcome.hang = True
            return outcome
        return None   # 2024: any other status is polled again at once, with no time check

    @staticmethod
    def _compare(case: Case, result: dict, answer: Answer, first_poll_running: bool) -> Outcome:
        if "data" not in result:
            return _failed(case, "done without data", "get_results: done without data", answer)
        found = difference(result["data"], case.expected)
        if found is None:
            return Outcome(case.name, first_poll_running=first_poll_running)
        outcome = _failed(case, found.text, f"data: {found.kind}", answer)
        outcome.other_data = found.other_data
        outcome.first_poll_running = first_poll_running
        return outcome

    def _print_suite(self, result: SuiteResult) -> None:
        print(f"{result.endpoint:24} {result.passed:3}/{len(result.outcomes):<3} passed  "
              f"{result.points:2}/{course.SUITE_POINTS} points", file=self.out, flush=True)
        for outcome in result.outcomes:
            if not outcome.passed and outcome.kind != "not run":
                self.failures.add(outcome.name, outcome.kind, outcome.failure or "",
                                  outcome.answer)
        if result.not_run:
            left = sum(outcome.kind == "not run" for outcome in result.outcomes)
            print(f"  NOT RUN: {left} case{'s' if left > 1 else ''}, counted failed: "
                  f"{result.not_run}", file=self.out)


def _failed(case: Case, failure: str, kind: str, answer: Answer) -> Outcome:
    return Outcome(case.name, failure, kind, answer.preview())


def _no_answer(case: Case, step: str, exc: NoAnswer) -> Outcome:
    return Outcome(case.name, f"{step}: {exc}", f"{step}: {exc.kind}", hang=exc.hang)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_edition(client: Client, folder: Path, edition: Edition, out: TextIO, *,
                  app: Optional[Path] = None, results_dir: Optional[Path] = None,
                  origin: str = "") -> EditionResult:
    """Run the cases of ``folder`` under ``edition``'s rules, print the
    report to ``out`` and return the result.  Raises CheckError (before any
    request) if the cases cannot be read."""
    try:
        suites = load_suites(folder)
    except CaseError as exc:
        raise CheckError(str(exc)) from None
    result = EditionResult(edition, folder)
    cases = sum(len(suite.cases) for suite in suites)
    print(f"checking {client.url} with {folder}: edition {edition.name}{origin}, "
          f"{len(suites)} suites, {cases} cases", file=out)
    print(f"  {edition.name} rules: {_rules(edition)}", file=out, flush=True)
    checker = Checker(client, edition, out, results_dir)
    result.suites = checker.run(suites)
    result.quality = evaluate(app)
    _print_total(result, checker.failures, out)
    return result


def _rules(edition: Edition) -> str:
    limit = (f"; a suite that starts more than {edition.global_limit:g} s into the run"
             " scores 0" if edition.global_limit else "")
    other = ("any other status fails the case" if edition.other_status_fails
             else "any other status is polled again at once")
    return (f"a job may answer running for {edition.job_timeout} s counted in whole seconds"
            f" (so up to {edition.job_timeout + 1} s), polls every {POLL_INTERVAL:g} s, {other};"
            f" each suite min(round(10 x passed / cases), 10), the total from"
            f" {edition.start_points}{f' up to {edition.cap}' if edition.cap else ''}{limit}")


def _print_total(result: EditionResult, failures: FailureLog, out: TextIO) -> None:
    outcomes = result.outcomes
    lines = failures.summary()
    if lines:
        print("failures by kind (the first of each is shown above):", file=out)
        for line in lines:
            print(line, file=out)
    other = sum(outcome.other_data for outcome in outcomes)
    if other > len(outcomes) / 2:
        print(f"hint: {other} of {len(outcomes)} answers hold other keys or numbers than the"
              " course's data gives: the server seems to be on other data than the course's"
              " CSV (python3 run.py serves the course's data; a course skeleton reads"
              " ./nutrition_activity_obesity_usa_subset.csv)", file=out)
    passed = sum(outcome.passed for outcome in outcomes)
    print(f"total: {passed}/{len(outcomes)} cases passed", file=out)
    edition = result.edition
    hang = result.hang
    if hang is None:
        print(f"course score ({edition.name} rules): {result.total}/{result.possible}", file=out)
    else:
        print(f"course score ({edition.name} rules): none: the course's checker would hang at"
              f" {hang.name} (its requests have no timeout; here: {hang.failure}); lestats"
              f" counted that case, and those after it that it did not run, as failed:"
              f" {result.total}/{result.possible}", file=out)
    print(f"pylint: {_pylint_line(result)}", file=out, flush=True)


def _pylint_line(result: EditionResult) -> str:
    edition, quality = result.edition, result.quality
    floor = f"{course.PYLINT_FLOOR:g}/10"
    if quality.score is None:
        counted = (f"; the {edition.start_points} points the {edition.name} total starts with"
                   " are counted" if edition.start_points else "")
        return (f"{quality.note}: the {edition.name} penalty for a rating below {floor}"
                f" ({edition.pylint_penalty} points) is not counted{counted}")
    if quality.score < course.PYLINT_FLOOR:
        return f"{quality.note}: below {floor}, {edition.pylint_penalty} points off"
    return f"{quality.note}: not below {floor}, no penalty"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m lestats check``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m lestats check",
        description="Run the course's checker cases against a running server, by the "
                    "course's rules for the edition, and print the course's score.",
        epilog="Exit status: 0 when every case passes (and --deep finds nothing), 1 "
               "otherwise, 2 when the run cannot start (bad argument, no cases).")
    parser.add_argument(
        "cases_dir", type=Path, metavar="CASES_DIR", nargs="?",
        help="the cases, in the course layout: <endpoint>/input/in-N.json (request body) "
             "and <endpoint>/output/out-N.json (expected data) (default: the published "
             "cases shipped in data/cases, both editions)")
    parser.add_argument(
        "--edition", choices=sorted(EDITIONS),
        help="the course edition whose rules apply (default: the one CASES_DIR's name "
             "holds; without CASES_DIR, both)")
    parser.add_argument(
        "--url", default=DEFAULT_URL,
        help="the server: host, host:port or http://host:port; the port defaults to "
             f"{DEFAULT_PORT} (default: {DEFAULT_URL})")
    parser.add_argument(
        "--app", type=Path, metavar="DIR",
        help="the server's app package folder, for the course's pylint step (needs "
             "pylint installed; without it, pylint is not evaluated)")
    parser.add_argument(
        "--results-dir", type=Path, metavar="DIR",
        help="the server's results folder: emptied as the course's checker does "
             "(rm -rf results/*), and read by --deep as results appear")
    parser.add_argument(
        "--request-timeout", type=float, default=DEADLINE, metavar="SECONDS",
        help="how long one request may take in all; the course's have no limit, so a "
             f"request cut here is a case on which the course would hang (default: {DEADLINE:g})")
    parser.add_argument("--deep", action="store_true",
                        help="after the cases, probe the server for races (see --help of "
                             "deep in the README)")
    parser.add_argument("--pid", type=int,
                        help="with --deep: the server's process id, to watch its idle CPU "
                             "and threads (Linux /proc)")
    parser.add_argument("--deep-shutdown", action="store_true",
                        help="with --deep, last: call graceful_shutdown under load and check "
                             "the drain (this stops the server taking jobs)")
    return parser


def _usage(message: str) -> NoReturn:
    print(f"lestats check: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def editions_to_run(cases_dir: Optional[Path],
                    edition: Optional[str]) -> List[Tuple[Path, Edition, str]]:
    """(folder, edition, where the edition came from) for each run asked for."""
    if cases_dir is None:
        names = [edition] if edition else sorted(EDITIONS)
        found = [(SHIPPED_CASES / name, EDITIONS[name], " (the shipped cases)")
                 for name in names]
        if not all(folder.is_dir() for folder, _, _ in found):
            raise CheckError(f"no shipped cases at {SHIPPED_CASES} (lestats.pyz does not "
                             "hold them): give CASES_DIR")
        return found
    if edition:
        return [(cases_dir, EDITIONS[edition], " (--edition)")]
    named = course.edition_of(cases_dir)
    if named is None:
        raise CheckError(f"cannot tell the edition from the folder name {cases_dir.name!r}: "
                         "give --edition 2024 or --edition 2025")
    return [(cases_dir, EDITIONS[named], " (from the folder's name; --edition chooses)")]


def main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 when every case passes, 1 when one fails, 2 when the run cannot start."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        if not 0 < args.request_timeout <= 3600:
            raise CheckError(f"--request-timeout {args.request_timeout:g}: give a number of "
                             "seconds from 0 to 3600")
        if (args.pid is not None or args.deep_shutdown) and not args.deep:
            raise CheckError("--pid and --deep-shutdown go with --deep")
        host, port = parse_url(args.url)
        runs = editions_to_run(args.cases_dir, args.edition)
        client = Client(host, port, args.request_timeout)
        results = [check_edition(client, folder, edition, sys.stdout, app=args.app,
                                 results_dir=args.results_dir, origin=origin)
                   for folder, edition, origin in runs]
    except CheckError as exc:
        _usage(str(exc))
    ok = all(result.all_passed for result in results)
    if args.deep:
        # Imported only when asked for.
        from . import deep   # pylint: disable=import-outside-toplevel
        found = deep.run(client, [suite for folder, _, _ in runs for suite in
                                  load_suites(folder)], sys.stdout, pid=args.pid,
                         results_dir=args.results_dir, shutdown=args.deep_shutdown,
                         edition=runs[-1][1])
        ok = ok and not any(finding.found for finding in found)
    print(f"time: {time.monotonic() - started:.2f} s")
    return 0 if ok else 1
