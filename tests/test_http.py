"""API.md, row by row, against a live server on an ephemeral port."""

import http.client
import json
import socket
import threading

import pytest

from lestats.pool import ThreadPool
from lestats.statistics import STATISTICS
from lestats.routes import ROUTES
from lestats.webserver import MAX_BODY

from conftest import MUSCLE, OBESITY, UNRANKED

STATE_BODY = {"question": OBESITY, "state": "Ohio"}


def error_of(answer):
    assert set(answer) == {"status", "reason"} and answer["status"] == "error"
    return answer["reason"]


# -- statistics endpoints ---------------------------------------------------

@pytest.mark.parametrize("endpoint, body, expected", [
    ("states_mean", {"question": OBESITY},
     {"Ohio": 6.0, "Alabama": 15.0, "Utah": 15.0, "Alaska": 30.0}),
    ("state_mean", STATE_BODY, {"Ohio": 6.0}),
    ("best5", {"question": MUSCLE}, {"Ohio": 50.0, "Alabama": 40.0}),
    ("worst5", {"question": MUSCLE}, {"Alabama": 40.0, "Ohio": 50.0}),
    ("global_mean", {"question": OBESITY}, {"global_mean": 14.5}),
    ("diff_from_mean", {"question": MUSCLE}, {"Alabama": 5.0, "Ohio": -5.0}),
    ("state_diff_from_mean", STATE_BODY, {"Ohio": 8.5}),
    ("mean_by_category", {"question": MUSCLE},
     {"('Alabama', 'Total', 'Total')": 40.0, "('Ohio', 'Total', 'Total')": 50.0}),
    ("state_mean_by_category", STATE_BODY, {"Ohio": {"('Age (years)', '18 - 24')": 6.0}}),
])
def test_a_statistic_is_a_job_whose_result_is_served(tiny_server, endpoint, body, expected):
    status, response, answer = tiny_server.call("POST", f"/api/{endpoint}", body)
    assert status == 200 and answer == {"job_id": "job_id_1"}
    assert response.getheader("Content-Type") == "application/json"
    status, answer = tiny_server.wait_result("job_id_1")
    assert status == 200 and answer["status"] == "done"
    assert answer["data"] == expected
    assert list(answer["data"]) == list(expected)   # the order API.md gives


def test_results_are_also_files_in_the_results_directory(tiny_server):
    tiny_server.wait_result(tiny_server.submit("global_mean", {"question": OBESITY}))
    assert json.loads(tiny_server.store.result_path(1).read_text()) == {"global_mean": 14.5}


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "body is not valid JSON"),
    (b"\xff\xfe{}", "body is not valid UTF-8"),
    (b"[1, 2]", "body must be a JSON object, not list"),
    (b'"question"', "body must be a JSON object, not str"),
    (b'{"question": NaN}', "NaN is not a number JSON allows"),
    (b'{"question": "a", "question": "b"}', "duplicate key"),
    pytest.param(b"[" * 60_000, "body is not valid JSON", id="deeply-nested"),
    (b"{}", "field 'question' is required"),
    (b'{"question": 7}', "field 'question' must be a string, not int"),
    (b'{"question": "What?"}', "question not in the data set: 'What?'"),
])
def test_bad_bodies_are_400_with_a_reason(tiny_server, raw, reason):
    status, _, answer = tiny_server.call("POST", "/api/states_mean", raw=raw)
    assert status == 400 and reason in error_of(answer)


@pytest.mark.parametrize("body, reason", [
    ({"question": OBESITY}, "field 'state' is required"),
    ({"question": OBESITY, "state": ["Ohio"]}, "field 'state' must be a string, not list"),
    ({"question": OBESITY, "state": "Texas"}, "state 'Texas' has no rows"),
])
def test_bad_states_are_400(tiny_server, body, reason):
    status, _, answer = tiny_server.call("POST", "/api/state_mean", body)
    assert status == 400 and reason in error_of(answer)


def test_best5_without_a_known_direction_is_400(tiny_server):
    status, _, answer = tiny_server.call("POST", "/api/best5", {"question": UNRANKED})
    assert status == 400 and "no best/worst direction" in error_of(answer)


def test_a_refused_request_uses_no_job_id(tiny_server):
    tiny_server.call("POST", "/api/states_mean", {"question": "nope"})
    assert tiny_server.submit("states_mean", {"question": OBESITY}) == "job_id_1"


def test_unknown_fields_are_ignored(tiny_server):
    body = dict(STATE_BODY, colour="blue", n=[1, {"x": None}])
    status, answer = tiny_server.wait_result(tiny_server.submit("state_mean", body))
    assert status == 200 and answer["data"] == {"Ohio": 6.0}


# -- job endpoints ----------------------------------------------------------

def test_jobs_lists_every_job_in_id_order_and_num_jobs_counts_unfinished(serve, tiny_index):
    gate = threading.Event()
    pool = ThreadPool(1)
    live = serve(tiny_index, pool=pool)
    try:
        first = live.submit("global_mean", {"question": OBESITY})
        live.wait_result(first)
        pool.submit(gate.wait)   # hold the only worker
        live.submit("global_mean", {"question": OBESITY})
        assert live.call("GET", "/api/jobs")[2] == {
            "status": "done", "data": [{"job_id_1": "done"}, {"job_id_2": "running"}]}
        assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 1}
        assert live.call("GET", "/api/get_results/job_id_2")[2] == {"status": "running"}
    finally:
        gate.set()
    live.wait_result("job_id_2")
    assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 0}


@pytest.mark.parametrize("job_id", [
    "job_id_0", "job_id_x", "job_id_2", "job_id_01", "job_id_-1", "..", "%2F",
    "..%2F..%2Fetc%2Fpasswd", "job_id_1%00", "job_id_" + "9" * 30, "", "job_id_1/extra",
])
def test_unknown_or_malformed_job_ids_are_404(tiny_server, job_id):
    tiny_server.wait_result(tiny_server.submit("global_mean", {"question": OBESITY}))
    status, _, answer = tiny_server.call("GET", f"/api/get_results/{job_id}")
    assert status == 404 and error_of(answer) == "Invalid job_id"


def test_query_strings_and_fragments_are_ignored(tiny_server):
    tiny_server.wait_result(tiny_server.submit("global_mean", {"question": OBESITY}))
    status, _, answer = tiny_server.call("GET", "/api/get_results/job_id_1?x=1#top")
    assert status == 200 and answer["status"] == "done"
    assert tiny_server.call("GET", "/api/num_jobs?verbose=1")[0] == 200


def test_a_failed_job_is_500_and_error_in_jobs(tiny_server, monkeypatch):
    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny_server.store, "write_result", disk_full)
    job_id = tiny_server.submit("global_mean", {"question": OBESITY})
    status, answer = tiny_server.wait_result(job_id)
    assert status == 500 and "No space left on device" in error_of(answer)
    assert tiny_server.call("GET", "/api/jobs")[2]["data"] == [{"job_id_1": "error"}]


def test_graceful_shutdown_drains_refuses_posts_and_keeps_gets(serve, tiny_index):
    gate = threading.Event()
    pool = ThreadPool(1)
    live = serve(tiny_index, pool=pool)
    pool.submit(gate.wait)
    job_id = live.submit("global_mean", {"question": OBESITY})
    assert live.call("GET", "/api/graceful_shutdown")[:3:2] == (
        200, {"status": "shutting down"})
    status, _, answer = live.call("POST", "/api/global_mean", {"question": OBESITY})
    assert status == 503 and error_of(answer) == "Server is shutting down"
    status, _, answer = live.call("GET", "/api/graceful_shutdown")
    assert status == 409 and error_of(answer) == "Server is already shutting down"
    assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 1}
    gate.set()
    status, answer = live.wait_result(job_id)
    assert status == 200 and answer["data"] == {"global_mean": 14.5}
    assert live.call("GET", "/api/jobs")[2]["data"] == [{"job_id_1": "done"}]


# -- protocol errors --------------------------------------------------------

def test_unknown_paths_are_404(tiny_server):
    for path in ("/api/nope", "/api/jobs/", "/api", "/favicon.ico", "/api/get_results"):
        status, _, answer = tiny_server.call("GET", path)
        assert status == 404 and error_of(answer) == "Not found", path


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/api/states_mean", "POST"),
    ("PUT", "/api/best5", "POST"),
    ("POST", "/api/jobs", "GET"),
    ("DELETE", "/api/get_results/job_id_1", "GET"),
    ("POST", "/", "GET"),
])
def test_a_wrong_method_on_a_known_path_is_405_with_allow(tiny_server, method, path, allow):
    status, response, answer = tiny_server.call(method, path, raw=b"{}")
    assert status == 405 and error_of(answer) == "Method not allowed"
    assert response.getheader("Allow") == allow


def test_a_post_without_content_length_is_411(tiny_server):
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=5) as sock:
        sock.sendall(b"POST /api/states_mean HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.makefile("rb").read()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 411")
    assert error_of(json.loads(body)) == "Length required"


def test_a_body_over_64_kib_is_413(tiny_server):
    body = json.dumps({"question": OBESITY, "pad": "x" * MAX_BODY}).encode()
    status, _, answer = tiny_server.call("POST", "/api/states_mean", raw=body)
    assert status == 413 and error_of(answer) == "Request body too large"


def test_a_body_of_exactly_64_kib_is_read(tiny_server):
    empty = len(json.dumps({"question": OBESITY, "pad": ""}))
    body = json.dumps({"question": OBESITY, "pad": "x" * (MAX_BODY - empty)}).encode()
    assert len(body) == MAX_BODY
    assert tiny_server.call("POST", "/api/states_mean", raw=body)[0] == 200


def test_the_index_page_lists_every_route(tiny_server):
    status, response, page = tiny_server.call("GET", "/")
    assert status == 200 and response.getheader("Content-Type").startswith("text/html")
    text = page.decode()
    for route in ROUTES:
        assert f"{route.method} {route.path}" in text
    for name in STATISTICS:
        assert f"/api/{name}" in text


def test_keep_alive_serves_many_requests_on_one_connection(tiny_server):
    connection = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=5)
    try:
        for _ in range(20):
            connection.request("POST", "/api/global_mean",
                               body=json.dumps({"question": OBESITY}))
            response = connection.getresponse()
            job_id = json.loads(response.read())["job_id"]
            connection.request("GET", f"/api/get_results/{job_id}")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            assert response.getheader("Connection") != "close"
    finally:
        connection.close()


def test_a_journal_that_cannot_be_written_is_500_and_the_server_goes_on(tiny_server,
                                                                       monkeypatch):
    def disk_full(_job):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiny_server.store, "accept", disk_full)
    status, _, answer = tiny_server.call("POST", "/api/global_mean", {"question": OBESITY})
    assert status == 500 and "cannot record the job: No space left on device" in error_of(answer)
    monkeypatch.undo()
    job_id = tiny_server.submit("global_mean", {"question": OBESITY})
    assert tiny_server.wait_result(job_id)[1]["data"] == {"global_mean": 14.5}
