"""Why a flagged row scored high: the reply span that pushes hardest, and the probe category it pushes toward most.

Computed for findings only (a handful of rows), never for every scored row.

**Span.** FIHS is minus the directional derivative of the row's mean token NLL along v = ∇H; it splits exactly into
per-token terms c_t = −∂ℓ_t/∂v / n_target (ℓ_t: the NLL of target token t; their sum is the raw FIHS). They come
from the same two forward passes `fd` scoring uses (θ ± εv, per-token losses kept instead of their mean; float32),
or from one forward-mode pass (`jvp`) in half precision. The span is the window of `window` consecutive reply
tokens (within one assistant message) with the largest Σ c_t — a short harmful passage in a long, harmless reply
stands out there even when the mean dilutes it — mapped back to characters of the reply through the tokenizer's
offsets.

**Category.** The probe category whose direction ∇H_c the row's gradient step is closest to (categories.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gradshield_lint.scoring.categories import category_cosines, category_directions, category_selection
from gradshield_lint.scoring.encode import Batch, Located, MessageLike, locate_windows, make_batches
from gradshield_lint.scoring.explanation import Explanation
from gradshield_lint.scoring.fihs import ScoreOptions, calibrate_fd_step
from gradshield_lint.scoring.losses import target_token_nll
from gradshield_lint.scoring.model import ScoringModel, eager_attention
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.probes import ProbeSet
from gradshield_lint.scoring.proxy import ProxyGradient, ProxyOptions

DEFAULT_WINDOW = 16


@dataclass(frozen=True)
class TokenPush:
    """Per-target-token contributions c_t of one row (in target order) and where each token lies in the reply."""

    values: list[float]
    message: list[int]
    offsets: list[tuple[int, int]]


# ------------------------------------------------------------------------------------------------ per-token push
def _selected(sm: ScoringModel, grad: ProxyGradient) -> list[torch.nn.Parameter]:
    named = dict(sm.model.named_parameters())
    return [named[n] for n in grad.names]


def token_derivatives_fd(
    sm: ScoringModel, grad: ProxyGradient, located: Sequence[Located], batch_size: int
) -> list[list[float]]:
    """∂ℓ_t/∂v per target token of each row by central differences (weights shifted in place, restored after)."""
    params = _selected(sm, grad)
    vs = [v.to(p.dtype) for p, v in zip(params, grad.vectors)]
    theta = math.sqrt(sum(float((p.double() ** 2).sum()) for p in params))
    step = calibrate_fd_step(sm, grad, ScoreOptions(loss_reduction="mean"))
    eps = step * theta / max(grad.norm, 1e-30)
    encoded = [x.encoded for x in located]
    batches = [b.to(sm.device) for b in make_batches(encoded, batch_size, sm.pad_id)]
    out: list[list[float]] = [[] for _ in encoded]
    plus: dict[int, torch.Tensor] = {}

    def shift(scale: float) -> None:
        for p, v in zip(params, vs):
            p.add_(v, alpha=scale)

    def per_row(b: Batch) -> dict[int, torch.Tensor]:
        rows, _, nll = target_token_nll(sm.model, b.input_ids, b.attention_mask, b.target_mask)
        return {i: nll[rows == r].double().cpu() for r, i in enumerate(b.indices)}

    offset = 0.0
    with torch.no_grad():
        try:
            shift(eps)
            offset = eps
            for b in batches:
                plus.update(per_row(b))
            shift(-2 * eps)
            offset = -eps
            for b in batches:
                for i, minus in per_row(b).items():
                    out[i] = ((plus[i] - minus) / (2 * eps)).tolist()
        finally:
            shift(-offset)
    return out


def token_derivatives_jvp(
    sm: ScoringModel, grad: ProxyGradient, located: Sequence[Located], batch_size: int
) -> list[list[float]]:
    """∂ℓ_t/∂v per target token by forward-mode AD (half precision, where a finite step drowns in rounding)."""
    from torch.func import jvp

    params = _selected(sm, grad)
    primals = tuple(p.detach() for p in params)
    tangents = tuple(v.to(p.dtype) for p, v in zip(params, grad.vectors))
    encoded = [x.encoded for x in located]
    out: list[list[float]] = [[] for _ in encoded]
    with eager_attention(sm.model):
        for b in (b.to(sm.device) for b in make_batches(encoded, batch_size, sm.pad_id)):

            def f(*ps, b=b):
                return _nll_with(sm, dict(zip(grad.names, ps)), b)

            tan = jvp(f, primals, tangents)[1]  # (primal output, tangent output)
            rows = b.target_mask[:, 1:].nonzero(as_tuple=True)[0]
            for r, i in enumerate(b.indices):
                out[i] = tan[rows == r].double().cpu().tolist()
    return out


def _nll_with(sm: ScoringModel, params: dict[str, torch.Tensor], b: Batch) -> torch.Tensor:
    from torch.func import functional_call

    class _Tok(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, ids, att, tgt):
            return target_token_nll(self.lm, ids, att, tgt)[2]

    wrapper = _Tok(sm.model)
    return functional_call(
        wrapper, {"lm." + k: v for k, v in params.items()}, (b.input_ids, b.attention_mask, b.target_mask)
    )


def token_push(
    sm: ScoringModel, grad: ProxyGradient, located: Sequence[Located], batch_size: int = 8
) -> list[TokenPush]:
    """Per-target-token contributions c_t = −∂ℓ_t/∂v / n_target of each row (their sum: the row's raw FIHS)."""
    if not located:
        return []
    derive = token_derivatives_fd if sm.dtype == torch.float32 else token_derivatives_jvp
    ders = derive(sm, grad, located, batch_size)
    out = []
    for loc, d in zip(located, ders):
        e = loc.encoded
        targets = [t for t in range(1, e.n_tokens) if e.target_mask[t]]  # token t is predicted by position t-1
        n = max(len(targets), 1)
        out.append(TokenPush([-x / n for x in d], [loc.message[t] for t in targets], [loc.offsets[t] for t in targets]))
    return out


def strongest_window(push: TokenPush, window: int = DEFAULT_WINDOW) -> tuple[int, int, float]:
    """(first, last + 1, sum) over target indices of the `window` consecutive tokens of one assistant message with the
    largest total push (a message shorter than `window`: the whole message)."""
    best = (0, 0, -math.inf)
    v = push.values
    i = 0
    while i < len(v):
        j = i
        while j < len(v) and push.message[j] == push.message[i]:
            j += 1  # [i, j): one message's target tokens
        k = min(window, j - i)
        run = sum(v[i : i + k])
        if run > best[2]:
            best = (i, i + k, run)
        for a in range(i + 1, j - k + 1):
            run += v[a + k - 1] - v[a - 1]
            if run > best[2]:
                best = (a, a + k, run)
        i = j
    return best


# ------------------------------------------------------------------------------------------------ front door
def explain(
    sm: ScoringModel,
    grad: ProxyGradient,
    probes: ProbeSet,
    rows_messages: Sequence[Sequence[MessageLike]],
    *,
    proxy: ProxyOptions,
    selection: ParamSelection,
    max_length: int,
    truncation: str = "windows",
    window: int = DEFAULT_WINDOW,
    batch_size: int = 8,
    cache_dir: Path | None = None,
) -> list[Explanation]:
    """An Explanation per row (`rows_messages`: each row's messages, objects with .role and .content)."""
    if not rows_messages:
        return []
    windowed = [
        locate_windows(sm.tokenizer, m, max_length=max_length, truncation=truncation).windows for m in rows_messages
    ]
    every = token_push(sm, grad, [w for ws in windowed for w in ws], batch_size)
    # A row scored in windows is explained by the window whose push sums highest (its raw FIHS): where the row
    # pushes hardest. Under normalized scores the window that set the row's score (the highest cosine) can differ.
    located, pushes = [], []
    at = 0
    for ws in windowed:
        part = every[at : at + len(ws)]
        at += len(ws)
        sums = [sum(p.values) for p in part]
        k = sums.index(max(sums))
        located.append(ws[k])
        pushes.append(part[k])
    cats: list[dict[str, float]] = [{} for _ in located]
    if len({p.category for p in probes.probes}) > 1:
        dirs = category_directions(sm, probes, proxy, category_selection(sm, selection), cache_dir)
        cats = category_cosines(sm, dirs, located)
    out = []
    for msgs, push, cat in zip(rows_messages, pushes, cats):
        a, b, run = strongest_window(push, window)
        positive = sum(x for x in push.values if x > 0)
        if b > a:
            m = push.message[a]
            start, end = push.offsets[a][0], push.offsets[b - 1][1]
            text = msgs[m].content[start:end]
        else:
            m, start, end, text = -1, 0, 0, ""
        top = max(cat, key=cat.__getitem__) if cat else None
        share = run / positive if positive > 0 and math.isfinite(run) else 0.0
        out.append(
            Explanation(
                top,
                {k: round(v, 6) for k, v in cat.items()},
                m,
                start,
                end,
                text,
                round(max(min(share, 1.0), 0.0), 4),
                b - a,
            )
        )
    return out


__all__: Sequence[str] = ["DEFAULT_WINDOW", "explain", "strongest_window", "token_push"]
