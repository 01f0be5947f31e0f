"""How numbers and counts read on a terminal, in a report or a comment: one spelling everywhere.

Scores (FIHS, thresholds, margins above a threshold, histogram edges) are signed fixed-point with four decimals,
`+0.1234`, so columns line up and a sign is never lost; small ones too (`+0.0010`, not `+9.970e-04` among
`+0.0172`). Only a magnitude that fixed-point would flatten to +0.0000 (a non-zero below 0.00005: raw dot
products, `normalize: false`) or make very long (1e5 and above) switches to `+1.234e-05`. JSON keeps the full float.
"""

from __future__ import annotations

import math


def fmt_score(x: float | None) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    fixed = f"{x:+.4f}"
    # Judged on the rounded text, not on a cut-off of x: a value that rounds to a non-zero four-decimal number is
    # shown as one, whatever side of a boundary its float lies.
    if abs(x) >= 1e5 or (x != 0 and float(fixed) == 0):
        return f"{x:+.3e}"
    return fixed


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 row`, `2 rows`, `0 rows`: the count and the noun that agrees with it."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
