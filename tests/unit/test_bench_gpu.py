"""`gradshield_research.bench.gpu` on a machine without CUDA: it refuses cleanly (exit 2, says why) and its --plan arithmetic holds
(a model of about 1B parameters, counted on the meta device). The GPU measurement itself needs a GPU."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gradshield_research import REPO
from gradshield_research.bench import gpu as bench_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the bench would run for real")
def test_refuses_without_cuda():
    r = subprocess.run(
        [sys.executable, "-m", "gradshield_research.bench.gpu", "--rows", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert r.returncode == 2, r.stderr
    assert "needs a CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_plan_is_about_one_billion_parameters():
    gpu = bench_gpu
    n = gpu.parameter_count(gpu.llama_config())
    assert 0.9e9 < n < 1.2e9
    p = gpu.plan(n)
    assert p["bf16 weights"] == pytest.approx(2 * n / 2**30)
    assert p["float32 weights"] == pytest.approx(2 * p["bf16 weights"])
    rel, rho, sigma = gpu.agreement([1.0, 2.0, 3.0, 4.5], [1.0, 2.0, 3.0, 4.0])
    assert rho == pytest.approx(1.0) and 0 < rel < 0.1 and sigma > 0
