"""python3 -m lestats grade: one CSV row per submission, whatever the
submission does; each server started the course's way and stopped whole."""

import csv
import os
import shutil
import sys

import pytest

from conftest import REPO
from lestats.data import COURSE_FILE_NAME
from lestats.grade import grade
from lestats.grade.cases import SHIPPED_CASES
from lestats.grade.submissions import SubmissionError, entry_point, listening, place_course_csv

TESTS = REPO / "tests"
SUITES = sorted(os.listdir(SHIPPED_CASES / "2025"))

# A submission serving the 2025 cases from tests/fakes.py on the port grade gives it.
FAKE = '''import os, sys, time
sys.path.insert(0, {tests!r})
from fakes import Behaviour, Fake
with open("pid", "w") as out:
    out.write(str(os.getpid()))
{before}
port = int(os.environ["FLASK_RUN_PORT"])
with Fake.of_folder({cases!r}, Behaviour({behaviour}), port=port) as fake:
    {setup}
    print("serving", flush=True)
    time.sleep(3600)
'''


def fake_submission(root, name, behaviour="", before="", setup="pass"):
    """A folder whose api_server.py is a fake server."""
    folder = root / name
    folder.mkdir()
    (folder / "api_server.py").write_text(FAKE.format(
        tests=str(TESTS), cases=str(SHIPPED_CASES / "2025"), behaviour=behaviour,
        before=before, setup=setup))
    return folder


def lestats_submission(root):
    """lestats itself: its run.py and package."""
    folder = root / "lestats"
    folder.mkdir()
    shutil.copy(REPO / "run.py", folder)
    (folder / "lestats").symlink_to(REPO / "lestats")
    return folder


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as source:
        return {row["submission"]: row for row in csv.DictReader(source)}


def gone(folder):
    """Has the process whose pid the fake wrote ended?"""
    pid = int((folder / "pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def course_points(passed, cases):
    """The course's points of a suite."""
    return min(round(10 * passed / cases), 10)


@pytest.mark.slow
def test_three_submissions_three_rows_in_one_run(tmp_path, capsys):
    submissions = [lestats_submission(tmp_path),
                   fake_submission(tmp_path, "half", "wrong_every=2"),
                   fake_submission(tmp_path, "never", before="time.sleep(3600)")]
    out = tmp_path / "grades.csv"
    assert grade.main([*map(str, submissions), "--out", str(out), "--start-timeout", "3",
                       "--server-arg=--port=0"]) == 0
    rows = rows_of(out)
    assert list(rows) == ["lestats", "half", "never"]
    assert rows["lestats"]["status"] == "graded"
    assert rows["lestats"]["started"] == "python3 run.py"
    assert (rows["lestats"]["total"], rows["lestats"]["possible"]) == ("100", "100")
    assert rows["lestats"]["cases passed"] == "114/114"
    # Every second POST of a suite wrong: 5 of 9 pass, 10 of 20.
    for suite in SUITES:
        cases = len(os.listdir(SHIPPED_CASES / "2025" / suite / "input"))
        assert rows["half"][suite] == str(course_points(cases - cases // 2, cases)), suite
    assert rows["half"]["total"] == str(10 + sum(int(rows["half"][s]) for s in SUITES))
    assert rows["never"]["status"] == "did not start: did not listen within 3 s"
    assert rows["never"]["total"] == ""
    assert gone(tmp_path / "half") and gone(tmp_path / "never")
    assert not (tmp_path / "lestats" / COURSE_FILE_NAME).exists()   # placed, then removed
    text = capsys.readouterr().out
    assert "[3/3]" in text and "3 rows in" in text


def test_a_server_that_exits_or_cannot_start_gets_its_row_and_the_next_runs(tmp_path):
    crashing = fake_submission(tmp_path, "crash", setup="fake.on_post = lambda _: os._exit(3)")
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "api_server.py").write_text("raise SystemExit('no data')\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "grades.csv"
    assert grade.main([str(crashing), str(failing), str(empty), "--out", str(out),
                       "--edition", "2024", "--request-timeout", "1"]) == 0
    rows = rows_of(out)
    assert rows["crash"]["status"].startswith("the server exited (status 3) while being graded")
    assert rows["crash"]["total"] == "0"      # every case after the exit is refused
    assert rows["failing"]["status"] == (
        "did not start: exited with status 1 before listening; its output ends: no data")
    assert rows["empty"]["status"] == (
        "did not start: no api_server.py, run.py, app/ or app.py to start")
    assert (tmp_path / "grades-logs" / "crash.log").read_text().startswith("serving")


def test_the_entry_point_is_the_courses(tmp_path):
    python = sys.executable
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    assert entry_point(tmp_path, python) == ([python, "-m", "flask", "run"], "flask run")
    (tmp_path / "run.py").write_text("")
    assert entry_point(tmp_path, python) == ([python, "run.py"], "python3 run.py")
    (tmp_path / "api_server.py").write_text("")
    assert entry_point(tmp_path, python) == ([python, "api_server.py"], "python3 api_server.py")
    with pytest.raises(SubmissionError, match="no api_server.py"):
        entry_point(tmp_path / "app", python)


def test_the_course_csv_is_placed_only_where_there_is_none(tmp_path, checker_csv):
    placed = place_course_csv(tmp_path, checker_csv)
    assert placed == tmp_path / COURSE_FILE_NAME
    assert placed.read_text(encoding="utf-8").startswith(",YearStart,YearEnd,")
    assert place_course_csv(tmp_path, checker_csv) is None


def test_the_listening_port_of_a_session_is_found():
    import socket   # pylint: disable=import-outside-toplevel
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert listening(os.getsid(0))[port] == (os.getpid(), port)


@pytest.mark.parametrize("argv, message", [
    (["nowhere"], "not a folder: nowhere"),
    ([".", "--cases", "nowhere"], "no cases at nowhere"),
    ([".", "--time-limit", "0"], "--time-limit 0: give a number of seconds above 0"),
    ([".", "--deep-shutdown"], "--deep-shutdown goes with --deep"),
    ([".", "."], "two submissions have the same folder name"),
])
def test_a_run_that_cannot_start_is_one_line_and_exit_2(argv, message, capsys):
    assert grade.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
