"""The course's comparison: ``DeepDiff(data, expected, math_epsilon=0.01) == {}``.

What DeepDiff reports, and so what fails a case here:

* a value whose type is not the expected one's: an ``int`` where a
  ``float`` is expected (``30`` for ``30.0``) and the reverse, ``True`` for
  ``1``, ``null`` for a number;
* numbers of the same type that ``math.isclose(a, b, abs_tol=0.01)`` finds
  apart (so NaN never matches);
* dictionaries with other keys (their order does not matter), lists of
  another length or with other items in order, other strings.

``difference`` returns the first difference found, as a ``Difference``
whose ``kind`` groups like failures together.
"""

import math
from typing import Any, NamedTuple, Optional

TOLERANCE = 0.01
_SHOWN_KEYS = 3


class Difference(NamedTuple):
    """Where and how ``data`` differs from what the course expects.
    ``kind`` is one of "missing keys", "unexpected keys", "type", "value",
    "length"; ``text`` is one line."""

    kind: str
    text: str

    @property
    def other_data(self) -> bool:
        """Is this what an answer computed from other data looks like (other
        keys or other numbers, rather than another type)?"""
        return self.kind in ("missing keys", "unexpected keys", "value")


def difference(data: Any, expected: Any, where: str = "data") -> Optional[Difference]:
    """The first difference DeepDiff would report, or None."""
    if type(data) is not type(expected):   # pylint: disable=unidiomatic-typecheck
        return Difference("type", f"{where}: expected {_typed(expected)}, got {_typed(data)}")
    if isinstance(expected, dict):
        return _dict_difference(data, expected, where)
    if isinstance(expected, list):
        return _list_difference(data, expected, where)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if math.isclose(data, expected, abs_tol=TOLERANCE):
            return None
    elif data == expected:
        return None
    return Difference("value", f"{where}: expected {_short(expected)}, got {_short(data)}")


def _dict_difference(data: dict, expected: dict, where: str) -> Optional[Difference]:
    missing = sorted(set(expected) - set(data))
    extra = sorted(set(data) - set(expected))
    if missing:
        return Difference("missing keys", f"{where}: missing {_keys(missing)}"
                          + (f", unexpected {_keys(extra)}" if extra else ""))
    if extra:
        return Difference("unexpected keys", f"{where}: unexpected {_keys(extra)}")
    for key in expected:
        found = difference(data[key], expected[key], f"{where}[{key!r}]")
        if found:
            return found
    return None


def _list_difference(data: list, expected: list, where: str) -> Optional[Difference]:
    if len(data) != len(expected):
        return Difference("length", f"{where}: expected {len(expected)} items, got {len(data)}")
    for index, (got, want) in enumerate(zip(data, expected)):
        found = difference(got, want, f"{where}[{index}]")
        if found:
            return found
    return None


def _keys(keys: list) -> str:
    shown = ", ".join(_short(key) for key in keys[:_SHOWN_KEYS])
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return f"key{'s' if len(keys) > 1 else ''} {shown}{more}"


def _typed(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
