"""Fake servers of the course's API, each isolating one behaviour the
course's checker has a rule for, or one hostile answer.

A ``Fake`` answers from a case folder: a POST gets a job id, and the job's
result is the case's expected output (looked up by endpoint and body).  A
``Behaviour`` changes one thing: how long a job runs, which POSTs get wrong
data, what a poll answers, or what raw bytes go back.  It runs on raw
sockets in this process (one thread per connection), so any answer can be
crafted, and reads requests the way a small server does: head, then a body
of Content-Length bytes.
"""

import json
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

Raw = Callable[[socket.socket], None]


def _json(status: int, value: Any, reason: str = "OK") -> bytes:
    body = json.dumps(value).encode("utf-8")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _html(status: int) -> bytes:
    body = b"<!DOCTYPE HTML><html><body><h1>Error response</h1></body></html>"
    return (f"HTTP/1.1 {status} Oops\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def shifted(value: Any) -> Any:
    """``value`` with every number moved by 1 (a wrong answer of the same shape)."""
    if isinstance(value, dict):
        return {key: shifted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shifted(item) for item in value]
    if isinstance(value, float):
        return value + 1.0
    return value


def rounded(value: Any) -> Any:
    """``value`` with every float made an int (DeepDiff calls that a type change)."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return int(round(value))
    return value


@dataclass
class Behaviour:   # pylint: disable=too-many-instance-attributes
    """What a Fake does differently from a correct, instant server."""

    delay: float = 0.0                 # a job answers running until this long after its POST
    wrong_first: int = 0               # the first N POSTs of each endpoint get wrong data
    wrong_every: int = 0               # every Nth POST of each endpoint gets wrong data
    ints: bool = False                 # floats answered as ints
    poll_status: Optional[str] = None  # status answered (200) before the job is done
    done_after: float = 0.0            # ... and done after this long, if poll_status is set
    poll_http: int = 200               # HTTP status of every poll answer
    post_http: int = 200               # HTTP status of every POST answer (its JSON is right)
    post_raw: Optional[Raw] = None     # replaces the whole POST answer
    poll_raw: Optional[Raw] = None     # replaces the whole poll answer
    answer_delay: float = 0.0          # every poll answer waits this long


@dataclass
class _Job:
    expected: Any
    posted: float
    wrong: bool


@dataclass
class Fake:
    """A fake server on 127.0.0.1:<ephemeral>, answering ``cases`` (a map of
    (endpoint, canonical JSON body) to expected data).  A context manager."""

    cases: Dict[Tuple[str, str], Any]
    behaviour: Behaviour = field(default_factory=Behaviour)
    posts: Dict[str, int] = field(default_factory=dict)
    jobs: List[_Job] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None
    port_wanted: int = 0
    on_post: Optional[Callable[[str], None]] = None   # called with the endpoint of each POST

    @classmethod
    def of_folder(cls, folder: str, behaviour: Optional[Behaviour] = None,
                  port: int = 0) -> "Fake":
        """A fake answering the cases of a course-layout folder, on ``port``
        (0: any free one)."""
        cases = {}
        for endpoint in os.listdir(folder):
            inputs = os.path.join(folder, endpoint, "input")
            for name in os.listdir(inputs):
                with open(os.path.join(inputs, name), encoding="utf-8") as body, open(
                        os.path.join(folder, endpoint, "output", "out" + name[2:]),
                        encoding="utf-8") as expected:
                    cases[(endpoint, canonical(json.load(body)))] = json.load(expected)
        return cls(cases, behaviour or Behaviour(), port_wanted=port)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server.server_address[1]

    def __enter__(self) -> "Fake":
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            """One connection: one request, one answer."""

            def handle(self) -> None:
                fake.handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port_wanted), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        # A short poll: shutdown() waits for the serving loop to look.
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, sock: socket.socket) -> None:
        """Read one request and answer it as the behaviour says."""
        request = _read_request(sock)
        if request is None:
            return
        method, path, body = request
        behaviour = self.behaviour
        if method == "POST":
            if behaviour.post_raw is not None:
                behaviour.post_raw(sock)
                return
            sock.sendall(self.post(path.rsplit("/", 1)[-1], body))
        elif path.startswith("/api/get_results/"):
            if behaviour.poll_raw is not None:
                behaviour.poll_raw(sock)
                return
            time.sleep(behaviour.answer_delay)
            sock.sendall(self.poll(path.rsplit("/", 1)[-1]))
        else:
            sock.sendall(_json(200, {"num_jobs": 0}))

    def post(self, endpoint: str, body: bytes) -> bytes:
        """A job id, for a case the folder has; 400 otherwise."""
        try:
            expected = self.cases[(endpoint, canonical(json.loads(body)))]
        except (KeyError, ValueError):
            return _json(400, {"status": "error", "reason": "unknown case"})
        if self.on_post is not None:
            self.on_post(endpoint)
        with self.lock:
            count = self.posts[endpoint] = self.posts.get(endpoint, 0) + 1
            every = self.behaviour.wrong_every
            self.jobs.append(_Job(expected, time.monotonic(), count <= self.behaviour.wrong_first
                                  or bool(every and count % every == 0)))
            number = len(self.jobs)
        return _json(self.behaviour.post_http, {"job_id": f"job_id_{number}"})

    def poll(self, job_id: str) -> bytes:
        """The job's status, as the behaviour says."""
        behaviour = self.behaviour
        with self.lock:
            number = int(job_id.rsplit("_", 1)[-1]) if job_id[7:].isdigit() else 0
            job = self.jobs[number - 1] if 0 < number <= len(self.jobs) else None
        if job is None:
            return _json(404, {"status": "error", "reason": "Invalid job_id"})
        age = time.monotonic() - job.posted
        if behaviour.poll_status is not None and age < behaviour.done_after:
            return _json(behaviour.poll_http, {"status": behaviour.poll_status})
        if age < behaviour.delay:
            return _json(behaviour.poll_http, {"status": "running"})
        data = shifted(job.expected) if job.wrong else job.expected
        return _json(behaviour.poll_http, {"status": "done",
                                           "data": rounded(data) if behaviour.ints else data})


def canonical(body: Any) -> str:
    """One text per request body, whatever its key order."""
    return json.dumps(body, sort_keys=True)


def _read_request(sock: socket.socket) -> Optional[Tuple[str, str, bytes]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split()[:2]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return method, path, body


# -- raw answers: what a broken or hostile server sends ------------------------------

def html(status: int = 200) -> Raw:
    """An HTML page instead of JSON."""
    return lambda sock: sock.sendall(_html(status))


def drop(sock: socket.socket) -> None:
    """Close the connection without a byte."""
    sock.close()


def endless_chunked(sock: socket.socket) -> None:
    """A chunked body that never ends (until the client hangs up)."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    try:
        while True:
            sock.sendall(chunk)
    except OSError:
        pass


def huge_length(sock: socket.socket) -> None:
    """Content-Length 10**15, then a little, then nothing."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{\"job_id\": " % 10**15)
    _wait_for_hangup(sock)


def trickle(sock: socket.socket) -> None:
    """A correct answer, one byte every 2 s."""
    try:
        for byte in _json(200, {"job_id": "job_id_1"}):
            sock.sendall(bytes([byte]))
            time.sleep(2)
    except OSError:
        pass


def giant_string(sock: socket.socket) -> None:
    """A 200 MB JSON string, with no length: the body ends when the connection does."""
    sock.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"')
    block = b"x" * (1024 * 1024)
    try:
        for _ in range(200):
            sock.sendall(block)
        sock.sendall(b'"')
    except OSError:
        pass


def deep_nesting(sock: socket.socket) -> None:
    """``[`` 100,000 times."""
    body = b"[" * 100_000
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _wait_for_hangup(sock: socket.socket) -> None:
    sock.settimeout(60)
    try:
        while sock.recv(1024):
            pass
    except OSError:
        pass


HOSTILE = {"endless chunked body": endless_chunked, "Content-Length 10**15": huge_length,
           "one byte every 2 s": trickle, "a 200 MB JSON string": giant_string,
           "[ 100,000 times": deep_nesting}
