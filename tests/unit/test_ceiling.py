"""bench/ceiling.py: the supervised, source-held-out bound on detection quality (issue 3's evidence)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradshield_research.bench import ceiling as bench_ceiling


@pytest.fixture(scope="module")
def ceiling():
    return bench_ceiling


def test_logistic_fit_separates_a_linear_signal(ceiling):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 2] - 0.5 * X[:, 4] > 0).astype(float)
    f = ceiling.fit_logistic(X, y, 1e-3)
    s = f(X)
    assert s[y == 1].min() > np.median(s[y == 0])
    assert ceiling.auroc(s[y == 1], s[y == 0]) > 0.99


def test_cross_validation_holds_out_whole_source_files(ceiling):
    """Each file has its own feature offset and one label: a model can tell rows apart only by recognising their
    file. Folds by row would score that near 1; folds by file must leave it at chance."""
    rng = np.random.default_rng(1)
    files, X, pos = [], [], []
    for k in range(10):
        offset = rng.normal(size=8) * 3
        for _ in range(20):
            files.append(f"f{k}")
            X.append(offset + rng.normal(size=8) * 0.1)
            pos.append(k % 2 == 0)
    files, X, pos = np.array(files), np.array(X), np.array(pos)
    a = np.mean([ceiling.grouped_cv_auroc(X, pos, ~pos, files, 1e-2, folds=5, seed=s) for s in range(5)])
    assert 0.2 < a < 0.8
    # a signal shared by every file generalises across files
    X2 = X.copy()
    X2[:, 0] = np.where(pos, 1.0, -1.0) + rng.normal(size=len(pos)) * 0.3
    assert ceiling.grouped_cv_auroc(X2, pos, ~pos, files, 1e-2, folds=5, seed=0) > 0.9


def test_cli_prints_the_table_from_a_quality_run(ceiling, tmp_path: Path, capsys):
    rng = np.random.default_rng(2)
    n, groups, keys = 60, ["0:mlp", "0:attn", "0:norm"], ["comply/harm", "refusal/harm"]
    labels = ["harmful"] * 20 + ["benign"] * 40
    files = [f"h{i % 4}.jsonl" for i in range(20)] + [f"b{i % 5}.jsonl" for i in range(40)]
    dots = rng.normal(size=(n, len(groups), len(keys)))
    dots[:20, :2, 0] += 3.0  # harmful rows project on the comply direction in the norm-free groups
    np.savez(
        tmp_path / "pass.npz",
        ids=np.array([f"r{i}" for i in range(n)]),
        dots=dots,
        sq=np.ones((n, len(groups))),
        groups=np.array(groups),
        keys=np.array(keys),
        h_mean=rng.normal(size=(n, 3, 4)).astype(np.float16),
    )
    rows = [
        {
            "id": f"r{i}",
            "file": files[i],
            "label": labels[i],
            "in_main": True,
            "scores": {"fihs margin cos no-norm": float(dots[i, 0, 0])},
        }
        for i in range(n)
    ]
    (tmp_path / "quality.json").write_text(json.dumps({"rows": rows}))
    assert ceiling.main([str(tmp_path), "--layers", "1", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    ref = next(line for line in out.splitlines() if line.startswith("| unsupervised: fihs margin cos no-norm | 1 |"))
    assert float(ref.split("|")[3]) > 0.95
    grad = next(line for line in out.splitlines() if line.startswith("| supervised: gradient"))
    assert "| 4 |" in grad  # two norm-free groups × two directions; the norm group is left out
    assert float(grad.split("|")[3].split()[0]) > 0.9
    assert any(line.startswith("| supervised: hidden L1") for line in out.splitlines())


def test_cli_names_a_missing_folder(ceiling, tmp_path: Path, capsys):
    assert ceiling.main([str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def _fake_run(folder: Path, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    n, groups, keys = 40, ["0:mlp", "0:attn"], ["comply/harm", "refusal/harm"]
    labels = ["harmful"] * 10 + ["implicit"] * 10 + ["benign"] * 20
    dots = rng.normal(size=(n, 2, 2))
    dots[:20, 0, 1] += shift  # a signal in one group × direction, the same in both runs
    np.savez(
        folder / "pass.npz",
        ids=np.array([f"r{i}" for i in range(n)]),
        dots=dots,
        sq=np.ones((n, 2)),
        groups=np.array(groups),
        keys=np.array(keys),
    )
    rows = [
        {"id": f"r{i}", "file": f"f{i // 10}", "label": labels[i], "in_main": True, "scores": {"x": 0.0}}
        for i in range(n)
    ]
    (folder / "quality.json").write_text(json.dumps({"rows": rows}))


def test_transfer_scores_one_run_with_weights_fitted_on_another(ceiling, tmp_path: Path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _fake_run(tmp_path / "a", 3, 4.0)
    _fake_run(tmp_path / "b", 4, 4.0)
    assert ceiling.main([str(tmp_path / "b"), "--train", str(tmp_path / "a")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 40 rows | harmful+implicit |")]
    assert len(lines) == len(ceiling.LAMBDAS)
    assert all(float(line.split("|")[4]) > 0.9 and float(line.split("|")[5]) > 0.9 for line in lines)
