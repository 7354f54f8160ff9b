"""Failures grouped by kind, so that 114 alike are one line and a count.

The first failure of each kind is shown in full when it happens, with the
answer that failed (status and first bytes); the others of that kind are
only counted, and ``summary`` says "and N more like it".
"""

from typing import Dict, List, Optional, TextIO


class FailureLog:
    """The failures of one run, by kind, printed to ``out``."""

    def __init__(self, out: TextIO):
        self._out = out
        self._kinds: Dict[str, List] = {}   # kind -> [first case's name, count]

    def add(self, name: str, kind: str, failure: str, answer: Optional[str]) -> None:
        """Count one failure; print it if it is the first of its kind."""
        seen = self._kinds.get(kind)
        if seen is not None:
            seen[1] += 1
            return
        self._kinds[kind] = [name, 1]
        print(f"  FAIL {name}: {failure}", file=self._out)
        if answer:
            print(f"       the answer: {answer}", file=self._out)

    def summary(self) -> List[str]:
        """One line per kind seen more than once, most frequent first."""
        lines = []
        for kind, (first, count) in sorted(self._kinds.items(), key=lambda item: -item[1][1]):
            if count > 1:
                lines.append(f"  {count:5}  {kind}: {first} is shown above, and "
                             f"{count - 1} more like it")
        return lines
