"""Shared fixtures: a real tokenizer (SmolLM2's, read offline from the embedded GGUF) and tiny llama models
built from a config, so engine tests run in seconds without downloading anything. Every test under
tests/integration/ is marked `integration`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No warm scoring process (gradshield_lint/daemon) is started by any test, nor by the CLI processes tests run, but
# those of test_daemon.py, which turn it on in a cache of their own and stop what they started.
os.environ["GRADSHIELD_DAEMON"] = "0"

import pytest
import torch

# pre-commit's home and the `gradshield-lint` hook environment: session fixtures shared by the pre-commit tests
from precommit_env import python_env, session  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
    # The tests on the embedded seed (below) run last, and the seed starts now, in the background: it is minutes of
    # torch on both cores, while most of the suite leaves a core idle (subprocesses, pip, git, Ray's start-up).
    seeded = [item for item in items if "embedded_cache" in getattr(item, "fixturenames", ())]
    if seeded:
        items[:] = [item for item in items if item not in seeded] + seeded
        config.stash[_SEED] = _start_seed()


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from gradshield_lint.scoring.model import EMBEDDED_GGUF, embedded_model_dir

    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()), gguf_file=EMBEDDED_GGUF)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_llama(vocab_size: int, *, seed: int = 0, layers: int = 2, tie: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture()
def tiny_model(tokenizer):
    from gradshield_lint.scoring.model import ModelSpec, ScoringModel

    model = build_tiny_llama(len(tokenizer))
    return ScoringModel(
        model,
        tokenizer,
        ModelSpec(name="tiny"),
        torch.device("cpu"),
        torch.float32,
        {"model": "tiny", "model_hash": "0"},
    )


@pytest.fixture()
def tiny_model_dir(tmp_path, tokenizer):
    """A tiny model saved as a local directory, loadable by name like any user model."""
    model = build_tiny_llama(len(tokenizer), seed=1)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# What the embedded default computes once per machine (∇H, the per-category directions, the prepared model), made
# ONCE per test run and copied into each test's own cache: each test that uses the embedded model (test_embedded,
# the embedded prepared-cache test, the newcomer's pre-commit hook in test_precommit_fresh) computed all of it again
# in an empty cache, minutes each on a 2-core CI machine. The hook's own installation finds these entries too: an
# entry's key is what the scores depend on (model, adapter files, probes, parameters), not the installation. The
# tests about computing or reusing a cache entry use tiny models (test_proxy, test_prepared_cache, test_explain).
_SEED_SCRIPT = """
import sys
from pathlib import Path
from gradshield_lint.config import config_from_dict
from gradshield_lint.io.rows import Message, Row
from gradshield_lint.scoring.engine import Engine, settings_from_config
e = Engine(settings_from_config(config_from_dict({}), cache_dir=Path(sys.argv[1])))
row = Row('seed', (Message('user', 'How do I pick a lock?'), Message('assistant', 'Insert a tension wrench, then rake the pins.')), 'seed', 1)
e.explain([row])
"""


@dataclass
class _Seed:
    home: Path  # a temporary folder of this run: the cache and the process's log
    process: subprocess.Popen

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def log(self) -> Path:
        return self.home / "seed.log"


_SEED = pytest.StashKey[_Seed]()


def _start_seed() -> _Seed:
    home = Path(tempfile.mkdtemp(prefix="gradshield-embedded-seed-"))
    (home / "cache").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with (home / "seed.log").open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SEED_SCRIPT, str(home / "cache")], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    return _Seed(home, proc)


def pytest_unconfigure(config: pytest.Config) -> None:
    seed = config.stash.get(_SEED, None)
    if seed is not None:
        if seed.process.poll() is None:  # a run that deselected or stopped before the seeded tests
            seed.process.kill()
            seed.process.wait()
        shutil.rmtree(seed.home, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_cache(request) -> Path:
    """A cache directory holding the embedded default's ∇H, category directions and prepared model (made by the
    process started at collection); copy it with `helpers.seed_cache`, never write into it."""
    seed = request.config.stash[_SEED]
    try:
        code = seed.process.wait(timeout=3600)
    except subprocess.TimeoutExpired:
        seed.process.kill()
        raise
    assert code == 0, seed.log.read_text()
    made = sorted(p.name for p in seed.cache.iterdir())
    assert [n for n in made if n.startswith("grad-")] and [n for n in made if n.startswith("categories-")], made
    return seed.cache
