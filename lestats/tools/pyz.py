"""Build ``lestats.pyz``: the whole program in one file, for a machine
without git or pip (any CPython 3.7 or later, standard library only).

    python3 -m lestats pyz [--out lestats.pyz]

The archive, made with ``zipapp``, holds every file of the lestats package
but caches, and the shipped data set (``data/`` + its name, gzipped).  It
runs as ``python3 -m lestats`` does, also under a bare interpreter
(``python3 -I -S lestats.pyz ...``)::

    python3 lestats.pyz                      # serve the shipped data
    python3 lestats.pyz --data FILE.csv      # serve another file
    python3 lestats.pyz check CASES_DIR      # any tool, by its name

The loader reads the shipped data from inside the archive.  The course's
cases (``data/cases``) are not in it: ``check`` there needs a folder.
"""

import argparse
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path
from typing import List, Optional

from ..data import SHIPPED_DATA

PACKAGE = Path(__file__).resolve().parents[1]
CACHES = ("__pycache__", "*.pyc", "*.pyo")

# The archive's entry point: what lestats/__main__.py does, from the archive's root.
MAIN_PY = '''"""python3 lestats.pyz ...: the same program as python3 -m lestats ..."""
import sys

from lestats.cli import main

sys.exit(main())
'''


def build(out: Path, package: Path = PACKAGE, data: Path = SHIPPED_DATA) -> List[str]:
    """Write the archive to ``out`` (executable, with a ``python3`` shebang)
    from ``package`` and the data file ``data`` (stored as data/ and
    SHIPPED_DATA's name, where the loader looks); return the names of the
    files in it."""
    with tempfile.TemporaryDirectory(prefix="lestats-pyz-") as tmp:
        staging = Path(tmp)
        shutil.copytree(package, staging / "lestats", ignore=shutil.ignore_patterns(*CACHES))
        (staging / "data").mkdir()
        shutil.copyfile(data, staging / "data" / SHIPPED_DATA.name)
        (staging / "__main__.py").write_text(MAIN_PY, encoding="utf-8")
        names = sorted(path.relative_to(staging).as_posix()
                       for path in staging.rglob("*") if path.is_file())
        zipapp.create_archive(staging, out, interpreter="/usr/bin/env python3",
                              compressed=True)
    return names


def main(argv: Optional[List[str]] = None) -> int:
    """``python3 -m lestats pyz [--out PATH]``; exit 2 when not run from a checkout."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats pyz",
                                     description="Build lestats.pyz, the one-file program.")
    parser.add_argument("--out", type=Path, default=Path("lestats.pyz"),
                        help="the archive to write (default: ./lestats.pyz)")
    args = parser.parse_args(argv)
    if not PACKAGE.is_dir() or not SHIPPED_DATA.is_file():
        print(f"lestats pyz: error: build from a checkout: {PACKAGE} is not a directory"
              f" with {SHIPPED_DATA} beside it", file=sys.stderr)
        return 2
    names = build(args.out)
    print(f"{args.out}: {len(names)} files, {args.out.stat().st_size // 1024} KiB;"
          f" run it with: python3 {args.out} [--data FILE.csv]")
    return 0
