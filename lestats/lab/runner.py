"""``python3 -m lestats.lab``: list the labs, run one, or run them all.

The code shown is read from the source with ``inspect`` when the lab runs,
and so is the place in lestats where it is done right: neither can drift
from the code.
"""

import argparse
import difflib
import inspect
import os
import sys
import textwrap
import time
from typing import List, Optional, Sequence, TextIO, Tuple

from .labs import LABS, Lab, Side, find

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH = 88
TABLE_WIDTH = 100   # columns the --all table fits in
NARROWEST = 12      # a wrapped column is never narrower
SHOWN = "shown"

Numbered = List[Tuple[int, str]]   # (line number in its file, text)


def where(code: object) -> str:
    """The file of ``code``, relative to the checkout."""
    return os.path.relpath(inspect.getsourcefile(code) or "?", ROOT)


def source(code: object) -> Numbered:
    """The lines of a function, dedented, numbered, without its docstring."""
    lines, first = inspect.getsourcelines(code)
    numbered = list(enumerate(textwrap.dedent("".join(lines)).splitlines(), first))
    body = next(i for i, (_, text) in enumerate(numbered) if text.rstrip().endswith(":")) + 1
    if body < len(numbered) and numbered[body][1].strip().startswith('"""'):
        end = body
        while numbered[end][1].count('"""') < (2 if end == body else 1):
            end += 1
        del numbered[body:end + 1]
    return numbered


def right_line(lab: Lab) -> Tuple[str, int, str]:
    """Where the correct code does it right: (file, line number, the line)."""
    number, text = next((number, text) for number, text in source(lab.correct)
                        if lab.right in text)
    return where(lab.correct), number, text.strip()


def verdict(broken: Side, correct: Side) -> str:
    """SHOWN when the broken code shows the symptom and the correct code does not."""
    if not broken.symptom:
        return "NOT SHOWN"
    return "CORRECT CODE FAILED" if correct.symptom else SHOWN


def _label(code: object) -> str:
    return f"{where(code)}:{inspect.getsourcelines(code)[1]} {code.__qualname__}"


def code_shown(lab: Lab) -> List[str]:
    """The broken code against the correct one: a diff when the broken one
    overrides the correct method, else each (the correct one cut to
    ``lab.excerpt`` around the right line)."""
    broken, correct = source(lab.broken), source(lab.correct)
    if lab.broken.__name__ == lab.correct.__name__:
        return list(difflib.unified_diff(
            [text for _, text in correct], [text for _, text in broken],
            f"correct: {_label(lab.correct)}",
            f"BROKEN (the + lines are the mistake): {_label(lab.broken)}",
            n=2, lineterm=""))
    lines = ""
    if lab.excerpt is not None:
        at = next(i for i, (_, text) in enumerate(correct) if lab.right in text)
        correct = correct[max(0, at - lab.excerpt[0]):at + lab.excerpt[1] + 1]
        lines = f", lines {correct[0][0]}-{correct[-1][0]}"
    return ([f"BROKEN, {_label(lab.broken)}:"] + [f"  {text}" for _, text in broken]
            + [f"correct, {_label(lab.correct)}{lines}:"] + [f"  {text}" for _, text in correct])


def show(lab: Lab, out: TextIO) -> bool:
    """Run ``lab`` and tell it all; True if its symptom showed as it should."""
    print(f"{lab.name}: {lab.summary}\n", file=out)
    print(textwrap.fill(lab.mistake, WIDTH, initial_indent="  ", subsequent_indent="  "),
          file=out)
    print("\nThe code:", file=out)
    for line in code_shown(lab):
        print(f"    {line}", file=out)
    broken, correct = lab.run()
    result = verdict(broken, correct)
    print(f"\nMeasured, same scenario, same run: {lab.measured}", file=out)
    print(f"    broken   {broken.text}\n    correct  {correct.text}", file=out)
    explained = (": the broken code shows the symptom, the correct code does not"
                 if result == SHOWN else "")
    print(f"    verdict  {result}{explained}", file=out)
    path, number, text = right_line(lab)
    print(f"\nDone right at {path}:{number}:  {text}", file=out)
    return result == SHOWN


def table(out: TextIO) -> bool:
    """Run every lab and print one table; True if every symptom showed."""
    began = time.monotonic()
    rows = [("lab", "measured", "broken", "correct", "verdict")]
    for lab in LABS:
        broken, correct = lab.run()
        rows.append((lab.name, lab.measured, broken.text, correct.text,
                     verdict(broken, correct)))
    for line in fitted(rows, TABLE_WIDTH):
        print(line, file=out)
    print(f"\n{len(LABS)} labs in {time.monotonic() - began:.1f} s", file=out)
    return all(row[4] == SHOWN for row in rows[1:])


def fitted(rows: List[Tuple[str, ...]], width: int) -> List[str]:
    """``rows`` as a table at most ``width`` columns wide: the first and the
    last column as they are, the widest of the others narrowed (their cells
    wrapped onto lines of their own) until the table fits."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    room = width - widths[0] - max(len(row[-1]) for row in rows) - 2 * (len(widths))
    while sum(widths[1:]) > room and max(widths[1:]) > NARROWEST:
        widest = widths.index(max(widths[1:]), 1)
        widths[widest] -= 1
    lines = []
    for row in rows:
        cells = [[row[0]]] + [textwrap.wrap(cell, widths[column], break_on_hyphens=False) or [""]
                              for column, cell in enumerate(row[1:-1], 1)]
        for depth in range(max(len(cell) for cell in cells)):
            parts = [(cell[depth] if depth < len(cell) else "").ljust(widths[column])
                     for column, cell in enumerate(cells)]
            lines.append("  ".join(parts + [row[-1] if depth == 0 else ""]).rstrip())
    return lines


def listing(out: TextIO) -> None:
    """The labs, one line each."""
    width = max(len(lab.name) for lab in LABS)
    for lab in LABS:
        print(f"{lab.name.ljust(width)}  {lab.summary}", file=out)
    print("\npython3 -m lestats.lab NAME runs one beside the correct code;"
          " --all runs every one.", file=out)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """NAME or --all (or nothing: the list)."""
    parser = argparse.ArgumentParser(
        prog="python3 -m lestats.lab",
        description="The bug lab: common mistakes of thread pools and job servers,"
        " each deliberately made in a small broken variant and run beside the"
        " correct lestats code on the same forced interleaving.")
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="the lab to run (without NAME or --all: the list)")
    parser.add_argument("--all", action="store_true", help="run every lab; print one table")
    args = parser.parse_args(argv)
    if args.name is not None and find(args.name) is None:
        parser.error(f"no lab called {args.name!r}; the labs: "
                     + ", ".join(lab.name for lab in LABS))
    if args.name is not None and args.all:
        parser.error("give NAME or --all, not both")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """List, run one lab or all; 0 when every lab run showed its symptom.
    A reader that goes away (``| head``) ends it quietly, status 1."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        status = run(args)
        sys.stdout.flush()   # here, where a reader gone away is caught
        return status
    except BrokenPipeError:
        # Nothing more can be shown; the interpreter's own last flush of
        # stdout must not fail again, so stdout goes nowhere from now on.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def run(args: argparse.Namespace) -> int:
    """What main does, once the arguments are read."""
    if args.all:
        return 0 if table(sys.stdout) else 1
    lab = find(args.name) if args.name else None
    if lab is None:
        listing(sys.stdout)
        return 0
    return 0 if show(lab, sys.stdout) else 1
