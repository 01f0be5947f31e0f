"""Ray Data baselines against the single-process path, on the same rows, in one run (issue 16).

For one set of rows it runs `baseline create` three ways, through the library calls the CLI makes:
- single process (`lint.create_baseline`, one Engine, the machine's torch threads);
- `--engine ray` with 1 and with 2 workers (`distributed.create_baseline_ray`, a local Ray instance with as many
  CPUs as the most workers, started once and timed apart),
every path starting from the same warm cache (∇H and the prepared model computed first, timed apart), and prints
rows/s end to end, rows/s while scoring (between the first and the last shard), the time to the first
durable score (single process: nothing is kept until the baseline is written, so it is the whole run; Ray: the
first shard), what the engine adds (model loads in the describe task and the actors, staging, scheduling) and the
largest score difference against the single process. On a 2-core CPU the ratio measures Ray's overhead, not a
speed-up: each Ray CPU actor runs torch on one thread (Ray sets OMP_NUM_THREADS to the actor's CPUs), the single
process on both.

    python -m gradshield_research.bench.scale [--model embedded|tiny] [--rows 16] [--tokens 64] [--chunk-rows 4] [--workers 1,2]
                          [--driver-rows 100000] [--cache DIR]

`--driver-rows N` also times the driver's own part on N rows without any model: reading, hashing and
de-duplicating them, and writing the staging files, with the driver's resident memory growth.

`tiny` is a random 2-layer llama built from a config (hidden 64) with the embedded tokenizer: Ray's fixed costs
without the model's. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "river",
    "bread",
    "compiler",
    "volcano",
    "chess",
    "bee",
    "train",
    "tide",
    "glass",
    "map",
    "violin",
    "orbit",
    "garden",
    "lamp",
    "cloud",
    "ferry",
    "pepper",
    "castle",
    "rocket",
    "candle",
    "meadow",
    "harbor",
    "pencil",
    "thunder",
]


def make_rows(n: int, tokens: int, seed: int = 0) -> list[dict]:
    """Ordinary chat rows of about `tokens` tokens (a word is about 1.3 tokens), distinct for every index."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(max(4, int(tokens / 1.3) - 12))]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"Tell me something about the {words[0]} (question {i})."},
                    {"role": "assistant", "content": " ".join(words[1:]).capitalize() + "."},
                ]
            }
        )
    return out


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from gradshield_lint.scoring.model import EMBEDDED_GGUF, embedded_model_dir

    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()), gguf_file=EMBEDDED_GGUF)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


class ShardWatch(threading.Thread):
    """Polls the shard directories under `cache` and records when each shard appeared and its rows."""

    def __init__(self, cache: Path) -> None:
        super().__init__(daemon=True)
        self.root = cache / "ray-shards"
        self.seen: dict[Path, tuple[float, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.root.glob("*/shard-*.json") if self.root.is_dir() else []:
                if p not in self.seen:
                    try:
                        self.seen[p] = (time.perf_counter(), len(json.loads(p.read_text())["scores"]))
                    except (OSError, ValueError):
                        pass  # removed at the end of the run
            time.sleep(0.01)

    def events(self) -> list[tuple[float, int]]:
        return sorted(self.seen.values())


def driver_cost(n: int, tmp: Path, chunk_rows: int = 1024) -> tuple[float, float, float]:
    """(seconds, rows/s, MiB of resident memory added) for the driver's pass over n rows: read, hash, de-duplicate,
    stage (what `--engine ray` does before the first row is scored)."""
    import resource

    from gradshield_lint.lint.distributed import iter_unique_rows, stage_rows

    data = tmp / "driver.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(n, 64, seed=1)), encoding="utf-8")
    staging = tmp / "staging"
    staging.mkdir()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ids: list[str] = []

    def rows():
        for r in iter_unique_rows([data], None):
            ids.append(r.id)
            yield r

    staged, _ = stage_rows(rows(), set(), staging, chunk_rows)
    secs = time.perf_counter() - t0
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(staged) == n
    return secs, n / secs, grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["embedded", "tiny"], default="embedded")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--chunk-rows", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--driver-rows", type=int, default=0)
    ap.add_argument(
        "--cache", type=Path, default=None, help="the cache directory to use (default: a new, empty one per run)"
    )
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    import yaml

    from gradshield_lint.config import load_config
    from gradshield_lint.lint.distributed import RayOptions, create_baseline_ray, require_ray
    from gradshield_lint.lint.service import create_baseline, read_all
    from gradshield_lint.scoring.engine import Engine, settings_from_config

    tmp = Path(tempfile.mkdtemp(prefix="gs-scale-"))
    cache = args.cache or tmp / "cache"
    os.environ["GRADSHIELD_CACHE"] = str(cache)  # before ray.init: the workers inherit it (∇H computed once)
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows, args.tokens)), encoding="utf-8")
    conf: dict = {"scoring": {"batch_size": args.batch_size}}
    if args.model == "tiny":
        conf["model"] = {"name": str(tiny_model(tmp / "tiny")), "adapter": None, "device": "cpu", "dtype": "float32"}
    (tmp / ".gradshield.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_config(tmp / ".gradshield.yaml")
    settings = settings_from_config(cfg)
    shape = cfg.rows.row_shape()

    # first, while the process is small: ru_maxrss only shows growth above the peak so far
    driver = driver_cost(args.driver_rows, tmp) if args.driver_rows else None

    # The machine-wide cache first (∇H, the prepared model), timed apart: every path below then starts from the
    # same warm cache, as every run after a machine's first does. Without this the first path timed paid for ∇H.
    t0 = time.perf_counter()
    warm = Engine(settings)
    _ = warm.gradient
    t_warm = time.perf_counter() - t0
    del warm

    # single process: load (the model and ∇H, from the cache), then score
    t0 = time.perf_counter()
    engine = Engine(settings)
    _ = engine.gradient
    t_load = time.perf_counter() - t0
    rows = read_all([data], shape)
    t1 = time.perf_counter()
    ref, _ = create_baseline(engine, rows, cfg.threshold)
    t_score = time.perf_counter() - t1
    n = len(rows)
    lines = [("single process", n / (t_load + t_score), n / t_score, t_load + t_score, t_load + t_score, 0.0, "")]
    method = engine.method
    del engine

    ray = require_ray()
    import logging

    t0 = time.perf_counter()
    ray.init(num_cpus=max(workers), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    t_init = time.perf_counter() - t0
    try:
        for w in workers:
            watch = ShardWatch(cache)
            watch.start()
            t0 = time.perf_counter()
            b, _, _ = create_baseline_ray(
                settings,
                [data],
                shape,
                cfg.threshold,
                tmp / f"ray-{w}.json",
                RayOptions(workers=w, chunk_rows=args.chunk_rows),
            )
            total = time.perf_counter() - t0
            watch.stop.set()
            watch.join()
            ev = watch.events()
            first = ev[0][0] - t0 if ev else float("nan")
            steady = (
                (sum(k for _, k in ev[1:]) / (ev[-1][0] - ev[0][0]))
                if len(ev) > 1 and ev[-1][0] > ev[0][0]
                else float("nan")
            )
            worst = max(abs(b.scores[k] - v) / max(abs(v), 1e-12) for k, v in ref.scores.items())
            t_diff = abs(b.threshold.value - ref.threshold.value) / max(abs(ref.threshold.value), 1e-12)
            same_t = f"threshold {b.threshold.value:.6g} (rel. diff {t_diff:.1e})"
            lines.append((f"ray, {w} worker{'s' if w > 1 else ''}", n / total, steady, total, first, worst, same_t))
    finally:
        ray.shutdown()

    print(
        f"{n} rows, model {args.model}, method {method}, {args.tokens} tokens/row target, chunk {args.chunk_rows}, "
        f"batch {args.batch_size}; not in the figures below: the cache warm-up (∇H, prepared model) {t_warm:.1f} s, "
        f"ray.init (local, {max(workers)} CPUs) {t_init:.1f} s; single-process model + ∇H load from the cache "
        f"{t_load:.1f} s (in its figures)"
    )
    print(
        "| path | rows/s end to end | rows/s while scoring | total s | first durable score s | max rel. diff vs single | |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, e2e, steady, total, first, worst, note in lines:
        print(f"| {name} | {e2e:.3f} | {steady:.3f} | {total:.1f} | {first:.1f} | {worst:.1e} | {note} |")
    if driver:
        secs, rps, mib = driver
        print(
            f"driver pass (read, hash, de-duplicate, stage) over {args.driver_rows} rows: {secs:.1f} s, "
            f"{rps:,.0f} rows/s, peak resident memory +{mib:.0f} MiB"
        )
    single_total = lines[0][3]
    for name, _, _, total, first, _, _ in lines[1:]:
        print(
            f"{name}: {total - single_total:+.1f} s against the single process ({total / single_total:.2f}×); first score after {first:.1f} s"
        )


if __name__ == "__main__":
    main()
