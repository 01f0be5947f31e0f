"""The prepared-model cache (prepared.py): a model that takes work to prepare is saved once, prepared, in the cache
directory and memory-mapped from there; a damaged entry is rebuilt, never used.

The tiny llama saved as a real local directory plus a real peft LoRA adapter (non-zero, so merging changes the
weights) stand in for the embedded GGUF: same code path (an adapter to merge makes the model worth caching). The
embedded model itself is checked once, marked integration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gradshield_lint.scoring import model as model_mod
from gradshield_lint.scoring import prepared
from gradshield_lint.scoring.encode import chat_template_hash
from gradshield_lint.scoring.model import ModelSpec, load_model


def _make_adapter(model_dir: Path, folder: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(
        base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(str(folder))
    return folder


@pytest.fixture()
def adapter_dir(tiny_model_dir, tmp_path):
    return _make_adapter(tiny_model_dir, tmp_path / "adapter-a", seed=3)


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in cache.iterdir() if p.name.startswith("model-")]
    return entry


def _logits(sm) -> torch.Tensor:
    with torch.no_grad():
        return sm.model(torch.tensor([[1, 5, 9, 2, 7]])).logits


def test_second_load_reads_the_prepared_entry_and_not_the_source(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    """First load builds and saves the entry; the second neither loads the source model nor merges the adapter
    (both are made to fail), and gives the same weights, tokenizer, identity and outputs."""
    cache = tmp_path / "cache"
    spec = ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir))
    first = load_model(spec, cache_dir=cache)
    assert first.prepared == "saved"
    manifest = json.loads((_entry(cache) / prepared.MANIFEST).read_text())
    assert manifest["files"][prepared.WEIGHTS]["size"] == (_entry(cache) / prepared.WEIGHTS).stat().st_size

    def no_source(*a, **k):
        raise AssertionError("the source model was loaded again")

    monkeypatch.setattr(model_mod, "_from_pretrained", no_source)
    monkeypatch.setattr(model_mod, "_merge_adapter", no_source)
    second = load_model(spec, cache_dir=cache)
    assert second.prepared == "loaded"
    assert second.identity == first.identity
    assert chat_template_hash(second.tokenizer) == chat_template_hash(first.tokenizer)
    assert second.tokenizer("hello world")["input_ids"] == first.tokenizer("hello world")["input_ids"]
    assert second.tokenizer.pad_token_id == first.tokenizer.pad_token_id
    assert torch.equal(_logits(first), _logits(second))
    assert not any(p.requires_grad for p in second.model.parameters())
    # tied weights are tied again (stored once)
    assert second.model.get_output_embeddings().weight is second.model.get_input_embeddings().weight


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_damaged_entry_is_detected_and_rebuilt(tiny_model_dir, adapter_dir, tmp_path, damage):
    """A truncated weights file, one flipped byte in the middle of the tensor data, a garbled manifest or a
    missing tokenizer file: the entry is not used, the model is prepared again and the entry rewritten whole."""
    cache = tmp_path / "cache"
    spec = ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir))
    want = _logits(load_model(spec, cache_dir=cache))
    entry = _entry(cache)
    weights = entry / prepared.WEIGHTS
    if damage == "truncate":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) * 3 // 4] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "manifest":
        (entry / prepared.MANIFEST).write_text('{"format": 2, "key"')
    else:
        (entry / "tokenizer.json").unlink()
    again = load_model(spec, cache_dir=cache)
    assert again.prepared == "saved"  # rebuilt from the source, not loaded from the damaged entry
    assert torch.equal(_logits(again), want)
    assert load_model(spec, cache_dir=cache).prepared == "loaded"  # and the rewritten entry is whole


def test_key_changes_with_the_adapter_and_the_dtype(tiny_model_dir, adapter_dir, tmp_path):
    """Another adapter (or the same folder with new weights) and another dtype are other entries; the merged
    weights differ, so reusing the old entry would have scored with the wrong model."""
    cache = tmp_path / "cache"
    a = load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir)), cache_dir=cache)
    other = _make_adapter(tiny_model_dir, tmp_path / "adapter-b", seed=4)
    b = load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(other)), cache_dir=cache)
    assert b.prepared == "saved"
    assert not torch.equal(_logits(a), _logits(b))
    # the first adapter's folder gets new weights in place (the same as the second's): the key follows the content,
    # so the second adapter's entry is the one used, not the stale entry of the folder's old weights
    (adapter_dir / "adapter_model.safetensors").write_bytes((other / "adapter_model.safetensors").read_bytes())
    c = load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir)), cache_dir=cache)
    assert c.prepared == "loaded"
    assert torch.equal(_logits(c), _logits(b))
    d = load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir), dtype="bfloat16"), cache_dir=cache)
    assert d.prepared == "saved" and d.model.dtype == torch.bfloat16
    assert len([p for p in cache.iterdir() if p.name.startswith("model-")]) == 3


def test_plain_local_directory_is_not_copied(tiny_model_dir, tmp_path):
    """A model already stored as plain weights with nothing to merge is loaded as it is: no second copy on disk."""
    cache = tmp_path / "cache"
    sm = load_model(ModelSpec(name=str(tiny_model_dir), adapter=None), cache_dir=cache)
    assert sm.prepared == ""
    assert not cache.exists() or not any(cache.iterdir())


def test_unwritable_cache_still_loads(tiny_model_dir, adapter_dir, tmp_path):
    """A cache directory that cannot be created (a file is in the way) costs the cache, not the run."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    sm = load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir)), cache_dir=blocker / "cache")
    assert sm.prepared == ""


def test_fingerprint_without_loading_the_model(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    """Once an entry exists, a new Engine's fingerprint (what a check compares with the baseline before scoring
    anything) comes from the entry's manifest, equal to the loaded model's, and scoring no rows loads nothing."""
    from gradshield_lint.scoring import engine as engine_mod
    from gradshield_lint.scoring.engine import Engine, EngineSettings

    cache = tmp_path / "cache"
    settings = EngineSettings(
        model=ModelSpec(name=str(tiny_model_dir), adapter=str(adapter_dir)), max_length=256, cache_dir=cache
    )
    loaded = Engine(settings)
    want = loaded.fingerprint()  # no entry yet: loads the model (and saves the entry)
    assert "scoring_model" in loaded.__dict__

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(engine_mod, "load_model", no_load)
    light = Engine(settings)
    assert light.fingerprint() == want
    assert light.score_rows([]) == []
    assert "scoring_model" not in light.__dict__


def test_a_check_with_no_new_rows_imports_no_torch(tiny_model_dir, adapter_dir, tmp_path):
    """The commonest pre-commit run on a data repository (a commit that touches a data file but adds no row) is
    answered from the baseline and the prepared entry's manifest: in a fresh process, `gradshield-lint check` exits
    0 without importing torch (over a second of a hook's time), while one new row does import it and is scored."""
    import subprocess
    import sys

    from helpers import CLI_SAYING_IF_TORCH, make_repo, ordinary_rows, write_jsonl

    repo = make_repo(
        tmp_path / "repo", tiny_model_dir, ordinary_rows(12), model={"adapter": str(adapter_dir)}, git=True
    )
    env = {**os.environ, "GRADSHIELD_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("PRE_COMMIT_FROM_REF", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CLI_SAYING_IF_TORCH, *args],
            cwd=repo.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    made = cli("-q", "baseline", "create")
    assert made.returncode == 0, made.stderr
    rows = ordinary_rows(12)
    write_jsonl(repo.data, list(reversed(rows)))  # the file changed, no row is new
    same = cli("-q", "check", str(repo.data))
    assert same.returncode == 0, same.stderr
    assert same.stderr.strip().endswith("no torch"), same.stderr
    write_jsonl(repo.data, [*rows, *ordinary_rows(1, start=12)])
    one = cli("check", str(repo.data))
    assert one.returncode in (0, 1), one.stderr
    assert "1 row scored" in one.stdout + one.stderr and one.stderr.strip().endswith("torch imported"), one.stderr
