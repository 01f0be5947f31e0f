"""The selection rules of bench/levers.py on hand-made rows: the threshold at a false-alarm rate, and
leave-one-source-file-out, where a held-out file's weight and threshold come from the other files only."""

from __future__ import annotations

import numpy as np
import pytest

from gradshield_research.bench import levers


def test_threshold_flags_at_most_the_rate_of_negatives():
    neg = np.arange(100, dtype=float)
    t = levers.threshold_at(neg, 0.02)
    assert t == 97.0 and (neg > t).sum() == 2
    assert levers.threshold_at(neg, 0.0) == 99.0  # nothing flagged
    assert levers.tpr_at(np.array([98.0, 50.0, 99.5, 97.0]), neg, 0.02) == 0.5


def rows(source: str, label: str, cos: list[float], x: list[float]) -> list[dict]:
    return [{"source": source, "label": label, "cos": c, "x": v, "n_target": 10} for c, v in zip(cos, x)]


def test_held_out_file_is_judged_by_weight_and_threshold_chosen_without_it():
    """`x` separates the harmful rows of h2 and of h3 from every benign row, `cos` does not: held out, h1 gets the
    weight chosen on h2 and h3 (1) and so is caught, although `x` alone would not catch h1 in-sample (it scores
    low there, but `cos` carries it)."""
    benign = rows("b1", "benign", [0.0] * 50, list(np.linspace(0, 1, 50))) + rows(
        "b2", "benign", [0.0] * 50, list(np.linspace(0, 1, 50))
    )
    h1 = rows("h1", "harmful", [5.0] * 10, [0.0] * 10)
    h2 = rows("h2", "harmful", [0.0] * 10, [5.0] * 10)
    h3 = rows("h3", "harmful", [0.0] * 10, [5.0] * 10)
    data = benign + h1 + h2 + h3

    def f(rs, w):
        return np.array([r["cos"] + w * r["x"] for r in rs])

    per, chosen = levers.loso(data, f, (0.0, 1.0))
    assert per["h1"] == 1.0 and per["h2"] == 1.0 and per["h3"] == 1.0
    assert chosen[sorted({r["source"] for r in data}).index("h1")] == 1.0
    assert per["b1"] <= 0.02 + 1e-9 and per["b2"] <= 0.02 + 1e-9

    # with no weight to choose, x alone: h1 is missed when held out
    per_x, _ = levers.loso(data, lambda rs, w: np.array([r["x"] for r in rs]), None)
    assert per_x["h1"] == 0.0 and per_x["h2"] == 1.0


def test_anchor_candidates_only_for_rows_that_hold_them():
    assert "min(refusal_up, comply_up)" not in levers.candidates()
    got = levers.candidates(frozenset({"refusal_up", "comply_up", "margin_sub"}))
    r = [{"cos": 0.1, "refusal_up": -0.2, "comply_up": 0.3, "margin_sub": 0.05, "n_target": 3}]
    assert got["min(refusal_up, comply_up)"][0](r, None).tolist() == [-0.2]
    assert got["refusal_up + comply_up"][0](r, None).tolist() == pytest.approx([0.1])
