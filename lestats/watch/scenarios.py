"""The guided exercises of step mode: the bug lab's interleavings, played
by hand on the live page.

Each scenario belongs to a pool (``variant``: None for the correct pool,
else the name of the lab's broken pool or job layer, as given to
``--broken-pool-for-teaching``), states a goal, says why the bad outcome is
unreachable on the correct pool, and carries its solution: the steps that
reach the goal on its own pool.  The page plays a solution step by step
(``GET /api/step/scenarios`` gives it this module's data); the tests play
every one on its own pool and on the correct one (``reached`` is the goal
test both use, the page's being the same in JavaScript).

A step is a dict: ``do`` is "submit" (a POST), "shutdown" (GET
/api/graceful_shutdown), "join" (POST /api/step/join) or "go" (let a
stopped thread go: the first one, in the order they stopped, whose
``role``, ``point`` and, if given, ``lock`` match); ``say`` tells what
happens.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional

from .stepthread import ACQUIRE, DONE, JOBS, NOTIFY, NOTIFY_ALL, POOL, RUN, TAKE, WAIT, WAKE

EXIT_RULE = "a worker exits only when the pool is closed and the queue is empty"
NOTHING_AFTER = "nothing is accepted after shutdown"


def _go(role: str, point: str, say: str, lock: Optional[str] = None) -> Dict[str, str]:
    step = {"do": "go", "role": role, "point": point, "say": say}
    if lock is not None:
        step["lock"] = lock
    return step


def _submit(say: str) -> Dict[str, str]:
    return {"do": "submit", "say": say}


def _through_submit(which: str = "") -> List[Dict[str, str]]:
    """A POST's producer, from its stop at the job layer's Lock to the notify."""
    return [
        _go("producer", ACQUIRE, f"The producer{which} takes the job layer's Lock (its job id is"
            " read under it) and stops before the pool's Lock.", JOBS),
        _go("producer", ACQUIRE, f"The producer{which} takes the pool's Lock, appends the job"
            " to the queue and stops before notify().", POOL),
    ]


_NOTIFY_SAY = ("notify() wakes the worker that has waited longest on _task_ready. The producer"
               " lets go of both Locks; its POST is answered. The woken worker stops before"
               " it takes the Lock back.")

_WORKER_RUNS = [
    _go("worker", WAKE, "The woken worker takes the Lock back. Its loop finds the job"
        " queued: it stops before taking it."),
    _go("worker", TAKE, "It takes the job off the queue, lets go of the Lock and stops"
        " before running it."),
    _go("worker", RUN, "It runs the job, outside the Lock, and stops before taking the"
        " Lock again to count the job done."),
]

_STOLEN_WAKEUP = [
    _submit("Submit a job: the POST's thread (the producer) stops before the job layer's"
            " Lock."),
    *_through_submit(),
    _go("producer", NOTIFY, _NOTIFY_SAY),
    *_WORKER_RUNS,
    _submit("Submit a second job while that worker holds on to its finished job."),
    *_through_submit(" of the second job"),
    _go("producer", NOTIFY, "notify() wakes the other worker, asleep since the start. It"
        " stops before it takes the Lock back: the job is queued, nobody has it yet."),
    _go("worker", ACQUIRE, "The busy worker gets the Lock first and stops before counting"
        " its job done."),
    _go("worker", DONE, "It counts job 1 done; its loop finds job 2 queued: it stops before"
        " taking it."),
    _go("worker", TAKE, "It takes job 2: the queue is empty again, and the other worker"
        " was woken for that very job."),
]

SCENARIOS: List[Dict[str, Any]] = [
    {
        "name": "empty-wakeup", "variant": None, "workers": 2,
        "title": "Make a worker wake up to an empty queue",
        "goal": "A worker is woken for a job, but another worker takes the job before the"
                " woken one has the Lock back: the empty wake-ups counter becomes 1, and"
                " every invariant stays OK.",
        "check": {"kind": "counter_rises", "counter": "empty_wakeups"},
        "outcome": "EMPTY WAKE-UP: the woken worker re-checked `while not self._tasks and"
                   " not self._closed` under the Lock, found nothing and waits again.",
        "why": "",
        "steps": [*_STOLEN_WAKEUP,
                  _go("worker", WAKE, "The woken worker takes the Lock back at last and"
                      " re-checks its while condition: the queue is empty. An empty"
                      " wake-up: it stops before waiting again."),
                  _go("worker", WAIT, "It waits again: wait() lets go of the Lock, and the"
                      " counters, read with the Lock free, show the empty wake-up.")],
    },
    {
        "name": "if-not-while", "variant": "if-not-while", "workers": 2,
        "title": "Make a worker leave the pool for good",
        "goal": "With `if` instead of `while` around wait(), a worker woken for a job that"
                " another worker took first does not look again: make it leave while the"
                " pool is open (the invariant on exits turns false).",
        "check": {"kind": "invariant_false", "invariant": EXIT_RULE},
        "outcome": "The woken worker found the queue empty and, with no loop to send it"
                   " back, took the exit: the pool is a worker short for good.",
        "why": "Unreachable on the correct pool: its worker re-checks `while not"
               " self._tasks and not self._closed` under the Lock after every wake-up, so"
               " an empty queue sends it back to wait (an empty wake-up), never out.",
        "steps": [*_STOLEN_WAKEUP,
                  _go("worker", WAKE, "The woken worker takes the Lock back and, with"
                      " `if`, does not look again: the queue is empty and it exits.")],
    },
    {
        "name": "lost-notify", "variant": "lost-notify", "workers": 2,
        "title": "Make join() sleep through its notification",
        "goal": "join() waits on _all_done with a bare wait(): make every job finish"
                " first, so that the notify_all comes before join() waits, and join()"
                " sleeps with nothing left to wait for.",
        "check": {"kind": "join_asleep_after_done"},
        "outcome": "join() sleeps on _all_done with no job unfinished: the notify_all it"
                   " waits for came before it waited, and a Condition does not remember a"
                   " notify. It sleeps until its timeout.",
        "why": "Unreachable on the correct pool: join() calls wait_for(lambda:"
               " self._unfinished == 0), which checks the state under the Lock before it"
               " waits: with nothing unfinished it returns at once.",
        "steps": [
            _submit("Submit a job: its producer stops before the job layer's Lock."),
            *_through_submit(),
            _go("producer", NOTIFY, _NOTIFY_SAY),
            *_WORKER_RUNS,
            _go("worker", ACQUIRE, "It takes the Lock and stops before counting the job"
                " done."),
            _go("worker", DONE, "It counts the job done: nothing is unfinished, so it stops"
                " before notify_all() on _all_done."),
            _go("worker", NOTIFY_ALL, "notify_all() on _all_done: nobody waits on it yet,"
                " so it wakes nobody. The worker goes back to wait for work."),
            _go("worker", WAIT, "The worker sleeps on _task_ready."),
            {"do": "join", "say": "Call join(), as the drain does: its thread stops before"
                                  " taking the Lock."},
            _go("join", ACQUIRE, "join() takes the Lock and, with a bare wait(), stops"
                " before waiting without looking at the state."),
            _go("join", WAIT, "join() sleeps on _all_done, for a notify that came and"
                " went."),
        ],
    },
    {
        "name": "check-outside-lock", "variant": "check-outside-lock", "workers": 2,
        "title": "Accept a job after shutdown",
        "goal": "submit() checks \"shut down?\" before it takes the Lock: slip a whole"
                " shutdown in between the check and the enqueue, so that a job is accepted"
                " after shutdown and never runs.",
        "check": {"kind": "invariant_false", "invariant": NOTHING_AFTER},
        "outcome": "The POST got a job id after the shutdown: the job is queued on a pool"
                   " whose workers have all left, and will never run.",
        "why": "Unreachable on the correct pool: submit() checks _closed after taking the"
               " Lock, and shutdown() sets it under the same Lock, so the check and the"
               " enqueue are one step: a submit that comes after the shutdown sees it"
               " and is refused (503).",
        "steps": [
            _submit("Submit a job: its producer stops before the job layer's Lock."),
            _go("producer", ACQUIRE, "The producer takes the job layer's Lock and calls the"
                " pool's submit(), which has already checked `self._closed` (False) in"
                " the broken pool; it stops before the pool's Lock.", JOBS),
            {"do": "shutdown", "say": "Ask for a graceful shutdown: its thread stops before"
                                      " the pool's Lock."},
            _go("shutdown", ACQUIRE, "shutdown() takes the Lock, closes the pool and stops"
                " before notify_all()."),
            _go("shutdown", NOTIFY_ALL, "notify_all() wakes every idle worker; the shutdown"
                " is done."),
            _go("worker", WAKE, "A worker takes the Lock back: the pool is closed and the"
                " queue empty, so it exits."),
            _go("worker", WAKE, "So does the other one: no worker is left."),
            _go("producer", ACQUIRE, "The producer takes the pool's Lock at last. Its check"
                " was made before, outside the Lock: it appends the job and stops before"
                " notify().", POOL),
            _go("producer", NOTIFY, "notify() wakes nobody; the POST is answered with a job"
                " id: accepted after shutdown."),
        ],
    },
    {
        "name": "unlocked-ids", "variant": "unlocked-ids", "workers": 2,
        "title": "Give two jobs the same id",
        "goal": "The broken job layer reads the next id before it takes its Lock: make two"
                " POSTs read it before either has advanced it, so both are answered with the"
                " same job id.",
        "check": {"kind": "same_id_twice"},
        "outcome": "Two POSTs were answered with the same job id: their results share one"
                   " file, and one overwrites the other.",
        "why": "Unreachable on the correct server: JobManager.submit reads the id, queues"
               " the job and advances the id under one Lock, so the second POST waits for"
               " that Lock before it reads.",
        "steps": [
            _submit("Submit a job: its producer has read the next id (outside the Lock, in"
                    " the broken job layer) and stops before the job layer's Lock."),
            _submit("Submit a second job: its producer reads the same id, and stops there"
                    " too."),
            *_through_submit(),
            _go("producer", NOTIFY, "The first POST is answered; the job layer's Lock is"
                " free again."),
            _go("producer", ACQUIRE, "The second producer takes the job layer's Lock with"
                " the id it read before, and queues its job under it.", JOBS),
            _go("producer", ACQUIRE, "It takes the pool's Lock and stops before notify().",
                POOL),
            _go("producer", NOTIFY, "The second POST is answered: with the same id."),
        ],
    },
    {
        "name": "no-drain", "variant": "no-drain", "workers": 2,
        "title": "Lose a queued job at shutdown",
        "goal": "Workers that stop as soon as the pool is closed: shut down with a job"
                " queued, and have the worker woken for it leave without running it.",
        "check": {"kind": "invariant_false", "invariant": EXIT_RULE},
        "outcome": "A worker left with a job still queued: an accepted job that will never"
                   " run (and graceful_shutdown can never say \"done\").",
        "why": "Unreachable on the correct pool: a worker exits only when `not"
               " self._tasks` after its loop, that is when the pool is closed AND the queue"
               " is empty, so the queued job runs first (the drain).",
        "steps": [
            _submit("Submit a job: its producer stops before the job layer's Lock."),
            *_through_submit(),
            _go("producer", NOTIFY, _NOTIFY_SAY),
            {"do": "shutdown", "say": "Ask for a graceful shutdown: its thread stops before"
                                      " the pool's Lock."},
            _go("shutdown", ACQUIRE, "shutdown() takes the Lock, closes the pool and stops"
                " before notify_all()."),
            _go("shutdown", NOTIFY_ALL, "notify_all() wakes the other worker too."),
            _go("worker", WAKE, "The worker woken for the job takes the Lock back and sees"
                " the pool closed: it exits, the job still queued."),
        ],
    },
]


def as_json() -> List[Dict[str, Any]]:
    """The scenarios, JSON-ready."""
    return SCENARIOS


def find(name: str) -> Optional[Dict[str, Any]]:
    """The scenario called ``name``, or None."""
    return next((scenario for scenario in SCENARIOS if scenario["name"] == name), None)


def reached(check: Mapping[str, Any], pool: Mapping[str, Any], baseline: Mapping[str, Any],
            threads: Iterable[Mapping[str, Any]], answers: Iterable[str]) -> bool:
    """Is the goal ``check`` reached?  ``pool`` is the pool's snapshot now,
    ``baseline`` its counters when the scenario began, ``threads`` the
    step state's threads, ``answers`` the job ids the scenario's POSTs got."""
    kind = check["kind"]
    if kind == "counter_rises":
        return pool["counters"][check["counter"]] > baseline[check["counter"]]
    if kind == "invariant_false":
        return pool["invariants"].get(check["invariant"]) is False
    if kind == "join_asleep_after_done":
        return pool["unfinished"] == 0 and any(
            t["role"] == "join" and t["state"] == "asleep" and t["condition"] == "all_done"
            and t["notifies"] == 0 for t in threads)
    if kind == "same_id_twice":
        answered = list(answers)
        return len(answered) != len(set(answered))
    raise ValueError(f"unknown goal {kind!r}")
