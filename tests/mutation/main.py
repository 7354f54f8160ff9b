"""The command line of ``python3 tests/mutants.py``."""

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import report
from .coverage_map import load_or_build
from .runner import (EQUIVALENT, FLAKY, NO_TESTS, SURVIVED, Outcome, Worker, run_all,
                     run_baseline, stop_all)
from .sites import OPERATORS, Mutant, all_mutants, module_name, scope

REPO = Path(__file__).resolve().parents[2]
EQUIVALENTS = REPO / "tests" / "mutants_equivalent.txt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lestats-mutants"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The options (see the module docstring of tests/mutants.py)."""
    parser = argparse.ArgumentParser(
        prog="python3 tests/mutants.py",
        description="Apply synchronization mistakes by rule to the server core, one at a"
                    " time, and run the tests that execute each.")
    add = parser.add_argument
    add("-k", dest="only", action="append", default=[], metavar="SUBSTRING",
        help="only the mutants whose id contains SUBSTRING (repeatable: any)")
    add("--module", action="append", default=[], metavar="NAME",
        help="only this module (pool, storage, watch.events...; repeatable)")
    add("--operator", action="append", default=[], choices=sorted(OPERATORS),
        help="only this operator (repeatable)")
    add("--sample", type=int, metavar="N", help="a random sample of N mutants")
    add("--seed", type=int, default=0, metavar="S", help="the sample's seed (default 0)")
    add("--jobs", type=int, default=1, metavar="J", help="mutants run at once (default 1)")
    add("--json", type=Path, metavar="PATH", help="write the results there")
    add("--list", action="store_true", help="list the mutants and run nothing")
    add("--factor", type=float, default=3.0,
        help="time limit: FACTOR times the baseline time of the tests (default 3)")
    add("--margin", type=float, default=20.0,
        help="time limit: plus MARGIN seconds (default 20)")
    add("--equivalents", type=Path, default=EQUIVALENTS, metavar="PATH",
        help="the list of equivalent mutants (default tests/mutants_equivalent.txt)")
    add("--cache-dir", type=Path, default=CACHE, help=f"the coverage map's cache ({CACHE})")
    add("--refresh-coverage", action="store_true", help="rebuild the coverage map")
    return parser.parse_args(argv)


def load_equivalents(path: Path) -> Dict[str, str]:
    """``id reason`` per line (``#`` starts a comment): id -> reason."""
    found: Dict[str, str] = {}
    if not path.is_file():
        return found
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        mutant_id, _, reason = text.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {mutant_id} has no reason")
        found[mutant_id] = reason.strip()
    return found


def choose(mutants: List[Mutant], args: argparse.Namespace) -> List[Mutant]:
    """The mutants the options select."""
    modules = {name if "/" not in name else module_name(name) for name in args.module}
    chosen = [m for m in mutants
              if (not modules or m.module in modules)
              and (not args.operator or m.operator in args.operator)
              and (not args.only or any(part in m.id for part in args.only))]
    if args.sample is not None and args.sample < len(chosen):
        chosen = sorted(random.Random(args.seed).sample(chosen, args.sample),
                        key=mutants.index)
    return chosen


def say(text: str = "") -> None:
    """Print at once (the run is long; its lines are watched)."""
    print(text, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool; exit status 0 (the score is a report, not a verdict)."""
    args = parse_args(argv)
    began = time.monotonic()
    everything = all_mutants(REPO)
    equivalents = load_equivalents(args.equivalents)
    stale = sorted(set(equivalents) - {m.id for m in everything})
    for mutant_id in stale:
        say(f"warning: {args.equivalents.name} lists {mutant_id}, which is no mutant any more")
    chosen = choose(everything, args)
    modules = [module_name(path) for path in scope(REPO)]
    if args.list:
        for mutant in chosen:
            say(f"{mutant.id}  {mutant.path}:{mutant.line}  {mutant.code}")
        say(f"{len(chosen)} mutants")
        return 0
    say(f"{len(chosen)} mutants of {len(everything)}, {len(modules)} modules, "
        f"{args.jobs} at a time")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        outcomes, notes = run(chosen, equivalents, args)
    finally:
        stop_all()
    seconds = time.monotonic() - began
    finish(outcomes, modules, seconds, notes, args)
    return 0


def run(chosen: List[Mutant], equivalents: Dict[str, str],
        args: argparse.Namespace) -> Tuple[List[Outcome], Dict[str, object]]:
    """The coverage map, the baseline, then every mutant."""
    mapping = load_or_build(REPO, args.cache_dir, args.refresh_coverage, log=say)
    outcomes: List[Outcome] = []
    selected: List[Tuple[Mutant, set]] = []
    for mutant in chosen:
        tests = mapping.tests_for(mutant.path, mutant.lines)
        if mutant.id in equivalents:
            outcomes.append(Outcome(mutant, EQUIVALENT, note=equivalents[mutant.id]))
        elif not tests:
            outcomes.append(Outcome(mutant, NO_TESTS))
        else:
            selected.append((mutant, tests))
    for outcome in outcomes:
        say(report.line(outcome))
    notes: Dict[str, object] = {}
    if not selected:
        return outcomes, notes
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        workers = [Worker(REPO, Path(tmp), n, args.factor, args.margin)
                   for n in range(max(1, args.jobs))]
        union = set().union(*(tests for _, tests in selected))
        baseline = run_baseline(workers[0].copy, workers[0].env, union)
        say(f"baseline: {len(union)} tests in {baseline.seconds:.0f} s on the unmutated copy")
        if baseline.failed:
            say(f"baseline: left out, failed on the unmutated copy: "
                f"{', '.join(sorted(baseline.failed))}")
        notes["baseline_seconds"] = round(baseline.seconds, 1)
        notes["baseline_failed"] = sorted(baseline.failed)
        jobs = []
        for mutant, tests in selected:
            passing = baseline.passing(tests, mutant.module)
            if passing:
                jobs.append((mutant, passing))
            else:
                outcome = Outcome(mutant, NO_TESTS, note="its tests fail on the unmutated copy")
                outcomes.append(outcome)
                say(report.line(outcome))
        done = [0]

        def progress(outcome: Outcome) -> None:
            done[0] += 1
            say(f"[{done[0]}/{len(jobs)}] {report.line(outcome)}")

        outcomes.extend(run_all(jobs, workers, baseline, progress))
    return outcomes, notes


def finish(outcomes: List[Outcome], modules: List[str], seconds: float,
           notes: Dict[str, object], args: argparse.Namespace) -> None:
    """The survivors again, the table, the time and the JSON."""
    left = sorted((o for o in outcomes if o.status in (SURVIVED, FLAKY, NO_TESTS)),
                  key=lambda o: o.mutant.id)
    say()
    say(f"== {len(left)} not killed")
    for outcome in left:
        say(report.line(outcome))
    shown = [m for m in modules if any(o.mutant.module == m for o in outcomes)] or modules
    say()
    say(report.table(outcomes, shown))
    say(f"total run time: {seconds:.0f} s ({seconds / 60:.1f} min), {args.jobs} job(s)")
    if args.json:
        report.write_json(args.json, outcomes, shown, seconds, notes)
        say(f"results written to {args.json}")
