"""The benchmark cannot rot: its quick mode runs end to end, and its own
servers answer as they claim."""

import json
import os
import re
import socket
import threading

import pytest

from lestats.statistics import prepare
from lestats.tools import bench
from lestats.tools.bench import startup, syscalls
from lestats.storage import JobStore
from lestats.webserver import StatsServer

from conftest import OBESITY, UNRANKED


@pytest.mark.slow
def test_the_quick_benchmark_runs_and_writes_its_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    for key in ("floor_cycles_per_s", "contract_floor_cycles_per_s", "lestats_cycles_per_s",
                "lestats_fsync_cycles_per_s", "ratio_to_floor", "ratio_to_contract_floor",
                "job_latency_ms", "syscalls_per_cycle", "checker", "startup",
                "compute_per_job", "watching", "memory_per_job"):
        assert key in report
    for key in ("contract_floor_cycles_per_s", "lestats_cycles_per_s", "ratio_to_floor",
                "ratio_to_contract_floor"):
        assert set(report[key]) == {"1", "4", "16"}
        assert all(value > 0 for value in report[key].values())
    assert report["job_latency_ms"]["jobs"] > 0
    counted = report["syscalls_per_cycle"]
    assert counted["cycles"] == 50 and counted["method"]
    for server in ("floor", "contract_floor", "lestats"):
        assert counted[server]["method"] and "calls" in counted[server]
    for server in ("contract_floor", "lestats"):   # they write logs and files: counted either way
        assert counted[server]["total"] > 0
        assert counted[server]["total"] == pytest.approx(
            sum(counted[server]["calls"].values()), abs=0.1)
    assert "total" not in counted["lestats"]["calls"]
    (rows, sized), = report["startup"].items()
    assert int(rows) > 10_000
    for key in ("startup_s", "fair_floor_s", "dictreader_pass_s", "peak_rss_mib",
                "fair_floor_peak_rss_mib"):
        assert sized[key] > 0
    # The times are printed to 3 places and the ratios made from the unrounded times:
    # at a few tens of milliseconds, that rounding alone moves a ratio by up to 2%.
    assert sized["ratio_to_fair_floor"] == pytest.approx(
        sized["startup_s"] / sized["fair_floor_s"], rel=0.02)
    assert sized["ratio_to_bare_pass"] == pytest.approx(
        sized["startup_s"] / sized["dictreader_pass_s"], rel=0.02)
    out = capsys.readouterr().out
    for title in ("cycles/s", "/contract", "system calls per cycle", "start-up",
                  "fair floor", "compute per job"):
        assert title in out


def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def test_the_floor_answers_a_constant_to_post_and_get():
    server = serving(bench.FloorServer(("127.0.0.1", 0), bench.FloorHandler))
    try:
        client = bench.CycleClient(server.server_address[1])
        assert client.request("POST", "/api/anything", b"{}") == json.loads(bench.FLOOR_POST)
        assert client.request("GET", "/api/get_results/job_id_1") == json.loads(bench.FLOOR_GET)
        client.cycle("global_mean", b"{}")
        assert client.cycles == 1 and client.polls == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_floors_let_many_clients_connect_at_once_as_lestats_does():
    server = bench.FloorServer(("127.0.0.1", 0), bench.FloorHandler)   # accepting none
    connections = []
    try:
        for _ in range(32):   # the default backlog (5) would leave the 7th unconnected
            connections.append(socket.create_connection(server.server_address, timeout=10))
    finally:
        for connection in connections:
            connection.close()
        server.server_close()
    assert bench.ContractServer.request_queue_size == StatsServer.request_queue_size


class DyingHandler(bench.FloorHandler):
    """The floor, but a POST whose body is ``die`` is never answered."""

    def do_POST(self):
        if self._body() == b"die":
            self.close_connection = True
        else:
            self._answer(bench.FLOOR_POST)


def test_a_measurement_in_which_a_client_fails_says_so_and_gives_no_rate():
    server = serving(bench.FloorServer(("127.0.0.1", 0), DyingHandler))
    mix = [("global_mean", b"{}"), ("global_mean", b"die")]
    try:
        with pytest.raises(bench.ClientDied, match=r"1 of 1 clients .* failed: RemoteDisconnected"):
            bench.measure_cycles(server.server_address[1], mix, 1, 30)
    finally:
        server.shutdown()
        server.server_close()


def test_the_synchronous_server_has_the_result_when_it_answers(tiny_index, tmp_path):
    server = StatsServer(("127.0.0.1", 0), bench.SyncJobs(tiny_index, JobStore(tmp_path)))
    serving(server)
    try:
        client = bench.CycleClient(server.server_port)
        body = json.dumps({"question": OBESITY}).encode()
        job_id = client.request("POST", "/api/global_mean", body)["job_id"]
        assert (tmp_path / f"{job_id}.json").exists()
        assert client.request("GET", f"/api/get_results/{job_id}") == {
            "status": "done", "data": {"global_mean": 14.5}}
    finally:
        server.shutdown()
        server.server_close()


def test_the_contract_floor_logs_writes_and_reads_back_each_job(tiny_index, tmp_path):
    log_file = tmp_path / "contract.log"
    server = serving(bench.ContractServer(("127.0.0.1", 0), tiny_index, tmp_path / "results",
                                          log_file, bench.contract_answers(tiny_index)))
    try:
        client = bench.CycleClient(server.server_address[1])
        body = json.dumps({"question": OBESITY}).encode()
        assert client.request("POST", "/api/global_mean", body) == {"job_id": "job_id_1"}
        answer = json.dumps(prepare(tiny_index, "global_mean", {"question": OBESITY})
                            .compute(tiny_index))
        assert (tmp_path / "results" / "job_id_1.json").read_text() == answer
        assert client.request("GET", "/api/get_results/job_id_1") == {
            "status": "done", "data": {"global_mean": 14.5}}
        assert client.request("POST", "/api/global_mean", b"[]")["status"] == "error"
        assert client.request("GET", "/api/get_results/job_id_9")["status"] == "error"
        assert os.listdir(tmp_path / "results") == ["job_id_1.json"]   # no temporary left
        client.connection.close()
    finally:
        server.shutdown()
        server.server_close()
    lines = log_file.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO "
    assert all(re.match(stamp, line) for line in lines), lines
    assert len(lines) == 8   # each request's entry and exit
    assert lines[0].endswith("POST /api/global_mean begin body=" + repr(body))
    assert lines[1].endswith("POST /api/global_mean end 200 job_id_1")
    assert lines[3].endswith("GET /api/get_results/job_id_1 end 200 job_id_1")
    assert lines[5].endswith("end 400 -") and lines[7].endswith("end 404 -")


def test_the_contract_floor_has_the_answer_of_every_request_of_the_mix(tiny_index):
    answers = bench.contract_answers(tiny_index)
    mix = bench.requests_mix(tiny_index, 900)
    answerable = [(name, body) for name, body in mix if not (
        name in ("best5", "worst5") and json.loads(body)["question"] == UNRANKED)]
    assert set(answers) == set(answerable)
    name, body = answerable[0]
    assert json.loads(answers[(name, body)]) == prepare(
        tiny_index, name, json.loads(body)).compute(tiny_index)


STRACE_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 84.07    0.227320        2841        80        40 futex
  3.22    0.008700           6      1381       597 openat
  2.10    0.005680           6       945           sendto
------ ----------- ----------- --------- --------- ----------------
100.00    0.241700          99      2406       637 total
"""


def test_the_strace_summary_counts_calls_by_name_without_the_total_row():
    assert syscalls.parse_strace_summary(STRACE_SUMMARY) == {
        "futex": 80, "openat": 1381, "sendto": 945}
    assert syscalls.per_cycle({"futex": 80, "sendto": 20}, 10) == {
        "total": 10.0, "calls": {"futex": 8.0, "sendto": 2.0}}


def test_without_strace_the_syscalls_are_read_from_proc_io(monkeypatch, tiny_index, tmp_path):
    monkeypatch.setattr(syscalls.shutil, "which", lambda name: None)
    answers = bench.contract_answers(tiny_index)
    server = serving(bench.ContractServer(("127.0.0.1", 0), tiny_index, tmp_path / "results",
                                          tmp_path / "contract.log", answers))
    try:
        mix = sorted(answers)
        calls, why = syscalls.count_syscalls(os.getpid(), server.server_address[1], mix, 10,
                                             tmp_path / "strace.txt")
    finally:
        server.shutdown()
        server.server_close()
    assert why == "strace is missing"
    assert set(calls) == {"read", "write"}
    assert calls["write"] >= 10 * 5   # four log records and a result file per cycle


def test_the_fair_start_up_floor_answers_once_it_has_read_the_file(tiny_csv):
    elapsed, peak = startup.fair_floor_startup(tiny_csv)
    assert 0 < elapsed < 30 and peak > 1


def test_percentiles_use_the_nearest_rank():
    values = list(range(1, 101))
    assert bench.percentile(values, 0.5) == 51
    assert bench.percentile(values, 0.99) == 100
    assert bench.percentile([], 0.5) != bench.percentile([], 0.5)   # nan


@pytest.mark.slow
def test_the_hostile_benchmark_runs_and_prints_one_table(tmp_path, capsys):
    path = tmp_path / "hostile.json"
    assert bench.main(["--hostile", "--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report) == {"jobs listing", "header stuffing", "slowloris", "open-file limit",
                           "expect 100-continue", "disk flood"}
    assert report["jobs listing"]["num_jobs_status"] == 200
    assert report["header stuffing"]["answered_431"] == report["header stuffing"]["connections"]
    assert report["slowloris"]["answered_share"] > 0.9
    assert report["open-file limit"]["new_client_status"] == 200
    assert report["expect 100-continue"]["got_100"] == 1
    assert report["disk flood"]["posts"] > 0
    out = capsys.readouterr().out
    assert "lestats under hostile clients" in out and "trickling sockets" in out
