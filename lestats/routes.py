"""The routes of API.md: what each path answers, and every error it can give.

``ROUTES`` is the one place that lists what the server answers.  A route's
handler gets the job manager and the request (its path parameter and body)
and returns a ``Reply``, or raises ``ApiError`` for a row of API.md's error
table.  How requests are read and answers written is ``http11``'s and
``webserver``'s job.
"""

import json
import logging
import re
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from .http11 import ApiError, Reply, Request
from .jobs import JobManager, NoIdsLeft, QueueFull, ShuttingDown
from .records import UnknownJob
from .statistics import STATISTICS, QueryError
from .storage import DiskFull
from .watch import live_page, stepweb
from .watch.events import SseStream

log = logging.getLogger(__name__)

# How long get_results waits for a running job before answering "running":
# long enough for a job that was just queued, short enough never to stall a client.
RESULT_WAIT = 0.1
JOB_ID_PARAM = "{job_id}"
MAX_NESTING = 32   # levels of arrays and objects a request body may have
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


Handler = Callable[[JobManager, Request], Reply]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return result


def nesting(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped);
    a text with few brackets is not read further."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return 0 if "[" not in text and "{" not in text else 1
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def json_object(body: bytes) -> Dict[str, Any]:
    """Decode a request body that must be one JSON object, nested at most
    MAX_NESTING deep (a statistic's body is flat; a deep one would reach
    Python's recursion limit, at a depth that depends on the thread's
    stack); raise ApiError 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "body is not valid UTF-8") from exc
    if nesting(text) > MAX_NESTING:
        raise ApiError(400, f"body is not valid JSON here: nested deeper than {MAX_NESTING}"
                            " levels")
    try:
        value = json.loads(text, parse_constant=_reject_constant,
                           object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, f"body must be a JSON object, not {type(value).__name__}")
    return value


def post_statistic(name: str) -> Handler:
    """The handler of ``POST /api/<name>`` for statistic ``name``."""
    def handle(jobs: JobManager, request: Request) -> Reply:
        body = json_object(request.body)
        try:
            job_id = jobs.submit(name, body)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from exc
        except ShuttingDown as exc:
            raise ApiError(503, "shutting down") from exc
        except QueueFull as exc:
            raise ApiError(503, str(exc), headers=[("Retry-After", "1")]) from exc
        except DiskFull as exc:
            raise ApiError(507, f"not enough free disk space to record the job: "
                                f"{exc.strerror}") from exc
        except NoIdsLeft as exc:
            raise ApiError(507, str(exc)) from exc
        except OSError as exc:   # the journal could not be written: no id is given out
            log.error("cannot record a %s job: %s", name, exc)
            raise ApiError(500, f"cannot record the job: {exc.strerror or exc}") from exc
        return Reply(200, {"job_id": job_id}, job_id=job_id)
    return handle


def get_results(jobs: JobManager, request: Request) -> Reply:
    """``GET /api/get_results/<job_id>``."""
    try:
        result = jobs.result(request.param, wait=RESULT_WAIT)
    except UnknownJob as exc:
        raise ApiError(404, "Invalid job_id") from exc
    if result.status == "done":
        body = b'{"status": "done", "data": ' + result.data_json + b"}"
        return Reply(200, body, job_id=request.param)
    if result.status == "error":
        raise ApiError(500, result.reason or "job failed")
    if result.status == "expired":
        raise ApiError(410, result.reason or "result deleted")
    return Reply(200, {"status": result.status}, job_id=request.param)


def _count_parameter(request: Request, name: str) -> Optional[int]:
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, f"{name} must be a whole number, not {text[:40]!r}")
    return int(text)


def get_jobs(jobs: JobManager, request: Request) -> Reply:
    """``GET /api/jobs[?since=N&limit=M]``, streamed in pieces."""
    since = _count_parameter(request, "since") or 0
    limit = _count_parameter(request, "limit")
    return Reply(200, chunks=jobs.job_list(since, limit))


def get_job_record(jobs: JobManager, request: Request) -> Reply:
    """``GET /api/jobs/<job_id>``."""
    try:
        return Reply(200, jobs.record(request.param), job_id=request.param)
    except UnknownJob as exc:
        raise ApiError(404, "Invalid job_id") from exc


def get_num_jobs(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/num_jobs``."""
    return Reply(200, {"num_jobs": jobs.num_jobs()})


def graceful_shutdown(jobs: JobManager, request: Request) -> Reply:
    """``GET /api/graceful_shutdown``: starts the drain the first time;
    every call says whether jobs remain."""
    jobs.shutdown()
    return graceful_shutdown_head(jobs, request)


def graceful_shutdown_head(jobs: JobManager, _request: Request) -> Reply:
    """``HEAD /api/graceful_shutdown``: what GET answers, without starting the drain."""
    return Reply(200, {"status": "running" if jobs.num_jobs() else "done"})


def get_questions(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/questions``."""
    return Reply(200, {"questions": jobs.questions()})


def get_pool(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/pool``."""
    return Reply(200, jobs.pool_snapshot())


def get_events(jobs: JobManager, _request: Request) -> Reply:
    """``GET /api/events``: Server-Sent Events until the server stops."""
    if jobs.events is None:
        raise ApiError(404, "Not found: this server publishes no events")
    return Reply(200, content_type="text/event-stream",
                 headers=[("Cache-Control", "no-store")],
                 chunks=stepweb.watched(jobs, SseStream(jobs.events.subscribe())))


def get_events_head(jobs: JobManager, _request: Request) -> Reply:
    """``HEAD /api/events``: the stream's head, without subscribing (a HEAD
    changes nothing, and a subscription takes one of the streams' places)."""
    if jobs.events is None:
        raise ApiError(404, "Not found: this server publishes no events")
    return Reply(200, content_type="text/event-stream",
                 headers=[("Cache-Control", "no-store")], chunks=iter(()))


def live_page_handler(page: bytes) -> Handler:
    """``GET /``: the live page of the pool at work."""
    def handle(_jobs: JobManager, _request: Request) -> Reply:
        return Reply(200, page, content_type="text/html; charset=utf-8",
                     headers=[("Cache-Control", "no-store")])
    return handle


class Route(NamedTuple):
    """One line of the route table.  A ``path`` ending in ``{job_id}`` matches
    any path that starts with what comes before it; the rest is passed to the
    handler as ``Request.param``.  HEAD is answered by a GET route: by
    ``head`` if it has one (for a handler that changes something, which a
    HEAD must not), else by ``handler``, without the body."""

    method: str
    path: str
    handler: Handler
    head: Optional[Handler] = None

    @property
    def takes_param(self) -> bool:
        """True for a prefix route such as get_results."""
        return self.path.endswith(JOB_ID_PARAM)

    def matches(self, path: str) -> Optional[str]:
        """The path parameter ("" for exact routes) if ``path`` is this route's."""
        if self.takes_param:
            prefix = self.path[:-len(JOB_ID_PARAM)]
            return path[len(prefix):] if path.startswith(prefix) else None
        return "" if path == self.path else None


ROUTES: Tuple[Route, ...] = tuple(
    Route("POST", f"/api/{name}", post_statistic(name)) for name in STATISTICS
) + (
    Route("GET", "/api/get_results/" + JOB_ID_PARAM, get_results),
    Route("GET", "/api/jobs", get_jobs),
    Route("GET", "/api/jobs/" + JOB_ID_PARAM, get_job_record),
    Route("GET", "/api/num_jobs", get_num_jobs),
    Route("GET", "/api/graceful_shutdown", graceful_shutdown, head=graceful_shutdown_head),
    Route("GET", "/api/questions", get_questions),
    Route("GET", "/api/pool", get_pool),
    Route("GET", "/api/events", get_events, head=get_events_head),
    # Teaching: step mode (lestats/watch/stepweb.py).
    Route("GET", "/api/step", stepweb.get_step),
    Route("GET", "/api/step/scenarios", stepweb.get_scenarios),
    Route("POST", "/api/step/on", stepweb.post_on),
    Route("POST", "/api/step/run", stepweb.post_run),
    Route("POST", "/api/step/go", stepweb.post_go),
    Route("POST", "/api/step/join", stepweb.post_join),
    Route("GET", "/", live_page_handler(live_page())),
)


def _exact_routes(routes: Tuple[Route, ...]) -> Mapping[str, Tuple[Route, ...]]:
    """{path: its routes, in table order} of the routes without a parameter."""
    exact: Dict[str, Tuple[Route, ...]] = {}
    for route in routes:
        if not route.takes_param:
            exact[route.path] = exact.get(route.path, ()) + (route,)
    return MappingProxyType(exact)


# A request's path is looked up instead of tried against every line.  No
# exact path starts with a prefix route's prefix (a test checks), so a path
# is one kind or the other.
EXACT_ROUTES = _exact_routes(ROUTES)
PREFIX_ROUTES = tuple(route for route in ROUTES if route.takes_param)


def find_route(method: str, path: str) -> Tuple[Route, str]:
    """The route for ``method`` and ``path`` and its parameter; raise ApiError
    404 for an unknown path and 405 (with Allow) for a wrong method."""
    allowed = []
    for route in EXACT_ROUTES.get(path, PREFIX_ROUTES):
        param = route.matches(path)
        if param is None:
            continue
        if route.method == method:
            return route, param
        allowed.append(route.method)
    if not allowed:
        raise ApiError(404, "Not found")
    raise ApiError(405, "Method not allowed", headers=[("Allow", ", ".join(allowed))])
