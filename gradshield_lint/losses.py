"""Per-row losses of a causal LM on a padded batch, with logits computed only where a target token is predicted."""

from __future__ import annotations

import torch

_CHUNK = 512


def _backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    backbone = getattr(model, model.base_model_prefix, None) if hasattr(model, "base_model_prefix") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is model:
        raise TypeError("the scoring model must be a causal LM with a backbone and an output head (AutoModelForCausalLM)")
    return backbone, head


def row_losses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Loss of each row: token NLL over its target tokens, averaged ("mean") or summed ("sum"). Shape [B].

    Only positions that predict a target get logits: the output head over a 50k vocabulary is a large share of
    a small model's forward pass, and prompt positions do not need it.
    """
    rows, _, nll = target_token_nll(model, input_ids, attention_mask, target_mask)
    sums = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    if reduction == "sum":
        return sums
    counts = target_mask[:, 1:].sum(dim=1).clamp(min=1).to(nll.dtype)
    return sums / counts


def target_token_nll(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position, NLL) of every target token, row-major: position t predicts token t + 1."""
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    predict = target_mask[:, 1:]  # position t predicts token t+1
    rows, cols = predict.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows, cols]
    labels = input_ids[:, 1:][rows, cols]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    # float64 log-softmax: finite differences subtract two nearly equal losses, and float32 rounding of a loss
    # of ~10 (≈1e-6) would quantize the scores. Chunked so that a 50k-vocabulary logit block stays small.
    parts = []
    for hc, yc in zip(h.split(_CHUNK), labels.split(_CHUNK)):
        logits = head(hc).double()
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
