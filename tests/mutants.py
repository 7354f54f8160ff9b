"""Mutation testing by rule: apply synchronization mistakes mechanically to
every place in the server core where they can be made, one at a time, and
run the tests that execute each one.

    python3 tests/mutants.py                   # all of it
    python3 tests/mutants.py --list            # the mutants, nothing run
    python3 tests/mutants.py --module pool -k notify --jobs 2 --json out.json
    python3 tests/mutants.py --sample 20 --seed 7        # for CI

The server core is every ``lestats/**/*.py`` but the lab, the tools, the
grader and ``__init__``/``__main__``.  The operators (``--operator``) are:
``unlock`` (``with <lock>:`` -> ``if True:``), ``while-if`` (around a wait),
``wait-once`` (``wait_for(p, t)`` -> ``wait(t)``), ``drop-notify`` (also a
wrapper, a wake-up, an ``Event.set``), ``notify-one`` (``notify_all`` ->
``notify``), ``notify-early`` (swapped with the statement before it),
``narrow-except`` (``BaseException`` -> ``Exception``), ``drop-finally``,
``move-after`` / ``move-before`` (a statement out of a lock's block),
``drop-sync`` (fsync, fdatasync, sync), ``wait-forever`` (timeout dropped),
``wait-poll`` (``wait()`` -> ``wait(0.01)``), ``drop-release``,
``drop-acquire`` and ``drop-join``.  See tests/mutation/.

Each line says KILLED (by which test, how fast), HUNG (over its time
limit: killed too), SURVIVED, FLAKY-KILL (its test failed once but not
again: a survivor), NO-TESTS (no test executes the line), EQUIVALENT (listed
with its reason in tests/mutants_equivalent.txt) or ERROR (the tool could
not run it).  Then a table per module: score = killed / (mutants - equivalent).

Not a test module (pytest does not collect it): a full run takes the better
part of an hour.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation.main import main   # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    sys.exit(main())
