"""Which parameters FIHS is taken over: a regex include/exclude and a layer range, to cut memory on large models.

`ParamSelection` is the `scoring.params` part of the configuration too (torch-free: the configuration imports it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradshield_lint.errors import ConfigError
from gradshield_lint.schemas import config_default

if TYPE_CHECKING:
    import torch

_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclass(frozen=True)
class ParamSelection:
    """`embeddings=False` leaves out the input embedding matrix (and the output head, when it is tied to it): its
    gradient lives only on the tokens a row happens to contain, i.e. on surface form."""

    include: str | None = config_default("scoring", "params", "include")
    exclude: str | None = config_default("scoring", "params", "exclude")
    layers: tuple[int, int] | None = config_default("scoring", "params", "layers")
    embeddings: bool = False  # not a setting: the embeddings stay out of every configured selection

    def describe(self) -> str:
        parts = [
            f"include={self.include}",
            f"exclude={self.exclude}",
            f"layers={list(self.layers) if self.layers else None}",
            f"embeddings={self.embeddings}",
        ]
        return ",".join(parts)


def select_parameters(model: Any, sel: ParamSelection) -> list[tuple[str, torch.nn.Parameter]]:
    """The named parameters of `model` (a transformers causal LM) that `sel` selects; `ConfigError` for none."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    emb_weight = getattr(emb, "weight", None)
    inc = re.compile(sel.include) if sel.include else None
    exc = re.compile(sel.exclude) if sel.exclude else None
    out = []
    for name, p in model.named_parameters():
        if not sel.embeddings and emb_weight is not None and p is emb_weight:
            continue
        if inc and not inc.search(name):
            continue
        if exc and exc.search(name):
            continue
        if sel.layers is not None:
            m = _LAYER.search("." + name)
            if m is None or not (sel.layers[0] <= int(m.group(1)) <= sel.layers[1]):
                continue
        out.append((name, p))
    if not out:
        raise ConfigError(
            f"scoring.params: the parameter selection ({sel.describe()}) matches no parameter of the model"
        )
    return out


def selection_hash(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
