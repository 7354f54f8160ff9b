"""The connection table: the open connections, their cap, eviction and shutdown.

The server keeps every open connection here, so that it can hold their
number under a cap (``max_connections``, fitted to the open-file limit by
``fit_connection_cap``), make room for a newcomer by closing the connection
that has waited longest for request bytes, and close them all when it stops.
``ConnectionTable`` is one of the project's Condition patterns: see its
docstring.
"""

import collections
import logging
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    import resource
except ImportError:   # not on Unix: the open-file limit is left alone
    resource = None   # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1000
FD_RESERVE = 64                 # descriptors kept for logs, results, the journal...

# Phases of a connection in the table.
WAITING = "waiting"       # for a request head: idle kept-alive, or the head arriving
RECEIVING = "receiving"   # the head is read, the body is arriving
SERVING = "serving"       # the request is being handled or answered


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


class Connection:   # pylint: disable=too-few-public-methods
    """A row of the connection table.  ``sock`` and ``address`` never change;
    the other fields are guarded by the table's mutex."""

    __slots__ = ("sock", "address", "phase", "since", "shutting")

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.phase = WAITING
        self.since = time.monotonic()   # when the wait for its current request began
        self.shutting = False           # someone else is shutting its socket down


class ConnectionTable:
    """The open connections, for the cap, eviction and shutdown.

    A connection is *waiting* (for the head of its next request), *receiving*
    (its body) or *serving* (being handled or answered).  When the table is
    full, ``admit`` evicts the connection that has waited longest for request
    bytes (waiting or receiving); a serving connection is never evicted.

    The Condition pattern here is a hand-over between two threads: a
    connection closed by someone other than its own thread (evicted to make
    room, or closed at shutdown) is marked ``shutting``; that someone shuts
    its socket down after the call, outside the mutex, then calls
    ``released``; the owner's ``leave`` waits (``while row.shutting:
    unshut.wait()``) before the owner closes the socket, so a socket is never
    shut down after its descriptor was closed and reused by another file.

    ``mutex`` guards every attribute below and the ``phase``, ``since`` and
    ``shutting`` of every row.  Nothing is done under it but reading and
    updating them: sockets are shut down and closed outside it.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity   # never changes
        self.mutex = threading.Lock()
        # Notified (all) when a connection leaves the table: wait_empty waits
        # on it, and any number of leavers may be what it waits for.
        self.gone = threading.Condition(self.mutex)
        # Notified (all) when sockets that were being shut down are released
        # to their owners: each owner waits for its own row, and one call of
        # released may free several rows, so every waiter must look again.
        self.unshut = threading.Condition(self.mutex)
        self._open: Dict[socket.socket, Connection] = {}
        # The waiting and receiving rows, the longest wait first.
        self._waiting: "collections.OrderedDict[socket.socket, Connection]" = \
            collections.OrderedDict()
        # Rows closed by someone else whose thread has not left yet.
        self._evicted: Dict[socket.socket, Connection] = {}
        # Set once: no admissions, no further requests.
        self._closing = False
        # The accept loop waits for a connection to leave (and free a descriptor).
        self._paused = False

    def pressed(self) -> bool:
        """True while the table is at least three quarters full."""
        with self.mutex:
            return len(self._open) * 4 >= self.capacity * 3

    def closing(self) -> bool:
        """True once ``close_waiting`` was called: no more requests are read."""
        with self.mutex:
            return self._closing

    def paused(self) -> bool:
        """True while the accept loop waits for a connection to leave."""
        with self.mutex:
            return self._paused

    def admit(self, sock: socket.socket,
              address: Any) -> Tuple[Optional[Connection], Optional[Connection]]:
        """Add a new connection: (its row, or None when closing or when every
        open connection is serving; the row evicted to make room, or None).
        The caller shuts the victim's socket down, then calls ``released``."""
        with self.mutex:
            if self._closing:
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
            if row is None or (phase == WAITING and self._closing):
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
            row = self._open.get(sock) or self._evicted.get(sock)
            if row is None:
                return False
            while row.shutting:   # only an evicted row is shut down by someone else
                self.unshut.wait()
            # Only now does the connection leave: until its socket is released,
            # wait_empty must still count it in.
            self._open.pop(sock, None)
            self._evicted.pop(sock, None)
            self._waiting.pop(sock, None)
            self.gone.notify_all()
            was_paused, self._paused = self._paused, False
            return was_paused

    def close_waiting(self) -> List[Connection]:
        """Stop admitting, and evict every connection waiting for a request
        head; those receiving a body or serving are let finish.  The caller
        shuts the returned rows' sockets down, then calls ``released``."""
        with self.mutex:
            self._closing = True
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
            self._paused = True

    def resume_accepting(self) -> None:
        """The accept loop tries again (no connection left in time)."""
        with self.mutex:
            self._paused = False

    def _evict(self, row: Connection) -> Connection:
        # Called with the mutex held.
        del self._open[row.sock]
        self._waiting.pop(row.sock, None)
        self._evicted[row.sock] = row
        row.shutting = True
        return row
