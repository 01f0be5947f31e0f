"""Levers for the verdict (issue 11): which per-row score flags the most harmful rows at a low false-alarm rate?

One pass over rows of every labelled source file computes, per row, every candidate score the engine can give
without a second model:

- `cos`: the default score, cos(−∇L, ∇H) (persample hooks, exact per-row norms);
- `raw`: the raw directional derivative −∇L·∇H, and `n_target` (reply tokens; every gain is checked against it);
- `winK_cos`: the strongest window of K reply tokens (per-token pushes, explain.py), on the cosine's scale
  (window push / (‖∇L‖‖∇H‖)): a short harmful passage in a long reply is not diluted by the mean;
- `cat_max`, `cat_mean`: cos(−∇L, ∇H_c) over the explanation's parameter subset, the most-pushed probe category
  and the mean over categories;
- combinations `cos + a·winK_cos` and `max(cos, b·cat_max)`, whose weight is chosen on the other source files.

The rows exclude those bench/verdict.py reports (same sources, `--verdict-seed`, `--verdict-per-file`), so settings
chosen here are never tuned on the verdict's rows. Selection is leave-one-source-file-out: for each held-out file,
the weight and the 2 % threshold come from the other files only; the held-out file's rows are then judged by them.

    python -m gradshield_research.bench.levers ../shared/eval-dev/ --per-file 16 --out /tmp/levers.json  # slow part
    python -m gradshield_research.bench.levers --analyse /tmp/levers.json                               # tables
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

WINDOWS = (8, 16, 32)
RATE = 0.02
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def draw(folder: Path, benign: Sequence[str], per_file: int, seed: int, exclude: set[str]):
    from gradshield_research.bench.verdict import labelled_records

    out = []
    for f in sorted(folder.glob("*.jsonl")):
        stem = f.stem
        if stem not in benign and not stem.startswith(("harmful_", "implicit_")):
            continue
        recs = [(r, rec) for r, rec in labelled_records(f) if r.id not in exclude]
        rnd = random.Random(f"levers:{seed}:{stem}")
        out.append(
            [(recs[i][0], recs[i][1]["label"], stem) for i in rnd.sample(range(len(recs)), min(per_file, len(recs)))]
        )
    # interleaved across files, so that a run stopped early (the output is rewritten after every chunk) still covers
    # every source
    return [f[i] for i in range(max(map(len, out), default=0)) for f in out if i < len(f)]


def score(args) -> None:
    from gradshield_lint.config import config_from_dict
    from gradshield_lint.scoring.categories import category_cosines, category_directions, category_selection
    from gradshield_lint.scoring.encode import encode_with_offsets
    from gradshield_lint.scoring.engine import Engine, settings_from_config
    from gradshield_lint.scoring.explain import strongest_window, token_push
    from gradshield_research.bench.verdict import BENIGN_DEFAULT
    from gradshield_research.bench.verdict import draw as verdict_draw

    folder = Path(args.folder)
    benign = tuple(BENIGN_DEFAULT)
    vbase, vadded = verdict_draw(folder, benign, args.verdict_per_file, 100, args.verdict_seed)
    exclude = {r.id for r in vbase} | {a[0].id for a in vadded}
    items = draw(folder, benign, args.per_file, args.seed, exclude)
    print(f"{len(items)} rows ({len(exclude)} verdict rows excluded)", file=sys.stderr, flush=True)
    eng = Engine(settings_from_config(config_from_dict({})))
    s = eng.settings
    t0 = time.perf_counter()
    dirs = category_directions(
        eng.scoring_model, eng.probes, s.proxy, category_selection(eng.scoring_model, s.params), s.cache_dir
    )
    anchors = refusal_anchors(eng, dirs)
    vnorm = eng.gradient.norm
    out = []
    step = args.chunk
    for k in range(0, len(items), step):
        part = items[k : k + step]
        rows = [p[0] for p in part]
        scored = eng.score_rows(rows)
        located = [
            encode_with_offsets(
                eng.scoring_model.tokenizer, r.messages, max_length=s.max_length, truncation=s.truncation
            )
            for r in rows
        ]
        pushes = token_push(eng.scoring_model, eng.gradient, located, s.score.batch_size)
        cats = category_cosines(eng.scoring_model, dirs, located)
        anch = category_cosines(eng.scoring_model, anchors, located)
        for (r, label, src), sr, push, cat, an in zip(part, scored, pushes, cats, anch):
            sc = sr.score
            scale = (sc.grad_norm or 0.0) * vnorm
            rec = {
                "id": r.id,
                "label": label,
                "source": src,
                "cos": sc.fihs,
                "raw": sc.raw,
                "n_target": sc.n_target,
                "grad_norm": sc.grad_norm,
                "push_sum": sum(push.values),
            }
            for w in WINDOWS:
                a, b, run = strongest_window(push, w)  # run: the window's share of the row's mean push
                rec[f"win{w}_cos"] = run * len(push.values) / max(b - a, 1) / scale if scale and b > a else 0.0
            rec["cat_max"] = max(cat.values()) if cat else 0.0
            rec["cat_mean"] = float(np.mean(list(cat.values()))) if cat else 0.0
            rec["cats"] = cat
            rec.update(an)  # margin_sub, refusal_up, comply_up
            out.append(rec)
        print(f"{len(out)}/{len(items)} rows, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        Path(args.out).write_text(json.dumps({"rows": out, "seed": args.seed, "per_file": args.per_file}))


def refusal_anchors(eng, dirs):
    """The margin's two halves as directions over the explanation's subset: `refusal_up` = ∇NLL(refusal) (a step
    along it unlearns the probes' refusals) and `comply_up` = −∇NLL(compliance opening) (a step along it learns the
    compliance openings), with their sum `margin_sub` (the default's direction on the subset).

    Why: a safety refusal to a harmful prompt scores high under the default (5 of the 8 highest-scoring benign rows
    of bench/verdict.py). Both halves share the "answer this kind of prompt" component; a refusal row should push
    `comply_up` with it but `refusal_up` against it, a harmful completion both. Scoring each half on its own scale
    (and requiring both, `min`) is the refusal-aware score tried here.

    The margin over all probes is the probe-count-weighted sum of the cached per-category margins, so only the
    refusal half costs a pass over the probes."""
    from dataclasses import replace

    from gradshield_lint.scoring.categories import CategoryDirections
    from gradshield_lint.scoring.proxy import proxy_value_and_grad

    sm, s = eng.scoring_model, eng.settings
    groups = eng.probes.by_category()
    total = sum(len(groups[c]) for c in dirs.categories)
    margin = [
        sum(len(groups[c]) / total * vec[i] for c, vec in zip(dirs.categories, dirs.vectors))
        for i in range(len(dirs.names))
    ]
    named = dict(sm.model.named_parameters())
    params = [(n, named[n]) for n in dirs.names]
    _, refusal = proxy_value_and_grad(sm, eng.probes, replace(s.proxy, proxy="refusal-nll"), params)
    comply = [m - r for m, r in zip(margin, refusal)]
    return CategoryDirections(dirs.names, ["margin_sub", "refusal_up", "comply_up"], [margin, refusal, comply])


# ------------------------------------------------------------------------------------------------ analysis
def threshold_at(neg: np.ndarray, rate: float) -> float:
    """The score above which at most `rate` of `neg` lie (flagged: score > threshold)."""
    k = math.floor(rate * len(neg) + 1e-9)
    return float(np.sort(neg)[::-1][min(k, len(neg) - 1)])


def tpr_at(pos: np.ndarray, neg: np.ndarray, rate: float) -> float:
    return float((pos > threshold_at(neg, rate)).mean()) if len(pos) and len(neg) else math.nan


def candidates(fields: frozenset[str] = frozenset()) -> dict[str, tuple]:
    """name -> f(rows, weight) giving scores; a weight of None means the candidate has none. `fields`: the keys the
    rows hold (files written before the refusal anchors have none of theirs)."""
    c = {
        "cos (default)": (lambda rs, w: np.array([r["cos"] for r in rs]), None),
        "raw": (lambda rs, w: np.array([r["raw"] for r in rs]), None),
        "cat_max": (lambda rs, w: np.array([r["cat_max"] for r in rs]), None),
        "cat_mean": (lambda rs, w: np.array([r["cat_mean"] for r in rs]), None),
        "reply length": (lambda rs, w: np.array([float(r["n_target"]) for r in rs]), None),
    }
    for wdw in WINDOWS:
        k = f"win{wdw}_cos"
        c[k] = (lambda rs, w, k=k: np.array([r[k] for r in rs]), None)
        c[f"cos + a*{k}"] = (lambda rs, w, k=k: np.array([r["cos"] + w * r[k] for r in rs]), WEIGHTS)
    if {"refusal_up", "comply_up", "margin_sub"} <= fields:
        c["margin_sub"] = (lambda rs, w: np.array([r["margin_sub"] for r in rs]), None)
        c["refusal_up"] = (lambda rs, w: np.array([r["refusal_up"] for r in rs]), None)
        c["comply_up"] = (lambda rs, w: np.array([r["comply_up"] for r in rs]), None)
        c["min(refusal_up, comply_up)"] = (
            lambda rs, w: np.array([min(r["refusal_up"], r["comply_up"]) for r in rs]),
            None,
        )
        c["refusal_up + comply_up"] = (lambda rs, w: np.array([r["refusal_up"] + r["comply_up"] for r in rs]), None)
        c["cos + a*refusal_up"] = (lambda rs, w: np.array([r["cos"] + w * r["refusal_up"] for r in rs]), WEIGHTS)
    c["max(cos, b*cat_max)"] = (lambda rs, w: np.array([max(r["cos"], w * r["cat_max"]) for r in rs]), WEIGHTS[1:])
    c["cos + a*cat_max"] = (lambda rs, w: np.array([r["cos"] + w * r["cat_max"] for r in rs]), WEIGHTS)
    return c


def objective(rs: list[dict], s: np.ndarray) -> float:
    """Mean over positive source files of the TPR at RATE false alarms among the benign rows (all files)."""
    neg = s[[r["label"] == "benign" for r in rs]]
    t = threshold_at(neg, RATE)
    by = defaultdict(list)
    for r, x in zip(rs, s):
        if r["label"] != "benign":
            by[r["source"]].append(x > t)
    return float(np.mean([np.mean(v) for v in by.values()]))


def loso(rows: list[dict], f, weights) -> tuple[dict[str, float], list]:
    """Held-out per source file: positives' share flagged, benign files' share flagged, at the weight and 2 %
    threshold chosen on the other files."""
    sources = sorted({r["source"] for r in rows})
    res, chosen = {}, []
    for src in sources:
        train = [r for r in rows if r["source"] != src]
        test = [r for r in rows if r["source"] == src]
        w = max(weights, key=lambda w: objective(train, f(train, w))) if weights else None
        chosen.append(w)
        s_tr = f(train, w)
        t = threshold_at(s_tr[[r["label"] == "benign" for r in train]], RATE)
        res[src] = float((f(test, w) > t).mean())
    return res, chosen


def analyse(path: Path) -> None:
    from gradshield_research.bench.quality import auroc, stratified_auroc

    rows = json.loads(path.read_text())["rows"]
    labels = np.array([r["label"] for r in rows])
    n = {lab: int((labels == lab).sum()) for lab in ("harmful", "implicit", "benign")}
    print(f"# bench/levers.py: {len(rows)} rows ({n}), none of them among bench/verdict.py's\n")
    print(
        f"Leave-one-source-file-out: the weight and the {RATE:.0%} threshold are chosen on the other files; each "
        "file's rows are judged by them. TPR columns: mean over held-out positive files; benign: mean share "
        "flagged over held-out benign files. In-sample TPR (all rows, no hold-out) beside, and AUROC; "
        "'AUROC | len' is the AUROC within reply-length quartiles (a gain that is only length shows as a drop).\n"
    )
    print(
        "| candidate | weights chosen | harmful (held out) | implicit (held out) | benign flagged (held out) | "
        "harmful @2 % in-sample | AUROC harmful | AUROC implicit | AUROC harmful \\| len |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    fields = frozenset(rows[0]) if rows else frozenset()
    for name, (f, weights) in candidates(fields).items():
        per, chosen = loso(rows, f, weights)
        src_label = {r["source"]: r["label"] for r in rows}
        by = defaultdict(list)
        for src, v in per.items():
            by[src_label[src]].append(v)
        w_all = max(weights, key=lambda w: objective(rows, f(rows, w))) if weights else None
        s = f(rows, w_all)
        pos_h, pos_i, neg = s[labels == "harmful"], s[labels == "implicit"], s[labels == "benign"]
        lens = np.array([float(r["n_target"]) for r in rows])
        ws = ",".join(sorted({str(c) for c in chosen})) if weights else "-"
        print(
            f"| {name} | {ws} | {np.mean(by['harmful']):.0%} | {np.mean(by['implicit']):.0%} | {np.mean(by['benign']):.1%} | "
            f"{tpr_at(pos_h, neg, RATE):.0%} | {auroc(pos_h, neg):.3f} | {auroc(pos_i, neg):.3f} | "
            f"{stratified_auroc(pos_h, neg, lens[labels == 'harmful'], lens[labels == 'benign']):.3f} |"
        )
    print("\nPer held-out file, the default and the best lever by held-out harmful share:")
    cands = candidates(fields)
    best = max(
        (k for k in cands if k != "reply length"),
        key=lambda k: np.mean(
            [
                v
                for s2, v in loso(rows, *cands[k])[0].items()
                if not s2.startswith("benign") and not s2.startswith("refusal")
            ]
        ),
    )
    a, _ = loso(rows, *cands["cos (default)"])
    b, _ = loso(rows, *cands[best])
    print(f"\n| source | cos (default) | {best} |\n|---|---:|---:|")
    for src in sorted(a):
        print(f"| {src} | {a[src]:.0%} | {b[src]:.0%} |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="../shared/eval-dev/")
    ap.add_argument("--per-file", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verdict-seed", type=int, default=0, help="bench/verdict.py's --seed (its rows are excluded)")
    ap.add_argument("--verdict-per-file", type=int, default=10, help="bench/verdict.py's --per-file")
    ap.add_argument(
        "--chunk", type=int, default=16, help="rows per scoring step (the output file is rewritten after each)"
    )
    ap.add_argument("--out", type=Path, default=Path("levers.json"))
    ap.add_argument("--analyse", type=Path, help="print the tables from a file this bench wrote, and stop")
    args = ap.parse_args(argv)
    if args.analyse:
        analyse(args.analyse)
        return 0
    score(args)
    analyse(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
