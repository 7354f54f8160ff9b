"""The live page at /, in a real browser against a real server process.

The page shows one lane per worker; jobs submitted from it go queued ->
running -> done in the lanes and the jobs table while the counters move; a
graceful shutdown from it ends with the drain (closed, nothing unfinished,
every worker exited).  It fetches nothing from elsewhere, shows data as text,
fits 1366 px, and logs no error.

Headless Chromium (Debian's /usr/bin/chromium) driven by the ``playwright``
package; skipped when either is missing.  Every wait is one of playwright's
expectations, bounded by a timeout.
"""

import re
from pathlib import Path

import pytest

from lestats.tools.soak import ServerProcess
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

    def start(csv_path):
        server = ServerProcess(csv_path, tmp_path / f"results{len(servers)}",
                               tmp_path / f"webserver{len(servers)}.log",
                               extra=["--slow-motion", "200", "--workers", str(WORKERS)])
        servers.append(server)
        return f"http://127.0.0.1:{server.port}/"

    yield start
    for server in servers:
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

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#shutdown-button")
    expect(page.locator("#closed")).to_have_text("yes")
    expect(page.locator("#event-log li[data-type=drain_done]")).to_have_count(1)
    expect(page.locator("#drain-state")).to_contain_text("drained")
    expect(page.locator("#unfinished")).to_have_text("0")
    expect(page.locator("[data-testid=lane][data-state=exited]")).to_have_count(WORKERS)
    page.screenshot(path=str(tmp_path / "live-page.png"), full_page=True)
    assert visit.problems == []


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
