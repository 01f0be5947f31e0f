"""The float32 token-NLL path (losses.HeadNLL) used by the per-sample and exact backward passes: same losses and
same gradients as the float64 log-softmax it replaces, on random data and through a tiny llama."""

from __future__ import annotations

import torch

from gradshield_lint.scoring.losses import HeadNLL, row_losses


def test_head_nll_matches_float64_log_softmax_and_its_gradient():
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(500, 16) * 0.5
    y = torch.randint(0, 500, (37,))
    g = torch.rand(37)
    nll = HeadNLL.apply(h, w, y, 8)  # chunks of 8: the last one is partial
    (gh,) = torch.autograd.grad((nll * g).sum(), h)
    h64 = h.detach().double().requires_grad_(True)
    ref = -torch.log_softmax(h64 @ w.double().T, dim=-1).gather(1, y[:, None]).squeeze(1)
    (gref,) = torch.autograd.grad((ref * g.double()).sum(), h64)
    assert torch.allclose(nll.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(gh.double(), gref, rtol=1e-4, atol=1e-6)


def test_row_losses_float32_path_agrees_with_float64(tiny_model):
    """Through a real (tiny) model: per-row losses and the gradient at the input embeddings agree to 1e-5."""
    model = tiny_model.model
    ids = torch.randint(3, 200, (3, 12))
    att = torch.ones_like(ids)
    att[2, 9:] = 0
    tgt = torch.zeros_like(ids, dtype=torch.bool)
    tgt[:, 5:] = True
    tgt[2, 9:] = False
    out = {}
    for precision in ("float64", "float32"):
        emb = model.get_input_embeddings()
        captured = {}

        def keep(m, i, o, captured=captured):
            o = o.detach().requires_grad_(True)
            captured["e"] = o
            return o

        handle = emb.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                losses = row_losses(model, ids, att, tgt, "mean", precision)
                (ge,) = torch.autograd.grad(losses.sum(), captured["e"])
        finally:
            handle.remove()
        out[precision] = (losses.detach(), ge)
    assert torch.allclose(out["float32"][0], out["float64"][0], rtol=1e-5)
    assert torch.allclose(out["float32"][1], out["float64"][1], rtol=1e-4, atol=1e-7)
