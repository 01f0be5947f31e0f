"""The prepared-model cache with the embedded GGUF model and its safety adapter, in two real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import seed_cache


@pytest.mark.integration
def test_embedded_model_second_load_is_fast_and_identical(tmp_path, embedded_cache):
    """The embedded GGUF + safety adapter: the second process loads the prepared entry (no de-quantization) and
    scores the same as the first; the fingerprint a baseline records does not change. The cache starts with the
    embedded default's ∇H (made once per test run, conftest.py) but no prepared model: that is what is tested."""
    seed_cache(embedded_cache, tmp_path, prepared=False)
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "t = time.perf_counter()\n"
        "from gradshield_lint.scoring.engine import Engine, EngineSettings\n"
        "from gradshield_lint.io.rows import Message, Row\n"
        "e = Engine(EngineSettings(cache_dir=Path(sys.argv[1])))\n"
        "row = Row('r', (Message('user', 'How do I bake bread?'), Message('assistant', 'Mix flour, water, salt and yeast.')), 'x', 1)\n"
        "s = e.score_rows([row])[0].score\n"
        "print(json.dumps({'prepared': e.scoring_model.prepared, 'fihs': s.fihs, 'fp': e.fingerprint().to_dict(), 's': time.perf_counter() - t}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert [r["prepared"] for r in runs] == ["saved", "loaded"]
    assert runs[1]["fp"] == runs[0]["fp"]
    assert runs[1]["fihs"] == pytest.approx(runs[0]["fihs"], rel=1e-6)
    assert runs[1]["s"] < runs[0]["s"]
