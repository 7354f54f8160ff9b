"""The nine statistics on hand-computed data, and the checks done before a
job is accepted."""

import pytest

from lestats.statistics import STATISTICS, QueryError, prepare

from conftest import MUSCLE, OBESITY, UNRANKED

GLOBAL = 87 / 6   # obesity: (10 + 20 + 30 + 5 + 7 + 15) / 6


def compute(index, name, **body):
    return prepare(index, name, body).compute(index)


def test_states_mean_ascends_and_ties_break_by_name(tiny_index):
    result = compute(tiny_index, "states_mean", question=OBESITY)
    assert list(result.items()) == [("Ohio", 6.0), ("Alabama", 15.0), ("Utah", 15.0),
                                    ("Alaska", 30.0)]


def test_state_mean(tiny_index):
    assert compute(tiny_index, "state_mean", question=OBESITY, state="Ohio") == {"Ohio": 6.0}


def test_best5_and_worst5_when_the_lowest_is_best(tiny_index):
    assert list(compute(tiny_index, "best5", question=OBESITY)) == [
        "Ohio", "Alabama", "Utah", "Alaska"]
    assert list(compute(tiny_index, "worst5", question=OBESITY)) == [
        "Alaska", "Alabama", "Utah", "Ohio"]


def test_best5_and_worst5_when_the_highest_is_best(tiny_index):
    assert compute(tiny_index, "best5", question=MUSCLE) == {"Ohio": 50.0, "Alabama": 40.0}
    assert list(compute(tiny_index, "worst5", question=MUSCLE)) == ["Alabama", "Ohio"]


def test_best5_keeps_only_five(checker_index):
    question = "Percent of adults aged 18 years and older who have obesity"
    assert len(compute(checker_index, "best5", question=question)) == 5
    assert len(compute(checker_index, "worst5", question=question)) == 5


def test_global_mean(tiny_index):
    assert compute(tiny_index, "global_mean", question=OBESITY) == {
        "global_mean": pytest.approx(GLOBAL)}


def test_diff_from_mean_runs_largest_first(tiny_index):
    result = compute(tiny_index, "diff_from_mean", question=OBESITY)
    assert list(result) == ["Ohio", "Alabama", "Utah", "Alaska"]
    assert result["Ohio"] == pytest.approx(GLOBAL - 6)
    assert result["Alaska"] == pytest.approx(GLOBAL - 30)


def test_state_diff_from_mean(tiny_index):
    result = compute(tiny_index, "state_diff_from_mean", question=OBESITY, state="Alaska")
    assert result == {"Alaska": pytest.approx(GLOBAL - 30)}


def test_mean_by_category_keys_are_str_of_the_tuple_in_order(tiny_index):
    result = compute(tiny_index, "mean_by_category", question=OBESITY)
    assert list(result.items()) == [
        ("('Alabama', 'Gender', 'Female')", 20.0),
        ("('Alabama', 'Gender', 'Male')", 10.0),
        ("('Alaska', 'Gender', 'Male')", 30.0),
        ("('Ohio', 'Age (years)', '18 - 24')", 6.0),
    ]


def test_state_mean_by_category(tiny_index):
    assert compute(tiny_index, "state_mean_by_category", question=OBESITY, state="Alabama") == {
        "Alabama": {"('Gender', 'Female')": 20.0, "('Gender', 'Male')": 10.0}}


def test_state_mean_by_category_of_a_state_without_groups_is_empty(tiny_index):
    assert compute(tiny_index, "state_mean_by_category", question=OBESITY,
                   state="Utah") == {"Utah": {}}


def test_a_key_with_a_quote_is_still_str_of_the_tuple(tmp_path):
    from lestats.data import load
    from conftest import row, write_csv
    index = load(write_csv(tmp_path / "q.csv", [row(OBESITY, "Ohio", "1", "Race", "O'Brien")]))
    assert compute(index, "mean_by_category", question=OBESITY) == {
        str(("Ohio", "Race", "O'Brien")): 1.0}


@pytest.mark.parametrize("name, body, message", [
    ("states_mean", {}, "field 'question' is required"),
    ("states_mean", {"question": 3}, "field 'question' must be a string, not int"),
    ("states_mean", {"question": "nope"}, "question not in the data set: 'nope'"),
    ("state_mean", {"question": OBESITY}, "field 'state' is required"),
    ("state_mean", {"question": OBESITY, "state": None}, "must be a string, not NoneType"),
    ("state_mean", {"question": OBESITY, "state": "Texas"}, "state 'Texas' has no rows"),
    ("state_mean", {"question": MUSCLE, "state": "Alaska"}, "state 'Alaska' has no rows"),
    ("best5", {"question": UNRANKED}, "no best/worst direction is known"),
    ("worst5", {"question": UNRANKED}, "no best/worst direction is known"),
])
def test_bad_bodies_are_refused_before_a_job_exists(tiny_index, name, body, message):
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        prepare(tiny_index, name, body)


def test_unknown_fields_are_ignored(tiny_index):
    assert compute(tiny_index, "state_mean", question=OBESITY, state="Ohio",
                   extra=[1, 2]) == {"Ohio": 6.0}


def test_every_api_statistic_is_in_the_table():
    assert set(STATISTICS) == {
        "states_mean", "state_mean", "best5", "worst5", "global_mean", "diff_from_mean",
        "state_diff_from_mean", "mean_by_category", "state_mean_by_category"}
