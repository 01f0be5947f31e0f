"""How far could a linear score on these features go? A supervised ceiling for issue 3's AUROC targets.

FIHS is unsupervised: one direction ∇H built from the probes, no labels. When it misses a target, the question is
whether a better probe set / proxy / parameter subset could reach it on this scoring model, or whether the
information is not in the features at all. This script answers with an *optimistic* bound: an L2-regularised
logistic regression is trained **on the labels** over

- `gradient`: every row's gradient projected on every probe direction of the shared pass, per parameter group
  (the norm scales left out, as in the default), divided by the row's gradient norm — a space that contains every
  FIHS variant of the sweep (any proxy × any parameter subset, raw directions re-weighted per group) and more;
- `hidden Lk`: the mean hidden state over the reply tokens at layer k (what a trained representation probe sees);

and scored out of fold, with the folds drawn **by source file**, so a model is always tested on sources it never
saw (the linter meets unseen datasets too; folds by row would let it learn each source's style). The AUROC is
reported for the best regularisation of a grid — picked after the fact, so the figure is an upper bound of what
that feature set gives, not an estimate.

Input: the folder `gradshield_research.bench.quality` --methods sweep --out DIR` wrote (pass.npz with the per-row projections and
hidden states, quality.json with the rows' labels and files).

`--train OTHER` asks the practical question instead: fit the gradient weighting on another labelled set (e.g. the
project's own `bench/data/`, written independently of eval-dev) and score this one with it — a learned FIHS
direction the linter could ship (a weighted sum of probe directions per parameter group is still one vector ∇H).
Every λ of the grid is shown, since none may be picked on the set being scored.

    python -m gradshield_research.bench.ceiling /tmp/q [--layers 6,12,18,24,30] [--folds 5] [--seeds 3] [--train /tmp/q-own]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from gradshield_research.bench.quality import SUBSETS, auroc

LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
NORM_FREE_KINDS = SUBSETS["no-norm"][1]  # the parameter groups the default scores


@dataclass(frozen=True)
class PassData:
    """The rows of a quality.py run and the features kept for them."""

    labels: np.ndarray  # str per row
    files: np.ndarray  # source file per row
    in_main: np.ndarray  # bool: in the main pool (He et al.'s extra subset rows are not)
    gradient: np.ndarray  # [N, F] projections / ‖∇L‖
    hidden_mean: np.ndarray | None  # [N, L+1, D]
    reference: dict[str, np.ndarray]  # unsupervised scores from quality.json, by method name


def load_pass(folder: Path) -> PassData:
    z = np.load(folder / "pass.npz", allow_pickle=True)
    meta = json.loads((folder / "quality.json").read_text())
    rows = meta["rows"]
    if [str(i) for i in z["ids"]] != [r["id"] for r in rows]:
        raise ValueError(f"{folder}: pass.npz and quality.json list different rows")
    kinds = [str(g).split(":")[1] for g in z["groups"]]
    keep = np.array([k in NORM_FREE_KINDS for k in kinds])
    dots, sq = z["dots"], z["sq"]
    norm = np.sqrt(np.maximum(sq[:, keep].sum(1), 1e-30))
    gradient = (dots[:, keep, :] / norm[:, None, None]).reshape(len(rows), -1)
    hidden = z["h_mean"].astype(np.float32) if "h_mean" in z.files else None
    reference = {name: np.array([r["scores"][name] for r in rows], float) for name in rows[0]["scores"]} if rows else {}
    return PassData(
        labels=np.array([r["label"] for r in rows]),
        files=np.array([r["file"] for r in rows]),
        in_main=np.array([bool(r["in_main"]) for r in rows]),
        gradient=gradient,
        hidden_mean=hidden,
        reference=reference,
    )


def fit_logistic(X: np.ndarray, y: np.ndarray, lam: float) -> Callable[[np.ndarray], np.ndarray]:
    """L2-regularised logistic regression on standardised features; returns the decision function."""
    mu, sd = X.mean(0), X.std(0) + 1e-8
    Xs = (X - mu) / sd
    n, d = Xs.shape

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = Xs @ w[:-1] + w[-1]
        p = 0.5 * (1.0 + np.tanh(0.5 * t))  # sigmoid without overflow
        value = float(np.sum(np.logaddexp(0.0, t) - y * t) / n + lam * (w[:-1] @ w[:-1]))
        grad = np.concatenate([Xs.T @ (p - y) / n + 2.0 * lam * w[:-1], [np.sum(p - y) / n]])
        return value, grad

    w = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return lambda Z: ((Z - mu) / sd) @ w[:-1] + w[-1]


def grouped_cv_auroc(
    X: np.ndarray,
    positive: np.ndarray,
    negative: np.ndarray,
    files: np.ndarray,
    lam: float,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Out-of-fold AUROC of positive vs negative rows, with whole source files assigned to folds: every score
    comes from a model that saw no row of that row's file. Pairs are compared within a fold only (each fold's model
    has its own scale; pooling them would penalise calibration, not ranking). NaN when no fold can be scored."""
    idx = np.where(positive | negative)[0]
    names = sorted(set(files[idx]))
    np.random.default_rng(seed).shuffle(names)
    fold = {f: i % folds for i, f in enumerate(names)}
    fold_of = np.array([fold[files[i]] for i in idx])
    y = positive[idx].astype(float)
    total = pairs = 0.0
    for k in range(folds):
        test, train = fold_of == k, fold_of != k
        n_pos, n_neg = int((y[test] == 1).sum()), int((y[test] == 0).sum())
        if n_pos == 0 or n_neg == 0 or y[train].min() == y[train].max():
            continue  # nothing to rank in this fold, or nothing to learn from
        s = fit_logistic(X[idx[train]], y[train], lam)(X[idx[test]])
        total += auroc(s[y[test] == 1], s[y[test] == 0]) * n_pos * n_neg
        pairs += n_pos * n_neg
    return total / pairs if pairs else float("nan")


def ceiling(X: np.ndarray, data: PassData, label: str, folds: int, seeds: int) -> tuple[float, float]:
    """(best mean out-of-fold AUROC over LAMBDAS, its λ) for `label` vs the main pool's benign rows."""
    pos = (data.labels == label) & data.in_main
    neg = (data.labels == "benign") & data.in_main
    best = (float("nan"), float("nan"))
    for lam in LAMBDAS:
        a = float(np.nanmean([grouped_cv_auroc(X, pos, neg, data.files, lam, folds, s) for s in range(seeds)]))
        if not np.isnan(a) and (np.isnan(best[0]) or a > best[0]):
            best = (a, lam)
    return best


def transfer(train: PassData, test: PassData, reference: str) -> int:
    """Fit the gradient weighting on `train` (harmful vs benign, and harmful+implicit vs benign), score `test`."""
    if train.gradient.shape[1] != test.gradient.shape[1]:
        print("error: the two runs have different probe directions or parameter groups", file=sys.stderr)
        return 2
    neg_tr = (train.labels == "benign") & train.in_main
    neg_te = (test.labels == "benign") & test.in_main
    labels = [lab for lab in ("harmful", "implicit") if ((test.labels == lab) & test.in_main).any()]
    print("| fitted on | target | λ | " + " | ".join(f"AUROC {lab}" for lab in labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    ref = test.reference.get(reference)
    if ref is not None:
        cells = [f"{auroc(ref[(test.labels == lab) & test.in_main], ref[neg_te]):.2f}" for lab in labels]
        print(f"| — (unsupervised: {reference}) | | | " + " | ".join(cells) + " |")
    for target, pos_tr in (
        ("harmful", (train.labels == "harmful") & train.in_main),
        ("harmful+implicit", (train.labels != "benign") & train.in_main),
    ):
        for lam in LAMBDAS:
            sel = pos_tr | neg_tr
            f = fit_logistic(train.gradient[sel], pos_tr[sel].astype(float), lam)
            s = f(test.gradient)
            cells = [f"{auroc(s[(test.labels == lab) & test.in_main], s[neg_te]):.2f}" for lab in labels]
            print(f"| {int(sel.sum())} rows | {target} | {lam:g} | " + " | ".join(cells) + " |", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the --out folder of `gradshield_research.bench.quality` --methods sweep")
    ap.add_argument("--layers", default="6,12,18,24,30", help="hidden-state layers to try (0 = embeddings)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3, help="fold assignments averaged")
    ap.add_argument("--reference", default="fihs margin cos no-norm", help="the unsupervised score shown beside")
    ap.add_argument(
        "--train", type=Path, default=None, help="fit on this quality.py --out folder, score FOLDER with it"
    )
    args = ap.parse_args(argv)
    try:
        data = load_pass(args.folder)
        train = load_pass(args.train) if args.train else None
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if train is not None:
        return transfer(train, data, args.reference)
    feature_sets: list[tuple[str, np.ndarray]] = [("gradient (all probe directions × parameter groups)", data.gradient)]
    if data.hidden_mean is not None:
        for layer in (int(x) for x in args.layers.split(",") if x.strip()):
            if 0 <= layer < data.hidden_mean.shape[1]:
                feature_sets.append((f"hidden L{layer} (reply mean)", data.hidden_mean[:, layer]))
    labels = [lab for lab in ("harmful", "implicit") if ((data.labels == lab) & data.in_main).any()]
    n_files = {lab: len(set(data.files[(data.labels == lab) & data.in_main])) for lab in labels + ["benign"]}
    print(
        f"rows: {int(data.in_main.sum())} in the main pool; source files: {n_files}; folds by file: {args.folds}, "
        f"{args.seeds} fold draws; λ grid {list(LAMBDAS)} (best shown: an upper bound)\n"
    )
    print("| features | dims | " + " | ".join(f"AUROC {lab} (λ)" for lab in labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    ref = data.reference.get(args.reference)
    if ref is not None:
        neg = ref[(data.labels == "benign") & data.in_main]
        cells = [f"{auroc(ref[(data.labels == lab) & data.in_main], neg):.2f}" for lab in labels]
        print(f"| unsupervised: {args.reference} | 1 | " + " | ".join(cells) + " |")
    for name, X in feature_sets:
        cells = []
        for lab in labels:
            a, lam = ceiling(X, data, lab, args.folds, args.seeds)
            cells.append(f"{a:.2f} ({lam:g})")
        print(f"| supervised: {name} | {X.shape[1]} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
