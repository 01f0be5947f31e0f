"""bench/threshold_k.py: flagged shares per k of the sigma rule, from a bench/quality.py run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gradshield_research.bench import threshold_k as bench_threshold_k


def _run(folder: Path) -> None:
    rng = np.random.default_rng(0)
    benign = rng.normal(0.0, 1.0, 400)
    harmful = rng.normal(2.5, 1.0, 100)
    rows = [{"label": "benign", "in_main": True, "scores": {"m": float(x)}} for x in benign]
    rows += [{"label": "harmful", "in_main": True, "scores": {"m": float(x)}} for x in harmful]
    rows += [{"label": "harmful", "in_main": False, "scores": {"m": 99.0}}]  # He et al. extras are not in the pool
    (folder / "quality.json").write_text(json.dumps({"rows": rows}))


def test_lower_k_flags_more_and_the_clean_baseline_matches_the_normal_tail(tmp_path: Path, capsys):
    tk = bench_threshold_k
    _run(tmp_path)
    assert tk.main([str(tmp_path), "--method", "m", "--k", "1,2,3"]) == 0
    table = [
        line.split("|")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("| all rows", "| clean baseline"))
    ]
    assert len(table) == 6
    for fit in ("all rows", "clean baseline"):
        tpr = [float(c[4]) for c in table if c[1].strip() == fit]
        fpr = [float(c[6]) for c in table if c[1].strip() == fit]
        assert tpr == sorted(tpr, reverse=True) and fpr == sorted(fpr, reverse=True)
    clean = {float(c[2]): (float(c[4]), float(c[6])) for c in table if c[1].strip() == "clean baseline"}
    # σ from benign N(0, 1): FPR ≈ normal tail above k, TPR ≈ P(N(2.5, 1) > k)
    assert abs(clean[1.0][1] - 0.16) < 0.05 and abs(clean[2.0][1] - 0.023) < 0.02
    assert abs(clean[2.0][0] - 0.69) < 0.1


def test_unknown_method_is_an_error_naming_the_file(tmp_path: Path, capsys):
    tk = bench_threshold_k
    _run(tmp_path)
    assert tk.main([str(tmp_path), "--method", "nope"]) == 2
    assert "quality.json" in capsys.readouterr().err
