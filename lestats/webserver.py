"""The HTTP server: connections, request framing, limits and answers.

A request is read here (within the client timeout, within the size limits),
looked up in ``routes.ROUTES``, handed to its route's handler, and the
``Reply`` (or ``ApiError``) is written back as JSON.  Protocol errors found
before a route is known (bad request lines, headers, lengths) are answered
here, as JSON too.
"""

import io
import json
import logging
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Optional, Tuple

from .jobs import JobManager
from .routes import JSON_TYPE, ApiError, Request, find_route

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
DEFAULT_CLIENT_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


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
        path, _, query = self.path.split("#", 1)[0].partition("?")
        parameters = {}
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            parameters.setdefault(name, value)
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
            request = Request(param=param, body=body, query=parameters)
            reply = route.handler(self.server.jobs, request)
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
            if reply.chunks is not None:
                self._stream(reply)
                return
            payload = reply.payload
            if not isinstance(payload, bytes):
                payload = json.dumps(payload, allow_nan=False).encode("utf-8")
            self._send(reply.status, payload, reply.content_type, reply.headers)

    def _stream(self, reply) -> None:
        """Send ``reply.chunks`` with chunked transfer coding (a stopgap:
        the bounded version is being written)."""
        chunks = iter(reply.chunks)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

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

    def close_connections(self, timeout: float) -> None:
        """Let the requests in flight be answered, at most ``timeout`` seconds."""

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error on the connection from %s", client_address)
