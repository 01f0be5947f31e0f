"""Speed and memory of the FIHS methods on the embedded model (issue 2's goals).

For the same rows of about 256 tokens it prints rows/s for a plain forward pass (the floor), `fd`, `jvp`,
`persample` (normalized scores) and `exact` (the per-row backward reference, on the first --exact-rows rows: it
runs one row at a time, so its rows/s does not depend on how many), the ratios fast/exact and forward/fast (how
many forward passes' worth of time a row costs), agreement with exact, and peak resident memory per method
sampled while it runs (and for fd at a quarter of the rows, to show it does not grow with the number of rows).

With --latency it measures instead the time to verdict of a commit: `gradshield-lint check` run as a user runs it
(a subprocess of the installed CLI, default configuration, warm cache) in a temporary git repository whose
baseline holds --baseline-rows rows, after a commit that adds 0, 1, 10 and 100 rows, against the goals of issue 15.

    python -m gradshield_research.bench.speed [--rows 256] [--exact-rows 32] [--tokens 256] [--batch-size 8] [--adapter none|embedded]
    python -m gradshield_research.bench.speed --latency [--tokens 256] [--baseline-rows 16] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from gradshield_lint.io.rows import Message
from gradshield_lint.scoring.encode import encode_conversation, make_batches
from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
from gradshield_lint.scoring.losses import row_losses
from gradshield_lint.scoring.model import ModelSpec, load_model
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.probes import ProbeSet, load_probes
from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient
from gradshield_research.bench.memory import PeakRSS, rss

TOPICS = [
    "rivers",
    "bread",
    "compilers",
    "volcanoes",
    "chess",
    "bees",
    "trains",
    "tides",
    "glass",
    "maps",
    "violins",
    "orbits",
]
VERBS = ["explains", "changes", "depends on", "connects to", "differs from", "grows with", "limits", "shapes"]


def make_rows(n: int, tokenizer, target_tokens: int = 256, seed: int = 0) -> list[list[Message]]:
    """Rows of a question and a reply grown sentence by sentence to about `target_tokens` chat tokens. The template
    is rendered once per row (counting the reply's tokens as it grows): re-rendering it per sentence made building
    256 rows take minutes."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rnd.sample(TOPICS, 2)
        q = f"How does the study of {a} relate to {b}? Please answer in detail."
        overhead = len(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": ""}], tokenize=True
            )["input_ids"]
        )
        sentences: list[str] = []
        used = overhead
        while used < target_tokens - 12:
            s = f"The way {rnd.choice(TOPICS)} {rnd.choice(VERBS)} {rnd.choice(TOPICS)} is worth a closer look."
            sentences.append(s)
            used += len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
        rows.append([Message("user", q), Message("assistant", " ".join(sentences))])
    return rows


# issue 15: seconds to a verdict for a commit adding this many rows (None: no goal, shown for the fixed cost)
LATENCY_GOALS = {0: None, 1: 5.0, 10: 10.0, 100: 60.0}


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "gradshield_lint.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"gradshield-lint {' '.join(args)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return dt, r


def _write_rows(path: Path, rows: list[list[Message]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in r]}) + "\n")


def latency(args) -> None:
    """Time to verdict through the CLI, as a pre-commit hook sees it: one fresh process per check."""
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="gs-latency-cache-"))
    t0 = time.perf_counter()
    sm = load_model(ModelSpec(name=args.model, dtype=args.dtype), cache_dir=cache)  # also prepares the cache entry
    print(
        f"model load in this process {time.perf_counter() - t0:.1f} s (prepared-model cache: {sm.prepared or 'not used'}); "
        f"cache {cache}"
    )
    tok = sm.tokenizer
    del sm
    base = make_rows(args.baseline_rows, tok, target_tokens=args.tokens, seed=1)
    new = make_rows(max(LATENCY_GOALS), tok, target_tokens=args.tokens, seed=2)
    env = {**os.environ, "GRADSHIELD_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("PRE_COMMIT_FROM_REF", None)
    env.pop("PRE_COMMIT_SOURCE", None)
    model_opt = [] if args.model == "embedded" else ["--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "data").mkdir(parents=True)
        data = repo / "data" / "train.jsonl"
        _write_rows(data, base)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
        dt, _ = _cli([*model_opt, "-q", "baseline", "create", str(data)], repo, env)
        print(f"baseline create over {len(base)} rows: {dt:.1f} s (also computes ∇H into the cache)")
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "baseline"], cwd=repo, check=True
        )
        _write_rows(data, base + new[:1])
        _cli([*model_opt, "-q", "check", str(data)], repo, env)  # warm: the OS file cache, as on a second commit
        print()
        print("| rows added | seconds to verdict | goal | met | exit code |")
        print("|---|---|---|---|---|")
        for n, goal in LATENCY_GOALS.items():
            _write_rows(data, base + new[:n])
            dt, r = _cli([*model_opt, "-q", "check", str(data)], repo, env)
            met = "" if goal is None else ("yes" if dt <= goal else "NO")
            print(f"| {n} | {dt:.1f} | {'' if goal is None else f'≤ {goal:.0f} s'} | {met} | {r.returncode} |")
    if not args.cache:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--exact-rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--tokens", type=int, default=256, help="about how many tokens each row has, chat template included"
    )
    ap.add_argument("--adapter", default="none", help="'embedded' to merge the safety adapter (same cost)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument(
        "--probes",
        type=int,
        default=0,
        help="use only the first N bundled probes for ∇H (0: all); ∇H is computed once, outside the per-row figures",
    )
    ap.add_argument(
        "--latency",
        action="store_true",
        help="time to verdict of `gradshield-lint check` for commits adding 0/1/10/100 rows",
    )
    ap.add_argument("--baseline-rows", type=int, default=16, help="with --latency: rows in the baseline")
    ap.add_argument("--cache", help="with --latency: the cache directory to use (default: a fresh one, removed after)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.latency:
        latency(args)
        return

    t0 = time.perf_counter()
    sm = load_model(
        ModelSpec(
            name=args.model, adapter=None if args.adapter == "none" else args.adapter, dtype=args.dtype, device="auto"
        )
    )
    load_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in sm.model.parameters())
    probes = load_probes(None)
    if args.probes:
        probes = ProbeSet(probes.probes[: args.probes], probes.source)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        grad = proxy_gradient(sm, probes, ProxyOptions(), ParamSelection(exclude=None), Path(cache))
        grad_s = time.perf_counter() - t0
    grad_bytes = sum(v.numel() * v.element_size() for v in grad.vectors)

    rows = make_rows(args.rows, sm.tokenizer, target_tokens=args.tokens)
    enc = [encode_conversation(sm.tokenizer, r, max_length=args.tokens + 64) for r in rows]
    tokens = np.mean([e.n_tokens for e in enc])
    print(
        f"device {sm.device.type}, dtype {args.dtype}, torch threads {torch.get_num_threads()}; model load {load_s:.1f} s; "
        f"∇H over {len(probes)} probes {grad_s:.1f} s"
    )
    print(
        f"rows: {len(enc)}, mean {tokens:.0f} tokens; weights {weights / 2**20:.0f} MiB, ∇H {grad_bytes / 2**20:.0f} MiB; "
        f"resident before scoring {rss() / 2**20:.0f} MiB"
    )

    base = rss()
    results: dict[str, dict] = {}

    def run(name, fn, n):
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
        results[name] = {
            "rows_per_s": n / dt,
            "s_per_row": dt / n,
            "peak_mib": (mem.peak - base) / 2**20,
            "out": out,
            "n": n,
        }

    @torch.no_grad()
    def forward():
        for b in make_batches(enc, args.batch_size, sm.pad_id):
            row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask)

    run("forward", forward, len(enc))
    run(
        "fd",
        lambda: [
            s.raw
            for s in score_encoded(
                sm, grad, enc, ScoreOptions(method="fd", normalize=False, batch_size=args.batch_size)
            )
        ],
        len(enc),
    )
    run(
        "fd (1/4 rows)",
        lambda: [
            s.raw
            for s in score_encoded(
                sm, grad, enc[: len(enc) // 4], ScoreOptions(method="fd", normalize=False, batch_size=args.batch_size)
            )
        ],
        len(enc) // 4,
    )
    run(
        "jvp",
        lambda: [
            s.raw
            for s in score_encoded(
                sm, grad, enc, ScoreOptions(method="jvp", normalize=False, batch_size=args.batch_size)
            )
        ],
        len(enc),
    )
    run(
        "persample",
        lambda: [
            (s.raw, s.fihs)
            for s in score_encoded(
                sm, grad, enc, ScoreOptions(method="persample", normalize=True, batch_size=args.batch_size)
            )
        ],
        len(enc),
    )
    ex = enc[: args.exact_rows]
    run(
        "exact",
        lambda: [(s.raw, s.fihs) for s in score_encoded(sm, grad, ex, ScoreOptions(method="exact", normalize=True))],
        len(ex),
    )

    exact_raw = np.array([r for r, _ in results["exact"]["out"]])
    exact_cos = np.array([c for _, c in results["exact"]["out"]])
    fwd = results["forward"]["s_per_row"]
    ex_rate = results["exact"]["rows_per_s"]
    print()
    print(
        "| method | rows/s | s/row | × exact rows/s | forward passes per row | rel. error vs exact | peak MiB above model+∇H |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        err = ""
        if name in ("fd", "jvp"):
            fast = np.array(r["out"][: len(ex)])
            err = f"{np.linalg.norm(fast - exact_raw) / np.linalg.norm(exact_raw):.2e}"
        elif name == "persample":
            fast = np.array([c for _, c in r["out"][: len(ex)]])
            err = f"{np.linalg.norm(fast - exact_cos) / np.linalg.norm(exact_cos):.2e} (cosine)"
        print(
            f"| {name} | {r['rows_per_s']:.2f} | {r['s_per_row']:.3f} | {r['rows_per_s'] / ex_rate:.1f} | "
            f"{r['s_per_row'] / fwd:.2f} | {err} | {r['peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
