"""Per-category directions ∇H_c, so that a finding can say which probe category its row pushes toward most.

One ∇H_c per probe category (the margin proxy over that category's probes, mean over them; bench/categories.py),
restricted to a small parameter subset so that all of them stay cheap: the MLP output projections of the last
`CATEGORY_LAYERS` layers (on the embedded SmolLM2-135M: 4 × 0.88 M weights, 12 categories ≈ 170 MB in float32;
12 full-size ∇H_c would be 12 × 424 MB). Cached on disk beside ∇H. Per finding: one backward of its loss into the
same subset, and the cosine of −∇L with each ∇H_c.

The margin over all probes is the probe-count-weighted mean of the per-category margins, so when ∇H itself is
computed (a machine's first run) `proxy_gradient_with_categories` takes it category by category and keeps each
category's slice of the subset on the way: the directions then cost nothing beyond ∇H's own pass, instead of a
second pass over every probe the first time a finding is explained.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gradshield_lint.io.atomic import atomic_path
from gradshield_lint.scoring.cache import cache_root
from gradshield_lint.scoring.encode import Located, make_batches
from gradshield_lint.scoring.losses import row_losses
from gradshield_lint.scoring.model import ScoringModel
from gradshield_lint.scoring.params import ParamSelection, select_parameters
from gradshield_lint.scoring.probes import Probe, ProbeSet
from gradshield_lint.scoring.proxy import (
    ProxyGradient,
    ProxyOptions,
    gradient_key,
    proxy_gradient,
    proxy_value_and_grad,
)

CATEGORY_LAYERS = 4
CATEGORY_INCLUDE = r"mlp\.down_proj"
CATEGORY_FORMAT = 1


def category_selection(sm: ScoringModel, base: ParamSelection) -> ParamSelection:
    """The explanation's parameter subset: the MLP output projections of the last CATEGORY_LAYERS layers (fewer
    layers: all), within the scoring selection's exclusions."""
    n = int(getattr(sm.model.config, "num_hidden_layers", 1) or 1)
    return ParamSelection(include=CATEGORY_INCLUDE, exclude=base.exclude, layers=(max(n - CATEGORY_LAYERS, 0), n - 1))


@dataclass
class CategoryDirections:
    names: list[str]  # parameter names of the subset
    categories: list[str]
    vectors: list[list[torch.Tensor]]  # per category, per parameter
    norms: list[float] = field(init=False)  # of each category's vector, taken once: every row divides by them

    def __post_init__(self) -> None:
        self.norms = [_norm(v) for v in self.vectors]


@dataclass(frozen=True)
class _Entry:
    """Where a set of category directions lives in the cache, and what it holds."""

    path: Path
    key: str
    names: list[str]
    categories: list[str]
    groups: dict[str, tuple[Probe, ...]]

    def load(self, device: torch.device) -> CategoryDirections | None:
        if not self.path.is_file():
            return None
        try:
            stored = load_file(str(self.path), device=str(device))
            vectors = [[stored[f"{j}/{n}"] for n in self.names] for j in range(len(self.categories))]
        except Exception:  # noqa: BLE001
            self.path.unlink(missing_ok=True)  # a corrupt entry is recomputed, never trusted
            return None
        return CategoryDirections(self.names, self.categories, vectors)

    def store(self, vectors: list[list[torch.Tensor]]) -> CategoryDirections:
        with atomic_path(self.path) as tmp:
            save_file(
                {f"{j}/{n}": g.contiguous().cpu() for j, gs in enumerate(vectors) for n, g in zip(self.names, gs)},
                str(tmp),
                metadata={"key": self.key, "categories": json.dumps(self.categories)},
            )
        return CategoryDirections(self.names, self.categories, vectors)


def _entry(
    sm: ScoringModel, probes: ProbeSet, opts: ProxyOptions, selection: ParamSelection, cache_dir: Path | None
) -> _Entry:
    names = [n for n, _ in select_parameters(sm.model, selection)]
    groups = probes.by_category()
    cats = list(groups)
    key = hashlib.sha256(
        json.dumps(
            {"format": CATEGORY_FORMAT, "base": gradient_key(sm, probes, opts, names, selection), "categories": cats},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    return _Entry((cache_dir or cache_root()) / f"categories-{key}.safetensors", key, names, cats, groups)


def _group(probes: ProbeSet, entry: _Entry, c: str) -> ProbeSet:
    return ProbeSet(entry.groups[c], f"{probes.source} (category {c})")


def category_directions(
    sm: ScoringModel, probes: ProbeSet, opts: ProxyOptions, selection: ParamSelection, cache_dir: Path | None = None
) -> CategoryDirections:
    """∇H_c (margin proxy over category c's probes, mean over them) for every category, over `selection`; cached."""
    entry = _entry(sm, probes, opts, selection, cache_dir)
    found = entry.load(sm.device)
    if found is not None:
        return found
    params = select_parameters(sm.model, selection)
    margin = replace(opts, proxy="margin")
    return entry.store(
        [proxy_value_and_grad(sm, _group(probes, entry, c), margin, params)[1] for c in entry.categories]
    )


def proxy_gradient_with_categories(
    sm: ScoringModel,
    probes: ProbeSet,
    opts: ProxyOptions,
    selection: ParamSelection,
    cache_dir: Path | None = None,
) -> ProxyGradient:
    """`proxy.proxy_gradient`, and when ∇H is computed (not found in the cache) the category directions of the
    same probes in the same pass, stored for `category_directions`. Only where the two are the same computation:
    the margin proxy, more than one category, and the category subset within the scoring selection; otherwise
    the directions are left to `category_directions` (a pass of their own when a finding is first explained)."""
    subset = category_selection(sm, selection)
    entry = _entry(sm, probes, opts, subset, cache_dir)
    if opts.proxy != "margin" or len(entry.categories) < 2 or entry.path.is_file():
        return proxy_gradient(sm, probes, opts, selection, cache_dir)

    def by_category(
        sm: ScoringModel, probes: ProbeSet, opts: ProxyOptions, params: list[tuple[str, torch.nn.Parameter]]
    ) -> tuple[float, list[torch.Tensor]]:
        names = [n for n, _ in params]
        if not set(entry.names) <= set(names):
            return proxy_value_and_grad(sm, probes, opts, params)
        at = [names.index(n) for n in entry.names]
        n = sum(len(entry.groups[c]) for c in entry.categories)
        value, total, vectors = 0.0, [torch.zeros_like(p, dtype=torch.float32) for _, p in params], []
        for c in entry.categories:
            v, g = proxy_value_and_grad(sm, _group(probes, entry, c), opts, params)
            w = len(entry.groups[c]) / n  # H is the mean over all probes: each category weighs by its probes
            value += w * v
            for acc, gi in zip(total, g):
                acc.add_(gi, alpha=w)
            vectors.append([g[i] for i in at])  # the subset's own tensors: the rest of g is freed with it
        entry.store(vectors)
        return value, total

    return proxy_gradient(sm, probes, opts, selection, cache_dir, compute=by_category)


def _norm(vs: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in vs))


def row_gradients(
    sm: ScoringModel, params: Sequence[torch.nn.Parameter], located: Sequence[Located]
) -> Iterator[list[torch.Tensor]]:
    """∇L(x) into `params` only, one row at a time (a parameter the row does not reach gets zeros); the parameters
    need no gradient before or after."""
    for p in params:
        p.requires_grad_(True)
    try:
        for loc in located:
            (b,) = [b.to(sm.device) for b in make_batches([loc.encoded], 1, sm.pad_id)]
            with torch.enable_grad():
                loss = row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask, "mean")[0]
                raw = torch.autograd.grad(loss, list(params), allow_unused=True)
            yield [torch.zeros_like(p) if g is None else g for g, p in zip(raw, params)]
    finally:
        for p in params:
            p.requires_grad_(False)


def category_cosines(sm: ScoringModel, dirs: CategoryDirections, located: Sequence[Located]) -> list[dict[str, float]]:
    """cos(−∇L(x), ∇H_c) per category for each row, over the subset: one backward per row into the subset only."""
    named = dict(sm.model.named_parameters())
    out = []
    for gs in row_gradients(sm, [named[n] for n in dirs.names], located):
        gnorm = _norm(gs)
        row = {}
        for c, vec, vnorm in zip(dirs.categories, dirs.vectors, dirs.norms):
            dot = -sum(float((g.double() * v.double()).sum()) for g, v in zip(gs, vec))
            row[c] = dot / (gnorm * vnorm) if gnorm > 0 and vnorm > 0 else 0.0
        out.append(row)
    return out


__all__: Sequence[str] = [
    "CATEGORY_LAYERS",
    "CategoryDirections",
    "category_cosines",
    "category_directions",
    "category_selection",
    "proxy_gradient_with_categories",
    "row_gradients",
]
