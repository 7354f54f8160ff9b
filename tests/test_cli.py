"""The command line: options, one-line start-up errors with status 2, and a
real process that drains its jobs on SIGTERM/SIGINT and exits 0."""

import json
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
from lestats.cli import StartError, build_server, main, worker_count
from lestats.tools.soak import ServerProcess, call

from conftest import OBESITY, REPO, TINY_ROWS, cli_args, write_csv


def test_workers_come_from_the_option_then_the_environment_then_the_cpus():
    assert worker_count(3, {"TP_NUM_OF_THREADS": "5"}) == 3
    assert worker_count(None, {"TP_NUM_OF_THREADS": "5"}) == 5
    assert worker_count(None, {}) >= 1


@pytest.mark.parametrize("option, environ, message", [
    (0, {}, "--workers must be at least 1, not 0"),
    (None, {"TP_NUM_OF_THREADS": "many"}, "TP_NUM_OF_THREADS must be a whole number"),
    (None, {"TP_NUM_OF_THREADS": "-2"}, "TP_NUM_OF_THREADS must be at least 1"),
])
def test_bad_worker_counts_are_refused(option, environ, message):
    with pytest.raises(StartError, match=message):
        worker_count(option, environ)


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lestats: error: "), err
    assert "Traceback" not in err
    return err


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
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys)


def test_a_bad_worker_variable_is_one_line_and_status_2(tmp_path, capsys, tiny_csv,
                                                       monkeypatch):
    monkeypatch.setenv("TP_NUM_OF_THREADS", "lots")
    assert main(["--data", str(tiny_csv), "--log-file", str(tmp_path / "log"),
                 "--results-dir", str(tmp_path / "r")]) == 2
    one_line_error(capsys)


def test_an_unusable_results_directory_is_a_start_error(tmp_path, tiny_index):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartError, match="results directory"):
        build_server(tiny_index, cli_args(results_dir=str(blocker / "sub")), {})


def test_main_serves_until_sigterm_then_drains_and_returns_0(tmp_path, tiny_csv, monkeypatch):
    """main() in this process; a helper thread uses the server, then sends SIGTERM."""
    built = threading.Event()
    servers = []
    real_build = cli.build_server

    def build_and_tell(*args):
        servers.append(real_build(*args))
        built.set()
        return servers[0]

    def client():
        assert built.wait(timeout=10)
        # Answered only once serve_forever runs, i.e. after the handlers are installed.
        url = f"http://127.0.0.1:{servers[0].server_port}/api/num_jobs"
        with urllib.request.urlopen(url, timeout=10) as response:
            answers.append(json.loads(response.read()))
        os.kill(os.getpid(), signal.SIGTERM)

    answers = []
    monkeypatch.setattr(cli, "build_server", build_and_tell)
    previous = signal.getsignal(signal.SIGINT)
    helper = threading.Thread(target=client)
    helper.start()
    assert main(["--data", str(tiny_csv), "--port", "0", "--log-file",
                 str(tmp_path / "w.log"), "--results-dir", str(tmp_path / "r")]) == 0
    helper.join(timeout=10)
    assert answers == [{"num_jobs": 0}]
    assert signal.getsignal(signal.SIGINT) is previous   # handlers are put back
    log = (tmp_path / "w.log").read_text()
    assert "signal received: draining" in log and "SYNTHETIC" not in log


class Server(ServerProcess):
    """``python3 run.py`` as a child process, with a few client calls."""

    def __init__(self, tmp_path, *args, python=(sys.executable,)):
        extra = list(args)
        data = tmp_path / "tiny.csv"
        if "--data" in extra:
            data = Path(extra.pop(extra.index("--data") + 1))
            extra.remove("--data")
        elif not data.exists():
            data = None
        self.log = tmp_path / "webserver.log"
        self.results = tmp_path / "results"
        super().__init__(data, self.results, self.log, extra, python=python, cwd=tmp_path)

    def post(self, endpoint, body):
        status, answer = call(self.port, "POST", f"/api/{endpoint}", body)
        assert status == 200, answer
        return answer

    def get(self, path):
        return call(self.port, "GET", path)[1]

    def wait_done(self, job_id):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = self.get(f"/api/get_results/{job_id}")
            if answer["status"] != "running":
                return answer
            time.sleep(0.02)
        raise AssertionError(f"{job_id} still running")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_every_accepted_job_then_exits_0(tmp_path, checker_dir, signum):
    server = Server(tmp_path, "--data", str(checker_dir / "nutrition_activity_obesity_usa_subset.csv"),
                    "--workers", "1")
    question = "Percent of adults aged 18 years and older who have obesity"
    ids = [server.post("mean_by_category", {"question": question})["job_id"]
           for _ in range(100)]
    assert server.stop(signum) == 0
    written = sorted(int(p.stem.rsplit("_", 1)[1]) for p in server.results.glob("job_id_*.json"))
    assert written == list(range(1, len(ids) + 1))
    log = server.log.read_text()
    assert "signal received: draining" in log and log.rstrip().endswith("stopped")


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


def test_with_no_data_option_the_demo_is_used_and_labelled_synthetic(tmp_path):
    server = Server(tmp_path)   # no --data: the course file is not in tmp_path either
    assert "demo.csv" in server.banner and "synthetic" in server.banner
    assert server.stop() == 0
    assert "SYNTHETIC demo data" in server.log.read_text()


def test_python_m_lestats_is_the_same_program(tmp_path, tiny_csv):
    result = subprocess.run([sys.executable, "-m", "lestats", "--data", str(tmp_path / "no.csv")],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("lestats: error:")
    assert "no.csv" in result.stderr
