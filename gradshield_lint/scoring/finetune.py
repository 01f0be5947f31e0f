"""LoRA supervised finetuning on chat rows, greedy generation, and adapter save/load.

Used to train the embedded scoring model's safety adapter (`scripts/train_safety_adapter.py`) and, later, to
finetune a model on filtered data and measure what it kept of its alignment.

Rows are conversations: `list[dict]` with `role` (system / user / assistant) and `content`. The loss is the mean
next-token NLL over the **assistant tokens only** (each assistant message's content and its end-of-turn token, as
the tokenizer's chat template renders them); system and user tokens, the template's role headers and padding get
label -100. Labels are built by rendering each prefix of the conversation with the chat template and mapping the
character span of every assistant turn onto tokens (offset mapping of a fast tokenizer; a token-count fallback for
slow tokenizers).
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TrainConfig",
    "encode_conversation",
    "collate",
    "sft_lora",
    "assistant_loss",
    "generate_replies",
    "save_adapter",
    "load_adapter",
    "read_jsonl_conversations",
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


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def _assistant_char_spans(tokenizer: Any, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and, for each assistant message, the character span of its content and end-of-turn
    marker (trailing whitespace after the marker excluded)."""
    full = _render(tokenizer, conversation, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(conversation):
        if msg.get("role") != "assistant":
            continue
        prefix = _render(tokenizer, conversation[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, conversation[: i + 1], generation_prompt=False)
        if not full.startswith(prefix) or not full.startswith(upto) or len(upto) < len(prefix):
            raise ValueError(
                "the chat template does not render conversation prefixes as prefixes of the full text; "
                "cannot locate the assistant tokens"
            )
        end = len(upto.rstrip())
        if end <= len(prefix):  # an empty assistant message: nothing to learn
            continue
        spans.append((len(prefix), end))
    return full, spans


def encode_conversation(tokenizer: Any, conversation: Conversation, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of one conversation, truncated to `max_length` tokens (right side).

    Labels equal the ids on assistant tokens and -100 elsewhere; the model shifts them itself."""
    full, spans = _assistant_char_spans(tokenizer, conversation)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for t, (a, _b) in enumerate(enc["offset_mapping"]):
            if any(s <= a < e for s, e in spans):
                labels[t] = ids[t]
    else:  # token-count fallback: tokenize each boundary prefix
        ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for s, e in spans:
            ts = len(tokenizer(full[:s], add_special_tokens=False)["input_ids"])
            te = len(tokenizer(full[:e], add_special_tokens=False)["input_ids"])
            for t in range(ts, min(te, len(ids))):
                labels[t] = ids[t]
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def collate(encoded: Sequence[dict[str, list[int]]], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
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


def _pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id
    if pid is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return int(pid)


# --------------------------------------------------------------------------------------------------- loss


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _batch_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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


@torch.no_grad()
def assistant_loss(
    model: Any, tokenizer: Any, rows: Sequence[Conversation], max_length: int = 192, batch_size: int = 8
) -> float:
    """Mean NLL per assistant token over `rows` (token-weighted), with the model in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pad = _pad_id(tokenizer)
    enc = [encode_conversation(tokenizer, r, max_length) for r in rows]
    enc = [e for e in enc if any(x != IGNORE_INDEX for x in e["labels"][1:])]
    dev = next(model.parameters()).device
    for i in range(0, len(enc), batch_size):
        batch = {k: v.to(dev) for k, v in collate(enc[i : i + batch_size], pad).items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(_batch_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


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

    pad = _pad_id(tokenizer)
    encoded = [encode_conversation(tokenizer, r, cfg.max_length) for r in rows]
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
            loss = _batch_loss(peft_model, batch)
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
            print(f"step {step:4d}/{cfg.steps}  loss {value:.4f}  lr {lr_at(step):.2e}  {time.time() - t0:6.1f}s", flush=True)
    peft_model.eval()
    return peft_model


# --------------------------------------------------------------------------------------------------- generation


@torch.no_grad()
def generate_replies(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Conversation],
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> list[str]:
    """Greedy replies to `prompts` (a user message string, or a conversation ending before the assistant turn),
    rendered with the chat template and left-padded in batches. Returns the decoded new text, special tokens
    removed, stripped."""
    was_training = model.training
    model.eval()
    pad = _pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    dev = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        texts = [
            _render(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else list(p), generation_prompt=True)
            for p in chunk
        ]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        batch = collate([{"input_ids": x, "labels": x} for x in ids], pad, padding_side="left")
        batch = {k: v.to(dev) for k, v in batch.items()}
        gen = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=eos,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        new = gen[:, batch["input_ids"].shape[1] :]
        out += [s.strip() for s in tokenizer.batch_decode(new, skip_special_tokens=True)]
    model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------------- save / load


def save_adapter(
    peft_model: Any,
    directory: str | Path,
    dtype: torch.dtype | None = torch.float16,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write the adapter only (adapter_config.json + adapter_model.safetensors) to `directory`.

    Works for GGUF-loaded base models, which refuse `save_pretrained` of the full model. `dtype` casts the LoRA
    weights on disk (float16 by default, half the size; None keeps them as they are). `base_model_name_or_path`
    replaces the local path that peft would record (e.g. with a hub id)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model)
    state = {k: (v.detach().to(dtype) if dtype is not None else v.detach()).contiguous().cpu() for k, v in state.items()}
    weights = directory / "adapter_model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # safetensors creates the file owner-only; it ships as package data
    cfg = peft_model.peft_config["default"]
    if base_model_name_or_path is not None:
        cfg.base_model_name_or_path = base_model_name_or_path
    cfg.save_pretrained(str(directory))
    # peft writes keys in arbitrary set order in some versions; rewrite sorted for a stable diff.
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    for k, v in list(data.items()):
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            data[k] = sorted(v)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return directory


def load_adapter(model: Any, directory: str | Path) -> Any:
    """Wrap `model` with the adapter saved in `directory` (inference mode, weights cast to the model's dtype)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(directory), is_trainable=False)
    peft_model.eval()
    return peft_model


def read_jsonl_conversations(paths: Sequence[str | Path]) -> list[Conversation]:
    """Read conversations from JSONL files: each line an object with `messages` (a list of role/content dicts)."""
    rows: list[Conversation] = []
    for path in paths:
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            msgs = obj["messages"] if isinstance(obj, dict) else obj
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise ValueError(f"{path}:{n}: expected an object with a `messages` list of role/content dicts")
            rows.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    return rows
