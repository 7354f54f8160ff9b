"""The HTTP server's own contract: streamed replies, HEAD, absolute-form
targets, query strings, 100-continue, slow readers, the connection table
(eviction, 503), and shutdown that answers the requests in flight."""

import errno
import json
import logging
import socket
import socketserver
import threading
import time
import types
from http.server import ThreadingHTTPServer

import pytest

from lestats import connections, webserver
from lestats.http11 import MAX_BODY, ApiError, ConnectionSocket, Deadline, Reply
from lestats.lab.forcing import TIMEOUT
from lestats.routes import Route

from conftest import connect, connection_thread, non_reading_client, recv_all, recv_until

CLIENT_TIMEOUT = 1.0


@pytest.fixture
def extra_routes(monkeypatch):
    """Routes a test adds in front of ROUTES: ``{path: (method, handler)}``."""
    table = {}
    real_find_route = webserver.find_route

    def find_route(method, path):
        if path not in table:
            return real_find_route(method, path)
        allowed, handler = table[path]
        if method != allowed:
            raise ApiError(405, "Method not allowed", headers=[("Allow", allowed)])
        return Route(allowed, path, handler), ""

    monkeypatch.setattr(webserver, "find_route", find_route)
    return table


@pytest.fixture
def live(serve, tiny_index):
    return serve(tiny_index, client_timeout=CLIENT_TIMEOUT)


class Chunks:
    """An iterable of chunks with a close() that says it was called."""

    def __init__(self, *pieces):
        self.pieces = pieces
        self.closed = threading.Event()

    def __iter__(self):
        return iter(self.pieces)

    def close(self):
        self.closed.set()


def head_fields(raw_head):
    lines = raw_head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:] if line)


def held_route(extra_routes, path="/held"):
    """A GET route whose calls wait at ``gate``; ``entered`` counts them in."""
    entered = threading.Semaphore(0)
    gate = threading.Event()

    def handler(_jobs, _request):
        entered.release()
        assert gate.wait(10)
        return Reply(200, {"held": True})

    extra_routes[path] = ("GET", handler)
    return entered, gate


# -- design -----------------------------------------------------------------

def test_the_server_is_a_threading_http_server_that_tracks_its_own_threads(live):
    assert isinstance(live.server, ThreadingHTTPServer)
    for _ in range(30):
        assert live.call("GET", "/api/num_jobs")[0] == 200
    live.server.shutdown()
    assert live.server.close_connections(timeout=5)   # every connection thread has left
    assert "_threads" not in vars(live.server)        # ThreadingMixIn's list stays unused


# -- streamed replies -------------------------------------------------------

def stream_route(extra_routes, chunks, path="/stream"):
    extra_routes[path] = ("GET", lambda _jobs, _request: Reply(
        200, chunks=chunks, content_type="text/plain", headers=[("X-Extra", "yes")]))


def test_a_streamed_reply_is_chunked_sent_as_it_comes_and_closed(live, extra_routes):
    gate, closed = threading.Event(), threading.Event()

    def chunks():
        try:
            yield b"first,"
            assert gate.wait(10)
            yield b""   # empty pieces are skipped, not sent as the last chunk
            yield b"second"
        finally:
            closed.set()

    stream_route(extra_routes, chunks())
    with connect(live) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
        received = recv_until(sock, b"first,\r\n")   # before the generator goes on
        status, fields = head_fields(received.split(b"\r\n\r\n")[0])
        assert status == "HTTP/1.1 200 OK"
        assert fields["Transfer-Encoding"] == "chunked" and fields["X-Extra"] == "yes"
        assert "Content-Length" not in fields
        gate.set()
        received += recv_until(sock, b"0\r\n\r\n")
        assert received.endswith(b"\r\n\r\n6\r\nfirst,\r\n6\r\nsecond\r\n0\r\n\r\n")
        assert closed.wait(5)
        sock.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")   # the connection is kept
        assert recv_until(sock, b"}").startswith(b"HTTP/1.1 200")


def test_http_client_reads_a_streamed_reply(live, extra_routes):
    stream_route(extra_routes, iter([b"a" * 100_000, b"b", b"c" * 5]))
    status, response, body = live.call("GET", "/stream")
    assert status == 200 and body == b"a" * 100_000 + b"b" + b"c" * 5


def test_a_streamed_reply_to_http_1_0_is_close_delimited(live, extra_routes):
    chunks = Chunks(b"one ", b"two")
    stream_route(extra_routes, chunks)
    with connect(live) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = recv_all(sock).partition(b"\r\n\r\n")
    _, fields = head_fields(head)
    assert "Transfer-Encoding" not in fields and fields["Connection"] == "close"
    assert body == b"one two" and chunks.closed.wait(5)


def test_a_failing_stream_is_logged_and_cut_and_still_closed(live, extra_routes, caplog):
    closed = threading.Event()

    def chunks():
        try:
            yield b"part"
            raise RuntimeError("the generator broke")
        finally:
            closed.set()

    stream_route(extra_routes, chunks())
    with connect(live) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
        assert not recv_all(sock).endswith(b"0\r\n\r\n")   # no last chunk: the client knows
    assert closed.wait(5)
    assert any("the stream failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_stream_the_client_does_not_take_is_cut_and_closed(live, extra_routes, caplog):
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield b"x" * 65536
        finally:
            closed.set()

    stream_route(extra_routes, endless())
    caplog.set_level(logging.INFO, "lestats")
    sock = non_reading_client(live)
    try:
        sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")   # and never read
        thread = connection_thread(sock)
        assert closed.wait(CLIENT_TIMEOUT + 5)
        thread.join(timeout=5)   # it logs the cut after closing the stream
    finally:
        sock.close()
    cut = [r for r in caplog.records if "was not taken within" in r.getMessage()]
    assert len(cut) == 1 and cut[0].levelno == logging.INFO and not cut[0].exc_info


# -- a client that never reads ------------------------------------------------

def test_an_answer_the_client_never_reads_is_cut_within_the_client_timeout(
        live, extra_routes, caplog):
    big = b"y" * (16 << 20)
    extra_routes["/big"] = ("GET", lambda _jobs, _request: Reply(200, big))
    caplog.set_level(logging.INFO, "lestats")
    sock = non_reading_client(live)
    try:
        started = time.monotonic()
        sock.sendall(b"GET /big HTTP/1.1\r\n\r\n")   # and never read
        thread = connection_thread(sock)
        thread.join(timeout=CLIENT_TIMEOUT * 5)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert not thread.is_alive()
    assert elapsed < CLIENT_TIMEOUT * 2   # one client timeout for the whole answer
    lines = [r for r in caplog.records if r.name == "lestats.webserver"
             and "connection from" in r.getMessage()]
    assert len(lines) == 1 and "the answer was not taken within 1 s" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- HEAD, absolute-form targets, query strings ------------------------------

def test_head_is_answered_like_get_without_the_body(live):
    with connect(live) as sock:
        sock.sendall(b"HEAD /api/num_jobs HTTP/1.1\r\n\r\nGET /api/num_jobs HTTP/1.1\r\n\r\n")
        received = recv_until(sock, b"}")
    head, _, rest = received.partition(b"\r\n\r\n")
    get_head, _, get_body = rest.partition(b"\r\n\r\n")   # the GET answer follows at once
    status, fields = head_fields(head)
    get_status, get_fields = head_fields(get_head)
    assert status == get_status == "HTTP/1.1 200 OK"
    del fields["Date"], get_fields["Date"]
    assert fields == get_fields and int(fields["Content-Length"]) == len(get_body)
    assert json.loads(get_body) == {"num_jobs": 0}


def test_head_on_a_streamed_reply_sends_the_head_only_and_closes_the_stream(
        live, extra_routes):
    chunks = Chunks(b"never sent")
    stream_route(extra_routes, chunks)
    with connect(live) as sock:
        sock.sendall(b"HEAD /stream HTTP/1.1\r\n\r\nGET /api/num_jobs HTTP/1.1\r\n\r\n")
        received = recv_until(sock, b"}")
    head, _, rest = received.partition(b"\r\n\r\n")
    status, fields = head_fields(head)
    assert status == "HTTP/1.1 200 OK" and fields["Transfer-Encoding"] == "chunked"
    assert fields["X-Extra"] == "yes" and rest.startswith(b"HTTP/1.1 200")   # no body
    assert chunks.closed.wait(5)


def test_head_on_a_post_route_is_405(live):
    with connect(live) as sock:
        sock.sendall(b"HEAD /api/states_mean HTTP/1.1\r\n\r\n")
        status, fields = head_fields(recv_until(sock, b"\r\n\r\n")[:-4])
    assert status == "HTTP/1.1 405 Method Not Allowed" and fields["Allow"] == "POST"


def test_an_absolute_form_target_is_served_by_its_path(live):
    with connect(live) as sock:
        sock.sendall(b"GET http://127.0.0.1:%d/api/num_jobs?x=1 HTTP/1.1\r\n\r\n" % live.port)
        head, _, body = recv_until(sock, b"}").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"num_jobs": 0}


def test_the_query_string_reaches_the_handler_first_value_of_each(live, extra_routes):
    extra_routes["/echo"] = ("GET", lambda _jobs, request: Reply(200, request.query))
    status, _, answer = live.call("GET", "/echo?since=3&limit=2&since=9&flag&q=a%20b#frag")
    assert status == 200 and answer == {"since": "3", "limit": "2", "flag": "", "q": "a b"}


def test_reply_headers_are_sent(live, extra_routes):
    extra_routes["/h"] = ("GET", lambda _jobs, _request: Reply(
        200, {}, headers=[("Retry-After", "3"), ("X-Two", "2")]))
    _, response, _ = live.call("GET", "/h")
    assert response.getheader("Retry-After") == "3" and response.getheader("X-Two") == "2"


def test_a_payload_that_is_not_json_is_a_500(live, extra_routes):
    extra_routes["/nan"] = ("GET", lambda _jobs, _request: Reply(200, {"mean": float("nan")}))
    status, _, answer = live.call("GET", "/nan")
    assert status == 500 and answer == {"status": "error", "reason": "Internal server error"}


def test_a_reply_header_that_would_split_the_head_is_a_500(live, extra_routes):
    extra_routes["/h"] = ("GET", lambda _jobs, _request: Reply(
        200, {}, headers=[("X-Bad", "a\r\nSet-Cookie: x=1")]))
    status, response, answer = live.call("GET", "/h")
    assert status == 500 and answer["reason"] == "Internal server error"
    assert response.getheader("Set-Cookie") is None


# -- Expect: 100-continue -----------------------------------------------------

POST_HEAD = (b"POST /api/global_mean HTTP/1.1\r\nExpect: 100-continue\r\n"
             b"Content-Length: %d\r\n\r\n")


def test_100_continue_is_sent_at_once_then_the_body_is_read(serve, tiny_index):
    live = serve(tiny_index, client_timeout=10)
    body = json.dumps({"question": "Percent of adults aged 18 years and older who have obesity"})
    with connect(live) as sock:
        sock.settimeout(2)   # far below the client timeout: the 100 must not wait for it
        sock.sendall(POST_HEAD % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body.encode())
        head, _, answer = recv_until(sock, b"}").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(answer) == {"job_id": "job_id_1"}


@pytest.mark.parametrize("raw, status", [
    pytest.param(POST_HEAD % (MAX_BODY + 1), b"413", id="too-large"),
    pytest.param(POST_HEAD.replace(b"global_mean", b"nope") % 10, b"404", id="unknown-path"),
    pytest.param(POST_HEAD.replace(b"POST", b"GET") % 10, b"405", id="wrong-method"),
])
def test_a_request_refused_anyway_gets_no_100_but_its_answer(live, raw, status):
    with connect(live) as sock:
        sock.sendall(raw)
        reply = recv_all(sock)
    assert reply.startswith(b"HTTP/1.1 " + status) and b"100 Continue" not in reply


# -- the connection table -----------------------------------------------------

def test_a_full_table_evicts_the_longest_waiting_never_a_serving_one(
        serve, tiny_index, extra_routes):
    live = serve(tiny_index, client_timeout=10, max_connections=2)
    live.server.pressed_head_grace = 10   # the idle one is closed for room, not for time
    entered, gate = held_route(extra_routes)
    busy = connect(live)
    idle = connect(live)
    try:
        busy.sendall(b"GET /held HTTP/1.1\r\n\r\n")
        assert entered.acquire(timeout=5)
        assert live.call("GET", "/api/num_jobs")[0] == 200   # takes the idle one's place
        assert idle.recv(100) == b""
        gate.set()
        assert recv_until(busy, b"}").startswith(b"HTTP/1.1 200")
    finally:
        gate.set()
        busy.close()
        idle.close()


def test_when_every_connection_is_serving_a_newcomer_gets_503(serve, tiny_index, extra_routes):
    live = serve(tiny_index, client_timeout=10, max_connections=2)
    entered, gate = held_route(extra_routes)
    held = [connect(live) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(b"GET /held HTTP/1.1\r\n\r\n")
            assert entered.acquire(timeout=5)
        # The refusal is sent as soon as the connection is accepted; a client
        # that sent its request first could see it reset (no lingering close).
        newcomer = connect(live)
        refusal = recv_all(newcomer)
        newcomer.close()
        assert refusal.startswith(b"HTTP/1.1 503") and b"too many open connections" in refusal
        gate.set()
        for sock in held:
            assert recv_until(sock, b"}").startswith(b"HTTP/1.1 200")
    finally:
        gate.set()
        for sock in held:
            sock.close()
    assert live.connections_gone()
    assert live.call("GET", "/api/num_jobs")[0] == 200


# -- shutdown -------------------------------------------------------------------

def test_shutdown_answers_requests_in_flight_and_closes_idle_connections(
        serve, tiny_index, extra_routes):
    live = serve(tiny_index, client_timeout=10)   # idle ones are closed by the shutdown
    entered, gate = held_route(extra_routes)
    idle = connect(live)
    idle.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")
    assert recv_until(idle, b"}").startswith(b"HTTP/1.1 200")   # now idle, kept alive
    answers, closed = [], []
    client = threading.Thread(target=lambda: answers.append(live.call("GET", "/held")))
    client.start()
    try:
        assert entered.acquire(timeout=5)
        live.server.shutdown()
        closer = threading.Thread(
            target=lambda: closed.append(live.server.close_connections(timeout=10)))
        closer.start()
        assert idle.recv(100) == b""   # closed at once, while the held request goes on
        assert closer.is_alive()       # waiting for the request in flight
    finally:
        gate.set()
        idle.close()
    client.join(timeout=10)
    closer.join(timeout=10)
    status, response, answer = answers[0]
    assert (status, answer) == (200, {"held": True})
    assert response.getheader("Connection") == "close"
    assert closed == [True]


def test_close_connections_gives_up_after_its_timeout(live, extra_routes):
    entered, gate = held_route(extra_routes)
    with connect(live) as sock:
        sock.sendall(b"GET /held HTTP/1.1\r\n\r\n")
        try:
            assert entered.acquire(timeout=5)
            live.server.shutdown()
            assert live.server.close_connections(timeout=0.2) is False
            assert sock.recv(100) == b""   # shut down unanswered
        finally:
            gate.set()


# -- the open-file limit ----------------------------------------------------------

class FakeResource:
    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard, settable):
        self.limits = (soft, hard)
        self.settable = settable

    def getrlimit(self, _which):
        return self.limits

    def setrlimit(self, _which, limits):
        if not self.settable:
            raise ValueError("not allowed")
        self.limits = limits


@pytest.mark.parametrize("soft, hard, settable, expected", [
    (20000, 20000, False, (1000, 20000)),   # room enough already
    (256, 4096, True, (1000, 1064)),        # the soft limit is raised
    (256, 256, True, (192, 256)),           # the hard limit is too low: the cap is lowered
    (256, 4096, False, (192, 256)),         # raising is not allowed: likewise
    (-1, -1, False, (1000, -1)),            # no limit
])
def test_the_connection_cap_fits_the_open_file_limit(monkeypatch, soft, hard, settable,
                                                     expected):
    fake = FakeResource(soft, hard, settable)
    monkeypatch.setattr(connections, "resource", fake)
    cap, note = connections.fit_connection_cap(1000)
    assert (cap, fake.limits[0]) == expected
    if cap < 1000:
        assert note == ("--max-connections 1000 lowered to 192: the open-file limit is 256"
                        " and 64 descriptors are kept for files and logs")
    else:
        assert note is None


class FlakyListener:
    """The listening socket, with accept() failing EMFILE ``failures`` times;
    ``wait_calls(n)`` waits until accept() was called n times."""

    def __init__(self, sock, failures):
        self.sock = sock
        self.failures = failures
        self.calls = 0
        self.changed = threading.Condition()   # guards calls and failures

    error = OSError(errno.EMFILE, "Too many open files")

    def accept(self):
        with self.changed:
            self.calls += 1
            self.changed.notify_all()
            fail = self.failures > 0
            if fail:
                self.failures -= 1
        if fail:
            raise self.error
        return self.sock.accept()

    def wait_calls(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: self.calls >= count, TIMEOUT)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_out_of_descriptors_a_client_is_answered_503_with_the_spare_one(live):
    live.server.socket = FlakyListener(live.server.socket, failures=1)
    status, _, answer = live.call("GET", "/api/num_jobs")
    assert status == 503 and "too many open connections" in answer["reason"]
    assert live.call("GET", "/api/num_jobs")[0] == 200


def test_out_of_descriptors_the_accept_loop_waits_for_a_connection_to_close(
        serve, tiny_index):
    live = serve(tiny_index, client_timeout=10)
    live.server.out_of_files_retry = 600   # only a connection that closes may resume it
    other = connect(live)
    other.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")
    assert recv_until(other, b"}").startswith(b"HTTP/1.1 200")
    listener = live.server.socket = FlakyListener(live.server.socket, failures=10**9)
    answers = []
    client = threading.Thread(target=lambda: answers.append(live.call("GET", "/api/num_jobs")))
    client.start()
    assert listener.wait_calls(2)   # the client's connection reached the accept loop
    time.sleep(0.3)        # a window in which a spinning loop would call accept() thousands of times
    with listener.changed:
        assert listener.calls == 2   # one accept, one retry with the spare descriptor
        listener.failures = 0
    other.close()                # a descriptor is freed: accepting resumes at once
    client.join(timeout=TIMEOUT)
    assert answers and answers[0][0] == 200, "the paused loop was not woken when a connection left"


def test_out_of_memory_with_no_connection_to_close_accepting_resumes_after_a_while(live):
    """ENOMEM (or ENFILE) is not cured by closing a connection of ours, and
    there may be none to close: the pause ends after out_of_files_retry."""
    live.server.out_of_files_retry = 0.2
    listener = FlakyListener(live.server.socket, failures=2)   # the accept and the spare's
    listener.error = OSError(errno.ENOMEM, "Cannot allocate memory")
    live.server.socket = listener
    began = time.monotonic()
    assert live.call("GET", "/api/num_jobs")[0] == 200
    assert listener.calls == 3 and time.monotonic() - began < 5


def test_shutdown_of_a_server_that_never_served_returns(tiny_server):
    server = webserver.StatsServer(("127.0.0.1", 0), tiny_server.jobs)
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    stopper.join(TIMEOUT)
    server.server_close()
    assert not stopper.is_alive()


class NoDeadlineEvent(threading.Event):
    """An Event whose wait with a deadline is noted (and returns at once)."""

    timed = False

    def wait(self, timeout=None):
        if timeout is not None:
            NoDeadlineEvent.timed = True
            return self.is_set()
        return super().wait()


def test_shutdown_returns_only_once_the_accept_loop_has_stopped(live, monkeypatch):
    stopped = NoDeadlineEvent()
    live.server._stopped = stopped   # pylint: disable=protected-access
    monkeypatch.setattr(NoDeadlineEvent, "timed", False)
    live.server.shutdown()
    assert not NoDeadlineEvent.timed and stopped.is_set()
    live.thread.join(TIMEOUT)
    assert not live.thread.is_alive()


@pytest.mark.parametrize("where, failure", [
    ("bind", OSError(98, "Address already in use")), ("bind", KeyboardInterrupt()),
    # Before socketserver's own clean-up begins: making the listening socket.
    ("socket", OSError(24, "Too many open files")), ("socket", KeyboardInterrupt())])
def test_a_server_that_cannot_start_leaves_no_descriptor_open(tiny_server, monkeypatch,
                                                              where, failure):
    made, closed = [], []
    real_socketpair, real_spare, real_close = (webserver.socket.socketpair,
                                               webserver._open_spare_fd,   # pylint: disable=protected-access
                                               webserver.os.close)

    def socketpair():
        pair = real_socketpair()
        made.extend(pair)
        return pair

    def spare():
        fd = real_spare()
        made.append(fd)
        return fd

    def refuse(_server):
        raise failure

    monkeypatch.setattr(webserver.socket, "socketpair", socketpair)
    monkeypatch.setattr(webserver, "_open_spare_fd", spare)
    monkeypatch.setattr(webserver.os, "close", lambda fd: (closed.append(fd), real_close(fd)))
    if where == "bind":
        monkeypatch.setattr(webserver.StatsServer, "server_bind", refuse)
    else:
        monkeypatch.setattr(socketserver, "socket", types.SimpleNamespace(
            socket=lambda *_args: refuse(None)))
    with pytest.raises(type(failure)):
        webserver.StatsServer(("127.0.0.1", 0), tiny_server.jobs)
    wake_sockets, spare_fd = made[:2], made[2]
    assert all(sock.fileno() == -1 for sock in wake_sockets)
    assert spare_fd in closed


def test_a_spare_descriptor_given_up_is_taken_back(live, monkeypatch):
    opened, tried = webserver._open_spare_fd, threading.Event()   # pylint: disable=protected-access
    # The spare cannot be taken back after the refusal (another thread took the descriptor).
    monkeypatch.setattr(webserver, "_open_spare_fd", lambda: tried.set())
    live.server.socket = FlakyListener(live.server.socket, failures=1)
    assert live.call("GET", "/api/num_jobs")[0] == 503
    assert tried.wait(10)
    monkeypatch.setattr(webserver, "_open_spare_fd", opened)
    assert live.call("GET", "/api/num_jobs")[0] == 200
    assert live.call("GET", "/api/num_jobs")[0] == 200   # one turn of the loop after an accept
    assert live.server._spare_fd is not None   # pylint: disable=protected-access


def test_a_receive_that_finds_nothing_yet_waits_and_returns_what_then_comes():
    ours, peer = socket.socketpair()
    try:
        connection = ConnectionSocket(ours)
        real_wait = connection._wait
        waits = []

        def data_arrives_while_waiting(event, deadline):
            waits.append(event)
            peer.sendall(b"GET / HTTP/1.1\r\n")
            real_wait(event, deadline)
        connection._wait = data_arrives_while_waiting
        assert connection.recv(100, time.monotonic() + TIMEOUT) == b"GET / HTTP/1.1\r\n"
        assert len(waits) == 1      # the receive failed once (nothing had come), then waited
        connection._wait = real_wait
        with pytest.raises(Deadline):
            connection.recv(100, time.monotonic() + 0.05)
    finally:
        ours.close()
        peer.close()
