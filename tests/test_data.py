"""The loader: one pass, means per question/state/group, bad files refused."""

from pathlib import Path

import pytest

from lestats.data import DEMO_FILE, DataError, find_data_file, load

from conftest import MUSCLE, OBESITY, row, write_csv


def test_means_are_computed_per_question_state_and_group(tiny_index):
    obesity = tiny_index.questions[OBESITY]
    assert obesity.global_mean == pytest.approx(87 / 6)
    assert dict(obesity.state_means) == {"Alabama": 15.0, "Alaska": 30.0, "Ohio": 6.0,
                                         "Utah": 15.0}
    assert dict(obesity.group_means["Alabama"]) == {("Gender", "Male"): 10.0,
                                                    ("Gender", "Female"): 20.0}
    assert dict(obesity.group_means["Ohio"]) == {("Age (years)", "18 - 24"): 6.0}


def test_rows_without_a_value_are_skipped_and_counted(tiny_index):
    assert tiny_index.rows == 10
    assert tiny_index.skipped == 1


def test_rows_with_an_empty_category_or_stratification_count_only_outside_groups(tiny_index):
    obesity = tiny_index.questions[OBESITY]
    assert "Utah" in obesity.state_means
    assert "Utah" not in obesity.group_means


def test_non_numeric_non_finite_and_short_rows_are_skipped(tmp_path):
    path = write_csv(tmp_path / "odd.csv", [
        row(MUSCLE, "Ohio", "abc"), row(MUSCLE, "Ohio", "nan"), row(MUSCLE, "Ohio", "inf"),
        row(MUSCLE, "Ohio", " 4.5 "), row(MUSCLE, "Ohio", "1e1")])
    with open(path, "a", encoding="utf-8") as out:
        out.write("1,2011\n")   # a short row
    index = load(path)
    assert (index.rows, index.skipped) == (6, 4)
    assert index.questions[MUSCLE].state_means["Ohio"] == pytest.approx(7.25)


def test_the_index_cannot_be_changed(tiny_index):
    with pytest.raises(TypeError):
        tiny_index.questions["new"] = None   # type: ignore[index]
    with pytest.raises(TypeError):
        tiny_index.questions[OBESITY].state_means["Ohio"] = 0.0   # type: ignore[index]


def test_a_byte_order_mark_and_extra_columns_are_fine(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffExtra,Question,LocationDesc,Data_Value,StratificationCategory1,"
                    "Stratification1\nx,Q,Ohio,2,Total,Total\n", encoding="utf-8")
    assert load(path).questions["Q"].global_mean == 2.0


@pytest.mark.parametrize("content, problem", [
    ("", "missing column(s) Question, LocationDesc"),
    ("Question,LocationDesc\nQ,Ohio\n", "missing column(s) Data_Value, StratificationCategory1"),
])
def test_a_csv_without_the_needed_columns_is_refused(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as error:
        load(path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_a_missing_or_undecodable_file_is_refused_with_its_name(tmp_path):
    with pytest.raises(DataError, match="nowhere.csv: cannot read"):
        load(tmp_path / "nowhere.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"Question,\xff\xfe\n")
    with pytest.raises(DataError, match="binary.csv: cannot read"):
        load(binary)


def test_the_data_file_is_found_in_api_order(tmp_path):
    assert find_data_file("given.csv", {"LESTATS_DATA": "env.csv"}, tmp_path) == Path("given.csv")
    assert find_data_file(None, {"LESTATS_DATA": "env.csv"}, tmp_path) == Path("env.csv")
    assert find_data_file(None, {}, tmp_path) == DEMO_FILE
    course = tmp_path / "nutrition_activity_obesity_usa_subset.csv"
    course.write_text("x", encoding="utf-8")
    assert find_data_file(None, {}, tmp_path) == course


def test_the_demo_file_loads_and_says_it_is_the_demo(tiny_index):
    demo = load(DEMO_FILE)
    assert demo.is_demo and not tiny_index.is_demo
    assert len(demo.questions) == 9
