"""check --deep: each probe says FOUND on the mistake it looks for, with the
evidence, and nothing on a correct server.

The quick tests give the probes' verdicts the answers a mistaken server
gives.  The slow ones run every probe against real servers: the small
course-style server of tests/course_server.py, with each mistake no pool
makes and without, and lestats with its deliberately broken pools.  (The
20-runs-of-20 figures of the README come from tests/deep_validation.py.)"""

import io
import re
import subprocess
import sys

import pytest

from conftest import REPO
from lestats.grade import deep, probes
from lestats.grade.cases import SHIPPED_CASES, load_suites
from lestats.grade.client import Client
from lestats.grade.course import EDITIONS
from lestats.grade.findings import FOUND, NOT_SEEN, PASS, Context, Workload
from lestats.grade.traffic import Monitor, Seen, Waited
from lestats.tools.soak import ServerProcess

COURSE_SERVER = REPO / "tests" / "course_server.py"
SUITES = load_suites(SHIPPED_CASES / "2025")
RUNNING = Seen(200, {"status": "running"}, "200 running")
DONE = Seen(200, {"status": "done", "data": {"a": 1.0}}, "200 done")


def context(edition="2025"):
    return Context(Client("127.0.0.1", 1), Workload.from_suites(SUITES), EDITIONS[edition])


# -- the verdicts, on the answers a mistaken server gives -------------------------------

def test_the_workload_comes_from_the_cases():
    workload = Workload.from_suites(SUITES)
    assert len(workload.questions) == 9
    assert len(workload.pairs) >= 20
    assert [endpoint for endpoint, _ in workload.large()] == ["mean_by_category"] * 9
    assert workload.cheap(3)[2] == ("state_mean", dict(zip(("question", "state"),
                                                            workload.pairs[2])))


def test_a_half_written_result_is_evidence_only_when_the_job_ends_done():
    torn = Seen(200, None, "200 b'{\"status\": \"done\", \"data\": {\"Ala'")
    failed = Seen(500, {"status": "error"}, "500 error")
    other = Seen(200, {"status": "done", "data": {}}, "200 done {}")
    found = probes._torn("job_id_7", [[RUNNING, torn], [failed, other, DONE]], DONE)
    assert found == [
        "job_id_7 was answered 200 b'{\"status\": \"done\", \"data\": {\"Ala' (not JSON)"
        " while it finished",
        "job_id_7 was answered 500 error while it finished, then done",
        "job_id_7 was answered done with other data (200 done {}) than its final answer"]
    assert probes._torn("job_id_7", [[torn]], RUNNING) == []


def test_a_status_that_goes_back_or_comes_late_is_noted():
    ctx = context()
    unknown = Seen(404, {"status": "error", "reason": "Invalid job_id"}, "404 Invalid job_id")
    probes._status_clues(ctx, "job_id_3", [[unknown, RUNNING, DONE], [DONE, RUNNING]])
    assert ctx.clues["status"] == [
        "job_id_3 was answered 404 Invalid job_id just after its POST, before it was done",
        "job_id_3 answered running after it had answered done"]
    finding = probes.status(ctx, Waited({}, {}, 0.1))
    assert finding.verdict == FOUND and finding.detail.endswith("(and 1 more)")


def test_threads_that_end_while_the_server_runs_are_found():
    assert probes.threads({1, 2, 3}, {1, 2, 3}, {1, 2, 3}, 10).verdict == PASS
    found = probes.threads({1, 2, 3}, {1, 3}, {1, 3}, 10)
    assert found.verdict == FOUND and "ended during the 10 jobs (thread 2)" in found.detail
    assert "during the bad requests" in probes.threads({1, 2}, {1, 2}, {1}, 10).detail
    assert probes.threads(None, None, None, 10).verdict == NOT_SEEN


def test_a_slow_or_silent_answer_while_jobs_run_is_found():
    monitor = Monitor(Client("127.0.0.1", 1))
    monitor.requests, monitor.slowest = 50, 0.02
    assert probes.busy(monitor).verdict == PASS
    monitor.slowest = 2.5
    assert "took 2.5 s" in probes.busy(monitor).detail
    monitor.unanswered = ["no answer: no complete answer within 5 s"]
    assert probes.busy(monitor).verdict == FOUND


@pytest.mark.parametrize("edition, job_id, seen, refused", [
    ("2025", None, Seen(503, {"status": "error", "reason": "shutting down"}, ""), True),
    ("2025", None, Seen(200, {"job_id": -1, "reason": "shutting down"}, ""), False),
    ("2024", None, Seen(200, {"job_id": -1, "reason": "shutting down"}, ""), True),
    ("2024", "job_id_9", Seen(200, {"job_id": "job_id_9"}, ""), False),
    ("2025", None, Seen(0, None, "no answer: connection refused"), True),
])
def test_a_post_after_shutdown_is_refused_as_the_edition_says(edition, job_id, seen, refused):
    assert probes._refused(context(edition), job_id, seen) is refused


def test_a_negative_count_is_found():
    monitor = Monitor(Client("127.0.0.1", 1))
    monitor.requests, monitor.lowest = 40, -1
    finding = probes.num_jobs(context(), monitor, Waited({}, {}, 0.1))
    assert (finding.verdict, finding.detail) == (FOUND, "num_jobs was -1 while jobs ran")


# -- against real servers ------------------------------------------------------------------

def course_server(tmp_path, mistake, *options):
    return ServerProcess(None, tmp_path / "results", tmp_path / "webserver.log",
                         ["--mistake", mistake, *options], entry=(str(COURSE_SERVER),),
                         cwd=tmp_path)


def lestats_server(tmp_path, *options):
    return ServerProcess(None, tmp_path / "results", tmp_path / "webserver.log",
                         ["--workers", "2", *options])


def run_deep(server, tmp_path, shutdown=True):
    try:
        return {finding.probe: finding for finding in deep.run(
            Client("127.0.0.1", server.port), SUITES, io.StringIO(), pid=server.pid,
            results_dir=tmp_path / "results", shutdown=shutdown)}
    finally:
        server.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mistake, probe, evidence", [
    # How many POSTs share an id is the race's: 3 in one run under load.
    ("unlocked-ids", "ids", r"job_id_\d+ was given to ([2-9]|\d\d+) POSTs"),
    ("write-in-place", "results", "while it finished"),
    ("status-after-queue", "status", "never finished"),
])
def test_each_mistake_no_pool_makes_is_found(tmp_path, mistake, probe, evidence):
    found = run_deep(course_server(tmp_path, mistake), tmp_path)
    assert found[probe].verdict == FOUND and re.search(evidence, found[probe].detail), (
        found[probe])


@pytest.mark.slow
def test_the_course_style_server_without_a_mistake_shows_nothing(tmp_path):
    # Jobs of 50 ms, as a skeleton's: 16 clients queue 10 of them on 2 workers at
    # once, however busy the machine, so that the drain is looked at (PASS, not NOT SEEN).
    found = run_deep(course_server(tmp_path, "none", "--job-seconds", "0.05"), tmp_path)
    assert not [finding for finding in found.values() if finding.found]
    assert found["shutdown"].verdict == PASS


@pytest.mark.slow
@pytest.mark.parametrize("lab, slow_motion, probe", [
    ("spin-wait", 0, "idle"), ("poll-timeout", 0, "idle"), ("never-exit", 0, "shutdown"),
    ("if-not-while", 0, "threads"), ("no-drain", 20, "shutdown"),
])
def test_the_labs_that_show_from_outside_are_found(tmp_path, lab, slow_motion, probe):
    server = lestats_server(tmp_path, "--broken-pool-for-teaching", lab,
                            "--slow-motion", str(slow_motion))
    found = run_deep(server, tmp_path)
    assert found[probe].verdict == FOUND, found[probe]


@pytest.mark.slow
def test_the_command_probes_lestats_and_finds_nothing(tmp_path):
    server = lestats_server(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lestats", "check", "--edition", "2025", "--url",
             f"127.0.0.1:{server.port}", "--deep", "--pid", str(server.pid), "--results-dir",
             str(tmp_path / "results"), "--deep-shutdown"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        server.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "course score (2025 rules): 100/100" in result.stdout
    # Whether a job is still queued when graceful_shutdown comes depends on the
    # machine's speed: the drain is PASS or NOT SEEN, never FOUND.
    assert "deep: 0 found; " in result.stdout
    assert result.stderr == ""


def test_deep_needs_cases_with_states(tmp_path):
    out = io.StringIO()
    findings = deep.run(Client("127.0.0.1", 1), [], out)
    assert [(f.probe, f.verdict) for f in findings] == [("all", NOT_SEEN)]
    assert "the cases hold no (question, state) to ask about" in out.getvalue()
