"""Histogram of the scores with the threshold marked: bins for text (Markdown job summary) and for the card image."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gradshield_lint.fmt import fmt_score


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    count: int
    above: bool  # the bin lies at or above the threshold


def bins(scores: list[float], threshold: float | None, n: int = 16) -> list[Bin]:
    """Split the range of the scores into about `n` equal-width bins, with the threshold always on a bin edge.

    The range below the threshold and the range above it get bins in proportion to their widths (at least one
    each when not empty), so every bin is entirely below or entirely at/above the threshold and a text histogram
    can draw the threshold as a line between two bins. Non-finite scores are ignored.
    """
    xs = sorted(x for x in scores if isinstance(x, (int, float)) and math.isfinite(x))
    if not xs:
        return []
    t = threshold if threshold is not None and math.isfinite(threshold) else None
    lo, hi = xs[0], xs[-1]
    if t is None or t <= lo or t > hi:
        # Threshold outside the data: one run of bins, all on one side.
        above = t is not None and t <= lo
        edges = _edges(lo, hi, n)
        return _count(xs, edges, lambda i: above)
    width_lo, width_hi = t - lo, hi - t
    n_lo = max(1, round(n * width_lo / (width_lo + width_hi)))
    n_hi = max(1, n - n_lo)
    edges = _edges(lo, t, n_lo)[:-1] + _edges(t, hi, n_hi)
    return _count(xs, edges, lambda i: i >= n_lo)


def _edges(lo: float, hi: float, n: int) -> list[float]:
    if hi <= lo:
        return [lo, hi]
    return [lo + (hi - lo) * i / n for i in range(n)] + [hi]


def _count(xs: list[float], edges: list[float], above: Callable[[int], bool]) -> list[Bin]:
    out: list[Bin] = []
    j = 0
    nb = len(edges) - 1
    for i in range(nb):
        lo, hi = edges[i], edges[i + 1]
        c = 0
        last = i == nb - 1
        while j < len(xs) and (xs[j] < hi or last):
            c += 1
            j += 1
        out.append(Bin(lo, hi, c, above(i)))
    return out


def text_histogram(scores: list[float], threshold: float | None, *, n: int = 16, width: int = 30) -> str:
    """A fixed-width text histogram, one bin a line, with a line marking the threshold (for a fenced code block)."""
    bs = bins(scores, threshold, n)
    if not bs:
        return "(no scores)"
    peak = max(b.count for b in bs) or 1
    lo_w = max(len(fmt_score(b.lo)) for b in bs)
    hi_w = max(len(fmt_score(b.hi)) for b in bs)
    count_w = max(len(str(b.count)) for b in bs)
    label_w = lo_w + 4 + hi_w
    t_label = fmt_score(threshold) if threshold is not None and math.isfinite(threshold) else "n/a"
    marker = f"{'-' * (label_w // 2)} threshold {t_label} {'-' * (label_w // 2)}"
    lines: list[str] = []
    marked = False
    for b in bs:
        if b.above and not marked:
            lines.append(marker)
            marked = True
        bar = "#" * (round(width * b.count / peak) if b.count else 0)
        if b.count and not bar:
            bar = "#"
        label = f"{fmt_score(b.lo):>{lo_w}} .. {fmt_score(b.hi):>{hi_w}}"
        lines.append(f"{label} | {b.count:>{count_w}} {bar}".rstrip())
    if not marked:
        lines.append(marker)
    return "\n".join(lines)
