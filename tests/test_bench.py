"""The benchmark cannot rot: its quick mode runs end to end, and its own
servers answer as they claim."""

import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from lestats.tools import bench
from lestats.storage import JobStore
from lestats.webserver import StatsServer

from conftest import OBESITY


@pytest.mark.slow
def test_the_quick_benchmark_runs_and_writes_its_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    for key in ("floor_cycles_per_s", "lestats_cycles_per_s", "lestats_fsync_cycles_per_s",
                "ratio_to_floor", "job_latency_ms", "checker", "startup", "compute_per_job"):
        assert key in report
    assert set(report["lestats_cycles_per_s"]) == {"1", "4", "16"}
    assert all(rate > 0 for rate in report["lestats_cycles_per_s"].values())
    assert report["job_latency_ms"]["jobs"] > 0
    out = capsys.readouterr().out
    assert "cycles/s" in out and "start-up" in out and "compute per job" in out


def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def test_the_floor_answers_a_constant_to_post_and_get():
    server = serving(ThreadingHTTPServer(("127.0.0.1", 0), bench.FloorHandler))
    try:
        client = bench.CycleClient(server.server_address[1])
        assert client.request("POST", "/api/anything", b"{}") == json.loads(bench.FLOOR_POST)
        assert client.request("GET", "/api/get_results/job_id_1") == json.loads(bench.FLOOR_GET)
        client.cycle("global_mean", b"{}")
        assert client.cycles == 1 and client.polls == 1
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
