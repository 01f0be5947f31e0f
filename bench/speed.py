"""Speed and memory of the FIHS methods on the embedded model (issue 2's goals).

For the same rows of about 256 tokens it prints rows/s for a plain forward pass (the floor), `fd`, `jvp`,
`persample` (normalized scores) and `exact` (the per-row backward reference, on the first --exact-rows rows: it
runs one row at a time, so its rows/s does not depend on how many), the ratios fast/exact and forward/fast (how
many forward passes' worth of time a row costs), agreement with exact, and peak resident memory per method
sampled while it runs (and for fd at a quarter of the rows, to show it does not grow with the number of rows).

    python bench/speed.py [--rows 256] [--exact-rows 32] [--tokens 256] [--batch-size 8] [--adapter none|embedded]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from memory import PeakRSS, rss
import torch

from gradshield_lint.encode import encode_conversation, make_batches
from gradshield_lint.fihs import ScoreOptions, score_encoded
from gradshield_lint.losses import row_losses
from gradshield_lint.model import ModelSpec, load_model
from gradshield_lint.params import ParamSelection
from gradshield_lint.probes import ProbeSet, load_probes
from gradshield_lint.proxy import ProxyOptions, proxy_gradient
from gradshield_lint.rows import Message

TOPICS = ["rivers", "bread", "compilers", "volcanoes", "chess", "bees", "trains", "tides", "glass", "maps", "violins", "orbits"]
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
        overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": ""}], tokenize=True)["input_ids"])
        sentences: list[str] = []
        used = overhead
        while used < target_tokens - 12:
            s = f"The way {rnd.choice(TOPICS)} {rnd.choice(VERBS)} {rnd.choice(TOPICS)} is worth a closer look."
            sentences.append(s)
            used += len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
        rows.append([Message("user", q), Message("assistant", " ".join(sentences))])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--exact-rows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256, help="about how many tokens each row has, chat template included")
    ap.add_argument("--adapter", default="none", help="'embedded' to merge the safety adapter (same cost)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--probes", type=int, default=0, help="use only the first N bundled probes for ∇H (0: all); ∇H is computed once, outside the per-row figures")
    args = ap.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    sm = load_model(ModelSpec(name=args.model, adapter=None if args.adapter == "none" else args.adapter, dtype=args.dtype, device="auto"))
    load_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in sm.model.parameters())
    probes = load_probes(None)
    if args.probes:
        probes = ProbeSet(probes.probes[: args.probes], probes.source)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        grad = proxy_gradient(sm, probes, ProxyOptions(), ParamSelection(), Path(cache))
        grad_s = time.perf_counter() - t0
    grad_bytes = sum(v.numel() * v.element_size() for v in grad.vectors)

    rows = make_rows(args.rows, sm.tokenizer, target_tokens=args.tokens)
    enc = [encode_conversation(sm.tokenizer, r, max_length=args.tokens + 64) for r in rows]
    tokens = np.mean([e.n_tokens for e in enc])
    print(f"device {sm.device.type}, dtype {args.dtype}, torch threads {torch.get_num_threads()}; model load {load_s:.1f} s; "
          f"∇H over {len(probes)} probes {grad_s:.1f} s")
    print(f"rows: {len(enc)}, mean {tokens:.0f} tokens; weights {weights / 2**20:.0f} MiB, ∇H {grad_bytes / 2**20:.0f} MiB; "
          f"resident before scoring {rss() / 2**20:.0f} MiB")

    base = rss()
    results: dict[str, dict] = {}

    def run(name, fn, n):
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
        results[name] = {"rows_per_s": n / dt, "s_per_row": dt / n, "peak_mib": (mem.peak - base) / 2**20, "out": out, "n": n}

    @torch.no_grad()
    def forward():
        for b in make_batches(enc, args.batch_size, sm.pad_id):
            row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask)

    run("forward", forward, len(enc))
    run("fd", lambda: [s.raw for s in score_encoded(sm, grad, enc, ScoreOptions(method="fd", batch_size=args.batch_size))], len(enc))
    run("fd (1/4 rows)", lambda: [s.raw for s in score_encoded(sm, grad, enc[: len(enc) // 4], ScoreOptions(method="fd", batch_size=args.batch_size))], len(enc) // 4)
    run("jvp", lambda: [s.raw for s in score_encoded(sm, grad, enc, ScoreOptions(method="jvp", batch_size=args.batch_size))], len(enc))
    run("persample", lambda: [(s.raw, s.fihs) for s in score_encoded(sm, grad, enc, ScoreOptions(method="persample", normalize=True, batch_size=args.batch_size))], len(enc))
    ex = enc[: args.exact_rows]
    run("exact", lambda: [(s.raw, s.fihs) for s in score_encoded(sm, grad, ex, ScoreOptions(method="exact", normalize=True))], len(ex))

    exact_raw = np.array([r for r, _ in results["exact"]["out"]])
    exact_cos = np.array([c for _, c in results["exact"]["out"]])
    fwd = results["forward"]["s_per_row"]
    ex_rate = results["exact"]["rows_per_s"]
    print()
    print("| method | rows/s | s/row | × exact rows/s | forward passes per row | rel. error vs exact | peak MiB above model+∇H |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        err = ""
        if name in ("fd", "jvp"):
            fast = np.array(r["out"][: len(ex)])
            err = f"{np.linalg.norm(fast - exact_raw) / np.linalg.norm(exact_raw):.2e}"
        elif name == "persample":
            fast = np.array([c for _, c in r["out"][: len(ex)]])
            err = f"{np.linalg.norm(fast - exact_cos) / np.linalg.norm(exact_cos):.2e} (cosine)"
        print(f"| {name} | {r['rows_per_s']:.2f} | {r['s_per_row']:.3f} | {r['rows_per_s'] / ex_rate:.1f} | "
              f"{r['s_per_row'] / fwd:.2f} | {err} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
