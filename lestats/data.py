"""Loading the survey CSV into an immutable index of means.

The CSV is read once, at start, in one streaming pass that keeps no rows:
each row adds its ``Data_Value`` to a running (sum, count) per question,
state, category and stratification.  Those sums are then added up per state
and per question, turned into means and frozen, so every statistic is a function of the
number of states and groups, never of the number of rows, and the index can
be shared by any number of threads without a lock.
"""

import csv
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Tuple

QUESTION = "Question"
STATE = "LocationDesc"
VALUE = "Data_Value"
CATEGORY = "StratificationCategory1"
STRATIFICATION = "Stratification1"
REQUIRED_COLUMNS = (QUESTION, STATE, VALUE, CATEGORY, STRATIFICATION)

COURSE_FILE_NAME = "nutrition_activity_obesity_usa_subset.csv"
DEMO_FILE = Path(__file__).resolve().parent.parent / "data" / "demo.csv"

Group = Tuple[str, str]
"""A (StratificationCategory1, Stratification1) pair."""


class DataError(Exception):
    """The data file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class QuestionMeans:
    """The means of one question.

    ``global_mean`` is over every row of the question; ``state_means`` maps a
    state to the mean of its rows; ``group_means`` maps a state to
    {(category, stratification): mean}, leaving out rows where either is empty.
    """

    global_mean: float
    state_means: Mapping[str, float]
    group_means: Mapping[str, Mapping[Group, float]]


@dataclass(frozen=True)
class DataIndex:
    """Everything the statistics need, built once and never changed.

    ``rows`` counts the data rows read; ``skipped`` the ones left out because
    their Data_Value was empty or not a finite number (or the row was short).
    """

    source: str
    questions: Mapping[str, QuestionMeans]
    rows: int
    skipped: int

    @property
    def is_demo(self) -> bool:
        """True when the index was loaded from the synthetic demo file."""
        return Path(self.source).resolve() == DEMO_FILE


def find_data_file(explicit: Optional[str], environ: Mapping[str, str],
                   cwd: Path) -> Path:
    """Pick the data file: --data, else $LESTATS_DATA, else the course file
    in the working directory, else the demo file shipped in data/."""
    if explicit:
        return Path(explicit)
    if environ.get("LESTATS_DATA"):
        return Path(environ["LESTATS_DATA"])
    course_file = cwd / COURSE_FILE_NAME
    if course_file.is_file():
        return course_file
    return DEMO_FILE


def load(path: "os.PathLike[str] | str") -> DataIndex:
    """Read the CSV at ``path`` into a DataIndex; raise DataError if unusable."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            return _index(path, csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _index(path: str, reader) -> DataIndex:
    header = next(reader, None) or []
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DataError(f"{path}: not a survey CSV: missing column(s) "
                        + ", ".join(missing))
    pick = operator.itemgetter(*(header.index(name) for name in REQUIRED_COLUMNS))
    isfinite = math.isfinite

    # (question, state, category, stratification) -> [sum, count] over the
    # rows with a value; _freeze adds these up per state and per question.
    sums: Dict[Tuple[str, str, str, str], List[float]] = {}
    rows = skipped = 0
    for row in reader:
        rows += 1
        try:
            question, state, raw, category, stratification = pick(row)
            value = float(raw)
        except (IndexError, ValueError):   # a short row, or no number
            skipped += 1
            continue
        if not isfinite(value):
            skipped += 1
            continue
        key = (question, state, category, stratification)
        acc = sums.get(key)
        if acc is None:
            sums[key] = [value, 1]
        else:
            acc[0] += value
            acc[1] += 1
    return DataIndex(path, _freeze(sums), rows, skipped)


def _freeze(sums: Dict[Tuple[str, str, str, str], List[float]]) -> Mapping[str, QuestionMeans]:
    totals: Dict[str, List[float]] = {}                  # question -> [sum, count]
    state_totals: Dict[Tuple[str, str], List[float]] = {}  # (question, state) -> [sum, count]
    groups: Dict[str, Dict[str, Dict[Group, float]]] = {}  # question -> state -> group -> mean
    for (question, state, category, strat), (total, count) in sums.items():
        for acc in (totals.setdefault(question, [0.0, 0]),
                    state_totals.setdefault((question, state), [0.0, 0])):
            acc[0] += total
            acc[1] += count
        if state and category and strat:
            groups.setdefault(question, {}).setdefault(state, {})[(category, strat)] = (
                total / count)
    states: Dict[str, Dict[str, float]] = {}               # question -> state -> mean
    for (question, state), (total, count) in state_totals.items():
        if state:
            states.setdefault(question, {})[state] = total / count
    frozen = {}
    for question, (total, count) in totals.items():
        if not question:
            continue
        by_state = groups.get(question, {})
        frozen[question] = QuestionMeans(
            global_mean=total / count,
            state_means=MappingProxyType(states.get(question, {})),
            group_means=MappingProxyType(
                {state: MappingProxyType(means) for state, means in by_state.items()}),
        )
    return MappingProxyType(frozen)
