"""Adaptive threshold on FIHS scores (numpy/scipy only; no torch).

GradShield removes high-FIHS rows with a threshold found without knowing the harmful fraction. Two ways:

1. **Distribution rule** (`find_threshold(method="auto")`): a likelihood-ratio test (LRT) of one Gaussian against a
   two-component Gaussian mixture fitted by EM. When the mixture wins by more than `lrt_margin` *and* its high
   component is clearly separated from the low one, the threshold is the decision boundary between them (method
   ``"gmm"``); otherwise it is the robust ``median + k·σ`` (method ``"sigma"``).
2. **Binary search** (`binary_search_threshold`, `find_threshold(method="search")`) over the sorted unique scores
   with a pluggable acceptance `Criterion`. `DistributionCriterion` is provided here; a finetune-and-measure
   criterion plugs into the same protocol.

Conventions
-----------
* A row is **flagged** when its score is strictly greater than the threshold (`flagged`); a row whose score equals
  the threshold is kept. A threshold of ``+inf`` flags nothing.
* Non-finite scores (NaN, ±inf) are ignored when fitting; they are still compared with the threshold by callers.

Decisions (documented defaults)
-------------------------------
* **LRT margin.** The LRT of a normal mixture against one normal has no χ² limit (the null sits on the boundary of
  the parameter space), so a fixed χ² quantile is wrong. The default margin is the BIC penalty for the mixture's
  three extra parameters (one mean, one variance, one weight), ``3·ln(n)``, with a floor of `LRT_MARGIN_FLOOR` (24):
  ``lrt_margin = max(3·ln n, 24)`` (24 up to n ≈ 3,000). The floor is there because the null statistic of this EM
  on single-Gaussian samples barely depends on n, so the pure BIC penalty is too small for small samples and lets
  clean data sets split (the measurement: bench/QUALITY.md, "Figures behind the code's defaults").
* **Separation.** The high component must have the larger mean and Ashman's D
  ``= √2·|μ_hi−μ_lo| / √(σ_lo²+σ_hi²)`` of at least `min_separation` (default 2, the usual "clean separation"
  bound). Heavy tails (e.g. Student-t) make the LRT large but fit a narrow and a wide component around the same
  mean: D is small, so no split is made inside the bulk.
* **Bimodality.** The fitted mixture density must have two modes (it dips between the means and rises again).
  Two overlapping components that only model skew or a short tail make a unimodal density; splitting there would
  cut the bulk in two.
* **Minority.** The high component must weigh less than `MAX_HIGH_WEIGHT` (0.5): harmful rows are assumed to be the
  minority. Without this, a chance cluster in the *low* tail of a small sample can become the "low component" and
  the split would remove the bulk. It must also hold about 5 rows' worth of weight (`MIN_HIGH_ROWS`: w·n ≥ 4.5):
  a chance cluster of 3-4 scores in the tail of a small sample is not a population (the sigma rule still flags
  extreme ones).
* **Boundary and its cap.** The boundary is where the weighted densities are equal, between the two means. A narrow,
  far-away high component would put it right next to that component and leave an unflagged gap between the bulk and
  it; so the gmm threshold is ``min(boundary, μ_lo + k·σ_lo)``: never more permissive than the k-sigma rule applied
  to the low component alone. Both numbers are in `details` ("boundary", "cap").
* **Robust sigma rule.** ``median + k·σ`` with ``σ = 1.4826·MAD`` (consistent with the standard deviation for
  Gaussian data), falling back to IQR/1.349 and then the sample standard deviation when the MAD is 0, so a few
  harmful outliers neither drag the centre nor inflate σ. `details` keeps "median"/"sigma" and the plain
  "mean"/"std" for comparison.
* **Tiny inputs.** n = 0: threshold ``+inf`` (nothing to compare against). n < `MIN_ROBUST_N` (8): the sigma rule
  with ``σ = max(1.4826·MAD, sample std)`` since a MAD of a handful of numbers is unreliable. Whatever n, σ is at
  least ``MIN_SIGMA_REL·max(1, max|x|)`` (1e-6 relative) so identical scores still get a threshold strictly above
  them. The mixture is fitted only with at least `MIN_GMM_N` (20) finite, not all equal, scores. Nothing here
  raises on small or degenerate input.
* **EM.** Deterministic: three starts from quantiles (means at the 25/75th, 50/95th and 50/99th percentiles), the
  best final log-likelihood wins; at most `EM_MAX_ITER` (150) iterations each, stopping when the log-likelihood
  gains less than `EM_TOL`. Variances are floored at ``(VAR_FLOOR_REL·scale)²`` with VAR_FLOOR_REL = 0.2 and
  `scale` the robust σ of all the scores: this keeps the likelihood bounded and stops a component from collapsing
  onto a chance cluster of a few nearly equal scores (a much lower floor let such clusters pass the LRT margin). A
  genuinely tight harmful cluster still wins the LRT by a wide margin when it is separated; it is just modelled a
  little wider. Above `MAX_FIT_N` (10,000) scores EM runs on evenly spaced order statistics, so the fit's cost stays
  bounded, and the log-likelihoods are computed on all the scores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

MAD_TO_SIGMA = 1.4826
IQR_TO_SIGMA = 1.0 / 1.349
MIN_ROBUST_N = 8
MIN_GMM_N = 20
MIN_SIGMA_REL = 1e-6
VAR_FLOOR_REL = 0.2
MAX_FIT_N = 10_000
MAX_HIGH_WEIGHT = 0.5
MIN_HIGH_ROWS = 4.5  # "5 rows", with slack for soft EM assignments
DEFAULT_K = 3.0
LRT_MARGIN_FLOOR = 24.0
DEFAULT_MIN_SEPARATION = 2.0
EM_MAX_ITER = 150
EM_TOL = 1e-4
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

METHODS = ("auto", "gmm", "sigma", "fixed", "search")


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold and how it was found.

    `method`: ``"gmm"`` (mixture boundary), ``"sigma"`` (robust median + k·σ), ``"fixed"`` (given), ``"search"``
    (binary search). `criterion`: ``"distribution"`` for gmm/sigma, ``"fixed"``, or the search criterion's name.
    `iterations`: EM iterations (gmm), criterion evaluations (search), 0 otherwise. `details`: the numbers behind it.
    """

    value: float
    method: str
    criterion: str
    iterations: int
    details: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Criterion(Protocol):
    """An acceptance criterion for the binary search.

    ``criterion(scores, threshold)`` returns True when the rows kept at `threshold` (``scores <= threshold``) are
    acceptable. `scores` is the very array given to `binary_search_threshold`, in the caller's order, so a criterion
    built with the rows in that order can select the kept rows with ``scores <= threshold``. Acceptability must be
    monotone: if a threshold is acceptable, every lower one (which removes more rows) is too.
    """

    name: str

    def __call__(self, scores: np.ndarray, threshold: float) -> bool: ...


# ----------------------------------------------------------------------------------------------------------- stats


def _finite(scores: object) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def _min_sigma(x: np.ndarray) -> float:
    return MIN_SIGMA_REL * max(1.0, float(np.max(np.abs(x)))) if x.size else MIN_SIGMA_REL


def robust_center_scale(x: np.ndarray) -> tuple[float, float]:
    """(median, σ) with σ = 1.4826·MAD, falling back to IQR/1.349, then the sample std; floored (see module doc)."""
    x = _finite(x)
    if x.size == 0:
        return 0.0, MIN_SIGMA_REL
    med = float(np.median(x))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(x - med)))
    if x.size < MIN_ROBUST_N:
        sigma = max(sigma, float(np.std(x, ddof=1)) if x.size > 1 else 0.0)
    if sigma <= 0.0:
        q75, q25 = np.percentile(x, [75.0, 25.0])
        sigma = float(q75 - q25) * IQR_TO_SIGMA
    if sigma <= 0.0:
        sigma = float(np.std(x))
    return med, max(sigma, _min_sigma(x))


def default_lrt_margin(n: int) -> float:
    """BIC penalty for the mixture's 3 extra parameters, 3·ln(n), but at least LRT_MARGIN_FLOOR (see module doc)."""
    return max(3.0 * math.log(max(int(n), 2)), LRT_MARGIN_FLOOR)


@dataclass(frozen=True)
class MixtureFit:
    """Two-component 1-D Gaussian mixture (component 0 = low mean, 1 = high mean) and the single Gaussian."""

    n: int
    means: tuple[float, float]
    stds: tuple[float, float]
    weights: tuple[float, float]
    loglik_mixture: float
    loglik_single: float
    mean: float
    std: float
    iterations: int

    @property
    def lrt(self) -> float:
        """Likelihood-ratio statistic 2·(ll_mixture − ll_single), never negative."""
        return max(0.0, 2.0 * (self.loglik_mixture - self.loglik_single))

    @property
    def separation(self) -> float:
        """Ashman's D between the two components."""
        s = math.sqrt(self.stds[0] ** 2 + self.stds[1] ** 2)
        return math.sqrt(2.0) * abs(self.means[1] - self.means[0]) / s if s > 0 else math.inf

    def density(self, x: np.ndarray) -> np.ndarray:
        """The mixture's density at x."""
        out = np.zeros_like(np.asarray(x, dtype=np.float64))
        for m, sd, w in zip(self.means, self.stds, self.weights):
            out += w * np.exp(-0.5 * ((x - m) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))
        return out

    def is_bimodal(self, rel_dip: float = 1e-3) -> bool:
        """True when the mixture density has two modes: between the means (where all modes of a two-Gaussian mixture
        lie) it falls and then rises again by more than `rel_dip` of the dip's depth."""
        m0, m1 = self.means
        if not m1 > m0:
            return False
        d = self.density(np.linspace(m0, m1, 1025))
        running_min = np.minimum.accumulate(d)
        return bool(np.any(d > running_min * (1.0 + rel_dip)))

    def boundary(self) -> float | None:
        """Point between the means where the weighted densities are equal, or None when there is none."""
        (m0, m1), (s0, s1), (w0, w1) = self.means, self.stds, self.weights
        if not m1 > m0 or w0 <= 0 or w1 <= 0:
            return None

        def f(x: float) -> float:  # log(w0 N0) - log(w1 N1): positive on the low side
            return (math.log(w0) - math.log(s0) - 0.5 * ((x - m0) / s0) ** 2) - (
                math.log(w1) - math.log(s1) - 0.5 * ((x - m1) / s1) ** 2
            )

        lo, hi = m0, m1
        flo, fhi = f(lo), f(hi)
        if not (flo > 0 and fhi < 0):
            return None
        for _ in range(200):  # bisection: f is a quadratic, this is exact to float precision well before 200 steps
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if f(mid) > 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def as_details(self) -> dict[str, float]:
        return {
            "n": float(self.n),
            "loglik_single": self.loglik_single,
            "loglik_mixture": self.loglik_mixture,
            "lrt": self.lrt,
            "separation": self.separation,
            "bimodal": 1.0 if self.is_bimodal() else 0.0,
            "mean": self.mean,
            "std": self.std,
            "mean_low": self.means[0],
            "mean_high": self.means[1],
            "std_low": self.stds[0],
            "std_high": self.stds[1],
            "weight_low": self.weights[0],
            "weight_high": self.weights[1],
        }


def _em(z: np.ndarray, init: tuple[float, float, float, float, float], var_floor: float) -> tuple[float, tuple, int]:
    """EM for a 2-component mixture on standardized data z. Returns (loglik, (m0, m1, v0, v1, w1), iterations)."""
    m0, m1, v0, v1, w1 = init
    n = z.size
    zsum = float(z.sum())
    ll_prev = -math.inf
    ll = -math.inf
    it = 0
    for it in range(1, EM_MAX_ITER + 1):  # noqa: B007 - `it` (the iterations run) is reported after the loop
        w1 = min(max(w1, 1e-12), 1.0 - 1e-12)
        d0 = z - m0
        d1 = z - m1
        a = (math.log(1.0 - w1) - 0.5 * math.log(v0)) - d0 * d0 * (0.5 / v0)
        b = (math.log(w1) - 0.5 * math.log(v1)) - d1 * d1 * (0.5 / v1)
        lse = np.logaddexp(a, b)
        ll = float(lse.sum()) - n * _LOG_SQRT_2PI
        r = np.exp(b - lse)  # responsibility of component 1
        n1 = float(r.sum())
        n0 = n - n1
        if n1 < 1e-9 or n0 < 1e-9:  # one component vanished: the mixture degenerates to a single Gaussian
            break
        rz = float(r @ z)
        w1 = n1 / n
        m1 = rz / n1
        m0 = (zsum - rz) / n0
        d0 = z - m0
        d1 = z - m1
        v1 = max(float(r @ (d1 * d1)) / n1, var_floor)
        v0 = max((float(d0 @ d0) - float(r @ (d0 * d0))) / n0, var_floor)
        if ll - ll_prev <= EM_TOL:
            break
        ll_prev = ll
    return ll, (m0, m1, v0, v1, w1), it


def _mixture_loglik(z: np.ndarray, m0: float, m1: float, v0: float, v1: float, w1: float) -> float:
    w1 = min(max(w1, 1e-12), 1.0 - 1e-12)
    a = math.log(1.0 - w1) - 0.5 * math.log(v0) - 0.5 * (z - m0) ** 2 / v0
    b = math.log(w1) - 0.5 * math.log(v1) - 0.5 * (z - m1) ** 2 / v1
    return float(np.logaddexp(a, b).sum()) - z.size * _LOG_SQRT_2PI


def fit_mixture(scores: object) -> MixtureFit | None:
    """Fit one Gaussian and a two-component mixture (EM, deterministic quantile starts). None with fewer than
    MIN_GMM_N finite scores or when they are all equal. Above MAX_FIT_N scores, EM runs on MAX_FIT_N evenly spaced
    order statistics (same shape, bounded cost) and the log-likelihoods are then computed on all the scores.

    EM runs on data standardized by the median and robust σ; the log-likelihoods reported are of the original data.
    """
    x = _finite(scores)
    n = x.size
    if n < MIN_GMM_N or np.unique(x).size < 2:  # too few scores, or all identical: nothing to split
        return None
    center, scale = robust_center_scale(x)
    z = (x - center) / scale
    var_floor = VAR_FLOOR_REL**2
    zm = float(z.mean())
    zv = max(float(z.var()), var_floor)
    ll_single = -0.5 * n * (math.log(2.0 * math.pi * zv) + 1.0)
    zf = z
    if n > MAX_FIT_N:  # fit on evenly spaced order statistics; the log-likelihoods below use all the data
        zf = np.sort(z)[((np.arange(MAX_FIT_N) + 0.5) * (n / MAX_FIT_N)).astype(np.int64)]
    q = np.quantile(z, [0.25, 0.5, 0.75, 0.95, 0.99])
    inits = [
        (q[0], q[2], zv / 4, zv / 4, 0.5),
        (q[1], q[3], zv / 2, zv / 4, 0.1),
        (q[1], q[4], zv / 2, zv / 4, 0.02),
    ]
    best: tuple[float, tuple, int] | None = None
    total_iter = 0
    for init in inits:
        init = (float(init[0]), float(init[1]) if init[1] > init[0] else float(init[0]) + 1.0, *init[2:])
        ll, params, it = _em(zf, init, var_floor)
        total_iter += it
        if best is None or ll > best[0]:
            best = (ll, params, it)
    assert best is not None
    ll_mix, (m0, m1, v0, v1, w1), _ = best
    if zf is not z:
        ll_mix = _mixture_loglik(z, m0, m1, v0, v1, w1)
    if m0 > m1:
        m0, m1, v0, v1, w1 = m1, m0, v1, v0, 1.0 - w1
    if not math.isfinite(ll_mix) or ll_mix < ll_single:
        ll_mix = ll_single  # a mixture nests the single Gaussian
    log_jac = n * math.log(scale)  # densities of x = densities of z / scale
    return MixtureFit(
        n=n,
        means=(center + scale * m0, center + scale * m1),
        stds=(scale * math.sqrt(v0), scale * math.sqrt(v1)),
        weights=(1.0 - w1, w1),
        loglik_mixture=ll_mix - log_jac,
        loglik_single=ll_single - log_jac,
        mean=center + scale * zm,
        std=scale * math.sqrt(zv),
        iterations=total_iter,
    )


def mixture_split(
    fit: MixtureFit | None,
    *,
    lrt_margin: float | None = None,
    min_separation: float = DEFAULT_MIN_SEPARATION,
    max_high_weight: float = MAX_HIGH_WEIGHT,
    force: bool = False,
) -> float | None:
    """The mixture boundary when the data show a separated high *minority* component, else None: LRT > margin,
    D ≥ min_separation, a bimodal mixture density, high weight < max_high_weight and ≥ MIN_HIGH_ROWS rows' worth.
    `force` skips those tests (a boundary between the means is still required)."""
    if fit is None:
        return None
    margin = default_lrt_margin(fit.n) if lrt_margin is None else float(lrt_margin)
    if not force and (
        fit.lrt <= margin
        or fit.separation < min_separation
        or not fit.is_bimodal()
        or fit.weights[1] >= max_high_weight
        or fit.weights[1] * fit.n < MIN_HIGH_ROWS
    ):
        return None
    return fit.boundary()


# -------------------------------------------------------------------------------------------------------- rules


def sigma_threshold(scores: object, k: float = DEFAULT_K) -> ThresholdResult:
    """Robust median + k·σ (σ = 1.4826·MAD, see module doc). +inf for no finite scores."""
    x = _finite(scores)
    if x.size == 0:
        return ThresholdResult(math.inf, "sigma", "distribution", 0, {"n": 0.0, "k": float(k)})
    center, sigma = robust_center_scale(x)
    details = {
        "n": float(x.size),
        "k": float(k),
        "median": center,
        "sigma": sigma,
        "mean": float(x.mean()),
        "std": float(x.std()),
    }
    return ThresholdResult(center + k * sigma, "sigma", "distribution", 0, details)


def gmm_threshold(
    scores: object,
    *,
    k: float = DEFAULT_K,
    lrt_margin: float | None = None,
    min_separation: float = DEFAULT_MIN_SEPARATION,
    force: bool = False,
) -> ThresholdResult:
    """Mixture boundary (capped at μ_lo + k·σ_lo) when the LRT and separation tests pass, else the sigma rule.

    With `force` the boundary is used whenever one exists between the component means (method="gmm")."""
    x = _finite(scores)
    fit = fit_mixture(x)
    sigma = sigma_threshold(x, k)
    if fit is None:
        return sigma
    margin = default_lrt_margin(fit.n) if lrt_margin is None else float(lrt_margin)
    details = {**sigma.details, **fit.as_details(), "lrt_margin": margin, "min_separation": float(min_separation)}
    boundary = mixture_split(fit, lrt_margin=margin, min_separation=min_separation, force=force)
    if boundary is None:
        return ThresholdResult(sigma.value, "sigma", "distribution", 0, details)
    cap = fit.means[0] + k * fit.stds[0]
    details.update(boundary=boundary, cap=cap)
    return ThresholdResult(min(boundary, cap), "gmm", "distribution", fit.iterations, details)


# ------------------------------------------------------------------------------------------------ binary search


class DistributionCriterion:
    """Accepts a threshold when the kept scores (``<= threshold``) look like one clean population: the mixture test
    finds no separated high component (same LRT margin and separation as `find_threshold`), and no kept score lies
    above the robust median + k·σ of the kept set."""

    name = "distribution"

    def __init__(
        self, k: float = DEFAULT_K, lrt_margin: float | None = None, min_separation: float = DEFAULT_MIN_SEPARATION
    ) -> None:
        self.k = float(k)
        self.lrt_margin = lrt_margin
        self.min_separation = float(min_separation)

    def __call__(self, scores: np.ndarray, threshold: float) -> bool:
        x = _finite(scores)
        kept = x[x <= threshold]
        if kept.size < 2:
            return True
        center, sigma = robust_center_scale(kept)
        if float(kept.max()) > center + self.k * sigma:
            return False
        fit = fit_mixture(kept)
        return mixture_split(fit, lrt_margin=self.lrt_margin, min_separation=self.min_separation) is None

    def __repr__(self) -> str:
        return f"DistributionCriterion(k={self.k}, lrt_margin={self.lrt_margin}, min_separation={self.min_separation})"


def binary_search_threshold(
    scores: object,
    criterion: Criterion,
    *,
    tol: float = 0.0,
    max_iter: int = 64,
    progress: Callable[[int, float, bool], None] | None = None,
) -> ThresholdResult:
    """The most permissive acceptable threshold: the largest of the sorted unique scores at which `criterion`
    accepts the kept rows (``scores <= threshold``), i.e. the fewest rows removed.

    Acceptability is assumed monotone (lower thresholds remove more rows and stay acceptable). The search first
    tries the maximum score (remove nothing), then bisects the sorted unique scores: at most
    ``1 + ceil(log2(m))`` criterion evaluations for m unique scores; `iterations` counts them. It stops early when
    the acceptable and rejected candidates are within `tol` of each other, or after `max_iter` evaluations,
    returning the acceptable side. When no candidate is acceptable, the threshold lies just below the minimum
    (everything removed) and ``details["satisfied"] == 0``. `progress(iteration, threshold, accepted)` is called
    after each evaluation. `scores` is passed to the criterion unchanged (finite or not, in the caller's order).
    """
    arr = np.asarray(scores, dtype=np.float64)
    u = np.unique(arr[np.isfinite(arr)])
    name = str(getattr(criterion, "name", type(criterion).__name__))
    started = time.perf_counter()
    m = u.size
    if m == 0:
        return ThresholdResult(math.inf, "search", name, 0, {"n": 0.0, "satisfied": 1.0, "seconds": 0.0})
    iterations = 0

    def accepts(i: int) -> bool:
        nonlocal iterations
        iterations += 1
        ok = bool(criterion(arr, float(u[i])))
        if progress is not None:
            progress(iterations, float(u[i]), ok)
        return ok

    lo, hi = -1, m - 1  # invariant: u[lo] acceptable (lo = -1: "remove everything"), u[hi] rejected
    if accepts(m - 1):
        lo, hi = m - 1, m
    while hi - lo > 1 and iterations < max_iter:
        if lo >= 0 and u[hi] - u[lo] <= tol:
            break
        mid = (lo + hi) // 2
        if accepts(mid):
            lo = mid
        else:
            hi = mid
    satisfied = lo >= 0
    value = float(u[lo]) if satisfied else float(np.nextafter(u[0], -np.inf))
    n_finite = int(np.isfinite(arr).sum())
    kept = int((arr <= value).sum())
    details = {
        "n": float(n_finite),
        "kept": float(kept),
        "removed": float(n_finite - kept),
        "satisfied": 1.0 if satisfied else 0.0,
        "candidates": float(m),
        "rejected_above": float(u[hi]) if hi < m else math.inf,
        "tol": float(tol),
        "seconds": time.perf_counter() - started,
    }
    return ThresholdResult(value, "search", name, iterations, details)


# ---------------------------------------------------------------------------------------------------- front door


def find_threshold(
    scores: object,
    *,
    method: str = "auto",
    k: float = DEFAULT_K,
    lrt_margin: float | None = None,
    value: float | None = None,
    criterion: Criterion | None = None,
    min_separation: float = DEFAULT_MIN_SEPARATION,
    tol: float = 0.0,
    max_iter: int = 64,
) -> ThresholdResult:
    """Find the threshold for `scores`.

    method:
      ``"auto"``   LRT + separation test; mixture boundary ("gmm") if it passes, else robust sigma rule ("sigma").
      ``"gmm"``    the mixture boundary whenever the fit has one (no LRT/separation test); sigma rule otherwise.
      ``"sigma"``  robust median + k·σ.
      ``"fixed"``  `value`, as given.
      ``"search"`` `binary_search_threshold` with `criterion` (default `DistributionCriterion(k, lrt_margin)`).

    Never raises on small, empty or degenerate score sets (see module doc); raises ValueError only for an unknown
    method or ``method="fixed"`` without a `value` (caller errors).
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "fixed":
        if value is None:
            raise ValueError("threshold method 'fixed' needs a value")
        return ThresholdResult(float(value), "fixed", "fixed", 0, {})
    if method == "sigma":
        return sigma_threshold(scores, k)
    if method == "search":
        crit = criterion if criterion is not None else DistributionCriterion(k, lrt_margin, min_separation)
        return binary_search_threshold(scores, crit, tol=tol, max_iter=max_iter)
    return gmm_threshold(scores, k=k, lrt_margin=lrt_margin, min_separation=min_separation, force=method == "gmm")


def flagged(scores: object, threshold: float) -> np.ndarray:
    """Boolean mask of the rows a threshold flags: score > threshold (NaN is never flagged, +inf always is)."""
    return np.asarray(scores, dtype=np.float64) > threshold
