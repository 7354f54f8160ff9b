"""The routes of step mode (teaching; none of the course's routes change).

    GET  /api/step            what the step panel shows (Stepper.state)
    GET  /api/step/scenarios  the guided exercises (``scenarios``)
    POST /api/step/on         enter step mode
    POST /api/step/run        leave it: every thread goes on
    POST /api/step/go         {"thread": NAME}: let one stopped thread go
    POST /api/step/join       {"timeout": S}: call the pool's join(), as the
                              drain does, from this request's thread

Each handler has the signature of ``routes``' handlers.  ``watched`` wraps
a page's event stream so that step mode ends when the last page goes away.
"""

import json
import time
from typing import Any, Dict, Iterator, Optional

from ..http11 import ApiError, Reply, Request
from . import scenarios
from .step import Stepper

JOIN_TIMEOUT, JOIN_LIMIT = 30.0, 120.0   # seconds a teaching join() waits, by default and at most


def _stepper(jobs: Any) -> Stepper:
    stepper = jobs.stepper
    if stepper is None:
        raise ApiError(404, "Not found: this server has no step mode")
    return stepper


def _field(request: Request, name: str) -> Any:
    """A field of the request's JSON object body, or None (no body)."""
    if not request.body:
        return None
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError is a ValueError
        raise ApiError(400, "body is not a JSON object") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "body is not a JSON object")
    return body.get(name)


def _state(jobs: Any, stepper: Stepper) -> Dict[str, Any]:
    """Stepper.state, with the pool's snapshot as /api/pool answers it."""
    state = stepper.state()
    state["pool"] = jobs.pool_snapshot()
    return state


def get_step(jobs: Any, _request: Request) -> Reply:
    """``GET /api/step``."""
    return Reply(200, _state(jobs, _stepper(jobs)))


def get_scenarios(jobs: Any, _request: Request) -> Reply:
    """``GET /api/step/scenarios``."""
    _stepper(jobs)
    return Reply(200, {"scenarios": scenarios.as_json()})


def post_on(jobs: Any, _request: Request) -> Reply:
    """``POST /api/step/on``."""
    stepper = _stepper(jobs)
    if not stepper.start():
        raise ApiError(409, "the server is stopping: step mode is over")
    return Reply(200, _state(jobs, stepper))


def post_run(jobs: Any, _request: Request) -> Reply:
    """``POST /api/step/run``."""
    stepper = _stepper(jobs)
    stepper.run()
    return Reply(200, _state(jobs, stepper))


def post_go(jobs: Any, request: Request) -> Reply:
    """``POST /api/step/go``: answers once the thread is at its next point
    (or blocked, asleep, gone; at most a couple of seconds)."""
    stepper = _stepper(jobs)
    name = _field(request, "thread")
    if not isinstance(name, str):
        raise ApiError(400, 'the body must name the thread: {"thread": NAME}')
    if stepper.go(name) is None:
        raise ApiError(409, f"{name[:80]!r} is not stopped (step mode off, or it has moved on)")
    return Reply(200, _state(jobs, stepper))


def post_join(jobs: Any, request: Request) -> Reply:
    """``POST /api/step/join``: the pool's ``join(timeout)``, in this thread."""
    _stepper(jobs)
    timeout = _field(request, "timeout")
    if timeout is None:
        timeout = JOIN_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            0 < timeout <= JOIN_LIMIT):
        raise ApiError(400, f"timeout must be a number of seconds, above 0 and at most"
                            f" {JOIN_LIMIT:g}")
    began = time.monotonic()
    joined = jobs.drain(timeout)
    return Reply(200, {"joined": joined, "seconds": round(time.monotonic() - began, 3)})


class Watched:
    """A page's event stream that tells step mode when a page begins to
    read it and when it ends (a HEAD request, never read, is no page).
    Only the stream's own connection thread uses it, so ``_watching``
    needs no lock."""

    def __init__(self, stream: Any, stepper: Stepper):
        self._stream = stream
        self._stepper = stepper
        self._watching: Optional[bool] = None   # None: not read yet; False: closed

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._watching is None:
            self._watching = True
            self._stepper.watcher_came()
        return next(self._stream)

    def close(self) -> None:
        """Close the stream; the page has gone (or is going)."""
        try:
            self._stream.close()
        finally:
            if self._watching:
                self._stepper.watcher_left()
            self._watching = False


def watched(jobs: Any, stream: Any) -> Any:
    """``stream`` (a page's event stream), watched by step mode if any."""
    stepper: Optional[Stepper] = jobs.stepper
    return stream if stepper is None else Watched(stream, stepper)
