"""The course's pylint step: the app's pylint rating, when it can be had.

The course runs pylint on the app and takes points off below 8/10 (how many
is the edition's: see ``course``).  Here pylint runs only when it is
importable by this Python and ``--app DIR`` names the app's package
folder; it runs from the folder's parent, so a ``.pylintrc`` there applies
as it would in the course's run.  Otherwise nothing is evaluated, and the
report says so.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

PYLINT_TIMEOUT = 600.0
_RATING = re.compile(r"rated at (-?\d+(?:\.\d+)?)/10")


class Quality(NamedTuple):
    """pylint's rating of the app (None: not evaluated) and how it was had."""

    score: Optional[float]
    note: str


def evaluate(app: Optional[Path]) -> Quality:
    """Run pylint on ``app``, when possible."""
    if app is None:
        return Quality(None, "not evaluated (no --app DIR)")
    if not app.is_dir():
        return Quality(None, f"not evaluated: {app} is not a directory")
    if importlib.util.find_spec("pylint") is None:
        return Quality(None, f"not evaluated: pylint is not installed for {sys.executable}")
    app = app.resolve()
    try:
        run = subprocess.run([sys.executable, "-m", "pylint", app.name], cwd=app.parent,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=PYLINT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return Quality(None, f"not evaluated: pylint ran over {PYLINT_TIMEOUT:g} s")
    found = _RATING.search(run.stdout)
    if found is None:
        last = (run.stderr.strip() or run.stdout.strip() or "no output").splitlines()[-1]
        return Quality(None, f"not evaluated: pylint gave no rating (exit {run.returncode}:"
                             f" {last[:100]})")
    return Quality(float(found.group(1)), f"{float(found.group(1)):.2f}/10 for {app}")
