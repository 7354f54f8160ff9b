"""The benchmark: lestats against the floors of its own stack, in one run.

    python3 -m lestats bench [--quick] [--json PATH] [--data CSV] [--cases DIR]
                             [--compare OTHER/run.py] [--callgrind] [--hostile]

Every server is a child process on loopback; every client runs in this
process.  The steps, in the order they run (each module says how it measures):

1. cycles (``cycles``): POST a statistic, GET until done, keep-alive, at 1,
   4 and 16 clients over a mix of all nine statistics, each server in turn
   for ``--rounds`` rounds (best of each), against two floors
   (``servers``): the bare floor, a ``ThreadingHTTPServer`` answering a
   constant (the fastest "submit + fetch" cycle of the stack), and the
   contract floor, the same server keeping the contract the naive way (four
   INFO log records through a plain RotatingFileHandler, the result file
   written, renamed and read back); lestats' ratio to each; lestats with
   ``--fsync``; job latency, from the client having its POST answer to the
   result file existing (CLOCK_MONOTONIC, shared by every process);
2. the syscall budget (``syscalls``): system calls per cycle at one client,
   by name and in all, of the floor, the contract floor and lestats, counted
   by ``strace -c -f`` attached after start-up (``/proc/PID/io`` without it);
3. the checker (``checker``): ``lestats check`` over both editions against
   lestats and against a server that computes in the request thread, in
   turns (best of each), and how many first polls found a job still
   running (the most in any round);
4. start-up (``startup``): process start to the first answer and peak RSS at
   19k, 200k and 1M rows, against the fair floor (imports ``http.server``,
   one ``csv.DictReader`` pass, one answer) and the bare ``csv.DictReader``
   pass (what the loader is built on), each in a fresh process;
5. compute per job (``compute``) for each statistic at 19k and 1M rows;
6. watching (``cycles``): cycles/s with no page open and with 10
   event-stream subscribers, and the checker with them;
7. memory (``compute``): what 200,000 finished jobs keep;
8. ``--compare RUN_PY`` (``cycles``): another checkout's cycles/s, turn about
   with this one and with the contract floor;
9. ``--callgrind`` (``callgrind``): instructions per cycle at one client.

``report`` prints the tables; ``--json PATH`` writes them as JSON too.
``--quick`` shortens every step to a few seconds in all (the test suite runs
it so that the benchmark cannot rot); its numbers are not for comparing.
``--hostile`` measures instead the server under hostile clients
(``tools.hostile``), as one table.  ``--serve...`` runs one of the
benchmark's child processes (``servers.child_main``).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import hostile
from ...data import COURSE_FILE_NAME, SHIPPED_DATA, load, open_csv
from ...grade.cases import SHIPPED_CASES
from .callgrind import instructions_per_cycle, step_instructions
from .checker import run_checker, step_checker
from .clients import (CONCURRENCY, ClientDied, CycleClient, measure_cycles, percentile,
                      requests_mix)
from .compute import step_compute, step_memory
from .cycles import step_compare, step_cycles, step_watching
from .report import print_report
from .servers import (FLOOR_GET, FLOOR_POST, ContractServer, FloorHandler, FloorServer,
                      SyncJobs, child_main, contract_answers)
from .startup import step_sizes
from .syscalls import step_syscalls

__all__ = ["CONCURRENCY", "ClientDied", "ContractServer", "CycleClient", "FLOOR_GET",
           "FLOOR_POST", "FloorHandler", "FloorServer", "SyncJobs", "contract_answers",
           "instructions_per_cycle", "main", "measure_cycles", "percentile", "print_report",
           "requests_mix", "run_checker"]


def plain_csv(data: Path, workdir: Path) -> Path:
    """``data``, or for a .gz file its plain copy in ``workdir``."""
    if data.suffix != ".gz":
        return data
    plain = workdir / COURSE_FILE_NAME
    with open_csv(data) as source, open(plain, "w", newline="", encoding="utf-8") as out:
        shutil.copyfileobj(source, out)
    return plain


def bench_hostile(data: Path, quick: bool, json_path: Optional[Path]) -> int:
    """The hostile mode: tools.hostile's measurements, as one table."""
    report = hostile.run_all(data, jobs=2_000 if quick else 200_000,
                             tricklers=100 if quick else 1000, seconds=2.0 if quick else 20.0)
    print(f"lestats under hostile clients ({os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}{', quick mode: not for comparing' if quick else ''})")
    hostile.print_table(report)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats bench",
                                     description="Measure lestats against its stack's floors.")
    parser.add_argument("--quick", action="store_true", help="a few seconds in all")
    parser.add_argument("--hostile", action="store_true",
                        help="instead, measure the server under hostile clients (one table)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--data", type=Path, default=SHIPPED_DATA,
                        help="the survey CSV (default: the shipped one; a .gz is unpacked"
                        " first, so that start-up is timed on a plain CSV)")
    parser.add_argument("--cases", type=Path, default=SHIPPED_CASES,
                        help="the checker's cases, one folder per edition (default: the"
                        " shipped ones)")
    parser.add_argument("--compare", type=Path, metavar="RUN_PY",
                        help="also measure another checkout's run.py, turn about with this one"
                        " and the contract floor")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per cycle under valgrind (slow; with"
                        " --compare, for both)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per concurrency level (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the steps that take turns, each server keeping its"
                        " best (default 3; 1 with --quick): more rounds, less noise")
    parser.add_argument("--syscall-cycles", type=int, default=2000,
                        help="cycles counted under strace (default 2000; 50 with --quick)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark (or, with --serve*, one of its child processes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    served = child_main(argv)
    if served is not None:
        return served
    args = parse_args(argv)
    if args.hostile:
        return bench_hostile(args.data, args.quick, args.json)
    quick = args.quick
    seconds = 0.3 if quick else args.seconds
    sizes = [0] if quick else [0, 200_000, 1_000_000]
    rounds = 1 if quick else max(1, args.rounds)
    report: Dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "quick": quick, "data": str(args.data)}
    cases = args.cases if args.cases.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="lestats-bench-") as tmp:
        workdir = Path(tmp)
        source = plain_csv(args.data, workdir)
        index = load(source)
        step_cycles(source, index, seconds, rounds, workdir, report)
        step_syscalls(source, index, 50 if quick else args.syscall_cycles, workdir, report)
        step_checker(source, cases, rounds, workdir, report)
        files = step_sizes(source, sizes, workdir, report)
        step_compute(files[0], files.get(sizes[-1]) if len(sizes) > 1 else None,
                     1 if quick else 3, report)
        step_watching(source, index, cases, seconds, rounds, workdir, report)
        step_memory(source, 2_000 if quick else 200_000, workdir, report)
        if args.compare:
            step_compare(source, index, args.compare, seconds, rounds, workdir, report)
        if args.callgrind:
            step_instructions(source, index, args.compare, workdir, report)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
