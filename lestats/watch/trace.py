"""``--trace FILE``: the pool's events as Chrome Trace Event JSON.

The file opens in Perfetto (ui.perfetto.dev) or ``chrome://tracing`` with
nothing installed: a span per job on its worker's thread (its arguments:
the statistic, the question and the state), an instant for
every wait, wake-up and notify on the thread that did it, and a counter for
the queue's length.  It is a JSON array written as events come, so even a
server that was killed leaves a file the viewers open (they accept a
missing closing bracket).  It stops, with a last instant saying so, at
``limit`` bytes.
"""

import json
import logging
import os
import threading
from typing import Any, Dict, Optional, TextIO

from ..files import create_for_writing
from .events import Event, EventBus

log = logging.getLogger(__name__)

LIMIT = 100 * 1024 * 1024   # bytes of trace at most
TRACE_BUFFER = 100_000      # events the writer may fall behind (then it counts losses)
PID = 1


class TraceWriter:
    """Writes the events of ``bus`` to ``path`` from a thread of its own.
    OSError if ``path`` is not a file the server may create or empty (a
    symbolic link, a FIFO, a file with other hard links: ``files``).

    Only that thread touches the file and the thread ids, so nothing here
    needs a lock; the subscription it reads from is the bus's business.
    """

    def __init__(self, bus: EventBus, path: str, limit: int = LIMIT):
        self.path = path
        self._limit = limit
        self._out: TextIO = os.fdopen(create_for_writing(path), "w", encoding="utf-8")
        self._written = 0
        self._first: Optional[float] = None
        self._threads: Dict[str, int] = {}
        self._subscription = bus.subscribe(limit=TRACE_BUFFER, lossy=True, streams=None)
        self._thread = threading.Thread(target=self._write_events, name="lestats-trace",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is buffered, end the JSON array and close the file."""
        self._subscription.close()
        self._thread.join()

    def _write_events(self) -> None:
        stopped = False
        try:
            self._emit(None, {"name": "process_name", "ph": "M", "args": {"name": "lestats"}})
            while True:
                events = self._subscription.get()
                if events is None:
                    break
                for event in events:
                    if not stopped:
                        stopped = not self._record(event)
            lost = self._subscription.lost_count()
            if lost:
                self._instant(None, f"{lost} events lost: the trace fell"
                                    " behind", 0.0)
            self._out.write("\n]\n")
        except OSError as exc:
            log.error("trace %s: %s; tracing stopped", self.path, exc)
        finally:
            self._out.close()

    def _record(self, event: Event) -> bool:
        """Write one event; False once the size limit is reached."""
        _, kind, fields = event
        moment = fields.get("t", 0.0)
        if self._written > self._limit:
            self._instant(None, f"trace stopped: {self._limit} bytes written", moment)
            return False
        if kind == "job_started":
            self._emit(fields["worker"], {"name": fields["job_id"], "ph": "B",
                                          "ts": self._us(moment), "args": {
                                              name: fields.get(name) for name in (
                                                  "statistic", "question", "state")}})
            self._counter(fields.get("queued"), moment)
        elif kind == "job_finished":
            self._emit(fields["worker"], {"name": fields["job_id"], "ph": "E",
                                          "ts": self._us(moment),
                                          "args": {"status": fields.get("status")}})
        elif kind == "job_accepted":
            self._counter(fields.get("queued"), moment)
        else:
            thread = fields.get("worker") or fields.get("by") or fields.get("thread")
            self._instant(thread, _instant_name(kind, fields), moment)
        return True

    def _us(self, moment: float) -> float:
        if self._first is None:
            self._first = moment
        return round((moment - self._first) * 1e6, 1)

    def _counter(self, queued: Any, moment: float) -> None:
        if queued is not None:
            self._emit(None, {"name": "queue", "ph": "C", "ts": self._us(moment),
                              "args": {"queued": queued}})

    def _instant(self, thread: Optional[str], name: str, moment: float) -> None:
        self._emit(thread, {"name": name, "ph": "i", "s": "t" if thread else "g",
                            "ts": self._us(moment)})

    def _emit(self, thread: Optional[str], record: Dict[str, Any]) -> None:
        record["pid"] = PID
        if "tid" not in record:
            record["tid"] = self._tid(thread)
        text = ("[\n" if not self._written else ",\n") + json.dumps(record, allow_nan=False)
        self._out.write(text)
        self._written += len(text)

    def _tid(self, thread: Optional[str]) -> int:
        if thread is None:
            return 0
        tid = self._threads.get(thread)
        if tid is None:
            tid = self._threads[thread] = len(self._threads) + 1
            self._emit(None, {"name": "thread_name", "ph": "M", "tid": tid,
                              "args": {"name": thread}})
        return tid


def _instant_name(kind: str, fields: Dict[str, Any]) -> str:
    if kind == "notify":
        return f"notify{'_all' if fields.get('all') else ''}({fields.get('condition')})"
    if kind == "worker_wake" and fields.get("empty"):
        return "wake: nothing to do, wait again"
    if kind in ("worker_wait", "worker_wake"):
        return f"{kind[7:]}({fields.get('condition')})"
    if kind == "step":   # step mode: a thread stopped, slept, left...
        return " ".join(str(part) for part in ("step", fields.get("what"), fields.get("point"))
                        if part)
    return kind
