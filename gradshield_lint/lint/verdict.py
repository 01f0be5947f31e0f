"""The verdict on a pull request (or a commit): may it be merged? One test of all its added rows at a stated rate.

Testing each added row at a rate and failing on any finding makes a clean pull request fail more often the larger
it is. This module tests the change as a whole instead: under the null hypothesis that the m added rows are
exchangeable with the n accepted rows of the reference (the baseline's scores), it fails with probability at most
`alpha`, whatever m and n. numpy only; no torch.

**The statistic: an exact tail scan.** Sort the accepted scores a₍₁₎ ≥ a₍₂₎ ≥ … ≥ a₍ₙ₎ and let N_k be the number
of added rows scoring above a₍ₖ₎. Under the null the n + m scores are in uniformly random order, so N_k has a known
(negative hypergeometric) law whatever the scores' distribution:

    P(N_k = j) = C(j+k−1, j) · C(m−j+n−k, m−j) / C(n+m, m)

For each k ≤ K the tail probability P_k = P(N_k ≥ observed N_k) is exact; the statistic is T = min_k P_k (the rank
where the added rows are most unlike the accepted ones), and the pull request's p-value is P(T ≤ observed T) under
the null, computed exactly by a walk over the merged order that stops when any N_k reaches its boundary
(`_scan_p_value`). With m = 1 it is the conformal p-value (1 + #{aᵢ ≥ s}) / (n + 1), so a single-row commit gets
exactly the per-row test. K covers the top `SCAN_SHARE` of the accepted rows (and at least ⌊alpha·(n+1)⌋, so that
the single-row reduction holds): a harmful group shows in the upper tail; a scan over all ranks would spend its
rate on shifts of the whole distribution, which benign changes of topic produce. Compared on the bench
(gradshield_research/bench/pr_verdict.py): this scan, the count above every accepted row alone (k = 1), and
Simes' test on the conformal p-values (the global test of Benjamini–Hochberg).

**Findings: Benjamini–Hochberg** at `fdr` on the added rows' conformal p-values, only when the pull request
fails. Conformal p-values against one reference are positively dependent, so BH controls the false discovery rate
(Bates, Candès, Lei, Romano, Sesia 2023, "Testing for outliers with conformal p-values"); reporting them only when
the pull request fails can only lower it. A failing pull request whose rows BH cannot name one by one (a group
shift, each row only a little high) names the rows above a₍ₖ*₎, the rank the scan chose, with the share of them
that chance alone explains; those are marked as not FDR-controlled.

**Small references.** No single row can reach p ≤ alpha against fewer than ⌈1/alpha⌉ − 1 accepted rows (the
smallest conformal p-value is 1/(n + 1)). The exact scan would still hold its rate there but could never fail a
one-row commit; so below that size the verdict uses GradShield's Gaussian null instead, fitted to the accepted
scores (`gaussian_p`: Student's t predictive law for a new row), and Simes' test on those p-values. It is not distribution-free, and every report names it and the baseline size the exact rule needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradshield_lint.lint.conformal import p_values
from gradshield_lint.schemas import config_default, config_enum

MODES = tuple(config_enum("verdict", "mode"))
SCAN_SHARE = 0.1
"""The exact scan looks at the added rows above each of the top 10 % of the accepted scores."""
GAUSSIAN_MIN = 5
"""Fewer accepted rows than this: no Gaussian can be fitted either; the exact scan is the only rule."""
_REL = 1e-9  # tail probabilities computed twice the same way may still differ in the last bits


@dataclass(frozen=True)
class VerdictOptions:
    """`verdict` in .gradshield.yaml: `mode` "pull-request" (one test of the change at `alpha`, findings at `fdr`)
    or "rows" (each row on its own against the stored threshold, as `threshold.fpr` says)."""

    mode: str = config_default("verdict", "mode")
    alpha: float = config_default("verdict", "alpha")
    fdr: float = config_default("verdict", "fdr")


@dataclass(frozen=True)
class Verdict:
    """The pull request's verdict: `failed` when its p-value is at most `alpha`.

    `rule`: "exact-scan" (distribution-free), "gaussian-null" (a reference smaller than `needed`), "per-row"
    (`verdict.mode: rows`). `rank`/`above`/`expected`: the scan's chosen rank k (the added rows were compared with
    the k-th highest accepted score), how many added rows lie above it, and how many chance would put there
    (m·k/(n+1)). `named`: how many findings the verdict names; `controlled`: whether they are BH's (false discovery
    rate at most `fdr`) or the scan's fallback. `harm`: the sum of the added rows' raw FIHS, what one gradient step
    on all of them does to the proxy H to first order (per unit learning rate); `harm_reference`: the same for as
    many accepted rows (None when the baseline did not record their raw scores). `caveat`: why the added rows'
    scores may not be comparable with the accepted ones (said in every report)."""

    mode: str
    rule: str
    alpha: float
    fdr: float
    failed: bool
    p_value: float
    added: int
    reference: int
    needed: int
    rank: int | None = None
    above: int | None = None
    expected: float | None = None
    named: int = 0
    controlled: bool = True
    harm: float | None = None
    harm_reference: float | None = None
    caveat: str | None = None

    @property
    def small_reference(self) -> bool:
        return self.reference < self.needed


@dataclass(frozen=True)
class Decision:
    """A verdict, the positions (into the added rows) of the rows it names, and each added row's p-value (conformal,
    or the Gaussian null's under that rule)."""

    verdict: Verdict
    named: list[int]
    cut: float
    """The score above which rows are named (for a finding's margin)."""
    p_values: list[float]


def needed_reference(alpha: float) -> int:
    """The fewest accepted rows with which one row can reach a conformal p-value ≤ alpha: 1/(n+1) ≤ alpha."""
    return max(math.ceil(1.0 / alpha - 1e-9) - 1, 1)


def bh(p: np.ndarray, q: float) -> np.ndarray:
    """Benjamini–Hochberg at level q: the positions of the rejected p-values (ascending position order)."""
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(p, kind="stable")
    ok = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m * (1 + _REL))
    if ok.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(order[: ok[-1] + 1])


def simes(p: np.ndarray) -> float:
    """Simes' combined p-value min_i m·p₍ᵢ₎/i (valid for positively dependent p-values)."""
    if p.size == 0:
        return 1.0
    s = np.sort(p)
    return float(min(1.0, np.min(s * p.size / np.arange(1, p.size + 1))))


# ------------------------------------------------------------------------------------------------ the exact scan


class _LogFactorials:
    def __init__(self, upto: int) -> None:
        self.t = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, upto + 1, dtype=np.float64)))])

    def comb(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.t[a] - self.t[b] - self.t[a - b]


def _tails(n: int, m: int, k: int, lf: _LogFactorials) -> np.ndarray:
    """S[c] = P(N_k ≥ c) for c = 0..m+1 under the null."""
    j = np.arange(m + 1)
    logp = lf.comb(j + k - 1, j) + lf.comb(m - j + n - k, m - j) - lf.comb(np.array(n + m), np.array(m))
    pmf = np.exp(logp)
    tail = np.minimum(np.concatenate([np.cumsum(pmf[::-1])[::-1], [0.0]]), 1.0)
    tail[0] = 1.0  # P(N_k ≥ 0), exactly: the sum of the pmf may miss 1 in the last bits
    return tail


def _scan_p_value(n: int, m: int, bounds: np.ndarray) -> float:
    """P(∃k ≤ K: N_k ≥ bounds[k−1]) for a uniformly random order of m added and n accepted rows, with `bounds`
    nondecreasing (m + 1 = unreachable). A walk down the merged order: `g[j]` is the probability of having met the
    k-th accepted row after exactly j added rows without crossing a bound so far."""
    K = bounds.size
    width = int(min(bounds[-1], m + 1))  # states j ≥ the last bound are absorbed whatever the column
    j = np.arange(width, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logg = np.full(width, -np.inf)
        logg[0] = 0.0  # before the first accepted row: no added row seen
        for k in range(K):  # column k: k accepted rows met so far; the (k+1)-th comes next
            a, b = m - j, float(n - k)  # added and accepted rows left
            logq = np.log(a / (a + b))  # the next row in the order is an added one
            cum = np.concatenate([[0.0], np.cumsum(logq[:-1])])
            logh = cum + np.logaddexp.accumulate(logg - cum)  # probability of ever standing at (j, k)
            logg = logh + np.log(b / (a + b))  # then the (k+1)-th accepted row: N_{k+1} = j
            logg[int(min(bounds[k], width)) :] = -np.inf  # crossing the bound: the pull request fails
        survive = float(np.exp(np.logaddexp.reduce(logg))) if width else 0.0
    return float(min(max(1.0 - survive, 0.0), 1.0))


@dataclass(frozen=True)
class Scan:
    p_value: float
    rank: int
    above: int
    expected: float


def scan_share_ranks(n: int, alpha: float) -> int:
    """K: how many of the top accepted scores the scan compares with."""
    return int(min(n, max(1, math.ceil(SCAN_SHARE * (n + 1)), math.floor(alpha * (n + 1) + 1e-9))))


def exact_scan(reference: np.ndarray, scores: np.ndarray, alpha: float, ranks: int | None = None) -> Scan:
    """The exact tail scan (module doc). `reference` sorted ascending, finite; `scores` the added rows' (NaN never
    counts as above). `ranks`: K (default `scan_share_ranks`)."""
    n, m = int(reference.size), int(scores.size)
    if n == 0 or m == 0:
        return Scan(1.0, 0, 0, 0.0)
    K = ranks or scan_share_ranks(n, alpha)
    top = reference[::-1][:K]  # a₍₁₎ ≥ … ≥ a₍K₎
    s = np.sort(np.where(np.isnan(scores), -np.inf, scores))
    above = s.size - np.searchsorted(s, top, side="right")  # N_k: added rows strictly above a₍ₖ₎
    lf = _LogFactorials(n + m)
    tails = [_tails(n, m, k, lf) for k in range(1, K + 1)]
    p_k = np.array([t[c] for t, c in zip(tails, above)])
    best = int(np.argmin(p_k))
    t_obs = float(p_k[best])
    if t_obs >= 1.0:
        return Scan(1.0, best + 1, int(above[best]), m * (best + 1) / (n + 1))
    # bound_k: the fewest added rows above a₍ₖ₎ whose tail probability is ≤ the observed minimum
    bounds = np.array([int(np.argmax(t <= t_obs * (1 + _REL))) if t[-1] <= t_obs else m + 1 for t in tails])
    bounds = np.maximum.accumulate(bounds)
    p = _scan_p_value(n, m, bounds)
    return Scan(max(p, t_obs), best + 1, int(above[best]), m * (best + 1) / (n + 1))


# ------------------------------------------------------------------------------------------------ Gaussian null


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for i in range(1, 300):
        m2 = 2 * i
        aa = i * (b - i) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + i) * (qab + i) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def gaussian_p(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One-sided p-values of `scores` under a Gaussian fitted to `reference`: Student's t predictive law of a new
    row (n − 1 degrees of freedom, scale widened by √(1 + 1/n)), exact for Gaussian scores with the sample standard
    deviation; the scale is the larger of that and 1.4826·MAD, so a reference whose bulk is wider than a few tight
    rows suggest only makes the rule more careful. A median/MAD fit alone would not do: at a dozen rows its scale is
    too noisy for the t law, and clean rows would fail about twice as often as stated."""
    n = reference.size
    mu = float(np.mean(reference))
    sd = float(np.std(reference, ddof=1)) if n > 1 else 0.0
    mad = 1.4826 * float(np.median(np.abs(reference - np.median(reference))))
    sigma = max(sd, mad)
    if not sigma > 0:
        sigma = 1e-12 * max(1.0, abs(mu))
    scale = sigma * math.sqrt(1.0 + 1.0 / n)
    return np.array([1.0 if math.isnan(s) else t_sf((s - mu) / scale, n - 1.0) for s in scores])


# ------------------------------------------------------------------------------------------------ the decision


def decide(
    reference: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    options: VerdictOptions,
    *,
    raw: Sequence[float] | None = None,
    reference_raw_mean: float | None = None,
) -> Decision:
    """The pull request's verdict on its added rows' `scores` against the accepted rows' `reference` scores
    (module doc). `raw`: the added rows' raw FIHS (for `Verdict.harm`); `reference_raw_mean`: the accepted rows'
    mean raw FIHS, when the baseline recorded it."""
    if options.mode not in MODES:
        raise ValueError(f"verdict.mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    alpha, q = float(options.alpha), float(options.fdr)
    ref = np.asarray(reference, dtype=np.float64).ravel()
    ref = np.sort(ref[np.isfinite(ref)])
    s = np.asarray(scores, dtype=np.float64).ravel()
    n, m = int(ref.size), int(s.size)
    needed = needed_reference(alpha)
    harm = float(np.nansum(np.asarray(raw, dtype=np.float64))) if raw is not None and m else None
    harm_ref = (
        m * float(reference_raw_mean) if reference_raw_mean is not None and math.isfinite(reference_raw_mean) else None
    )
    common: dict[str, Any] = dict(
        alpha=alpha, fdr=q, added=m, reference=n, needed=needed, harm=harm, harm_reference=harm_ref
    )
    if m == 0:
        v = Verdict(options.mode, rule_for(n, alpha), failed=False, p_value=1.0, **common)
        return Decision(v, [], math.inf, [])
    if rule_for(n, alpha) == "exact-scan":
        pv = p_values(ref, s)
        sc = exact_scan(ref, s, alpha)
        failed = sc.p_value <= alpha * (1 + _REL)
        named = bh(pv, q) if failed else np.zeros(0, dtype=np.int64)
        controlled = True
        if failed and named.size == 0:  # a group shift no single row shows: the rows above the chosen rank
            named = np.flatnonzero(s > ref[::-1][sc.rank - 1])
            controlled = False
        cut = _cut(ref, s, named)
        v = Verdict(
            options.mode, "exact-scan", failed=failed, p_value=sc.p_value, rank=sc.rank, above=sc.above,
            expected=sc.expected, named=int(named.size), controlled=controlled, **common,
        )  # fmt: skip
        return Decision(v, named.tolist(), cut, pv.tolist())
    gp = gaussian_p(ref, s)
    p = simes(gp)
    failed = p <= alpha * (1 + _REL)
    named = bh(gp, q) if failed else np.zeros(0, dtype=np.int64)
    v = Verdict(options.mode, "gaussian-null", failed=failed, p_value=p, named=int(named.size), **common)
    return Decision(v, named.tolist(), _cut(ref, s, named), gp.tolist())


def rule_for(n: int, alpha: float) -> str:
    """The rule a reference of n accepted rows gets at `alpha` (module doc, "Small references")."""
    return "exact-scan" if n >= needed_reference(alpha) or n < GAUSSIAN_MIN else "gaussian-null"


def _cut(reference: np.ndarray, scores: np.ndarray, named: np.ndarray) -> float:
    """The highest accepted score below every named row (for a finding's margin); +inf when none is named."""
    if named.size == 0:
        return math.inf
    lowest = float(np.min(scores[named]))
    below = reference[reference < lowest]
    return float(below[-1]) if below.size else lowest


def rows_verdict(
    n_flagged: int, added: int, reference: int, options: VerdictOptions, *, harm: float | None = None,
    harm_reference: float | None = None,
) -> Verdict:  # fmt: skip
    """`verdict.mode: rows`: the change fails when any row lies above the stored threshold; no stated rate for the
    change as a whole (p-value NaN)."""
    return Verdict(
        "rows", "per-row", alpha=float(options.alpha), fdr=float(options.fdr), failed=n_flagged > 0,
        p_value=math.nan, added=added, reference=reference, needed=needed_reference(float(options.alpha)),
        named=n_flagged, controlled=False, harm=harm, harm_reference=harm_reference,
    )  # fmt: skip


__all__ = [
    "GAUSSIAN_MIN",
    "MODES",
    "SCAN_SHARE",
    "Decision",
    "Scan",
    "Verdict",
    "VerdictOptions",
    "bh",
    "decide",
    "exact_scan",
    "gaussian_p",
    "needed_reference",
    "rule_for",
    "rows_verdict",
    "simes",
    "t_sf",
]
