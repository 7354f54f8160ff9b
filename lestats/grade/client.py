"""HTTP/1.1 requests to a server that may be slow, wrong or hostile.

Like the course's checker (``requests.get``/``post`` without a session),
every request opens a new connection.  Unlike it, every request is bounded:

* one deadline for the whole request (connecting, sending, the head and the
  body), not a timeout per ``recv``, so a server sending a byte every two
  seconds is cut at the deadline like one that sends nothing;
* at most ``MAX_HEAD`` bytes and ``MAX_HEADER_LINES`` lines of head, and at
  most ``max_answer`` bytes of body: a larger ``Content-Length`` is refused
  before a byte of the body is read, and a chunked or unframed body is cut
  at the cap, so memory stays within a few MiB whatever the server sends.

A request that gets no complete answer raises ``NoAnswer``, whose message is
one line and whose ``hang`` says whether the course's checker, whose
requests carry no timeout, would have waited there for ever.
"""

import socket
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

DEADLINE = 5.0                   # seconds for a whole request
MAX_ANSWER = 2 * 1024 * 1024     # bytes of body (the course's largest answer is 84 KB)
MAX_HEAD = 64 * 1024
MAX_HEADER_LINES = 100           # http.client's limit, which the course's requests has
PREVIEW = 100                    # bytes of an answer shown in a message
_RECV = 64 * 1024
_MAX_CHUNK_LINE = 1024


class NoAnswer(Exception):
    """No complete HTTP answer.  ``kind`` names the failure in a few words
    (to group failures by); ``hang`` is true when the course's checker
    would have waited for ever (the deadline cut the request)."""

    def __init__(self, kind: str, message: str, hang: bool = False):
        super().__init__(message)
        self.kind = kind
        self.hang = hang


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers (lower-case names) and the whole body."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def preview(self, limit: int = PREVIEW) -> str:
        """The status and the first ``limit`` bytes of the body, for a message."""
        return f"{self.status} {preview(self.body, limit)}"


def preview(body: bytes, limit: int = PREVIEW) -> str:
    """The first ``limit`` bytes of ``body`` as a Python literal, and its size
    when it is longer."""
    if len(body) <= limit:
        return repr(body)
    return f"{body[:limit]!r}... ({len(body):,} bytes)"


class Client:
    """Requests to one server (host, port), each on a new connection within
    ``deadline`` seconds, each answer at most ``max_answer`` bytes."""

    def __init__(self, host: str, port: int, deadline: float = DEADLINE,
                 max_answer: int = MAX_ANSWER):
        self.host = host
        self.port = port
        self.deadline = deadline
        self.max_answer = max_answer

    @property
    def url(self) -> str:
        """The server's URL, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                max_answer: Optional[int] = None) -> Answer:
        """Send one request; return its answer or raise NoAnswer."""
        end = time.monotonic() + self.deadline
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.deadline)
        except socket.timeout:
            raise NoAnswer("no connection", f"no connection within {self.deadline:g} s",
                           hang=True) from None
        except ConnectionRefusedError:
            raise NoAnswer("connection refused", "connection refused") from None
        except OSError as exc:
            raise NoAnswer("no connection", f"cannot connect: {exc.strerror or exc}") from None
        with sock:
            reader = _Reader(sock, end, self.deadline)
            try:
                reader.send(self._head(method, path, body) + (body or b""))
                return reader.answer(method, self.max_answer if max_answer is None
                                     else max_answer)
            except ConnectionResetError:
                raise NoAnswer("connection reset", "the connection was reset"
                               f"{reader.received_note()}") from None
            except OSError as exc:
                raise NoAnswer("connection error", f"{exc.strerror or exc}"
                               f"{reader.received_note()}") from None

    def _head(self, method: str, path: str, body: Optional[bytes]) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}",
                 "User-Agent: lestats-check", "Accept: */*", "Connection: close"]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """The receiving side of one connection, within one deadline."""

    def __init__(self, sock: socket.socket, end: float, deadline: float):
        self._sock = sock
        self._end = end
        self._deadline = deadline
        self._buffer = bytearray()
        self._received = 0

    def received_note(self) -> str:
        """", after N bytes" when some bytes came."""
        if not self._received:
            return ""
        return f" after {self._received:,} byte{'s' if self._received > 1 else ''}"

    def _remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise NoAnswer("no answer in time",
                           f"no complete answer within {self._deadline:g} s"
                           f"{self.received_note()}", hang=True)
        return left

    def send(self, data: bytes) -> None:
        """Send ``data`` whole before the deadline."""
        self._sock.settimeout(self._remaining())
        try:
            self._sock.sendall(data)
        except socket.timeout:
            self._remaining()
            raise NoAnswer("request not taken", "the server did not take the request within"
                           f" {self._deadline:g} s", hang=True) from None

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; False when the peer closed."""
        self._sock.settimeout(self._remaining())
        try:
            data = self._sock.recv(_RECV)
        except socket.timeout:
            self._remaining()   # raises: the deadline has passed
            raise NoAnswer("no answer in time", f"no complete answer within"
                           f" {self._deadline:g} s{self.received_note()}", hang=True) from None
        self._received += len(data)
        self._buffer += data
        return bool(data)

    def _closed(self, what: str) -> NoAnswer:
        return NoAnswer("connection closed", f"the connection was closed {what}"
                        f"{self.received_note()}")

    def _until(self, marker: bytes, limit: int, what: str) -> bytes:
        """The buffer up to ``marker`` (consumed with it), at most ``limit`` bytes."""
        start = 0
        while True:
            found = self._buffer.find(marker, start)
            if found >= 0:
                taken = bytes(self._buffer[:found])
                del self._buffer[:found + len(marker)]
                return taken
            if len(self._buffer) > limit:
                raise NoAnswer("not HTTP", f"{what} longer than {limit:,} bytes")
            start = max(0, len(self._buffer) - len(marker) + 1)
            if not self._fill():
                if not self._received:
                    raise NoAnswer("connection closed",
                                   "the connection was closed without an answer")
                raise self._closed(f"in the middle of the {what}")

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise self._closed("before the body was complete")
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def answer(self, method: str, cap: int) -> Answer:
        """Read one answer (skipping 1xx ones) within the limits."""
        while True:
            status, headers = self._head()
            if not 100 <= status < 200:
                break
        if method == "HEAD" or status in (204, 304):
            return Answer(status, headers, b"")
        return Answer(status, headers, self._body(headers, cap))

    def _head(self) -> Tuple[int, Dict[str, str]]:
        head = self._until(b"\r\n\r\n", MAX_HEAD, "answer head").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (
                parts[1].isdigit() and len(parts[1]) == 3):
            raise NoAnswer("not HTTP", f"not an HTTP answer: {preview(head.encode('latin-1'))}")
        if len(lines) - 1 > MAX_HEADER_LINES:
            raise NoAnswer("not HTTP", f"more than {MAX_HEADER_LINES} header lines")
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise NoAnswer("not HTTP", f"a header line without a colon: {line[:PREVIEW]!r}")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def _body(self, headers: Dict[str, str], cap: int) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked(cap)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise NoAnswer("not HTTP", f"Content-Length {length[:40]!r} is not a number")
            if int(length) > cap:
                raise NoAnswer("answer too large", f"Content-Length {int(length):,}: over the"
                               f" {cap:,} bytes this checker reads (not read)")
            return self._exactly(int(length))
        while self._fill():   # no framing: the body ends when the connection does
            if len(self._buffer) > cap:
                raise self._too_large(cap)
        return bytes(self._buffer)

    def _too_large(self, cap: int) -> NoAnswer:
        return NoAnswer("answer too large", f"an answer over the {cap:,} bytes this checker"
                        " reads (cut there)")

    def _chunked(self, cap: int) -> bytes:
        body = bytearray()
        while True:
            line = self._until(b"\r\n", _MAX_CHUNK_LINE, "chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise NoAnswer("not HTTP", f"a bad chunk size: {preview(line, 40)}") from None
            if size == 0:
                break
            if len(body) + size > cap:
                raise self._too_large(cap)
            body += self._exactly(size)
            if self._until(b"\r\n", 2, "chunk end"):
                raise NoAnswer("not HTTP", "a chunk longer than its size says")
        while self._until(b"\r\n", MAX_HEAD, "trailer"):   # trailers, up to the blank line
            pass
        return bytes(body)
