"""The adaptive threshold on synthetic score sets with known mixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradshield_lint.lint.threshold import (
    Criterion,
    DistributionCriterion,
    ThresholdResult,
    binary_search_threshold,
    default_lrt_margin,
    find_threshold,
    fit_mixture,
    flagged,
)


def mixture(seed: int, n_low: int = 950, n_high: int = 50, mu: float = 6.0, sd: float = 0.5):
    rng = np.random.default_rng(seed)
    low = rng.normal(0.0, 1.0, n_low)
    high = rng.normal(mu, sd, n_high)
    x = np.concatenate([low, high])
    order = rng.permutation(x.size)  # harmful rows are scattered through the data, not at the end
    return x[order], low, high


# ------------------------------------------------------------------------------------------------ distribution rule


@pytest.mark.parametrize("seed", range(5))
def test_two_components_are_separated(seed):
    x, low, high = mixture(seed)
    t = find_threshold(x)
    assert t.method == "gmm" and t.criterion == "distribution"
    assert low.mean() < t.value < high.mean()
    assert (high > t.value).mean() >= 0.90  # catches the harmful component
    assert (low <= t.value).mean() >= 0.99  # keeps the benign one
    d = t.details
    assert d["lrt"] > d["lrt_margin"] and d["separation"] >= 2.0
    assert d["weight_high"] == pytest.approx(0.05, abs=0.02)
    assert d["mean_high"] == pytest.approx(6.0, abs=0.3)
    assert t.value == pytest.approx(min(d["boundary"], d["cap"]))
    assert t.iterations > 0


def test_small_and_overlapping_components():
    # 2% harmful, farther out; 10% harmful, closer in: both still found, both still keep the bulk.
    for n_low, n_high, mu, sd in [(9800, 200, 5.0, 0.5), (900, 100, 4.0, 0.7)]:
        x, low, high = mixture(1, n_low, n_high, mu, sd)
        t = find_threshold(x)
        assert t.method == "gmm"
        assert (high > t.value).mean() >= 0.90
        assert (low <= t.value).mean() >= 0.99


def test_boundary_is_where_weighted_densities_meet():
    x, _, _ = mixture(0, 800, 200, 3.0, 0.7)
    fit = fit_mixture(x)
    b = fit.boundary()
    assert fit.means[0] < b < fit.means[1]

    def wdens(i: int, v: float) -> float:
        m, s, w = fit.means[i], fit.stds[i], fit.weights[i]
        return w * math.exp(-0.5 * ((v - m) / s) ** 2) / s

    assert wdens(0, b) == pytest.approx(wdens(1, b), rel=1e-6)


@pytest.mark.parametrize("n", [1000, 100_000])
def test_single_gaussian_keeps_nearly_everything(n):
    x = np.random.default_rng(n).normal(0.0, 1.0, n)
    t = find_threshold(x)
    assert t.method == "sigma"
    assert (x <= t.value).mean() >= 0.995
    assert t.details["lrt"] <= t.details["lrt_margin"]


def test_default_margin_rejects_single_gaussians():
    """The default margin max(3·ln n, 24): on single-Gaussian samples, n = 50 .. 100,000, the mixture test (nearly)
    never passes and no split is ever made."""
    assert default_lrt_margin(50) == 24.0 and default_lrt_margin(100_000) == pytest.approx(3 * math.log(100_000))
    for n, seeds in [(50, 100), (100, 100), (1000, 30), (10_000, 5), (100_000, 2)]:
        exceed = 0
        for s in range(seeds):
            x = np.random.default_rng(1000 + s).normal(5.0, 2.0, n)
            fit = fit_mixture(x)
            exceed += fit.lrt > default_lrt_margin(n)
            assert find_threshold(x).method == "sigma", (n, s)
        assert exceed <= 1, (n, exceed)


def test_a_few_harmful_rows_in_a_small_data_set_are_found():
    x, low, high = mixture(5, 95, 5, 6.0, 0.5)
    t = find_threshold(x)
    assert t.method == "gmm"
    assert flagged(high, t.value).all() and (low <= t.value).all()


@pytest.mark.parametrize("n", [1000, 100_000])
def test_heavy_tails_do_not_split_the_bulk(n):
    x = np.random.default_rng(7).standard_t(5, size=n)
    t = find_threshold(x)
    assert t.method == "sigma"  # the LRT is large, but the components are not separated
    assert t.details["lrt"] > t.details["lrt_margin"] and t.details["separation"] < 2.0
    assert t.value > np.quantile(x, 0.975)
    assert (x <= t.value).mean() >= 0.98


def test_sigma_rule_is_robust_to_outliers():
    x = np.concatenate([np.random.default_rng(3).normal(0.0, 1.0, 1000), np.full(5, 100.0)])
    t = find_threshold(x, method="sigma")
    assert t.value < 3.5  # plain mean + 3·std would be ~10
    assert t.details["std"] > 3.0 > t.details["sigma"]
    for method in ("auto", "sigma", "search"):
        t = find_threshold(x, method=method)
        assert flagged(x, t.value)[-5:].all()
        assert (x[:-5] <= t.value).mean() >= 0.99


def test_scale_and_shift_invariance():
    x, _, _ = mixture(2)
    t = find_threshold(x)
    t2 = find_threshold(1e-3 * x + 0.5)
    assert t2.method == t.method
    assert t2.value == pytest.approx(1e-3 * t.value + 0.5, rel=1e-6)


def test_deterministic_and_order_free():
    x, _, _ = mixture(4)
    a, b = find_threshold(x), find_threshold(x.copy())
    assert a == b
    c = find_threshold(x[::-1])
    assert c.method == a.method and c.value == pytest.approx(a.value, rel=1e-9)


@pytest.mark.parametrize(
    "scores",
    [
        [],
        [1.0],
        [1.0, 1.0],
        [1.0, 2.0, 3.0],
        [5.0] * 30,
        [0.0] * 25 + [1.0] * 5,
        [math.nan, 1.0, 2.0],
        [math.inf, -math.inf, math.nan],
        list(range(10)),
    ],
)
@pytest.mark.parametrize("method", ["auto", "gmm", "sigma", "search"])
def test_tiny_and_degenerate_inputs_never_crash(scores, method):
    t = find_threshold(scores, method=method)
    assert isinstance(t, ThresholdResult)
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        assert t.value == math.inf
        return
    assert not math.isnan(t.value)
    if method != "search" and len(set(finite)) == 1:
        assert t.value > finite[0]  # identical scores: nothing flagged
    if len(finite) < 8 and method != "search":
        assert t.value >= max(finite)  # a handful of scores: the sigma rule with σ ≥ sample std keeps them all


def test_fixed_and_bad_methods():
    t = find_threshold([1.0, 2.0], method="fixed", value=1.5)
    assert (t.value, t.method, t.criterion, t.iterations) == (1.5, "fixed", "fixed", 0)
    with pytest.raises(ValueError, match="needs a value"):
        find_threshold([1.0], method="fixed")
    with pytest.raises(ValueError, match="unknown threshold method"):
        find_threshold([1.0], method="median")


def test_lrt_margin_is_configurable():
    x, _, _ = mixture(0)
    assert find_threshold(x, lrt_margin=1e9).method == "sigma"
    single = np.random.default_rng(0).normal(size=1000)
    forced = find_threshold(single, method="gmm")  # no LRT test: the boundary is used whenever one exists
    assert forced.method in ("gmm", "sigma")


def test_flagged_is_strictly_above():
    assert flagged([1.0, 2.0, 3.0, math.nan, math.inf], 2.0).tolist() == [False, False, True, False, True]


# ------------------------------------------------------------------------------------------------ binary search


class CountingCriterion:
    """Toy monotone criterion: acceptable iff every kept score is at most `limit`."""

    name = "toy"

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def __call__(self, scores: np.ndarray, threshold: float) -> bool:
        self.calls += 1
        self.seen.append(scores)
        return bool(scores[scores <= threshold].max(initial=-math.inf) <= self.limit)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 4097])
def test_binary_search_finds_the_largest_acceptable_threshold(n):
    x = np.random.default_rng(n).normal(size=n)
    limit = float(np.quantile(x, 0.9))
    crit = CountingCriterion(limit)
    t = binary_search_threshold(x, crit)
    assert isinstance(crit, Criterion)
    expected = x[x <= limit].max()
    assert t.value == expected and t.method == "search" and t.criterion == "toy"
    assert t.iterations == crit.calls <= math.log2(n) + 2
    assert t.details["satisfied"] == 1.0
    assert t.details["removed"] == (x > expected).sum()
    assert all(s is crit.seen[0] for s in crit.seen)  # the caller's array, unchanged, in the caller's order
    assert t.details["seconds"] >= 0.0


def test_binary_search_edge_cases():
    x = np.arange(100, dtype=float)
    t = binary_search_threshold(x, CountingCriterion(1e9))  # everything acceptable: nothing removed, one call
    assert t.value == 99.0 and t.iterations == 1 and t.details["removed"] == 0
    t = binary_search_threshold(x, CountingCriterion(-1.0))  # nothing acceptable: everything removed, flagged as such
    assert t.value < 0.0 and t.details["satisfied"] == 0.0 and flagged(x, t.value).all()
    assert t.iterations <= math.log2(100) + 2
    t = binary_search_threshold([], CountingCriterion(0.0))
    assert t.value == math.inf and t.iterations == 0
    dup = np.repeat(np.arange(10, dtype=float), 50)  # duplicates: searched over the unique scores
    t = binary_search_threshold(dup, CountingCriterion(6.5))
    assert t.value == 6.0 and t.iterations <= math.log2(10) + 2


def test_binary_search_tol_and_max_iter_stay_on_the_acceptable_side():
    x = np.linspace(0.0, 1.0, 10_001)
    exact = binary_search_threshold(x, CountingCriterion(0.73))
    coarse = binary_search_threshold(x, CountingCriterion(0.73), tol=0.01)
    capped = binary_search_threshold(x, CountingCriterion(0.73), max_iter=4)
    assert coarse.iterations < exact.iterations and capped.iterations == 4
    for t in (exact, coarse, capped):
        assert t.value <= 0.73
    assert 0.72 <= coarse.value <= 0.73
    assert exact.value == pytest.approx(0.73)


def test_binary_search_reports_progress():
    calls = []
    t = binary_search_threshold(
        np.arange(64.0), CountingCriterion(20.0), progress=lambda i, v, ok: calls.append((i, v, ok))
    )
    assert [c[0] for c in calls] == list(range(1, t.iterations + 1))
    assert calls[0] == (1, 63.0, False)


@pytest.mark.parametrize("seed", range(3))
def test_distribution_criterion_search_on_a_mixture(seed):
    x, low, high = mixture(seed)
    t = find_threshold(x, method="search")
    assert t.method == "search" and t.criterion == "distribution"
    assert low.mean() < t.value < high.mean()
    assert (high > t.value).mean() >= 0.90
    assert (low <= t.value).mean() >= 0.99
    assert t.iterations <= math.log2(x.size) + 2


def test_distribution_criterion_search_on_a_single_gaussian():
    x = np.random.default_rng(11).normal(size=2000)
    t = binary_search_threshold(x, DistributionCriterion())
    assert (x <= t.value).mean() >= 0.995
    crit = DistributionCriterion()
    assert crit(x, t.value) and isinstance(crit, Criterion)
    assert not crit(np.concatenate([x, [50.0]]), 50.0)  # an outlier kept: rejected


def test_find_threshold_search_takes_a_pluggable_criterion():
    x = np.arange(1000, dtype=float)
    t = find_threshold(x, method="search", criterion=CountingCriterion(499.5))
    assert (t.value, t.method, t.criterion) == (499.0, "search", "toy")
    assert t.iterations <= math.log2(1000) + 2
