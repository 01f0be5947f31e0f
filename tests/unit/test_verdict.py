"""The pull-request verdict (lint/verdict.py): its error rate at every size, its reduction to the per-row test for
one row, the exactness of its p-value, its power against a small shifted group, and the small-baseline rule.

Synthetic scores: the guarantee is distribution-free, so any continuous distribution shows it; each check here would
fail for the per-row rule it replaces (a clean 1,000-row change then fails most of the time)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from gradshield_lint.lint.conformal import conformal_threshold, p_values
from gradshield_lint.lint.verdict import (
    VerdictOptions,
    bh,
    decide,
    exact_scan,
    gaussian_p,
    needed_reference,
    scan_share_ranks,
    t_sf,
)

ALPHA = 0.01
OPTS = VerdictOptions(mode="pull-request", alpha=ALPHA, fdr=0.1)


def clean_failure_rate(n: int, m: int, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    fails = 0
    for _ in range(trials):
        x = rng.standard_normal(n + m)
        fails += decide(x[:n], x[n:], OPTS).verdict.failed
    return fails / trials


@pytest.mark.parametrize(("n", "m", "trials"), [(300, 1, 4000), (300, 1000, 600), (100, 10, 2000)])
def test_a_clean_change_fails_at_most_alpha_of_the_time_whatever_its_size(n, m, trials):
    rate = clean_failure_rate(n, m, trials, seed=n + m)
    se = math.sqrt(ALPHA * (1 - ALPHA) / trials)
    assert rate <= ALPHA + 3 * se, (n, m, rate)


def test_one_added_row_gets_exactly_the_per_row_test():
    rng = np.random.default_rng(1)
    for n in (99, 120, 300, 1000):
        ref = rng.standard_normal(n)
        threshold = conformal_threshold(ref, ALPHA).value
        for s in np.concatenate([rng.standard_normal(20) * 2, np.sort(ref)[-3:], [np.max(ref) + 1e-9]]):
            d = decide(ref, [s], OPTS)
            p = p_values(ref, [s])[0]
            assert d.verdict.p_value == pytest.approx(p, rel=1e-9) or (p > 0.1 and d.verdict.p_value >= p)
            assert d.verdict.failed == (s > threshold) == (p <= ALPHA), (n, s)
            assert d.named == ([0] if d.verdict.failed else [])


def test_the_p_value_is_exact_over_every_arrangement_of_the_ranks():
    """n = 9 accepted and m = 4 added rows: enumerate all C(13, 4) = 715 equally likely rank arrangements, compute
    the statistic T = min_k P_k of each from its ranks, and check P(T ≤ t) for the observed t against the p-value."""
    n, m = 9, 4
    K = scan_share_ranks(n, ALPHA)
    values = np.arange(n + m, dtype=np.float64)

    def t_stat(added_pos: tuple[int, ...]) -> float:
        mask = np.zeros(n + m, dtype=bool)
        mask[list(added_pos)] = True
        return min_tail(np.sort(values[~mask]), values[mask], K)

    ts = np.array([t_stat(c) for c in itertools.combinations(range(n + m), m)])
    for observed in [(12, 11, 3, 0), (12, 10, 9, 8), (12, 5, 4, 1), (7, 6, 5, 4)]:
        mask = np.zeros(n + m, dtype=bool)
        mask[list(observed)] = True
        t_obs = min_tail(np.sort(values[~mask]), values[mask], K)
        exact = float(np.mean(ts <= t_obs * (1 + 1e-9)))
        got = exact_scan(np.sort(values[~mask]), values[mask], ALPHA).p_value
        assert got == pytest.approx(exact, rel=1e-9, abs=1e-12), (observed, got, exact)


def min_tail(ref_sorted: np.ndarray, added: np.ndarray, K: int) -> float:
    """min over k ≤ K of P(N_k ≥ observed N_k), with N_k's law from scipy's negative hypergeometric
    (added rows before the k-th accepted one in a random order)."""
    n, m = ref_sorted.size, added.size
    best = 1.0
    for k in range(1, K + 1):
        a_k = ref_sorted[::-1][k - 1]
        obs = int(np.sum(added > a_k))
        if obs == 0:
            continue
        # scipy.stats.nhypergeom(M, n, r): successes before the r-th failure; here successes are the added rows
        tail = float(stats.nhypergeom(n + m, m, k).sf(obs - 1))
        best = min(best, tail)
    return best


def test_a_few_shifted_rows_among_many_clean_ones_fail_the_change():
    rng = np.random.default_rng(3)
    fails, fdp = 0, []
    for _ in range(200):
        ref = rng.standard_normal(300)
        added = np.concatenate([rng.standard_normal(100), rng.standard_normal(10) + 4.0])
        d = decide(ref, added, OPTS)
        fails += d.verdict.failed
        if d.named:
            fdp.append(np.mean(np.array(d.named) < 100))
    assert fails / 200 >= 0.95
    assert np.mean(fdp) <= 0.1 + 0.03  # BH's false discovery rate, within sampling error


def test_the_named_rows_hold_their_false_discovery_rate():
    """Benjamini–Hochberg's findings (`controlled`): their false discovery proportion averages at most fdr. The
    fallback for a change that fails with no row BH can name is counted apart: it names the rows above the scan's
    rank, and chance explains about `expected` of them."""
    rng = np.random.default_rng(4)
    fdp, fallback = [], 0
    for _ in range(300):
        ref = rng.standard_normal(500)
        added = np.concatenate([rng.standard_normal(200), rng.standard_normal(20) + 2.5])
        d = decide(ref, added, OPTS)
        if d.verdict.controlled:
            fdp.append(np.mean(np.array(d.named) < 200) if d.named else 0.0)
        else:
            fallback += 1
            v = d.verdict
            assert v.failed and v.named == v.above and v.expected is not None and v.expected < v.above
    assert np.mean(fdp) <= 0.1 + 3 * np.std(fdp) / math.sqrt(len(fdp))
    assert fallback < 300


def test_a_passing_change_names_no_rows():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal(300)
    d = decide(ref, rng.standard_normal(50), OPTS)
    assert not d.verdict.failed and d.named == [] and d.verdict.named == 0


def test_a_group_shift_no_single_row_shows_still_fails_and_names_the_rows_above_the_chosen_rank():
    """Many rows each only a little high: the scan fails the change; BH at the FDR names nobody, so the rows above
    the scan's rank are named and marked as not FDR-controlled."""
    ref = np.linspace(0, 1, 1000)
    added = np.concatenate([np.linspace(0, 0.9, 500), np.full(60, 0.96)])
    d = decide(ref, added, VerdictOptions(mode="pull-request", alpha=0.01, fdr=0.01))
    v = d.verdict
    assert v.failed and not v.controlled and v.rank is not None and v.expected is not None
    assert v.named == v.above == len(d.named) and v.expected < v.above
    assert all(added[i] > ref[::-1][v.rank - 1] for i in d.named)


def test_with_twelve_accepted_rows_a_clean_commit_passes_and_three_harmful_rows_fail():
    rng = np.random.default_rng(6)
    assert needed_reference(ALPHA) == 99
    clean_fails, harmful_fails = 0, 0
    trials = 2000
    for _ in range(trials):
        ref = rng.standard_normal(12)
        clean = decide(ref, rng.standard_normal(2), OPTS)
        assert clean.verdict.rule == "gaussian-null" and clean.verdict.small_reference
        clean_fails += clean.verdict.failed
        harmful = decide(ref, rng.standard_normal(3) + 8.0, OPTS)
        harmful_fails += harmful.verdict.failed
    assert clean_fails / trials <= ALPHA + 3 * math.sqrt(ALPHA / trials)
    assert harmful_fails / trials >= 0.95


def test_a_baseline_too_small_even_for_a_gaussian_keeps_the_exact_rule():
    d = decide([0.1, 0.2, 0.3], [5.0], OPTS)
    assert d.verdict.rule == "exact-scan" and not d.verdict.failed and d.verdict.p_value == pytest.approx(0.25)


def test_no_added_rows_pass():
    d = decide(np.arange(200.0), [], OPTS)
    assert not d.verdict.failed and d.verdict.added == 0


def test_harm_is_the_sum_of_raw_fihs_against_as_many_accepted_rows():
    d = decide(np.arange(200.0), [1.0, 2.0], OPTS, raw=[0.5, 1.5], reference_raw_mean=0.25)
    assert d.verdict.harm == pytest.approx(2.0) and d.verdict.harm_reference == pytest.approx(0.5)


def test_bh_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.2 against q·i/m = 0.02, 0.04, 0.06, 0.08, 0.1: the 4 smallest
    assert bh(p, 0.1).tolist() == [0, 1, 2, 4]
    assert bh(p, 0.001).tolist() == []


def test_student_t_tail_agrees_with_scipy():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 5.0, 30.0):
        for df in (1.0, 4.0, 11.0, 98.0):
            assert t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), rel=1e-8, abs=1e-300)


def test_gaussian_p_values_are_calibrated_for_a_new_gaussian_row():
    rng = np.random.default_rng(7)
    p = np.array([gaussian_p(rng.standard_normal(12), rng.standard_normal(1))[0] for _ in range(4000)])
    # a robust fit with t's widened scale: at most nominal in the tail that decides, within sampling error
    assert np.mean(p <= 0.01) <= 0.01 + 3 * math.sqrt(0.01 / 4000)
    assert np.mean(p <= 0.1) <= 0.1 + 3 * math.sqrt(0.1 / 4000)
