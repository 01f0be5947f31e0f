"""Per-row FIHS(x) = ⟨−∇θ L(x), ∇θ H⟩: fast paths and the exact reference behind one function.

∇H = v is fixed, so FIHS is minus the directional derivative of each row's loss along v:
- `fd`: central finite differences, −[L(θ+εv) − L(θ−εv)] / 2ε. Two batched forward passes over all rows, the
  weights shifted in place only three times per call (not per batch). float32 only: bf16 swallows the step.
- `jvp`: forward-mode AD (torch.func.jvp over functional_call), one pass carrying primal and tangent.
- `persample`: one batched backward with per-sample hooks on the modules that own the selected parameters: exact
  per-row dot products *and* gradient norms (for the normalized score cos(−∇L, ∇H)) without materializing any
  row's whole gradient: per layer, either its per-sample gradients or, for short rows, T × T grams
  (`ghost_pays`). Its backward passes hold at most `scoring.batch_tokens` tokens (`backward_tokens`).
- `exact`: a backward pass per row: the reference the others are tested against.
Nothing here knows about files, baselines or reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gradshield_lint.scoring.encode import Batch, Encoded, make_batches
from gradshield_lint.scoring.losses import row_losses
from gradshield_lint.scoring.model import ScoringModel, eager_attention
from gradshield_lint.scoring.options import RowScore, ScoreOptions
from gradshield_lint.scoring.proxy import ProxyGradient
from gradshield_lint.scoring.registry import METHODS
from gradshield_lint.scoring.registry import resolve_method as _resolve


def resolve_method(method: str, normalize: bool, dtype: torch.dtype) -> str:
    """The method that runs for `method` on a model in `dtype` (`auto` resolved; see `registry.resolve_method`).
    A method that gives no gradient norms under `normalize` is a `ConfigError`."""
    return _resolve(method, normalize, float32=dtype == torch.float32)


def score_encoded(
    sm: ScoringModel,
    grad: ProxyGradient,
    encoded: Sequence[Encoded],
    opts: ScoreOptions | None = None,
    *,
    progress: bool = False,
) -> list[RowScore]:
    """Score already-encoded rows; results are in the order of `encoded` (`opts`: the configuration's defaults)."""
    opts = ScoreOptions() if opts is None else opts
    if not encoded:
        return []
    method = resolve_method(opts.method, opts.normalize, sm.dtype)
    impl = METHODS.implementation(method)
    total = len(encoded) * (2 if method == "fd" else 1)
    with tqdm(total=total, disable=not progress, desc=f"FIHS ({method})", unit="row", leave=False) as bar:
        dots, norms = impl(sm, grad, encoded, opts, bar)
    vnorm = grad.norm
    out = []
    for e, dot, gnorm in zip(encoded, dots, norms):
        raw = -dot
        score = raw / (gnorm * vnorm) if opts.normalize and gnorm and vnorm else (0.0 if opts.normalize else raw)
        out.append(RowScore(float(score), float(raw), gnorm, e.truncated, e.n_tokens, e.n_target))
    return out


def score_windows(
    sm: ScoringModel,
    grad: ProxyGradient,
    rows: Sequence[Sequence[Encoded]],
    opts: ScoreOptions | None = None,
    *,
    progress: bool = False,
) -> list[RowScore]:
    """Score rows given as their windows (`encode.encode_windows`), every window of every row in one call (so
    they share batches); each row scores as its worst window (`worst_window`)."""
    flat = [e for windows in rows for e in windows]
    scores = score_encoded(sm, grad, flat, opts, progress=progress)
    out, at = [], 0
    for windows in rows:
        out.append(worst_window(scores[at : at + len(windows)]))
        at += len(windows)
    return out


def worst_window(scores: Sequence[RowScore]) -> RowScore:
    """A row's score from its windows' scores: the highest, with the count of windows.

    The maximum, not a mean: a row is as harmful as its worst part. Finetuning on the row learns every window's
    tokens, and a harmful passage teaches what it teaches whatever benign text surrounds it; a mean over windows
    would let a long benign reply dilute a harmful tail, the very row that truncation let through. A window is a
    row-sized piece, so its score is on the scale the threshold was set on. A window whose score is not a number
    makes the row's score not a number (as one window would): nothing is hidden behind its neighbours."""
    if not scores:
        raise ValueError("a row has at least one window")
    worst = next((s for s in scores if math.isnan(s.fihs)), None) or max(scores, key=lambda s: s.fihs)
    return replace(worst, windows=len(scores))


def _selected(sm: ScoringModel, grad: ProxyGradient) -> list[torch.nn.Parameter]:
    named = dict(sm.model.named_parameters())
    return [named[n] for n in grad.names]


def _losses(sm: ScoringModel, b: Batch, reduction: str, precision: str = "float64") -> torch.Tensor:
    return row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask, reduction, precision)


def _batches(
    sm: ScoringModel, encoded: Sequence[Encoded], opts: ScoreOptions, max_tokens: int | None = None
) -> list[Batch]:
    return [b.to(sm.device) for b in make_batches(encoded, opts.batch_size, sm.pad_id, max_tokens)]


# Measured on the embedded model (bench/speed.py, 256-token rows, 2 CPU threads): persample at 2 rows per backward
# pass peaks at 1.4 GiB above the model and ∇H, at 8 rows at 5.1 GiB, and is no slower per row.
CPU_BACKWARD_TOKENS = 512


def backward_tokens(opts: ScoreOptions, device: torch.device) -> int | None:
    """The token bound of one batched backward pass: `batch_tokens`, with "auto" resolved by device. On a CPU the
    cost per row does not fall with larger batches (the matrix products are compute-bound already) while the
    memory autograd keeps grows with every token; an accelerator is the other way round."""
    if opts.batch_tokens == "auto":
        return CPU_BACKWARD_TOKENS if device.type == "cpu" else None
    return None if opts.batch_tokens is None else int(opts.batch_tokens)


# ---------------------------------------------------------------- finite differences
FD_STEPS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
# A fixed row, so that the calibrated step (and with it every score) does not depend on which rows a run sees.
_CALIBRATION_ROW = (
    ("user", "How do I keep cut flowers fresh for longer?"),
    (
        "assistant",
        "Trim the stems at an angle, put them in clean water with a little sugar, keep the vase out of direct "
        "sunlight, and change the water every two days.",
    ),
)


def calibrate_fd_step(sm: ScoringModel, grad: ProxyGradient, opts: ScoreOptions) -> float:
    """The relative step (from FD_STEPS) whose central difference best matches the exact directional derivative on
    a fixed calibration row: one backward pass and a few single-row forward passes, cached per (model, ∇H,
    reduction) on the ScoringModel so a process pays it once. The best step balances the O(ε²) curvature error of
    a large step against float32 rounding of the loss at a small one, and where that balance lies depends on the
    model and the parameter selection."""
    from gradshield_lint.io.rows import Message
    from gradshield_lint.scoring.encode import encode_conversation

    cache = sm.fd_steps
    key = (grad.key, opts.loss_reduction)
    if key in cache:
        return cache[key]
    # and on disk beside ∇H: the calibration is seconds of a check that explains a finding, in every new process
    stored = _StoredSteps(grad.path.with_name(f"fd-steps-{grad.key}.json")) if grad.path else None
    where = f"{sm.device.type}/{sm.dtype}/{opts.loss_reduction}"
    found = stored.get(grad.key, where) if stored else None
    if found is not None:
        cache[key] = found
        return found
    row = encode_conversation(sm.tokenizer, [Message(r, c) for r, c in _CALIBRATION_ROW], max_length=4096)
    one = replace(opts, batch_size=1)
    with torch.enable_grad():  # called from inside _fd's no_grad
        (exact,), _ = _exact(sm, grad, [row], one, _NullBar())
    best, best_err = FD_STEPS[0], math.inf
    for step in FD_STEPS:
        (approx,), _ = _fd(sm, grad, [row], replace(one, fd_relative_step=step), _NullBar())
        err = abs(approx - exact)
        if err < best_err:
            best, best_err = step, err
    cache[key] = best
    if stored:
        stored.put(grad.key, where, best)
    return best


@dataclass(frozen=True)
class _StoredSteps:
    """Calibrated fd steps of one ∇H entry, by device, dtype and reduction: {"key": ∇H key, "steps": {...}}. A file
    that does not parse, or names another key, is ignored and rewritten; a step outside FD_STEPS is never used."""

    path: Path

    def _read(self, key: str) -> dict[str, float]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        steps = doc.get("steps") if isinstance(doc, dict) and doc.get("key") == key else None
        return {k: v for k, v in steps.items() if v in FD_STEPS} if isinstance(steps, dict) else {}

    def get(self, key: str, where: str) -> float | None:
        return self._read(key).get(where)

    def put(self, key: str, where: str, step: float) -> None:
        from gradshield_lint.io.atomic import atomic_write_text

        steps = {**self._read(key), where: step}
        try:
            atomic_write_text(self.path, json.dumps({"key": key, "steps": steps}, sort_keys=True))
        except OSError:
            pass  # a read-only cache: calibrated again by the next process


class _NullBar:
    def update(self, n: int) -> None:
        pass


@METHODS.implements("fd")
@torch.no_grad()
def _fd(sm, grad, encoded, opts, bar):
    params = _selected(sm, grad)
    vs = [v.to(p.dtype) for p, v in zip(params, grad.vectors)]
    theta = math.sqrt(sum(float((p.double() ** 2).sum()) for p in params))
    step = opts.fd_relative_step if opts.fd_relative_step is not None else calibrate_fd_step(sm, grad, opts)
    eps = step * theta / max(grad.norm, 1e-30)
    batches = _batches(sm, encoded, opts)
    plus = torch.zeros(len(encoded), dtype=torch.float64)
    minus = torch.zeros(len(encoded), dtype=torch.float64)

    def shift(scale: float) -> None:
        for p, v in zip(params, vs):
            p.add_(v, alpha=scale)

    # In-place shifts leave at most a rounding-level residue in the weights (≈1 ulp), far below any score.
    offset = 0.0
    try:
        shift(eps)
        offset = eps
        for b in batches:
            plus[b.indices] = _losses(sm, b, opts.loss_reduction).double().cpu()
            bar.update(len(b.indices))
        shift(-2 * eps)
        offset = -eps
        for b in batches:
            minus[b.indices] = _losses(sm, b, opts.loss_reduction).double().cpu()
            bar.update(len(b.indices))
    finally:
        shift(-offset)
    dots = ((plus - minus) / (2 * eps)).tolist()
    return dots, [None] * len(encoded)


# ---------------------------------------------------------------- forward-mode AD
class _RowLoss(torch.nn.Module):
    def __init__(self, lm: torch.nn.Module, reduction: str) -> None:
        super().__init__()
        self.lm = lm
        self.reduction = reduction

    def forward(self, ids, att, tgt):
        return row_losses(self.lm, ids, att, tgt, self.reduction)


@METHODS.implements("jvp")
def _jvp(sm, grad, encoded, opts, bar):
    from torch.func import functional_call, jvp

    wrapper = _RowLoss(sm.model, opts.loss_reduction)
    params = _selected(sm, grad)
    names = ["lm." + n for n in grad.names]
    primals = tuple(p.detach() for p in params)
    tangents = tuple(v.to(p.dtype) for p, v in zip(params, grad.vectors))
    dots = [0.0] * len(encoded)
    with eager_attention(sm.model):
        for b in _batches(sm, encoded, opts):

            def f(*ps, b=b):
                return functional_call(wrapper, dict(zip(names, ps)), (b.input_ids, b.attention_mask, b.target_mask))

            tangent_out = jvp(f, primals, tangents)[1]  # (primal output, tangent output)
            for i, d in zip(b.indices, tangent_out.double().cpu().tolist()):
                dots[i] = d
            bar.update(len(b.indices))
    return dots, [None] * len(encoded)


# ---------------------------------------------------------------- exact reference
@METHODS.implements("exact")
def _exact(sm, grad, encoded, opts, bar):
    params = _selected(sm, grad)
    dots, norms = [], []
    for p in params:
        p.requires_grad_(True)
    try:
        for i in range(len(encoded)):
            (b,) = _batches(sm, [encoded[i]], opts)
            loss = _losses(sm, b, opts.loss_reduction, "float32")[0]  # a gradient, not a difference of losses
            gs = torch.autograd.grad(loss, params, allow_unused=True)
            dot = sq = 0.0
            for g, v in zip(gs, grad.vectors):
                if g is not None:
                    g = g.double()
                    dot += float((g * v.double()).sum())
                    sq += float((g * g).sum())
            dots.append(dot)
            norms.append(math.sqrt(sq))
            bar.update(1)
    finally:
        for p in params:
            p.requires_grad_(False)
    return dots, norms


# ---------------------------------------------------------------- per-sample hooks (normalized scores)
class UnsupportedForPerSample(ValueError):
    pass


def _owners(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[torch.nn.Module, dict[str, int]]:
    """module -> {local parameter name: index in params}; a parameter used by two modules (tied) is refused."""
    index = {id(p): i for i, p in enumerate(params)}
    owners: dict[torch.nn.Module, dict[str, int]] = {}
    seen: dict[int, int] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) in index:
                seen[id(p)] = seen.get(id(p), 0) + 1
                owners.setdefault(module, {})[local] = index[id(p)]
    if any(n > 1 for n in seen.values()):
        raise UnsupportedForPerSample(
            "a selected parameter is shared by two modules (tied weights); leave out the embeddings"
        )
    return owners


def ghost_pays(tokens: int, d_in: int, d_out: int) -> bool:
    """Whether a linear layer's per-row dot and norm are cheaper from T × T grams than from its [out, in] per-sample
    gradients. Both pay one product the size of the layer's forward pass (the per-sample gradient, or g V for the
    dot); the grams add T²(in + out) per row where the per-sample gradient writes, and reads twice, out × in
    values per row from a product whose inner dimension is only T. Measured on the embedded model (bench/speed.py):
    at 64 tokens the grams win, at 256 the per-sample gradients; the crossover is where the grams cost half of
    the product."""
    return 2 * tokens * (d_in + d_out) < d_in * d_out


@METHODS.implements("persample")
def _persample(sm, grad, encoded, opts, bar):
    model = sm.model
    params = _selected(sm, grad)
    owners = _owners(model, params)
    vs = grad.vectors
    dots, norms = [0.0] * len(encoded), [0.0] * len(encoded)
    state: dict = {}

    def accumulate(per_sample: torch.Tensor, idx: int) -> None:
        # a matrix-vector product and a norm: no [rows, out, in] temporaries (g * v, g * g) per layer and batch
        g = per_sample.float().flatten(1)
        state["dot"] += (g @ vs[idx].reshape(-1).to(g.dtype)).double()
        state["sq"] += torch.linalg.vector_norm(g, dim=1).double() ** 2

    def accumulate_flat(g: torch.Tensor, x: torch.Tensor, owner: torch.Tensor, i: int, is_bias: bool) -> None:
        """A linear layer applied to positions flattened across rows (the output head sees only the positions
        that predict a target): `owner[n]` is the row of position n. Dot and norm per row without materializing
        a [rows, out, in] block (the ghost-norm trick: ‖Gᵀ A‖² = Σ (A Aᵀ) ⊙ (G Gᵀ) over one row's positions)."""
        g = g.float()
        n_rows = state["dot"].shape[0]
        if is_bias:
            per_row = torch.zeros(n_rows, g.shape[1], device=g.device).index_add(0, owner, g)
            accumulate(per_row, i)
            return
        x = x.float()
        state["dot"] += torch.zeros(n_rows, dtype=torch.float64, device=g.device).index_add(
            0, owner, ((g @ vs[i].to(g.dtype)) * x).sum(1).double()
        )
        for r in owner.unique().tolist():
            sel = owner == r
            a, gg = x[sel], g[sel]
            state["sq"][r] += float(((a @ a.T) * (gg @ gg.T)).sum())

    def accumulate_ghost(g: torch.Tensor, x: torch.Tensor, i: int) -> None:
        """A linear layer's per-row dot and squared norm from its [rows, T, ·] inputs and output gradients without
        the [rows, out, in] per-sample gradients: dot = Σ_t (g_t V)·x_t (one matrix product as large as the
        layer's own forward pass), ‖Gᵀ X‖² = Σ (X Xᵀ) ⊙ (G Gᵀ) (T × T grams, cheap for short rows)."""
        g, x = g.float(), x.float()
        state["dot"] += ((g @ vs[i].to(g.dtype)) * x).sum(dim=(1, 2)).double()
        gram = (x @ x.transpose(1, 2)).mul_(g @ g.transpose(1, 2))
        state["sq"] += gram.sum(dim=(1, 2)).double()

    def make_hook(module: torch.nn.Module, locals_: dict[str, int]) -> Callable[..., None]:
        is_linear = isinstance(module, torch.nn.Linear)
        if not is_linear and not (
            set(locals_) <= {"weight", "bias"} and all(params[i].dim() == 1 for i in locals_.values())
        ):
            raise UnsupportedForPerSample(f"per-sample gradients are not implemented for {type(module).__name__}")

        busy = [False]

        def hook(mod, inputs, output):
            if busy[0]:  # the unit-weight call below runs this module (and so this hook) once more
                return
            x = inputs[0].detach()
            if not is_linear and "weight" in locals_:
                # An elementwise-scaled norm: y = w ⊙ z(x) (+ b). z is the module's output with unit weight.
                from torch.func import functional_call

                unit = {"weight": torch.ones_like(mod.weight)}
                if getattr(mod, "bias", None) is not None:
                    unit["bias"] = torch.zeros_like(mod.bias)
                busy[0] = True
                try:
                    with torch.no_grad():
                        z = functional_call(mod, unit, (x,))
                finally:
                    busy[0] = False

            owner = None
            if x.dim() == 2:  # the output head on flattened target positions: see accumulate_flat
                owner = state["owner"][state["offset"] : state["offset"] + x.shape[0]]
                state["offset"] += x.shape[0]

            def on_grad(g: torch.Tensor) -> None:
                g = g.detach()
                for local, i in locals_.items():
                    if owner is not None:
                        accumulate_flat(g, x, owner, i, local == "bias")
                    elif local == "bias":
                        accumulate(g.sum(dim=1), i)
                    elif is_linear and ghost_pays(x.shape[1], x.shape[2], g.shape[2]):
                        accumulate_ghost(g, x, i)
                    elif is_linear:
                        accumulate(torch.einsum("bto,bti->boi", g, x.to(g.dtype)), i)
                    else:
                        accumulate((g * z.to(g.dtype)).sum(dim=1), i)

            if output.requires_grad:
                output.register_hook(on_grad)

        return hook

    def grad_at_embeddings(mod, inputs, output):
        return output.detach().requires_grad_(True)

    handles = [m.register_forward_hook(make_hook(m, loc)) for m, loc in owners.items()]
    handles.append(model.get_input_embeddings().register_forward_hook(grad_at_embeddings))
    try:
        for b in _batches(sm, encoded, opts, backward_tokens(opts, sm.device)):
            n = len(b.indices)
            state["dot"] = torch.zeros(n, dtype=torch.float64, device=sm.device)
            state["sq"] = torch.zeros(n, dtype=torch.float64, device=sm.device)
            # row_losses feeds the head the target-predicting positions in this (row-major) order, in chunks
            state["owner"] = b.target_mask[:, 1:].nonzero(as_tuple=True)[0]
            state["offset"] = 0
            with torch.enable_grad():
                losses = _losses(sm, b, opts.loss_reduction, "float32")
                losses.sum().backward()  # per-row losses are independent: d(sum)/d(row i's activations) = dL_i
            for j, i in enumerate(b.indices):
                dots[i] = float(state["dot"][j])
                norms[i] = math.sqrt(float(state["sq"][j]))
            bar.update(n)
    finally:
        for h in handles:
            h.remove()
    return dots, norms
