"""The HTTP server: a thread per connection, answering from ``routes.ROUTES``.

``RequestHandler`` serves one connection's requests: it reads each request
with ``http11.RequestReader``, looks it up in the route table, calls the
route's handler and writes the ``Reply`` (or the ``ApiError``) back, as JSON,
bytes, or a stream of chunks.  Protocol errors found before a route is known
are answered here, as JSON too.  ``StatsServer`` accepts the connections and
keeps them in a ``connections.ConnectionTable``.
"""

import errno
import json
import logging
import os
import selectors
import socket
import socketserver
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .connections import (DEFAULT_MAX_CONNECTIONS, RECEIVING, SERVING, WAITING, Connection,
                          ConnectionTable)
from .http11 import (CONTINUE, DEFAULT_CLIENT_TIMEOUT, HEAD_GRACE, MAX_HEADER_LINES,
                     METHODS, PRESSED_HEAD_GRACE, ApiError, ConnectionSocket, Cut, DateHeader,
                     Deadline, Reply, Request, RequestHead, RequestReader, body_length,
                     check_fields, check_framing, chunk_frame, clip, error_reply,
                     parse_field_line, parse_request_line, response_head)
from .jobs import JobManager
from .logs import skip_caller_lookup
from .routes import Route, find_route

log = skip_caller_lookup(logging.getLogger(__name__))

STREAM_SEND_BUFFER = 256 * 1024   # bytes the kernel may hold for a streamed answer
_OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class RequestHandler(socketserver.BaseRequestHandler):
    """Serves one connection's requests (HTTP/1.1, keep-alive) from ROUTES.

    Runs in the connection's own thread; tells the server's connection table
    its phase, so that it is evicted or closed only while waiting for bytes.
    """

    server: "StatsServer"

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = ConnectionSocket(self.request)
        self._date = DateHeader()
        self._reader = RequestReader(self._socket, self.server)
        self._request_line = ""

    def handle(self) -> None:
        """Serve requests until the client or the server closes the connection."""
        try:
            while self._serve_one():
                pass
        except Cut as exc:
            table = self.server.connections
            idle, reason = exc.idle, str(exc)
            if table.was_evicted(self.request):
                idle = False
                reason = ("the server is shutting down" if table.closing() else
                          "closed to make room for a new connection (the table is full)")
            log.log(logging.DEBUG if idle else logging.INFO,
                    "connection from %s closed: %s", self.client_address[0], reason)

    def _serve_one(self) -> bool:
        """Read one request and answer it; True to wait for the next one."""
        table = self.server.connections
        if not table.enter(self.request, WAITING):
            return False
        self._reader.begin()
        self._request_line = ""
        try:
            head = self._read_head()
        except ApiError as error:
            log.info("%s end %d: %s", clip(self._request_line) or "-", error.status,
                     error.reason)
            if table.enter(self.request, SERVING):
                reply = error_reply(error)
                self._send(response_head(reply.status, self._fields(reply, False),
                                         self._date.now())
                           + reply.payload, "the answer")
            return False
        if head is None:
            return False
        return self._serve_request(head)

    def _read_head(self) -> Optional[RequestHead]:
        """The next request's head, checked as each line arrives."""
        line = self._reader.read_line(first=True)
        while line == b"":   # empty lines before a request line are ignored (RFC 9112 2.2)
            line = self._reader.read_line(first=True)
        if line is None:
            return None
        self._request_line = line.decode("latin-1")
        method, target, version = parse_request_line(line)
        fields: Dict[str, List[str]] = {}
        for _ in range(MAX_HEADER_LINES + 1):
            line = self._reader.read_line(first=False)
            if not line:
                check_framing(fields)
                return RequestHead(method, target, version, fields)
            name, value = parse_field_line(line)
            fields.setdefault(name, []).append(value)
        raise ApiError(431, f"Request header fields too large: more than {MAX_HEADER_LINES}"
                            " header lines", close=True)

    def _serve_request(self, head: RequestHead) -> bool:
        """Route, read the body, call the handler and answer; True to keep alive."""
        table = self.server.connections
        path, query = head.path_and_query()
        body = b""
        try:
            route, param, length = self._route(head, path)
        except ApiError as refused:
            route, error = None, refused
        else:
            error = None
            if length:
                if not table.enter(self.request, RECEIVING):
                    return False
                if head.expects_continue:
                    self._send(CONTINUE, "100 Continue")
                body = self._reader.read_body(length)
        if not table.enter(self.request, SERVING):
            return False
        log.info("%s %s begin%s", head.method, clip(head.target),
                 f" body={clip(repr(body[:201]))}" if body else "")
        if route is None:
            reply = error_reply(error)
        else:
            reply, error = self._call(route, Request(param=param, body=body, query=query), head)
        if error is None:
            log.info("%s %s end %d %s", head.method, clip(path), reply.status, reply.job_id)
            keep = head.keep_alive
        else:
            log.info("%s %s end %d: %s", head.method, clip(path), error.status, error.reason)
            keep = head.keep_alive and not error.close and not (route is None and head.has_body)
        keep = keep and not table.closing()
        if reply.chunks is not None:
            return self._stream(head, reply, keep)
        data = response_head(reply.status, self._fields(reply, keep, head), self._date.now())
        if head.method != "HEAD":
            data += reply.payload
        self._send(data, "the answer")
        return keep

    @staticmethod
    def _route(head: RequestHead, path: str) -> Tuple[Route, str, int]:
        """The route, its parameter and the body's length; raise ApiError.
        HEAD is answered by the GET route, without the body."""
        if head.method not in METHODS:
            raise ApiError(501, f"Unsupported method ({clip(head.method, 40)!r})", close=True)
        route, param = find_route("GET" if head.method == "HEAD" else head.method, path)
        return route, param, body_length(head)

    def _call(self, route: Route, request: Request,
              head: RequestHead) -> Tuple[Reply, Optional[ApiError]]:
        """The route's reply, its payload JSON-encoded (NaN and infinities are
        not JSON: a failure); or, with the error, the JSON answer of an
        ApiError or of a failure (500)."""
        try:
            handler = route.head if head.method == "HEAD" and route.head else route.handler
            reply = handler(self.server.jobs, request)
            if reply.chunks is None and not isinstance(reply.payload, bytes):
                reply.payload = json.dumps(reply.payload, allow_nan=False).encode("utf-8")
            check_fields(reply.headers)
            return reply, None
        except ApiError as error:
            return error_reply(error), error
        except Exception:   # pylint: disable=broad-except
            log.exception("%s %s failed", head.method, clip(head.target))
            error = ApiError(500, "Internal server error")
            return error_reply(error), error

    @staticmethod
    def _fields(reply: Reply, keep: bool,
                head: Optional[RequestHead] = None) -> List[Tuple[str, str]]:
        """The header fields of a reply with a payload."""
        fields = [("Content-Type", reply.content_type),
                  ("Content-Length", str(len(reply.payload)))]
        fields.extend(reply.headers)
        if not keep:
            fields.append(("Connection", "close"))
        elif head is not None and head.version == "HTTP/1.0":
            fields.append(("Connection", "keep-alive"))
        return fields

    def _stream(self, head: RequestHead, reply: Reply, keep: bool) -> bool:
        """Send a reply's chunks as they come (chunked to HTTP/1.1 clients,
        close-delimited to HTTP/1.0 ones); close the iterator in every case."""
        chunks = reply.chunks
        chunked = head.version == "HTTP/1.1"
        keep = keep and chunked
        fields = [("Content-Type", reply.content_type), *reply.headers]
        fields.append(("Transfer-Encoding", "chunked") if chunked else ("Connection", "close"))
        if chunked and not keep:
            fields.append(("Connection", "close"))
        try:
            # A small send buffer, so that a client that stops reading a long
            # or endless answer blocks the writes, and is cut, within seconds.
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
            self._send(response_head(reply.status, fields, self._date.now()), "the answer's head")
            if head.method == "HEAD":
                return keep
            for chunk in chunks:   # type: ignore[union-attr]
                if chunk:
                    self._send(chunk_frame(chunk) if chunked else chunk, "a chunk of the answer")
            if chunked:
                self._send(b"0\r\n\r\n", "the end of the answer")
            return keep
        except Cut:
            raise
        except Exception:   # pylint: disable=broad-except
            log.exception("%s %s: the stream failed", head.method, clip(head.target))
            return False
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # pylint: disable=broad-except
                    log.exception("%s %s: closing the stream failed", head.method,
                                  clip(head.target))

    def _send(self, data: bytes, what: str) -> None:
        """Send ``data`` whole within the client timeout; raise Cut if the
        client does not take it in time or is gone."""
        timeout = self.server.client_timeout
        try:
            self._socket.send_all(data, time.monotonic() + timeout)
        except Deadline:
            raise Cut(f"{what} was not taken within {timeout:g} s") from None
        except OSError as exc:
            raise Cut(f"{what} could not be sent: {exc}") from None


# -- the server -------------------------------------------------------------

_BUSY_BODY = b'{"status": "error", "reason": "Server busy: too many open connections"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


def _open_spare_fd() -> Optional[int]:
    """A descriptor held in reserve, given up to answer 503 when out of descriptors."""
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


class StatsServer(ThreadingHTTPServer):
    """The lestats HTTP server: a daemon thread per connection, answering
    from ``ROUTES`` with ``jobs``, within the limits of ``http11``.

    What ``ThreadingHTTPServer`` (and the socketserver classes under it)
    contributes, used as it is: the listening socket and its options
    (``allow_reuse_address``, ``request_queue_size``), ``server_activate``
    (listen), ``get_request`` (accept), ``fileno`` (for the selector),
    ``process_request_thread`` (the body of a connection's thread: the
    handler, then ``shutdown_request``, with ``handle_error`` on a failure)
    and ``finish_request`` (makes the ``RequestHandler``).

    What lestats replaces, and why:

    * ``serve_forever``: sleeps in ``select()`` until a client connects or a
      wake-up socket is written to (by ``shutdown``, or by a connection that
      frees a descriptor while accepting is paused); socketserver's loop wakes
      every half second to look at a flag.  Out of descriptors (EMFILE) it
      answers a waiting client 503 with a descriptor kept in reserve, or else
      stops watching the listener until a connection closes, or for
      ``out_of_files_retry`` seconds at most (the shortage may not be ours:
      ENFILE, ENOMEM, or no connection left to close); socketserver's loop
      would spin on the failing accept.
    * ``process_request`` and ``shutdown_request``: a connection enters the
      ``ConnectionTable`` (capped, with eviction) before its thread starts,
      and leaves it when it closes; ThreadingMixIn keeps an unbounded list.
    * ``shutdown`` and ``close_connections``: stop on a wake-up socket, then
      answer the requests in flight and close the idle connections.
    * ``server_bind``: the address only; HTTPServer's asks DNS for the host's
      full name, which can stall start-up for seconds.
    * The handler is a ``socketserver.BaseRequestHandler`` reading with
      ``http11``, not ``http.server.BaseHTTPRequestHandler``: the stdlib's
      reader has no whole-request deadline, no limit on a head's total size,
      and accepts framing a proxy could read otherwise.

    To stop: ``shutdown()`` (no more connections), ``close_connections()``
    (answer the requests in flight, close the rest), ``server_close()``.
    """

    request_queue_size = 1024
    head_grace = HEAD_GRACE
    pressed_head_grace = PRESSED_HEAD_GRACE
    out_of_files_retry = 1.0

    def __init__(self, address: Tuple[str, int], jobs: JobManager,
                 client_timeout: float = DEFAULT_CLIENT_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.jobs = jobs
        self.client_timeout = client_timeout
        self.connections = ConnectionTable(max_connections)
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()   # not serving yet
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._spare_fd = _open_spare_fd()
        try:
            super().__init__(address, RequestHandler)
        except BaseException:
            self._close_wake_and_spare()
            raise
        self.socket.setblocking(False)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can
        # stall start-up for seconds; the address is all we need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def request_grace(self) -> float:
        """Seconds a request head may take before MIN_RATE extends it."""
        return self.pressed_head_grace if self.connections.pressed() else self.head_grace

    def serve_forever(self, poll_interval: Optional[float] = None) -> None:
        """Accept connections until ``shutdown``; ``poll_interval`` is ignored."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_reader, selectors.EVENT_READ)
                listening = False
                while not self._stop_requested.is_set():
                    paused = self.connections.paused()
                    if listening == paused:
                        if listening:
                            selector.unregister(self)
                        else:
                            selector.register(self, selectors.EVENT_READ)
                        listening = not listening
                    if self._spare_fd is None and not paused:
                        self._spare_fd = _open_spare_fd()   # given up by an earlier refusal
                    events = selector.select(self.out_of_files_retry if paused else None)
                    if paused and not events:
                        self.connections.resume_accepting()
                    for key, _ in events:
                        if key.fileobj is self:
                            self._accept()
                        else:
                            self._drain_wake_ups()
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in _OUT_OF_FILES:
                self._out_of_files(exc)
            return
        self.process_request(request, client_address)

    def _out_of_files(self, exc: OSError) -> None:
        """Out of descriptors: answer a waiting client 503 with the spare
        one; without it, stop accepting until a connection closes."""
        if not self._refuse_with_spare_fd(exc):
            log.warning("out of file descriptors (%s): not accepting until a connection"
                        " closes", exc.strerror)
            self.connections.pause_accepting()

    def _refuse_with_spare_fd(self, exc: OSError) -> bool:
        """Free the spare descriptor, accept with it and answer 503, then
        take the spare back; False if there was none, or it did not help."""
        if self._spare_fd is None:
            return False
        os.close(self._spare_fd)
        try:
            request, client_address = self.get_request()
        except BlockingIOError:
            answered = True   # nobody is waiting any more
        except OSError:
            answered = False
        else:
            self._refuse(request, client_address, f"refused: {exc.strerror}")
            answered = True
        self._spare_fd = _open_spare_fd()
        return answered

    def _drain_wake_ups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except OSError:   # BlockingIOError: drained
            pass

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"w")
        except OSError:   # its buffer is full: a wake-up is pending anyway
            pass

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection to the table (evicting the one that has
        waited longest for request bytes if it is full) and start its thread;
        if every connection is serving, answer 503 and close it."""
        row, victim = self.connections.admit(request, client_address)
        if victim is not None:
            self._shut_down([victim])
        if row is None:
            self._refuse(request, client_address, "refused: too many open connections")
            return
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True,
                                  name=f"lestats-connection-{client_address[1]}")
        try:
            thread.start()
        except RuntimeError as exc:   # can't start a new thread
            self.shutdown_request(request)
            log.warning("connection from %s closed: %s", client_address[0], exc)

    def _refuse(self, request: Any, client_address: Any, why: str) -> None:
        log.warning("connection from %s %s", client_address[0], why)
        request.setblocking(False)
        try:
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        """Take the connection out of the table, then shut it down and close it."""
        was_paused = self.connections.leave(request)
        super().shutdown_request(request)
        if was_paused:   # the descriptor is free now, not before the close
            self._wake()

    def _shut_down(self, rows: Sequence[Connection]) -> None:
        """Shut the sockets of rows marked ``shutting`` down; their threads close them."""
        try:
            for row in rows:
                try:
                    row.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            self.connections.released(rows)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running in another thread) and wait for it."""
        self._stop_requested.set()
        self._wake()
        self._stopped.wait()

    def close_connections(self, timeout: Optional[float] = None) -> bool:
        """Close the connections, after ``shutdown``: at once those idle or
        still receiving a request head; the others once their request (body
        arriving, being handled, being answered) is answered.  Return True
        when all are closed, or after ``timeout`` seconds (default: the client
        timeout) shut down those still open and return False."""
        self._shut_down(self.connections.close_waiting())
        left = self.connections.wait_empty(self.client_timeout if timeout is None else timeout)
        self._shut_down(left)
        return not left

    def server_close(self) -> None:
        super().server_close()
        self._close_wake_and_spare()

    def _close_wake_and_spare(self) -> None:
        self._wake_reader.close()
        self._wake_writer.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error on the connection from %s", client_address)
