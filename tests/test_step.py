"""Step mode: every synchronization point of the pool stops its thread at
the real line of pool.py, one thread goes at a time, every stop is released
(by Run, by the server stopping, by the last page going away), the page is
never kept waiting by a stopped thread, and with step mode off the stepper
is never called.  Then the guided scenarios: each one reaches its goal on
its own pool, and none on the correct pool.

Nothing here waits for time to pass: a test waits (bounded) on the
stepper's Condition for a thread to arrive somewhere, and ``go`` returns
once the thread it let go is at its next point, blocked, asleep or gone.
"""

import json
import threading
import urllib.request

import pytest

from lestats import cli
from lestats.jobs import JobManager, ShuttingDown
from lestats.lab.broken import ids as broken_ids
from lestats.lab.broken import pools as broken_pools
from lestats.lab.forcing import TIMEOUT, Watch, in_threads, pause_after_read
from lestats.pool import ThreadPool
from lestats.storage import JobStore
from lestats.watch import scenarios
from lestats.watch.events import EventBus, SseStream
from lestats.watch.step import Stepper
from lestats.watch.steplocks import steppable, steppable_jobs
from lestats.watch.stepweb import Watched
from lestats.tools.soak import ServerProcess, call

from conftest import OBESITY, REPO, TINY_ROWS, write_csv

BODY = {"question": OBESITY}


class Stepping:
    """A job manager on a steppable pool, wired as the server wires them."""

    def __init__(self, index, results, pool_class=ThreadPool, jobs_class=JobManager,
                 workers=2, events=None, stepper_class=Stepper):
        events = Watch() if events is None else events
        self.stepper = stepper_class(events)
        self.pool = steppable(pool_class)(workers, stepper=self.stepper, events=events)
        self.jobs = jobs_class(index, self.pool, JobStore(results), events=events)
        steppable_jobs(self.jobs, self.stepper)
        self.jobs.start()
        self.threads = []
        self.answers = []
        self.refused = []

    def idle(self):
        """Wait until every worker sleeps on _task_ready (step mode off)."""
        events = self.pool._events   # pylint: disable=protected-access
        if isinstance(events, Watch) and self.pool.variant != "spin-wait":   # spinners never idle
            assert events.idle(self.pool, self.pool.size)

    def act(self, call_, name):
        """Run ``call_`` in a thread called ``name``."""
        thread = threading.Thread(target=call_, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def submit(self, name):
        """A POST's producer, in a thread called ``name``."""
        def post():
            try:
                self.answers.append(self.jobs.submit("global_mean", BODY))
            except ShuttingDown:
                self.refused.append(name)
        return self.act(post, name)

    def at(self, name, point, lock=None):
        """Wait until thread ``name`` is stopped at ``point``; its record."""
        def there(threads):
            found = threads.get(name)
            return (found is not None and found["state"] == "stopped" and found["point"] == point
                    and (lock is None or found["lock"] == lock))
        assert self.stepper.until(there, TIMEOUT), (name, point, self.threads_now())
        return self.thread(name)

    def through(self, name, *points):
        """Let thread ``name`` go from each of ``points`` in turn."""
        for point in points:
            self.at(name, point)
            self.stepper.go(name)

    def someone(self, role, point):
        """Wait until a thread of ``role`` is stopped at ``point``; its name."""
        def there(threads):
            return any(t["role"] == role and t["state"] == "stopped" and t["point"] == point
                       for t in threads.values())
        assert self.stepper.until(there, TIMEOUT), (role, point, self.threads_now())
        return next(t["name"] for t in self.stepper.state()["threads"]
                    if t["role"] == role and t["state"] == "stopped" and t["point"] == point)

    def thread(self, name):
        """Thread ``name`` as state() shows it."""
        return next(t for t in self.stepper.state()["threads"] if t["name"] == name)

    def threads_now(self):
        """(name, state, point) of every thread step mode knows."""
        return [(t["name"], t["state"], t["point"]) for t in self.stepper.state()["threads"]]

    def finish(self):
        """Wait for the threads this set-up started (step mode must be off)."""
        for thread in self.threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), thread.name

    def close(self):
        """Step mode off for good, shut down, let the workers leave and close
        (a broken pool may have stranded a job, or left a join() asleep on a
        notify that came before it: it is notified here)."""
        self.stepper.close()
        closer = threading.Thread(target=self.jobs.shutdown, daemon=True)
        closer.start()
        closer.join(TIMEOUT)
        assert not closer.is_alive(), "shutdown waits for a thread step mode never let go"
        for thread in self.pool._threads:   # pylint: disable=protected-access
            if self.pool.variant != "never-exit":   # whose workers never leave (daemons)
                thread.join(TIMEOUT)
        with self.pool._all_done:   # pylint: disable=protected-access
            self.pool._all_done.notify_all()   # pylint: disable=protected-access
        for thread in self.threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive()
        self.jobs.close()


@pytest.fixture
def stepping(tiny_index, tmp_path):
    """A factory of Stepping set-ups, closed at the end of the test."""
    made = []

    def make(**options):
        made.append(Stepping(tiny_index, tmp_path / f"results{len(made)}", **options))
        made[-1].idle()
        return made[-1]

    yield make
    for each in made:
        each.close()


def source_line(frame):
    """The line ``frame`` (as state() shows it) is at, read from the file itself."""
    lines = (REPO / frame["file"]).read_text(encoding="utf-8").splitlines()
    assert frame["source"][frame["line"] - frame["first"]] == lines[frame["line"] - 1]
    return lines[frame["line"] - 1].strip()


def where(thread):
    """(function, line) of each frame shown for ``thread``."""
    return [(frame["function"], source_line(frame)) for frame in thread["frames"]]


# -- the points ---------------------------------------------------------------------

def test_a_job_stops_its_threads_at_every_point_each_at_its_line_of_the_source(stepping):
    setup = stepping(workers=1)
    stepper = setup.stepper
    assert stepper.start()
    setup.submit("producer-A")
    seen = []
    producer = setup.at("producer-A", "acquire", "jobs")
    assert producer["role"] == "producer" and producer["label"] == "producer 1"
    assert where(producer)[0] == ("submit", "with self._mutex:")
    assert producer["frames"][0]["file"] == "lestats/jobs.py"
    for point, lock, expected in (
            ("acquire", "pool", [("submit", "with self._mutex:")]),
            ("notify", None, [("_notify", "condition.notify()"),
                              ("submit", "self._notify(self._task_ready)")])):
        assert stepper.go("producer-A") == "stopped"
        producer = setup.at("producer-A", point, lock)
        assert where(producer)[:len(expected)] == expected
        assert producer["frames"][0]["file"] == "lestats/pool.py"
        seen.append(point)
    assert producer["holds"] == ["jobs", "pool"]
    assert stepper.go("producer-A") == "left"
    worker = setup.pool.worker_names[0]
    for point, expected in (
            ("wake", [("_wait_for_task", "self._task_ready.wait()")]),
            ("take", [("_next_task", "return self._take(me)")]),
            ("run", [("_work", "task()")]),
            ("acquire", [("_work", "with self._mutex:")]),
            ("done", [("_work", "self._task_done()")]),
            ("notify_all", [("_notify", "condition.notify_all()"),
                            ("_task_done", "self._notify(self._all_done, every=True)")]),
            ("wait", [("_wait_for_task", "self._task_ready.wait()")])):
        record = setup.at(worker, point)
        assert where(record)[:len(expected)] == expected, point
        assert record["role"] == "worker" and record["doing"]
        stepper.go(worker)
        seen.append(point)
    assert setup.thread(worker)["state"] == "asleep"
    assert setup.answers == ["job_id_1"]
    assert seen == ["acquire", "notify", "wake", "take", "run", "acquire", "done", "notify_all",
                    "wait"]
    stepper.run()
    setup.finish()
    assert setup.jobs.result("job_id_1", wait=TIMEOUT).status == "done"


def test_shutdown_and_join_stop_at_their_points_and_join_sleeps_until_the_last_done(stepping):
    setup = stepping(workers=1)
    stepper = setup.stepper
    assert stepper.start()
    setup.submit("producer-A")
    setup.through("producer-A", "acquire", "acquire", "notify")
    worker = setup.pool.worker_names[0]
    for point in ("wake", "take"):
        setup.at(worker, point)
        stepper.go(worker)
    setup.at(worker, "run")
    joined = []
    setup.act(lambda: joined.append(setup.jobs.drain(TIMEOUT)), "join-A")
    assert where(setup.at("join-A", "acquire"))[0] == ("join", "with self._all_done:")
    assert setup.thread("join-A")["role"] == "join"
    assert stepper.go("join-A") == "stopped"   # one job unfinished: wait_for waits
    assert where(setup.at("join-A", "wait"))[0] == (
        "join", "if not self._all_done.wait_for(lambda: self._unfinished == 0, timeout):")
    assert stepper.go("join-A") == "asleep"
    state = stepper.state()
    assert state["conditions"]["all_done"] == ["join-A"]
    for point in ("run", "acquire", "done"):
        setup.at(worker, point)
        stepper.go(worker)
    setup.at(worker, "notify_all")
    assert stepper.go(worker) == "stopped"   # at wait; join was woken and is at its wake-up
    assert setup.at("join-A", "wake")["notifies"] == 1
    assert stepper.go("join-A") == "blocked"   # the worker, stopped before waiting, holds the Lock
    assert stepper.go(worker) == "asleep"
    assert stepper.until(lambda threads: "join-A" not in threads, TIMEOUT)   # it has left
    setup.act(setup.jobs.shutdown, "shutdown-A")
    assert where(setup.at("shutdown-A", "acquire"))[0] == ("shutdown", "with self._mutex:")
    stepper.go("shutdown-A")
    assert where(setup.at("shutdown-A", "notify_all"))[1] == (
        "shutdown", "self._notify(self._task_ready, every=True)")
    stepper.go("shutdown-A")
    stepper.run()
    setup.finish()
    assert joined == [True]


def test_the_state_shows_who_holds_each_lock_who_is_blocked_and_who_sleeps(stepping):
    setup = stepping(workers=2)
    stepper = setup.stepper
    assert stepper.start()
    asleep = stepper.state()["conditions"]["task_ready"]
    assert sorted(asleep) == sorted(setup.pool.worker_names)
    setup.submit("producer-A")
    setup.at("producer-A", "acquire", "jobs")
    setup.submit("producer-B")
    setup.at("producer-B", "acquire", "jobs")
    stepper.go("producer-A")
    setup.at("producer-A", "acquire", "pool")
    assert stepper.go("producer-B") == "blocked"
    state = stepper.state()
    assert state["locks"]["jobs"] == {"holder": "producer-A", "blocked": ["producer-B"],
                                      "locked": True}
    assert state["locks"]["pool"]["holder"] is None
    blocked = setup.thread("producer-B")
    assert blocked["state"] == "blocked" and blocked["lock"] == "jobs"
    stepper.go("producer-A")
    setup.at("producer-A", "notify")
    assert stepper.state()["locks"]["pool"]["holder"] == "producer-A"
    assert stepper.go("producer-A") == "left"
    # The first worker to sleep is the first to wake (CPython's Condition is FIFO).
    setup.at(asleep[0], "wake")
    setup.at("producer-B", "acquire", "pool")   # got the job layer's Lock once A let go
    stepper.run()
    setup.finish()
    assert sorted(setup.answers) == ["job_id_1", "job_id_2"]


def test_the_pool_s_snapshot_never_waits_for_a_thread_stopped_holding_its_lock(stepping):
    setup = stepping(workers=1)
    stepper = setup.stepper
    assert stepper.start()
    setup.submit("producer-A")
    setup.through("producer-A", "acquire", "acquire")
    setup.at("producer-A", "notify")   # holds the pool's Lock, the job appended
    snapshots = []
    reader = setup.act(lambda: snapshots.append(setup.jobs.pool_snapshot()), "reader")
    reader.join(TIMEOUT)
    assert not reader.is_alive(), "the snapshot waited for the stopped thread"
    snapshot = snapshots[0]
    assert snapshot["step"] == {"lock_holder": "producer-A"}
    assert snapshot["queued"] == 0   # as the Lock was last let go: before the append
    assert all(snapshot["invariants"].values())
    stepper.go("producer-A")
    assert setup.jobs.pool_snapshot()["queued"] == 1 and "step" in setup.jobs.pool_snapshot()


def test_step_mode_begins_once_a_thread_in_its_critical_section_has_finished_it(stepping):
    setup = stepping(workers=1, events=Watch())
    stepper = setup.stepper
    # The producer reads _closed under the pool's Lock, and stops right there.
    pause = pause_after_read(setup.pool, "_closed", in_threads("producer-A"))
    setup.submit("producer-A")
    assert pause.reached.wait(TIMEOUT)
    started = setup.act(stepper.start, "starter")
    assert not stepper.on   # start() waits for the pool's Lock, which the producer holds
    pause.release.set()
    started.join(TIMEOUT)
    assert not started.is_alive() and stepper.on
    setup.threads[0].join(TIMEOUT)
    assert setup.answers == ["job_id_1"]   # it went through submit without stopping
    stops = [fields for kind, fields in setup.pool._events.events   # pylint: disable=protected-access
             if kind == "step" and fields["what"] == "stop"]
    assert [s["thread"] for s in stops if s["thread"] == "producer-A"] == []


def test_go_refuses_a_thread_that_is_not_stopped(stepping):
    setup = stepping(workers=1)
    assert setup.stepper.go("lestats-worker-1") is None   # step mode off
    assert setup.stepper.start()
    assert setup.stepper.go("lestats-worker-1") is None   # asleep, not stopped
    assert setup.stepper.go("nobody") is None


# -- every stop is released ---------------------------------------------------------

def stop_three(setup):
    """Two producers and a worker stopped, one of them holding both Locks."""
    stepper = setup.stepper
    assert stepper.start()
    setup.submit("producer-A")
    setup.through("producer-A", "acquire", "acquire", "notify")
    setup.someone("worker", "wake")
    setup.submit("producer-B")
    setup.through("producer-B", "acquire", "acquire")
    setup.at("producer-B", "notify")


@pytest.mark.parametrize("release", ["run", "close", "last page gone"])
def test_every_stopped_thread_goes_on_and_the_drain_ends(stepping, release):
    setup = stepping(workers=2)
    stepper = setup.stepper
    pages = [Watched(SseStream(EventBus().subscribe()), stepper) for _ in range(3)]
    for page in pages[:2]:
        assert next(page) == b"retry: 2000\n\n"   # read: a page watches
    stop_three(setup)
    pages[2].close()   # never read (a HEAD request): no page came or went
    assert stepper.on
    if release == "run":
        stepper.run()
    elif release == "close":
        stepper.close()
        assert not stepper.start()   # the server is stopping: no new session
    else:
        pages[0].close()
        pages[0].close()   # once is enough
        assert stepper.on   # another page is still open
        pages[1].close()
    assert not stepper.on
    setup.jobs.shutdown()
    assert setup.jobs.drain(TIMEOUT)
    setup.finish()
    assert sorted(setup.answers) == ["job_id_1", "job_id_2"]
    assert setup.jobs.result("job_id_2").status == "done"


@pytest.mark.parametrize("variant", sorted(broken_pools.FOR_THE_SERVER))
def test_step_mode_takes_a_job_through_every_broken_pool_the_server_offers(stepping, variant):
    """Letting whoever stopped first go, again and again, runs the job;
    then Run lets everything go on."""
    setup = stepping(pool_class=broken_pools.FOR_THE_SERVER[variant])
    stepper = setup.stepper
    assert stepper.start()
    setup.submit("producer-A")
    setup.at("producer-A", "acquire", "jobs")
    for _ in range(60):   # (the job's record needs the job layer's Lock: not read here)
        snapshot = setup.jobs.pool_snapshot()
        if snapshot["counters"]["submitted"] == 1 and snapshot["unfinished"] == 0:
            break
        stopped = [t for t in stepper.state()["threads"] if t["state"] == "stopped"]
        if not stopped:   # only sleepers (and the job running): wait for the next stop
            assert stepper.until(lambda ts: any(
                t["state"] == "stopped" for t in ts.values()), TIMEOUT), setup.threads_now()
            continue
        stepper.go(min(stopped, key=lambda t: t["arrived"])["name"])
    assert setup.jobs.result("job_id_1", wait=TIMEOUT).status == "done"
    stepper.run()
    setup.finish()
    assert setup.answers == ["job_id_1"]


# -- off, it costs nothing ------------------------------------------------------------

class CountingStepper(Stepper):
    """A stepper that counts every call the Locks and Conditions make to it."""

    calls = 0

    def _count(self):
        with self._mutex:
            CountingStepper.calls += 1

    def acquire(self, lock, blocking=True, timeout=-1):
        self._count()
        return super().acquire(lock, blocking, timeout)

    def release(self, lock):
        self._count()
        super().release(lock)

    def point(self, kind, lock, condition=None):
        self._count()
        super().point(kind, lock, condition)

    def sleep(self, lock, condition):
        self._count()
        super().sleep(lock, condition)

    def wake(self, lock, condition):
        self._count()
        super().wake(lock, condition)

    def notified(self, condition, every):
        self._count()
        super().notified(condition, every)


def test_with_step_mode_off_the_locks_and_conditions_never_call_the_stepper(stepping):
    setup = stepping(workers=2, stepper_class=CountingStepper, events=EventBus())
    before = CountingStepper.calls
    ids = [setup.jobs.submit("global_mean", BODY) for _ in range(20)]
    assert setup.jobs.drain(TIMEOUT)
    assert all(setup.jobs.result(job_id, wait=TIMEOUT).status == "done" for job_id in ids)
    setup.jobs.shutdown()
    assert setup.pool.join(TIMEOUT)
    assert CountingStepper.calls == before
    assert setup.jobs.pool_snapshot()["counters"]["submitted"] == 20


# -- the scenarios --------------------------------------------------------------------

ROLES = {"submit": "producer", "shutdown": "shutdown", "join": "join"}


def play(setup, scenario):
    """Play ``scenario``'s solution as the page does; True if its goal is
    reached.  A "go" step with no matching thread ends the play: nothing is
    moving (every go waits until its thread and those it woke are settled),
    so that step cannot happen on this pool."""
    stepper, jobs = setup.stepper, setup.jobs
    assert stepper.start()
    baseline = jobs.pool_snapshot()["counters"]
    for number, step in enumerate(scenario["steps"]):
        if step["do"] == "go":
            ready = sorted((t for t in stepper.state()["threads"]
                            if t["state"] == "stopped" and t["role"] == step["role"]
                            and t["point"] == step["point"]
                            and t["lock"] == step.get("lock", t["lock"])),
                           key=lambda t: t["arrived"])
            if not ready:
                break
            stepper.go(ready[0]["name"])
            continue
        role = ROLES[step["do"]]
        before = sum(t["role"] == role and t["state"] == "stopped"
                     for t in stepper.state()["threads"])
        if step["do"] == "submit":
            setup.submit(f"post-{number}")
        elif step["do"] == "shutdown":
            setup.act(jobs.shutdown, f"shutdown-{number}")
        else:
            setup.act(lambda: jobs.drain(TIMEOUT), f"join-{number}")
        assert stepper.until(lambda ts, role=role, before=before: sum(
            t["role"] == role and t["state"] == "stopped" for t in ts.values()) > before,
            TIMEOUT), step
    inside = {t["name"] for t in stepper.state()["threads"]}
    for thread in setup.threads:   # a POST that has left the pool answers at once
        if thread.name.startswith("post-") and thread.name not in inside:
            thread.join(TIMEOUT)
    return scenarios.reached(scenario["check"], jobs.pool_snapshot(), baseline,
                             stepper.state()["threads"], setup.answers)


def classes(variant):
    """The pool and job layer the server runs for ``variant``."""
    return cli.pool_class(variant)


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s["name"])
def test_each_scenario_reaches_its_goal_on_its_own_pool_by_its_steps(stepping, scenario):
    pool_class, jobs_class = classes(scenario["variant"])
    setup = stepping(pool_class=pool_class, jobs_class=jobs_class, workers=scenario["workers"])
    assert play(setup, scenario)


def test_a_worker_asleep_since_before_step_mode_is_seen_to_exit_and_let_go_of_the_lock(
        stepping):
    """It took the Lock with a ``with`` begun before step mode, on the real
    lock: its wake-up is seen (the Condition's), its last release is not."""
    setup = stepping(pool_class=broken_pools.IfNotWhilePool, workers=2)
    assert play(setup, scenarios.find("if-not-while"))
    state = setup.stepper.state()
    exited = [t for t in state["threads"] if t["state"] == "exited"]
    assert len(exited) == 1 and exited[0]["holds"] == []
    assert state["locks"]["pool"]["holder"] != exited[0]["name"]


@pytest.mark.parametrize("scenario", [s for s in scenarios.SCENARIOS if s["variant"]],
                         ids=lambda s: s["name"])
def test_no_scenario_reaches_its_goal_on_the_correct_pool(stepping, scenario):
    setup = stepping(workers=scenario["workers"])
    assert not play(setup, scenario)
    assert all(setup.jobs.pool_snapshot()["invariants"].values())
    assert len(setup.answers) == len(set(setup.answers))


def test_every_scenario_is_told_and_belongs_to_a_pool_the_server_offers():
    offered = {None, *broken_pools.FOR_THE_SERVER, *broken_ids.FOR_THE_SERVER}
    names = [s["name"] for s in scenarios.SCENARIOS]
    assert {"empty-wakeup", "if-not-while", "lost-notify", "check-outside-lock", "unlocked-ids",
            "no-drain"} <= set(names)
    for scenario in scenarios.SCENARIOS:
        assert scenario["variant"] in offered
        assert scenario["goal"] and scenario["outcome"] and all(s["say"] for s in scenario["steps"])
        assert bool(scenario["why"]) == bool(scenario["variant"])
    json.dumps(scenarios.as_json())


# -- over HTTP ----------------------------------------------------------------------------

def post_in_thread(port, path, body, answers):
    """POST in a thread of its own (it waits while its producer is stopped)."""
    thread = threading.Thread(target=lambda: answers.append(call(port, "POST", path, body)))
    thread.start()
    return thread


def next_step(stream, what, **wanted):
    """The fields of the next "step" event ``what`` that has the ``wanted`` fields."""
    kind = None
    for line in stream:
        line = line.decode("utf-8").rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "step":
            fields = json.loads(line[6:])
            if fields["what"] == what and all(fields.get(k) == v for k, v in wanted.items()):
                return fields
    raise AssertionError("the event stream ended")


def next_stop(stream):
    """The fields of the next "step" event saying a thread stopped."""
    return next_step(stream, "stop")


def test_the_step_routes_drive_a_real_server_and_leave_the_course_s_routes_alone(tmp_path):
    data = write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = ServerProcess(data, tmp_path / "results", tmp_path / "w.log",
                           extra=["--workers", "1", "--step"])
    port = server.port
    try:
        assert "step mode" in server.process.stderr.readline()
        status, state = call(port, "GET", "/api/step")
        assert status == 200 and state["on"] and state["pool"]["variant"] is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events",
                                    timeout=TIMEOUT) as stream:
            answers = []
            posting = post_in_thread(port, "/api/global_mean", BODY, answers)
            stop = next_stop(stream)
            assert (stop["role"], stop["point"], stop["lock"]) == ("producer", "acquire", "jobs")
            assert call(port, "POST", "/api/step/go", {"thread": "nobody"})[0] == 409
            assert call(port, "POST", "/api/step/go", {"nope": 1})[0] == 400
            assert call(port, "POST", "/api/step/go", [1])[0] == 400
            status, state = call(port, "POST", "/api/step/go", {"thread": stop["thread"]})
            assert status == 200
            producer = next(t for t in state["threads"] if t["role"] == "producer")
            assert (producer["point"], producer["lock"]) == ("acquire", "pool")
            assert producer["frames"][0]["source"][0].strip().startswith("def submit(")
            status, pool = call(port, "GET", "/api/pool")
            assert status == 200 and all(pool["invariants"].values())
            status, listed = call(port, "GET", "/api/step/scenarios")
            assert [s["name"] for s in listed["scenarios"]] == [
                s["name"] for s in scenarios.SCENARIOS]
            status, state = call(port, "POST", "/api/step/run", {})
            assert status == 200 and not state["on"]
            posting.join(TIMEOUT)
            assert answers == [(200, {"job_id": "job_id_1"})]
            assert call(port, "POST", "/api/step/join", {"timeout": 0})[0] == 400
            status, joined = call(port, "POST", "/api/step/join", {"timeout": 5})
            assert status == 200 and joined["joined"] is True
            assert call(port, "GET", "/api/get_results/job_id_1")[1]["status"] == "done"
            assert call(port, "POST", "/api/step/on", {})[1]["on"]
            # The first session's last stops (the producer at the pool's Lock, the
            # worker...) are still unread: read past them, to this session's start.
            next_step(stream, "mode", on=True)
            late = []
            posting = post_in_thread(port, "/api/global_mean", BODY, late)
            late_stop = next_stop(stream)
            assert late_stop["role"] == "producer" and late_stop["thread"] != stop["thread"]
            assert server.stop() == 0   # SIGTERM with a POST stopped: released, drained, exit 0
            posting.join(TIMEOUT)
            assert late and late[0][0] in (200, 503)   # answered, before or after the shutdown
    finally:
        if server.process.poll() is None:
            server.stop()
