"""Case folders in the course layout, read in the course's order.

A folder holds one directory per endpoint suite, each with ``input/in-N.json``
(the request body) and ``output/out-N.json`` (the expected ``data``).  Suites
come in alphabetical order (unittest runs ``test_<endpoint>`` methods so),
and the cases of a suite in the order the directory lists them
(``os.listdir``, as the course's checker reads them), not by number.

The published cases of both editions ship with lestats in ``data/cases``.
"""

import json
import os
from pathlib import Path
from typing import Any, List, NamedTuple

SHIPPED_CASES = Path(__file__).resolve().parents[2] / "data" / "cases"


class CaseError(Exception):
    """The cases cannot be read; the message names the file or folder."""


class Case(NamedTuple):
    """One case: its name (``<endpoint>/in-N``), request body and expected data."""

    name: str
    body: Any
    expected: Any


class Suite(NamedTuple):
    """One endpoint's cases, in the course's order."""

    endpoint: str
    cases: List[Case]


def load_suites(folder: Path) -> List[Suite]:
    """Every suite under ``folder``; CaseError if there is none or a case
    file cannot be read."""
    if not folder.is_dir():
        raise CaseError(f"{folder} is not a directory")
    suites = [load_suite(folder / name) for name in sorted(os.listdir(folder))
              if (folder / name / "input").is_dir()]
    if not suites:
        raise CaseError(f"no endpoint suites under {folder} (expected "
                        "<endpoint>/input/in-N.json and <endpoint>/output/out-N.json)")
    return suites


def load_suite(directory: Path) -> Suite:
    """The cases of one endpoint directory, in directory-listing order."""
    cases = []
    for name in os.listdir(directory / "input"):
        if not (name.startswith("in") and name.endswith(".json")):
            continue
        answer = directory / "output" / ("out" + name[len("in"):])
        cases.append(Case(f"{directory.name}/{name[:-len('.json')]}",
                          _read_json(directory / "input" / name), _read_json(answer)))
    return Suite(directory.name, cases)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaseError(f"cannot read case file {path}: {exc}") from None
