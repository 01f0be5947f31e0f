"""How far FIHS moves between float32 and bfloat16, and between the fd and jvp methods (issue 4).

A baseline records method, dtype and device but does not fingerprint them: a baseline made in bf16 on a GPU
runner must serve a float32 pre-commit check on a laptop. This measures what that costs. On the embedded model
with the configuration schema's defaults (whatever a missing `.gradshield.yaml` gives, adapter included), the
same rows of a JSONL file are scored by:

- the default configuration in float32 and in bfloat16 (`method: auto`: fd / jvp for raw scores, persample in
  both for normalized ones);
- raw scores with `fd` and `jvp` in float32 and `jvp` in bfloat16, whatever the default is;
- the raw dot products that a per-sample pass (`persample`, exact per-row gradients) gives alongside normalized
  scores: the ground truth fd and jvp approximate. With `--exact` that pass runs in float32 even when the default
  is raw.

Each dtype loads its own model and computes its own ∇H in that dtype (the realistic case: a GPU runner and a
laptop each compute and cache ∇H for their own dtype; the cache key includes the dtype). The cosine between the
two ∇H is printed. Against the float32 reference (fd for raw scores, the float32 default for normalized ones):
relative L2 error, Spearman rank correlation, the largest absolute difference in units of the reference scores'
standard deviation, and how many rows fall on the other side of the adaptive threshold found on the reference
scores (`lint.threshold_for`, default threshold configuration). Also the threshold each run would store in a
baseline of its own and how many reference rows it judges differently, and for raw scores the relative error
and rank correlation against the exact float32 dot products. Rows/s counts scoring only (model loading and ∇H
are printed separately).

    flock /tmp/runs/cpu.lock python -m gradshield_research.bench.dtype_drift [bench/data/eval.jsonl] [--rows 64] [--probes N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy.stats import spearmanr

from gradshield_lint.config import Config, ThresholdConfig
from gradshield_lint.io.rows import Row
from gradshield_lint.lint.service import threshold_for
from gradshield_lint.scoring.engine import Engine, EngineSettings, settings_from_config
from gradshield_lint.scoring.fihs import ScoreOptions, resolve_method, score_encoded
from gradshield_lint.scoring.probes import ProbeSet
from gradshield_research import BENCH
from gradshield_research.bench import labelled_rows

DEFAULT_DATA = BENCH / "data" / "eval.jsonl"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EXACT_METHODS = ("persample", "exact")  # their raw dots are exact per-row gradients, not approximations


@dataclass(frozen=True)
class Variant:
    """One way of scoring: `method` as configured (may be auto), resolved per dtype when run."""

    dtype: str
    method: str
    normalize: bool
    default: bool = False

    @property
    def resolved(self) -> str:
        return resolve_method(self.method, self.normalize, DTYPES[self.dtype])


@dataclass
class Run:
    """Scores of one pass. `cosine`: normalized scores; else raw dot products (`exact`: from per-row gradients)."""

    dtype: str
    method: str
    cosine: bool
    default: bool
    scores: np.ndarray
    rows_per_s: float

    @property
    def exact(self) -> bool:
        return self.method in EXACT_METHODS and not self.cosine

    @property
    def label(self) -> str:
        kind = "cosine" if self.cosine else ("raw dot, same pass" if self.exact else "raw")
        return f"{self.dtype} {self.method} ({kind}){' [default]' if self.default else ''}"


@dataclass
class DtypeSetup:
    """What one dtype's engine cost before any row was scored, and its ∇H (kept, on the CPU, for the cosine)."""

    load_s: float
    grad_s: float
    grad_from_cache: bool
    grad: list[torch.Tensor]
    grad_value: float
    weights: str  # the dtypes the loaded parameters really have: proof that the bf16 run is not float32 in disguise


def variants(settings: EngineSettings, exact: bool) -> list[Variant]:
    """The default configuration in both dtypes plus raw fd/jvp; a variant listed twice is scored once."""
    s = settings.score
    wanted = [
        Variant("float32", s.method, s.normalize, default=True),
        Variant("bfloat16", s.method, s.normalize, default=True),
        Variant("float32", "fd", False),
        Variant("float32", "jvp", False),
        Variant("bfloat16", "jvp", False),
    ]
    if exact:
        wanted.append(Variant("float32", "persample", True))
    out: list[Variant] = []
    for v in wanted:
        if not any((u.dtype, u.resolved, u.normalize) == (v.dtype, v.resolved, v.normalize) for u in out):
            out.append(v)
    return out


def read_rows(path: Path, n: int) -> tuple[list[Row], list[str]]:
    """`n` rows spread evenly over the file (it is grouped by label, so the first n would all be benign)."""
    pairs = list(labelled_rows(path))
    if n < len(pairs):
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, n).round().astype(int)]
    return [r for r, _ in pairs], [str(rec.get("label", "?")) for _, rec in pairs]


def engine_for(settings: EngineSettings, dtype: str, device: str, probes: int) -> Engine:
    engine = Engine(replace(settings, model=replace(settings.model, dtype=dtype, device=device)))
    if probes:
        # Engine.probes is a cached_property: assigning it replaces the probe set for ∇H and the fingerprint alike.
        full = engine.probes
        engine.probes = ProbeSet(full.probes[:probes], full.source)  # type: ignore[misc]
    return engine


def setup(engine: Engine) -> DtypeSetup:
    t0 = time.perf_counter()
    sm = engine.scoring_model
    t1 = time.perf_counter()
    grad = engine.gradient
    t2 = time.perf_counter()
    weights = ", ".join(sorted({str(p.dtype).replace("torch.", "") for p in sm.model.parameters()}))
    return DtypeSetup(t1 - t0, t2 - t1, grad.from_cache, [v.detach().cpu() for v in grad.vectors], grad.value, weights)


def score(engine: Engine, variant: Variant, rows: Sequence[Row]) -> list[Run]:
    """The variant's scores; a normalized pass also yields its raw dots (no extra cost: the same pass)."""
    encoded = [engine.encode(r) for r in rows]
    opts: ScoreOptions = replace(engine.settings.score, method=variant.method, normalize=variant.normalize)
    t0 = time.perf_counter()
    out = score_encoded(engine.scoring_model, engine.gradient, encoded, opts)
    rate = len(rows) / (time.perf_counter() - t0)
    method = variant.resolved
    runs = [Run(variant.dtype, method, variant.normalize, variant.default, np.array([s.fihs for s in out]), rate)]
    if variant.normalize:
        runs.append(Run(variant.dtype, method, False, False, np.array([s.raw for s in out]), rate))
    return runs


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = sum(float((x.double() ** 2).sum()) for x in a) ** 0.5
    nb = sum(float((y.double() ** 2).sum()) for y in b) ** 0.5
    return dot / (na * nb)


def distribution_config(cfg: ThresholdConfig) -> ThresholdConfig:
    """The finetune criterion needs a finetune per threshold: far beyond this bench; compare distribution ones."""
    return replace(cfg, criterion="distribution") if cfg.criterion == "finetune" else cfg


def rel_l2(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def rank_corr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(spearmanr(x, ref).statistic)


def compare(run: Run, ref: Run, cfg: ThresholdConfig) -> dict[str, float]:
    x, r = run.scores, ref.scores
    t_ref = threshold_for(list(r), cfg).value
    t_own = threshold_for(list(x), cfg).value
    return {
        "rel_l2": rel_l2(x, r),
        "spearman": rank_corr(x, r),
        "max_abs_sd": float(np.max(np.abs(x - r)) / np.std(r)),
        "flips": int(np.sum((x > t_ref) != (r > t_ref))),
        "flagged": int(np.sum(x > t_ref)),
        "t_own": t_own,
        "flips_own": int(np.sum((r > t_own) != (r > t_ref))),
    }


def reference_for(run: Run, runs: Sequence[Run]) -> Run:
    """fp32 fd for raw scores (the issue's reference: the laptop's default); the fp32 default for cosines."""
    if run.cosine:
        return next(r for r in runs if r.dtype == "float32" and r.cosine)  # the default one when it is normalized
    return next(r for r in runs if r.dtype == "float32" and r.method == "fd" and not r.cosine)


def exact_reference(runs: Sequence[Run]) -> Run | None:
    return next((r for r in runs if r.dtype == "float32" and r.exact), None)


def print_table(runs: Sequence[Run], cfg: ThresholdConfig) -> None:
    exact = exact_reference(runs)
    print(
        "| scores | rows/s | rel. L2 vs fp32 ref | Spearman | max abs. diff / σ(ref) | flips at ref threshold | flagged "
        "| own threshold | ref rows judged differently by it | rel. L2 vs exact dot | Spearman vs exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        ref = reference_for(run, runs)
        c = compare(run, ref, cfg)
        mark = " (reference)" if run is ref else ""
        vs_exact = (
            f"{rel_l2(run.scores, exact.scores):.2e} | {rank_corr(run.scores, exact.scores):.4f}"
            if exact is not None and not run.cosine
            else "– | –"
        )
        print(
            f"| {run.label}{mark} | {run.rows_per_s:.2f} | {c['rel_l2']:.2e} | {c['spearman']:.4f} | "
            f"{c['max_abs_sd']:.3f} | {c['flips']} | {c['flagged']} | {c['t_own']:.4g} | {c['flips_own']} | {vs_exact} |"
        )
    for ref in {id(reference_for(r, runs)): reference_for(r, runs) for r in runs}.values():
        t = threshold_for(list(ref.scores), cfg)
        sd = np.std(ref.scores)
        # A row can flip only if a drift as large as the max column reaches across this gap.
        gap = float(np.min(np.abs(ref.scores - t.value))) / sd
        print(
            f"reference {ref.label}: threshold {t.value:.4g} ({t.method}), σ {sd:.4g}, "
            f"{int(np.sum(ref.scores > t.value))} rows above it, nearest row {gap:.3f} σ from it"
        )


def write_scores(path: Path, rows: Sequence[Row], labels: Sequence[str], runs: Sequence[Run]) -> None:
    """Every row's score in every run, to look at the rows near the threshold afterwards."""
    doc = {
        "rows": [{"id": r.id, "line": r.line, "label": lab} for r, lab in zip(rows, labels)],
        "runs": [{"label": run.label, "rows_per_s": run.rows_per_s, "scores": run.scores.tolist()} for run in runs],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="JSONL rows (any shape iter_rows reads)")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--probes", type=int, default=0, help="use only the first N bundled probes for ∇H (0: all)")
    ap.add_argument(
        "--device", default="cpu", help="both runs on this device (cpu: bf16 through the CPU's bf16 kernels)"
    )
    ap.add_argument("--cache", type=Path, default=None, help="∇H cache folder (default: the linter's own)")
    ap.add_argument("--model", default=None, help="another scoring model (default: the configuration's, embedded)")
    ap.add_argument("--out", type=Path, default=None, help="also write every row's scores in every run here (JSON)")
    ap.add_argument(
        "--exact", action="store_true", help="also a float32 per-sample pass for exact dots (when the default is raw)"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    cfg = Config()  # the schema's defaults: what a repository without .gradshield.yaml gets
    settings = settings_from_config(cfg, cache_dir=args.cache)
    if args.model:
        settings = replace(settings, model=replace(settings.model, name=args.model))
    tcfg = distribution_config(cfg.threshold)
    rows, labels = read_rows(args.data, args.rows)
    todo = variants(settings, args.exact)
    print(
        f"{len(rows)} rows of {args.data} ({dict(Counter(labels))}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    print(
        f"default scoring: method {settings.score.method}, normalize {settings.score.normalize}, "
        f"loss {settings.score.loss_reduction}, params {settings.params.describe()}, model {settings.model.name} "
        f"(adapter {settings.model.adapter}); threshold {tcfg.method}/{tcfg.criterion}"
    )

    runs: list[Run] = []
    grads: dict[str, list[torch.Tensor]] = {}
    for dtype in DTYPES:
        engine = engine_for(settings, dtype, args.device, args.probes)
        s = setup(engine)
        grads[dtype] = s.grad
        print(
            f"{dtype}: weights in {s.weights}, model load {s.load_s:.1f} s; ∇H over {len(engine.probes)} probes "
            f"{'from cache' if s.grad_from_cache else f'computed in {s.grad_s:.1f} s'}, H = {s.grad_value:.4f}",
            flush=True,
        )
        for v in (v for v in todo if v.dtype == dtype):
            runs.extend(score(engine, v, rows))
            print(f"  {runs[-1].dtype} {runs[-1].method}: {runs[-1].rows_per_s:.2f} rows/s", flush=True)
        del engine
        gc.collect()
    print(f"cos(∇H float32, ∇H bfloat16) = {cosine(grads['float32'], grads['bfloat16']):.6f}")
    print()
    print_table(runs, tcfg)
    if args.out:
        write_scores(args.out, rows, labels, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
