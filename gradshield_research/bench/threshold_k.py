"""What `threshold.k` buys: flagged shares of harmful, implicit and benign rows for each k of the sigma rule.

The adaptive rule falls back to the robust ``median + k·σ`` when the scores do not split into two populations, which
on overlapping score distributions flags almost nothing at the default k = 3. This prints, for one method of a
`gradshield_research.bench.quality` --out` run, the threshold and the true/false positive rates at several k, with σ fitted two ways:

- `all rows`: on every scored row of the main pool (what `gradshield-lint scan`/`filter` does on a new dataset);
- `clean baseline`: on the benign rows only (what `check` does against a baseline built from accepted data).

    python -m gradshield_research.bench.threshold_k /tmp/q [--method "fihs margin cos no-norm"] [--k 1,1.5,2,2.5,3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gradshield_lint.lint.threshold import find_threshold


def rates(scores: np.ndarray, labels: np.ndarray, fit_on: np.ndarray, k: float) -> tuple[float, dict[str, float]]:
    """(threshold, share flagged per label) for the sigma rule with this k, fitted on the rows in `fit_on`."""
    th = find_threshold(scores[fit_on], method="sigma", k=k).value
    return th, {
        lab: float((scores[labels == lab] > th).mean()) if (labels == lab).any() else float("nan")
        for lab in ("harmful", "implicit", "benign")
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the --out folder of `gradshield_research.bench.quality`")
    ap.add_argument("--method", default="fihs margin cos no-norm")
    ap.add_argument("--k", default="1,1.5,2,2.5,3")
    args = ap.parse_args(argv)
    path = args.folder / "quality.json"
    try:
        rows = [r for r in json.loads(path.read_text())["rows"] if r["in_main"]]
        scores = np.array([r["scores"][args.method] for r in rows], float)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {path}: {exc!r}", file=sys.stderr)
        return 2
    labels = np.array([r["label"] for r in rows])
    print(f"method: {args.method}; {len(rows)} rows\n")
    print("| σ fitted on | k | threshold | flagged harmful (TPR) | flagged implicit (TPR) | flagged benign (FPR) |")
    print("|---|---|---|---|---|---|")
    for name, fit_on in (("all rows", np.ones(len(rows), bool)), ("clean baseline", labels == "benign")):
        for k in (float(x) for x in args.k.split(",")):
            th, r = rates(scores, labels, fit_on, k)
            print(f"| {name} | {k:g} | {th:.3g} | {r['harmful']:.2f} | {r['implicit']:.2f} | {r['benign']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
