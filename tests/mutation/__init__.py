"""Mutation testing by rule for the server core (``python3 tests/mutants.py``).

* ``sites``: which modules are in scope, and the operators that find every
  place where one synchronization mistake can be made and make it (on the
  source text, so that line numbers and comments survive);
* ``coverage_map``: which tests execute each line (one run of the suite
  under coverage, with the subprocesses it starts), cached by the tree's hash;
* ``runner``: copies of the checkout, the baseline run, one mutant at a time
  with its tests and a hard time limit, and the second run of a kill;
* ``report``: the lines, the table per module and the JSON.

Not collected by pytest (no ``test_*.py`` here); ``tests/test_mutants.py``
checks the operators on small sources.
"""
