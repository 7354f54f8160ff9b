"""Watching the pool: the event bus (bounded, never blocking the pool), the
Server-Sent Events stream, and the Chrome trace."""

import json
import threading

from lestats.jobs import JobManager
from lestats.pool import ThreadPool
from lestats.storage import JobStore
from lestats.watch import events as events_module
from lestats.watch.events import EventBus, SseStream
from lestats.watch.trace import TraceWriter

from conftest import OBESITY
from lestats.lab.forcing import TIMEOUT, CountingCondition, SpuriousCondition


def test_a_subscriber_gets_every_event_in_order_and_listening_follows_it():
    bus = EventBus()
    assert not bus.listening
    subscription = bus.subscribe()
    assert bus.listening
    for i in range(3):
        bus.publish("tick", {"i": i, "t": 1.0})
    assert [(kind, fields["i"]) for _, kind, fields in subscription.get(TIMEOUT)] == [
        ("tick", 0), ("tick", 1), ("tick", 2)]
    assert subscription.get(0.01) == []
    subscription.close()
    assert not bus.listening and subscription.get(0) is None


def test_a_subscriber_that_falls_behind_is_dropped_and_never_blocks_the_publisher():
    bus = EventBus()
    slow = bus.subscribe(limit=5)
    keeping_up = bus.subscribe(limit=50)
    for i in range(20):   # the publisher never waits, whatever the slow one does
        bus.publish("tick", {"i": i, "t": 1.0})
    events = slow.get(TIMEOUT)
    assert [kind for _, kind, _ in events] == ["tick"] * 5 + ["dropped"]
    assert slow.dropped and slow.get(0) is None
    assert len(keeping_up.get(TIMEOUT)) == 20
    assert bus.listening   # the other one is still there


def test_event_streams_are_capped_and_the_oldest_gives_way():
    """Issue 17: idle readers at the cap must not keep the live page out."""
    bus = EventBus()
    idle = [bus.subscribe(streams=3) for _ in range(3)]
    trace_like = bus.subscribe(lossy=True, streams=None)   # not a stream: not counted
    newest = bus.subscribe(streams=3)                      # on main: TooManyStreams
    events = idle[0].get(0)
    assert [kind for _, kind, _ in events] == ["evicted"] and idle[0].get(0) is None
    assert idle[1].get(0) == [] and not idle[1].closed     # the others stay
    bus.publish("tick", {})
    assert [len(sub.get(0)) for sub in (idle[1], idle[2], trace_like, newest)] == [1] * 4


def test_an_evicted_stream_ends_after_saying_so():
    bus = EventBus()
    old = SseStream(bus.subscribe(streams=1))
    assert next(old) == b"retry: 2000\n\n"
    bus.subscribe(streams=1)
    assert b"event: evicted" in next(old)
    assert next(old, None) is None


def test_a_lossy_subscriber_counts_what_it_missed():
    bus = EventBus()
    trace_like = bus.subscribe(limit=2, lossy=True)
    for i in range(5):
        bus.publish("tick", {"i": i})
    assert len(trace_like.get(TIMEOUT)) == 2 and trace_like.lost == 3
    assert not trace_like.dropped


def test_closing_the_bus_ends_every_stream():
    bus = EventBus()
    subscription = bus.subscribe()
    got = []
    reader = threading.Thread(target=lambda: got.append(subscription.get(TIMEOUT)))
    reader.start()
    bus.close()
    reader.join(TIMEOUT)
    assert got == [None]
    assert bus.subscribe().get(0) is None   # too late: closed at once


def test_a_reader_gathers_a_batch_before_it_returns():
    """After the first event, get(gather=...) waits for a batch (here 2,
    the buffer's limit) instead of returning one event at a time."""
    bus = EventBus()
    subscription = bus.subscribe(limit=2)
    subscription._ready = CountingCondition(bus._mutex)   # pylint: disable=protected-access
    bus.publish("first", {"t": 1.0})
    got = []
    reader = threading.Thread(target=lambda: got.append(subscription.get(TIMEOUT, gather=60)))
    reader.start()
    assert subscription._ready.wait_for_waiters(1)   # pylint: disable=protected-access
    bus.publish("second", {"t": 2.0})
    reader.join(TIMEOUT)
    assert not reader.is_alive(), "the batch was full but the reader was not woken"
    assert [kind for _, kind, _ in got[0]] == ["first", "second"]


def test_a_spurious_wake_up_while_gathering_gathers_on():
    bus = EventBus()
    subscription = bus.subscribe(limit=2)
    subscription._ready = SpuriousCondition(bus._mutex)   # pylint: disable=protected-access
    bus.publish("first", {"t": 1.0})
    got = []
    reader = threading.Thread(target=lambda: got.append(subscription.get(TIMEOUT, gather=60)))
    reader.start()
    assert subscription._ready.second_wait.wait(TIMEOUT), "the spurious wake-up ended the batch"   # pylint: disable=protected-access
    bus.publish("second", {"t": 2.0})
    reader.join(TIMEOUT)
    assert [kind for _, kind, _ in got[0]] == ["first", "second"]


def test_a_reader_without_gathering_returns_what_there_is():
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish("only", {"t": 1.0})
    assert [kind for _, kind, _ in subscription.get(TIMEOUT)] == ["only"]
    assert subscription.get(0) == []


def test_the_sse_text_of_an_event_is_made_once_for_every_stream():
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    bus.publish("shared", {"t": 1.0})
    one, other = first.get(0), second.get(0)
    assert one[0] is other[0]
    text = bus.sse_text(one)
    assert bus.sse_text(other) == text and one[0].sse is not None


def test_the_sse_stream_formats_events_sends_keep_alives_and_unsubscribes(monkeypatch):
    monkeypatch.setattr(events_module, "KEEP_ALIVE", 0.01)
    bus = EventBus()
    stream = SseStream(bus.subscribe())
    assert next(stream) == b"retry: 2000\n\n"
    assert next(stream) == b": keep-alive\n\n"
    bus.publish("job_accepted", {"job_id": "job_id_1", "question": "a\nb", "t": 2.5})
    assert next(stream) == (b'id: 1\nevent: job_accepted\n'
                            b'data: {"job_id":"job_id_1","question":"a\\nb","t":2.5}\n\n')
    stream.close()
    assert not bus.listening


def test_the_trace_is_chrome_trace_json_with_a_span_per_job(tiny_index, tmp_path):
    bus = EventBus()
    trace = TraceWriter(bus, str(tmp_path / "trace.json"))
    pool = ThreadPool(2, events=bus)
    manager = JobManager(tiny_index, pool, JobStore(tmp_path / "results"), events=bus)
    manager.start()
    for _ in range(6):
        manager.submit("global_mean", {"question": OBESITY})
    assert manager.drain(timeout=TIMEOUT)
    manager.shutdown()
    assert pool.join(timeout=TIMEOUT)
    manager.close()
    trace.close()
    records = json.loads((tmp_path / "trace.json").read_text())
    names = {r["tid"]: r["args"]["name"] for r in records if r["name"] == "thread_name"}
    spans = [(r["ph"], r["name"], names[r["tid"]]) for r in records if r["ph"] in "BE"]
    assert sorted(name for ph, name, _ in spans if ph == "B") == sorted(
        f"job_id_{n}" for n in range(1, 7))
    assert all(thread.startswith("lestats-worker") for _, _, thread in spans)
    for job in range(1, 7):
        begin, end = [r for r in records if r.get("name") == f"job_id_{job}"]
        assert (begin["ph"], end["ph"]) == ("B", "E") and begin["tid"] == end["tid"]
        assert begin["ts"] <= end["ts"]
        assert begin["args"] == {"statistic": "global_mean", "question": OBESITY, "state": None}
    instants = {r["name"] for r in records if r["ph"] == "i"}
    assert {"wait(task_ready)", "notify(task_ready)", "shutdown", "drain_done"} <= instants
    assert any(r["ph"] == "C" and r["name"] == "queue" for r in records)


def test_the_trace_stops_with_a_note_at_its_size_limit(tmp_path):
    bus = EventBus()
    trace = TraceWriter(bus, str(tmp_path / "trace.json"), limit=2000)
    for i in range(200):
        bus.publish("notify", {"condition": "task_ready", "all": False, "by": "x",
                               "t": float(i)})
    trace.close()
    text = (tmp_path / "trace.json").read_text()
    records = json.loads(text)
    assert len(text) < 2500
    assert records[-1]["name"] == "trace stopped: 2000 bytes written"
