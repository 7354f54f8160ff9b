"""What the tool prints and writes: a line per mutant, a table per module, JSON."""

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

from .runner import EQUIVALENT, ERROR, FLAKY, HUNG, KILLED, NO_TESTS, SURVIVED, Outcome

COLUMNS = ("mutants", "equivalent", "killed", "hung", "survived", "flaky", "no-tests",
           "error", "score")


def line(outcome: Outcome) -> str:
    """One mutant's line: status, id, place, operator, then what happened
    (and, unless it was killed, the mutated code)."""
    mutant = outcome.mutant
    if outcome.status == KILLED:
        what = f"by {outcome.test} in {outcome.seconds:.1f} s"
    elif outcome.status == HUNG:
        what = (f"{outcome.test} over the per-test timeout" if outcome.test
                else f"over its limit of {outcome.limit:.0f} s")
    elif outcome.status == FLAKY:
        what = f"{outcome.note}; no other test failed | {mutant.code}"
    elif outcome.status == SURVIVED:
        what = f"{outcome.tests} tests passed in {outcome.seconds:.1f} s | {mutant.code}"
    elif outcome.status == EQUIVALENT:
        what = outcome.note
    elif outcome.status == NO_TESTS:
        what = f"no test executes line(s) {_ranges(mutant.lines)} | {mutant.code}"
    else:
        what = outcome.note
    return (f"{outcome.status:10} {mutant.id}  {mutant.path}:{mutant.line}  "
            f"{mutant.operator}  {what}")


def _ranges(lines: Sequence[int]) -> str:
    ordered = sorted(set(lines))
    return f"{ordered[0]}-{ordered[-1]}" if len(ordered) > 1 else str(ordered[0])


def table(outcomes: List[Outcome], modules: Sequence[str]) -> str:
    """Mutants, equivalent, killed (HUNG included), survived (FLAKY-KILL and
    NO-TESTS included)... and the score killed / (mutants - equivalent), per
    module and in all."""
    rows = [("module", *COLUMNS)]
    for module in [*modules, "all"]:
        mine = [o for o in outcomes if module == "all" or o.mutant.module == module]
        rows.append((module, *_counts(mine)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths)))
                     for row in rows)


def counts(outcomes: List[Outcome]) -> Dict[str, int]:
    """How many mutants ended in each status."""
    return Counter(outcome.status for outcome in outcomes)


def _counts(outcomes: List[Outcome]) -> List[str]:
    by = counts(outcomes)
    killed = by[KILLED] + by[HUNG]
    survived = by[SURVIVED] + by[FLAKY] + by[NO_TESTS]
    scored = len(outcomes) - by[EQUIVALENT]
    score = f"{100 * killed / scored:.0f}%" if scored else "-"
    return [str(n) for n in (len(outcomes), by[EQUIVALENT], killed, by[HUNG], survived,
                             by[FLAKY], by[NO_TESTS], by[ERROR])] + [score]


def write_json(path: Path, outcomes: List[Outcome], modules: Sequence[str],
               seconds: float, notes: Dict[str, object]) -> None:
    """The results, one record per mutant, with the totals per module."""
    records = [{
        "id": o.mutant.id, "path": o.mutant.path, "line": o.mutant.line,
        "lines": list(o.mutant.lines), "module": o.mutant.module,
        "operator": o.mutant.operator, "before": o.mutant.before, "after": o.mutant.after,
        "status": o.status, "test": o.test, "seconds": round(o.seconds, 2),
        "tests": o.tests, "limit": round(o.limit, 1), "note": o.note,
    } for o in sorted(outcomes, key=lambda o: o.mutant.id)]
    modules_summary = {}
    for module in [*modules, "all"]:
        mine = [o for o in outcomes if module == "all" or o.mutant.module == module]
        modules_summary[module] = dict(zip(COLUMNS, _counts(mine)))
    path.write_text(json.dumps({"seconds": round(seconds, 1), "modules": modules_summary,
                                "notes": notes, "mutants": records}, indent=1) + "\n")
