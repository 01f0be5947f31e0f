"""A threshold with a stated false-alarm rate: conformal p-values against a reference of accepted rows.

With the scores a₁ ≥ a₂ ≥ … ≥ aₙ of n accepted rows, a new row scoring s gets

    p(s) = (1 + #{i : aᵢ ≥ s}) / (n + 1)

the share of accepted rows (the new one counted in) that score at least as high. When the accepted rows and the new
row are exchangeable (drawn from the same benign population), P(p ≤ α) ≤ α for every α: flagging rows with
p ≤ `fpr` flags at most `fpr` of new benign rows, whatever the score's distribution (numpy only; no fitting).

`p(s) ≤ fpr` ⟺ `#{aᵢ ≥ s} ≤ m` with m = ⌊fpr·(n+1)⌋ − 1 ⟺ `s > a₍ₘ₊₁₎` (the (m+1)-th largest score). So the
rule is one stored number, the threshold a₍ₘ₊₁₎, compared as every other threshold (flagged when score > value):
a check never re-fits on the rows it judges, and split invocations agree.

Small references: with n + 1 < 1/fpr no score can reach p ≤ fpr (the smallest p is 1/(n+1)). Flagging nothing
would let everything through silently, so the threshold is then the largest accepted score (rows above every
accepted row are flagged, at p = 1/(n+1)); `details["fpr_achieved"]` says the rate that gives, and reports show it.

Assumption, stated: the reference rows are benign. A harmful row among them raises the threshold for rows scoring
like it (it counts as "accepted"); for a baseline built from data that may hold harmful rows use the mixture test
(`threshold.method: mixture`), which looks for a harmful sub-population instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradshield_lint.lint.threshold import ThresholdResult

DEFAULT_FPR = 0.01


def _sorted_finite(reference: object) -> np.ndarray:
    x = np.asarray(reference, dtype=np.float64).ravel()
    return np.sort(x[np.isfinite(x)])


def p_values(reference: object, scores: object) -> np.ndarray:
    """Conformal p-value of each score against the reference: (1 + #{ref ≥ s}) / (n + 1). With an empty reference
    every p is 1 (nothing to compare with); a NaN score gets p = 1 (never flagged)."""
    ref = _sorted_finite(reference)
    s = np.asarray(scores, dtype=np.float64).ravel()
    at_least = ref.size - np.searchsorted(ref, s, side="left")  # #{ref ≥ s}
    p = (1.0 + at_least) / (ref.size + 1.0)
    return np.where(np.isnan(s), 1.0, p)


def p_value(reference: object, score: float) -> float:
    return float(p_values(reference, [score])[0])


def conformal_threshold(reference: object, fpr: float = DEFAULT_FPR) -> ThresholdResult:
    """The threshold t with `score > t` ⟺ `p(score) ≤ fpr` (module doc), or, for a reference too small for `fpr`,
    the largest reference score. +inf for an empty reference."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie strictly between 0 and 1, got {fpr}")
    ref = _sorted_finite(reference)
    n = int(ref.size)
    details = {"n": float(n), "fpr": float(fpr)}
    if n == 0:
        return ThresholdResult(math.inf, "conformal", "fpr", 0, {**details, "rank": 0.0, "fpr_achieved": 1.0})
    # m = ⌊fpr(n+1)⌋ − 1, computed with a little slack so that fpr·(n+1) landing on an integer is not lost to rounding
    m = math.floor(fpr * (n + 1) + 1e-9) - 1
    small = m < 0
    m = max(m, 0)
    value = float(ref[n - 1 - m])  # the (m+1)-th largest
    achieved = (1.0 + m) / (n + 1.0)
    details.update(rank=float(m + 1), fpr_achieved=achieved, small_reference=1.0 if small else 0.0)
    return ThresholdResult(value, "conformal", "fpr", 0, details)


def stated_rate(threshold: ThresholdResult) -> float | None:
    """The false-alarm rate a conformal threshold gives (None for other methods)."""
    if threshold.method != "conformal":
        return None
    achieved = threshold.details.get("fpr_achieved")
    fpr = threshold.details.get("fpr")
    vals = [float(v) for v in (achieved, fpr) if v is not None and math.isfinite(float(v))]
    return max(vals) if vals else None


def describe(threshold: ThresholdResult) -> str:
    """How a threshold was found, in words (for the CLI's messages)."""
    if threshold.method != "conformal":
        return threshold.method
    d = threshold.details
    n, fpr = int(d.get("n", 0)), float(d.get("fpr", DEFAULT_FPR))
    if d.get("small_reference", 0.0) >= 1.0:
        need = math.ceil(1.0 / fpr) - 1
        return (
            f"conformal; {n} accepted rows are too few for fpr {fpr:g} (it needs at least {need}): rows above every "
            f"accepted row are flagged, about {100 * float(d.get('fpr_achieved', 1.0)):.3g} % false alarms"
        )
    return f"conformal: p-value ≤ {fpr:g}, about {100 * fpr:.3g} % false alarms, over {n} accepted rows"


__all__: Sequence[str] = ["DEFAULT_FPR", "conformal_threshold", "describe", "p_value", "p_values", "stated_rate"]
