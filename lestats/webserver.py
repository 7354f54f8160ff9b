"""The HTTP side: the route table, the request handler and the server.

``ROUTES`` is the one place that lists what the server answers; the request
handler looks a request up there, reads its body, calls the route's handler
and writes the JSON answer.  Everything API.md says about status codes and
error bodies happens in this module and nowhere else.
"""

import html
import io
import json
import logging
import re
import selectors
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .jobs import AlreadyShuttingDown, JobManager, ShuttingDown, UnknownJob
from .statistics import STATISTICS, QueryError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
DEFAULT_CLIENT_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
# How long get_results waits for a running job before answering "running":
# long enough for a job that was just queued, short enough never to stall a client.
RESULT_WAIT = 0.1
JSON_TYPE = "application/json"
JOB_ID_PARAM = "{job_id}"
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


class ApiError(Exception):
    """An answer of API.md's error table: ``{"status": "error", "reason": ...}``.

    ``close`` asks to end the connection after the answer, when the rest of
    the request could not be read and the stream is no longer in step.
    """

    def __init__(self, status: int, reason: str, headers: Sequence[Tuple[str, str]] = (),
                 close: bool = False):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
        self.close = close


@dataclass
class Request:
    """What a route handler gets: the path parameter (the job id of
    get_results) and the raw body."""

    param: str = ""
    body: bytes = b""


@dataclass
class Reply:
    """What a route handler returns: a status, a payload (JSON-ready, or
    bytes sent as they are) and, for logging, the job id it concerns."""

    status: int
    payload: Any
    job_id: str = ""
    content_type: str = JSON_TYPE


Handler = Callable[[JobManager, Request], Reply]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return result


def json_object(body: bytes) -> Dict[str, Any]:
    """Decode a request body that must be one JSON object; raise ApiError 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "body is not valid UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant,
                           object_pairs_hook=_unique_keys)
    except RecursionError as exc:
        raise ApiError(400, "body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"body must be a JSON object, not {type(value).__name__}")
    return value


def post_statistic(name: str) -> Handler:
    """The handler of ``POST /api/<name>`` for statistic ``name``."""
    def handle(jobs: JobManager, request: Request) -> Reply:
        body = json_object(request.body)
        try:
            job_id = jobs.submit(name, body)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from exc
        except ShuttingDown as exc:
            raise ApiError(503, "Server is shutting down") from exc
        except OSError as exc:   # the journal could not be written: no id is given out
            log.exception("cannot record a %s job", name)
            raise ApiError(500, f"cannot record the job: {exc.strerror or exc}") from exc
        return Reply(200, {"job_id": job_id}, job_id=job_id)
    return handle


def get_results(jobs: JobManager, request: Request) -> Reply:
    """``GET /api/get_results/<job_id>``."""
    try:
        result = jobs.result(request.param, wait=RESULT_WAIT)
    except UnknownJob as exc:
        raise ApiError(404, "Invalid job_id") from exc
    if result.status == "done":
        body = b'{"status": "done", "data": ' + result.data_json + b"}"
        return Reply(200, body, job_id=request.param)
    if result.status == "error":
        raise ApiError(500, result.reason or "job failed")
    return Reply(200, {"status": result.status}, job_id=request.param)


def get_jobs(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/jobs``."""
    data = [{job_id: status} for job_id, status in jobs.statuses()]
    return Reply(200, {"status": "done", "data": data})


def get_num_jobs(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/num_jobs``."""
    return Reply(200, {"num_jobs": jobs.num_jobs()})


def graceful_shutdown(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/graceful_shutdown``."""
    try:
        jobs.shutdown()
    except AlreadyShuttingDown as exc:
        raise ApiError(409, "Server is already shutting down") from exc
    return Reply(200, {"status": "shutting down"})


def index_page(_jobs: JobManager, _request: Request) -> Reply:
    """``GET /``: the endpoints, as an HTML page."""
    items = "\n".join(
        f"<li><code>{route.method} {html.escape(route.path)}</code>: "
        f"{html.escape(route.summary)}</li>"
        for route in ROUTES)
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lestats</title>"
            "</head>\n<body><h1>lestats</h1>\n<p>Statistics of the Nutrition, Physical"
            " Activity, and Obesity survey. POST a question, poll for the result.</p>\n"
            f"<ul>\n{items}\n</ul></body></html>\n")
    return Reply(200, page.encode("utf-8"), content_type="text/html; charset=utf-8")


@dataclass(frozen=True)
class Route:
    """One line of the route table.  A ``path`` ending in ``{job_id}`` matches
    any path that starts with what comes before it; the rest is passed to the
    handler as ``Request.param``."""

    method: str
    path: str
    handler: Handler
    summary: str

    @property
    def takes_param(self) -> bool:
        """True for a prefix route such as get_results."""
        return self.path.endswith(JOB_ID_PARAM)

    def matches(self, path: str) -> Optional[str]:
        """The path parameter ("" for exact routes) if ``path`` is this route's."""
        if self.takes_param:
            prefix = self.path[:-len(JOB_ID_PARAM)]
            return path[len(prefix):] if path.startswith(prefix) else None
        return "" if path == self.path else None


_STATISTIC_SUMMARIES = {
    "states_mean": "mean of every state, ascending (body: question)",
    "state_mean": "mean of one state (body: question, state)",
    "best5": "the 5 best states, best first (body: question)",
    "worst5": "the 5 worst states, worst first (body: question)",
    "global_mean": "mean over all rows of the question (body: question)",
    "diff_from_mean": "global mean minus each state's mean (body: question)",
    "state_diff_from_mean": "global mean minus one state's mean (body: question, state)",
    "mean_by_category": "mean per (state, category, stratification) (body: question)",
    "state_mean_by_category": "one state's mean per (category, stratification)"
                              " (body: question, state)",
}

ROUTES: Tuple[Route, ...] = tuple(
    Route("POST", f"/api/{name}", post_statistic(name), _STATISTIC_SUMMARIES[name])
    for name in STATISTICS
) + (
    Route("GET", "/api/get_results/" + JOB_ID_PARAM, get_results,
          "a job's status, and its result when done"),
    Route("GET", "/api/jobs", get_jobs, "every job and its status, in id order"),
    Route("GET", "/api/num_jobs", get_num_jobs, "jobs accepted and not yet finished"),
    Route("GET", "/api/graceful_shutdown", graceful_shutdown,
          "accept no more jobs; finish the accepted ones"),
    Route("GET", "/", index_page, "this page"),
)


def find_route(method: str, path: str) -> Tuple[Route, str]:
    """The route for ``method`` and ``path`` and its parameter; raise ApiError
    404 for an unknown path and 405 (with Allow) for a wrong method."""
    allowed = []
    for route in ROUTES:
        param = route.matches(path)
        if param is None:
            continue
        if route.method == method:
            return route, param
        allowed.append(route.method)
    if not allowed:
        raise ApiError(404, "Not found")
    raise ApiError(405, "Method not allowed", headers=[("Allow", ", ".join(allowed))])


def _clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, for the log."""
    return text if len(text) <= limit else text[:limit] + "..."


class DeadlineReader(io.RawIOBase):
    """Reads from a socket until ``deadline`` (a ``time.monotonic()`` value).

    A per-read socket timeout is not enough: a client sending one byte a
    second never trips it.  Each read here waits at most for what is left of
    the deadline, so a whole request must arrive within the time allowed.
    """

    def __init__(self, sock: socket.socket):
        super().__init__()
        self._sock = sock
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("the request did not arrive in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class RequestHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests (HTTP/1.1, keep-alive) from ROUTES.

    Responses are buffered and sent with one write, and Nagle is off, so a
    keep-alive client never waits on a delayed ACK.
    """

    protocol_version = "HTTP/1.1"
    # What a request line without a version is taken for; not "HTTP/0.9",
    # whose answers have no status line, so even garbage gets a proper reply.
    default_request_version = "HTTP/1.0"
    server_version = "lestats"
    wbufsize = -1                     # buffered: headers and body leave in one send
    disable_nagle_algorithm = True
    server: "StatsServer"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """One request, which must arrive whole within the client timeout
        (also while a kept-alive connection waits for its next request)."""
        self._reader.deadline = time.monotonic() + self.server.client_timeout
        try:
            super().handle_one_request()
        except OSError as exc:   # timed out, reset, or gone: nothing more to say
            log.info("connection from %s closed: %s", self.client_address[0], exc)
            self.close_connection = True

    def do_GET(self) -> None:   # pylint: disable=invalid-name
        """Every method goes through the route table."""
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        body = b""
        try:
            try:
                route, param = find_route(self.command, path)
                body = self._read_body()
            except ApiError:
                if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
                    self.close_connection = True   # its body is left unread
                raise
            finally:
                log.info("%s %s begin%s", self.command, _clip(self.path),
                         f" body={_clip(repr(body))}" if body else "")
            reply = route.handler(self.server.jobs, Request(param=param, body=body))
        except ApiError as exc:
            log.info("%s %s end %d: %s", self.command, _clip(path), exc.status, exc.reason)
            if exc.close:
                self.close_connection = True
            self._send_error_json(exc.status, exc.reason, exc.headers)
        except OSError as exc:   # the client went away or timed out mid-body
            log.info("%s %s dropped: %s", self.command, _clip(path), exc)
            self.close_connection = True
        except Exception:   # pylint: disable=broad-except
            log.exception("%s %s failed", self.command, _clip(path))
            self._send_error_json(500, "Internal server error")
        else:
            log.info("%s %s end %d %s", self.command, path, reply.status, reply.job_id)
            payload = reply.payload
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode("utf-8")
            self._send(reply.status, payload, reply.content_type)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "Length required: chunked bodies are not accepted",
                           close=True)
        lengths = set(self.headers.get_all("Content-Length") or ())
        if not lengths:
            if self.command == "POST":
                raise ApiError(411, "Length required", close=True)
            return b""
        if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(next(iter(lengths)).strip()):
            raise ApiError(400, "Content-Length must be one non-negative integer",
                           close=True)
        length = int(next(iter(lengths)))
        if length > MAX_BODY:
            raise ApiError(413, "Request body too large", close=True)
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError("the client closed the connection mid-body")
        return body

    def _send(self, status: int, body: bytes, content_type: str = JSON_TYPE,
              headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.connection.settimeout(self.server.client_timeout)   # a client that never reads
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error_json(self, status: int, reason: str, headers=()) -> None:
        body = json.dumps({"status": "error", "reason": reason}).encode("utf-8")
        self._send(status, body, JSON_TYPE, headers)

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Errors found by http.server itself (bad request line, headers too
        long or too many, unknown method) answer in JSON too, and close."""
        self.close_connection = True
        reason = message or self.responses.get(code, ("Error",))[0]
        log.info("%s end %d: %s", _clip(getattr(self, "requestline", "")), code, reason)
        self._send_error_json(code, reason)

    def log_message(self, format: str, *args: Any) -> None:   # pylint: disable=redefined-builtin
        log.debug("%s " + format, self.address_string(), *args)


_BUSY_BODY = b'{"status": "error", "reason": "Server busy: too many open connections"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


class StatsServer(HTTPServer):
    """The lestats HTTP server: a thread per connection, answering from
    ``ROUTES`` with ``jobs``.  A request (or the wait for the next one on a
    kept-alive connection) that takes longer than ``client_timeout`` seconds
    closes its connection.  At most ``max_connections`` are open at once; more
    are answered 503 and closed, so threads and memory stay bounded.

    ``serve_forever`` sleeps in ``select()`` until a client connects or
    ``shutdown`` writes to a wake-up socket: it never wakes up just to look
    at a flag, as socketserver's own loop does every half second.
    """

    request_queue_size = 1024

    def __init__(self, address: Tuple[str, int], jobs: JobManager,
                 client_timeout: float = DEFAULT_CLIENT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.jobs = jobs
        self.client_timeout = client_timeout
        # One slot per open connection (and so per connection thread).
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()   # not serving yet
        self._wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can
        # stall start-up for seconds; the address is all we need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def serve_forever(self, poll_interval: Optional[float] = None) -> None:
        """Accept connections until ``shutdown``; ``poll_interval`` is ignored."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stop_requested.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self:
                            self._handle_request_noblock()
        finally:
            self._stopped.set()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the connection, or answer 503 and close it when
        ``max_connections`` are open already."""
        if not self._slots.acquire(blocking=False):   # pylint: disable=consider-using-with
            log.warning("connection from %s refused: too many open connections",
                        client_address[0])
            request.setblocking(False)
            try:
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True,
                                  name=f"lestats-connection-{client_address[1]}")
        try:
            thread.start()
        except BaseException:
            self._slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """A connection's thread: serve its requests, then close it and free its slot."""
        try:
            self.finish_request(request, client_address)
        except Exception:   # pylint: disable=broad-except
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running in another thread) and wait for it."""
        self._stop_requested.set()
        self._wake_writer.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error on the connection from %s", client_address)
