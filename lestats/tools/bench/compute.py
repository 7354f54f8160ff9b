"""What one job costs inside the server: the time to compute and encode
each statistic (in this process, without the answer cache) at the smallest
and largest size, and the memory finished jobs keep (in a child process,
``servers.serve_memory``)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ...data import DataIndex, load
from ...statistics import STATISTICS, prepare
from .servers import REPO


def _queries(index: DataIndex, name: str) -> List[Any]:
    queries = []
    for question in sorted(index.questions):
        body = {"question": question}
        if STATISTICS[name].needs_state:
            body["state"] = sorted(index.questions[question].state_means)[0]
        queries.append(prepare(index, name, body))
    return queries


def compute_per_job(indexes: Sequence[DataIndex], repeats: int,
                    rounds: int = 15) -> List[Dict[str, float]]:
    """Microseconds to compute and encode each statistic (no cache) over
    every question, for each index.  The indexes take turns, round after
    round, and each keeps its best round, so that a busy moment of the
    machine counts against neither."""
    timings: List[Dict[str, float]] = [{} for _ in indexes]
    for name in sorted(STATISTICS):
        work = [(index, _queries(index, name)) for index in indexes]
        best = [float("inf")] * len(indexes)
        for _ in range(rounds):
            for i, (index, queries) in enumerate(work):
                start = time.perf_counter()
                for _ in range(repeats):
                    for query in queries:
                        json.dumps(query.compute(index))
                best[i] = min(best[i], time.perf_counter() - start)
        for i, (_, queries) in enumerate(work):
            timings[i][name] = round(best[i] / (repeats * len(queries)) * 1e6, 1)
    return timings


def step_compute(small: Path, large: Optional[Path], repeats: int,
                 report: Dict[str, Any]) -> None:
    """Per-job compute at the smallest and largest size."""
    paths = [small] if large is None else [small, large]
    timings = compute_per_job([load(path) for path in paths], repeats,
                              rounds=3 if large is None else 15)
    result: Dict[str, Any] = {"small_us": timings[0]}
    if large is not None:
        result["large_us"] = timings[1]
        result["ratio"] = {name: round(timings[1][name] / timings[0][name], 2)
                           for name in timings[0]}
    report["compute_per_job"] = result


def step_memory(data: Path, jobs: int, workdir: Path, report: Dict[str, Any]) -> None:
    """The memory ``jobs`` finished jobs keep (their records), measured in a child."""
    result = subprocess.run(
        [sys.executable, "-m", "lestats", "bench", "--serve-memory", str(jobs), str(data),
         str(workdir / "results-memory")], cwd=REPO, capture_output=True, text=True,
        check=True)
    report["memory_per_job"] = json.loads(result.stdout)
