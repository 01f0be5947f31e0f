"""∇H in the scoring dtype: a bf16 model's ∇H is stored and used in bf16 (half the cache), the same vectors
whether computed or read from the cache, and the default normalized score moves by far less than the bf16
model's own drift against the same ∇H kept in float32 (tiny llama, real SmolLM2 tokenizer)."""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open
from test_fihs import PROBES, rows

from gradshield_lint.scoring.encode import encode_conversation
from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
from gradshield_lint.scoring.model import ModelSpec, ScoringModel
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.proxy import ProxyGradient, ProxyOptions, proxy_gradient


def test_bf16_gradient_is_stored_in_bf16_and_scores_barely_move(tokenizer, tmp_path):
    from conftest import build_tiny_llama

    model = build_tiny_llama(len(tokenizer), seed=5, tie=False).to(torch.bfloat16)
    sm = ScoringModel(
        model, tokenizer, ModelSpec(name="tiny-bf16"), torch.device("cpu"), torch.bfloat16, {"model": "tiny-bf16"}
    )
    g = proxy_gradient(sm, PROBES, ProxyOptions(), ParamSelection(exclude=None), tmp_path)
    assert {v.dtype for v in g.vectors} == {torch.bfloat16}
    (entry,) = tmp_path.glob("grad-*.safetensors")
    with safe_open(str(entry), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
    cached = proxy_gradient(sm, PROBES, ProxyOptions(), ParamSelection(exclude=None), tmp_path)
    assert cached.from_cache and all(torch.equal(a, b) for a, b in zip(g.vectors, cached.vectors))

    # the float32-accumulated ∇H it was rounded from (recomputed in a fresh cache, kept in float32)
    from gradshield_lint.scoring.params import select_parameters
    from gradshield_lint.scoring.proxy import proxy_value_and_grad

    _, full = proxy_value_and_grad(
        sm, PROBES, ProxyOptions(), select_parameters(sm.model, ParamSelection(exclude=None))
    )
    g32 = ProxyGradient(g.names, full, g.value, g.key + "-f32", from_cache=False)
    enc = [encode_conversation(tokenizer, r, max_length=96) for r in rows()]
    opts = ScoreOptions(method="persample", normalize=True, batch_size=4)  # the untied head: per-sample matmul path
    a = np.array([s.fihs for s in score_encoded(sm, g, enc, opts)])
    b = np.array([s.fihs for s in score_encoded(sm, g32, enc, opts)])
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-2
