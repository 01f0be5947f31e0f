"""One ∇H per probe category instead of one over all probes: does the best-matching category catch more?

FIHS dots a row's gradient with one direction, the mean over every probe. A harmful row is usually about one kind
of harm (a weapons recipe, a scam), so its gradient may line up with that category's probes and be diluted by the
eleven others. This bench computes the margin direction (refusal NLL − compliance NLL) of each probe category
separately, one shared per-sample-gradient pass over the rows (`gradshield_research.bench.peers`, norm scales left out as in the
default), and compares, on the same rows:

- `all probes`: the cosine FIHS over all probes (what the default computes);
- `category C`: the cosine FIHS against one category's direction;
- `max over categories`, `mean of top 2`: the best-matching category(ies) of each row;
- `max robust z`: each category's score first standardised over the rows being scored (median / 1.4826·MAD:
  no labels, as the linter would have it), then the max; `soft max z`: log Σ exp(3z) / 3.

    python -m gradshield_research.bench.categories ../shared/eval-dev/ --per-file 20 --per-subset 30

Cost: one backward per row (like `persample`) and one stored direction per category and kind (12 categories × 2
kinds × ~0.4 GB in float32 for SmolLM2-135M) — which is why it is a bench, not the default, unless it pays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from gradshield_research.bench import quality


def category_scores(
    pr, gram: np.ndarray, counts: dict[str, int], categories: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine FIHS against all probes' margin direction [N], against each category's [N, C]) from a shared pass,
    over the parameter groups the default scores (norm scales left out)."""
    from gradshield_research.bench import peers

    mask = pr.group_mask(None, quality.SUBSETS["no-norm"][1])

    def cos(w: dict[str, float]) -> np.ndarray:
        return peers.fihs_from_pass(pr, gram, w, mask, normalize=True, reduction="sum")

    return cos(margin_weights(categories, counts)), np.stack(
        [cos(margin_weights([c], counts)) for c in categories], axis=1
    )


def margin_weights(categories: Sequence[str], counts: dict[str, int]) -> dict[str, float]:
    """Weights of the margin direction over `categories`: probe-count-weighted mean of refusal − compliance."""
    total = sum(counts[f"comply/{c}"] for c in categories)
    w: dict[str, float] = {}
    for c in categories:
        w[f"refusal/{c}"] = counts[f"refusal/{c}"] / total
        w[f"comply/{c}"] = -counts[f"comply/{c}"] / total
    return w


def robust_z(per_category: np.ndarray) -> np.ndarray:
    """Each column standardised over the rows by median and 1.4826·MAD (label-free, robust to the harmful tail)."""
    med = np.median(per_category, axis=0)
    mad = 1.4826 * np.median(np.abs(per_category - med), axis=0)
    return (per_category - med) / np.where(mad > 0, mad, 1.0)


def combined(per_category: np.ndarray) -> dict[str, np.ndarray]:
    """The row-wise combinations over categories compared by this bench."""
    ranked = np.sort(per_category, axis=1)
    z = robust_z(per_category)
    return {
        "max over categories": ranked[:, -1],
        "mean of top 2": ranked[:, -2:].mean(1),
        "max robust z": z.max(1),
        "soft max z": np.log(np.exp(3.0 * (z - z.max(1, keepdims=True))).sum(1)) / 3.0 + z.max(1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--per-file", type=int, default=20)
    ap.add_argument("--per-subset", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapter", default="embedded")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache", default=None, help="cache folder (default: the bench-quality cache)")
    args = ap.parse_args(argv)
    args.max_group_columns, args.engine = 24, []
    from gradshield_lint.scoring.encode import encode_conversation
    from gradshield_lint.scoring.model import load_model
    from gradshield_lint.scoring.probes import load_probes
    from gradshield_research.bench import peers

    items = quality.load_items(args.paths, args.per_file or None, args.per_subset, args.seed)
    if not items:
        print("no labelled rows", file=sys.stderr)
        return 2
    sm = load_model(quality.engine_settings({}, args).model)
    encoded = [encode_conversation(sm.tokenizer, it.row.messages, max_length=args.max_length) for it in items]
    for it, e in zip(items, encoded):
        it.n_target = e.n_target
    probes = load_probes(None)
    categories = peers.category_groups(probes)
    cache = Path(args.cache) if args.cache else quality.default_cache()
    t0 = time.perf_counter()
    D = peers.probe_directions(
        sm, probes, cache_dir=cache, batch_size=args.batch_size, groups=categories, kinds=("refusal", "comply")
    )
    print(f"directions of {len(categories)} categories: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    _, gram = peers.direction_norms(D, int(sm.model.config.num_hidden_layers))
    pr, _ = peers.cached_gradient_pass(
        sm,
        [it.row.id for it in items],
        encoded,
        D,
        cache,
        max_length=args.max_length,
        batch_size=args.batch_size,
        progress=True,
    )
    seconds = float(pr.seconds)
    overall, per_cat = category_scores(pr, gram, D.counts, categories)
    scores = [quality.Scores("all probes (the default's direction)", overall, seconds)]
    scores += [quality.Scores(name, v, seconds) for name, v in combined(per_cat).items()]
    scores += [quality.Scores(f"category {c}", per_cat[:, j], seconds) for j, c in enumerate(categories)]
    results = [quality.evaluate(items, s) for s in scores]
    print(quality.markdown(results, items, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
