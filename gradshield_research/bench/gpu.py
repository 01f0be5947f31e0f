"""The GPU path, once, on a CUDA machine (issue 16): bf16 scoring on a ~1B-parameter model built from a config.

A random-weight llama of about 1B parameters (hidden 2048, 14 layers, MLP 8192, grouped-query attention, the
embedded model's tokenizer and vocabulary, untied embeddings) is saved to a temporary folder and loaded the way a
user's model is (`model.name: DIR`, device cuda). For the same rows it prints, per method:
- rows/s in bf16 for the default score (cosine, `persample`) and the raw score (`auto` in bf16: `jvp`);
- agreement with float32 on the same weights (relative L2 error, Spearman, largest difference in σ of the float32
  scores): the default against float32 `persample`, the raw score against float32 `jvp`;
- peak CUDA memory per method (torch.cuda.max_memory_allocated, above the loaded model and ∇H).
Random weights make the scores meaningless as verdicts but not as timings or as a bf16-vs-float32 comparison.

    python -m gradshield_research.bench.gpu [--rows 256] [--tokens 256] [--batch-size 8]
    python -m gradshield_research.bench.gpu --plan     # the model's parameter count and memory, no GPU needed

Without CUDA it exits 2 and says so: the GPU figures in docs/measurements.md stay unmeasured until this runs on a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 14,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
VOCAB = 49152  # SmolLM2's tokenizer: the embedded model's, read offline from its GGUF file


def llama_config(vocab_size: int = VOCAB):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, **CONFIG)


def parameter_count(cfg) -> int:
    """Counted on the meta device: no memory is allocated."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    return sum(p.numel() for p in model.parameters())


def plan(n_params: int) -> dict[str, float]:
    """GiB for the weights in bf16 and float32, and for ∇H (float32, all parameters selected)."""
    gib = float(1 << 30)
    return {
        "bf16 weights": 2 * n_params / gib,
        "float32 weights": 4 * n_params / gib,
        "∇H (float32)": 4 * n_params / gib,
    }


def spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(got, ref) -> tuple[float, float, float]:
    import numpy as np

    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    sigma = float(np.max(np.abs(got - ref)) / max(ref.std(), 1e-30))
    return rel, spearman(got, ref), sigma


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--plan", action="store_true", help="print the model's size and memory and exit (no GPU needed)")
    args = ap.parse_args(argv)
    if args.rows < 2 or args.tokens < 16 or args.batch_size < 1:
        ap.error("--rows >= 2, --tokens >= 16, --batch-size >= 1")

    import torch

    if args.plan:
        n_params = parameter_count(llama_config())
        print(
            f"llama {CONFIG['hidden_size']}x{CONFIG['num_hidden_layers']}: {n_params / 1e9:.3f}B parameters; "
            + ", ".join(f"{k} {v:.1f} GiB" for k, v in plan(n_params).items())
        )
        return 0
    if not torch.cuda.is_available():
        print(
            "`gradshield_research.bench.gpu`: needs a CUDA GPU (torch.cuda.is_available() is False); the GPU figures stay unmeasured",
            file=sys.stderr,
        )
        return 2
    n_params = parameter_count(llama_config())

    from transformers import AutoTokenizer, LlamaForCausalLM

    from gradshield_lint.io.rows import Message
    from gradshield_lint.scoring.encode import encode_conversation
    from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
    from gradshield_lint.scoring.model import (
        EMBEDDED_GGUF,
        ModelSpec,
        embedded_model_dir,
        load_model,
    )
    from gradshield_lint.scoring.params import ParamSelection
    from gradshield_lint.scoring.probes import load_probes
    from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient
    from gradshield_research.bench.scale import make_rows

    tmp = Path(tempfile.mkdtemp(prefix="gs-gpu-"))
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()), gguf_file=EMBEDDED_GGUF)
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(len(tok))).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    rows = [[Message(m["role"], m["content"]) for m in r["messages"]] for r in make_rows(args.rows, args.tokens)]
    probes = load_probes(None)
    sel = ParamSelection(exclude=r"norm|(^|\.)ln_")  # the shipped default selection
    gpu = torch.cuda.get_device_name(0)
    print(
        f"{gpu}; model {n_params / 1e9:.2f}B parameters; {args.rows} rows of ~{args.tokens} tokens; batch {args.batch_size}"
    )

    results: dict[tuple[str, str], tuple[list[float], float, float]] = {}
    for dtype in ("bfloat16", "float32"):
        t0 = time.perf_counter()
        sm = load_model(ModelSpec(name=str(tmp / "model"), adapter=None, device="cuda", dtype=dtype))
        grad = proxy_gradient(sm, probes, ProxyOptions(), sel, tmp / f"cache-{dtype}")
        torch.cuda.synchronize()
        print(
            f"{dtype}: model + ∇H in {time.perf_counter() - t0:.1f} s, {torch.cuda.memory_allocated() / 2**30:.1f} GiB"
        )
        enc = [encode_conversation(sm.tokenizer, r, max_length=args.tokens * 2) for r in rows]
        for name, opts in (
            ("default (cosine)", ScoreOptions(normalize=True, method="persample")),
            ("raw", ScoreOptions(method="jvp", normalize=False)),
        ):
            opts = replace(opts, batch_size=args.batch_size)
            score_encoded(sm, grad, enc[:2], opts)  # warm-up: kernels, allocator
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            scores = score_encoded(sm, grad, enc, opts)
            torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            results[(name, dtype)] = (
                [s.fihs for s in scores],
                len(enc) / secs,
                (torch.cuda.max_memory_allocated() - base) / 2**30,
            )
        del sm, grad
        torch.cuda.empty_cache()

    print(
        "| method | dtype | rows/s | peak GiB above model+∇H | rel. L2 vs float32 | Spearman | max diff (σ of float32) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("default (cosine)", "raw"):
        ref = results[(name, "float32")][0]
        for dtype in ("bfloat16", "float32"):
            scores, rps, peak = results[(name, dtype)]
            rel, rho, sig = agreement(scores, ref) if dtype == "bfloat16" else (math.nan, math.nan, math.nan)
            cells = "| | |" if dtype == "float32" else f"{rel:.2e} | {rho:.4f} | {sig:.3f} |"
            print(f"| {name} | {dtype} | {rps:.1f} | {peak:.2f} | {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
