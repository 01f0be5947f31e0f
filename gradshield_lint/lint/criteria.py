"""Acceptance criteria for the threshold's binary search that need a model (the distribution one lives in
threshold.py, which knows no torch).

`FinetuneCriterion` is GradShield's own test of a threshold: finetune briefly (LoRA) on the rows the threshold keeps
and accept it when the probe harmfulness H of the finetuned model stays within `tolerance` of the starting model's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gradshield_lint.scoring.model import ScoringModel
from gradshield_lint.scoring.probes import ProbeSet
from gradshield_lint.scoring.proxy import ProxyOptions, proxy_value


@dataclass
class FinetuneCriterion:
    """Call with (scores, threshold): True when finetuning on the rows with score <= threshold keeps
    H(θ_finetuned) − H(θ) <= tolerance. `conversations[i]` is the row that `scores[i]` belongs to.

    Each call trains a fresh LoRA adapter (seeded: the same kept rows give the same answer) and removes it again,
    so the scoring model is left as it was. `trials` records (threshold, kept rows, ΔH, seconds) per call.
    """

    scoring_model: ScoringModel
    probes: ProbeSet
    conversations: Sequence[Sequence[dict[str, str]]]
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    tolerance: float = 0.05
    steps: int = 20
    lr: float = 5e-4
    batch_size: int = 8
    max_length: int = 192
    seed: int = 0
    name: str = "finetune"
    trials: list[tuple[float, int, float, float]] = field(default_factory=list)
    _start: float | None = None

    def start_value(self) -> float:
        if self._start is None:
            self._start = proxy_value(self.scoring_model, self.probes, self.proxy)
        return self._start

    def delta_h(self, kept: Sequence[Sequence[dict]]) -> float:
        from gradshield_lint.scoring.finetune import TrainConfig, sft_lora

        if not kept:
            return 0.0
        sm = self.scoring_model
        cfg = TrainConfig(
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.seed,
            warmup_steps=min(5, self.steps),
            bf16_autocast=False,
        )
        peft_model = sft_lora(sm.model, sm.tokenizer, [list(c) for c in kept], cfg)
        try:
            # the base model with the LoRA layers still injected: H of the finetuned model
            after = proxy_value(replace(sm, model=peft_model.get_base_model()), self.probes, self.proxy)
        finally:
            restored = peft_model.unload()  # the LoRA layers removed: the scoring model as it was
            for p in restored.parameters():
                p.requires_grad_(False)
            restored.eval()
        return after - self.start_value()

    def __call__(self, scores: np.ndarray, threshold: float) -> bool:
        t = time.monotonic()
        keep = np.flatnonzero(np.asarray(scores) <= threshold)
        dh = self.delta_h([self.conversations[int(i)] for i in keep])
        self.trials.append((float(threshold), int(keep.size), float(dh), time.monotonic() - t))
        return dh <= self.tolerance
