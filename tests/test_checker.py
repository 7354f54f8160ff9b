"""The course's published cases, both editions, through lestats.check against
a server loaded with the checker CSV; and the checker's own comparison."""

import io

import pytest

from lestats.tools import check

EDITIONS = ("2024", "2025")


@pytest.fixture(scope="module")
def checker_server(checker_index, tmp_path_factory):
    from conftest import LiveServer
    live = LiveServer(checker_index, tmp_path_factory.mktemp("checker-results"), workers=4)
    yield live
    live.close()


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_published_case_passes(checker_dir, checker_server, edition):
    out = io.StringIO()
    passed, outcomes = check.run(checker_dir / "cases" / edition,
                                 f"http://127.0.0.1:{checker_server.port}", 10.0, out)
    report = out.getvalue()
    assert passed, report
    assert len(outcomes) == 114
    assert "total: 114/114 cases, 90.00/90 points" in report


def test_the_command_exits_zero_on_full_points(checker_dir, checker_server, capsys):
    url = f"http://127.0.0.1:{checker_server.port}"
    assert check.main([str(checker_dir / "cases" / "2024" ), "--url", url]) == 0
    assert "90.00/90 points" in capsys.readouterr().out


def test_a_failing_case_is_reported_and_exits_non_zero(tmp_path, checker_server, capsys):
    suite = tmp_path / "global_mean"
    (suite / "input").mkdir(parents=True)
    (suite / "output").mkdir()
    question = "Percent of adults aged 18 years and older who have obesity"
    (suite / "input" / "in-1.json").write_text(f'{{"question": "{question}"}}')
    (suite / "output" / "out-1.json").write_text('{"global_mean": 1.0}')
    (suite / "input" / "in-2.json").write_text('{"question": "not a question"}')
    (suite / "output" / "out-2.json").write_text('{"global_mean": 1.0}')
    url = f"http://127.0.0.1:{checker_server.port}"
    assert check.main([str(tmp_path), "--url", url]) == 1
    out = capsys.readouterr().out
    assert "global_mean                0/2" in out
    assert "FAIL global_mean/in-1: data['global_mean']: expected 1.0, got" in out
    assert "FAIL global_mean/in-2: POST answered 400" in out


def test_no_server_and_no_directory_are_clear_failures(tmp_path, capsys):
    assert check.main([str(tmp_path / "missing")]) == 2
    suite = tmp_path / "best5"
    (suite / "input").mkdir(parents=True)
    (suite / "output").mkdir()
    (suite / "input" / "in-1.json").write_text('{"question": "q"}')
    (suite / "output" / "out-1.json").write_text('{}')
    assert check.main([str(tmp_path), "--url", "http://127.0.0.1:9"]) == 1
    assert "request failed" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check.main([str(empty)]) == 1


@pytest.mark.parametrize("expected, actual, difference", [
    ({"a": 1.0}, {"a": 1.009}, None),
    ({"a": 1.0}, {"a": 1.02}, "data['a']: expected 1.0, got 1.02"),
    ({"a": 1}, {"b": 1}, "data: missing keys ['a'], unexpected keys ['b']"),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2.001]}}, None),
    ([1, 2], [1], "data: expected 2 items, got 1"),
    ([1, 2], [1, 3], "data[1]: expected 2, got 3"),
    ({"a": "x"}, {"a": "y"}, "data['a']: expected 'x', got 'y'"),
    ({"a": True}, {"a": 1}, "data['a']: expected True, got 1"),
    ({"b": 1, "a": 2}, {"a": 2, "b": 1}, None),   # key order is not checked
])
def test_first_difference(expected, actual, difference):
    assert check.first_difference(expected, actual) == difference
