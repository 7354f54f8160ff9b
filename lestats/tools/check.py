"""A standard-library stand-in for the course checker.

    python3 -m lestats check CASES_DIR [--url http://127.0.0.1:5000]

CASES_DIR is in the course layout: ``<endpoint>/input/in-N.json`` holds a
request body and ``<endpoint>/output/out-N.json`` the expected ``data``.  Like
the course checker, each request uses a new connection; a job is polled
every 0.2 s until it is done or the timeout passes; numbers match within an
absolute 0.01 and keys must match exactly (their order is not checked).
Each endpoint suite is worth 10 points, shared equally among its cases.
"""

import argparse
import http.client
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

POLL_INTERVAL = 0.2
TOLERANCE = 0.01
POINTS_PER_SUITE = 10


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


@dataclass
class Outcome:
    """One case: its name, the first difference (None when it passed), and
    whether its first poll found the job still running."""

    name: str
    failure: Optional[str]
    first_poll_running: bool = False


class Client:
    """HTTP against one server, a new connection per request (as the course's
    ``requests`` calls do)."""

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        """Send one request; return (status, decoded JSON body)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read().decode("utf-8"))
        finally:
            connection.close()


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
                return Outcome(name, f"still running after {timeout} s", True)
            time.sleep(POLL_INTERVAL)   # the course checker's pace
    except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
        return Outcome(name, f"request failed: {exc!r}")
    first_poll_running = polls > 1
    if status != 200 or answer.get("status") != "done":
        return Outcome(name, f"get_results answered {status} {answer!r}", first_poll_running)
    return Outcome(name, first_difference(expected, answer.get("data")), first_poll_running)


def _case_number(path: Path) -> int:
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return int(digits) if digits else 0


def load_suite(directory: Path) -> List[Case]:
    """The cases of one endpoint directory: (name, body, expected), in number order."""
    cases = []
    for source in sorted((directory / "input").glob("in-*.json"), key=_case_number):
        number = _case_number(source)
        expected_file = directory / "output" / f"out-{number}.json"
        cases.append((f"{directory.name}/in-{number}",
                      json.loads(source.read_text(encoding="utf-8")),
                      json.loads(expected_file.read_text(encoding="utf-8"))))
    return cases


def run(cases_dir: Path, url: str, timeout: float,
        out: Optional[TextIO] = None) -> Tuple[bool, List[Outcome]]:
    """Run every suite under ``cases_dir``, print the report to ``out``
    (default: standard output); return (all passed, every outcome)."""
    out = out or sys.stdout
    client = Client(url, timeout)
    outcomes: List[Outcome] = []
    total_points = 0.0
    suites = sorted(path for path in cases_dir.iterdir() if (path / "input").is_dir())
    if not suites:
        print(f"no endpoint suites found under {cases_dir}", file=out)
        return False, outcomes
    for suite in suites:
        results = [run_case(client, suite.name, case, timeout) for case in load_suite(suite)]
        outcomes.extend(results)
        passed = sum(result.failure is None for result in results)
        points = POINTS_PER_SUITE * passed / len(results) if results else 0.0
        total_points += points
        print(f"{suite.name:24} {passed:3}/{len(results):<3} passed  "
              f"{points:5.2f}/{POINTS_PER_SUITE} points", file=out)
        for result in results:
            if result.failure:
                print(f"  FAIL {result.name}: {result.failure}", file=out)
    passed = sum(outcome.failure is None for outcome in outcomes)
    print(f"total: {passed}/{len(outcomes)} cases, "
          f"{total_points:.2f}/{POINTS_PER_SUITE * len(suites)} points", file=out)
    return passed == len(outcomes), outcomes


def main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 when every case passes, 1 when one fails, 2 on bad usage."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats check",
                                     description="Run course-layout checker cases.")
    parser.add_argument("cases_dir", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for one job (default 10)")
    args = parser.parse_args(argv)
    if not args.cases_dir.is_dir():
        print(f"lestats.check: error: {args.cases_dir} is not a directory", file=sys.stderr)
        return 2
    started = time.monotonic()
    all_passed, _ = run(args.cases_dir, args.url, args.timeout)
    print(f"time: {time.monotonic() - started:.2f} s")
    return 0 if all_passed else 1
