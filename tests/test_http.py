"""API.md, row by row, against a live server on an ephemeral port."""

import http.client
import json
import logging
import re
import socket
import threading
from pathlib import Path

import pytest

from lestats import routes
from lestats.pool import ThreadPool
from lestats.watch.events import BUFFER, MAX_STREAMS
from lestats.watch.trace import TraceWriter
from lestats.http11 import MAX_BODY, ApiError

from conftest import MUSCLE, OBESITY, UNRANKED, connection_thread, recv_exactly

STATE_BODY = {"question": OBESITY, "state": "Ohio"}


def head(live, path):
    """HEAD ``path``: (status, Content-Length or None); the answer has no body."""
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        connection.request("HEAD", path)
        response = connection.getresponse()
        assert response.read() == b""
        length = response.getheader("Content-Length")
        return response.status, None if length is None else int(length)
    finally:
        connection.close()


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
    assert json.loads(Path(tiny_server.store.result_path(1)).read_text()) == {"global_mean": 14.5}


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "body is not valid JSON"),
    (b"\xff\xfe{}", "body is not valid UTF-8"),
    (b"[1, 2]", "body must be a JSON object, not list"),
    (b'"question"', "body must be a JSON object, not str"),
    (b'{"question": NaN}', "NaN is not a number JSON allows"),
    (b'{"question": "a", "question": "b"}', "duplicate key"),
    pytest.param(b"[" * 60_000, "nested deeper than 32 levels", id="deeply-nested"),
    pytest.param(b'{"question": "x", "pad": ' + b"[" * 980 + b"]" * 980 + b"}",
                 "nested deeper than 32 levels", id="nested-980-in-a-field"),
    pytest.param(b'{"question": "[[[[", "q": "\\"[{"}', "question not in the data set",
                 id="brackets-in-strings-do-not-count"),
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


def test_graceful_shutdown_says_running_then_done_refuses_posts_and_keeps_gets(
        serve, tiny_index):
    """The 2025 statement: every call answers 200, "running" while accepted
    jobs remain, "done" once they have all finished."""
    gate = threading.Event()
    pool = ThreadPool(1)
    live = serve(tiny_index, pool=pool)
    pool.submit(gate.wait)
    job_id = live.submit("global_mean", {"question": OBESITY})
    assert live.call("GET", "/api/graceful_shutdown")[::2] == (200, {"status": "running"})
    status, _, answer = live.call("POST", "/api/global_mean", {"question": OBESITY})
    assert status == 503 and error_of(answer) == "shutting down"
    assert live.call("GET", "/api/graceful_shutdown")[::2] == (200, {"status": "running"})
    assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 1}
    gate.set()
    status, answer = live.wait_result(job_id)
    assert status == 200 and answer["data"] == {"global_mean": 14.5}
    assert live.call("GET", "/api/jobs")[2]["data"] == [{"job_id_1": "done"}]
    assert live.call("GET", "/api/graceful_shutdown")[::2] == (200, {"status": "done"})
    assert live.call("GET", "/api/graceful_shutdown")[::2] == (200, {"status": "done"})


def test_graceful_shutdown_with_nothing_to_do_is_done_at_once(tiny_server):
    assert tiny_server.call("GET", "/api/graceful_shutdown")[::2] == (200, {"status": "done"})


def test_head_of_graceful_shutdown_answers_like_get_and_starts_no_drain(tiny_server):
    """Issue 17 (10): a monitor sending HEAD to every route must not stop the server."""
    for path in ("/api/graceful_shutdown", "/api/events", "/api/num_jobs", "/api/jobs",
                 "/api/pool", "/api/questions", "/", "/api/get_results/job_id_1"):
        status, _ = head(tiny_server, path)
        assert status in (200, 404), (path, status)
    status, length = head(tiny_server, "/api/graceful_shutdown")
    assert status == 200 and length == len(b'{"status": "done"}')   # what GET would say
    assert tiny_server.submit("global_mean", {"question": OBESITY}) == "job_id_1"
    assert not tiny_server.pool.snapshot()["closed"]
    assert not tiny_server.events.listening   # HEAD /api/events subscribed nobody


# -- protocol errors --------------------------------------------------------

def test_unknown_paths_are_404(tiny_server):
    for path in ("/api/nope", "/api", "/favicon.ico", "/api/get_results", "/api/pools"):
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


def every_line(method, path):
    """What find_route answers, found by trying each line of ROUTES in order."""
    allowed = []
    for route in routes.ROUTES:
        param = route.matches(path)
        if param is not None:
            if route.method == method:
                return route, param
            allowed.append(route.method)
    return None, allowed


def test_the_route_index_finds_what_trying_every_line_finds():
    """find_route looks a path up (exact paths, else the prefix routes)."""
    prefixes = [route.path[:-len(routes.JOB_ID_PARAM)] for route in routes.PREFIX_ROUTES]
    assert not [path for path in routes.EXACT_ROUTES
                if any(path.startswith(prefix) for prefix in prefixes)]
    paths = {route.path.replace(routes.JOB_ID_PARAM, "job_id_1") for route in routes.ROUTES}
    paths |= {path + "/" for path in set(paths)} | {path[:-1] for path in set(paths)}
    paths |= set(prefixes) | {"/api/jobs/", "/nope", ""}
    for method in ("GET", "POST", "PUT"):
        for path in sorted(paths):
            expected, allowed = every_line(method, path)
            try:
                assert routes.find_route(method, path) == (expected, allowed), (method, path)
            except ApiError as error:
                assert expected is None and error.status == (405 if allowed else 404)
                if allowed:
                    assert error.headers == (("Allow", ", ".join(allowed)),), (method, path)


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


def test_the_live_page_is_one_self_contained_html_file(tiny_server):
    status, response, page = tiny_server.call("GET", "/")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    text = page.decode("utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)


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


# -- the routes added to the course's ---------------------------------------

def test_jobs_pages_with_since_and_limit(tiny_server):
    for _ in range(5):
        tiny_server.submit("global_mean", {"question": OBESITY})
    for number in range(1, 6):   # the workers may finish them in any order
        tiny_server.wait_result(f"job_id_{number}")
    page = tiny_server.call("GET", "/api/jobs?since=1&limit=2")[2]
    assert page == {"status": "done", "data": [{"job_id_2": "done"}, {"job_id_3": "done"}]}
    assert tiny_server.call("GET", "/api/jobs?since=5")[2] == {"status": "done", "data": []}
    assert tiny_server.call("GET", "/api/jobs?limit=0")[2] == {"status": "done", "data": []}
    assert len(tiny_server.call("GET", "/api/jobs")[2]["data"]) == 5


@pytest.mark.parametrize("query", ["since=-1", "limit=x", "since=1e3", "limit=" + "9" * 30])
def test_bad_paging_parameters_are_400(tiny_server, query):
    status, _, answer = tiny_server.call("GET", f"/api/jobs?{query}")
    assert status == 400 and "must be a whole number" in error_of(answer)


def test_a_job_record_follows_it_from_queued_to_done(serve, tiny_index):
    gate, holding = threading.Event(), threading.Event()
    pool = ThreadPool(1)
    live = serve(tiny_index, pool=pool)
    try:
        pool.submit(lambda: (holding.set(), gate.wait(10)))   # hold the only worker
        assert holding.wait(10)   # it has taken that task: the queue is empty
        live.submit("state_mean", STATE_BODY)
        live.submit("best5", {"question": MUSCLE})
        record = live.call("GET", "/api/jobs/job_id_2")[2]
        assert record == {
            "job_id": "job_id_2", "statistic": "best5", "question": MUSCLE, "state": None,
            "status": "queued", "accepted_at": record["accepted_at"], "started_at": None,
            "finished_at": None, "worker": None, "queue_position": 2, "reason": None}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["accepted_at"])
        assert live.call("GET", "/api/jobs/job_id_1")[2]["queue_position"] == 1
        assert live.call("GET", "/api/get_results/job_id_2")[2] == {"status": "running"}
    finally:
        gate.set()
    live.wait_result("job_id_2")
    record = live.call("GET", "/api/jobs/job_id_2")[2]
    assert record["status"] == "done" and record["queue_position"] is None
    assert record["worker"] == "lestats-worker-1" and record["state"] is None
    assert record["accepted_at"] <= record["started_at"] <= record["finished_at"]
    first = live.call("GET", "/api/jobs/job_id_1")[2]
    assert (first["statistic"], first["state"]) == ("state_mean", "Ohio")


@pytest.mark.parametrize("job_id", ["job_id_9", "job_id_0", "x", "../jobs"])
def test_an_unknown_job_record_is_404(tiny_server, job_id):
    status, _, answer = tiny_server.call("GET", f"/api/jobs/{job_id}")
    assert status == 404 and error_of(answer) == "Invalid job_id"


def test_questions_lists_each_question_and_its_states(tiny_server):
    assert tiny_server.call("GET", "/api/questions")[2] == {"questions": {
        MUSCLE: ["Alabama", "Ohio"],
        OBESITY: ["Alabama", "Alaska", "Ohio", "Utah"],
        UNRANKED: ["Ohio"]}}


def test_the_pool_snapshot_has_the_api_shape(tiny_server):
    tiny_server.wait_result(tiny_server.submit("global_mean", {"question": OBESITY}))
    snapshot = tiny_server.call("GET", "/api/pool")[2]
    assert set(snapshot) == {"size", "workers", "queued", "queue", "unfinished", "closed",
                             "counters", "invariants", "slow_motion_ms", "variant"}
    assert snapshot["size"] == 2 and len(snapshot["workers"]) == 2
    assert {w["state"] for w in snapshot["workers"]} <= {"waiting", "running"}
    assert set(snapshot["counters"]) == {"submitted", "notify", "notify_all", "waits",
                                         "wakeups", "empty_wakeups"}
    assert snapshot["counters"]["submitted"] == 1
    assert snapshot["invariants"] and all(snapshot["invariants"].values())
    assert snapshot["variant"] is None and snapshot["slow_motion_ms"] == 0


def test_events_stream_what_the_pool_does(tiny_server):
    connection = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=5)
    try:
        connection.request("GET", "/api/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.readline() == b"retry: 2000\n"
        tiny_server.submit("global_mean", {"question": OBESITY})
        kinds, data = [], {}
        while "job_finished" not in data:
            line = response.readline().decode()
            if line.startswith("event: "):
                kinds.append(line[7:].strip())
            elif line.startswith("data: "):
                data[kinds[-1]] = json.loads(line[6:])
    finally:
        connection.close()
    assert kinds.index("job_accepted") < kinds.index("job_started") < kinds.index(
        "job_finished")
    assert "notify" in kinds and "worker_wake" in kinds
    assert data["job_accepted"]["job_id"] == "job_id_1"
    assert data["job_finished"]["status"] == "done"
    assert all(isinstance(fields["t"], float) for fields in data.values())


def test_head_of_the_event_stream_holds_no_stream_slot(tiny_server):
    connection = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=5)
    try:
        for _ in range(2 * MAX_STREAMS):
            connection.request("HEAD", "/api/events")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b""
        # Answered on the same connection after the last HEAD: that HEAD's
        # stream is closed by now.
        connection.request("GET", "/api/num_jobs")
        assert json.loads(connection.getresponse().read()) == {"num_jobs": 0}
        assert not tiny_server.events.listening
        connection.request("GET", "/api/events")
        response = connection.getresponse()
        assert response.status == 200 and response.readline() == b"retry: 2000\n"
    finally:
        connection.close()


def test_idle_event_streams_never_keep_the_live_page_out(tiny_server, tmp_path):
    """Issue 17 (12): MAX_STREAMS idle readers (and the trace) are open; the
    page still gets its stream, and the oldest reader gives way."""
    trace = TraceWriter(tiny_server.events, str(tmp_path / "trace.json"))   # --trace
    idle = []
    try:
        for _ in range(MAX_STREAMS):
            connection = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=5)
            connection.request("GET", "/api/events")
            response = connection.getresponse()
            assert response.status == 200 and response.readline() == b"retry: 2000\n"
            idle.append((connection, response))
        assert head(tiny_server, "/api/events")[0] == 200   # evicts nobody
        page = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=5)
        page.request("GET", "/api/events")
        response = page.getresponse()
        assert response.status == 200 and response.readline() == b"retry: 2000\n"
        oldest = idle[0][1]
        assert oldest.readline() == b"\n" and oldest.readline().startswith(b"id: ")
        assert oldest.readline() == b"event: evicted\n"
        page.close()
    finally:
        for connection, _ in idle:
            connection.close()
        trace.close()


def test_a_full_queue_is_503_with_retry_after(serve, tiny_index):
    gate = threading.Event()
    pool = ThreadPool(1, max_queued=1)
    live = serve(tiny_index, pool=pool)
    try:
        started = threading.Event()
        pool.submit(lambda: (started.set(), gate.wait()))
        assert started.wait(timeout=5)      # the worker holds it: the queue is empty
        live.submit("global_mean", {"question": OBESITY})   # the queue is full now
        status, response, answer = live.call("POST", "/api/global_mean", {"question": OBESITY})
        assert status == 503 and "the queue is full" in error_of(answer)
        assert response.getheader("Retry-After") == "1"
        assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 1}
    finally:
        gate.set()
    assert live.wait_result("job_id_1")[0] == 200
    assert live.submit("global_mean", {"question": OBESITY}) == "job_id_2"


def test_too_little_free_space_is_507_and_no_job(tiny_server, monkeypatch):
    monkeypatch.setattr(tiny_server.store, "min_free_bytes", 1 << 60)
    status, _, answer = tiny_server.call("POST", "/api/global_mean", {"question": OBESITY})
    assert status == 507 and "MiB free" in error_of(answer) and "needed" in error_of(answer)
    assert tiny_server.call("GET", "/api/jobs")[2] == {"status": "done", "data": []}
    monkeypatch.undo()
    assert tiny_server.submit("global_mean", {"question": OBESITY}) == "job_id_1"


def test_results_beyond_keep_results_are_deleted_and_410(serve, tiny_index):
    live = serve(tiny_index, keep_results=2)
    for _ in range(3):
        live.wait_result(live.submit("global_mean", {"question": OBESITY}))
    assert live.jobs.drain(timeout=10)   # job 3's task has replaced job 1's file too
    status, _, answer = live.call("GET", "/api/get_results/job_id_1")
    assert status == 410 and "only the last 2 are kept" in error_of(answer)
    assert not Path(live.store.result_path(1)).exists()
    assert Path(live.store.directory, "job_id_1.expired").stat().st_size == 0   # no data block
    assert json.loads(Path(live.store.result_path(3)).read_bytes()) == {"global_mean": 14.5}
    assert live.call("GET", "/api/jobs")[2]["data"] == [
        {"job_id_1": "expired"}, {"job_id_2": "done"}, {"job_id_3": "done"}]


def test_an_event_stream_that_is_not_read_is_cut_and_frees_its_thread(serve, tiny_index,
                                                                     caplog):
    live = serve(tiny_index, client_timeout=0.5)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    slow.connect(("127.0.0.1", live.port))
    slow.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")   # and never reads
    try:
        assert recv_exactly(slow, 15) == b"HTTP/1.1 200 OK"   # subscribed by now
        stream_thread = connection_thread(slow)
        with caplog.at_level(logging.INFO, logger="lestats"):
            # 4 MiB in fewer events than a stream may fall behind by: more than
            # the socket buffers hold, so only the send deadline can end it.
            for _ in range(BUFFER // 2):
                live.events.publish("padding", {"pad": "x" * 8192, "t": 0.0})
            stream_thread.join(timeout=10)
        assert not stream_thread.is_alive(), "the stream's thread is still there"
        assert not live.events.listening
        assert "a chunk of the answer was not taken within 0.5 s" in caplog.text
        assert live.call("GET", "/api/num_jobs")[2] == {"num_jobs": 0}   # serving as ever
    finally:
        slow.close()
