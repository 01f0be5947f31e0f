"""JSON decoding that turns the interpreter's own limits into ordinary `json.JSONDecodeError`s.

`json.loads` has two failure modes that are not `JSONDecodeError`: a value nested deeper than the recursion limit
(about a thousand levels: a 100,000-deep line raises `RecursionError`) and an integer longer than
`sys.get_int_max_str_digits()` (4,300 digits by default: `ValueError`). Both come from hostile or broken files, not
from bugs, so every reader of dataset rows, CSV cells and the baseline decodes through here: the error becomes a
`JSONDecodeError` whose position points at the offending place, and the callers' existing handlers report it with
the file and line like any other malformed JSON.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

_STRING = r'"(?:[^"\\]|\\.)*"'
_NESTING = re.compile(rf"{_STRING}|[\[{{]|[\]}}]", re.DOTALL)

TOO_DEEP = "nested too deeply (lists/objects inside each other beyond what the parser allows)"
TOO_LONG = "integer too long ({digits} digits; at most {limit} are read)"


def _deepest(doc: str, start: int) -> int:
    """Position of the deepest opening bracket of the value starting at `start` (`start` if none)."""
    depth = best = 0
    pos = start
    for m in _NESTING.finditer(doc, start):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > best:
                best, pos = depth, m.start()
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                break
    return pos


def _long_integer(doc: str, start: int, limit: int) -> tuple[int, int]:
    """(position, digits) of the first integer longer than `limit` digits at or after `start`, strings skipped."""
    pattern = re.compile(rf"{_STRING}|-?\d{{{limit + 1},}}(?![\d.eE])", re.DOTALL)
    for m in pattern.finditer(doc, start):
        if not m.group().startswith('"'):
            return m.start(), len(m.group().lstrip("-"))
    return start, limit + 1


def _is_digit_limit(exc: ValueError) -> bool:
    return not isinstance(exc, json.JSONDecodeError) and "integer string conversion" in str(exc)


def _translate(exc: BaseException, doc: str, start: int) -> json.JSONDecodeError:
    if isinstance(exc, RecursionError):
        return json.JSONDecodeError(TOO_DEEP, doc, _deepest(doc, start))
    limit = sys.get_int_max_str_digits()
    pos, digits = _long_integer(doc, start, limit)
    return json.JSONDecodeError(TOO_LONG.format(digits=digits, limit=limit), doc, pos)


def loads(doc: str, **kwargs: Any) -> Any:
    """`json.loads(doc, **kwargs)`; too deep or too long an integer raises `JSONDecodeError` at its position."""
    try:
        return json.loads(doc, **kwargs)
    except RecursionError as exc:
        raise _translate(exc, doc, 0) from None
    except ValueError as exc:
        if _is_digit_limit(exc):
            raise _translate(exc, doc, 0) from None
        raise


def raw_decode(decoder: json.JSONDecoder, doc: str, idx: int = 0) -> tuple[Any, int]:
    """`decoder.raw_decode(doc, idx)` with the same translation as `loads`."""
    try:
        return decoder.raw_decode(doc, idx)
    except RecursionError as exc:
        raise _translate(exc, doc, idx) from None
    except ValueError as exc:
        if _is_digit_limit(exc):
            raise _translate(exc, doc, idx) from None
        raise


__all__ = ["TOO_DEEP", "TOO_LONG", "loads", "raw_decode"]
