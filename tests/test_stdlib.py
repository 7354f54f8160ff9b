"""The runtime is the standard library alone, and runs on a bare Python."""

import ast
import json
import sys
import time
import urllib.request
from pathlib import Path

from conftest import OBESITY, REPO, TINY_ROWS, write_csv
from test_cli import Server

# sys.stdlib_module_names is new in 3.10; on 3.9 these are the modules we may use.
STDLIB_39 = {
    "__future__", "argparse", "ast", "collections", "csv", "dataclasses", "errno", "html",
    "http", "io", "json", "logging", "math", "os", "pathlib", "random", "re", "selectors",
    "signal", "socket", "socketserver", "statistics", "sys", "threading", "time", "types",
    "typing", "urllib", "tracemalloc", "resource", "subprocess", "tempfile", "shutil",
    "platform", "gc", "functools", "itertools", "contextlib", "string", "struct",
}
STDLIB = set(getattr(sys, "stdlib_module_names", STDLIB_39))


def runtime_imports():
    sources = sorted((REPO / "lestats").rglob("*.py")) + [REPO / "run.py"]
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                yield source.relative_to(REPO), name.split(".")[0]


def test_every_runtime_import_is_standard_library_or_our_own():
    found = list(runtime_imports())
    assert len(found) > 20
    outside = [(str(path), name) for path, name in found
               if name not in STDLIB and name != "lestats"]
    assert outside == []


def test_a_bare_isolated_python_serves_a_job(tmp_path):
    write_csv(tmp_path / "tiny.csv", TINY_ROWS)
    server = Server(tmp_path, "--data", str(tmp_path / "tiny.csv"),
                    python=(sys.executable, "-I", "-S"))
    try:
        job_id = server.post("global_mean", {"question": OBESITY})["job_id"]
        assert server.wait_done(job_id) == {"status": "done", "data": {"global_mean": 14.5}}
    finally:
        assert server.stop() == 0
