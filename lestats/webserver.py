"""The HTTP server: connections, request framing, limits and answers.

A request is read here (its head checked line by line against HTTP/1.1's
grammar as it arrives, within the limits below), looked up in
``routes.ROUTES``, handed to its route's handler, and the ``Reply`` (or
``ApiError``) is written back: JSON, bytes, or a stream of chunks.  Protocol
errors found before a route is known are answered here, as JSON too.

The limits hold whatever a client does:

* a request head (request line and header lines) is at most ``MAX_HEAD``
  bytes and ``MAX_HEADER_LINES`` lines, and is never read further (431);
* a request must keep arriving, as Apache's mod_reqtimeout MinRate asks: it
  may take a grace period (``HEAD_GRACE``, or ``PRESSED_HEAD_GRACE`` while
  the connection table is three quarters full) plus 1 s per ``MIN_RATE``
  bytes received, and never more than ``client_timeout`` in all; the wait of
  an idle kept-alive connection for its next request is the same grace;
* an answer, and each chunk of a streamed one, must be taken by the client
  within ``client_timeout``, else the connection is closed;
* at most ``max_connections`` are open; when the table is full a newcomer
  takes the place of the connection that has waited longest for request
  bytes, and only when every connection is being served is it answered 503.
"""

import collections
import dataclasses
import email.utils
import errno
import http
import json
import logging
import os
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    import resource
except ImportError:   # not on Unix: the open-file limit is left alone
    resource = None   # type: ignore[assignment]

from .jobs import JobManager
from .routes import ApiError, Reply, Request, Route, find_route

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEAD = 32 * 1024            # bytes of request line + header lines
MAX_HEADER_LINES = 100
MIN_RATE = 500                  # bytes/s a request must keep arriving at, past its grace
HEAD_GRACE = 10.0               # seconds for a request head (and a kept-alive wait)
PRESSED_HEAD_GRACE = 2.0        # the same while the connection table is 3/4 full
DEFAULT_CLIENT_TIMEOUT = 30.0
STREAM_SEND_BUFFER = 256 * 1024   # bytes the kernel may hold for a streamed answer
DEFAULT_MAX_CONNECTIONS = 1000
FD_RESERVE = 64                 # descriptors kept for logs, results, the journal...
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*"
                       rb"((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*")
# What str.split() or bytes.split() would take for a space between the parts
# of a request line, besides the one space HTTP allows.
_STRAY_WHITESPACE = re.compile(rb"[\t\x0b\x0c\r\x1c-\x1f\x85\xa0]")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Phases of a connection in the table.
WAITING = "waiting"       # for a request head: idle kept-alive, or the head arriving
RECEIVING = "receiving"   # the head is read, the body is arriving
SERVING = "serving"       # the request is being handled or answered


def _clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, for the log."""
    return text if len(text) <= limit else text[:limit] + "..."


def fit_connection_cap(requested: int) -> Tuple[int, Optional[str]]:
    """The connection cap the open-file limit allows, and a one-line note
    when it is lower than ``requested`` (else None).

    Each connection holds a descriptor, and ``FD_RESERVE`` more are kept for
    logs, results and the journal.  The soft RLIMIT_NOFILE is raised toward
    the hard limit if that is what it takes; where that is not allowed (or
    there is no ``resource`` module) the cap is lowered instead.
    """
    if resource is None:
        return requested, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = requested + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return requested, None
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.info("open-file limit raised from %d to %d", soft, wanted)
            soft = wanted
        except (ValueError, OSError) as exc:
            log.info("open-file limit %d cannot be raised: %s", soft, exc)
    if soft >= needed:
        return requested, None
    cap = max(1, soft - FD_RESERVE)
    return cap, (f"--max-connections {requested} lowered to {cap}: the open-file limit is "
                 f"{soft} and {FD_RESERVE} descriptors are kept for files and logs")


# -- the connection table ---------------------------------------------------

@dataclasses.dataclass(eq=False)
class Connection:
    """A row of the connection table.  ``sock`` and ``address`` never change;
    the other fields are guarded by the table's mutex."""

    sock: socket.socket
    address: Any
    phase: str = WAITING
    # When the wait for its current request began.
    since: float = dataclasses.field(default_factory=time.monotonic)
    shutting: bool = False   # someone else is shutting its socket down


class ConnectionTable:
    """The open connections, for the cap, eviction and shutdown.

    A connection is *waiting* (for the head of its next request), *receiving*
    (its body) or *serving* (being handled or answered).  When the table is
    full, ``admit`` evicts the connection that has waited longest for request
    bytes (waiting or receiving); a serving connection is never evicted.

    A connection closed by someone other than its own thread (evicted, or
    closed at shutdown) is marked ``shutting``: that someone shuts its socket
    down after the call, outside the mutex, then calls ``released``; the
    owner's ``leave`` waits for that before the owner closes the socket, so a
    socket is never shut down after its descriptor was closed and reused.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        # Guards every field below and the phase, since and shutting
        # of every row; nothing is done under it but reading and updating them.
        self.mutex = threading.Lock()
        # Notified when a connection leaves the table.
        self.gone = threading.Condition(self.mutex)
        # Notified when sockets that were being shut down are released to their owners.
        self.unshut = threading.Condition(self.mutex)
        self._open: Dict[socket.socket, Connection] = {}
        # The waiting and receiving rows, the longest wait first.
        self._waiting: "collections.OrderedDict[socket.socket, Connection]" = \
            collections.OrderedDict()
        # Rows closed by someone else whose thread has not left yet.
        self._evicted: Dict[socket.socket, Connection] = {}
        # Set once: no admissions, no further requests.  Read without the
        # mutex when offering keep-alive: a stale False costs one close later.
        self.closing = False
        # The accept loop waits for a descriptor to be freed.  Read without the
        # mutex by the accept loop, which set it or was woken after it was cleared.
        self.paused = False

    def pressed(self) -> bool:
        """True while the table is at least three quarters full.  Read without
        the mutex: a dict's length is read atomically, and a stale answer only
        moves a deadline computed from it."""
        return len(self._open) * 4 >= self.capacity * 3

    def admit(self, sock: socket.socket,
              address: Any) -> Tuple[Optional[Connection], Optional[Connection]]:
        """Add a new connection: (its row, or None when closing or when every
        open connection is serving; the row evicted to make room, or None).
        The caller shuts the victim's socket down, then calls ``released``."""
        with self.mutex:
            if self.closing:
                return None, None
            victim = None
            if len(self._open) >= self.capacity:
                if not self._waiting:
                    return None, None
                victim = self._evict(next(iter(self._waiting.values())))
            row = Connection(sock, address)
            self._open[sock] = row
            self._waiting[sock] = row
            return row, victim

    def enter(self, sock: socket.socket, phase: str) -> bool:
        """Move a connection to ``phase``; False if it was evicted, or if it
        would wait for another request while the table is closing: its thread
        then closes it."""
        with self.mutex:
            row = self._open.get(sock)
            if row is None or (phase == WAITING and self.closing):
                return False
            if phase == WAITING:
                row.since = time.monotonic()
                self._waiting.pop(sock, None)
                self._waiting[sock] = row
            elif phase == SERVING:
                self._waiting.pop(sock, None)
            row.phase = phase
            return True

    def snapshot(self) -> List[Tuple[Any, str]]:
        """(address, phase) of every open connection: the waiting and
        receiving ones first, the longest wait first (the next to be evicted)."""
        with self.mutex:
            rows = list(self._waiting.values())
            rows.extend(row for row in self._open.values() if row.phase == SERVING)
            return [(row.address, row.phase) for row in rows]

    def was_evicted(self, sock: socket.socket) -> bool:
        """True if the server closed this connection (to make room, or at shutdown)."""
        with self.mutex:
            return sock in self._evicted

    def leave(self, sock: socket.socket) -> bool:
        """Remove a connection whose thread is about to close its socket,
        once nobody else is shutting it down.  True if the accept loop was
        paused for want of descriptors: the caller wakes it."""
        with self.mutex:
            row = self._open.pop(sock, None) or self._evicted.pop(sock, None)
            if row is None:
                return False
            self._waiting.pop(sock, None)
            while row.shutting:
                self.unshut.wait()
            self.gone.notify_all()
            was_paused, self.paused = self.paused, False
            return was_paused

    def close_waiting(self) -> List[Connection]:
        """Stop admitting, and evict every connection waiting for a request
        head; those receiving a body or serving are let finish.  The caller
        shuts the returned rows' sockets down, then calls ``released``."""
        with self.mutex:
            self.closing = True
            return [self._evict(row) for row in list(self._open.values())
                    if row.phase == WAITING]

    def wait_empty(self, timeout: float) -> List[Connection]:
        """Wait until every connection has left, at most ``timeout`` seconds;
        return the rows still open, marked for the caller to shut down (then
        to call ``released``)."""
        deadline = time.monotonic() + timeout
        with self.mutex:
            while self._open or self._evicted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.gone.wait(remaining)
            return [self._evict(row) for row in list(self._open.values())]

    def released(self, rows: Sequence[Connection]) -> None:
        """The sockets of ``rows`` are shut down: their owners may close them."""
        with self.mutex:
            for row in rows:
                row.shutting = False
            self.unshut.notify_all()

    def pause_accepting(self) -> None:
        """The accept loop stops accepting until a connection leaves."""
        with self.mutex:
            self.paused = True

    def resume_accepting(self) -> None:
        """The accept loop tries again (no connection left in time)."""
        with self.mutex:
            self.paused = False

    def _evict(self, row: Connection) -> Connection:
        # Called with the mutex held.
        del self._open[row.sock]
        self._waiting.pop(row.sock, None)
        self._evicted[row.sock] = row
        row.shutting = True
        return row


# -- reading requests -------------------------------------------------------

class Cut(Exception):
    """The connection is closed without (more of) an answer; the message says
    why.  ``idle`` cuts (a kept-alive connection that sent nothing) are normal."""

    def __init__(self, message: str, idle: bool = False):
        super().__init__(message)
        self.idle = idle


def _bad(reason: str) -> ApiError:
    return ApiError(400, "Bad request: " + reason, close=True)


def parse_request_line(line: bytes) -> Tuple[str, str, str]:
    """(method, target, version) of a request line without its CRLF; raise
    ApiError 400 (505 for a version other than HTTP/1.0 and 1.1)."""
    stray = _STRAY_WHITESPACE.search(line)
    if stray:
        raise _bad(f"request line has whitespace other than single spaces ({stray.group()!r})")
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        if b"  " in line or line.startswith(b" ") or line.endswith(b" "):
            raise _bad("request line parts must be separated by exactly one space")
        raise _bad(f"request line is not METHOD TARGET HTTP-VERSION ({_clip(repr(line), 80)})")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise _bad(f"method is not a token ({_clip(repr(method), 40)})")
    number = _VERSION_RE.fullmatch(version)
    if number is None:
        raise _bad(f"request version {_clip(repr(version), 40)}")
    if number.group(1, 2) not in ((b"1", b"0"), (b"1", b"1")):
        raise ApiError(505, f"Invalid HTTP version ({version[5:].decode('ascii')})", close=True)
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii")


def parse_field_line(line: bytes) -> Tuple[str, str]:
    """(lower-case name, value without surrounding whitespace) of a header
    line without its CRLF; raise ApiError 400 naming the fault."""
    match = _FIELD_RE.fullmatch(line)
    if match:
        return match.group(1).decode("ascii").lower(), match.group(2).decode("latin-1")
    if line[:1] in (b" ", b"\t"):
        raise _bad("folded header line (obs-fold)")
    name, colon, _ = line.partition(b":")
    if not colon:
        raise _bad(f"header line without a colon ({_clip(repr(line), 60)})")
    if name[-1:] in (b" ", b"\t"):
        raise _bad(f"whitespace before the colon of header {_clip(repr(name), 60)}")
    if not _TOKEN_RE.fullmatch(name):
        raise _bad(f"invalid character in header name {_clip(repr(name), 60)}")
    raise _bad(f"control character in the value of header {name.decode('ascii')}")


class RequestHead:
    """A request line and its header fields (names in lower case)."""

    __slots__ = ("method", "target", "version", "fields")

    def __init__(self, method: str, target: str, version: str, fields: Dict[str, List[str]]):
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields

    def values(self, name: str) -> List[str]:
        """Every value of the header ``name`` (lower case), in order."""
        return self.fields.get(name, [])

    def tokens(self, name: str) -> List[str]:
        """The comma-separated tokens of header ``name``, lower case."""
        return [token.strip().lower() for value in self.values(name)
                for token in value.split(",")]

    @property
    def keep_alive(self) -> bool:
        """What the client asked for: HTTP/1.1 keeps the connection unless
        told to close, HTTP/1.0 closes it unless asked to keep it."""
        if self.version == "HTTP/1.1":
            return "close" not in self.tokens("connection")
        return "keep-alive" in self.tokens("connection")

    @property
    def has_body(self) -> bool:
        """True if a body follows the head (one that may be left unread)."""
        return bool(self.values("transfer-encoding")) or any(
            value != "0" for value in self.values("content-length"))

    @property
    def expects_continue(self) -> bool:
        """True if the client waits for ``100 Continue`` before its body."""
        return self.version == "HTTP/1.1" and "100-continue" in self.tokens("expect")

    def path_and_query(self) -> Tuple[str, Dict[str, str]]:
        """The target's path (also of an absolute-form target) and its query
        parameters (the first value of each)."""
        target = self.target
        if target[:7].lower() == "http://" or target[:8].lower() == "https://":
            parts = urllib.parse.urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("#")[0].partition("?")
        params: Dict[str, str] = {}
        if query:
            for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
                params.setdefault(name, value)
        return path, params


def check_framing(fields: Dict[str, List[str]]) -> None:
    """Raise ApiError 400 for a body length a front proxy could read otherwise."""
    codings = fields.get("transfer-encoding", [])
    if len(codings) > 1:
        raise _bad("more than one Transfer-Encoding header")
    if codings and "content-length" in fields:
        raise _bad("both Transfer-Encoding and Content-Length")


def body_length(head: RequestHead) -> int:
    """The length of the request's body; raise ApiError 411/400/413/501."""
    codings = head.values("transfer-encoding")
    if codings:
        if "chunked" in codings[0].lower():
            raise ApiError(411, "Length required: chunked bodies are not accepted", close=True)
        raise ApiError(501, f"Transfer-Encoding {_clip(codings[0], 40)!r} is not supported",
                       close=True)
    lengths = head.values("content-length")
    if not lengths:
        if head.method == "POST":
            raise ApiError(411, "Length required", close=True)
        return 0
    if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0]):
        raise ApiError(400, "Content-Length must be one non-negative integer", close=True)
    length = int(lengths[0])
    if length > MAX_BODY:
        raise ApiError(413, "Request body too large", close=True)
    return length


class RequestReader:
    """Reads one connection's requests: head lines, never more than
    ``MAX_HEAD`` bytes of them, and bodies, each request within its deadline
    (the grace period plus 1 s per ``MIN_RATE`` bytes, at most the client
    timeout, from ``begin``).  Used by the connection's thread only."""

    def __init__(self, sock: socket.socket, server: "StatsServer"):
        self._sock = sock
        self._server = server
        self._buffer = bytearray()   # received, not yet consumed
        self._started = 0.0
        self._received = 0           # bytes of this request received
        self._head_bytes = 0         # bytes of this request's head consumed

    def begin(self) -> None:
        """Start the clock of a new request."""
        self._started = time.monotonic()
        self._received = 0
        self._head_bytes = 0

    def read_line(self, first: bool) -> Optional[bytes]:
        """The next head line without its CRLF, or None if the client closed
        the connection before sending a byte of this request.  Raise ApiError
        414 (``first`` line) or 431 past ``MAX_HEAD``, 400 for a line not
        ended by CRLF, Cut if the client is too slow or gone."""
        while True:
            room = MAX_HEAD - self._head_bytes
            end = self._buffer.find(b"\n", 0, room)
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                self._head_bytes += end + 1
                if not line.endswith(b"\r\n"):
                    raise _bad("a line ends with LF alone, not CRLF")
                return line[:-2]
            if len(self._buffer) >= room:
                if first:
                    raise ApiError(414, "Request-URI too long", close=True)
                raise ApiError(431, f"Request header fields too large: more than {MAX_HEAD}"
                                    " bytes", close=True)
            if not self._fill(room - len(self._buffer)):
                if first and not self._buffer and not self._head_bytes:
                    return None
                raise Cut("the client closed the connection mid-request")

    def read_body(self, length: int) -> bytes:
        """The next ``length`` bytes; raise Cut if they do not arrive in time."""
        while len(self._buffer) < length:
            if not self._fill(length - len(self._buffer)):
                raise Cut("the client closed the connection mid-body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _fill(self, limit: int) -> bool:
        """Receive at most ``limit`` bytes within the deadline; False at end of stream."""
        server = self._server
        allowed = min(server.client_timeout, server.request_grace()
                      + self._received / MIN_RATE)
        remaining = self._started + allowed - time.monotonic()
        try:
            if remaining <= 0:
                raise socket.timeout()
            self._sock.settimeout(remaining)
            data = self._sock.recv(min(limit, 65536))
        except socket.timeout:
            raise Cut(f"the request did not arrive in time ({self._received} bytes in "
                      f"{allowed:.1f} s)", idle=not self._received and not self._buffer) from None
        except OSError as exc:
            raise Cut(f"receive failed: {exc}") from None
        self._buffer += data
        self._received += len(data)
        return bool(data)


# -- answering --------------------------------------------------------------

def check_fields(fields: Sequence[Tuple[str, str]]) -> None:
    """Raise ValueError for a header a response could not carry as is."""
    for name, value in fields:
        if not _TOKEN_RE.fullmatch(name.encode("latin-1")) or "\r" in value or "\n" in value:
            raise ValueError(f"bad response header {name!r}: {value!r}")
        value.encode("latin-1")


def response_head(status: int, fields: Sequence[Tuple[str, str]]) -> bytes:
    """A response's status line and header lines (already checked), and the blank line."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", "Server: lestats",
             "Date: " + email.utils.formatdate(usegmt=True)]
    lines.extend(f"{name}: {value}" for name, value in fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_reply(error: ApiError) -> Reply:
    """API.md's JSON error answer for ``error``."""
    body = json.dumps({"status": "error", "reason": error.reason}).encode("utf-8")
    return Reply(error.status, body, headers=error.headers)


def _chunked(chunk: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(chunk), chunk)


class RequestHandler(socketserver.BaseRequestHandler):
    """Serves one connection's requests (HTTP/1.1, keep-alive) from ROUTES.

    Runs in the connection's own thread; tells the server's connection table
    its phase, so that it is evicted or closed only while waiting for bytes.
    """

    server: "StatsServer"

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = RequestReader(self.request, self.server)
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
                reason = ("the server is shutting down" if table.closing else
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
            log.info("%s end %d: %s", _clip(self._request_line) or "-", error.status,
                     error.reason)
            if table.enter(self.request, SERVING):
                reply = error_reply(error)
                self._send(response_head(reply.status, self._fields(reply, False))
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
                    self._send(_CONTINUE, "100 Continue")
                body = self._reader.read_body(length)
        if not table.enter(self.request, SERVING):
            return False
        log.info("%s %s begin%s", head.method, _clip(head.target),
                 f" body={_clip(repr(body[:201]))}" if body else "")
        if route is None:
            reply = error_reply(error)
        else:
            reply, error = self._call(route, Request(param=param, body=body, query=query), head)
        if error is None:
            log.info("%s %s end %d %s", head.method, _clip(path), reply.status, reply.job_id)
            keep = head.keep_alive
        else:
            log.info("%s %s end %d: %s", head.method, _clip(path), error.status, error.reason)
            keep = head.keep_alive and not error.close and not (route is None and head.has_body)
        keep = keep and not table.closing
        if reply.chunks is not None:
            return self._stream(head, reply, keep)
        data = response_head(reply.status, self._fields(reply, keep, head))
        if head.method != "HEAD":
            data += reply.payload
        self._send(data, "the answer")
        return keep

    @staticmethod
    def _route(head: RequestHead, path: str) -> Tuple[Route, str, int]:
        """The route, its parameter and the body's length; raise ApiError.
        HEAD is answered by the GET route, without the body."""
        if head.method not in METHODS:
            raise ApiError(501, f"Unsupported method ({_clip(head.method, 40)!r})", close=True)
        route, param = find_route("GET" if head.method == "HEAD" else head.method, path)
        return route, param, body_length(head)

    def _call(self, route: Route, request: Request,
              head: RequestHead) -> Tuple[Reply, Optional[ApiError]]:
        """The route's reply, its payload JSON-encoded (NaN and infinities are
        not JSON: a failure); or, with the error, the JSON answer of an
        ApiError or of a failure (500)."""
        try:
            reply = route.handler(self.server.jobs, request)
            if reply.chunks is None and not isinstance(reply.payload, bytes):
                payload = json.dumps(reply.payload, allow_nan=False).encode("utf-8")
                reply = dataclasses.replace(reply, payload=payload)
            check_fields(reply.headers)
            return reply, None
        except ApiError as error:
            return error_reply(error), error
        except Exception:   # pylint: disable=broad-except
            log.exception("%s %s failed", head.method, _clip(head.target))
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
            self._send(response_head(reply.status, fields), "the answer's head")
            if head.method == "HEAD":
                return keep
            for chunk in chunks:   # type: ignore[union-attr]
                if chunk:
                    self._send(_chunked(chunk) if chunked else chunk, "a chunk of the answer")
            if chunked:
                self._send(b"0\r\n\r\n", "the end of the answer")
            return keep
        except Cut:
            raise
        except Exception:   # pylint: disable=broad-except
            log.exception("%s %s: the stream failed", head.method, _clip(head.target))
            return False
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # pylint: disable=broad-except
                    log.exception("%s %s: closing the stream failed", head.method,
                                  _clip(head.target))

    def _send(self, data: bytes, what: str) -> None:
        """Send ``data`` whole within the client timeout; raise Cut if the
        client does not take it in time or is gone."""
        timeout = self.server.client_timeout
        try:
            self.request.settimeout(timeout)
            self.request.sendall(data)
        except socket.timeout:
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
    from ``ROUTES`` with ``jobs``, within the limits of the module docstring.

    Its connections are kept in ``connections`` (a ConnectionTable of
    ``max_connections`` rows): ThreadingMixIn's ``process_request`` is
    overridden to fill it (and start the connection's daemon thread), and
    ``shutdown_request`` to empty it.

    ``serve_forever`` sleeps in ``select()`` until a client connects or a
    wake-up socket is written to (by ``shutdown``, or by a connection that
    frees a descriptor while accepting is paused): it never wakes up just to
    look at a flag, as socketserver's own loop does every half second.
    Out of descriptors (EMFILE), it answers a waiting client 503 with a
    descriptor kept in reserve, or else stops watching the listener until a
    connection closes, or for ``out_of_files_retry`` seconds at most (the
    shortage may not be ours: ENFILE, ENOMEM, or no connection left to close).

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
                    paused = self.connections.paused
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
