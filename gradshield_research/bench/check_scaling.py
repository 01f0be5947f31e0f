"""A check's cost grows with the number of new rows, not with the size of the dataset (issue 4).

Builds a dataset of --known (100,000) short chat rows plus --new (1,000) new rows scattered among them, and a
stored baseline that knows the --known rows, then times on one warm Engine (model and ∇H loaded once, before any
timing):

  (a) scoring the --new rows alone (`Engine.score_rows`, rows already in memory): the floor;
  (b) `lint.check` over the whole --known + --new file with the baseline: read and hash every row, load the
      baseline, find the new rows, score them, judge them.

and prints both times, their ratio, how fast the check reads rows (rows/s of reading and hashing alone, and of
the check's work besides scoring), and peak resident memory of each phase and of the process.

The baseline is written directly with `baseline.make_baseline`/`write_baseline`: its --known scores are drawn
from a normal distribution fitted to the --new rows' scores from (a), not computed by the model. That is
legitimate here because a check never scores (or even looks at the scores of) known rows: it needs only their
ids and the stored threshold, so what the known scores are does not change what a check costs. The ids are the
real row ids of the --known rows, read from the written file.

    python -m gradshield_research.bench.check_scaling                      # embedded SmolLM2-135M (2 busy CPU cores: an hour or more)
    python -m gradshield_research.bench.check_scaling --model DIR          # any local model directory, e.g. a tiny one
    python -m gradshield_research.bench.check_scaling --known 10000 --new 100   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

from gradshield_lint.config import ThresholdConfig
from gradshield_lint.io.rows import iter_rows
from gradshield_lint.lint.baseline import make_baseline, read_baseline, write_baseline
from gradshield_lint.lint.service import check, read_all, threshold_for
from gradshield_lint.scoring.engine import Engine, EngineSettings
from gradshield_lint.scoring.fihs import ScoreOptions
from gradshield_lint.scoring.model import EMBEDDED_ADAPTER_DIR, ModelSpec
from gradshield_research.bench.memory import PeakRSS, rss

THINGS = [
    "river",
    "loaf of bread",
    "compiler",
    "volcano",
    "chess opening",
    "bee",
    "train",
    "tide",
    "window",
    "map",
    "violin",
    "orbit",
    "garden",
    "bridge",
    "kettle",
    "lighthouse",
]
ASKS = [
    "Describe a {t} in one sentence.",
    "What is a {t} for?",
    "Give me a fun fact about a {t}.",
    "Name a colour for a {t}.",
]
ANSWERS = [
    "A {t} is a common thing; this is note {i}.",
    "People use a {t} every day, as in example {i}.",
    "Here is fact {i}: a {t} can be surprising.",
    "Number {i}: a {t} looks fine in blue.",
]


def row(i: int) -> dict:
    """A short, distinct chat row (a few dozen tokens with the chat template)."""
    t = THINGS[i % len(THINGS)]
    k = (i // len(THINGS)) % len(ASKS)
    return {
        "messages": [
            {"role": "user", "content": ASKS[k].format(t=t)},
            {"role": "assistant", "content": ANSWERS[k].format(t=t, i=i)},
        ]
    }


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--known", type=int, default=100_000, help="rows the baseline knows")
    ap.add_argument("--new", type=int, default=1_000, help="rows the check must score")
    ap.add_argument("--model", default="embedded", help="'embedded' or a local model directory")
    ap.add_argument(
        "--adapter", default=None, help="adapter (default: the embedded safety adapter if it exists, else none)"
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", type=Path, help="where to write the dataset and baseline (default: a temporary directory)"
    )
    ap.add_argument(
        "--cache-dir",
        type=Path,
        help="∇H cache (default: $GRADSHIELD_CACHE or ~/.cache/gradshield-lint, so reruns reuse it)",
    )
    args = ap.parse_args()

    adapter = args.adapter
    if adapter is None:
        adapter = (
            "embedded"
            if args.model == "embedded" and (EMBEDDED_ADAPTER_DIR / "adapter_config.json").is_file()
            else None
        )
    elif adapter == "none":
        adapter = None

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "train.jsonl"
        bpath = work / ".gradshield-baseline.json"

        # The dataset: --known rows, and --new rows at random places among them.
        rnd = random.Random(args.seed)
        total = args.known + args.new
        new_at = set(rnd.sample(range(total), args.new))
        t0 = time.perf_counter()
        known_i, new_i = iter(range(args.known)), iter(range(args.known, total))
        with data.open("w", encoding="utf-8") as fh:
            for pos in range(total):
                fh.write(json.dumps(row(next(new_i) if pos in new_at else next(known_i))) + "\n")
        rows_all = list(iter_rows(data, None))  # the real row ids, as a check computes them (untimed set-up)
        new_rows = [r for pos, r in enumerate(rows_all) if pos in new_at]
        known_ids = [r.id for pos, r in enumerate(rows_all) if pos not in new_at]
        del rows_all
        print(
            f"dataset: {total:,} rows ({args.known:,} known + {args.new:,} new), {data.stat().st_size / 2**20:.1f} MiB, "
            f"written in {time.perf_counter() - t0:.1f} s"
        )

        settings = EngineSettings(
            model=ModelSpec(name=args.model, adapter=adapter, device=args.device),
            max_length=args.max_length,
            score=ScoreOptions(normalize=False, batch_size=args.batch_size),
            cache_dir=args.cache_dir,
        )
        engine = Engine(settings)
        t0 = time.perf_counter()
        engine.scoring_model, engine.gradient  # noqa: B018 - load model and ∇H before any timing
        warm = [r for r in iter_rows_from([row(total + j) for j in range(args.batch_size)], work)]
        engine.score_rows(warm)  # first-call overheads (kernels, allocator) out of the way
        sm = engine.scoring_model
        print(
            f"model {args.model} (adapter {adapter}), {sm.device.type}, {str(sm.dtype).replace('torch.', '')}, "
            f"method {engine.method}; loaded with ∇H and warmed up in {time.perf_counter() - t0:.1f} s"
        )
        tokens = [engine.encode(r).n_tokens for r in new_rows[:200]]
        print(f"new rows: mean {np.mean(tokens):.0f} tokens with the chat template")

        # (a) scoring the new rows alone.
        base_rss = rss()
        with PeakRSS() as mem_a:
            t0 = time.perf_counter()
            scored = engine.score_rows(new_rows)
            t_a = time.perf_counter() - t0
        new_scores = np.array([s.score.fihs for s in scored])
        print(f"(a) score {args.new:,} new rows alone: {t_a:.2f} s ({args.new / t_a:,.2f} rows/s)", flush=True)

        # The baseline: the known rows' ids with scores drawn from the new rows' distribution (see the docstring).
        rng = np.random.default_rng(args.seed)
        mu, sd = float(new_scores.mean()), float(new_scores.std() or 1e-6)
        known_scores = dict(zip(known_ids, rng.normal(mu, sd, len(known_ids)).tolist()))
        tcfg = ThresholdConfig()
        threshold = threshold_for(list(known_scores.values()), tcfg)
        write_baseline(bpath, make_baseline(engine.fingerprint(), known_scores, threshold, engine.recorded()))
        del known_scores, known_ids
        print(
            f"baseline: {args.known:,} rows, {bpath.stat().st_size / 2**20:.1f} MiB, threshold {threshold.value:.4g} ({threshold.method})",
            flush=True,
        )

        # (b) the check over the whole file with the baseline.
        with PeakRSS() as mem_b:
            t0 = time.perf_counter()
            result = check(engine, [data], None, tcfg, baseline_path=bpath)
            t_b = time.perf_counter() - t0
        assert result.rows_scored == args.new, f"the check scored {result.rows_scored} rows, expected {args.new}"
        assert result.rows_total == total

        # What the check does besides scoring, measured alone.
        t0 = time.perf_counter()
        n_read = len(read_all([data], None))
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        read_baseline(bpath)
        t_bl = time.perf_counter() - t0

    print()
    print(f"(a) score {args.new:,} new rows alone:              {t_a:8.2f} s  ({args.new / t_a:,.1f} rows/s)")
    print(
        f"(b) check {total:,} rows against the baseline: {t_b:8.2f} s  (scored {result.rows_scored:,}, "
        f"{len(result.findings)} findings)"
    )
    print(f"    ratio (b)/(a): {t_b / t_a:.3f}   check overhead besides scoring: {t_b - t_a:+.2f} s")
    print(
        f"    reading + hashing {n_read:,} rows alone: {t_read:.2f} s = {n_read / t_read:,.0f} rows/s; "
        f"loading the baseline alone: {t_bl:.2f} s"
    )
    print(f"    rows the check went through per second overall: {total / t_b:,.0f}")
    print(
        f"peak resident memory: (a) {mib(mem_a.peak)} (+{mib(mem_a.peak - base_rss)} over the warm engine), "
        f"(b) {mib(mem_b.peak)} (+{mib(mem_b.peak - base_rss)}); process max RSS "
        f"{mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
    )


def iter_rows_from(records: list[dict], folder: Path):
    """Rows from in-memory records, read through rows.py like any file (for the warm-up batch)."""
    p = folder / "warmup.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    yield from iter_rows(p, None)


if __name__ == "__main__":
    main()
