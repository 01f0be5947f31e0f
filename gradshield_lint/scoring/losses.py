"""Per-row losses of a causal LM on a padded batch, with logits computed only where a target token is predicted."""

from __future__ import annotations

from typing import Any

import torch

_CHUNK = 512


def _backbone_and_head(model: Any) -> tuple[Any, Any]:
    backbone = getattr(model, model.base_model_prefix, None) if hasattr(model, "base_model_prefix") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is model:
        raise TypeError(
            "the scoring model must be a causal LM with a backbone and an output head (AutoModelForCausalLM)"
        )
    return backbone, head


class HeadNLL(torch.autograd.Function):
    """Token NLL under softmax(h Wᵀ), in float32, without keeping any [positions, vocabulary] block for the
    backward pass. For gradients w.r.t. activations (the head's weight itself needs none): autograd's own graph
    would keep the logits, their float64 copy and the softmax of every chunk alive until the backward, gigabytes at
    batch 8 over a 50k vocabulary.

    When `h` needs a gradient, the forward pass also computes each position's dℓ/dh = (softmax − onehot) W while
    that chunk's logits are at hand, and keeps only that ([positions, hidden]); the backward pass then scales it by
    the incoming gradient. Recomputing the logits in the backward pass instead would cost one more head matmul and
    one more exponential over the vocabulary: on the embedded model that was a quarter of a per-sample pass."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        want_grad = bool(ctx.needs_input_grad[0])
        nll = h.new_empty(h.shape[0])
        dh = torch.empty_like(h) if want_grad else None
        for s in range(0, h.shape[0], chunk):
            e = min(s + chunk, h.shape[0])
            logits = h[s:e] @ weight.T
            rows = torch.arange(e - s, device=h.device)
            picked = logits[rows, labels[s:e]]
            lse = torch.logsumexp(logits, dim=-1)
            nll[s:e] = lse - picked
            if dh is not None:
                p = logits.sub_(lse[:, None]).exp_()  # the softmax, in the logits' own memory
                p[rows, labels[s:e]] -= 1.0
                dh[s:e] = p @ weight
        ctx.save_for_backward(dh if dh is not None else h.new_zeros(0))
        return nll

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (dh,) = ctx.saved_tensors
        return dh * g[:, None].to(dh.dtype), None, None, None


def _fast_head_ok(model: torch.nn.Module, head: torch.nn.Module) -> bool:
    """HeadNLL replaces the head module's call: only when nothing needs that call (no bias, no soft-capping, no
    gradient for its weight, no hook on it: per-sample hooks on a selected head must see it run)."""
    return (
        isinstance(head, torch.nn.Linear)
        and head.bias is None
        and not head.weight.requires_grad
        and not head._forward_hooks
        and not head._forward_pre_hooks
        and not getattr(model.config, "final_logit_softcapping", None)
    )


def row_losses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    reduction: str = "mean",
    precision: str = "float64",
) -> torch.Tensor:
    """Loss of each row: token NLL over its target tokens, averaged ("mean") or summed ("sum"). Shape [B].

    Only positions that predict a target get logits: the output head over a 50k vocabulary is a large share of
    a small model's forward pass, and prompt positions do not need it. `precision`: "float64" (the default) for
    losses that are subtracted from each other (finite differences); "float32" where only the gradient matters
    (per-sample and exact backward passes): the log-softmax is then taken in float32 and, where the head allows,
    without keeping the logits for the backward pass (HeadNLL).
    """
    rows, _, nll = target_token_nll(model, input_ids, attention_mask, target_mask, precision)
    sums = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    if reduction == "sum":
        return sums
    counts = target_mask[:, 1:].sum(dim=1).clamp(min=1).to(nll.dtype)
    return sums / counts


def target_token_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    precision: str = "float64",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position, NLL) of every target token, row-major: position t predicts token t + 1. `precision`: as
    in `row_losses`."""
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    predict = target_mask[:, 1:]  # position t predicts token t+1
    rows, cols = predict.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows, cols]
    labels = input_ids[:, 1:][rows, cols]
    if precision == "float32" and h.dtype == torch.float32 and _fast_head_ok(model, head):
        return rows, cols, HeadNLL.apply(h, head.weight, labels, _CHUNK).double()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    # float64 log-softmax: finite differences subtract two nearly equal losses, and float32 rounding of a loss
    # of ~10 (≈1e-6) would quantize the scores. Chunked so that a 50k-vocabulary logit block stays small.
    parts = []
    for hc, yc in zip(h.split(_CHUNK), labels.split(_CHUNK)):
        logits = head(hc).double() if precision == "float64" else head(hc).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        parts.append(torch.logsumexp(logits, dim=-1) - logits.gather(1, yc[:, None]).squeeze(1))
    nll = torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float64)
    return rows, cols, nll


def next_token_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits for the token after each row's last real token. Shape [B, vocab]."""
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    return head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]).float()
