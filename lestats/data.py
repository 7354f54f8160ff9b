"""Loading the survey CSV into an immutable index of means.

The CSV is read once, at start, by ``csv.DictReader`` in one streaming pass
that keeps no rows: each row adds its ``Data_Value`` to a running (sum,
count) per question, state, category and stratification.  Those sums are
then added up per state and per question, turned into means and frozen, so
every statistic is a function of the number of states and groups, never of
the number of rows, and the index can be shared by any number of threads
without a lock.

The file is read in pieces of at most ``LINE_LIMIT`` characters, so a
huge line is refused (with its number) without ever being held whole.  A
quoted field may still span lines; the csv module's own field limit, left
as it is, bounds it.  A file whose name ends in ``.gz`` is read through
gzip, streaming, as the shipped data set is; a file may also lie inside a
zip archive, as the shipped data does in ``lestats.pyz``.

The shipped data set, ``data/nutrition_activity_obesity_usa_subset.csv.gz``,
is the course's CSV as rebuilt from the course's published outputs: its
rows are synthetic, but every question, state and group mean the course
asks for is the course file's (see the README's Data section).
"""

import contextlib
import csv
import errno
import io
import math
import operator
import os
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import IO, Dict, Iterator, List, Mapping, NamedTuple, Optional, TextIO, Tuple

from .files import open_regular

QUESTION = "Question"
STATE = "LocationDesc"
VALUE = "Data_Value"
CATEGORY = "StratificationCategory1"
STRATIFICATION = "Stratification1"
REQUIRED_COLUMNS = (QUESTION, STATE, VALUE, CATEGORY, STRATIFICATION)

COURSE_FILE_NAME = "nutrition_activity_obesity_usa_subset.csv"
SHIPPED_DATA = Path(__file__).resolve().parent.parent / "data" / (COURSE_FILE_NAME + ".gz")

LINE_LIMIT = 64 * 1024
"""Characters one physical line may hold (the course file's hold about 400)."""

# Values are summed scaled down by 2**-64 and the means scaled back up.  A
# power of two changes only the exponent, so for ordinary values every sum and
# mean is bit for bit the plain sum/count, while no sum of fewer than 2**64
# finite values can overflow.  (Only values below about 1e-289 lose digits.)
_SCALE_DOWN = 2.0 ** -64
_SCALE_UP = 2.0 ** 64

Group = Tuple[str, str]
"""A (StratificationCategory1, Stratification1) pair."""

Key = Tuple[str, str, str, str]
"""(question, state, category, stratification); a short row has None for a missing column."""


class DataError(Exception):
    """The data file cannot be used; the message names the file and the problem."""


class QuestionMeans(NamedTuple):
    """The means of one question.

    ``global_mean`` is over every row of the question; ``state_means`` maps a
    state to the mean of its rows; ``group_means`` maps a state to
    {(category, stratification): mean}, leaving out rows where either is empty.
    """

    global_mean: float
    state_means: Mapping[str, float]
    group_means: Mapping[str, Mapping[Group, float]]


class DataIndex(NamedTuple):
    """Everything the statistics need, built once and never changed.

    ``rows`` counts the data rows read; ``skipped`` the ones left out because
    their Data_Value was empty or not a finite number (or the row was short).
    """

    source: str
    questions: Mapping[str, QuestionMeans]
    rows: int
    skipped: int

    @property
    def is_shipped(self) -> bool:
        """True when the index was loaded from the data set shipped in data/."""
        return Path(self.source).resolve() == SHIPPED_DATA


def find_data_file(explicit: Optional[str], environ: Mapping[str, str],
                   cwd: Path) -> Path:
    """Pick the data file: --data, else $LESTATS_DATA, else the course file
    in the working directory, else the data set shipped in data/."""
    if explicit:
        return Path(explicit)
    if environ.get("LESTATS_DATA"):
        return Path(environ["LESTATS_DATA"])
    course_file = cwd / COURSE_FILE_NAME
    if course_file.is_file():
        return course_file
    return SHIPPED_DATA


def load(path: "os.PathLike[str] | str") -> DataIndex:
    """Read the CSV at ``path`` into a DataIndex; raise DataError if unusable."""
    path = os.fspath(path)
    try:
        with open_csv(path) as stream:
            return _index(path, stream)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


@contextlib.contextmanager
def open_csv(path: "os.PathLike[str] | str") -> Iterator[TextIO]:
    """``path`` opened as CSV text (UTF-8, a BOM skipped), streaming.  A
    name ending in ``.gz`` is read through gzip (a damaged file raises
    OSError, EOFError or zlib.error as it is read); a path that runs through a zip
    archive (lestats.pyz/data/... when lestats runs from lestats.pyz) is
    read from the archive."""
    path = os.fspath(path)
    try:
        raw: IO[bytes] = open(_regular_file(path), "rb")   # pylint: disable=consider-using-with
    except NotADirectoryError:
        with _archive_member(path) as member:
            with _text(member, path) as stream:
                yield stream
        return
    with raw, _text(raw, path) as stream:
        yield stream


@contextlib.contextmanager
def _text(raw: IO[bytes], path: str) -> Iterator[TextIO]:
    """The CSV text of the bytes ``raw`` holds, gunzipped if ``path`` says so."""
    if path.endswith(".gz"):
        # Imported here: only a .gz file needs it, and it adds to start-up.
        import gzip   # pylint: disable=import-outside-toplevel
        raw = gzip.GzipFile(filename=path, mode="rb", fileobj=raw)
    with io.TextIOWrapper(raw, newline="", encoding="utf-8-sig") as stream:
        yield stream


def _regular_file(path: str) -> int:
    """``path`` open for reading if it is a regular file; DataError if it
    is not (a FIFO would hang start-up, a device would be read for ever)."""
    try:
        return open_regular(path, os.O_RDONLY, follow=True)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        raise DataError(f"{path}: not a regular file (a FIFO, a device or a directory"
                        " is not read)") from None


@contextlib.contextmanager
def _archive_member(path: str) -> Iterator[IO[bytes]]:
    """The member of the zip archive that ``path`` runs through; OSError if
    no part of ``path`` is a zip file holding it."""
    # Imported here, as only lestats.pyz needs it: with bz2 and lzma it would
    # add to every start-up.
    import zipfile   # pylint: disable=import-outside-toplevel
    archive, names = path, []
    while not os.path.isfile(archive):
        archive, name = os.path.split(archive)
        if not name:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        names.insert(0, name)
    try:
        with zipfile.ZipFile(archive) as bundle:
            try:
                member = bundle.getinfo("/".join(names))
            except KeyError:
                raise FileNotFoundError(errno.ENOENT, f"not in the archive {archive}",
                                        path) from None
            with bundle.open(member) as raw:
                yield raw
    except zipfile.BadZipFile as exc:
        raise OSError(f"{archive}: {exc}") from exc


def _physical_lines(stream: TextIO, path: str) -> Iterator[str]:
    """The lines of ``stream``, each read in a bounded piece; DataError on a
    line over LINE_LIMIT characters, which is never read whole."""
    readline = stream.readline
    number = 0
    line = readline(LINE_LIMIT + 1)
    while line:
        number += 1
        if len(line) > LINE_LIMIT:
            raise DataError(f"{path}: line {number} is longer than {LINE_LIMIT:,} "
                            "characters: not a survey CSV")
        yield line
        line = readline(LINE_LIMIT + 1)


def _index(path: str, stream: TextIO) -> DataIndex:
    reader = csv.DictReader(_physical_lines(stream, path))
    missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"{path}: not a survey CSV: missing column(s) "
                        + ", ".join(missing))
    try:
        sums, rows, skipped = _sum_rows(reader)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.reader.line_num}: {exc}") from exc
    for key in [key for key in sums if None in key]:   # short rows
        skipped += sums.pop(key)[1]
    if not any(question and state for question, state, _, _ in sums):
        raise DataError(f"{path}: no usable rows (none has a Question, a LocationDesc "
                        "and a number in Data_Value)")
    return DataIndex(path, _freeze(sums), rows, skipped)


def _sum_rows(reader: csv.DictReader) -> Tuple[Dict[Key, List[float]], int, int]:
    """({key: [scaled sum, count]}, rows read, rows skipped) over the rows
    with a finite Data_Value; a short row is under a key holding None."""
    key_of = operator.itemgetter(QUESTION, STATE, CATEGORY, STRATIFICATION)
    isfinite = math.isfinite
    scale_down = _SCALE_DOWN
    sums: Dict[Key, List[float]] = {}
    rows = skipped = 0
    for row in reader:                      # the hot loop: one pass, no row kept
        rows += 1
        try:
            value = float(row[VALUE]) * scale_down
        except (TypeError, ValueError):     # no number (None: the row is short)
            skipped += 1
            continue
        if not isfinite(value):
            skipped += 1
            continue
        key = key_of(row)
        acc = sums.get(key)
        if acc is None:
            sums[key] = [value, 1]
        else:
            acc[0] += value
            acc[1] += 1
    return sums, rows, skipped


def _freeze(sums: Dict[Key, List[float]]) -> Mapping[str, QuestionMeans]:
    # The sums stay scaled down (see _SCALE_DOWN) until _mean.
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
                _mean(total, count))
    states: Dict[str, Dict[str, float]] = {}               # question -> state -> mean
    for (question, state), (total, count) in state_totals.items():
        if state:
            states.setdefault(question, {})[state] = _mean(total, count)
    frozen = {}
    for question, (total, count) in totals.items():
        if not question:
            continue
        by_state = groups.get(question, {})
        frozen[question] = QuestionMeans(
            global_mean=_mean(total, count),
            state_means=MappingProxyType(states.get(question, {})),
            group_means=MappingProxyType(
                {state: MappingProxyType(means) for state, means in by_state.items()}),
        )
    return MappingProxyType(frozen)


def _mean(scaled_total: float, count: int) -> float:
    """The mean of ``count`` values whose sum, scaled down, is ``scaled_total``."""
    return scaled_total / count * _SCALE_UP
