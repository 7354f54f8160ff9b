"""lestats.pyz: one file holding the whole package and the shipped data,
which serves and runs the tools under a bare interpreter (python3 -I -S)."""

import subprocess
import sys
import zipfile

import pytest

from lestats import cli
from lestats.tools import pyz
from lestats.tools.soak import ServerProcess, call

from conftest import OBESITY, REPO

SHIPPED = "data/nutrition_activity_obesity_usa_subset.csv.gz"
BARE_PYTHON = (sys.executable, "-I", "-S")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """lestats.pyz built by ``python3 -m lestats pyz --out``."""
    out = tmp_path_factory.mktemp("pyz") / "lestats.pyz"
    assert cli.main(["pyz", "--out", str(out)]) == 0
    return out


def test_the_archive_holds_the_package_without_caches_and_the_shipped_data(archive):
    package = REPO / "lestats"
    expected = {path.relative_to(REPO).as_posix() for path in package.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts
                and path.suffix not in (".pyc", ".pyo")}
    with zipfile.ZipFile(archive) as bundle:
        names = {name for name in bundle.namelist() if not name.endswith("/")}
    assert names == expected | {"__main__.py", SHIPPED}
    assert archive.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_files_that_are_not_python_are_packed_too_and_caches_are_not(tmp_path):
    package = tmp_path / "lestats"
    (package / "watch" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "watch" / "page.html").write_text("<html></html>")
    (package / "watch" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (package / "stale.pyc").write_bytes(b"\0")
    data = tmp_path / "data.csv.gz"
    data.write_bytes(b"")
    out = tmp_path / "small.pyz"
    names = pyz.build(out, package, data)
    assert names == ["__main__.py", SHIPPED, "lestats/__init__.py", "lestats/watch/page.html"]
    with zipfile.ZipFile(out) as bundle:
        assert bundle.read("lestats/watch/page.html") == b"<html></html>"


def serve_archive(archive, tmp_path, *options):
    """The archive serving under a bare interpreter on an ephemeral port."""
    return ServerProcess(None, tmp_path / "results", tmp_path / "webserver.log", options,
                         python=BARE_PYTHON, cwd=tmp_path, entry=(str(archive),))


def test_it_serves_the_shipped_data_from_inside_itself_by_default(archive, tmp_path):
    server = serve_archive(archive, tmp_path)
    try:
        assert f"{archive}/{SHIPPED}" in server.banner and "the shipped data" in server.banner
        status, answer = call(server.port, "POST", "/api/global_mean", {"question": OBESITY})
        assert status == 200 and answer == {"job_id": "job_id_1"}
    finally:
        assert server.stop() == 0   # the drain finishes the job before the exit
    assert (tmp_path / "results" / "job_id_1.json").is_file()
    assert "synthetic rows with the course's means" in (tmp_path / "webserver.log").read_text()


def test_a_bad_data_file_is_one_line_and_status_2(archive, tmp_path):
    result = subprocess.run([*BARE_PYTHON, str(archive), "--data", str(tmp_path / "no.csv")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no.csv: cannot read" in result.stderr


def test_it_passes_its_own_check_on_its_own_data(archive, tmp_path, checker_dir):
    # One edition: the other's run differs in nothing the archive does.
    server = serve_archive(archive, tmp_path)
    try:
        result = subprocess.run(
            [*BARE_PYTHON, str(archive), "check", str(checker_dir / "cases" / "2025"),
             "--url", f"http://127.0.0.1:{server.port}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "course score (2025 rules): 100/100" in result.stdout
    finally:
        assert server.stop() == 0


def test_check_without_a_folder_says_the_archive_holds_no_cases(archive, tmp_path):
    result = subprocess.run([*BARE_PYTHON, str(archive), "check"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "(lestats.pyz does not hold them): give" in (
        result.stderr)


def test_building_from_inside_the_archive_is_refused(archive, tmp_path):
    result = subprocess.run([*BARE_PYTHON, str(archive), "pyz", "--out", str(tmp_path / "x")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "build from a checkout" in result.stderr
