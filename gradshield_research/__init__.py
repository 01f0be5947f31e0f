"""The research side of gradshield-lint: training the embedded model's safety adapter (`train_adapter`,
`training`), the refusal judge (`judge`), and the benchmarks (`bench`: speed, detection quality, peers, replication,
verdict, scale). It lives in the repository and is installed by a development install (`make setup`), never in the
runtime wheel; `gradshield_lint` imports nothing from it.

Run a benchmark from the repository root: `python -m gradshield_research.bench.quality --help`.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository this package is part of (its data/, bench/ and the runtime package's adapters)."""
BENCH = REPO / "bench"
"""Where the benchmarks' record lives: QUALITY.md, their data (bench/data/) and figures; bench/out/ is scratch."""

__all__ = ["BENCH", "REPO"]
