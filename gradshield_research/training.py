"""The research side's training helpers: greedy generation, the adapter's save/load, the loss on held-out rows,
and reading conversations from JSON Lines. The training loop itself is the runtime's (`sft_lora` in
`gradshield_lint.scoring.finetune`, which GradShield's finetune criterion uses too), with the scoring encoding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradshield_lint.scoring.encode import render_chat
from gradshield_lint.scoring.finetune import (
    IGNORE_INDEX,
    Conversation,
    TrainConfig,
    batch_loss,
    collate,
    encode_for_training,
    pad_id,
    sft_lora,
)

__all__ = [
    "IGNORE_INDEX",
    "TrainConfig",
    "assistant_loss",
    "collate",
    "encode_for_training",
    "generate_replies",
    "load_adapter",
    "read_jsonl_conversations",
    "save_adapter",
    "sft_lora",
]


@torch.no_grad()
def assistant_loss(
    model: Any, tokenizer: Any, rows: Sequence[Conversation], max_length: int = 192, batch_size: int = 8
) -> float:
    """Mean NLL per assistant token over `rows` (token-weighted), with the model in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pad = pad_id(tokenizer)
    enc = [encode_for_training(tokenizer, r, max_length) for r in rows]
    enc = [e for e in enc if any(x != IGNORE_INDEX for x in e["labels"][1:])]
    dev = next(model.parameters()).device
    for i in range(0, len(enc), batch_size):
        batch = {k: v.to(dev) for k, v in collate(enc[i : i + batch_size], pad).items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(batch_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


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
    pad = pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    dev = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        texts = [
            render_chat(
                tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else list(p), generation_prompt=True
            )
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
    state = {
        k: (v.detach().to(dtype) if dtype is not None else v.detach()).contiguous().cpu() for k, v in state.items()
    }
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
            if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in msgs
            ):
                raise ValueError(f"{path}:{n}: expected an object with a `messages` list of role/content dicts")
            rows.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    return rows
