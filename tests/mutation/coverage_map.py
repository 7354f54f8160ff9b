"""Which tests execute each line of the server core.

One run of the suite (``-m "not slow"``) under ``pytest --cov=lestats
--cov-context=test`` maps every (file, line) to the tests that executed it.
Code that runs only in a child process (``python3 run.py`` started by
tests/test_cli.py and others) is measured too: a ``sitecustomize`` module in
a directory put on PYTHONPATH starts coverage in every Python child (as
``COVERAGE_PROCESS_START`` asks), and its static context is the id of the
test that was running in pytest when the child started (a tiny pytest plugin
puts it in the environment, which children inherit).  Children run with
``-I`` (isolated: tests/test_pyz.py) ignore PYTHONPATH and are not measured;
lines only they execute have no tests and their mutants say NO-TESTS.

The map is cached, keyed by a hash of the tree (the server, the tests, the
data), so a second run of the tool on the same code starts at once.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Set

HASHED = ("lestats", "tests", "data", "run.py", "tox.ini")
TOOL_FILES = ("tests/mutation", "tests/mutants.py", "tests/mutants_equivalent.txt",
              "tests/test_mutants.py")
IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "results", ".tox", ".venv*",
                                 ".pytest_cache", ".coverage*", "*.log")
CONTEXT_VARIABLE = "LESTATS_MUTATION_TEST"
RC_VARIABLE = "LESTATS_MUTATION_RC"

SITECUSTOMIZE = '''\
"""Measure this Python child with coverage (mutation map run only)."""
import os
if os.environ.get("COVERAGE_PROCESS_START"):
    try:
        import coverage
        coverage.process_startup()
    except Exception:   # pylint: disable=broad-except
        pass
'''

PLUGIN = f'''\
"""Tell children started by a test which test started them (mutation map run)."""
import os


def pytest_configure(config):
    os.environ["COVERAGE_PROCESS_START"] = os.environ["{RC_VARIABLE}"]


def pytest_runtest_protocol(item, nextitem):
    os.environ["{CONTEXT_VARIABLE}"] = item.nodeid
'''

RCFILE = '''\
[run]
data_file = {data}
parallel = true
branch = false
source = {source}
context = ${{{variable}}}
'''


def copy_tree(repo: Path, destination: Path) -> Path:
    """A copy of the checkout (without .git, caches, results or logs)."""
    shutil.copytree(repo, destination, ignore=IGNORED)
    return destination


def test_environment(repo: Path) -> Dict[str, str]:
    """The environment every test run of the tool gets: no bytecode files
    (a mutant and its original may have the same size and mtime), and the
    course checker's material from beside the real checkout."""
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("COVERAGE_PROCESS_START", None)
    checker = repo.parent / "shared" / "checker"
    if "LESTATS_CHECKER_DIR" not in env and checker.is_dir():
        env["LESTATS_CHECKER_DIR"] = str(checker)
    return env


def tree_hash(repo: Path) -> str:
    """A hash of what decides which tests run which lines."""
    digest = hashlib.sha256()
    for name in HASHED:
        top = repo / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(repo).as_posix()
            if "__pycache__" in relative or relative.startswith(TOOL_FILES):
                continue
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


class CoverageMap:
    """(path, line) -> the ids of the tests that execute it."""

    def __init__(self, lines: Dict[str, Dict[int, List[str]]]):
        self.lines = lines

    def tests_for(self, path: str, lines: Iterable[int]) -> Set[str]:
        """The tests that execute any of ``lines`` of ``path``."""
        by_line = self.lines.get(path, {})
        return {test for line in lines for test in by_line.get(line, ())}

    def all_tests(self) -> Set[str]:
        """Every test that executes some line of the scope."""
        return {test for by_line in self.lines.values() for tests in by_line.values()
                for test in tests}

    def to_json(self) -> dict:
        """As JSON-ready data (line numbers as strings)."""
        return {path: {str(line): sorted(tests) for line, tests in by_line.items()}
                for path, by_line in self.lines.items()}

    @classmethod
    def from_json(cls, data: dict) -> "CoverageMap":
        """The inverse of ``to_json``."""
        return cls({path: {int(line): tests for line, tests in by_line.items()}
                    for path, by_line in data.items()})


def load_or_build(repo: Path, cache_dir: Path, refresh: bool = False,
                  log=print) -> CoverageMap:
    """The cached map of this tree, or a new one (about a minute)."""
    cache = cache_dir / f"coverage-{tree_hash(repo)}.json"
    if cache.is_file() and not refresh:
        log(f"coverage map: cached ({cache})")
        return CoverageMap.from_json(json.loads(cache.read_text()))
    log("coverage map: running the suite under coverage (once per version of the code)...")
    mapping = build(repo)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(mapping.to_json()))
    log(f"coverage map: {len(mapping.all_tests())} tests, saved to {cache}")
    return mapping


def build(repo: Path) -> CoverageMap:
    """Run the suite in a copy of ``repo`` under coverage, children included."""
    with tempfile.TemporaryDirectory(prefix="mutation-map-") as tmp:
        root = Path(tmp)
        copy = copy_tree(repo, root / "checkout")
        helpers = root / "helpers"
        helpers.mkdir()
        (helpers / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (helpers / "lestats_mutation_context.py").write_text(PLUGIN)
        (root / "children").mkdir()
        rcfile = root / "children.rc"
        rcfile.write_text(RCFILE.format(data=root / "children" / "cov",
                                        source=copy / "lestats", variable=CONTEXT_VARIABLE))
        env = test_environment(repo)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(helpers),
                                                          env.get("PYTHONPATH")]))
        env[RC_VARIABLE] = str(rcfile)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-p", "lestats_mutation_context", "-m", "not slow", "--cov=lestats",
                   "--cov-context=test", "--cov-report="]
        # Failing tests are fine here (the baseline run leaves them out later).
        subprocess.run(command, cwd=copy, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        lines: Dict[str, Dict[int, Set[str]]] = defaultdict(lambda: defaultdict(set))
        files = [copy / ".coverage", *sorted((root / "children").glob("cov*"))]
        for data_file in files:
            _add(lines, data_file, copy)
        return CoverageMap({path: {line: sorted(tests) for line, tests in by_line.items()}
                            for path, by_line in lines.items()})


def _add(lines: Dict[str, Dict[int, Set[str]]], data_file: Path, copy: Path) -> None:
    """Add one coverage data file's (file, line) -> test contexts."""
    import coverage   # pylint: disable=import-outside-toplevel
    if not data_file.is_file():
        return
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    for measured in data.measured_files():
        try:
            path = Path(measured).resolve().relative_to(copy.resolve()).as_posix()
        except ValueError:
            continue
        for line, contexts in (data.contexts_by_lineno(measured) or {}).items():
            for context in contexts:
                test = context.split("|")[0]
                if test:
                    lines[path][line].add(test)
