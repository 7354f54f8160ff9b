"""HTTP/1.1 as lestats speaks it: the vocabulary, the limits and the framing.

What a route handler gets and returns (``Request``, ``Reply``, ``ApiError``),
how a request is read from a connection (``RequestReader``: head lines
checked against HTTP/1.1's grammar as they arrive, then the body, each
request within its deadline), and how an answer's head is written.  No
state is shared here: a ``RequestReader`` belongs to one connection's thread.

The limits hold whatever a client does:

* a request head (request line and header lines) is at most ``MAX_HEAD``
  bytes and ``MAX_HEADER_LINES`` lines, and is never read further (431);
* a request must keep arriving, as Apache's mod_reqtimeout MinRate asks: it
  may take a grace period (``HEAD_GRACE``, or ``PRESSED_HEAD_GRACE`` while
  the connection table is three quarters full) plus 1 s per ``MIN_RATE``
  bytes received, and never more than the client timeout in all; the wait of
  an idle kept-alive connection for its next request is the same grace;
* a body is at most ``MAX_BODY`` bytes (413), and its length is given by one
  Content-Length (411 without; chunked bodies are not accepted);
* anything a front proxy could read otherwise (two Transfer-Encodings, both
  Transfer-Encoding and Content-Length, folded or malformed header lines,
  stray whitespace in the request line) is a 400.
"""

import email.utils
import http
import json
import re
import select
import socket
import time
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

JSON_TYPE = "application/json"
MAX_BODY = 64 * 1024
MAX_HEAD = 32 * 1024            # bytes of request line + header lines
MAX_HEADER_LINES = 100
MIN_RATE = 500                  # bytes/s a request must keep arriving at, past its grace
HEAD_GRACE = 10.0               # seconds for a request head (and a kept-alive wait)
PRESSED_HEAD_GRACE = 2.0        # the same while the connection table is 3/4 full
DEFAULT_CLIENT_TIMEOUT = 30.0
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
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, for the log."""
    return text if len(text) <= limit else text[:limit] + "..."


# -- what a route handler gets and returns ------------------------------------

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


class Request:   # pylint: disable=too-few-public-methods
    """What a route handler gets: the path parameter (the job id of
    get_results), the query string's parameters (the first value of each)
    and the raw body."""

    __slots__ = ("param", "body", "query")

    def __init__(self, param: str = "", body: bytes = b"",
                 query: Optional[Dict[str, str]] = None) -> None:
        self.param = param
        self.body = body
        self.query = {} if query is None else query


class Reply:   # pylint: disable=too-few-public-methods
    """What a route handler returns: a status, a payload (JSON-ready, or
    bytes sent as they are), extra headers and, for logging, the job id it
    concerns.

    A reply with ``chunks`` streams its body instead (``payload`` is then
    ignored): the server sends each piece as it comes, with chunked transfer
    coding, so a long answer is never built whole and a stream (Server-Sent
    Events) can go on for as long as the iterator does.  The server closes the
    iterator (``close()``, if it has one) when the client goes away.
    """

    __slots__ = ("status", "payload", "job_id", "content_type", "headers", "chunks")

    def __init__(self, status: int, payload: Any = None, *,   # pylint: disable=too-many-arguments
                 job_id: str = "", content_type: str = JSON_TYPE,
                 headers: Sequence[Tuple[str, str]] = (),
                 chunks: Optional[Iterable[bytes]] = None) -> None:
        self.status = status
        self.payload = payload
        self.job_id = job_id
        self.content_type = content_type
        self.headers = headers
        self.chunks = chunks


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
        raise _bad(f"request line is not METHOD TARGET HTTP-VERSION ({clip(repr(line), 80)})")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise _bad(f"method is not a token ({clip(repr(method), 40)})")
    number = _VERSION_RE.fullmatch(version)
    if number is None:
        raise _bad(f"request version {clip(repr(version), 40)}")
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
        raise _bad(f"header line without a colon ({clip(repr(line), 60)})")
    if name[-1:] in (b" ", b"\t"):
        raise _bad(f"whitespace before the colon of header {clip(repr(name), 60)}")
    if not _TOKEN_RE.fullmatch(name):
        raise _bad(f"invalid character in header name {clip(repr(name), 60)}")
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
        raise ApiError(501, f"Transfer-Encoding {clip(codings[0], 40)!r} is not supported",
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


class Deadline(Exception):
    """A read or write did not complete before its deadline."""


class ConnectionSocket:
    """One connection's socket, non-blocking, read and written within
    deadlines.  Used by the connection's thread only.

    A receive or a send is tried at once, and only when the kernel says it
    would block does the thread wait, in ``poll``, until the socket is ready
    or the deadline passes.  (A socket timeout would cost two more system
    calls per receive and per send: CPython sets the descriptor's mode at
    every ``settimeout`` and polls before every call.)  A receive that is
    expected to wait (``expect_wait``: the first of a request on a kept-alive
    connection) polls first, saving the receive that would fail.
    """

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def recv(self, limit: int, deadline: float, expect_wait: bool = False) -> bytes:
        """At most ``limit`` bytes (b"" at the end of the stream); Deadline
        if nothing came before ``deadline`` (a ``time.monotonic()`` value)."""
        if expect_wait:
            self._wait(select.POLLIN, deadline)
        while True:
            try:
                return self.sock.recv(limit)
            except BlockingIOError:
                self._wait(select.POLLIN, deadline)

    def send_all(self, data: bytes, deadline: float) -> None:
        """Send all of ``data``; Deadline if the client has not taken it by
        ``deadline``."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline)

    def _wait(self, event: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline()
        self._poll.modify(self.sock, event)
        if not self._poll.poll(remaining * 1000):
            raise Deadline()


class RequestReader:
    """Reads one connection's requests: head lines, never more than
    ``MAX_HEAD`` bytes of them, and bodies, each request within its deadline
    (the grace period plus 1 s per ``MIN_RATE`` bytes, at most the client
    timeout, from ``begin``).  Used by the connection's thread only.

    ``server`` gives the deadlines: its ``client_timeout`` and its
    ``request_grace()`` (seconds a head may take before ``MIN_RATE``
    extends it), asked at each receive."""

    def __init__(self, sock: ConnectionSocket, server: Any):
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
        try:
            data = self._sock.recv(min(limit, 65536), self._started + allowed,
                                   expect_wait=not self._buffer and not self._received)
        except Deadline:
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


class DateHeader:   # pylint: disable=too-few-public-methods
    """The value of a response's Date header, made once per second: one per
    connection, used by its thread only."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        """The current time as an HTTP date."""
        moment = time.time()
        if int(moment) != self._second:
            self._second = int(moment)
            self._text = email.utils.formatdate(moment, usegmt=True)
        return self._text


def response_head(status: int, fields: Sequence[Tuple[str, str]], date: str) -> bytes:
    """A response's status line and header lines (already checked), and the
    blank line; ``date`` is the Date header's value (see DateHeader)."""
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}", "Server: lestats",
             "Date: " + date]
    lines.extend(f"{name}: {value}" for name, value in fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_reply(error: ApiError) -> Reply:
    """API.md's JSON error answer for ``error``."""
    body = json.dumps({"status": "error", "reason": error.reason}).encode("utf-8")
    return Reply(error.status, body, headers=error.headers)


def chunk_frame(chunk: bytes) -> bytes:
    """``chunk`` framed for chunked transfer coding."""
    return b"%x\r\n%s\r\n" % (len(chunk), chunk)
