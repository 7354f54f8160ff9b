"""The live page at /, in a real browser against a real server process.

The page shows one lane per worker; jobs submitted from it go queued ->
running -> done in the lanes, the timeline and the jobs table while the
counters move; a graceful shutdown from it ends with the drain (closed,
nothing unfinished, every worker exited, the buttons off).  It fetches
nothing from elsewhere, shows data as text, fits 1366 px, and logs no error.
Jobs recovered after a restart show their status.

Step mode, by clicks: with two workers the student makes an empty wake-up
(the counter becomes 1, every invariant stays OK); on the ``if-not-while``
pool the same solution, replayed step by step, makes a worker leave and the
exit invariant turn red; on the correct pool ``check-outside-lock``'s
outcome is shown unreachable.

Headless Chromium (Debian's /usr/bin/chromium) driven by the ``playwright``
package; skipped when either is missing.  Every wait is one of playwright's
expectations, bounded by a timeout.
"""

import re
from pathlib import Path

import pytest

from lestats.tools.soak import ServerProcess, call
from lestats.watch import scenarios
from conftest import OBESITY, TINY_ROWS, row, write_csv

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the page test needs the playwright package (pip install playwright)")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WORKERS = 2
JOBS = 6
WAIT_MS = 15_000   # the longest any expectation waits
# A question that would be markup if the page ever parsed data as HTML.
MARKUP_QUESTION = 'Percent of <i>adults</i> & "friends" <img src=x>'


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, shared by the tests of this module."""
    if not CHROMIUM.exists():
        pytest.skip(f"the page test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def start_server(tmp_path):
    """A factory: ``python3 run.py`` in slow motion on a CSV, returning the
    page's URL; every server is stopped at the end of the test."""
    servers = []

    def start(csv_path, *extra, results=None):
        server = ServerProcess(csv_path, results or tmp_path / f"results{len(servers)}",
                               tmp_path / f"webserver{len(servers)}.log",
                               extra=["--slow-motion", "200", "--workers", str(WORKERS), *extra])
        servers.append(server)
        start.last = server
        return f"http://127.0.0.1:{server.port}/"

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


class Visit:
    """A 1366x768 page that collects console errors, page errors and every URL it requests."""

    def __init__(self, context):
        self.page = context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.problems = []
        self.requested = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requested.append(request.url))

    def _console(self, message):
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def open(self, url):
        """Load the page and wait until its event stream is open."""
        self.page.goto(url)
        expect(self.page.locator("#conn")).to_have_attribute("data-state", "live")
        return self.page


@pytest.fixture
def visit(browser):
    """A Visit in a fresh browser context, closed at the end of the test.  Tests
    ask for it after start_server, so the page goes before its server stops."""
    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    yield Visit(context)
    context.close()


def lane_counts(page):
    """The "jobs seen N" of every lane."""
    texts = page.get_by_test_id("lane-jobs").all_text_contents()
    return [int(re.search(r"jobs seen (\d+)", text).group(1)) for text in texts]


def record_what_is_shown(page):
    """From now on, remember the most running lanes and queued jobs the page ever shows."""
    page.evaluate("""() => {
        window.shown = {running: 0, queued: 0};
        const count = (selector) => document.querySelectorAll(selector).length;
        new MutationObserver(() => {
            shown.running = Math.max(shown.running, count('[data-testid=lane][data-state=running]'));
            shown.queued = Math.max(shown.queued, count('#queue li'));
        }).observe(document.body, {subtree: true, childList: true, attributes: true});
    }""")


def test_jobs_from_the_page_go_through_the_lanes_and_the_shutdown_drains(
        start_server, visit, tmp_path):
    page = visit.open(start_server(write_csv(tmp_path / "tiny.csv", TINY_ROWS)))
    lanes = page.get_by_test_id("lane")
    expect(lanes).to_have_count(WORKERS)
    expect(page.locator("[data-testid=lane][data-state=waiting]")).to_have_count(WORKERS)
    expect(page.locator("#slow-motion")).to_have_text("slow motion: each job takes at least 200 ms")
    expect(page.locator("#variant")).to_be_hidden()

    record_what_is_shown(page)
    page.fill("#submit-count", str(JOBS))
    page.select_option("#submit-statistic", "best5")
    page.select_option("#submit-question", OBESITY)
    page.click("#submit-button")
    expect(page.locator("#submit-result")).to_contain_text(f"{JOBS} job(s) accepted")

    rows = page.locator("#jobs tr[data-job]")
    expect(rows).to_have_count(JOBS)
    expect(page.locator("#jobs tr[data-status=done]")).to_have_count(JOBS)
    for index in range(JOBS):
        expect(rows.nth(index)).to_have_attribute("data-history", "queued running done")
    shown = page.evaluate("shown")
    assert shown["running"] == WORKERS and shown["queued"] >= 1
    assert sum(lane_counts(page)) == JOBS
    expect(page.locator("#unfinished")).to_have_text("0")
    expect(page.locator("#queued")).to_have_text("0")
    expect(page.get_by_test_id("counter-submitted")).to_have_text(str(JOBS))
    assert int(page.get_by_test_id("counter-notify-task_ready").text_content()) >= JOBS
    assert int(page.get_by_test_id("counter-waits").text_content()) >= WORKERS
    assert int(page.get_by_test_id("counter-wakeups").text_content()) >= WORKERS
    expect(page.locator("[data-testid=invariant][data-ok=true]")).not_to_have_count(0)
    expect(page.locator("[data-testid=invariant][data-ok=false]")).to_have_count(0)
    timeline = page.locator("#timeline")
    expect(timeline).to_have_attribute("data-runs", str(JOBS))
    assert int(timeline.get_attribute("data-waits")) >= WORKERS
    assert int(timeline.get_attribute("data-notifies")) >= JOBS

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#shutdown-button")
    expect(page.locator("#closed")).to_have_text("yes")
    expect(page.locator("#event-log li[data-type=drain_done]")).to_have_count(1)
    expect(page.locator("#drain-state")).to_contain_text("drained")
    expect(page.locator("#unfinished")).to_have_text("0")
    expect(page.locator("[data-testid=lane][data-state=exited]")).to_have_count(WORKERS)
    expect(page.locator("#drain-state")).to_contain_text("stopped: drained, every worker has exited")
    expect(page.locator("#submit-result")).to_have_text(
        "graceful shutdown: done: every accepted job has finished; the workers exit")
    expect(page.locator("#submit-button")).to_be_disabled()
    expect(page.locator("#shutdown-button")).to_be_disabled()
    page.screenshot(path=str(tmp_path / "live-page.png"), full_page=True)
    assert visit.problems == []
    assert start_server.last.stop() == 0
    expect(page.locator("#conn")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#conn")).to_contain_text("the server has stopped")
    # The browser says so when the stream's reconnections find nobody.
    assert all("ERR_CONNECTION_REFUSED" in problem for problem in visit.problems)


def test_the_page_fetches_only_from_its_server_shows_data_as_text_and_fits(
        start_server, visit, tmp_path):
    rows = TINY_ROWS + [row(MARKUP_QUESTION, "Ohio", "3")]
    url = start_server(write_csv(tmp_path / "markup.csv", rows))
    page = visit.open(url)
    expect(page.get_by_test_id("lane")).to_have_count(WORKERS)

    page.click("#questions summary")
    expect(page.locator("#questions-list summary", has_text=MARKUP_QUESTION)).to_have_count(1)
    page.select_option("#submit-statistic", "state_mean")
    page.select_option("#submit-question", MARKUP_QUESTION)
    page.select_option("#submit-state", "Ohio")
    page.fill("#submit-count", "1")
    page.click("#submit-button")
    expect(page.locator("#jobs tr[data-status=done]")).to_have_count(1)
    expect(page.locator("#jobs td[title]", has_text="(Ohio)")).to_have_attribute(
        "title", f"{MARKUP_QUESTION} (Ohio)")
    markup_made = page.locator("main i, main img, #jobs-part i, #jobs-part img, #questions-list i")
    assert markup_made.count() == 0

    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    assert all(address.startswith(url) for address in visit.requested), visit.requested
    assert visit.problems == []


def test_jobs_recovered_after_a_restart_show_the_status_they_have(start_server, visit, tmp_path):
    csv_path = write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    results = tmp_path / "kept"
    url = start_server(csv_path, results=results)
    for _ in range(2):
        assert call(start_server.last.port, "POST", "/api/best5", {"question": OBESITY})[0] == 200
    assert start_server.last.stop() == 0   # drains: both done
    assert url != visit.open(start_server(csv_path, results=results)).url   # another port
    page = visit.page
    expect(page.locator("#jobs tr[data-job]")).to_have_count(2)
    expect(page.locator("#jobs tr[data-status=done]")).to_have_count(2)
    expect(page.locator("#jobs .badge.queued")).to_have_count(0)
    expect(page.locator("#queued")).to_have_text("0")
    assert visit.problems == []


# -- step mode ----------------------------------------------------------------------

def settled(page, selector, name, value):
    """Wait (polled every frame) until ``selector``'s data-``name`` is ``value``."""
    page.wait_for_function("([selector, name, value]) => document.querySelector(selector)"
                           ".dataset[name] === value", arg=[selector, name, value])


def go(page, role, point, lock=None):
    """Click the thread of ``role`` stopped at ``point`` (and ``lock``), and
    wait until the page has the state after its step.  A click that sent no
    step (the page counts them) is made again: a card can move between the
    moment the browser measures it and the click."""
    selector = (f"[data-testid=thread][data-role={role}][data-state=stopped]"
                f"[data-point={point}]" + (f"[data-lock={lock}]" if lock else ""))
    part = page.locator("#step-part")
    for _ in range(3):
        page.wait_for_selector(selector)
        sent = int(part.get_attribute("data-requests") or 0)
        card = page.locator(selector).first
        thread = card.get_attribute("data-thread")
        card.get_by_test_id("go").click()
        if int(part.get_attribute("data-requests") or 0) > sent:
            assert part.get_attribute("data-last-go") == thread
            break
    else:
        raise AssertionError(f"three clicks on {selector} sent no step")
    settled(page, "#step-part", "busy", "false")


def through_submit(page):
    """A POST from the step panel, its producer let through to its notify."""
    page.click("#step-submit")
    go(page, "producer", "acquire", "jobs")
    go(page, "producer", "acquire", "pool")
    go(page, "producer", "notify")


STEP_EXTRA = ("--slow-motion", "0")   # in step mode, running a task is a step of its own


def test_by_clicks_two_workers_make_an_empty_wake_up_and_every_invariant_stays_ok(
        start_server, visit, tmp_path):
    page = visit.open(start_server(write_csv(tmp_path / "tiny.csv", TINY_ROWS), *STEP_EXTRA))
    expect(page.locator("[data-testid=lane][data-state=waiting]")).to_have_count(WORKERS)
    page.click("#step-toggle")
    settled(page, "#step-part", "busy", "false")
    expect(page.locator("#step-toggle")).to_have_attribute("aria-pressed", "true")
    page.wait_for_selector(f"[data-testid=thread][data-state=asleep] >> nth={WORKERS - 1}")
    page.select_option("#scenario-select", "empty-wakeup")
    expect(page.locator("#scenario-fit")).to_have_attribute("data-fit", "own")
    page.click("#scenario-start")
    settled(page, "#step-part", "busy", "false")
    expect(page.locator("#scenario-say")).to_contain_text("Started")

    through_submit(page)
    worker = page.locator("[data-testid=thread][data-role=worker][data-state=stopped]")
    expect(worker).to_have_attribute("data-point", "wake")
    code = worker.get_by_test_id("code")
    expect(code.locator(".cur")).to_contain_text("self._task_ready.wait()")
    go(page, "worker", "wake")
    go(page, "worker", "take")
    go(page, "worker", "run")           # runs job 1, stops before the Lock to count it done
    through_submit(page)                # job 2 wakes the other worker: it stops before the Lock
    expect(page.get_by_test_id("condition-task_ready")).to_have_text("nobody waits")
    go(page, "worker", "acquire")       # the busy worker gets the Lock first...
    expect(page.get_by_test_id("lock-pool")).to_contain_text("held by lestats-worker-")
    go(page, "worker", "done")
    go(page, "worker", "take")          # ...and takes job 2
    expect(page.get_by_test_id("counter-empty_wakeups")).to_have_text("0")
    go(page, "worker", "wake")          # the woken one re-checks: the queue is empty
    go(page, "worker", "wait")          # it waits again, letting go of the Lock

    expect(page.get_by_test_id("counter-empty_wakeups")).to_have_text("1")
    expect(page.locator("[data-testid=invariant][data-ok=true]")).to_have_count(6)
    expect(page.locator("#scenario-status")).to_have_attribute("data-reached", "true")
    expect(page.locator("#event-log li.empty")).to_have_count(1)
    expect(page.locator("#timeline")).to_have_attribute("data-empty", "1")
    page.click("#step-toggle")          # Run: every thread goes on
    expect(page.locator("#step-toggle")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#jobs tr[data-status=done]")).to_have_count(2)
    expect(page.locator("#unfinished")).to_have_text("0")
    assert visit.problems == []


def replay(page, steps):
    """Click "next step" until the solution's ``steps`` are done or one
    cannot happen; how many were done."""
    part = page.locator("#scenario-part")
    for _ in range(steps):
        page.click("#scenario-next")
        settled(page, "#scenario-part", "playing", "false")
        if part.get_attribute("data-ended") == "true":
            break
    return int(part.get_attribute("data-next"))


def test_replayed_on_the_if_not_while_pool_the_woken_worker_leaves_and_the_invariant_fails(
        start_server, visit, tmp_path):
    url = start_server(write_csv(tmp_path / "tiny.csv", TINY_ROWS), *STEP_EXTRA,
                       "--broken-pool-for-teaching", "if-not-while")
    page = visit.open(url)
    expect(page.locator("#variant")).to_contain_text("if-not-while")
    page.select_option("#scenario-select", "if-not-while")
    expect(page.locator("#scenario-fit")).to_have_attribute("data-fit", "own")
    steps = len(scenarios.find("if-not-while")["steps"])
    assert replay(page, steps) == steps
    expect(page.locator("#scenario-status")).to_have_attribute("data-reached", "true")
    expect(page.locator("[data-testid=thread][data-role=worker][data-state=exited]")).to_have_count(1)
    broken = page.locator("[data-testid=invariant][data-ok=false]")
    expect(broken).to_have_count(1)
    expect(broken).to_contain_text("a worker exits only when the pool is closed and the queue is empty")
    expect(page.locator("[data-testid=lane][data-state=exited]")).to_have_count(1)
    assert visit.problems == []


def test_on_the_correct_pool_a_job_accepted_after_shutdown_is_shown_unreachable(
        start_server, visit, tmp_path):
    page = visit.open(start_server(write_csv(tmp_path / "tiny.csv", TINY_ROWS), *STEP_EXTRA))
    page.select_option("#scenario-select", "check-outside-lock")
    expect(page.locator("#scenario-fit")).to_have_attribute("data-fit", "unreachable")
    expect(page.locator("#scenario-fit")).to_contain_text("checks _closed after taking the Lock")
    steps = len(scenarios.find("check-outside-lock")["steps"])
    assert replay(page, steps) == steps - 1   # the last one (notify) cannot happen
    status = page.locator("#scenario-status")
    expect(status).to_have_attribute("data-reached", "never")
    expect(status).to_contain_text("cannot be on the correct pool")
    answers = page.locator("#step-answers li")
    expect(answers.filter(has_text="POST refused: shutting down (HTTP 503)")).to_have_count(1)
    expect(answers.filter(has_text="graceful shutdown: done")).to_have_count(1)
    expect(page.locator("[data-testid=invariant][data-ok=false]")).to_have_count(0)
    page.click("#step-toggle")          # Run
    expect(page.locator("#drain-state")).to_contain_text("stopped")
    # The browser logs the refused POST's status; nothing else.
    assert [problem for problem in visit.problems if "503" not in problem] == []
