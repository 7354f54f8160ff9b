"""Reading an answer's body as JSON, within limits.

``parse`` decodes the bytes as the course's ``response.json()`` does (the
encoding detected from the first bytes, UTF-8 by default; NaN and Infinity
accepted), but first refuses a body nested deeper than ``MAX_DEPTH``
levels, so that ``[`` repeated 100,000 times is one failure and not a
RecursionError.  Every failure is ``NotJson`` with a one-line message.
"""

import json
import re
from typing import Any

MAX_DEPTH = 100
"""Levels of arrays and objects; the course's answers have at most 3."""

# A JSON string (with its escapes), or one bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


class NotJson(Exception):
    """The body is not JSON this checker reads; ``kind`` names why in a few words."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def too_deep(body: bytes) -> bool:
    """Do arrays and objects nest more than MAX_DEPTH levels in ``body``?
    (Brackets inside strings do not count; the text need not be valid JSON.)"""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for token in _TOKENS.finditer(body):
        first = token.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif first in _CLOSERS:
            depth -= 1
    return False


def parse(body: bytes) -> Any:
    """The JSON value of ``body``; NotJson if it is not JSON or nests too deep."""
    if too_deep(body):
        raise NotJson("nested too deep", f"nested deeper than {MAX_DEPTH} levels (not parsed)")
    try:
        return json.loads(body)
    except RecursionError:   # deep nesting the scan did not see: never expected
        raise NotJson("nested too deep", "nested too deep to parse") from None
    except ValueError as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise NotJson("not JSON", f"not JSON ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 80 else text[:77] + "..."
