"""lestats check against hostile servers: every answer read within a size
cap, a deadline and a nesting limit, so each hostile answer fails its case
in one line, with no traceback, within a few MiB of memory and a time bound
that follows from the rules (a request cut at the deadline is a case the
course's checker would hang on; three in a row end a suite, six the run)."""

import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO
from fakes import HOSTILE, Behaviour, Fake
from lestats.tools.soak import proc_status
from test_checker import subset

DEADLINE = 2.0
SUITES = {"global_mean": 4, "best5": 4}      # 8 cases: enough for both stop rules
MIB = 1024 * 1024


def run_check(folder, port):
    """Run the command in a child process: (exit status, output, errors,
    seconds, peak RSS in MiB).  The peak is the child's VmHWM, read until it
    exits (ru_maxrss would count the parent's pages it was forked with)."""
    began = time.monotonic()
    child = subprocess.Popen(   # pylint: disable=consider-using-with
        [sys.executable, "-m", "lestats", "check", str(folder), "--edition", "2024",
         "--url", f"127.0.0.1:{port}", "--request-timeout", str(DEADLINE)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    watcher = threading.Thread(target=_watch_peak, args=(child, peak), daemon=True)
    watcher.start()
    out, err = child.communicate(timeout=300)
    watcher.join()
    return child.returncode, out, err, time.monotonic() - began, peak[0] / 1024


def _watch_peak(child, peak):
    while child.poll() is None:
        peak[0] = max(peak[0], proc_status(child.pid).get("VmHWM", 0))
        time.sleep(0.01)


def time_bound(cases):
    """At most every case cut at the deadline, twice (POST and poll), until
    six hung cases in a row end the run; plus start-up."""
    return min(cases, 6) * 2 * DEADLINE + 5.0


def check_hostile(tmp_path, name, suites=None):
    folder = subset(tmp_path, "2024", suites or SUITES)
    with Fake.of_folder(folder, Behaviour(post_raw=HOSTILE[name])) as fake:
        code, out, err, seconds, rss = run_check(folder, fake.port)
    assert code == 1 and err == "", err
    assert "course score (2024 rules): " in out
    fails = [line for line in out.splitlines() if line.lstrip().startswith("FAIL ")]
    assert len(fails) == 1, out                       # one kind, shown once
    assert max(len(line) for line in out.splitlines()) < 400
    assert seconds < time_bound(8), seconds
    return out, rss


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory):
    """The checker's peak RSS against a correct server."""
    folder = subset(tmp_path_factory.mktemp("baseline"), "2024", SUITES)
    with Fake.of_folder(folder) as fake:
        code, _, _, _, rss = run_check(folder, fake.port)
    assert code == 0
    return rss


@pytest.mark.parametrize("name, says", [
    ("endless chunked body", "an answer over the 2,097,152 bytes this checker reads"),
    ("Content-Length 10**15", "Content-Length 1,000,000,000,000,000: over the"),
    ("a 200 MB JSON string", "an answer over the 2,097,152 bytes this checker reads"),
    ("[ 100,000 times", "nested deeper than 100 levels"),
])
def test_a_hostile_answer_fails_its_case_in_one_line_within_a_few_mib(
        tmp_path, baseline_rss, name, says):
    out, rss = check_hostile(tmp_path, name)
    assert says in out
    assert rss < 50 and rss - baseline_rss < 8, (rss, baseline_rss)


@pytest.mark.slow
def test_one_byte_every_2_s_is_cut_at_the_deadline_and_the_run_ends(tmp_path, baseline_rss):
    out, rss = check_hostile(tmp_path, "one byte every 2 s", {**SUITES, "worst5": 4})
    assert f"no complete answer within {DEADLINE:g} s" in out
    assert "NOT RUN: 1 case, counted failed: 3 cases in a row had no answer" in out
    assert "course score (2024 rules): none: the course's checker would hang at best5/" in out
    assert "NOT RUN: 4 cases, counted failed: the server stopped answering" in out
    assert rss < 50 and rss - baseline_rss < 8, (rss, baseline_rss)
