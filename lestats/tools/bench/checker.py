"""The checker step: ``lestats check`` over both editions of the course's
cases, against lestats and against a server that computes each job in the
request thread before answering its POST (its floor: lestats' HTTP server
and log, no pool, no journal), and how many first polls found a job still
running."""

import io
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...grade.check import Outcome, check_edition
from ...grade.client import Client
from ...grade.course import EDITIONS
from ..soak import ServerProcess
from .servers import Child


def run_checker(cases: Path, port: int) -> Tuple[bool, List[Outcome]]:
    """``lestats check`` over each edition under ``cases`` (its rules, no report):
    (all passed, every outcome)."""
    results = [check_edition(Client("127.0.0.1", port), cases / name, EDITIONS[name],
                             io.StringIO()) for name in sorted(EDITIONS) if (cases / name).is_dir()]
    return (all(result.all_passed for result in results),
            [outcome for result in results for outcome in result.outcomes])


def step_checker(data: Path, cases: Optional[Path], rounds: int, workdir: Path,
                 report: Dict[str, Any]) -> None:
    """The checker over both editions, against lestats and the synchronous
    server taking turns for ``rounds`` rounds (fresh processes each time),
    each keeping its best."""
    if cases is None:
        report["checker"] = "skipped: no checker cases (see --cases)"
        return

    def run_all(port: int) -> Tuple[float, int, int, bool]:
        start = time.monotonic()
        passed, outcomes = run_checker(cases, port)
        running = sum(outcome.first_poll_running for outcome in outcomes)
        return time.monotonic() - start, running, len(outcomes), passed

    seconds = sync_seconds = float("inf")
    running = count = 0
    passed = True
    for round_number in range(rounds):
        server = ServerProcess(data, workdir / f"results-checker-{round_number}",
                               workdir / "checker.log")
        try:
            took, first_running, count, lestats_passed = run_all(server.port)
        finally:
            server.stop()
        seconds, running = min(seconds, took), max(running, first_running)
        sync = Child("sync", str(data), str(workdir / f"results-sync-{round_number}"),
                     str(workdir / "sync.log"))
        try:
            took, _, _, sync_passed = run_all(sync.port)
        finally:
            sync.stop()
        sync_seconds = min(sync_seconds, took)
        passed = passed and lestats_passed and sync_passed
    report["checker"] = {
        "cases": count, "all_passed": passed, "rounds": rounds,
        "lestats_s": round(seconds, 3), "synchronous_s": round(sync_seconds, 3),
        "ratio": round(seconds / sync_seconds, 2),
        "first_polls_running": running,
        "first_polls_running_pct": round(100 * running / max(1, count), 2)}
