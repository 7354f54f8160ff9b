"""Where a thread is in lestats' source: for step mode's page, which shows
the real lines (read with ``inspect``) that each thread is stopped at."""

import os
from typing import Any, Dict, FrozenSet, List


def files(cls: type, skip: FrozenSet[str]) -> FrozenSet[str]:
    """The files the functions of ``cls`` and its bases (lestats' own, but
    none of ``skip``) were compiled from."""
    found = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("lestats"):
            continue
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            if code is not None and code.co_filename not in skip:
                found.add(code.co_filename)
    return frozenset(found)


def short(path: str) -> str:
    """``lestats/pool.py`` for any path (or zip member) of lestats' files."""
    marker = path.replace(os.sep, "/").rfind("lestats/")
    return path[marker:] if marker >= 0 else os.path.basename(path)


def frames(frame: Any, shown_files: FrozenSet[str], limit: int) -> List[Dict[str, Any]]:
    """The frames of ``frame``'s stack whose code is in ``shown_files``,
    innermost first (at most ``limit``), each with its line and its
    function's source as ``inspect`` reads it."""
    # Imported here: with dis, ast and tokenize it would add to every
    # start-up, and only a stepping page ever asks for frames.
    import inspect   # pylint: disable=import-outside-toplevel
    shown: List[Dict[str, Any]] = []
    while frame is not None and len(shown) < limit:
        code = frame.f_code
        if code.co_filename in shown_files:
            try:
                lines, first = inspect.getsourcelines(code)
            except (OSError, TypeError):
                lines, first = [], code.co_firstlineno
            shown.append({"file": short(code.co_filename), "function": code.co_name,
                          "line": frame.f_lineno, "first": first,
                          "source": [line.rstrip("\n") for line in lines]})
        frame = frame.f_back
    return shown
