"""Size and speed of a 1,000,000-row stored baseline (issue 4: under 64 MB, loads in under 2 s).

Writes a baseline with N random rows (16-hex-digit ids as rows.py makes them, FIHS-like float scores) to a
temporary directory, reads it back, and prints file size, write time, load time (wall clock and CPU time of this
process: on a shared machine the CPU time is the steadier figure), peak memory of the load (tracemalloc, measured
in a second, untimed load because tracing slows Python down) and the process's peak RSS.

    python -m gradshield_research.bench.baseline_size [--rows 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from gradshield_lint.lint.baseline import Fingerprint, Recorded, make_baseline, read_baseline, write_baseline
from gradshield_lint.lint.threshold import find_threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    ids = [f"{v:016x}" for v in rng.integers(0, 2**63, size=args.rows, dtype=np.int64)]
    vals = np.concatenate([rng.normal(0.0, 1e-3, args.rows - args.rows // 50), rng.normal(6e-3, 5e-4, args.rows // 50)])
    scores = dict(zip(ids, vals.tolist()))
    t0 = time.perf_counter()
    threshold = find_threshold(vals)
    t_thr = time.perf_counter() - t0
    fp = Fingerprint(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_revision="main",
        model_hash="sha256:" + "0" * 64,
        adapter="sha256:" + "1" * 64,
        proxy="refusal_margin",
        probe_set="sha256:" + "2" * 64,
        params="all",
        max_length=2048,
        chat_template="sha256:" + "3" * 64,
        loss_reduction="mean",
        normalize="none",
    )
    t0 = time.perf_counter()
    b = make_baseline(fp, scores, threshold, Recorded(method="jvp", dtype="float32", device="cpu"))
    t_make = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gradshield-baseline.json"
        t0, c0 = time.perf_counter(), time.process_time()
        write_baseline(path, b)
        t_write, c_write = time.perf_counter() - t0, time.process_time() - c0
        size = os.path.getsize(path)
        t0, c0 = time.perf_counter(), time.process_time()
        b2 = read_baseline(path)
        t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
        assert len(b2.scores) == len(b.scores)
        t0 = time.perf_counter()
        json.loads(path.read_text(encoding="utf-8"))  # the floor: stdlib JSON decoding alone
        t_json = time.perf_counter() - t0
        tracemalloc.start()
        read_baseline(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"rows:               {args.rows:,}")
    print(f"file size:          {size / 1e6:.1f} MB ({size / args.rows:.1f} bytes/row)   goal < 64 MB")
    print(f"threshold:          {threshold.value:.6g} ({threshold.method}, {t_thr:.2f} s)")
    print(f"make (round/check): {t_make:.2f} s")
    print(f"write:              {t_write:.2f} s (cpu {c_write:.2f} s)")
    print(f"load:               {t_load:.2f} s (cpu {c_load:.2f} s)   goal < 2 s")
    print(f"  of which JSON:    ~{t_json:.2f} s (json.loads alone, same file)")
    print(f"load average:       {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"peak memory, load:  {peak / 1e6:.0f} MB (tracemalloc)")
    print(f"peak RSS, process:  {rss:.0f} MB")


if __name__ == "__main__":
    main()
