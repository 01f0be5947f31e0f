"""Speed and memory of the FIHS methods on the embedded model (issues 2 and 15).

For the same rows of about --tokens tokens it prints rows/s for a plain forward pass (the unit), a forward and
backward pass that does nothing with its gradients (the floor of every method that needs each row's gradient),
`fd`, `jvp`, `persample` (normalized scores, the default) and `exact` (the per-row backward reference, on the first
--exact-rows rows: it runs one row at a time, so its rows/s does not depend on how many); the ratios to exact and
to the forward pass; agreement with exact; and peak resident memory above the loaded model and ∇H. Each method
runs in its own process (the same model, ∇H from a shared temporary cache, the same rows), after one forward pass
has paged in the memory-mapped weights, and keeps its best of --repeat timings. Then issue 15's goals, each met or
not, and the floors behind them: the backward-only pass, and the bytes autograd keeps for one backward pass over
--batch-size rows (saved activations, counted once per storage). The parameters are the default score's
(`scoring.params`: every linear layer, normalization scales left out) unless `--params all`.

With --latency it measures instead the time to verdict of a commit: `gradshield-lint check` run as a user runs it
(a subprocess of the installed CLI, default configuration, warm cache) in a temporary git repository whose
baseline holds --baseline-rows rows, after a commit that adds 0, 1, 10 and 100 rows, cold (a fresh process
scores: GRADSHIELD_DAEMON=0) and warm (the warm process answers, issue 32) side by side, against the goals of
issues 15 and 32; then where the time goes (Python start, the imports alone, the fixed cost, the cost per added row).

    python -m gradshield_research.bench.speed [--rows 256] [--exact-rows 32] [--tokens 256] [--batch-size 8]
        [--adapter none|embedded] [--params default|all] [--repeat N]
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
from gradshield_lint.scoring.fihs import ScoreOptions, backward_tokens, score_encoded
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
WARM_GOALS = {1: 1.5}
"""Issue 32: a check answered by the warm process (gradshield_lint/daemon), one row added."""


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
    base = make_rows(args.baseline_rows, tok, target_tokens=args.tokens, seed=1)
    new = make_rows(max(LATENCY_GOALS), tok, target_tokens=args.tokens, seed=2)
    # the unit a row's cost is stated in: one plain forward pass over such rows, in this process
    enc = [encode_conversation(tok, r, max_length=args.tokens + 64) for r in new[:8]]
    with torch.no_grad():
        for _ in range(2):  # the first pass pages the weights in
            t0 = time.perf_counter()
            for b in make_batches(enc, 8, sm.pad_id):
                row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask)
            fwd = (time.perf_counter() - t0) / len(enc)
    sm_class = type(sm.model)
    del sm
    env = {**os.environ, "GRADSHIELD_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("PRE_COMMIT_FROM_REF", None)
    env.pop("PRE_COMMIT_SOURCE", None)
    model_opt = [] if args.model == "embedded" else ["--model", args.model]
    # cold: a fresh process scores; warm: the same check answered by the warm process (issue 32)
    cold_env = {**env, "GRADSHIELD_DAEMON": "0"}
    warm_env = {k: v for k, v in env.items() if k != "CI"} | {"GRADSHIELD_DAEMON": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "data").mkdir(parents=True)
        data = repo / "data" / "train.jsonl"
        _write_rows(data, base)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
        dt, _ = _cli([*model_opt, "-q", "baseline", "create", str(data)], repo, cold_env)
        print(f"baseline create over {len(base)} rows: {dt:.1f} s (also computes ∇H into the cache)")
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "baseline"], cwd=repo, check=True
        )
        _write_rows(data, base + new[:1])
        _cli([*model_opt, "-q", "check", str(data)], repo, cold_env)  # warm: the OS file cache, as on a second commit
        start, _ = _cli(["--version"], repo, env)
        imports = _imports_alone(sm_class, env)
        _cli([*model_opt, "-q", "daemon", "start"], repo, warm_env)
        print()
        print("| rows added | cold s | goal | met | warm s | goal | met | exit code |")
        print("|---|---|---|---|---|---|---|---|")
        took: dict[int, float] = {}
        try:
            for n, goal in LATENCY_GOALS.items():
                _write_rows(data, base + new[:n])
                dt, r = _cli([*model_opt, "-q", "check", str(data)], repo, cold_env)
                warm, rw = _cli([*model_opt, "-q", "check", str(data)], repo, warm_env)
                if (rw.returncode, rw.stdout) != (r.returncode, r.stdout):
                    raise SystemExit(f"the warm check of {n} rows answered otherwise than the cold one:\n{rw.stderr}")
                took[n] = dt
                met = "" if goal is None else ("yes" if dt <= goal else "NO")
                wgoal = WARM_GOALS.get(n)
                wmet = "" if wgoal is None else ("yes" if warm <= wgoal else "NO")
                print(
                    f"| {n} | {dt:.1f} | {'' if goal is None else f'≤ {goal:.0f} s'} | {met} "
                    f"| {warm:.1f} | {'' if wgoal is None else f'≤ {wgoal} s'} | {wmet} | {r.returncode} |"
                )
        finally:
            _cli([*model_opt, "-q", "daemon", "stop"], repo, warm_env)
        print_latency_floors(took, start, fwd, imports)
    if not args.cache:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)


def _imports_alone(model_class: type, env: dict[str, str]) -> float:
    """Seconds a fresh Python takes to import torch and the scoring model's transformers class, nothing else: the
    part of a check's fixed cost that no code of ours runs in."""
    stmt = f"import torch; import {model_class.__module__}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", stmt], env=env, check=True)
    return time.perf_counter() - t


def print_latency_floors(took: dict[int, float], start: float, fwd: float, imports: float) -> None:
    """Where a check's time goes, from the timings above: Python and the CLI starting (`--version`), reading and
    diffing with no model (0 rows), the model and ∇H loaded (1 row, less one row's scoring), and each further row
    (the slope between the largest commits), that last one as a ratio to a plain forward pass."""
    sizes = sorted(n for n in took if n > 0)
    hi, lo = sizes[-1], sizes[-2] if len(sizes) > 1 else sizes[0]
    per_row = (took[hi] - took[lo]) / (hi - lo) if hi > lo else took[hi] - took[0]
    fixed = took[1] - per_row
    print()
    print("Floors (from the rows above):")
    print(f"- Python and the CLI starting: {start:.1f} s; reading, diffing, no model: {took[0]:.1f} s")
    print(
        f"- a check that scores: {fixed:.1f} s before its first row (imports, model and ∇H loaded), of which "
        f"{imports:.1f} s is importing torch and the model's transformers module in a fresh Python"
    )
    print(f"- each added row: {per_row:.2f} s, {per_row / fwd:.2f} forward passes of {fwd:.2f} s")
    for n, goal in LATENCY_GOALS.items():
        if goal is None or n == 0:
            continue
        bound = fixed + n * per_row
        print(f"- {n} row{'' if n == 1 else 's'}: at least {bound:.1f} s at these costs (goal {goal:.0f} s)")


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
    ap.add_argument(
        "--params",
        choices=("default", "all"),
        default="default",
        help="the default score's parameter selection, or every parameter but the embeddings (norm scales included)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="time each method this many times and keep the best")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one method (see bench)
    ap.add_argument("--grad-cache", help=argparse.SUPPRESS)
    ap.add_argument("--baseline-rows", type=int, default=16, help="with --latency: rows in the baseline")
    ap.add_argument("--cache", help="with --latency: the cache directory to use (default: a fresh one, removed after)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.latency:
        latency(args)
        return

    if args.worker:
        worker(args)
        return
    bench(args)


TIMED = ("forward", "backward", "fd", "fd (1/4 rows)", "jvp", "persample", "exact")


def _load(args):
    return load_model(
        ModelSpec(
            name=args.model, adapter=None if args.adapter == "none" else args.adapter, dtype=args.dtype, device="auto"
        )
    )


def _gradient(sm, args, cache: Path):
    probes = load_probes(None)
    if args.probes:
        probes = ProbeSet(probes.probes[: args.probes], probes.source)
    selection = ParamSelection() if args.params == "default" else ParamSelection(exclude=None)
    return proxy_gradient(sm, probes, ProxyOptions(), selection, cache), len(probes)


def _encoded(sm, args):
    rows = make_rows(args.rows, sm.tokenizer, target_tokens=args.tokens)
    return [encode_conversation(sm.tokenizer, r, max_length=args.tokens + 64) for r in rows]


def bench(args) -> None:
    """Each method in a fresh process (the same model, ∇H from a shared cache, the same rows): what one method
    leaves in the allocator or writes into the memory-mapped weights (fd's in-place shifts) cannot inflate the next
    one's memory figure, and each timing starts from the same state."""
    t0 = time.perf_counter()
    sm = _load(args)
    load_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in sm.model.parameters())
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        grad, n_probes = _gradient(sm, args, Path(cache))
        grad_s = time.perf_counter() - t0
        grad_bytes = sum(v.numel() * v.element_size() for v in grad.vectors)
        enc = _encoded(sm, args)
        floor = saved_for_backward(sm, next(make_batches(enc, args.batch_size, sm.pad_id)))
        print(
            f"device {sm.device.type}, dtype {args.dtype}, torch threads {torch.get_num_threads()}; model load "
            f"{load_s:.1f} s; ∇H over {n_probes} probes {grad_s:.1f} s; parameters: {args.params}"
        )
        print(
            f"rows: {len(enc)}, mean {np.mean([e.n_tokens for e in enc]):.0f} tokens; weights {weights / 2**20:.0f} "
            f"MiB, ∇H {grad_bytes / 2**20:.0f} MiB; each method in its own process, best of {args.repeat} run(s)",
            flush=True,
        )
        del sm, grad
        results = {name: _run_worker(args, name, Path(cache)) for name in TIMED}
    report(results, floor, args.batch_size)


def _run_worker(args, name: str, cache: Path) -> dict:
    argv = [sys.executable, "-m", "gradshield_research.bench.speed", "--worker", name, "--grad-cache", str(cache)]
    for flag in (
        "rows",
        "exact_rows",
        "batch_size",
        "tokens",
        "adapter",
        "model",
        "dtype",
        "probes",
        "params",
        "repeat",
    ):
        argv += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def worker(args) -> None:
    """One method, timed --repeat times (the best time is kept: the least disturbed run); the peak resident memory
    above what the loaded model and ∇H occupy once a forward pass has paged their memory-mapped files in."""
    torch.manual_seed(0)
    sm = _load(args)
    grad, _ = _gradient(sm, args, Path(args.grad_cache))
    enc = _encoded(sm, args)
    with torch.no_grad():
        for b in make_batches(enc[: args.batch_size], args.batch_size, sm.pad_id):
            row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask)
    for v in grad.vectors:  # pages ∇H in too
        float(v.sum())
    name = args.worker
    rows = enc[: args.exact_rows] if name == "exact" else enc[: len(enc) // 4] if name == "fd (1/4 rows)" else enc

    def call():
        if name == "forward":
            with torch.no_grad():
                for b in make_batches(rows, args.batch_size, sm.pad_id):
                    row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask)
            return []
        if name == "backward":
            backward_only(sm, rows, args.batch_size)
            return []
        method = name.split(" ")[0]
        normalize = method in ("persample", "exact")
        opts = ScoreOptions(method=method, normalize=normalize, batch_size=args.batch_size)
        return [(s.raw, s.fihs) for s in score_encoded(sm, grad, rows, opts)]

    base = rss()
    best, peak, out = float("inf"), 0, []
    for _ in range(args.repeat):
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = call()
            best = min(best, time.perf_counter() - t)
        peak = max(peak, mem.peak)
    n = len(rows)
    print(
        "RESULT "
        + json.dumps(
            {"rows_per_s": n / best, "s_per_row": best / n, "peak_mib": (peak - base) / 2**20, "out": out, "n": n}
        )
    )


def report(results: dict[str, dict], floor: int, batch_size: int) -> None:
    ex = results["exact"]
    exact_raw = np.array([r for r, _ in ex["out"]])
    exact_cos = np.array([c for _, c in ex["out"]])
    fwd = results["forward"]["s_per_row"]
    ex_rate = ex["rows_per_s"]
    print()
    print(
        "| method | rows/s | s/row | × exact rows/s | forward passes per row | rel. error vs exact | peak MiB above model+∇H |"
    )
    print("|---|---|---|---|---|---|---|")
    errors: dict[str, float] = {}
    for name, r in results.items():
        err = ""
        if name in ("fd", "jvp"):
            fast = np.array([raw for raw, _ in r["out"][: ex["n"]]])
            errors[name] = float(np.linalg.norm(fast - exact_raw) / np.linalg.norm(exact_raw))
            err = f"{errors[name]:.2e}"
        elif name == "persample":
            fast = np.array([c for _, c in r["out"][: ex["n"]]])
            errors[name] = float(np.linalg.norm(fast - exact_cos) / np.linalg.norm(exact_cos))
            err = f"{errors[name]:.2e} (cosine)"
        print(
            f"| {name} | {r['rows_per_s']:.2f} | {r['s_per_row']:.3f} | {r['rows_per_s'] / ex_rate:.1f} | "
            f"{r['s_per_row'] / fwd:.2f} | {err} | {r['peak_mib']:.0f} |"
        )
    print_goals(results, floor, errors["persample"], batch_size)


def backward_only(sm, rows, batch_size: int) -> None:
    """Forward and backward passes over the rows, batched as persample batches them, with gradients from the input
    embeddings on and nothing done with them: what any method that needs each row's gradient pays before its
    per-row products (persample's per-sample products, exact's weight gradients)."""
    bound = backward_tokens(ScoreOptions(), sm.device)

    def grad_at_embeddings(mod, inputs, output):
        return output.detach().requires_grad_(True)

    handle = sm.model.get_input_embeddings().register_forward_hook(grad_at_embeddings)
    try:
        for b in make_batches(rows, batch_size, sm.pad_id, bound):
            with torch.enable_grad():
                row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask, "mean", "float32").sum().backward()
    finally:
        handle.remove()


def saved_for_backward(sm, batch) -> int:
    """Bytes autograd keeps for the backward pass of one batch's losses, as persample and exact run it (gradients
    from the input embeddings on): each saved tensor's storage counted once. This is the memory floor of any
    batched backward pass over these rows, whatever is done with its gradients."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    def grad_at_embeddings(mod, inputs, output):
        return output.detach().requires_grad_(True)

    handle = sm.model.get_input_embeddings().register_forward_hook(grad_at_embeddings)
    weights = {p.untyped_storage().data_ptr() for p in sm.model.parameters()}
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = row_losses(sm.model, batch.input_ids, batch.attention_mask, batch.target_mask, "mean", "float32")
        del losses
    finally:
        handle.remove()
    return sum(n for ptr, n in seen.items() if ptr not in weights)


def print_goals(results: dict[str, dict], floor: int, ex_err: float, batch_size: int) -> None:
    """Issue 15's goals for the per-row methods, each as met or not, from this run's figures."""
    fwd = results["forward"]["s_per_row"]
    ps = results["persample"]
    ex_rate = results["exact"]["rows_per_s"]
    goals = [
        ("persample: forward passes per row ≤ 3.5", ps["s_per_row"] / fwd, 3.5, "le"),
        ("persample: × exact rows/s ≥ 1.5", ps["rows_per_s"] / ex_rate, 1.5, "ge"),
        ("persample: peak MiB above model + ∇H ≤ 1536", ps["peak_mib"], 1536.0, "le"),
        ("persample: cosine rel. error vs exact ≤ 1e-4", ex_err, 1e-4, "le"),
        ("fd: forward passes per row ≤ 2.2", results["fd"]["s_per_row"] / fwd, 2.2, "le"),
    ]
    print()
    print("| goal | measured | met |")
    print("|---|---|---|")
    for name, value, bound, how in goals:
        met = value <= bound if how == "le" else value >= bound
        shown = f"{value:.2e}" if bound < 0.01 else f"{value:.2f}"
        print(f"| {name} | {shown} | {'yes' if met else 'NO'} |")
    bwd = results["backward"]["s_per_row"] / fwd
    print()
    print("Floors (what bounds the figures above):")
    print(
        f"- a forward and a backward pass, nothing done with the gradients: {bwd:.2f} forward passes per row. "
        f"persample adds one product per selected linear layer and row ({ps['s_per_row'] / fwd - bwd:.2f} here), "
        f"exact the same products as its weight gradients ({results['exact']['s_per_row'] / fwd - bwd:.2f}): the "
        "same arithmetic, so persample can outrun exact only where a batch of one leaves the cores idle (short rows)"
    )
    print(
        f"- memory: one backward pass over a batch of {batch_size} rows keeps "
        f"{floor / 2**20:.0f} MiB for autograd alone (saved activations), before any per-sample product; "
        f"persample's bound (scoring.batch_tokens) is what keeps its peak at {ps['peak_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
