"""LoRA supervised finetuning on chat rows: GradShield's finetune criterion (`lint/criteria.py`) trains a brief
adapter with it to test a threshold, and the research side trains the embedded model's safety adapter with it.

Rows are conversations: `list[dict]` with `role` (system / user / assistant) and `content`. The loss is the mean
next-token NLL over the tokens scoring counts as the row's targets: the chat encoding is `encode.py`'s, the one
FIHS is computed with (`encode_for_training`), so what a finetune learns from a row and what its score measures
are the same tokens (each assistant turn as the chat template renders it, its end-of-turn marker included). System
and user tokens, role headers and padding get label -100.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradshield_lint.io.rows import Message
from gradshield_lint.scoring.encode import NoTargetTokens, encode_conversation

__all__ = [
    "IGNORE_INDEX",
    "Conversation",
    "TrainConfig",
    "batch_loss",
    "collate",
    "encode_for_training",
    "pad_id",
    "sft_lora",
]

Conversation = list[dict[str, str]]

IGNORE_INDEX = -100


@dataclass
class TrainConfig:
    """LoRA SFT settings.

    `layers`: a half-open range `(start, stop)` of decoder-layer indices that get LoRA modules (e.g. `(10, 21)` for
    layers 10..20), or None for all layers. `target_modules`: names of the linear projections that get LoRA modules.
    `warmup_steps`: linear warmup; then the learning rate decays linearly to `min_lr_ratio * lr`.
    `group_by_length`: draw batches of similar length (a seeded shuffle, then sorting within windows of 8 batches and
    shuffling the batches), which wastes less compute on padding. `bf16_autocast`: run forward and backward under
    CPU/GPU bfloat16 autocast (about twice as fast on CPUs with AVX512-BF16/AMX; the LoRA weights stay float32).
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-4
    max_length: int = 192
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    seed: int = 0
    layers: tuple[int, int] | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    group_by_length: bool = True
    bf16_autocast: bool = False

    def lora_config(self) -> Any:
        from peft import LoraConfig

        kwargs: dict[str, Any] = dict(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        if self.layers is not None:
            start, stop = self.layers
            if not 0 <= start < stop:
                raise ValueError(f"layers must be a range (start, stop) with 0 <= start < stop, got {self.layers}")
            kwargs["layers_to_transform"] = list(range(start, stop))
        return LoraConfig(**kwargs)


# --------------------------------------------------------------------------------------------------- encoding


def encode_for_training(
    tokenizer: Any, conversation: Sequence[dict[str, str]], max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of one conversation, by the scoring encoding (`encode.encode_conversation`, with its
    truncation policy): labels equal the ids on target tokens and -100 elsewhere; the model shifts them itself. A
    conversation with no assistant token to learn from encodes to nothing (callers drop rows without labels)."""
    messages = [Message(m["role"], m["content"]) for m in conversation]
    try:
        enc = encode_conversation(tokenizer, messages, max_length=max_length)
    except NoTargetTokens:
        return {"input_ids": [], "labels": []}
    ids = list(enc.input_ids)
    return {"input_ids": ids, "labels": [i if t else IGNORE_INDEX for i, t in zip(ids, enc.target_mask)]}


def collate(
    encoded: Sequence[dict[str, list[int]]], pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch of encoded conversations to the longest one."""
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[i, sl] = torch.tensor(e["labels"], dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id
    if pid is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return int(pid)


# --------------------------------------------------------------------------------------------------- loss


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def batch_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean NLL over the batch's labelled tokens. Runs the decoder, then the output head only at the positions
    that carry a label (saves the full-vocabulary logits of the prompt tokens)."""
    labels = batch["labels"]
    shifted = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    if not bool(keep.any()):
        raise ValueError("a batch has no assistant tokens (all truncated away?)")
    base = _base(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][keep])
    else:  # generic path
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits[:, :-1][keep]
    return torch.nn.functional.cross_entropy(logits.float(), shifted[keep])


# --------------------------------------------------------------------------------------------------- training


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def sft_lora(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Conversation],
    cfg: TrainConfig,
    progress: bool = False,
    log: list[dict[str, float]] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Any:
    """Train a fresh LoRA adapter on `rows` and return the peft model (in eval mode).

    `model` must be a plain (non-peft) causal LM; to finetune a model that already carries an adapter, merge it
    first (`peft_model.merge_and_unload()`). All base weights, embeddings and output head included, stay frozen.
    Batches are drawn by a seeded shuffle of the rows (epoch after epoch); with the same `cfg.seed`, rows and model,
    two runs give the same weights. Each step's loss is appended to `log` (dicts with step, loss, lr, seconds)
    when given. `progress` prints a line every 10 steps.
    """
    from peft import get_peft_model

    if hasattr(model, "peft_config"):
        raise ValueError("sft_lora wants a plain model; merge an existing adapter first (merge_and_unload())")
    if not rows:
        raise ValueError("no training rows")
    _seed_everything(cfg.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():  # transformers 5 deprecation noise from inside peft
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, cfg.lora_config())
    for name, p in peft_model.named_parameters():
        if p.requires_grad and "lora_" not in name:
            p.requires_grad_(False)  # embeddings and everything else frozen: only LoRA matrices train
    params = [p for p in peft_model.parameters() if p.requires_grad]

    pad = pad_id(tokenizer)
    encoded = [encode_for_training(tokenizer, r, cfg.max_length) for r in rows]
    encoded = [e for e in encoded if any(x != IGNORE_INDEX for x in e["labels"][1:])]
    if not encoded:
        raise ValueError("no row has an assistant token within max_length")

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        frac = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - frac))

    order_rng = random.Random(cfg.seed)
    queue: list[list[int]] = []

    def refill() -> None:
        perm = list(range(len(encoded)))
        order_rng.shuffle(perm)
        bs = cfg.batch_size
        if cfg.group_by_length and len(perm) > bs:
            window = bs * 8
            for w in range(0, len(perm), window):
                perm[w : w + window] = sorted(perm[w : w + window], key=lambda i: len(encoded[i]["input_ids"]))
        batches = [perm[i : i + bs] for i in range(0, len(perm), bs)]
        order_rng.shuffle(batches)
        queue.extend(batches)

    device = next(peft_model.parameters()).device
    peft_model.train()
    t0 = time.time()
    for step in range(cfg.steps):
        idx: list[int] = []
        while len(idx) < cfg.batch_size:
            if not queue:
                refill()
            take = queue.pop(0)
            idx += take[: cfg.batch_size - len(idx)]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad).items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = batch_loss(peft_model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss at step {step}")
        if log is not None:
            log.append({"step": step, "loss": value, "lr": lr_at(step), "seconds": time.time() - t0})
        if on_step is not None:
            on_step(step, value)
        if progress and (step % 10 == 0 or step == cfg.steps - 1):
            print(
                f"step {step:4d}/{cfg.steps}  loss {value:.4f}  lr {lr_at(step):.2e}  {time.time() - t0:6.1f}s",
                flush=True,
            )
    peft_model.eval()
    return peft_model
