"""The demo generator writes synthetic data of any size, the same bytes for
the same seed, covering every question, state and category, with the
course file's header.  (The server ships the rebuilt course data instead.)"""

import io

from lestats.data import load, open_csv
from lestats.tools.demo import CATEGORIES, HEADER, LOCATIONS, QUESTIONS, generate, main
from lestats.statistics import HIGHEST_IS_BEST, LOWEST_IS_BEST


def test_the_same_seed_writes_the_same_bytes():
    first, second = io.StringIO(newline=""), io.StringIO(newline="")
    generate(first)
    generate(second)
    assert first.getvalue() == second.getvalue()


def test_the_demo_covers_every_question_state_and_category(tmp_path):
    path = tmp_path / "demo.csv"
    assert main(["--out", str(path)]) == 0
    index = load(path)
    assert set(index.questions) == LOWEST_IS_BEST | HIGHEST_IS_BEST
    assert {q for _, q, _, _ in QUESTIONS} == set(index.questions)
    for means in index.questions.values():
        assert set(means.state_means) == {name for name, _, _ in LOCATIONS}
        categories = {category for groups in means.group_means.values() for category, _ in groups}
        assert categories == set(CATEGORIES)
    assert index.skipped > 0   # some rows carry the "~" footnote and no value


def test_the_header_is_the_course_files(checker_csv):
    with open_csv(checker_csv) as course:
        assert course.readline().rstrip("\n").split(",") == HEADER


def test_more_rows_on_request_and_the_same_rows_for_the_same_seed(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["--rows", "5000", "--seed", "7", "--out", str(first)]) == 0
    main(["--rows", "5000", "--seed", "7", "--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    assert load(first).rows == 5000


def test_rows_drawn_from_the_shipped_gzip_keep_its_groups(tmp_path, checker_csv, checker_index):
    bigger = tmp_path / "big.csv"
    assert main(["--from", str(checker_csv), "--rows", "5000", "--out", str(bigger)]) == 0
    index = load(bigger)
    assert index.rows == 5000 and set(index.questions) == set(checker_index.questions)
