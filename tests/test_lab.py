"""The bug lab: in every lab the broken variant shows its symptom and the
correct lestats code does not, in the same run; the code shown and the line
named are read from the source; the server never imports the lab unless it
is told to serve with a broken pool, and then says so everywhere."""

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from lestats import cli
from lestats.lab import labs, runner
from lestats.lab.broken import pools
from lestats.pool import EXTENSION_POINTS
from lestats.tools.soak import ServerProcess, call

from conftest import OBESITY, REPO, TINY_ROWS, write_csv
from lestats.lab.forcing import TIMEOUT


def run(name):
    """Run lab ``name``: the broken side shows the symptom, the correct one does not."""
    broken, correct = labs.find(name).run()
    assert broken.symptom, broken
    assert not correct.symptom, correct
    return broken, correct


# -- one test per lab ----------------------------------------------------------------

def test_spinning_workers_burn_cpu_while_idle_and_waiting_ones_do_not():
    broken, correct = run("spin-wait")
    assert broken.number > correct.number and correct.number < 0.05
    assert correct.text == "0% CPU, 0 wake-ups"


def test_polling_workers_wake_on_every_timeout_and_waiting_ones_never():
    broken, correct = run("poll-timeout")
    assert broken.number >= 2 and correct.number == 0


def test_stopping_on_the_flag_loses_the_queued_jobs_and_a_drain_runs_them():
    broken, correct = run("no-drain")
    assert broken.text == "10 of 10 lost (invariant false)"
    assert correct.text == "0 of 10 lost"


def test_workers_without_a_way_out_outlive_shutdown_and_the_pool_s_exit():
    broken, correct = run("never-exit")
    assert (broken.number, correct.number) == (2, 0)


def test_if_around_wait_loses_a_worker_on_an_empty_wake_up_and_while_does_not():
    broken, correct = run("if-not-while")
    assert broken.text == "1 of 2 left (invariant false)"
    assert correct.text == "2 of 2 left"


def test_a_task_under_the_lock_runs_alone_and_outside_it_tasks_overlap():
    broken, correct = run("task-under-lock")
    assert broken.text.endswith("1 at once")
    assert correct.number > broken.number


def test_a_wait_without_predicate_misses_a_notify_and_wait_for_does_not():
    broken, correct = run("lost-notify")
    assert broken.text.startswith("False") and broken.number >= labs.JOIN_TIMEOUT
    assert correct.text.startswith("True") and correct.number < labs.JOIN_TIMEOUT


def test_a_shutdown_check_outside_the_lock_strands_a_job_and_under_it_none():
    broken, correct = run("check-outside-lock")
    assert broken.text == "accepted, never run"
    assert correct.text in ("accepted and run", "refused")


def test_an_unlocked_counter_gives_one_id_twice_and_the_job_manager_never():
    broken, correct = run("unlocked-ids")
    assert broken.text == "job_id_1 twice"
    assert correct.text == "job_id_1, job_id_2"


def test_the_thread_count_as_a_string_crashes_and_worker_count_converts_it():
    broken, correct = run("env-string")
    assert broken.text.startswith("TypeError")
    assert correct.text == "4 workers"


def test_a_file_written_in_place_is_read_half_written_and_a_renamed_one_never():
    broken, correct = run("write-in-place")
    assert broken.text.endswith("not JSON") and 0 < broken.number
    assert correct.text.startswith("no file, then")


def test_there_is_a_test_above_for_every_lab():
    tested = {"spin-wait", "poll-timeout", "no-drain", "never-exit", "if-not-while",
              "task-under-lock", "lost-notify", "check-outside-lock", "unlocked-ids",
              "env-string", "write-in-place"}
    assert {lab.name for lab in labs.LABS} == tested


# -- the code shown, and where lestats does it right ----------------------------------

@pytest.mark.parametrize("lab", labs.LABS, ids=lambda lab: lab.name)
def test_the_line_that_does_it_right_is_found_in_the_correct_source(lab):
    path, number, text = runner.right_line(lab)
    assert path.startswith("lestats/") and not path.startswith("lestats/lab/")
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    assert lines[number - 1].strip() == text and lab.right in text


@pytest.mark.parametrize("lab", labs.LABS, ids=lambda lab: lab.name)
def test_the_code_shown_marks_the_mistake(lab):
    shown = runner.code_shown(lab)
    assert any("# BROKEN:" in line for line in shown)
    if lab.broken.__name__ == lab.correct.__name__:   # a diff against the correct method
        assert shown[0].startswith("--- correct: lestats/")
        assert shown[1].startswith("+++ BROKEN (the + lines are the mistake): lestats/lab/")
        assert any(line.startswith("+") and "# BROKEN:" in line for line in shown)
        assert not any('"""' in line for line in shown)   # docstrings left out


def test_every_broken_pool_names_itself_and_overrides_one_method():
    broken = [cls for cls in vars(pools).values()
              if isinstance(cls, type) and issubclass(cls, pools.ThreadPool)
              and cls is not pools.ThreadPool]
    assert len(broken) == 8
    for cls in broken:
        own = [name for name, value in vars(cls).items() if callable(value)]
        assert len(own) == 1 and own[0] in EXTENSION_POINTS, (cls, own)
        assert cls.variant in pools.FOR_THE_SERVER or cls.variant in pools.NOT_FOR_THE_SERVER
        assert labs.find(cls.variant) is not None


# -- the command line --------------------------------------------------------------------

def test_without_a_name_the_labs_are_listed_one_line_each(capsys):
    assert runner.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    for lab in labs.LABS:
        assert any(line.split() and line.split()[0] == lab.name and lab.summary in line
                   for line in lines)


def test_one_lab_shows_the_mistake_the_code_the_measures_and_the_place(capsys):
    assert runner.main(["lost-notify"]) == 0
    out = capsys.readouterr().out
    path, number, text = runner.right_line(labs.find("lost-notify"))
    assert out.startswith("lost-notify: a notify sent before the waiter waits is lost")
    assert "-        if not self._all_done.wait_for(lambda: self._unfinished == 0" in out
    assert "+        if not self._all_done.wait(timeout):" in out
    assert "    broken   False after 0.3" in out and "    correct  True after 0.0" in out
    assert "    verdict  shown: " in out
    assert out.rstrip().endswith(f"Done right at {path}:{number}:  {text}")
    assert path == "lestats/pool.py"


def test_the_table_fits_its_width_and_wraps_the_widest_cells():
    rows = [("lab", "measured", "broken", "correct", "verdict"),
            ("env-string", "start with TP_NUM_OF_THREADS=4",
             "TypeError: 'str' object cannot be interpreted as an integer", "4 workers", "shown")]
    lines = runner.fitted(rows, 75)
    assert max(len(line) for line in lines) <= 75 and len(lines) > 2
    assert lines[1].startswith("env-string") and lines[1].endswith("  shown")
    assert all(line.startswith(" " * len("env-string")) for line in lines[2:])
    assert sorted(" ".join(lines[1:]).split()) == sorted(" ".join(rows[1]).split())   # all there
    assert runner.fitted(rows, 200)[1].split("  ")[0] == "env-string"
    assert len(runner.fitted(rows, 200)) == 2   # room enough: nothing wrapped


def test_a_reader_that_goes_away_ends_the_lab_quietly():
    """``python3 -m lestats lab NAME | head -3``: no traceback."""
    done = subprocess.run(f"{sys.executable} -m lestats lab lost-notify | head -3", shell=True,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("lost-notify: ") and done.stdout.count("\n") == 3
    assert done.stderr == ""


def test_an_unknown_lab_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        runner.main(["spin"])
    assert stopped.value.code == 2
    assert "no lab called 'spin'; the labs: spin-wait, " in capsys.readouterr().err


@pytest.mark.slow
def test_all_runs_every_lab_into_one_table_through_both_entry_points():
    """About 3 s: every lab once, as `python3 -m lestats lab --all`."""
    done = subprocess.run([sys.executable, "-m", "lestats", "lab", "--all"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["lab", "measured", "broken", "correct", "verdict"]
    assert max(len(row) for row in rows) <= runner.TABLE_WIDTH
    named = [row for row in rows[1:-2] if not row.startswith(" ")]   # a lab's first line
    assert [row.split()[0] for row in named] == [lab.name for lab in labs.LABS]
    assert all(row.endswith("  shown") for row in named)
    assert rows[-1].startswith(f"{len(labs.LABS)} labs in ")
    listed = subprocess.run([sys.executable, "-m", "lestats.lab"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.startswith("spin-wait ")


# -- the server and the lab ----------------------------------------------------------------

def test_the_server_s_default_path_imports_no_lab_module(tmp_path):
    """run.py under -X importtime: every module imported by start-up and a
    request is listed on stderr; none of the lab's may be."""
    data = write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = subprocess.Popen(   # pylint: disable=consider-using-with
        [sys.executable, "-X", "importtime", str(REPO / "run.py"), "--port", "0",
         "--data", str(data), "--results-dir", str(tmp_path / "r"),
         "--log-file", str(tmp_path / "log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, cwd=tmp_path)
    try:
        lines = []
        for line in server.stderr:
            lines.append(line)
            if line.startswith("lestats: serving"):
                break
        port = int(lines[-1].rsplit(":", 1)[1].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pool",
                                    timeout=TIMEOUT) as response:
            assert json.loads(response.read())["variant"] is None
        call(port, "POST", "/api/global_mean", {"question": OBESITY})
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        lines.extend(server.stderr)
        server.stderr.close()
    imported = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
    assert "lestats.cli" in imported and "lestats.pool" in imported
    assert [name for name in imported if name.startswith("lestats.lab")] == []


def test_a_broken_pool_for_teaching_is_reported_by_the_api_the_banner_and_the_log(tmp_path):
    data = write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = ServerProcess(data, tmp_path / "results", tmp_path / "w.log",
                           extra=["--broken-pool-for-teaching", "poll-timeout", "--workers", "2"])
    try:
        warning = server.process.stderr.readline()
        status, snapshot = call(server.port, "GET", "/api/pool")
        assert status == 200 and snapshot["variant"] == "poll-timeout"
        status, answer = call(server.port, "POST", "/api/global_mean", {"question": OBESITY})
        assert status == 200 and answer["job_id"] == "job_id_1"
    finally:
        assert server.stop() == 0
    assert warning.startswith("lestats: WARNING: DELIBERATELY BROKEN pool 'poll-timeout'")
    assert " WARNING MainThread lestats.cli: DELIBERATELY BROKEN pool 'poll-timeout'" in (
        tmp_path / "w.log").read_text()


@pytest.mark.parametrize("name, says", [
    ("nope", "no broken pool is called 'nope'"),
    ("task-under-lock", "it deadlocks the server"),
])
def test_a_broken_pool_the_server_cannot_use_is_one_line_and_status_2(tmp_path, capsys,
                                                                      tiny_csv, name, says):
    assert cli.main(["--data", str(tiny_csv), "--port", "0", "--log-file",
                     str(tmp_path / "log"), "--results-dir", str(tmp_path / "r"),
                     "--broken-pool-for-teaching", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "spin-wait, poll-timeout" in err


def test_the_help_says_the_broken_pool_is_deliberately_broken(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    assert "DELIBERATELY BROKEN" in " ".join(capsys.readouterr().out.split())
