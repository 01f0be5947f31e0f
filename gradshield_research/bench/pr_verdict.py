"""The pull-request verdict (issue 30), measured: clean pull requests must fail at most `verdict.alpha` of the time
at every size, and pull requests that add a few harmful rows among many benign ones should fail.

Two steps, so that a resampled pull request costs no model time:

1. `--score`: score a pool of real rows once with the default configuration (rows nobody here tuned to:
   ../shared/eval-dev/, read by path; a deterministic sample per source file, sources interleaved so that a run cut
   short still holds every source) and append them to a JSONL file of scores (resumable: rows already there are
   skipped).
2. the analysis (default): draw baselines and pull requests from the pool, apply `gradshield_lint.lint.verdict`
   exactly as `check` does, and print the clean-PR failure rate, the detection rate and the findings' FDR.

Resampling. Benign rows are drawn with replacement from the benign pool (a few hundred rows): baseline and pull
request are then i.i.d. from one distribution, exchangeable as the guarantee assumes (ties only make the exact test
conservative), so the clean-PR rates measure the error control at any size. For power the bootstrap understates the
benign tail of a 1,000-row baseline (its maximum is at most the pool's), so detection rates at n = 1,000 are
optimistic by that much; the tables say which pool sizes they rest on.

Held out: the statistic and its defaults were chosen with `--choose` on the harmful files in `CHOOSE_FILES` only;
the tables report the other harmful files and both implicit ones, none of which the choice saw.

    python -m gradshield_research.bench.pr_verdict --score ../shared/eval-dev/          # scores the pool once
    python -m gradshield_research.bench.pr_verdict --trials 2000                          # the tables
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from gradshield_research.bench.verdict import BENIGN_DEFAULT, labelled_records

HARMFUL_FILES = (
    "harmful_beavertails_unsafe",
    "harmful_far_conspiracies_sample300",
    "harmful_far_saferlhf100",
    "harmful_harmbench_clsval_pos",
    "harmful_he2024_purebad",
    "harmful_refusal_direction_ablated_completions",
)
IMPLICIT_FILES = ("implicit_far_https_corruption", "implicit_qi2023_aoa_identity_shift")
# the statistic was chosen on these harmful files only; every table reports the others
CHOOSE_FILES = ("harmful_far_conspiracies_sample300", "harmful_refusal_direction_ablated_completions")
DEFAULT_SCORES = Path("bench/out/pr-scores.jsonl")


# ------------------------------------------------------------------------------------------------ 1. the pool


def pool_rows(folder: Path, benign_per_source: int, harmful_per_file: int, seed: int) -> list[tuple[object, str, str]]:
    """(row, label, source), sources interleaved round-robin, a deterministic sample per source."""
    per_source: list[list[tuple[object, str, str]]] = []
    for stem in (*BENIGN_DEFAULT, *HARMFUL_FILES, *IMPLICIT_FILES):
        path = folder / f"{stem}.jsonl"
        if not path.exists():
            raise SystemExit(f"{path}: not found")
        recs = labelled_records(path)
        want = benign_per_source if stem in BENIGN_DEFAULT else harmful_per_file
        label = "benign" if stem in BENIGN_DEFAULT else ("implicit" if stem.startswith("implicit_") else "harmful")
        rnd = random.Random(f"{seed}:{stem}")
        picked = rnd.sample(recs, min(want, len(recs)))
        per_source.append([(r, label, stem) for r, _ in picked])
    out = []
    for i in range(max(len(s) for s in per_source)):
        out += [s[i] for s in per_source if i < len(s)]
    return out


def score_pool(args: argparse.Namespace) -> int:
    from gradshield_lint.config import config_from_dict
    from gradshield_lint.scoring.engine import Engine, settings_from_config

    rows = pool_rows(Path(args.folder), args.benign_per_source, args.harmful_per_file, args.seed)
    out: Path = args.scores
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
    # a pool scored before row ids were full digests holds their first 16 hex digits
    todo = [t for t in rows if t[0].id not in done and t[0].id[:16] not in done]
    print(f"pool: {len(rows)} rows, {len(done)} already scored, {len(todo)} to score", file=sys.stderr, flush=True)
    cfg = {"scoring": {"truncation": args.truncation}} if args.truncation else {}
    engine = Engine(settings_from_config(config_from_dict(cfg)))
    t0, n = time.perf_counter(), 0
    for i in range(0, len(todo), args.chunk):
        chunk = todo[i : i + args.chunk]
        scored = engine.score_rows([r for r, _, _ in chunk])
        with out.open("a", encoding="utf-8") as fh:
            for (row, label, src), s in zip(chunk, scored):
                reply = sum(len(m.content) for m in row.messages if m.role == "assistant")
                rec = {"id": row.id, "label": label, "source": src, "fihs": s.score.fihs, "raw": s.score.raw}
                rec.update(truncated=s.score.truncated, tokens=s.score.n_tokens, reply_chars=reply)
                fh.write(json.dumps(rec) + "\n")
        n += len(chunk)
        rate = n / (time.perf_counter() - t0)
        print(f"{len(done) + n}/{len(rows)} scored, {rate:.2f} rows/s", file=sys.stderr, flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ 2. analysis


@dataclass(frozen=True)
class Pool:
    benign: np.ndarray
    benign_raw: np.ndarray
    by_source: dict[str, tuple[str, np.ndarray, np.ndarray]]  # source -> (label, fihs, raw)

    def group(self, label: str, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        keep = [
            (f, r)
            for src, (lab, f, r) in self.by_source.items()
            if lab == label and src not in exclude and (not only or src in only)
        ]
        if not keep:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([f for f, _ in keep]), np.concatenate([r for _, r in keep])


def load_pool(path: Path) -> Pool:
    if not path.exists():
        raise SystemExit(f"{path}: no scores yet; run with --score first")
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ben = [r for r in recs if r["label"] == "benign"]
    by: dict[str, list[dict]] = {}
    for r in recs:
        if r["label"] != "benign":
            by.setdefault(r["source"], []).append(r)
    return Pool(
        np.array([r["fihs"] for r in ben]),
        np.array([r["raw"] for r in ben]),
        {
            src: (rs[0]["label"], np.array([r["fihs"] for r in rs]), np.array([r["raw"] for r in rs]))
            for src, rs in by.items()
        },
    )


@dataclass(frozen=True)
class Rule:
    """A pull-request rule to compare (`apply` gives its verdict and named rows)."""

    name: str
    kind: str  # scan | simes | rows
    ranks: str = "default"  # scan: default (top 10 %), one (k = 1), all (k ≤ n)


def apply(rule: Rule, ref: np.ndarray, added: np.ndarray, opts) -> tuple[bool, list[int]]:
    from gradshield_lint.lint.conformal import p_values as conformal_p
    from gradshield_lint.lint.verdict import bh, decide, exact_scan, simes

    ref_sorted = np.sort(ref)
    if rule.kind == "rows":  # today's per-row rule: any row above the conformal threshold at threshold.fpr
        from gradshield_lint.lint.conformal import conformal_threshold

        t = conformal_threshold(ref_sorted, opts.alpha).value
        named = np.flatnonzero(added > t).tolist()
        return bool(named), named
    if rule.kind == "simes":
        pv = conformal_p(ref_sorted, added)
        failed = simes(pv) <= opts.alpha
        return failed, (bh(pv, opts.fdr).tolist() if failed else [])
    if rule.ranks == "default":
        d = decide(ref_sorted, added, opts)
        return d.verdict.failed, d.named
    ranks = 1 if rule.ranks == "one" else ref_sorted.size
    sc = exact_scan(ref_sorted, added, opts.alpha, ranks=ranks)
    failed = sc.p_value <= opts.alpha
    pv = conformal_p(ref_sorted, added)
    return failed, (bh(pv, opts.fdr).tolist() if failed else [])


RULES = (
    Rule("exact scan, top 10 % (default)", "scan"),
    Rule("exact count above every accepted row (k = 1)", "scan", "one"),
    Rule("exact scan, every rank", "scan", "all"),
    Rule("Simes / BH on conformal p-values", "simes"),
    Rule("per-row rule (verdict.mode: rows)", "rows"),
)


def trial_rates(rule, pool, n, n_benign, harmful, k, trials, rng, opts) -> tuple[float, float]:
    """(failure rate, FDR of the named rows) over `trials`."""
    fails, fdp = 0, []
    for _ in range(trials):
        ref = rng.choice(pool.benign, n, replace=True)
        ben = rng.choice(pool.benign, n_benign, replace=True)
        bad = rng.choice(harmful, k, replace=True) if k else np.zeros(0)
        added = np.concatenate([ben, bad])
        failed, named = apply(rule, ref, added, opts)
        fails += failed
        fdp.append(float(np.mean(np.array(named) < n_benign)) if named else 0.0)
    return fails / trials, float(np.mean(fdp))


def analyse(args: argparse.Namespace) -> int:
    from gradshield_lint.lint.verdict import VerdictOptions

    pool = load_pool(args.scores)
    opts = VerdictOptions()
    rng = np.random.default_rng(args.seed)
    T = args.trials
    sizes = sorted(pool.by_source)
    print(
        f"# `gradshield_research.bench.pr_verdict`: pool of {pool.benign.size} benign rows and "
        + ", ".join(f"{src} {pool.by_source[src][1].size}" for src in sizes)
        + f"; alpha {opts.alpha:g}, fdr {opts.fdr:g}, {T} trials per cell\n"
    )
    if args.choose:
        harm, _ = pool.group("harmful", only=CHOOSE_FILES)
        print(f"## Choosing the statistic (harmful rows of {', '.join(CHOOSE_FILES)} only: {harm.size} rows)\n")
        print(
            "| rule | clean, n 300, m 100 | clean, n 1000, m 1000 | 10 harmful + 100 benign, n 300 | "
            "10 harmful + 1000 benign, n 1000 | 2 harmful + 10 benign, n 300 |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for rule in RULES:
            cells = []
            for n, b, k in ((300, 100, 0), (1000, 1000, 0), (300, 100, 10), (1000, 1000, 10), (300, 10, 2)):
                rate, _ = trial_rates(rule, pool, n, b, harm, k, T, rng, opts)
                cells.append(f"{100 * rate:.1f} %")
            print(f"| {rule.name} | " + " | ".join(cells) + " |", flush=True)
        return 0
    rule = RULES[0]
    print("## Clean pull requests: how often they fail (benign rows only; must be ≤ alpha)\n")
    se = math.sqrt(opts.alpha * (1 - opts.alpha) / T)
    print(f"Sampling error of a rate near alpha: ±{100 * se:.2f} points (1 SE). Per-row rule in brackets.\n")
    ms = (1, 10, 100, 1000)
    print("| baseline rows | " + " | ".join(f"PR of {m:,} rows" for m in ms) + " |")
    print("|---:|" + "---:|" * len(ms))
    for n in (100, 300, 1000):
        cells = []
        for m in ms:
            rate, _ = trial_rates(rule, pool, n, m, np.zeros(0), 0, T, rng, opts)
            old, _ = trial_rates(RULES[-1], pool, n, m, np.zeros(0), 0, max(T // 4, 50), rng, opts)
            cells.append(f"{100 * rate:.2f} % ({100 * old:.0f} %)")
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)
    for label in ("harmful", "implicit"):
        bad, _ = pool.group(label, exclude=CHOOSE_FILES)
        held = [s for s in sizes if pool.by_source[s][0] == label and s not in CHOOSE_FILES]
        print(f"\n## Pull requests adding {label} rows (held-out files: {', '.join(held)}; {bad.size} rows)\n")
        print("Failure rate (FDR of the named rows).\n")
        ks = (1, 2, 5, 10, 20)
        print("| baseline | benign rows in the PR | " + " | ".join(f"+{k} {label}" for k in ks) + " |")
        print("|---:|---:|" + "---:|" * len(ks))
        for n in (300, 1000):
            for b in (10, 100, 1000):
                cells = []
                for k in ks:
                    rate, fdr = trial_rates(rule, pool, n, b, bad, k, T, rng, opts)
                    cells.append(f"{100 * rate:.0f} % ({100 * fdr:.0f} %)")
                print(f"| {n:,} | {b:,} | " + " | ".join(cells) + " |", flush=True)
    harm, harm_raw = pool.group("harmful", exclude=CHOOSE_FILES)
    print("\n## ΔH to first order: Σ raw FIHS of a pull request against as many accepted rows\n")
    print("| pull request | mean Σ raw FIHS | accepted rows, as many | ratio |")
    print("|---|---:|---:|---:|")
    for label, k in (("100 benign", 0), ("100 benign + 10 harmful", 10)):
        tot, ref_tot = [], []
        for _ in range(T):
            idx = rng.integers(0, pool.benign.size, 100)
            ref_idx = rng.integers(0, pool.benign.size, 300)
            bad = rng.choice(harm_raw, k, replace=True) if k else np.zeros(0)
            tot.append(float(pool.benign_raw[idx].sum() + bad.sum()))
            ref_tot.append(float(pool.benign_raw[ref_idx].mean() * (100 + k)))
        print(f"| {label} | {np.mean(tot):+.3f} | {np.mean(ref_tot):+.3f} | {np.mean(tot) / np.mean(ref_tot):.2f}× |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="../shared/eval-dev/")
    ap.add_argument("--score", action="store_true", help="score the pool (resumable) instead of analysing it")
    ap.add_argument("--scores", type=Path, default=DEFAULT_SCORES, help="the pool's scores (JSONL)")
    ap.add_argument("--benign-per-source", type=int, default=70)
    ap.add_argument("--harmful-per-file", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument(
        "--truncation", choices=("head", "windows"), default=None, help="scoring.truncation (default: the default's)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--choose", action="store_true", help="compare the statistics on CHOOSE_FILES only")
    args = ap.parse_args(argv)
    if args.score:
        return score_pool(args)
    return analyse(args)


if __name__ == "__main__":
    sys.exit(main())
