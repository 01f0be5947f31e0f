"""bench/categories.py: per-category probe directions, scored from a shared pass."""

from __future__ import annotations

import numpy as np
import pytest

from gradshield_research.bench import categories as bench_categories
from gradshield_research.bench import peers as bench_peers


@pytest.fixture(scope="module")
def categories():
    return bench_categories


def test_cosine_from_the_pass_equals_the_cosine_of_the_vectors(categories):
    """Rebuild real vectors per parameter group, let the shared-pass arithmetic score them, compare with numpy's
    cosine on the concatenated vectors (norm groups left out, as the default does)."""
    peers = bench_peers
    rng = np.random.default_rng(0)
    groups = [(0, "mlp"), (0, "attn"), (0, "norm"), (1, "mlp")]
    keys = ["refusal/a", "comply/a", "refusal/b", "comply/b"]
    counts = {"refusal/a": 1, "comply/a": 1, "refusal/b": 3, "comply/b": 3}
    sizes = [5, 4, 3, 6]
    d = [rng.normal(size=(len(keys), s)) for s in sizes]  # direction k restricted to group g
    rows = [[rng.normal(size=s) for s in sizes] for _ in range(7)]  # ∇L(x) per group
    dots = np.array([[[r[g] @ d[g][k] for k in range(len(keys))] for g in range(len(groups))] for r in rows])
    sq = np.array([[r[g] @ r[g] for g in range(len(groups))] for r in rows])
    gram = np.array([d[g] @ d[g].T for g in range(len(groups))])
    pr = peers.PassResult(groups, keys, dots, sq, np.ones(len(rows)), None, None, 1.0)
    overall, per_cat = categories.category_scores(pr, gram, counts, ["a", "b"])
    keep = [0, 1, 3]
    x = [np.concatenate([r[g] for g in keep]) for r in rows]

    def want(w):
        v = np.concatenate([sum(w.get(k, 0.0) * d[g][j] for j, k in enumerate(keys)) for g in keep])
        return [-(xi @ v) / np.linalg.norm(xi) / np.linalg.norm(v) for xi in x]

    np.testing.assert_allclose(
        overall, want({"refusal/a": 0.25, "comply/a": -0.25, "refusal/b": 0.75, "comply/b": -0.75}), rtol=1e-10
    )
    np.testing.assert_allclose(per_cat[:, 0], want({"refusal/a": 1.0, "comply/a": -1.0}), rtol=1e-10)
    np.testing.assert_allclose(per_cat[:, 1], want({"refusal/b": 1.0, "comply/b": -1.0}), rtol=1e-10)


def test_margin_weights_are_the_probe_count_weighted_mean(categories):
    counts = {"refusal/a": 10, "comply/a": 10, "refusal/b": 30, "comply/b": 30}
    w = categories.margin_weights(["a", "b"], counts)
    assert w == pytest.approx({"refusal/a": 0.25, "comply/a": -0.25, "refusal/b": 0.75, "comply/b": -0.75})
    assert categories.margin_weights(["b"], counts) == pytest.approx({"refusal/b": 1.0, "comply/b": -1.0})


def test_combinations_pick_the_row_that_stands_out_in_one_category(categories):
    """Row 0 is ordinary everywhere; row 1 is extreme in a category whose scores are tightly spread. The raw max
    does not see it (another category has larger raw values); the robust z does."""
    rng = np.random.default_rng(1)
    wide = rng.normal(0.0, 1.0, size=50)
    tight = rng.normal(0.0, 0.01, size=50)
    per_cat = np.stack([wide, tight], axis=1)
    per_cat[1] = [0.0, 0.2]  # 20 robust σ out in the tight category, ordinary in the wide one
    out = categories.combined(per_cat)
    assert np.argmax(out["max robust z"]) == 1
    assert np.argmax(out["soft max z"]) == 1
    assert np.argmax(out["max over categories"]) != 1
    np.testing.assert_allclose(out["mean of top 2"], per_cat.mean(1))
    z = categories.robust_z(per_cat)
    np.testing.assert_allclose(np.median(z, axis=0), 0.0, atol=1e-12)
