"""The deep probes, in the order ``every_probe`` makes them.

Each returns one ``Finding``.  The load comes through the course's API
only (POSTs of the cases' questions, polls), so the probes work against
any server of that API; the thresholds below are far from what a correct
server shows (tested on lestats' own pool 20 times in a row, see the
README) and say plainly what a FOUND means.
"""

import contextlib
import threading
import time
from collections import Counter
from typing import Any, Iterator, List, Optional, Sequence, Set, Tuple

from .findings import FOUND, NOT_SEEN, PASS, Context, Finding
from .traffic import (Monitor, Scanner, Seen, Waited, ask, burst, job_number, poll,
                      post_job, wait_done)

IDS_CLIENTS = 16            # threads POSTing at once
IDS_PER_CLIENT = 20
IDS_BURSTS = 3
HAMMERS = 6                 # threads polling one job while it finishes
HAMMER_ROUNDS = 3           # rounds of one large job per question
AFTER_DONE = 3              # polls each hammer makes after it saw done
HAMMER_LIMIT = 10.0         # seconds a job is hammered at most
BUSY_LIMIT = 2.0            # seconds a num_jobs request may take while jobs run
ZERO_WAIT = 2.0             # seconds num_jobs has to come down to 0 once all are done
SETTLE = 0.3                # seconds between two looks at the threads
IDLE_SECONDS = 1.0
SPIN_SHARE = 0.25           # of one CPU, while idle
WAKEUPS_PER_SECOND = 10     # of one thread, while idle
LIST_CAP = 8 * 1024 * 1024  # bytes of /api/jobs read
SHUTDOWN_CLIENTS = 16
QUEUE_TARGET = 10           # unfinished jobs wanted when graceful_shutdown is called
LOAD_LIMIT = 3.0            # seconds of load at most before it is called
AT_ONCE = 2.0               # seconds graceful_shutdown may take to answer
LATE_POSTS = 2              # POSTs each client sends after graceful_shutdown answered
EXIT_WAIT = 3.0             # seconds the workers have to leave after the drain
UNKNOWN_IDS = ("job_id_999999999", "job_id_x")
UNKNOWN_QUESTION = "Percent of adults who like statistics"


def every_probe(ctx: Context, shutdown: bool) -> Iterator[Finding]:
    """Every probe, in order; the shutdown last, and only if asked."""
    if not ctx.workload.questions or not ctx.workload.pairs:
        yield Finding("all", NOT_SEEN, "the cases hold no (question, state) to ask about")
        return
    before = _long_lived(ctx)
    monitor = Monitor(ctx.client)
    scanner = Scanner(ctx.results_dir) if ctx.results_dir is not None else None
    with monitor, (scanner or contextlib.nullcontext()):
        yield ids(ctx)
        hammered = hammer_results(ctx)
        waited = wait_done(ctx.client, ctx.accepted)
    yield results(hammered, scanner)
    yield status(ctx, waited)
    yield num_jobs(ctx, monitor, waited)
    yield busy(monitor)
    after_load = _long_lived(ctx)
    yield bad_input(ctx)
    yield threads(before, after_load, _long_lived(ctx), len(ctx.accepted))
    yield idle(ctx)
    if shutdown:
        yield graceful_shutdown(ctx)


def _long_lived(ctx: Context) -> Optional[Set[int]]:
    """The server's threads that are there at two looks SETTLE apart (a
    request's thread on its way out is not counted); None without --pid."""
    if ctx.process is None:
        return None
    first = ctx.process.threads()
    time.sleep(SETTLE)
    return first & ctx.process.threads()


def _more(items: Sequence[Any]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


# -- ids ------------------------------------------------------------------------

def ids(ctx: Context) -> Finding:
    """Bursts of concurrent POSTs: every id distinct, and none skipped."""
    posts = 0
    unchecked = ""
    for number in range(1, IDS_BURSTS + 1):
        answers = burst(ctx.client, ctx.workload.cheap(IDS_CLIENTS * IDS_PER_CLIENT),
                        IDS_CLIENTS)
        posts += len(answers)
        given = [job_id for job_id, _ in answers if job_id]
        ctx.accepted += given
        refused = [seen for job_id, seen in answers if not job_id]
        if not given:
            return Finding("ids", NOT_SEEN, f"no POST got a job id: {refused[0].text}")
        where = f"(burst {number}: {len(answers)} POSTs from {IDS_CLIENTS} clients at once)"
        twice = [(job_id, count) for job_id, count in Counter(given).items() if count > 1]
        if twice:
            return Finding("ids", FOUND, f"{twice[0][0]} was given to {twice[0][1]} POSTs"
                           f"{_more(twice)} {where}")
        numbers = [job_number(job_id) for job_id in given]
        if refused or None in numbers:
            unchecked = (f"; gaps not checked: {len(refused)} POSTs got no id ({refused[0].text})"
                         if refused else "; gaps not checked: ids not of the form job_id_N")
            continue
        low, high = min(numbers), max(numbers)
        skipped = sorted(set(range(low, high + 1)) - set(numbers))
        if skipped:
            return Finding("ids", FOUND, f"no POST got job_id_{skipped[0]}{_more(skipped)},"
                           f" though the {len(given)} POSTs got ids from job_id_{low} to"
                           f" job_id_{high} {where}")
    return Finding("ids", PASS, f"{posts} POSTs in {IDS_BURSTS} bursts of {IDS_CLIENTS} clients"
                   f" at once: every id distinct{', none skipped' if not unchecked else ''}"
                   f"{unchecked}")


# -- results, status ------------------------------------------------------------------

def hammer_results(ctx: Context) -> Tuple[int, int, List[str]]:
    """Jobs with large answers, each polled by HAMMERS threads while it
    finishes; (jobs, polls, evidence of a half-written result).  Evidence
    for the status probe is noted in ``ctx``."""
    jobs = polls = 0
    torn: List[str] = []
    for _ in range(HAMMER_ROUNDS):
        for endpoint, body in ctx.workload.large():
            job_id, _ = post_job(ctx.client, endpoint, body)
            if job_id is None:
                continue
            ctx.accepted.append(job_id)
            jobs += 1
            answers = _hammer(ctx, job_id)
            polls += sum(len(thread) for thread in answers)
            torn += _torn(job_id, answers, poll(ctx.client, job_id))
            _status_clues(ctx, job_id, answers)
        if torn:
            break
    return jobs, polls, torn


def _hammer(ctx: Context, job_id: str) -> List[List[Seen]]:
    """Each hammer's answers, in its order."""
    answers: List[List[Seen]] = [[] for _ in range(HAMMERS)]
    end = time.monotonic() + HAMMER_LIMIT

    def hammer(mine: List[Seen]) -> None:
        after = None
        while time.monotonic() < end and (after is None or after < AFTER_DONE):
            seen = poll(ctx.client, job_id)
            mine.append(seen)
            if after is not None:
                after += 1
            elif seen.get("status") == "done" or seen.status == 0:
                after = 0

    workers = [threading.Thread(target=hammer, args=(mine,), daemon=True) for mine in answers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def _torn(job_id: str, answers: List[List[Seen]], final: Seen) -> List[str]:
    """Answers that were not the job's result while it finished, though it
    is done in the end."""
    if final.status != 200 or final.get("status") != "done":
        return []
    data = final.get("data")
    found = []
    for seen in (seen for thread in answers for seen in thread):
        if seen.status == 200 and seen.value is None:
            found.append(f"{job_id} was answered {seen.text} (not JSON) while it finished")
        elif seen.status >= 500:
            found.append(f"{job_id} was answered {seen.text} while it finished,"
                         " then done")
        elif seen.get("status") == "done" and seen.get("data") != data:
            found.append(f"{job_id} was answered done with other data ({seen.text}) than"
                         " its final answer")
    return found


def _status_clues(ctx: Context, job_id: str, answers: List[List[Seen]]) -> None:
    for thread in answers:
        done = False
        for seen in thread:
            if seen.get("status") == "done":
                done = True
            elif done and seen.get("status") == "running":
                ctx.clue("status", f"{job_id} answered running after it had answered done")
            elif not done and seen.is_error and seen.status < 500:
                ctx.clue("status", f"{job_id} was answered {seen.text} just after its POST,"
                                   " before it was done")


def results(hammered: Tuple[int, int, List[str]], scanner: Optional[Scanner]) -> Finding:
    """A result never read half-written."""
    jobs, polls, torn = hammered
    if torn:
        return Finding("results", FOUND, torn[0] + _more(torn))
    if scanner is not None:
        seen_torn = scanner.still_torn()
        if seen_torn:
            name, what = next(iter(seen_torn.items()))
            return Finding("results", FOUND, f"{name} was read as {what}: not JSON while"
                           f" being written, JSON once complete{_more(list(seen_torn))}")
    if not jobs:
        return Finding("results", NOT_SEEN, "no job with a large answer was accepted")
    files = (f", and {scanner.reads} reads of result files as they appeared"
             if scanner is not None else "; no --results-dir, so no result file was read")
    return Finding("results", PASS, f"{jobs} jobs with large answers, {polls} polls while"
                   f" they finished{files}: never half-written")


def status(ctx: Context, waited: Waited) -> Finding:
    """Every job known from its POST on, never back to running, done in the end."""
    if waited.unfinished:
        job_id, seen = next(iter(waited.unfinished.items()))
        count = ask(ctx.client, "GET", "/api/num_jobs").get("num_jobs")
        return Finding("status", FOUND, f"{len(waited.unfinished)} of {len(ctx.accepted)} jobs"
                       f" never finished: {job_id} still answered {seen.text} after"
                       f" {waited.seconds:.0f} s (num_jobs: {count})")
    clues = ctx.clues.get("status", [])
    if clues:
        return Finding("status", FOUND, clues[0] + _more(clues))
    if waited.errors:
        job_id, seen = next(iter(waited.errors.items()))
        return Finding("status", FOUND, f"{len(waited.errors)} valid jobs ended in an error:"
                       f" {job_id} answered {seen.text}")
    return Finding("status", PASS, f"all {len(ctx.accepted)} jobs done within"
                   f" {waited.seconds:.1f} s; each known from its POST on, never running"
                   " again once done")


# -- num_jobs, /api/jobs, busy ------------------------------------------------------------

def num_jobs(ctx: Context, monitor: Monitor, waited: Waited) -> Finding:
    """num_jobs never negative, 0 once all are done; /api/jobs agrees with get_results."""
    if monitor.lowest is None:
        why = (monitor.odd or monitor.unanswered or ["no request made"])[0]
        return Finding("num_jobs", NOT_SEEN, f"/api/num_jobs gave no count: {why}")
    if monitor.lowest < 0:
        return Finding("num_jobs", FOUND, f"num_jobs was {monitor.lowest} while jobs ran")
    if waited.unfinished:
        return Finding("num_jobs", NOT_SEEN, f"lowest {monitor.lowest} over"
                       f" {monitor.requests} requests; not every job finished (see status)")
    last = _num_jobs_settles(ctx)
    if last != 0:
        return Finding("num_jobs", FOUND, f"num_jobs is {last} {ZERO_WAIT:g} s after all"
                       f" {len(ctx.accepted)} jobs answered done")
    listed = _jobs_list(ctx, waited)
    if listed.startswith("FOUND "):
        return Finding("num_jobs", FOUND, listed[len("FOUND "):])
    return Finding("num_jobs", PASS, f"lowest {monitor.lowest} over {monitor.requests}"
                   f" requests while jobs ran, 0 once all were done; {listed}")


def _num_jobs_settles(ctx: Context) -> Any:
    end = time.monotonic() + ZERO_WAIT
    count = ask(ctx.client, "GET", "/api/num_jobs").get("num_jobs")
    while count != 0 and time.monotonic() < end:
        time.sleep(0.05)
        count = ask(ctx.client, "GET", "/api/num_jobs").get("num_jobs")
    return count


def _jobs_list(ctx: Context, waited: Waited) -> str:
    """What /api/jobs says of the jobs get_results called done: a note, or
    "FOUND " and the evidence."""
    seen = ask(ctx.client, "GET", "/api/jobs", max_answer=LIST_CAP)
    rows = seen.get("data")
    if seen.status != 200 or not isinstance(rows, list):
        return f"/api/jobs not compared (it answered {seen.text})"
    listed = {}
    for row in rows:
        if isinstance(row, dict):
            listed.update(row)
    done = [job_id for job_id in dict.fromkeys(ctx.accepted) if job_id not in waited.errors]
    missing = [job_id for job_id in done if job_id not in listed]
    if missing:
        return f"FOUND /api/jobs does not list {missing[0]}{_more(missing)}, done by get_results"
    other = [job_id for job_id in done if listed[job_id] != "done"]
    if other:
        return (f"FOUND /api/jobs says {other[0]} is {listed[other[0]]!r}{_more(other)};"
                " get_results says done")
    return f"/api/jobs agrees on all {len(done)} jobs"


def busy(monitor: Monitor) -> Finding:
    """Requests answered while jobs run."""
    if monitor.unanswered:
        return Finding("busy", FOUND, f"{len(monitor.unanswered)} num_jobs requests went"
                       f" unanswered while jobs ran: {monitor.unanswered[0]}")
    if monitor.slowest > BUSY_LIMIT:
        return Finding("busy", FOUND, f"a num_jobs request took {monitor.slowest:.1f} s while"
                       " jobs ran")
    if not monitor.requests:
        return Finding("busy", NOT_SEEN, "no request made while jobs ran")
    return Finding("busy", PASS, f"{monitor.requests} num_jobs requests while jobs ran:"
                   f" the slowest took {monitor.slowest * 1000:.0f} ms")


# -- threads, bad input, idle ------------------------------------------------------------

def threads(before: Optional[Set[int]], after_load: Optional[Set[int]],
            after_bad: Optional[Set[int]], jobs: int) -> Finding:
    """No long-lived thread of the idle server ends while it runs."""
    if before is None or after_load is None or after_bad is None:
        return Finding("threads", NOT_SEEN, "give --pid (Linux) to watch the server's threads")
    for gone, when in ((before - after_load, f"during the {jobs} jobs"),
                       (after_load - after_bad, "during the bad requests")):
        if gone:
            return Finding("threads", FOUND, f"{len(gone)} of the {len(before)} threads of the"
                           f" idle server ended {when} (thread {min(gone)}): a worker that"
                           " exits while the server runs")
    return Finding("threads", PASS, f"the {len(before)} threads of the idle server were all"
                   f" there after {jobs} jobs and the bad requests")


def _bad_bodies(ctx: Context) -> List[Tuple[str, Any]]:
    question = ctx.workload.pairs[0][0]
    return [("states_mean", b"not json"), ("states_mean", b"[1, 2]"), ("states_mean", b"{}"),
            ("states_mean", {"question": 42}),
            ("states_mean", {"question": UNKNOWN_QUESTION}),
            ("state_mean", {"question": question, "state": "Atlantis"})]


def bad_input(ctx: Context) -> Finding:
    """Unknown ids and bad bodies get an error; the server goes on."""
    problems = []
    for job_id in UNKNOWN_IDS:
        seen = poll(ctx.client, job_id)
        if not seen.is_error:
            problems.append(f"GET /api/get_results/{job_id} answered {seen.text}")
    taken = []
    bodies = _bad_bodies(ctx)
    for endpoint, body in bodies:
        job_id, seen = post_job(ctx.client, endpoint, body)
        what = f"POST /api/{endpoint} {body if isinstance(body, bytes) else repr(body)[:60]}"
        if job_id is not None and not seen.is_error:
            taken.append((what, job_id))
        elif not seen.is_error:
            problems.append(f"{what} was answered {seen.text}")
    waited = wait_done(ctx.client, [job_id for _, job_id in taken])
    for what, job_id in taken:
        if job_id in waited.unfinished:
            problems.append(f"{what} was accepted as {job_id}, which never finished")
        elif job_id not in waited.errors:
            problems.append(f"{what} was accepted as {job_id}, and answered done")
    problems += _still_works(ctx)
    if problems:
        return Finding("bad input", FOUND, problems[0] + _more(problems))
    return Finding("bad input", PASS, f"{len(UNKNOWN_IDS)} unknown ids and {len(bodies)} bad"
                   " bodies answered with errors; the server still answers and finishes jobs")


def _still_works(ctx: Context) -> List[str]:
    endpoint, body = ctx.workload.cheap(1)[0]
    job_id, seen = post_job(ctx.client, endpoint, body)
    if job_id is None:
        return [f"after the bad requests, a valid POST was answered {seen.text}"]
    ctx.accepted.append(job_id)
    waited = wait_done(ctx.client, [job_id])
    if waited.unfinished or waited.errors:
        last = {**waited.unfinished, **waited.errors}[job_id]
        return [f"after the bad requests, a valid job did not finish ({job_id}: {last.text})"]
    return []


def idle(ctx: Context) -> Finding:
    """An idle server uses no CPU, and its threads sleep."""
    if ctx.process is None:
        return Finding("idle", NOT_SEEN, "give --pid (Linux) to watch the idle server's CPU")
    time.sleep(2 * SETTLE)
    process = ctx.process
    cpu, switches, began = process.cpu_seconds(), process.switches(), time.monotonic()
    time.sleep(IDLE_SECONDS)
    seconds = time.monotonic() - began
    share = (process.cpu_seconds() - cpu) / seconds
    rates = {tid: (count - switches[tid]) / seconds
             for tid, count in process.switches().items() if tid in switches}
    busiest = max(rates, key=rates.__getitem__, default=None)
    fastest = rates[busiest] if busiest is not None else 0.0
    if share > SPIN_SHARE:
        return Finding("idle", FOUND, f"idle for {seconds:.1f} s, the server used {share:.0%}"
                       " of a CPU: a thread spins instead of waiting")
    if fastest > WAKEUPS_PER_SECOND:
        return Finding("idle", FOUND, f"idle for {seconds:.1f} s, thread {busiest} woke"
                       f" {fastest:.0f} times a second: a worker that polls instead of waiting")
    return Finding("idle", PASS, f"idle for {seconds:.1f} s: {share:.0%} CPU, at most"
                   f" {fastest:.0f} wake-ups a second in a thread")


# -- graceful shutdown ---------------------------------------------------------------

class _ShutdownLoad:
    """Clients POSTing until each has sent LATE_POSTS after graceful_shutdown answered."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        # Each client appends to lists of its own; shut_down merges them
        # once the clients are joined, so no list is shared while written.
        self._accepted_by: List[List[str]] = [[] for _ in range(SHUTDOWN_CLIENTS)]
        self._late_by: List[List[Tuple[Optional[str], Seen]]] = [
            [] for _ in range(SHUTDOWN_CLIENTS)]
        self.accepted: List[str] = []   # set by shut_down
        self.late: List[Tuple[Optional[str], Seen]] = []
        self.answered_at = 0.0                         # set before ``answered`` is
        self.answered = threading.Event()
        requests = ctx.workload.large() + ctx.workload.cheap(4 * len(ctx.workload.large()))
        self._requests = requests
        self._end = time.monotonic() + LOAD_LIMIT + AT_ONCE + ctx.client.deadline
        self._clients = [threading.Thread(target=self._post, args=(first,), daemon=True)
                         for first in range(SHUTDOWN_CLIENTS)]

    def start(self) -> None:
        """Start the clients."""
        for client in self._clients:
            client.start()

    def shut_down(self) -> Tuple[Seen, float]:
        """Call graceful_shutdown, let each client send its LATE_POSTS, and
        wait for them: (its answer, the seconds it took)."""
        began = time.monotonic()
        seen = ask(self.ctx.client, "GET", "/api/graceful_shutdown")
        self.answered_at = time.monotonic()
        self.answered.set()
        for client in self._clients:
            client.join()
        self.accepted = [job_id for mine in self._accepted_by for job_id in mine]
        self.late = [answer for mine in self._late_by for answer in mine]
        return seen, self.answered_at - began

    def _post(self, first: int) -> None:
        accepted, late_answers = self._accepted_by[first], self._late_by[first]
        late = 0
        index = first
        while late < LATE_POSTS and time.monotonic() < self._end:
            sent = time.monotonic()
            job_id, seen = post_job(self.ctx.client, *self._requests[index % len(self._requests)])
            index += SHUTDOWN_CLIENTS
            if self.answered.is_set() and sent > self.answered_at:
                late_answers.append((job_id, seen))
                late += 1
            elif job_id is not None:
                accepted.append(job_id)


def _refused(ctx: Context, job_id: Optional[str], seen: Seen) -> bool:
    if seen.status == 0:
        return True   # the server no longer listens: refused too
    if ctx.edition.other_status_fails:   # 2025: {"status": "error", "reason": "shutting down"}
        return seen.get("status") == "error" and job_number(job_id) is None
    return job_number(job_id) is None    # 2024: no job id given


def graceful_shutdown(ctx: Context) -> Finding:
    """Under load: graceful_shutdown answers at once, every accepted job
    finishes, later POSTs are refused, and the workers leave."""
    before = _long_lived(ctx)
    load = _ShutdownLoad(ctx)
    load.start()
    unfinished = _queue_up(ctx)
    seen, took = load.shut_down()
    problems = []
    if seen.status == 0 or took > AT_ONCE:
        problems.append(f"graceful_shutdown took {took:.1f} s to answer ({seen.text})")
    elif ctx.edition.other_status_fails and seen.get("status") not in ("running", "done"):
        problems.append(f"graceful_shutdown answered {seen.text}, not a running/done status")
    problems += _drain(ctx, load.accepted) + _late_posts(ctx, load.late)
    left = _workers_left(ctx, before)
    if left.startswith("FOUND "):
        problems.append(left[len("FOUND "):])
    tried = (f"{unfinished} jobs were unfinished when graceful_shutdown was called, which"
             f" answered in {took * 1000:.0f} ms")
    if problems:
        return Finding("shutdown", FOUND, f"{problems[0]}{_more(problems)}; {tried}")
    verdict = PASS if unfinished else NOT_SEEN
    drained = ("" if unfinished else ": no job was unfinished at the call, so a drain that"
               " drops queued jobs could not show")
    return Finding("shutdown", verdict, f"{tried}{drained}; all {len(load.accepted)} accepted"
                   f" jobs finished; {len(load.late)} later POSTs refused{left}")


def _drain(ctx: Context, accepted: List[str]) -> List[str]:
    """What is wrong with the drain: jobs that never finish, and (2025) a
    graceful_shutdown that does not say done once they have."""
    waited = wait_done(ctx.client, accepted)
    if waited.unfinished:
        job_id, last = next(iter(waited.unfinished.items()))
        return [f"{len(waited.unfinished)} of {len(accepted)} jobs accepted before"
                f" graceful_shutdown never finished ({job_id}: {last.text})"]
    again = ask(ctx.client, "GET", "/api/graceful_shutdown")
    if ctx.edition.other_status_fails and again.status and again.get("status") != "done":
        return [f"once every job was done, graceful_shutdown answered {again.text}"]
    return []


def _queue_up(ctx: Context) -> int:
    """Wait (at most LOAD_LIMIT) for QUEUE_TARGET unfinished jobs; how many there were."""
    end = time.monotonic() + LOAD_LIMIT
    unfinished = 0
    while time.monotonic() < end and unfinished < QUEUE_TARGET:
        count = ask(ctx.client, "GET", "/api/num_jobs").get("num_jobs")
        unfinished = count if isinstance(count, int) else 0
    return unfinished


def _late_posts(ctx: Context, late: List[Tuple[Optional[str], Seen]]) -> List[str]:
    wrong = [(job_id, seen) for job_id, seen in late if not _refused(ctx, job_id, seen)]
    if not wrong:
        return []
    job_id, seen = wrong[0]
    if job_id is not None:
        return [f"a POST sent after graceful_shutdown answered got {job_id}{_more(wrong)}"]
    return [f"a POST sent after graceful_shutdown answered was answered {seen.text}{_more(wrong)};"
            f" the {ctx.edition.name} edition refuses with"
            f" {{\"status\": \"error\", \"reason\": \"shutting down\"}}"]


def _workers_left(ctx: Context, before: Optional[Set[int]]) -> str:
    """"; N threads left" once the drain is over, "FOUND ..." if none did,
    "" without --pid."""
    if before is None or ctx.process is None:
        return ""
    end = time.monotonic() + EXIT_WAIT
    while not before - ctx.process.threads() and time.monotonic() < end:
        time.sleep(0.05)
    gone = before - ctx.process.threads()
    if not gone:
        return (f"FOUND no thread left after the drain: the {len(before)} threads of the idle"
                f" server were all there {EXIT_WAIT:g} s later (workers that never exit)")
    return f"; {len(gone)} of its {len(before)} threads left after the drain"
