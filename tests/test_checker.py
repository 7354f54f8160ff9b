"""lestats check gives the course's score: the published cases against
lestats, and the course's rules, each against a fake server that isolates
it.  Every expected score here is computed from the course's rules, as
written in this file, never from what lestats' checker prints."""

import io
import json
import os
import re
import shutil
import socket
import threading
from dataclasses import replace

import pytest

from conftest import LiveServer
from fakes import Behaviour, Fake, drop, html
from lestats.grade import check
from lestats.grade.cases import SHIPPED_CASES, load_suites
from lestats.grade.client import Client
from lestats.grade.course import EDITIONS

# -- the course's rules, as this test reads them ------------------------------------
TIMEOUT = {"2024": 1, "2025": 3}     # a running answer after more whole seconds fails
START = {"2024": 0, "2025": 10}      # what the total starts from


def course_points(passed, cases):
    """A suite's points: min(round(10 * passed / cases), 10), Python's round()."""
    return min(round(10 * passed / cases), 10)


def course_total(edition, suites):
    """The total for [(passed, cases)] of each suite, no pylint penalty."""
    total = START[edition] + sum(course_points(passed, cases) for passed, cases in suites)
    return min(total, 100) if edition == "2025" else total


# -- helpers ---------------------------------------------------------------------------

def subset(tmp_path, edition, counts, name=None):
    """A case folder holding the first ``counts[endpoint]`` cases (in number
    order) of each given suite of the shipped ``edition``."""
    folder = tmp_path / (name or f"cases-{edition}")
    for endpoint, count in counts.items():
        for side, prefix in (("input", "in"), ("output", "out")):
            (folder / endpoint / side).mkdir(parents=True)
            for number in range(1, count + 1):
                shutil.copy(SHIPPED_CASES / edition / endpoint / side / f"{prefix}-{number}.json",
                            folder / endpoint / side)
    return folder


def run_check(folder, edition, port, deadline=5.0, **options):
    """check_edition's result and report."""
    out = io.StringIO()
    result = check.check_edition(Client("127.0.0.1", port, deadline), folder,
                                 options.pop("rules", EDITIONS[edition]), out, **options)
    return result, out.getvalue()


def score(report, edition):
    """The course score the report prints."""
    found = re.search(rf"course score \({edition} rules\): (?:none: .* )?(-?\d+)/(\d+)", report)
    assert found, report
    return int(found.group(1))


@pytest.fixture
def unused_port():
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the published cases, against lestats ------------------------------------------------

@pytest.fixture(scope="module")
def checker_server(checker_index, tmp_path_factory):
    live = LiveServer(checker_index, tmp_path_factory.mktemp("checker-results"), workers=4)
    yield live
    live.close()


@pytest.mark.parametrize("edition", sorted(TIMEOUT))
def test_every_published_case_passes(checker_dir, checker_server, edition):
    result, report = run_check(checker_dir / "cases" / edition, edition, checker_server.port)
    assert result.all_passed, report
    assert len(result.outcomes) == 114
    assert f"course score ({edition} rules): {course_total(edition, [(1, 1)] * 9)}/" in report


def test_with_no_folder_both_shipped_editions_run(checker_server, capsys):
    assert check.main(["--url", f"127.0.0.1:{checker_server.port}"]) == 0
    out = capsys.readouterr().out
    assert "edition 2024 (the shipped cases)" in out and "edition 2025 (the shipped cases)" in out
    assert "course score (2024 rules): 90/90\n" in out
    assert "course score (2025 rules): 100/100\n" in out
    assert out.count("pylint: not evaluated (no --app DIR)") == 2
    assert "the 10 points the 2025 total starts with are counted" in out


# -- points: wrong on k of 20, for every k ----------------------------------------------

@pytest.mark.parametrize("edition, wrongs", [
    ("2024", range(21)),            # every k
    ("2025", (0, 5, 10, 15, 20)),   # the same rounding, from 10
])
def test_wrong_on_k_of_20_cases_scores_the_courses_rounding(tmp_path, edition, wrongs):
    folder = subset(tmp_path, edition, {"state_mean": 20})
    for wrong in wrongs:
        with Fake.of_folder(folder, Behaviour(wrong_first=wrong)) as fake:
            result, report = run_check(folder, edition, fake.port)
        assert result.suites[0].passed == 20 - wrong
        assert score(report, edition) == course_total(edition, [(20 - wrong, 20)]), wrong


def test_5_of_20_is_2_points_and_15_of_20_is_8(tmp_path):
    # Python's round() takes halves to the even side: 2.5 -> 2, 7.5 -> 8.
    assert (course_points(5, 20), course_points(15, 20)) == (2, 8)
    folder = subset(tmp_path, "2024", {"state_mean": 20})
    with Fake.of_folder(folder, Behaviour(wrong_first=15)) as fake:
        _, report = run_check(folder, "2024", fake.port)
    assert "state_mean                 5/20  passed   2/10 points" in report


# -- time: whole seconds, 0.2 s polls, no early stop ----------------------------------------

def in_parallel(runs):
    """Run each (folder, edition, behaviour) against its own fake at once;
    their (result, report) in order.  Time rules cost seconds: run together."""
    found = [None] * len(runs)

    def one(index, folder, edition, behaviour):
        with Fake.of_folder(folder, behaviour) as fake:
            found[index] = run_check(folder, edition, fake.port)

    threads = [threading.Thread(target=one, args=(index, *run)) for index, run in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def test_time_rules(tmp_path):
    folders = {edition: subset(tmp_path, edition, {"global_mean": 1}) for edition in TIMEOUT}
    table = [
        # time_delta.seconds > 1 is first true at 2.0 s: a job may take up to 2 s.
        ("2024", Behaviour(delay=1.5), True),
        ("2024", Behaviour(delay=2.9), False),    # (2.5 is in the slow matrix)
        # No request timeout, and the limit is looked at only after a running
        # answer: a done that takes 1.2 s to arrive passes.
        ("2024", Behaviour(answer_delay=1.2), True),
        # Another status: 2024 polls again at once, 2025 fails the case.
        ("2024", Behaviour(poll_status="error", done_after=0.5), True),
        ("2025", Behaviour(poll_status="error", done_after=0.5), False),
    ]
    found = in_parallel([(folders[edition], edition, behaviour)
                         for edition, behaviour, _ in table])
    for (edition, behaviour, passes), (result, report) in zip(table, found):
        assert result.all_passed == passes, (behaviour, report)
        assert score(report, edition) == course_total(edition, [(int(passes), 1)])
    assert found[0][0].outcomes[0].first_poll_running


@pytest.mark.slow
def test_slow_jobs_against_both_limits(tmp_path):
    folders = {edition: subset(tmp_path, edition, {"global_mean": 2, "best5": 1})
               for edition in TIMEOUT}
    runs = [(edition, delay) for edition in TIMEOUT for delay in (0.9, 1.5, 2.5, 3.5)]
    found = in_parallel([(folders[edition], edition, Behaviour(delay=delay))
                         for edition, delay in runs])
    for (edition, delay), (result, report) in zip(runs, found):
        passes = delay < TIMEOUT[edition] + 1      # every case of the folder alike
        suites = [(2 if passes else 0, 2), (1 if passes else 0, 1)]
        assert score(report, edition) == course_total(edition, suites), (edition, delay, report)
        assert result.all_passed == passes


@pytest.mark.slow
def test_a_suite_never_stops_early(tmp_path):
    # Jobs that never finish: every case is run and waits out the limit.
    runs = [(subset(tmp_path, edition, {"global_mean": 4}), edition, Behaviour(delay=3600))
            for edition in TIMEOUT]
    for (_, edition, _), (result, report) in zip(runs, in_parallel(runs)):
        assert [outcome.kind for outcome in result.outcomes] == [
            "still running past the course's limit"] * 4
        assert "NOT RUN" not in report
        assert score(report, edition) == course_total(edition, [(0, 4)])


def test_the_2025_global_limit_is_checked_at_the_start_of_each_suite(tmp_path):
    folder = subset(tmp_path, "2025", {"best5": 1, "global_mean": 1, "worst5": 1})
    rules = replace(EDITIONS["2025"], global_limit=0.5)
    with Fake.of_folder(folder, Behaviour(delay=0.7)) as fake:
        result, report = run_check(folder, "2025", fake.port, rules=rules)
    # best5 starts at 0 s and passes; global_mean starts after 0.7 s: 0 points, worst5 too.
    assert [suite.passed for suite in result.suites] == [1, 0, 0]
    assert score(report, "2025") == course_total("2025", [(1, 1), (0, 1), (0, 1)])
    assert "past the 2025 checker's 0.5 s limit" in report


# -- answers the course's checker fails (or not) --------------------------------------------

ONE_SUITE = {"global_mean": 2}


@pytest.mark.parametrize("behaviour, passes, kind", [
    (Behaviour(post_http=500), True, None),            # the POST's status is not looked at
    (Behaviour(poll_http=202), False, "get_results: HTTP 202"),
    (Behaviour(poll_http=500), False, "get_results: HTTP 500"),
    (Behaviour(ints=True), False, "data: type"),        # 14 for 14.0 is a type change
    (Behaviour(wrong_first=2), False, "data: value"),
    (Behaviour(post_raw=html(200)), False, "POST: not JSON"),
    (Behaviour(poll_raw=html(200)), False, "get_results: not JSON"),
    (Behaviour(post_raw=drop), False, "POST: connection closed"),
    (Behaviour(poll_raw=drop), False, "get_results: connection closed"),
], ids=["POST 500", "poll 202", "poll 500", "ints", "wrong", "POST html", "poll html",
        "POST dropped", "poll dropped"])
@pytest.mark.parametrize("edition", sorted(TIMEOUT))
def test_each_kind_of_answer_scores_as_the_course_does(tmp_path, edition, behaviour, passes,
                                                       kind):
    folder = subset(tmp_path, edition, ONE_SUITE)
    with Fake.of_folder(folder, behaviour) as fake:
        result, report = run_check(folder, edition, fake.port)
    assert result.all_passed == passes, report
    assert score(report, edition) == course_total(edition, [(2 if passes else 0, 2)])
    if kind:
        assert {outcome.kind for outcome in result.outcomes} == {kind}


def test_where_the_2024_checker_would_hang_it_is_said_and_counted_failed(tmp_path):
    folder = subset(tmp_path, "2024", {"global_mean": 1})
    with Fake.of_folder(folder, Behaviour(poll_status="error", done_after=3600)) as fake:
        result, report = run_check(folder, "2024", fake.port, deadline=0.3)
    assert result.hang is not None
    assert ("course score (2024 rules): none: the course's checker would hang at"
            " global_mean/in-1") in report
    assert "polls it again at once, with no time limit, for ever" in report
    assert report.rstrip().splitlines()[-2].endswith(": 0/10")


def test_a_server_that_cannot_be_reached_scores_0(tmp_path, unused_port, capsys):
    folder = subset(tmp_path, "2024", {"global_mean": 2, "best5": 3})
    assert check.main([str(folder), "--url", f"127.0.0.1:{unused_port}"]) == 1
    out = capsys.readouterr().out
    assert "course score (2024 rules): 0/20" in out
    assert out.count("connection refused") == 2   # the first shown, then counted
    assert "POST: connection refused: best5/in-1 is shown above, and 4 more like it" in out


# -- order, and results/* ---------------------------------------------------------------------

def test_suites_run_alphabetically_and_cases_in_directory_order(tmp_path):
    folder = subset(tmp_path, "2025", {"worst5": 3, "best5": 3, "global_mean": 2})
    suites = load_suites(folder)
    assert [suite.endpoint for suite in suites] == ["best5", "global_mean", "worst5"]
    for suite in suites:
        listed = os.listdir(folder / suite.endpoint / "input")
        assert [case.name for case in suite.cases] == [
            f"{suite.endpoint}/{name[:-5]}" for name in listed]


def test_results_are_wiped_before_each_suite_in_2024_and_once_in_2025(tmp_path):
    for edition, left in (("2024", {"global_mean"}), ("2025", {"best5", "global_mean"})):
        folder = subset(tmp_path, edition, {"global_mean": 1, "best5": 1})
        results = tmp_path / f"results-{edition}"
        results.mkdir()
        (results / "old.json").write_text("{}")
        (results / ".lestats.lock").write_text("")
        with Fake.of_folder(folder) as fake:
            fake.on_post = lambda endpoint, results=results: (
                results / endpoint).write_text("")
            run_check(folder, edition, fake.port, results_dir=results)
        assert set(os.listdir(results)) == left | {".lestats.lock"}, edition


# -- what a TA reads ------------------------------------------------------------------------

def test_the_first_failing_answer_of_a_kind_is_shown_then_counted(tmp_path):
    folder = subset(tmp_path, "2024", {"global_mean": 3, "best5": 2})
    with Fake.of_folder(folder, Behaviour(post_raw=html(501))) as fake:
        _, report = run_check(folder, "2024", fake.port)
    assert report.count("FAIL ") == 1
    assert "FAIL best5/in-1: the POST's answer is not JSON" in report
    assert "the answer: 501 b'<!DOCTYPE HTML><html><body><h1>Error response</h1>" in report
    assert "POST: not JSON: best5/in-1 is shown above, and 4 more like it" in report


def test_answers_on_other_data_get_a_hint_and_other_types_do_not(tmp_path):
    folder = subset(tmp_path, "2024", {"global_mean": 2, "best5": 2})
    hint = "the server seems to be on other data than the course's CSV"
    with Fake.of_folder(folder, Behaviour(wrong_first=9)) as fake:
        assert hint in run_check(folder, "2024", fake.port)[1]
    with Fake.of_folder(folder, Behaviour(ints=True)) as fake:
        assert hint not in run_check(folder, "2024", fake.port)[1]


# -- the command ----------------------------------------------------------------------------

@pytest.mark.parametrize("url, host, port", [
    ("127.0.0.1:5001", "127.0.0.1", 5001),
    ("http://127.0.0.1:5001/", "127.0.0.1", 5001),
    ("localhost", "localhost", 5000),
    ("HTTP://Example.org:8080/", "example.org", 8080),
    ("[::1]:5001", "::1", 5001),
])
def test_urls_with_or_without_scheme_and_port(url, host, port):
    assert check.parse_url(url) == (host, port)


@pytest.mark.parametrize("argv, message", [
    (["--url", "https://127.0.0.1:5000"], "scheme 'https' is not supported, only http://"),
    (["--url", "127.0.0.1:5000/api"], "without a path"),
    (["--url", "127.0.0.1:99999"], "the port must be a number from 1 to 65535"),
    (["--request-timeout", "0"], "--request-timeout 0: give a number of seconds"),
    (["--pid", "1"], "--pid and --deep-shutdown go with --deep"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        check.main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_the_edition_comes_from_the_option_or_the_folder_name(tmp_path, capsys):
    folder = subset(tmp_path, "2024", {"global_mean": 1}, name="my-cases")
    with pytest.raises(SystemExit):
        check.main([str(folder)])
    assert ("cannot tell the edition from the folder name 'my-cases': give --edition 2024 or"
            " --edition 2025") in capsys.readouterr().err
    named = subset(tmp_path, "2024", {"global_mean": 1}, name="tests-2024")
    with Fake.of_folder(folder) as fake:
        assert check.main([str(named), "--url", f"127.0.0.1:{fake.port}"]) == 0
        assert "edition 2024 (from the folder's name; --edition chooses)" in (
            capsys.readouterr().out)
        assert check.main([str(folder), "--edition", "2025", "--url",
                           f"127.0.0.1:{fake.port}"]) == 0
        assert "edition 2025 (--edition)" in capsys.readouterr().out


def test_unreadable_cases_are_one_line_and_exit_2(tmp_path, capsys):
    for folder, message in ((tmp_path / "missing", "is not a directory"),
                            (tmp_path, "no endpoint suites under")):
        with pytest.raises(SystemExit):
            check.main([str(folder), "--edition", "2024"])
        assert message in capsys.readouterr().err
    folder = subset(tmp_path, "2024", {"best5": 1})
    (folder / "best5" / "output" / "out-1.json").write_text("{not json")
    with pytest.raises(SystemExit):
        check.main([str(folder), "--edition", "2024"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read case file" in err


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        check.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("CASES_DIR", "--edition", "--url", "--app", "--results-dir",
                   "--request-timeout", "--deep", "--pid", "--deep-shutdown"):
        assert option in text
    assert "the published cases shipped in data/cases, both editions" in text


def test_case_bodies_are_sent_as_json(tmp_path):
    folder = subset(tmp_path, "2024", {"state_mean": 1})
    body = json.loads((folder / "state_mean" / "input" / "in-1.json").read_text())
    with Fake.of_folder(folder) as fake:
        result, _ = run_check(folder, "2024", fake.port)
    assert result.all_passed and set(body) == {"question", "state"}
