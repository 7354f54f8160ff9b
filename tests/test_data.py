"""The loader: one pass, means per question/state/group, bad files refused."""

import csv
import gzip
import math
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from lestats import cli
from lestats.data import LINE_LIMIT, SHIPPED_DATA, DataError, find_data_file, load

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
    assert find_data_file(None, {}, tmp_path) == SHIPPED_DATA
    course = tmp_path / "nutrition_activity_obesity_usa_subset.csv"
    course.write_text("x", encoding="utf-8")
    assert find_data_file(None, {}, tmp_path) == course


def test_the_shipped_data_loads_and_says_it_is_the_shipped_data(tiny_index):
    shipped = load(SHIPPED_DATA)
    assert shipped.is_shipped and not tiny_index.is_shipped
    assert (len(shipped.questions), shipped.rows, shipped.skipped) == (9, 18650, 0)


# -- gzip: the shipped data is read through it ---------------------------------

def test_a_gzipped_file_reads_as_the_plain_one(tmp_path, tiny_csv, tiny_index):
    packed = tmp_path / "tiny.csv.gz"
    packed.write_bytes(gzip.compress(tiny_csv.read_bytes()))
    index = load(packed)
    assert (index.questions, index.rows, index.skipped) == (
        tiny_index.questions, tiny_index.rows, tiny_index.skipped)


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) // 2],                       # cut short
    lambda data: data[:20] + b"\xff" * 40 + data[60:],        # a damaged stream
    lambda data: b"not gzip at all",
])
def test_a_damaged_gzip_is_one_line(tmp_path, tiny_csv, damage):
    packed = tmp_path / "bad.csv.gz"
    packed.write_bytes(damage(gzip.compress(tiny_csv.read_bytes() * 50)))
    with pytest.raises(DataError, match=r"bad\.csv\.gz: cannot read: ") as error:
        load(packed)
    assert "\n" not in str(error.value)


# -- csv.DictReader: columns by name, rows as the csv module reads them -------

def test_columns_are_found_by_name_in_any_order_among_extra_columns(tmp_path):
    header = ["Stratification1", "Note", "Data_Value", "StratificationCategory1",
              "LocationDesc", "Question", "More"]
    path = write_csv(tmp_path / "shuffled.csv", [
        dict(row(OBESITY, "Ohio", "5", "Gender", "Male"), Note="x", More="y"),
        dict(row(OBESITY, "Ohio", "7", "Gender", "Female"), Note="", More="")], header=header)
    means = load(path).questions[OBESITY]
    assert dict(means.state_means) == {"Ohio": 6.0}
    assert dict(means.group_means["Ohio"]) == {("Gender", "Male"): 5.0,
                                               ("Gender", "Female"): 7.0}


def test_quoted_commas_and_line_breaks_stay_inside_their_field(tmp_path):
    question = "Percent of adults, in two\nlines"
    path = write_csv(tmp_path / "quoted.csv", [
        row(question, "Ohio", "2", "Income", "Less than $15,000"),
        row(question, "Ohio", "4", "Income", "$15,000 - $24,999")])
    index = load(path)
    assert index.rows == 2
    assert dict(index.questions[question].group_means["Ohio"]) == {
        ("Income", "Less than $15,000"): 2.0, ("Income", "$15,000 - $24,999"): 4.0}


def test_blank_lines_are_not_rows_and_a_byte_order_mark_is_not_a_column(tmp_path):
    path = tmp_path / "blanks.csv"
    path.write_text("\ufeffQuestion,LocationDesc,Data_Value,StratificationCategory1,"
                    "Stratification1\r\n\r\nQ,Ohio,2,Total,Total\r\n\r\n\r\nQ,Ohio,4,Total,Total\r\n",
                    encoding="utf-8")
    index = load(path)
    assert (index.rows, index.skipped) == (2, 0)
    assert index.questions["Q"].state_means["Ohio"] == 3.0


def test_a_row_with_more_fields_than_the_header_keeps_its_named_columns(tmp_path):
    path = write_csv(tmp_path / "long.csv", [row(MUSCLE, "Ohio", "3")])
    data_line = path.read_text(encoding="utf-8").splitlines()[1]
    with open(path, "a", encoding="utf-8") as out:
        out.write(data_line + ",extra,fields\n")
    index = load(path)
    assert (index.rows, index.skipped) == (2, 0)
    assert index.questions[MUSCLE].state_means["Ohio"] == 3.0


# -- files that give nothing to serve ----------------------------------------

@pytest.mark.parametrize("rows", [
    [],
    [row(OBESITY, "Ohio", ""), row(OBESITY, "Ohio", "n/a"), row(OBESITY, "Ohio", "inf")],
    [row("", "Ohio", "1"), row(OBESITY, "", "2")],
], ids=["header only", "no numeric value", "no question or state"])
def test_a_file_without_a_usable_row_is_refused(tmp_path, rows):
    path = write_csv(tmp_path / "empty.csv", rows)
    with pytest.raises(DataError, match="no usable rows") as error:
        load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_no_usable_rows_stops_start_up_with_one_line_and_status_2(tmp_path, capsys,
                                                                  monkeypatch):
    def serve_until_signalled(server, banner):
        server.server_close()
        raise AssertionError(f"served: {banner}")

    monkeypatch.setattr(cli, "serve_until_signalled", serve_until_signalled)
    path = write_csv(tmp_path / "empty.csv", [])
    assert cli.main(["--data", str(path), "--port", "0", "--log-file", str(tmp_path / "log"),
                     "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: no usable rows" in err


# -- huge lines --------------------------------------------------------------

def test_a_huge_line_is_refused_with_its_number_without_being_read_whole(tmp_path):
    path = write_csv(tmp_path / "huge.csv", [row(MUSCLE, "Ohio", "1")] * 3)
    with open(path, "a", encoding="utf-8") as out:
        out.write(MUSCLE + ",Ohio," + "9" * (16 * 2**20) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert message.startswith(f"{path}: line 5 ") and "longer than 65,536 characters" in message
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB allocated"


def test_a_line_of_exactly_the_limit_is_read(tmp_path):
    prefix = f"{MUSCLE},Ohio,1,Total,"
    path = tmp_path / "limit.csv"
    path.write_text("Question,LocationDesc,Data_Value,StratificationCategory1,Stratification1\n"
                    + prefix + "x" * (LINE_LIMIT - len(prefix) - 1) + "\n", encoding="utf-8")
    assert load(path).questions[MUSCLE].global_mean == 1.0


def test_a_quoted_field_may_span_lines_past_the_line_limit(tmp_path):
    question = "\n".join(["q" * 40_000] * 3)    # three lines, 120,002 characters
    path = write_csv(tmp_path / "tall.csv", [row(question, "Ohio", "2")])
    assert load(path).questions[question].global_mean == 2.0


def test_a_field_over_the_csv_field_limit_is_refused_with_its_line(tmp_path):
    question = "\n".join(["q" * 60_000] * 3)    # over csv's 131,072 characters
    path = write_csv(tmp_path / "wide.csv", [row(MUSCLE, "Ohio", "1"), row(question, "Ohio", "2")])
    with pytest.raises(DataError, match=r"wide\.csv: line 5: field larger than field limit"):
        load(path)


# -- means stay finite, and exactly sum/count for ordinary data -----------------

def test_means_of_huge_values_do_not_overflow(tmp_path):
    path = write_csv(tmp_path / "huge-values.csv", [
        row(OBESITY, "Ohio", "1e308", "Gender", "Male"),
        row(OBESITY, "Ohio", "1.5e308", "Gender", "Male"),
        row(OBESITY, "Ohio", "1.7e308", "Gender", "Female"),
        row(OBESITY, "Utah", "1.7e308", "Total", "Total"),
        row(OBESITY, "Utah", "-1e308", "Total", "Total")])
    means = load(path).questions[OBESITY]
    assert dict(means.group_means["Ohio"]) == {("Gender", "Male"): 1.25e308,
                                               ("Gender", "Female"): 1.7e308}
    assert means.state_means["Ohio"] == pytest.approx(1.4e308)
    assert means.state_means["Utah"] == pytest.approx(0.35e308)
    assert means.global_mean == pytest.approx(0.98e308)
    everything = [means.global_mean, *means.state_means.values(),
                  *(m for groups in means.group_means.values() for m in groups.values())]
    assert all(math.isfinite(mean) for mean in everything)


def plain_means(path):
    """The means as plain sum/count, the way the published outputs were checked:
    a running sum per (question, state, category, stratification) in file order,
    those sums added up in order of first appearance per state and per question."""
    sums = {}
    with gzip.open(path, "rt", newline="", encoding="utf-8-sig") as stream:
        for record in csv.DictReader(stream):
            try:
                value = float(record["Data_Value"])
            except ValueError:
                continue
            key = (record["Question"], record["LocationDesc"],
                   record["StratificationCategory1"], record["Stratification1"])
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] = value if acc[1] == 0 else acc[0] + value
            acc[1] += 1
    means = {}
    for table, cut in (("global", 1), ("state", 2)):
        totals = {}
        for key, (total, count) in sums.items():
            acc = totals.setdefault(key[:cut], [0.0, 0])
            acc[0] += total
            acc[1] += count
        means[table] = {key: total / count for key, (total, count) in totals.items()}
    means["group"] = {key: total / count for key, (total, count) in sums.items()}
    return means


def test_ordinary_means_are_bit_for_bit_sum_over_count():
    expected = plain_means(SHIPPED_DATA)
    index = load(SHIPPED_DATA)
    found = {"global": {}, "state": {}, "group": {}}
    for question, means in index.questions.items():
        found["global"][(question,)] = means.global_mean
        for state, mean in means.state_means.items():
            found["state"][(question, state)] = mean
        for state, groups in means.group_means.items():
            for (category, stratification), mean in groups.items():
                found["group"][(question, state, category, stratification)] = mean
    for table, means in found.items():
        assert means, table
        for key, mean in means.items():
            assert mean.hex() == expected[table][key].hex(), (table, key)


# -- a file inside a zip archive (as the shipped data is inside lestats.pyz) ---

def test_a_file_inside_a_zip_archive_is_read_from_it(tmp_path, tiny_csv, tiny_index):
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(tiny_csv, "data/tiny.csv")
    inside = load(archive / "data" / "tiny.csv")
    assert inside.source == str(archive / "data" / "tiny.csv")
    assert (inside.questions, inside.rows) == (tiny_index.questions, tiny_index.rows)
    for missing in (archive / "data" / "none.csv", tiny_csv / "not-a-zip.csv"):
        with pytest.raises(DataError, match="cannot read"):
            load(missing)


def test_a_gzipped_file_inside_a_zip_archive_is_read_from_it(tmp_path, tiny_csv, tiny_index):
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("data/tiny.csv.gz", gzip.compress(tiny_csv.read_bytes()))
    inside = load(archive / "data" / "tiny.csv.gz")
    assert (inside.questions, inside.rows) == (tiny_index.questions, tiny_index.rows)
