"""Run ``check --deep`` against lestats' own deliberately broken pools, and
against the small test servers that make the mistakes no pool makes.

    python3 tests/deep_validation.py [--runs 20] [--slow-motion 0,20] [TARGET ...]

A TARGET is a pool (``correct`` or a lab's name, served by lestats with
``--broken-pool-for-teaching NAME``), or ``server:MISTAKE`` (served by
``tests/course_server.py --mistake MISTAKE``; ``server:none`` is the
correct one).  By default: every pool, then every test server.  For each
pool, at each ``--slow-motion`` (0: lestats' own job times; 20: jobs of
20 ms, like a course skeleton computing with pandas), and for each test
server once, it starts a fresh server, runs every deep probe with
``--pid``, ``--results-dir`` and ``--deep-shutdown``, stops the server with
SIGKILL, and counts what each probe found.  One row per target: the runs,
and the runs in which each probe said FOUND, with one example.

The README's table of which labs show from outside is this script's output.
"""

import argparse
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from lestats.grade import deep                                      # noqa: E402
from lestats.grade.cases import SHIPPED_CASES, load_suites         # noqa: E402
from lestats.grade.client import Client                           # noqa: E402
from lestats.lab.broken.pools import FOR_THE_SERVER                # noqa: E402
from lestats.tools.soak import ServerProcess                       # noqa: E402

CORRECT = "correct"
COURSE_SERVER = REPO / "tests" / "course_server.py"
SERVERS = ("server:none", "server:unlocked-ids", "server:write-in-place",
           "server:status-after-queue")


def start(target, slow_motion, workdir):
    """A fresh server for ``target`` in ``workdir``."""
    results = workdir / "results"
    if target.startswith("server:"):
        return ServerProcess(None, results, workdir / "webserver.log",
                             ["--mistake", target[len("server:"):]],
                             entry=(str(COURSE_SERVER),), cwd=workdir)
    options = ["--workers", "2", "--slow-motion", str(slow_motion)]
    if target != CORRECT:
        options += ["--broken-pool-for-teaching", target]
    return ServerProcess(None, results, workdir / "webserver.log", options)


def one_run(target, slow_motion, suites, workdir):
    """The findings of one deep run against a fresh server."""
    results = workdir / "results"
    server = start(target, slow_motion, workdir)
    try:
        return deep.run(Client("127.0.0.1", server.port), suites, io.StringIO(),
                        pid=server.pid, results_dir=results, shutdown=True)
    finally:
        server.kill()


def main(argv=None):
    """Print the table; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--slow-motion", default="0,20",
                        help="comma-separated milliseconds (default 0,20)")
    parser.add_argument("targets", nargs="*", default=[CORRECT, *FOR_THE_SERVER, *SERVERS])
    args = parser.parse_args(argv)
    suites = load_suites(SHIPPED_CASES / "2025")
    print(f"{'target':26} {'ms':>3} {'runs':>4}  runs with FOUND, by probe", flush=True)
    for target in args.targets:
        speeds = [0] if target.startswith("server:") else args.slow_motion.split(",")
        for slow_motion in (int(ms) for ms in speeds):
            found = Counter()
            examples = {}
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="lestats-deep-") as tmp:
                    for finding in one_run(target, slow_motion, suites, Path(tmp)):
                        if finding.found:
                            found[finding.probe] += 1
                            examples.setdefault(finding.probe, finding.detail)
            counts = ", ".join(f"{probe} {count}/{args.runs}"
                               for probe, count in sorted(found.items())) or "none"
            print(f"{target:26} {slow_motion:3} {args.runs:4}  {counts}", flush=True)
            for probe, detail in sorted(examples.items()):
                print(f"{'':36}{probe}: {detail[:150]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
