"""The shipped demo data is what the seeded generator makes, and covers
every question, state and category."""

import io

from lestats.data import DEMO_FILE, load
from lestats.tools.demo import CATEGORIES, HEADER, LOCATIONS, QUESTIONS, generate, main
from lestats.statistics import HIGHEST_IS_BEST, LOWEST_IS_BEST


def test_data_demo_csv_is_the_generators_output():
    out = io.StringIO(newline="")
    generate(out)
    assert out.getvalue() == DEMO_FILE.read_text(encoding="utf-8")


def test_the_demo_covers_every_question_state_and_category():
    index = load(DEMO_FILE)
    assert set(index.questions) == LOWEST_IS_BEST | HIGHEST_IS_BEST
    assert {q for _, q, _, _ in QUESTIONS} == set(index.questions)
    for means in index.questions.values():
        assert set(means.state_means) == {name for name, _, _ in LOCATIONS}
        categories = {category for groups in means.group_means.values() for category, _ in groups}
        assert categories == set(CATEGORIES)
    assert index.skipped > 0   # some rows carry the "~" footnote and no value


def test_the_header_is_the_course_files(checker_dir):
    with open(checker_dir / "nutrition_activity_obesity_usa_subset.csv", encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split(",") == HEADER


def test_more_rows_on_request_and_the_same_rows_for_the_same_seed(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["--rows", "5000", "--seed", "7", "--out", str(first)]) == 0
    main(["--rows", "5000", "--seed", "7", "--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    assert load(first).rows == 5000
