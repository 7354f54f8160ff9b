"""The checker's HTTP client and JSON reading, against any answer: a
deadline for the whole request, a size cap, a nesting limit, and one line
(with a kind to group by) for whatever goes wrong.  Also the course's
comparison (DeepDiff's rules) and the pylint step."""

import socket
import subprocess
import threading
import time

import pytest

from fakes import HOSTILE, _json, drop, html
from lestats.grade import quality
from lestats.grade.answers import MAX_DEPTH, NotJson, parse, too_deep
from lestats.grade.client import Client, NoAnswer
from lestats.grade.compare import difference
from lestats.grade.course import EDITIONS


class RawServer:
    """Answers every connection with ``answer(sock)`` after reading its request."""

    def __init__(self, answer):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.answer = answer

    def serve_one(self):
        sock, _ = self.listener.accept()
        with sock:
            sock.recv(65536)
            self.answer(sock)


def ask(answer, deadline=2.0, cap=None):
    """One GET against a server that answers with ``answer``."""
    server = RawServer(answer)
    thread = threading.Thread(target=server.serve_one, daemon=True)
    thread.start()
    try:
        return Client("127.0.0.1", server.port, deadline).request("GET", "/x", max_answer=cap)
    finally:
        server.listener.close()


def raw(data):
    return lambda sock: sock.sendall(data)


def test_a_plain_answer_and_a_chunked_one_are_read_whole():
    answer = ask(raw(_json(200, {"status": "done"})))
    assert (answer.status, parse(answer.body)) == (200, {"status": "done"})
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nTrailer: t\r\n\r\n")
    answer = ask(raw(chunked))
    assert (answer.status, answer.body) == (202, b'{"a": 1}')
    closed = ask(raw(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]"))   # no framing: ends with the connection
    assert closed.body == b"[1, 2]" and closed.preview() == "200 b'[1, 2]'"


@pytest.mark.parametrize("name, kind, hang", [
    ("endless chunked body", "answer too large", False),
    ("Content-Length 10**15", "answer too large", False),
    ("a 200 MB JSON string", "answer too large", False),
    ("one byte every 2 s", "no answer in time", True),
])
def test_hostile_answers_are_cut_and_say_why(name, kind, hang):
    began = time.monotonic()
    with pytest.raises(NoAnswer) as cut:
        ask(HOSTILE[name], deadline=0.5)
    assert (cut.value.kind, cut.value.hang) == (kind, hang)
    assert "\n" not in str(cut.value) and len(str(cut.value)) < 120
    assert time.monotonic() - began < 5    # generous: the deadline is 0.5 s


@pytest.mark.parametrize("data, kind, says", [
    (b"", "connection closed", "the connection was closed without an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "connection closed",
     "closed before the body was complete after 41 bytes"),
    (b"<html>hello</html>\r\n\r\n", "not HTTP", "not an HTTP answer: b'<html>hello</html>'"),
    (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "not HTTP", "a header line without a colon"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "not HTTP", "is not a number"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "not HTTP", "more than 100 header"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not HTTP",
     "a bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", "not HTTP",
     "a chunk longer than its size says"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"x" * 70000, "not HTTP", "answer head longer than"),
])
def test_broken_answers_are_one_line_each(data, kind, says):
    with pytest.raises(NoAnswer) as broken:
        ask(raw(data))
    assert broken.value.kind == kind and says in str(broken.value)


def test_dropped_connections_and_closed_ports_are_no_answer():
    with pytest.raises(NoAnswer, match="closed without an answer"):
        ask(drop)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NoAnswer) as refused:
        Client("127.0.0.1", port).request("GET", "/")
    assert (refused.value.kind, refused.value.hang) == ("connection refused", False)


def test_a_cap_smaller_than_the_answer_refuses_it():
    with pytest.raises(NoAnswer, match="Content-Length 1,000: over the 10 bytes"):
        ask(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), cap=10)
    assert ask(html(404)).status == 404


# -- JSON within limits ------------------------------------------------------------

def test_nesting_is_counted_outside_strings():
    assert not too_deep(b'["' + b"[" * 500 + b'"]')
    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1))
    assert too_deep(b'{"a": ' * (MAX_DEPTH + 1))
    assert not too_deep(b"[[1], [2], [3]]" * 100)     # many brackets, little depth


@pytest.mark.parametrize("body, kind", [
    (b"[" * 100_000, "nested too deep"), (b"<html>", "not JSON"), (b"", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"), (b'{"a": 1} trailing', "not JSON"),
])
def test_what_is_not_json_says_so(body, kind):
    with pytest.raises(NotJson) as refused:
        parse(body)
    assert refused.value.kind == kind and len(str(refused.value)) < 120


def test_json_is_read_as_the_courses_response_json_reads_it():
    assert parse(b'{"a": NaN, "b": [1, 2.5]}')["b"] == [1, 2.5]
    assert parse('{"é": 1}'.encode("utf-16")) == {"é": 1}


# -- DeepDiff's rules ----------------------------------------------------------------

@pytest.mark.parametrize("data, expected, kind", [
    ({"a": 1.009}, {"a": 1.0}, None),
    ({"a": 1.02}, {"a": 1.0}, "value"),
    ({"a": 30}, {"a": 30.0}, "type"),                  # an int where a float is expected
    ({"a": 30.0}, {"a": 30}, "type"),
    ({"a": True}, {"a": 1}, "type"),
    ({"a": None}, {"a": 1.0}, "type"),
    ({"a": float("nan")}, {"a": float("nan")}, "value"),
    ({"b": 1.0}, {"a": 1.0}, "missing keys"),
    ({"a": 1.0, "b": 2.0}, {"a": 1.0}, "unexpected keys"),
    ({"b": 1.0, "a": 2.0}, {"a": 2.0, "b": 1.0}, None),   # key order is not checked
    ([1.0], [1.0, 2.0], "length"),
    ([2.0, 1.0], [1.0, 2.0], "value"),                   # list order is
    ({"a": "x"}, {"a": "y"}, "value"),
    ({"a": {"b": [1.0, 2.001]}}, {"a": {"b": [1.0, 2.0]}}, None),
])
def test_differences_are_deepdiffs(data, expected, kind):
    found = difference(data, expected)
    assert (found.kind if found else None) == kind


def test_a_difference_names_where_and_what():
    assert difference({"Ohio": 3}, {"Ohio": 3.2}).text == (
        "data['Ohio']: expected float 3.2, got int 3")
    assert difference({"e": 1.0, "f": 1.0, "g": 1.0, "h": 1.0},
                      {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}).text == (
        "data: missing keys 'a', 'b', 'c' and 1 more, unexpected keys 'e', 'f', 'g' and 1 more")


# -- pylint, when it can run ------------------------------------------------------------

def test_pylint_is_said_not_evaluated_when_it_cannot_run(tmp_path, monkeypatch):
    assert quality.evaluate(None) == (None, "not evaluated (no --app DIR)")
    assert quality.evaluate(tmp_path / "app").note.endswith("is not a directory")
    monkeypatch.setattr(quality.importlib.util, "find_spec", lambda name: None)
    assert "pylint is not installed for" in quality.evaluate(tmp_path).note


@pytest.mark.parametrize("stdout, score", [
    ("Your code has been rated at 7.50/10 (previous run: 7.00/10)", 7.5),
    ("Your code has been rated at -3.25/10", -3.25),
    ("", None),
])
def test_pylints_rating_is_read_and_costs_points_below_8(tmp_path, monkeypatch, stdout, score):
    def run(command, **_options):
        assert command[1:] == ["-m", "pylint", "app"]
        return subprocess.CompletedProcess(command, 16, stdout, "boom")

    monkeypatch.setattr(quality.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(quality.subprocess, "run", run)
    (tmp_path / "app").mkdir()
    found = quality.evaluate(tmp_path / "app")
    assert found.score == score
    if score is None:
        assert found.note == "not evaluated: pylint gave no rating (exit 16: boom)"
    else:
        # 2024 starts at 0: all suites failed and pylint below 8 is -5.
        assert EDITIONS["2024"].total([0] * 9, found.score) == -5
        assert EDITIONS["2025"].total([10] * 9, found.score) == 90
        assert EDITIONS["2025"].total([10] * 9, 8.0) == 100
