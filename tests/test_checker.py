"""lestats.check, the course checker's stand-in: the course's published cases
(both editions) against a server loaded with the checker CSV; its URL forms,
time limits, points, messages and exit statuses on tiny case folders."""

import io
import json
import socket
import threading
from fractions import Fraction

import pytest

from conftest import OBESITY, LiveServer
from lestats.pool import ThreadPool
from lestats.tools import check

EDITIONS = ("2024", "2025")
PASSING = ({"question": OBESITY}, {"global_mean": 14.5})
FAILING = ({"question": OBESITY}, {"global_mean": 1.0})


def write_suite(cases_dir, endpoint, cases):
    """A course-layout suite of (body, expected data) cases; returns ``cases_dir``."""
    suite = cases_dir / endpoint
    (suite / "input").mkdir(parents=True)
    (suite / "output").mkdir()
    for number, (body, expected) in enumerate(cases, 1):
        (suite / "input" / f"in-{number}.json").write_text(json.dumps(body))
        (suite / "output" / f"out-{number}.json").write_text(json.dumps(expected))
    return cases_dir


@pytest.fixture
def unused_port():
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port where the kernel accepts connections and nothing ever answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]


@pytest.fixture
def one_case(tmp_path):
    """A folder with one passing global_mean case on TINY_ROWS."""
    return write_suite(tmp_path / "cases", "global_mean", [PASSING])


# -- the published cases -----------------------------------------------------

@pytest.fixture(scope="module")
def checker_server(checker_index, tmp_path_factory):
    live = LiveServer(checker_index, tmp_path_factory.mktemp("checker-results"), workers=4)
    yield live
    live.close()


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_published_case_passes(checker_dir, checker_server, edition):
    # A generous limit: speed is measured by the bench, not by a unit test.
    out = io.StringIO()
    passed, outcomes = check.run(checker_dir / "cases" / edition,
                                 f"127.0.0.1:{checker_server.port}", 10.0, out)
    report = out.getvalue()
    assert passed, report
    assert len(outcomes) == 114
    assert ("total: 114/114 cases, 90.00/90 points; "
            "course score (each suite rounded): 90/90") in report
    assert ("out of 100" in report) == (edition == "2025")


def test_the_command_exits_zero_on_full_points(checker_dir, checker_server, capsys):
    url = f"http://127.0.0.1:{checker_server.port}"
    assert check.main([str(checker_dir / "cases" / "2024"), "--url", url,
                       "--timeout", "10"]) == 0
    assert "90.00/90 points" in capsys.readouterr().out


# -- 1. the URL, and a server that cannot be reached --------------------------

@pytest.mark.parametrize("url, host, port", [
    ("127.0.0.1:5001", "127.0.0.1", 5001),
    ("http://127.0.0.1:5001", "127.0.0.1", 5001),
    ("http://127.0.0.1:5001/", "127.0.0.1", 5001),
    ("localhost", "localhost", 5000),
    ("http://localhost", "localhost", 5000),
    ("HTTP://Example.org:8080/", "example.org", 8080),
    ("[::1]:5001", "::1", 5001),
])
def test_urls_with_or_without_scheme_and_port(url, host, port):
    assert check.parse_url(url) == (host, port)


@pytest.mark.parametrize("url, reason", [
    ("https://127.0.0.1:5000", "scheme 'https' is not supported, only http://"),
    ("ftp://127.0.0.1", "scheme 'ftp' is not supported"),
    ("http://127.0.0.1:5000/api", "without a path"),
    ("127.0.0.1:5000?x=1", "without a path"),
    ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:five", "the port must be a number from 1 to 65535"),
    ("http://:5000", "no host"),
])
def test_other_urls_are_refused(url, reason):
    with pytest.raises(check.CheckError, match="^--url .*" + reason.replace("?", r"\?")):
        check.parse_url(url)


@pytest.mark.parametrize("form", ["127.0.0.1:{}", "http://127.0.0.1:{}/", "localhost:{}"])
def test_every_accepted_form_reaches_the_server(tiny_server, one_case, form, capsys):
    assert check.main([str(one_case), "--url", form.format(tiny_server.port)]) == 0
    assert "total: 1/1 cases" in capsys.readouterr().out


def test_another_scheme_is_one_line_and_exit_2(one_case, capsys):
    assert check.main([str(one_case), "--url", "https://127.0.0.1:5000"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("lestats.check: error: --url https://127.0.0.1:5000: "
                   "scheme 'https' is not supported, only http://\n")


def test_a_server_that_cannot_be_reached_stops_the_run_before_any_case(
        one_case, unused_port, capsys):
    assert check.main([str(one_case), "--url", f"127.0.0.1:{unused_port}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"lestats.check: error: cannot reach http://127.0.0.1:{unused_port}: ")
    assert "refused" in err


def test_a_server_that_never_answers_is_unreachable_too(one_case, silent_port, capsys):
    assert check.main([str(one_case), "--url", f"127.0.0.1:{silent_port}",
                       "--timeout", "0.2"]) == 2
    assert capsys.readouterr().err == (
        f"lestats.check: error: cannot reach http://127.0.0.1:{silent_port}: timed out\n")


# -- 2. time limits -----------------------------------------------------------

@pytest.mark.parametrize("name, seconds", [
    ("2024", 1.0), ("cases-2024", 1.0), ("2025", 3.0), ("tests_2025", 3.0),
    ("mine", 3.0), ("2024-vs-2025", 3.0),
])
def test_the_default_limit_is_the_courses_for_the_edition(tmp_path, name, seconds):
    assert check.default_timeout(tmp_path / name) == seconds


def test_the_limit_in_use_is_printed_and_timeout_changes_it(tiny_server, tmp_path, capsys):
    cases = write_suite(tmp_path / "2024", "global_mean", [PASSING])
    url = f"127.0.0.1:{tiny_server.port}"
    assert check.main([str(cases), "--url", url]) == 0
    assert "1 s per job (the course's limit for the 2024 cases)" in capsys.readouterr().out
    assert check.main([str(cases), "--url", url, "--timeout", "2.5"]) == 0
    assert "2.5 s per job (--timeout)" in capsys.readouterr().out


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(one_case, seconds, capsys):
    assert check.main([str(one_case), "--timeout", seconds]) == 2
    assert capsys.readouterr().err == (f"lestats.check: error: --timeout {float(seconds)}: "
                                       "give a positive number of seconds\n")


def test_jobs_that_never_finish_stop_the_suite_after_three_timeouts(serve, tiny_index,
                                                                     tmp_path, capsys):
    gate = threading.Event()
    pool = ThreadPool(1)
    live = serve(tiny_index, pool=pool)
    cases = write_suite(tmp_path / "cases", "global_mean", [PASSING] * 5)
    try:
        pool.submit(gate.wait)   # hold the only worker: no job ever finishes
        assert check.main([str(cases), "--url", f"127.0.0.1:{live.port}",
                           "--timeout", "0.3"]) == 1
    finally:
        gate.set()
    out = capsys.readouterr().out
    assert "global_mean                0/5   passed   0.00/10 points  (course: 0)" in out
    assert out.count("still running after 0.3 s") == 3
    assert ("  STOPPED global_mean after 3 timeouts in a row: "
            "its 2 remaining cases count as failed\n") in out
    assert "total: 0/5 cases" in out


def test_requests_left_unanswered_count_as_timeouts(one_case, silent_port, monkeypatch,
                                                    capsys):
    write_suite(one_case, "state_mean", [PASSING] * 4)
    monkeypatch.setattr(check.Client, "probe", lambda self: None)   # as if it answered once
    assert check.main([str(one_case), "--url", f"127.0.0.1:{silent_port}",
                       "--timeout", "0.1"]) == 1
    out = capsys.readouterr().out
    assert out.count("no answer within 0.1 s") == 4      # 1 in global_mean, 3 in state_mean
    assert "STOPPED state_mean after 3 timeouts in a row: its 1 remaining case counts as failed" in out


def outcomes_of(kinds):
    """Outcomes for run_case to return: T timed out, P passed, F failed."""
    return [check.Outcome(f"c{i}", None if kind == "P" else "x", timed_out=kind == "T")
            for i, kind in enumerate(kinds)]


@pytest.mark.parametrize("kinds, run, skipped", [
    ("TTPTTTPP", 6, 2),     # the streak counts only timeouts in a row
    ("TTFTTPP", 7, 0),      # a plain failure breaks the streak
    ("PPTTT", 5, 0),        # nothing left to skip
])
def test_only_consecutive_timeouts_stop_a_suite(monkeypatch, kinds, run, skipped):
    ran = iter(outcomes_of(kinds))
    monkeypatch.setattr(check, "run_case", lambda *_: next(ran))
    cases = [(f"c{i}", {}, {}) for i in range(len(kinds))]
    result = check.run_suite(None, "global_mean", cases, 1.0)
    assert len(result.outcomes) == len(kinds) and result.skipped == skipped
    assert [o.name for o in result.outcomes] == [name for name, _, _ in cases]
    assert all(o.failure for o in result.outcomes[run:])


# -- 3. points ----------------------------------------------------------------

@pytest.mark.parametrize("points, whole", [
    (Fraction(5, 2), 3),      # 5 of 20 cases; Python's round() would say 2
    (Fraction(7, 2), 4),
    (Fraction(40, 9), 4),     # 4 of 9
    (Fraction(70, 9), 8),     # 7 of 9
    (Fraction(0), 0),
    (Fraction(10), 10),
])
def test_the_course_score_rounds_each_suite_half_up(points, whole):
    assert check.round_half_up(points) == whole


def test_exact_and_course_points_are_printed_side_by_side(tiny_server, tmp_path, capsys):
    ohio_passing = ({"question": OBESITY, "state": "Ohio"}, {"Ohio": 6.0})
    ohio_failing = ({"question": OBESITY, "state": "Ohio"}, {"Ohio": 7.0})
    cases = write_suite(tmp_path / "cases", "global_mean", [PASSING, FAILING, PASSING])
    write_suite(cases, "state_mean", [ohio_failing, ohio_passing, ohio_passing])
    assert check.main([str(cases), "--url", f"127.0.0.1:{tiny_server.port}"]) == 1
    out = capsys.readouterr().out
    assert "global_mean                2/3   passed   6.67/10 points  (course: 7)" in out
    assert "state_mean                 2/3   passed   6.67/10 points  (course: 7)" in out
    assert ("total: 4/6 cases, 13.33/20 points; "
            "course score (each suite rounded): 14/20\n") in out


def test_the_2025_cases_say_where_the_last_10_points_are(tiny_server, tmp_path, capsys):
    cases = write_suite(tmp_path / "checker-2025", "global_mean", [PASSING])
    assert check.main([str(cases), "--url", f"127.0.0.1:{tiny_server.port}"]) == 0
    assert ("the 2025 checker's final score is out of 100: 10 of its points come "
            "from checks that are not among these cases\n") in capsys.readouterr().out


# -- 4. help ------------------------------------------------------------------

def test_help_describes_every_argument_and_its_default(capsys):
    with pytest.raises(SystemExit) as stop:
        check.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CASES_DIR the cases, in the course layout: <endpoint>/input/in-N.json" in text
    assert "--url URL the server: host, host:port or http://host:port" in text
    assert "the port defaults to 5000 (default: http://127.0.0.1:5000)" in text
    assert "--timeout SECONDS how long one job may take" in text
    assert "1 when the name of CASES_DIR contains 2024, 3 when it contains 2025" in text
    assert "Exit status: 0 when every case passes, 1 when one fails, 2" in text


# -- 5. what stays: comparison, first difference, exit statuses ---------------

def test_a_failing_case_is_reported_and_exits_non_zero(tiny_server, tmp_path, capsys):
    cases = write_suite(tmp_path / "cases", "global_mean",
                        [FAILING, ({"question": "not a question"}, {"global_mean": 1.0})])
    assert check.main([str(cases), "--url", f"127.0.0.1:{tiny_server.port}"]) == 1
    out = capsys.readouterr().out
    assert "global_mean                0/2" in out
    assert "FAIL global_mean/in-1: data['global_mean']: expected 1.0, got 14.5" in out
    assert "FAIL global_mean/in-2: POST answered 400" in out


def test_a_server_that_goes_away_or_fails_a_job_fails_the_case(
        tiny_server, one_case, unused_port, monkeypatch, capsys):
    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny_server.store, "write_result", disk_full)
    assert check.main([str(one_case), "--url", f"127.0.0.1:{tiny_server.port}"]) == 1
    assert "FAIL global_mean/in-1: get_results answered 500" in capsys.readouterr().out
    monkeypatch.setattr(check.Client, "probe", lambda self: None)   # it was there, then left
    assert check.main([str(one_case), "--url", f"127.0.0.1:{unused_port}"]) == 1
    assert "FAIL global_mean/in-1: request failed: ConnectionRefusedError" in (
        capsys.readouterr().out)


def test_no_cases_is_one_line_and_exit_2(tmp_path, capsys):
    assert check.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (
        f"lestats.check: error: {tmp_path / 'missing'} is not a directory\n")
    (tmp_path / "empty").mkdir()
    assert check.main([str(tmp_path / "empty")]) == 2
    assert "no endpoint suites under" in capsys.readouterr().err
    cases = write_suite(tmp_path / "cases", "best5", [({"question": "q"}, {})])
    (cases / "best5" / "output" / "out-1.json").write_text("{not json")
    assert check.main([str(cases)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read case file" in err and "out-1.json" in err


@pytest.mark.parametrize("expected, actual, difference", [
    ({"a": 1.0}, {"a": 1.009}, None),
    ({"a": 1.0}, {"a": 1.02}, "data['a']: expected 1.0, got 1.02"),
    ({"a": 1}, {"b": 1}, "data: missing keys ['a'], unexpected keys ['b']"),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2.001]}}, None),
    ([1, 2], [1], "data: expected 2 items, got 1"),
    ([1, 2], [1, 3], "data[1]: expected 2, got 3"),
    ({"a": "x"}, {"a": "y"}, "data['a']: expected 'x', got 'y'"),
    ({"a": True}, {"a": 1}, "data['a']: expected True, got 1"),
    ({"b": 1, "a": 2}, {"a": 2, "b": 1}, None),   # key order is not checked
])
def test_first_difference(expected, actual, difference):
    assert check.first_difference(expected, actual) == difference
