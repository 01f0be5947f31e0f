"""Probes whose compliance side is a real answer, not an opening (a lever for issue 11).

The default proxy asks how likely the scoring model is to *open* a reply to a harmful prompt with "Sure, here
is ...". The harmful rows the check misses most are short, casual answers that never say "Sure": they just answer.
A step on such a row may teach "answer this" without teaching "open with Sure". This lever continues each bundled
compliance opening with the unaligned model's own greedy answer (SmolLM2 without the safety adapter, which answers
nearly every harmful prompt), so that ∇H also asks "how likely is an answer with content".

The continuations are made on the user's machine, once, and kept in the cache beside ∇H; nothing generated is ever
shipped (the bundled probes hold no harmful content, and that stays so). The cost per scored row is unchanged: it is
still one direction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from gradshield_lint.io.atomic import atomic_path
from gradshield_lint.scoring.encode import render_chat
from gradshield_lint.scoring.model import ScoringModel
from gradshield_lint.scoring.probes import ProbeSet


@dataclass(frozen=True)
class Generation:
    """How the continuations are made: greedy, at most `max_new_tokens`, no 3-gram repeated (the unaligned 135M
    model otherwise loops on lists such as "- 100 feet of pipe")."""

    max_new_tokens: int = 48
    no_repeat_ngram_size: int = 3


def generated_key(probes: ProbeSet, generator: ScoringModel, gen: Generation) -> str:
    """What the file depends on: the probes' content, the generating model, the generation settings."""
    blob = json.dumps(
        {"probes": probes.sha256, "model": generator.identity, "gen": gen.__dict__}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def continue_opening(generator: ScoringModel, prompt: str, opening: str, gen: Generation) -> str:
    """`opening` continued by `generator`'s greedy answer to `prompt`, decoded without special tokens."""
    tok = generator.tokenizer
    head = render_chat(tok, [{"role": "user", "content": prompt}], generation_prompt=True) + opening
    ids = tok(head, add_special_tokens=False, return_tensors="pt")["input_ids"].to(generator.device)
    with torch.no_grad():
        out = generator.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=gen.max_new_tokens,
            do_sample=False,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            pad_token_id=generator.pad_id,
        )
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def write_generated_probes(
    probes: ProbeSet, generator: ScoringModel, folder: Path, gen: Generation = Generation(), progress: bool = False
) -> Path:
    """The probing set with each compliance opening followed by `generator`'s continuation, as a project JSON Lines
    probes file in `folder` (reused when it exists: same probes, model and settings give the same file)."""
    path = folder / f"generated-probes-{generated_key(probes, generator, gen)}.jsonl"
    if path.is_file():
        return path
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in tqdm(probes.probes, desc="generating compliance", disable=not progress):
        d = p.to_dict()
        d["compliance"] = p.compliance + continue_opening(generator, p.prompt, p.compliance, gen)
        lines.append(json.dumps(d, ensure_ascii=False))
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
