"""Hostile, broken and slow clients: every one gets API.md's answer or is cut
off, and the server keeps serving everybody else."""

import json
import logging
import random
import re
import select
import socket
import threading
import time

import pytest

from lestats import logs
from lestats.tools import hostile
from lestats.tools.soak import ServerProcess

from conftest import OBESITY

TIMEOUT = 0.5   # the server's client timeout in these tests


@pytest.fixture
def server(serve, tiny_index):
    return serve(tiny_index, client_timeout=TIMEOUT, max_connections=400)


def exchange(live, raw, read_timeout=5.0):
    """Send raw bytes on a new connection; return everything the server sends
    back before it closes the connection (or read_timeout passes)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=read_timeout) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)   # no more requests: the server closes after answering
        except OSError:
            pass   # the server may close before reading everything
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
    return b"".join(chunks)


def read_to_end(sock):
    """What the server sends until it closes the connection (or resets it)."""
    chunks = []
    try:
        chunk = sock.recv(65536)
        while chunk:
            chunks.append(chunk)
            chunk = sock.recv(65536)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_and_json(reply):
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def still_serving(live):
    status, answer = live.wait_result(live.submit("global_mean", {"question": OBESITY}))
    return status == 200 and answer["data"] == {"global_mean": 14.5}


def connection_threads():
    return sum(t.name.startswith("lestats-connection") for t in threading.enumerate())


def rss_kib():
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("raw, status, reason", [
    (b"GARBAGE\r\n\r\n", 400, "Bad request"),
    (b"GET / HTTP/9.9\r\n\r\n", 505, "Invalid HTTP version"),
    pytest.param(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "", id="long-uri"),
    pytest.param(b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431,
                 "Request header fields too large", id="long-header"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
                 + b"\r\n", 431, "Request header fields too large", id="101-headers"),
    (b"BREW /api/jobs HTTP/1.1\r\n\r\n", 501, "Unsupported method"),
    (b"POST /api/states_mean HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", 411, "chunked bodies are not accepted"),
    (b"POST /api/states_mean HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400,
     "Content-Length must be one non-negative integer"),
    (b"POST /api/states_mean HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400,
     "Content-Length must be one non-negative integer"),
    (b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     400, "Content-Length must be one non-negative integer"),
    (b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400,
     "Content-Length must be one non-negative integer"),
    (b"GET /api/get_results/job_id_1\x00 HTTP/1.1\r\n\r\n", 404, "Invalid job_id"),
    (b"GET /api/get_results/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1\r\n\r\n", 404,
     "Invalid job_id"),
    (b"GET /api/get_results/../../etc/passwd HTTP/1.1\r\n\r\n", 404, "Invalid job_id"),
    (b"GET /api/get_results/job_id_+1 HTTP/1.1\r\n\r\n", 404, "Invalid job_id"),
    (b"GET /api/get_results/job_id_1000000000000000000000000000000 HTTP/1.1\r\n\r\n", 404,
     "Invalid job_id"),
    # A long path within the 32 KiB head limit is routed like any other.
    pytest.param(b"GET /" + b"x" * 30_000 + b" HTTP/1.1\r\n\r\n", 404, "Not found",
                 id="long-path"),
])
def test_broken_requests_get_a_json_error_and_the_server_goes_on(server, raw, status, reason):
    got_status, answer = status_and_json(exchange(server, raw))
    assert got_status == status
    assert answer["status"] == "error" and reason in answer["reason"]
    assert still_serving(server)


def test_no_request_ever_reads_a_file_outside_the_results_directory(server, tmp_path):
    secret = tmp_path / "job_id_1.json"
    secret.write_text('{"secret": true}')
    for path in ("../job_id_1", "..%2Fjob_id_1", "%2e%2e/job_id_1", "job_id_1/..",
                 "/tmp/job_id_1", "job_id_1.json"):
        reply = exchange(server, f"GET /api/get_results/{path} HTTP/1.1\r\n\r\n".encode())
        assert status_and_json(reply) == (404, {"status": "error", "reason": "Invalid job_id"})


def test_a_body_shorter_than_its_content_length_times_out_alone(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
        stalled.sendall(b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        assert still_serving(server)            # others are served meanwhile
        assert stalled.recv(100) == b""         # then the stalled one is closed
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 2


def test_a_client_that_sends_nothing_is_cut_off(server):
    # The clock starts before the connect: the server's starts once it has
    # accepted, which may come before this thread runs again after connecting.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
        assert silent.recv(100) == b""
        assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 2


def test_a_client_trickling_one_byte_at_a_time_is_cut_off_at_the_deadline(server):
    request = b"POST /api/states_mean HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + b" " * 40
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        try:
            for byte in request:
                slow.sendall(bytes([byte]))
                time.sleep(0.05)   # the slow client's pace, not a wait for the server
                if time.monotonic() - started > TIMEOUT + 2:
                    break
        except OSError:
            pass   # cut off: the point of the test
        slow.settimeout(5)
        try:
            rest = slow.recv(100)
        except ConnectionResetError:
            rest = b""
    assert rest == b""
    assert time.monotonic() - started < TIMEOUT + 2.5


def test_two_hundred_idle_connections_do_not_slow_other_clients(server):
    assert still_serving(server)
    baseline_threads = connection_threads()
    baseline_rss = rss_kib()
    start = time.monotonic()
    for _ in range(20):
        server.call("GET", "/api/num_jobs")
    normal = (time.monotonic() - start) / 20
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(200)]
    try:
        for sock in idle:
            sock.sendall(b"GET")   # a request begun and never finished
        start = time.monotonic()
        for _ in range(20):
            assert server.call("GET", "/api/num_jobs")[0] == 200
        busy = (time.monotonic() - start) / 20
        threads = connection_threads()
        rss_growth_mib = (rss_kib() - baseline_rss) / 1024
        print(f"\n200 idle connections: {threads} connection threads, RSS +{rss_growth_mib:.1f}"
              f" MiB, request {normal * 1000:.2f} ms -> {busy * 1000:.2f} ms")
        assert threads <= baseline_threads + 200 + 2   # + a closing one or two
        assert rss_growth_mib < 64
        assert busy < max(10 * normal, 0.05)
    finally:
        for sock in idle:
            sock.close()
    assert still_serving(server)


def test_a_burst_of_connections_is_accepted_not_refused(server):
    count = 300
    start = threading.Barrier(count)
    answers = []

    def client():
        start.wait(timeout=10)
        answers.append(status_and_json(exchange(server, b"GET /api/num_jobs HTTP/1.1\r\n"
                                                        b"Connection: close\r\n\r\n"))[0])

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200] * count


def test_at_max_connections_a_newcomer_takes_the_place_of_the_longest_idle(serve, tiny_index):
    live = serve(tiny_index, client_timeout=10, max_connections=3)
    live.server.pressed_head_grace = 10   # idle ones wait as long as they like, but for room
    held = {}
    try:
        for _ in range(3):   # each one is served, then waits idle for its next request
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            held[sock.getsockname()] = sock
            sock.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        order = wait_for(lambda: [address for address, phase in live.server.connections.snapshot()
                                  if phase == "waiting"], 3)
        assert live.call("GET", "/")[0] == 200
        assert held.pop(order[0]).recv(100) == b""   # the one idle longest made room
        for sock in held.values():
            sock.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held.values():
            sock.close()
    assert live.connections_gone()
    assert still_serving(live)


def wait_for(sample, count, timeout=5.0):
    """``sample()`` once it has ``count`` items (the server threads get there)."""
    deadline = time.monotonic() + timeout
    items = sample()
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.01)
        items = sample()
    return items


def open_connections(live, count):
    return [socket.create_connection(("127.0.0.1", live.port), timeout=5) for _ in range(count)]


def seconds_until_closed(sock, limit=3.0):
    """How long until the server closes ``sock``; ``limit`` if it does not."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        sock.recv(100)
    except socket.timeout:
        return limit
    except OSError:
        pass
    return time.monotonic() - started


def test_a_nearly_full_table_gives_a_silent_connection_less_time(serve, tiny_index):
    live = serve(tiny_index, client_timeout=5, max_connections=4)
    live.server.pressed_head_grace = 0.3
    earlier = open_connections(live, 2)
    try:
        for sock in earlier:   # served, so surely in the table before the third comes
            sock.sendall(b"GET /api/num_jobs HTTP/1.1\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        third = socket.create_connection(("127.0.0.1", live.port), timeout=5)
        with third:   # 3 of 4: the table is pressed; else the grace would be 5 s
            assert 0.3 <= seconds_until_closed(third) < 2
    finally:
        for sock in earlier:
            sock.close()


def test_a_request_head_must_keep_arriving_at_the_minimum_rate(serve, tiny_index):
    live = serve(tiny_index, client_timeout=10)
    live.server.head_grace = 0.5
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        head = b"GET /api/num_jobs HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        for byte in head:   # 20 bytes a second, far below 500
            readable, _, _ = select.select([sock], [], [], 0.05)   # the slow client's pace
            if readable or time.monotonic() - started > 4:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
        assert seconds_until_closed(sock) < 3
    assert time.monotonic() - started < 0.5 + 1.5   # the grace (+1 s/500 bytes), not 10 s


def test_a_normal_client_is_served_among_a_hundred_trickling_sockets(serve, tiny_index):
    live = serve(tiny_index, client_timeout=5, max_connections=100)
    numbers = hostile.measure_slowloris(live.port, tricklers=100, seconds=1.5, byte_every=1.0)
    print(f"\n100 trickling sockets, cap 100: {numbers}")
    assert numbers["all_connected"] and numbers["requests"] >= 10
    assert numbers["answered_share"] >= 0.9


def test_a_head_over_32_kib_is_refused_431_without_waiting_for_its_end(server):
    lines = b"".join(b"X-%03d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\n" + lines)   # and no blank line: no end
        except OSError:
            pass
        reply = read_to_end(sock)
    status, answer = status_and_json(reply)
    assert status == 431 and answer["reason"] == (
        "Request header fields too large: more than 32768 bytes")


def test_past_the_open_file_limit_clients_are_still_answered(tmp_path):
    server = ServerProcess(None, tmp_path / "results", tmp_path / "webserver.log",
                           ["--max-connections", "1000"], python=hostile.limited_python(128))
    held = []
    try:
        held = open_connections(server, 150)
        assert hostile.get_status(server.port, timeout=5) == 200
    finally:
        for sock in held:
            sock.close()
        assert server.stop() == 0
    assert ("--max-connections 1000 lowered to 64: the open-file limit is 128"
            in (tmp_path / "webserver.log").read_text())


FORGING = [b"\x1b[2J", b"\r2026-01-01T00:00:00.000Z INFO forged", b"\x85forged", b"\x0bforged",
           b"\x0cforged", b"\x1cforged", b"\x00nul", b"\xe2\x80\xa8forged"]


def test_control_characters_in_requests_cannot_forge_log_lines(serve, tiny_index, tmp_path):
    path = tmp_path / "w.log"
    handler = logs.configure(str(path))
    try:
        live = serve(tiny_index, client_timeout=TIMEOUT)
        for text in FORGING:
            exchange(live, b"GET /x" + text + b" HTTP/1.1\r\n\r\n")
            exchange(live, b"GET /x HTTP/1.1\r\nX-Note: " + text + b"\r\n\r\n")
    finally:
        logging.getLogger("lestats").removeHandler(handler)
        handler.close()
    lines = path.read_text(encoding="utf-8").splitlines()   # splits on every one of them
    assert len(lines) >= 2 * len(FORGING)
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING) ", line), line


GET_WITH = b"GET /api/num_jobs HTTP/1.1\r\n%s\r\n\r\n"   # a request with one header line
POST_WITH = b"POST /api/states_mean HTTP/1.1\r\n%s\r\n\r\n{}"
FRAMING_FAULTS = {   # id: (raw request, what the 400's reason names)
    "two-transfer-encodings": (POST_WITH % b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
                               "more than one Transfer-Encoding"),
    "length-and-chunked": (POST_WITH % b"Content-Length: 2\r\nTransfer-Encoding: chunked",
                           "both Transfer-Encoding and Content-Length"),
    "space-before-colon": (POST_WITH % b"Content-Length : 2", "whitespace before the colon"),
    "no-colon": (GET_WITH % b"No colon here", "header line without a colon"),
    "obs-fold": (GET_WITH % b"X-A: 1\r\n folded", "folded header line (obs-fold)"),
    "nul-in-value": (GET_WITH % b"X-A: a\x00b", "control character in the value of header X-A"),
    "cr-in-value": (GET_WITH % b"X-A: a\rb", "control character in the value of header X-A"),
    "nul-in-name": (GET_WITH % b"X\x00A: b", "invalid character in header name"),
    "nel-in-request-line": (b"GET /api/num_jobs\x85HTTP/1.1\r\n\r\n", "whitespace other than"),
    "nbsp-in-request-line": (b"GET\xa0/api/num_jobs HTTP/1.1\r\n\r\n", "whitespace other than"),
    "tab-in-request-line": (b"GET\t/api/num_jobs HTTP/1.1\r\n\r\n", "whitespace other than"),
    "two-spaces": (b"GET  /api/num_jobs HTTP/1.1\r\n\r\n", "exactly one space"),
    "trailing-space": (b"GET /api/num_jobs HTTP/1.1 \r\n\r\n", "exactly one space"),
    "bare-lf": (b"GET /api/num_jobs HTTP/1.1\n\n", "a line ends with LF alone"),
    "bad-method": (b"G(T /api/num_jobs HTTP/1.1\r\n\r\n", "method is not a token"),
    "bad-version": (b"GET /api/num_jobs HTTP/1.x\r\n\r\n", "request version"),
}


@pytest.mark.parametrize("raw, reason", list(FRAMING_FAULTS.values()), ids=list(FRAMING_FAULTS))
def test_framing_a_front_proxy_could_read_otherwise_is_400_and_closes(serve, tiny_index,
                                                                     raw, reason):
    live = serve(tiny_index, client_timeout=5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=2) as sock:
        sock.sendall(raw)
        reply = read_to_end(sock)   # the server closes: it must not wait for more
    status, answer = status_and_json(reply)
    assert status == 400 and reason in answer["reason"] and b"Connection: close" in reply
    assert answer["reason"].startswith("Bad request: ")


def mutate(rng, raw):
    raw = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        position = rng.randrange(len(raw) + 1)
        if choice < 0.3 and raw:
            del raw[position:position + rng.randint(1, 20)]
        elif choice < 0.6:
            raw[position:position] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20)))
        elif choice < 0.8 and raw:
            raw[min(position, len(raw) - 1)] = rng.getrandbits(8)
        else:
            raw[position:position] = rng.choice([b"\r\n", b"\r\n\r\n", b"%", b"..", b"\x00",
                                                 b"{", b"[" * 50, b"Content-Length: 7\r\n"])
    return bytes(raw)


SEEDS = [
    b"POST /api/states_mean HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s",
    b"POST /api/state_mean_by_category HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s",
    b"GET /api/get_results/job_id_1 HTTP/1.1\r\n\r\n",
    b"GET /api/jobs HTTP/1.1\r\nConnection: keep-alive\r\n\r\nGET /api/num_jobs HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
]


@pytest.mark.slow
def test_fuzzing_with_random_and_mutated_requests(server):
    rng = random.Random(20261127)
    body = json.dumps({"question": OBESITY, "state": "Ohio"}).encode()
    idle_threads = connection_threads()
    deadline = time.monotonic() + 4
    sent = 0
    statuses = {}
    while sent < 3000 and time.monotonic() < deadline:
        seed = rng.choice(SEEDS)
        raw = seed % (len(body), body) if b"%d" in seed else seed
        raw = mutate(rng, raw) if rng.random() < 0.9 else bytes(
            rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        reply = exchange(server, raw, read_timeout=TIMEOUT + 1)
        sent += 1
        if reply.startswith(b"HTTP/1."):
            code = int(reply.split(b" ", 2)[1])
            statuses[code] = statuses.get(code, 0) + 1
            assert code in (200, 400, 404, 405, 411, 413, 414, 431, 501, 505), reply[:300]
            head, _, rest = reply.partition(b"\r\n\r\n")
            assert b"Traceback" not in rest
        else:
            assert reply == b"", reply[:300]   # cut off without an answer
    print(f"\nfuzz: {sent} requests, statuses {sorted(statuses.items())}")
    assert sent >= 300
    assert still_serving(server)
    end = time.monotonic() + TIMEOUT + 2
    while connection_threads() > idle_threads and time.monotonic() < end:
        time.sleep(0.01)
    assert connection_threads() <= idle_threads
