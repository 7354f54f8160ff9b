"""The runtime is the standard library alone, and runs on a bare Python."""

import ast
import importlib.util
import sys
import sysconfig

from conftest import OBESITY, REPO, TINY_ROWS, write_csv
from test_cli import Server


def is_stdlib(name):
    """True for a module of the standard library.  sys.stdlib_module_names is
    new in 3.10; before it, ask where the module comes from: built in, frozen,
    or the standard library's folder (not site-packages)."""
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return name in names
    if name in sys.builtin_module_names:
        return True
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.origin in ("built-in", "frozen"):
        return True
    stdlib = sysconfig.get_paths()["stdlib"]
    origin = spec.origin or ""
    return origin.startswith(stdlib) and "site-packages" not in origin


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
               if name != "lestats" and not is_stdlib(name)]
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


def test_the_server_imports_nothing_of_the_grading_tools():
    """lestats/grade/ is for teaching assistants: only the tools may import it
    (cli names it in TOOLS as text, imported when asked for)."""
    importers = []
    for source in sorted((REPO / "lestats").rglob("*.py")):
        part = source.relative_to(REPO / "lestats").parts[0]
        if part in ("grade", "tools"):
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.startswith(("lestats.grade", ".grade", "..grade")) for name in names):
                importers.append(str(source.relative_to(REPO)))
    assert importers == []
