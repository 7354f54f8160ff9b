"""The event bus: what the pool and the job layer do, told to whoever watches.

The pool publishes worker waits and wake-ups, notifications, shutdown and
the end of the drain; the job layer publishes jobs accepted, started and
finished.  ``GET /api/events`` streams them as Server-Sent Events
(``SseStream``), and ``--trace`` writes them to a file (``trace``).

``EventBus`` is one of the project's Condition patterns: one mutex for the
whole bus, and a Condition per subscriber on it (its reader waits for
events there), so that a publisher wakes only the readers it gave events to.
"""

import json
import logging
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional

log = logging.getLogger(__name__)

BUFFER = 1000        # events a subscriber may fall behind before it is dropped
MAX_STREAMS = 32     # event streams open at once; a new one makes the oldest give way
KEEP_ALIVE = 15.0    # seconds of silence after which a stream sends a comment line
GATHER = 0.05        # seconds a stream gathers events before sending them together
BATCH = 200          # events that end the gathering early
DROPPED = "dropped"  # the kind of a dropped subscriber's last event
EVICTED = "evicted"  # the kind of the last event of a stream that gave way to a newer one
LAST_KINDS = (DROPPED, EVICTED)


class Event:   # pylint: disable=too-few-public-methods
    """One event: its sequence number, kind and fields, which never change
    once published.  It unpacks as ``seq, kind, fields``.  ``sse``, its
    Server-Sent Events text, is made by the first stream that sends it and
    shared by the others; it is guarded by the bus's mutex (see
    ``EventBus.sse_text``)."""

    __slots__ = ("seq", "kind", "fields", "sse")

    def __init__(self, seq: int, kind: str, fields: Dict[str, Any]):
        self.seq, self.kind, self.fields = seq, kind, fields
        self.sse: Optional[bytes] = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.seq, self.kind, self.fields))


class EventBus:
    """Fans each published event out to every subscriber's bounded buffer.

    ``publish`` is called with the pool's mutex held (lock order: the job
    mutex, the pool mutex, then this bus's), so it never blocks and never
    calls out: it appends to each buffer and notifies.  A subscriber whose
    buffer is full is dropped on the spot (a "dropped" event is its last),
    so a slow reader can never slow the pool; a lossy one (the trace writer)
    counts what it missed instead.

    ``_mutex`` guards ``_subscribers``, ``_seq``, ``_closed``, every
    Subscription's buffer and flags, and every Event's ``sse``.  It is held
    for bookkeeping only: events are encoded outside it.  Each
    Subscription's ``_ready`` (on the mutex) is notified when an event is
    added to its buffer or it is closed.

    ``listening`` is True while anyone subscribes: publishers ask it first,
    so that while nobody watches, an event is not even built.  It is a
    ``threading.Event``, the standard library's thread-safe flag: set and
    cleared under ``_mutex`` with the subscriber list, and asked without
    it, so that a pool nobody watches takes no second lock per step.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._subscribers: List["Subscription"] = []
        self._seq = 0
        self._closed = False
        self._listening = threading.Event()

    @property
    def listening(self) -> bool:
        """True while anyone subscribes."""
        return self._listening.is_set()

    def _subscribers_changed(self) -> None:
        """Set ``listening`` from the subscriber list.  Hold ``_mutex``."""
        if self._subscribers:
            self._listening.set()
        else:
            self._listening.clear()

    def subscribe(self, limit: int = BUFFER, lossy: bool = False,
                  streams: Optional[int] = MAX_STREAMS) -> "Subscription":
        """A new subscription, receiving every event published from now on.
        At most ``streams`` of them are open at once (each holds a
        connection and its thread): a new one makes the oldest give way (an
        "evicted" event is its last), so that idle readers can never keep
        the live page out.  ``streams=None`` is a subscriber that is not a
        stream (the trace writer): never counted, never evicted."""
        subscription = Subscription(self, limit, lossy, counted=streams is not None)
        with self._mutex:
            counted = [old for old in self._subscribers if old.counted]
            if streams is not None and len(counted) >= streams:
                for oldest in counted[:len(counted) - streams + 1]:
                    self._subscribers.remove(oldest)
                    oldest.last_event(Event(self._seq, EVICTED, {
                        "reason": f"{streams} event streams are open: the oldest gives way",
                        "t": time.time()}))
            if self._closed:
                subscription.closed = True
            else:
                self._subscribers.append(subscription)
                self._subscribers_changed()
            return subscription

    def publish(self, kind: str, fields: Dict[str, Any]) -> None:
        """Give the event to every subscriber; never blocks."""
        with self._mutex:
            self._seq += 1
            event = Event(self._seq, kind, fields)
            overflowed = [subscription for subscription in self._subscribers
                          if not subscription.offer(event)]
            for subscription in overflowed:
                self._subscribers.remove(subscription)
                subscription.drop(self._seq, fields.get("t", time.time()))
            if overflowed:
                self._subscribers_changed()

    def close(self) -> None:
        """End every subscription (the server is stopping); later ones start closed."""
        with self._mutex:
            self._closed = True
            for subscription in self._subscribers:
                subscription.end()
            self._subscribers.clear()
            self._subscribers_changed()

    def sse_text(self, events: List[Event]) -> bytes:
        """The Server-Sent Events text of ``events``: each event's is made
        once, by the first stream that sends it, outside the mutex, and kept
        (under it) for the others."""
        with self._mutex:
            texts = [event.sse for event in events]
        missing = [i for i, text in enumerate(texts) if text is None]
        for i in missing:
            texts[i] = sse_bytes(events[i])
        if missing:
            with self._mutex:
                for i in missing:
                    if events[i].sse is None:
                        events[i].sse = texts[i]
        return b"".join(texts)   # type: ignore[arg-type]

    def _unsubscribe(self, subscription: "Subscription") -> None:
        with self._mutex:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
                self._subscribers_changed()
            subscription.end()


class Subscription:
    """One subscriber's buffer.  Everything here is guarded by the bus's
    mutex; ``offer``, ``drop`` and ``end`` are called with it held.

    A subscription has one reader (the stream or the trace writer that
    subscribed): ``_ready`` is notified with ``notify``, not ``notify_all``,
    because there is never more than one thread to wake."""

    def __init__(self, bus: EventBus, limit: int, lossy: bool, counted: bool = True):
        self.bus = bus
        self.counted = counted     # a stream (see EventBus.subscribe); never changes
        self._limit = limit
        self._lossy = lossy
        self._buffer: Deque[Event] = deque()
        self._ready = threading.Condition(bus._mutex)   # pylint: disable=protected-access
        self.closed = False
        self.dropped = False
        self.lost = 0

    def offer(self, event: Event) -> bool:
        """Buffer ``event``; False if the buffer is full and this
        subscriber is not lossy (the bus then drops it).  The reader is
        notified only when the buffer stops being empty and when it holds a
        batch, not once per event (see ``get``)."""
        if len(self._buffer) >= self._limit:
            if not self._lossy:
                return False
            self.lost += 1
            return True
        self._buffer.append(event)
        if len(self._buffer) in (1, min(BATCH, self._limit)):
            self._ready.notify()
        return True

    def drop(self, seq: int, moment: float) -> None:
        """This subscriber fell behind: its last event says so."""
        self.dropped = True
        self.last_event(Event(seq, DROPPED, {
            "reason": f"fell more than {self._limit} events behind", "t": moment}))

    def last_event(self, event: Event) -> None:
        """End with ``event`` (dropped or evicted), after what is buffered."""
        self._buffer.append(event)
        self.end()

    def end(self) -> None:
        """No more events will come."""
        self.closed = True
        self._ready.notify()

    def get(self, timeout: Optional[float] = None,
            gather: float = 0.0) -> Optional[List[Event]]:
        """The events buffered so far, waiting up to ``timeout`` seconds for
        one: [] if none came, None once closed and empty.  With ``gather``,
        after the first event it waits up to that long for a batch, so that
        a busy pool wakes a slow reader a few times a second, not once per
        event."""
        with self._ready:
            self._ready.wait_for(lambda: self._buffer or self.closed, timeout)
            if gather and self._buffer:
                batch = min(BATCH, self._limit)
                self._ready.wait_for(lambda: len(self._buffer) >= batch or self.closed, gather)
            if not self._buffer:
                return None if self.closed else []
            events = list(self._buffer)
            self._buffer.clear()
            return events

    def lost_count(self) -> int:
        """How many events a lossy subscriber has missed."""
        with self._ready:
            return self.lost

    def close(self) -> None:
        """Stop receiving events."""
        self.bus._unsubscribe(self)   # pylint: disable=protected-access


def sse_bytes(event: Event) -> bytes:
    """One event in the Server-Sent Events format (made anew: see
    ``EventBus.sse_text`` for the shared copy)."""
    data = json.dumps(event.fields, separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode("utf-8")


class SseStream:
    """The body of ``GET /api/events``: events as they come, a comment line
    after KEEP_ALIVE seconds of silence (so that a client that went away is
    noticed), until the subscription ends.  Events are sent in batches
    gathered for up to GATHER seconds: a page wants a few updates a second,
    and one wake-up per event would cost the server more than the events.

    Whoever takes a stream closes it (the server does, in every case):
    ``close()`` unsubscribes, whether the stream was read or not; a
    generator's ``finally`` would not run for one that never started, and
    the subscription would hold its slot for ever.
    """

    def __init__(self, subscription: Subscription):
        self._subscription = subscription
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Stop the stream and unsubscribe (idempotent)."""
        self._chunks.close()
        self._subscription.close()

    def _generate(self) -> Iterator[bytes]:
        """The chunks.  It ends when the subscription has ended (the bus
        closed, or this subscriber dropped or evicted: the bus has let it go
        then); a reader that stops early calls ``close``."""
        subscription = self._subscription
        bus = subscription.bus
        yield b"retry: 2000\n\n"
        while True:
            events = subscription.get(KEEP_ALIVE, gather=GATHER)
            if events is None:
                return
            if not events:
                yield b": keep-alive\n\n"
                continue
            yield bus.sse_text(events)
            if events[-1].kind in LAST_KINDS:   # dropped or evicted: it ends here
                log.warning("an event stream %s", "fell behind and was dropped"
                            if events[-1].kind == DROPPED else "gave way to a newer one")
                return
