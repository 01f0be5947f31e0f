"""Model specs resolve to a loaded model, or to a ModelLoadError that names what was tried (never a hang)."""

import time

import pytest
import torch
from conftest import build_tiny_llama

from gradshield_lint.errors import ModelLoadError
from gradshield_lint.scoring.model import ModelSpec, load_model, resolve_dtype


def test_local_directory_loads_in_eval_mode_without_grads(tiny_model_dir):
    sm = load_model(ModelSpec(name=str(tiny_model_dir), adapter=None))
    assert sm.device.type == "cpu" and sm.dtype == torch.float32
    assert not sm.model.training
    assert not any(p.requires_grad for p in sm.model.parameters())
    assert sm.identity["model"] == "dir:tiny-llama" and sm.identity["model_hash"]
    assert sm.model.config._attn_implementation == "sdpa"


def test_forward_mode_scores_run_with_eager_attention_and_leave_sdpa_in_place(tiny_model_dir, tmp_path):
    """SDPA is the loaded model's attention (faster, no [heads, T, T] probabilities kept for the backward pass);
    forward-mode AD has no rule for it, so `jvp` switches to eager attention while it runs, and back. Its scores
    still equal the per-row backward passes' (run under SDPA)."""
    from gradshield_lint.io.rows import Message
    from gradshield_lint.scoring.encode import encode_conversation
    from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
    from gradshield_lint.scoring.model import eager_attention
    from gradshield_lint.scoring.params import ParamSelection
    from gradshield_lint.scoring.probes import ProbeSet, load_probes
    from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient

    sm = load_model(ModelSpec(name=str(tiny_model_dir), adapter=None))
    with eager_attention(sm.model):
        assert sm.model.config._attn_implementation == "eager"
    assert sm.model.config._attn_implementation == "sdpa"
    probes = load_probes(None)
    grad = proxy_gradient(sm, ProbeSet(probes.probes[:3], probes.source), ProxyOptions(), ParamSelection(), tmp_path)
    rows = [
        [Message("user", "Name a colour."), Message("assistant", "Blue, like the sky on a clear day.")],
        [Message("user", "Count to three."), Message("assistant", "One, two, three.")],
    ]
    enc = [encode_conversation(sm.tokenizer, r, max_length=64) for r in rows]
    jvp = score_encoded(sm, grad, enc, ScoreOptions(method="jvp", normalize=False))
    exact = score_encoded(sm, grad, enc, ScoreOptions(method="exact", normalize=False))
    assert sm.model.config._attn_implementation == "sdpa"
    for a, b in zip(jvp, exact):
        assert abs(a.raw - b.raw) <= 1e-4 * max(abs(b.raw), 1e-12)


def test_directory_hash_changes_with_the_weights(tiny_model_dir, tokenizer, tmp_path):
    a = load_model(ModelSpec(name=str(tiny_model_dir), adapter=None)).identity["model_hash"]
    other = tmp_path / "other"
    build_tiny_llama(len(tokenizer), seed=5).save_pretrained(other)
    tokenizer.save_pretrained(other)
    assert load_model(ModelSpec(name=str(other), adapter=None)).identity["model_hash"] != a


def test_missing_local_path_names_what_was_tried(tmp_path):
    with pytest.raises(ModelLoadError, match="tried") as err:
        load_model(ModelSpec(name=str(tmp_path / "nope"), adapter=None))
    assert "nope" in str(err.value)


def test_uncached_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec(name="someone/not-a-cached-model", adapter=None))
    assert time.monotonic() - t < 30
    msg = str(err.value)
    assert "Hub id someone/not-a-cached-model" in msg and "HF_HUB_OFFLINE" in msg


def test_adapter_that_is_not_a_peft_directory(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        load_model(ModelSpec(name=str(tiny_model_dir), adapter=str(tmp_path)))


def test_cuda_asked_for_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_model(ModelSpec(name="x", device="cuda"))


def test_auto_dtype_is_float32_on_cpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ModelLoadError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def test_an_adapters_identity_is_the_files_peft_loads(tmp_path):
    """A development checkout holds the embedded adapter with its training record; the wheel ships only the files
    peft loads. Both must give the same fingerprint, and a change to the weights must change it."""
    from gradshield_lint.scoring.model import adapter_digest

    a = tmp_path / "a"
    a.mkdir()
    (a / "adapter_config.json").write_text('{"r": 8}')
    (a / "adapter_model.safetensors").write_bytes(b"weights")
    bare = adapter_digest(a)
    (a / "TRAINING.md").write_text("how it was trained")
    (a / "training_log.json").write_text("[]")
    assert adapter_digest(a) == bare
    (a / "adapter_model.safetensors").write_bytes(b"other weights")
    assert adapter_digest(a) != bare
