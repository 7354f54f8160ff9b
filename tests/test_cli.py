"""The command line: options and their one-line errors (status 2), the
one owner of a results directory, and a real process that drains on
SIGTERM/SIGINT, stops at once on a second signal or at the drain timeout,
and never loses a signal."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lestats import cli
from lestats.cli import StartError, main, parse_args, worker_count
from lestats.tools.soak import ServerProcess, call

from conftest import OBESITY, REPO, TINY_ROWS, write_csv
from lestats.lab.forcing import TIMEOUT


def test_workers_come_from_the_option_then_the_environment_then_the_cpus():
    assert worker_count(3, {"TP_NUM_OF_THREADS": "5"}) == 3
    assert worker_count(None, {"TP_NUM_OF_THREADS": " 5 "}) == 5
    assert worker_count(None, {}) >= 1


@pytest.mark.parametrize("environ, message", [
    ({"TP_NUM_OF_THREADS": "many"}, "TP_NUM_OF_THREADS must be a whole number"),
    ({"TP_NUM_OF_THREADS": "-2"}, "TP_NUM_OF_THREADS must be at least 1"),
    ({"TP_NUM_OF_THREADS": "0"}, "TP_NUM_OF_THREADS must be at least 1"),
])
def test_bad_worker_counts_are_refused(environ, message):
    with pytest.raises(StartError, match=message):
        worker_count(None, environ)


def one_line_error(capsys, prefix="lestats: error: "):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(prefix), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("option, value, message", [
    ("--port", "99999", "must be from 0 to 65535"),
    ("--port", "-1", "must be from 0 to 65535"),
    ("--port", "http", "not a number"),
    ("--client-timeout", "0", "must be more than 0"),
    ("--client-timeout", "-3", "must be more than 0"),
    ("--client-timeout", "nan", "must be more than 0"),
    ("--max-connections", "0", "must be at least 1"),
    ("--workers", "0", "must be at least 1"),
    ("--max-queued", "0", "must be at least 1"),
    ("--drain-timeout", "0", "must be more than 0"),
    ("--slow-motion", "-5", "must be at least 0"),
    ("--keep-results", "0", "must be at least 1"),
])
def test_an_option_out_of_range_is_one_line_and_status_2(capsys, option, value, message):
    with pytest.raises(SystemExit) as stopped:
        main([option, value])
    assert stopped.value.code == 2
    err = one_line_error(capsys, "lestats: error: ")
    assert option in err and message in err


def test_help_describes_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--host", "--port", "--data", "--results-dir", "--log-file", "--workers",
                   "--fsync", "--client-timeout", "--max-connections", "--max-queued",
                   "--min-free-mb", "--keep-results", "--drain-timeout", "--slow-motion",
                   "--trace"):
        assert option in text
    for default in ("(default: 5000)", "(default: results)", "(default: webserver.log)",
                    "(default: 30.0)", "(default: 1000)", "(default: 300.0)", "(default: 0.0)"):
        assert default in text


def test_a_missing_data_file_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none.csv"), "--log-file",
                 str(tmp_path / "log")]) == 2
    assert "none.csv" in one_line_error(capsys)


def test_a_csv_without_the_columns_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["--data", str(bad), "--log-file", str(tmp_path / "log")]) == 2
    assert "bad.csv: not a survey CSV: missing column(s) Question" in one_line_error(capsys)


def test_a_port_in_use_is_one_line_and_status_2(tmp_path, capsys, tiny_csv):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--data", str(tiny_csv), "--port", str(port), "--log-file",
                     str(tmp_path / "log"), "--results-dir", str(tmp_path / "r")]) == 2
    error = one_line_error(capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in error
    assert "choose another with --port" in error and "AirPlay" in error   # issue 17 (13)


def test_a_bad_worker_variable_is_one_line_and_status_2(tmp_path, capsys, tiny_csv,
                                                       monkeypatch):
    monkeypatch.setenv("TP_NUM_OF_THREADS", "lots")
    assert main(["--data", str(tiny_csv), "--log-file", str(tmp_path / "log"),
                 "--results-dir", str(tmp_path / "r")]) == 2
    one_line_error(capsys)


def test_an_unusable_results_directory_is_one_line_and_status_2(tmp_path, capsys, tiny_csv):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--data", str(tiny_csv), "--log-file", str(tmp_path / "log"),
                 "--results-dir", str(blocker / "sub"), "--port", "0"]) == 2
    assert "results directory" in one_line_error(capsys)


def test_a_start_that_fails_leaves_the_log_as_it_found_it(tmp_path, capsys, tiny_csv):
    """main() may run in a process that goes on (a test, a tool): a failed
    start takes its log handler away again and closes the log file."""
    logger = logging.getLogger("lestats")
    before = list(logger.handlers)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["--data", str(tiny_csv), "--port", str(taken.getsockname()[1]),
                     "--log-file", str(tmp_path / "log"),
                     "--results-dir", str(tmp_path / "r")]) == 2
    one_line_error(capsys)
    assert logger.handlers == before


# -- issue 17: what the server opens where its user says, and its one lines ---------------

def run_py(tmp_path, *args, prelude="", timeout=60):
    """``python3 run.py ARGS`` (after ``prelude``, Python run first), with its
    results and log in ``tmp_path``; the finished process.  A server that
    would serve instead of refusing is stopped by the timeout, and the test
    fails on it."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); {prelude}\n"
            "from lestats.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run(
        [sys.executable, "-c", code, "--port", "0", "--results-dir", str(tmp_path / "results"),
         "--log-file", str(tmp_path / "log"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, check=False)


def refused_in_one_line(finished):
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr.count("\n") == 1 and finished.stderr.startswith("lestats: error: ")
    assert "Traceback" not in finished.stderr
    return finished.stderr


def identity(path):
    """What a write would change (not the access time a read changes)."""
    info = path.stat()
    return info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns


@pytest.fixture
def root_secret(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    return secret


def test_a_trace_path_planted_as_a_link_is_refused_and_its_target_untouched(
        tmp_path, tiny_csv, root_secret):
    trace = tmp_path / "trace.json"
    trace.symlink_to(root_secret)
    before = identity(root_secret)
    error = refused_in_one_line(run_py(tmp_path, "--data", str(tiny_csv), "--trace", str(trace)))
    assert f"--trace {trace}: is a symbolic link (not followed)" in error
    assert identity(root_secret) == before and root_secret.read_text() == "root's"


def test_a_trace_path_that_is_a_hard_link_is_refused(tmp_path, tiny_csv, root_secret):
    os.link(root_secret, tmp_path / "trace.json")
    error = refused_in_one_line(run_py(tmp_path, "--data", str(tiny_csv), "--trace",
                                       str(tmp_path / "trace.json")))
    assert "has other hard links" in error and root_secret.read_text() == "root's"


@pytest.mark.parametrize("option", ["--trace", "--data"])
def test_a_fifo_for_trace_or_data_is_refused_at_once(tmp_path, tiny_csv, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = ["--data", str(tiny_csv)] if option == "--trace" else []
    error = refused_in_one_line(run_py(tmp_path, *args, option, str(fifo), timeout=20))
    assert str(fifo) in error and "not a regular file" in error


def test_the_banner_escapes_a_data_paths_newline_and_escape_sequences(tmp_path, tiny_csv):
    evil = tmp_path / "evil\n\x1b[2Jdata.csv"
    evil.write_bytes(tiny_csv.read_bytes())
    server = subprocess.Popen(   # pylint: disable=consider-using-with
        [sys.executable, str(REPO / "run.py"), "--port", "0", "--data", str(evil),
         "--results-dir", str(tmp_path / "results"), "--log-file", str(tmp_path / "log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=tmp_path)
    try:
        first = server.stderr.readline()
    finally:
        server.terminate()
        server.communicate(timeout=TIMEOUT)
    assert b"\x1b" not in first and b"evil\\n\\x1b[2Jdata.csv on http://127.0.0.1:" in first


def test_a_start_up_error_escapes_the_path_it_names(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "no\nsuch\x1b[2J.csv"), "--log-file",
                 str(tmp_path / "log")]) == 2
    assert "no\\nsuch\\x1b[2J.csv" in one_line_error(capsys)


def test_a_platform_without_fcntl_is_refused_in_one_line(tmp_path, tiny_csv):
    """Issue 17 (13): as on Windows, where ``import fcntl`` fails."""
    error = refused_in_one_line(run_py(tmp_path, "--data", str(tiny_csv),
                                       prelude="sys.modules['fcntl'] = None"))
    assert "this platform lacks fcntl.flock (one server per results directory)" in error
    assert "use WSL" in error and not (tmp_path / "results").exists()


def test_each_missing_guarantee_is_named(monkeypatch):
    from lestats import resultsdir   # pylint: disable=import-outside-toplevel
    assert resultsdir.missing_guarantees() == []
    monkeypatch.delattr(resultsdir.os, "O_NOFOLLOW")
    monkeypatch.setattr(resultsdir.os, "supports_dir_fd", set())
    assert [text.split(" (")[0] for text in resultsdir.missing_guarantees()] == [
        "O_NOFOLLOW and O_DIRECTORY", "dir_fd"]


class Server(ServerProcess):
    """``python3 run.py`` as a child process, with a few client calls."""

    def __init__(self, tmp_path, *args, python=(sys.executable,), results="results"):
        extra = list(args)
        data = tmp_path / "tiny.csv"
        if "--data" in extra:
            data = Path(extra.pop(extra.index("--data") + 1))
            extra.remove("--data")
        elif not data.exists():
            data = None
        self.log = tmp_path / "webserver.log"
        self.results = tmp_path / results
        super().__init__(data, self.results, self.log, extra, python=python, cwd=tmp_path)

    def post(self, endpoint, body):
        status, answer = call(self.port, "POST", f"/api/{endpoint}", body)
        assert status == 200, answer
        return answer

    def get(self, path):
        return call(self.port, "GET", path)[1]

    def wait_done(self, job_id):
        """get_results waits up to 0.1 s for a running job: poll with it."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            answer = self.get(f"/api/get_results/{job_id}")
            if answer["status"] != "running":
                return answer
        raise AssertionError(f"{job_id} still running")


def test_a_second_server_on_a_directory_in_use_stops_and_touches_nothing(tmp_path):
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    first = Server(tmp_path)
    try:
        job_id = first.post("global_mean", {"question": OBESITY})["job_id"]
        first.wait_done(job_id)
        before = {p: p.read_bytes() for p in first.results.rglob("*") if p.is_file()}
        second = subprocess.run(
            [sys.executable, str(REPO / "run.py"), "--port", "0", "--data",
             str(tmp_path / "tiny.csv"), "--results-dir", str(first.results),
             "--log-file", str(tmp_path / "second.log")],
            capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr == (f"lestats: error: results directory {first.results} is in use"
                                 f" by another lestats server (pid {first.pid})\n")
        assert {p: p.read_bytes() for p in first.results.rglob("*") if p.is_file()} == before
        assert first.post("global_mean", {"question": OBESITY})["job_id"] == "job_id_2"
    finally:
        assert first.stop() == 0


def test_main_serves_until_sigterm_then_drains_and_returns_0(tmp_path, tiny_csv, monkeypatch):
    """main() in this process; a helper thread uses the server, then sends
    SIGTERM to a pool worker thread: the signal must still stop the server."""
    built = threading.Event()
    services = []
    real_service = cli.Service

    def service_and_tell(*args):
        services.append(real_service(*args))
        built.set()
        return services[0]

    answers = []

    def client():
        assert built.wait(timeout=TIMEOUT)
        port = services[0].server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/num_jobs",
                                    timeout=TIMEOUT) as response:
            answers.append(json.loads(response.read()))
        worker = next(t for t in threading.enumerate() if t.name == "lestats-worker-1")
        signal.pthread_kill(worker.ident, signal.SIGTERM)

    monkeypatch.setattr(cli, "Service", service_and_tell)
    previous = signal.getsignal(signal.SIGTERM)
    helper = threading.Thread(target=client)
    helper.start()
    assert main(["--data", str(tiny_csv), "--port", "0", "--workers", "1", "--log-file",
                 str(tmp_path / "w.log"), "--results-dir", str(tmp_path / "r")]) == 0
    helper.join(timeout=TIMEOUT)
    assert answers == [{"num_jobs": 0}]
    assert signal.getsignal(signal.SIGTERM) is previous   # handlers are put back
    log = (tmp_path / "w.log").read_text()
    assert "signal SIGTERM received: draining" in log and "SYNTHETIC" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_every_accepted_job_then_exits_0(tmp_path, signum):
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--workers", "1", "--slow-motion", "5")
    ids = [server.post("global_mean", {"question": OBESITY})["job_id"] for _ in range(40)]
    assert server.stop(signum) == 0
    written = sorted(int(p.stem.rsplit("_", 1)[1]) for p in server.results.glob("job_id_*.json"))
    assert written == list(range(1, len(ids) + 1))
    log = server.log.read_text()
    assert f"signal {signal.Signals(signum).name} received: draining" in log
    assert log.rstrip().endswith("stopped")


def queued_slow_jobs(tmp_path, count, *options):
    """A server whose one worker takes 200 ms per job, with ``count`` jobs queued."""
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--workers", "1", "--slow-motion", "200", *options)
    for _ in range(count):
        server.post("global_mean", {"question": OBESITY})
    return server


def left_for_the_next_start(tmp_path):
    """How many of the 20 jobs had no result; a restart then runs them all."""
    results = tmp_path / "results"
    left = 20 - len(list(results.glob("job_id_*.json")))
    again = Server(tmp_path)
    assert again.stop() == 0   # drains what it queued again
    assert len(list(results.glob("job_id_*.json"))) == 20
    return left


def test_a_second_signal_during_the_drain_stops_at_once(tmp_path):
    server = queued_slow_jobs(tmp_path, 20)
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.send_signal(signal.SIGINT)   # back to back
    assert server.process.wait(timeout=TIMEOUT) == 0
    said = server.process.stderr.read()
    server.process.stderr.close()
    assert time.monotonic() - began < 3.0       # not the 4 s the drain would take
    assert re.search(r"\nlestats: SIG\w+ again: stopped now; \d+ unfinished job\(s\) stay in the"
                     r" journal for the next start\n$", said), said
    # If both are pending at once the kernel delivers SIGINT (2) before
    # SIGTERM (15): either may be the one that starts the drain.
    log = server.log.read_text()
    first, second = re.search(r"signal (SIG\w+) received: draining.*"
                              r"second signal (SIG\w+): stopping now", log, re.S).groups()
    assert {first, second} == {"SIGTERM", "SIGINT"}
    assert 0 < left_for_the_next_start(tmp_path) <= 20


@pytest.mark.parametrize("signum, again", [(signal.SIGINT, "Ctrl-C again stops now"),
                                           (signal.SIGTERM, "a second signal stops now")])
def test_the_terminal_says_when_the_drain_starts_and_when_it_ends(tmp_path, signum, again):
    """A drain of a few seconds must not look like a hang."""
    server = queued_slow_jobs(tmp_path, 1)
    server.process.send_signal(signum)
    assert server.process.wait(timeout=TIMEOUT) == 0
    lines = server.process.stderr.read().splitlines()
    server.process.stderr.close()
    assert re.fullmatch(rf"lestats: {signal.Signals(signum).name}: draining [01] job\(s\), at"
                        rf" most 300 s; {again} \(unfinished jobs stay in the journal for the"
                        r" next start\)", lines[-2]), lines
    assert lines[-1] == "lestats: drain done: every accepted job has finished; stopped"


def test_a_second_signal_once_the_drain_is_under_way_stops_at_once(tmp_path):
    server = queued_slow_jobs(tmp_path, 20)
    server.process.send_signal(signal.SIGTERM)
    said = server.process.stderr.readline()
    while "draining" not in said:   # the banner's lines come first
        said = server.process.stderr.readline()
        assert said, "the server ended without saying it drains"
    began = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=TIMEOUT) == 0
    assert time.monotonic() - began < 3.0       # not the 4 s the drain would take
    assert "SIGINT again: stopped now" in server.process.stderr.read()
    server.process.stderr.close()
    assert 0 < left_for_the_next_start(tmp_path) <= 20


def test_the_drain_timeout_ends_the_drain_and_the_rest_runs_at_next_start(tmp_path):
    server = queued_slow_jobs(tmp_path, 20, "--drain-timeout", "0.5")
    assert server.stop() == 0
    assert "drain timeout after 0.5 s" in server.log.read_text()
    assert 0 < left_for_the_next_start(tmp_path) < 20


def test_the_log_has_utc_times_with_z_and_every_route_entry_and_exit(tmp_path):
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--data", str(tmp_path / "tiny.csv"))
    job_id = server.post("global_mean", {"question": OBESITY})["job_id"]
    assert server.wait_done(job_id)["data"] == {"global_mean": 14.5}
    server.get("/api/num_jobs")
    assert server.stop() == 0
    lines = server.log.read_text().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|DEBUG|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in lines if not line.startswith((" ", "Traceback")))
    text = "\n".join(lines)
    assert f"POST /api/global_mean begin body=b'{{\"question\": \"{OBESITY}\"}}'" in text
    assert f"POST /api/global_mean end 200 {job_id}" in text
    assert f"GET /api/get_results/{job_id} end 200 {job_id}" in text
    assert "GET /api/num_jobs end 200" in text


def test_with_no_data_option_the_shipped_data_is_used_and_said_to_be(tmp_path):
    server = Server(tmp_path)   # no --data: the course file is not in tmp_path either
    assert "data/nutrition_activity_obesity_usa_subset.csv.gz" in server.banner
    assert "the shipped data: the course's CSV rebuilt from its published outputs" in (
        server.banner)
    assert server.stop() == 0
    assert "synthetic rows with the course's means" in server.log.read_text()


def test_slow_motion_is_said_at_start(tmp_path):
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--slow-motion", "300")
    line = server.process.stderr.readline()
    assert server.stop() == 0
    assert line == "lestats: slow motion: every job takes at least 300 ms (teaching)\n"


def test_python_m_lestats_is_the_same_program_and_runs_the_tools(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lestats", "--data", str(tmp_path / "no.csv")],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("lestats: error:")
    assert "no.csv" in result.stderr
    tool = subprocess.run([sys.executable, "-m", "lestats", "check", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert tool.returncode == 0 and tool.stdout.startswith("usage: python3 -m lestats check")
    assert os.path.isfile(REPO / "lestats" / "grade" / "check.py")


def test_on_sigterm_every_accepted_request_is_answered(tmp_path):
    """Clients POST as fast as they can while SIGTERM arrives: the server
    stops accepting connections, answers the requests it has begun, and
    exits; afterwards no job exists whose id its client was not told."""
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--workers", "1")
    told, stop = [], threading.Event()   # list.append is atomic

    def client():
        while not stop.is_set():
            try:
                status, answer = call(server.port, "POST", "/api/global_mean",
                                      {"question": OBESITY}, timeout=TIMEOUT)
            except OSError:
                return   # refused or reset: the server has stopped listening
            if status == 200:
                told.append(answer["job_id"])

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    while len(told) < 200:
        time.sleep(0.01)
    assert server.stop() == 0
    stop.set()
    for thread in clients:
        thread.join(timeout=TIMEOUT)
    again = Server(tmp_path)
    try:
        listed = {job_id for item in again.get("/api/jobs")["data"] for job_id in item}
    finally:
        assert again.stop() == 0
    assert listed == set(told)


def test_on_sigterm_a_request_still_arriving_is_answered_before_exit(tmp_path):
    """A POST whose body is half sent when SIGTERM comes: the server waits
    for it (within the client timeout) and answers it before it exits."""
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--client-timeout", "5")
    body = json.dumps({"question": OBESITY}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /api/global_mean HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"   # the head is in: in flight
        sock.sendall(body[:10])
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while "received: draining" not in server.log.read_text():
            assert time.monotonic() < deadline, "the signal was not taken"
            time.sleep(0.01)
        sock.sendall(body[10:])
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
    assert reply.endswith(b'{"status": "error", "reason": "shutting down"}')
    assert server.process.wait(timeout=TIMEOUT) == 0
    server.process.stderr.close()
