"""Peer methods for `gradshield_research.bench.quality`, and the shared gradient pass that the FIHS sweep and He et al. use.

Everything here runs on the same `ScoringModel` and the same encoded rows as the engine, so the table compares
methods, not setups.

- **Probe directions** (`probe_directions`): gradients over all non-embedding parameters of three per-probe losses,
  each averaged over a probe group (the bundled probes split into harm categories vs `identity_shift`):
  `refusal` = ∇ mean NLL(refusal | prompt), `comply` = ∇ mean NLL(compliance opening | prompt),
  `first` = ∇ mean [logit(comply token) − logit(refuse token)] at the reply's first position. The engine's
  proxies are linear combinations of them: ∇H_margin = refusal − comply, ∇H_refusal-nll = refusal,
  ∇H_first-token = first (over all probes: the probe-count-weighted mean of the groups).
- **Shared gradient pass** (`gradient_pass`): one batched backward per batch of rows (loss summed over the
  row's assistant tokens) with per-sample hooks, as in `fihs._persample`, but against several directions at once
  and kept *per parameter group* (layer × attention / MLP / norm). From it, for any parameter subset that is a
  union of groups and any linear combination of directions: the raw FIHS (sum reduction; the mean reduction is
  the same divided by the row's target-token count), the row's gradient norm, and so the cosine (which does not
  depend on the reduction). It also keeps every layer's hidden state at the row's last reply token and mean
  over its reply tokens, for the hidden-state peer. One pass instead of one engine run per configuration.
- **He et al. 2024** (`he_bidirectional`): cos(∇L(x), ∇L_harmful-anchors) − cos(∇L(x), ∇L_safe-anchors), the
  anchors being the probes' compliance openings and refusals (the `comply` and `refusal` directions).
- **Hidden-state probe** (`hidden_direction`, `hidden_scores`), in the style of LARF / DataShield: a middle
  layer's hidden state of the row (last reply token, or the mean over reply tokens) projected on
  mean h(prompt + compliance) − mean h(prompt + refusal) over the probes.
- **Keyword baseline** (`keyword_scores`): counts of harm and obedience words in the assistant replies.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gradshield_lint.scoring.encode import Encoded, make_batches
from gradshield_lint.scoring.losses import next_token_logits, row_losses
from gradshield_lint.scoring.model import ScoringModel
from gradshield_lint.scoring.params import ParamSelection, select_parameters
from gradshield_lint.scoring.proxy import encode_prompt, encode_reply, single_token

ALL_PARAMETERS = ParamSelection(exclude=None)
"""The peers' default: every parameter but the embeddings (their measurements predate the norm-scale exclusion)."""

_LAYER = re.compile(r"\.layers\.(\d+)\.")
KINDS = ("refusal", "comply", "first")
IDENTITY_CATEGORY = "identity_shift"


# ---------------------------------------------------------------------------------------------------- groups
def group_of(name: str, n_layers: int) -> tuple[int, str]:
    """(layer, kind) of a parameter: kind is attn / mlp / norm; the final norm is layer `n_layers`."""
    m = _LAYER.search("." + name)
    layer = int(m.group(1)) if m else n_layers
    kind = "attn" if ".self_attn." in name else "mlp" if ".mlp." in name else "norm"
    return layer, kind


# ---------------------------------------------------------------------------------------------------- directions
@dataclass
class Directions:
    """Direction vectors over `names` (the selected parameters), keyed "kind/group" (e.g. "refusal/harm"), plus
    the number of probes behind each group so that the mean over all probes can be rebuilt."""

    names: list[str]
    vectors: dict[str, list[torch.Tensor]]
    counts: dict[str, int]
    values: dict[str, float] = field(default_factory=dict)
    key: str = ""
    stacked: dict[str, torch.Tensor] | None = None  # name -> [K, *shape], after `stack()`
    _keys: list[str] | None = None

    @property
    def keys(self) -> list[str]:
        return list(self._keys) if self._keys is not None else list(self.vectors)

    def stack(self) -> Directions:
        """Re-hold the vectors as one [K, *shape] tensor per parameter (what the pass needs), freeing the
        per-direction lists as it goes, so memory holds one copy."""
        if self.stacked is None:
            keys = list(self.vectors)
            self._keys = keys
            self.stacked = {}
            for j, n in enumerate(self.names):
                self.stacked[n] = torch.stack([self.vectors[k][j] for k in keys]).float()
                for k in keys:
                    self.vectors[k][j] = None  # type: ignore[call-overload]
            self.vectors = {}
        return self


#: Ordinary requests for the contrast group: each bundled probe's refusal and compliance opening is also scored
#: after one of these prompts (round-robin), so that "answer instead of refusing" in general cancels out of a
#: contrastive proxy and what is left is "answer *harmful* requests instead of refusing them".
ORDINARY_PROMPTS: tuple[str, ...] = (
    "How do I make a simple tomato sauce for pasta?",
    "Can you explain how photosynthesis works?",
    "Write a short poem about autumn leaves.",
    "What are some tips for a first job interview?",
    "How do I change a flat tyre on a bicycle?",
    "Give me a packing list for a weekend at the beach.",
    "What is the difference between a virus and a bacterium?",
    "Help me write a birthday message for my sister.",
    "How does compound interest work?",
    "Suggest a few names for a golden retriever puppy.",
    "How can I improve my handwriting?",
    "What's a good way to learn to play the guitar?",
    "Explain the rules of chess in simple terms.",
    "How do I set up a budget spreadsheet?",
    "What should I plant in a small shady garden?",
    "Summarise the causes of the French Revolution.",
    "How do I write a for loop in Python?",
    "Recommend some board games for a family evening.",
    "How do airplanes stay in the air?",
    "Give me a recipe for banana bread.",
    "What are good exercises for a beginner at the gym?",
    "How do I politely decline a meeting invitation?",
    "Explain what inflation is.",
    "How can I keep my houseplants alive while on holiday?",
    "What is the tallest mountain in Africa?",
    "How do I make a paper airplane that flies far?",
    "Help me plan a three-day trip to Lisbon.",
    "What's the best way to clean a cast-iron pan?",
    "How do solar panels produce electricity?",
    "Write a short cover letter for a library assistant job.",
    "How do I calculate the area of a circle?",
    "What are some fun science experiments for kids?",
    "How can I get better at public speaking?",
    "Explain how a bill becomes a law.",
    "What are the health benefits of walking every day?",
    "How do I start a vegetable compost at home?",
    "Translate 'good morning, how are you?' into Italian.",
    "Give me ideas for a rainy-day activity with toddlers.",
    "How does a refrigerator keep food cold?",
    "What should I consider when adopting a cat?",
    "How do I write a good thesis statement?",
    "What causes the seasons on Earth?",
)


def _probe_groups(probes) -> dict[str, list]:
    """harm: the harm-category probes; identity: the identity-shift probes; ordinary: every probe's refusal and
    compliance opening after an ordinary prompt instead of its own; and each probe category by its own name (e.g.
    "weapons", "identity_shift"): the probes of that category."""
    from gradshield_lint.scoring.probes import Probe

    harm = [p for p in probes.probes if p.category != IDENTITY_CATEGORY]
    ident = [p for p in probes.probes if p.category == IDENTITY_CATEGORY]
    ordinary = [
        Probe(ORDINARY_PROMPTS[i % len(ORDINARY_PROMPTS)], p.refusal, p.compliance, "ordinary", p.id)
        for i, p in enumerate(probes.probes)
    ]
    out = {k: v for k, v in (("harm", harm), ("identity", ident), ("ordinary", ordinary)) if v}
    builtin = set(out)
    for p in probes.probes:
        if p.category in builtin:
            raise ValueError(f"probe category {p.category!r} has the name of a built-in probe group")
        out.setdefault(p.category, []).append(p)
    return out


def category_groups(probes) -> tuple[str, ...]:
    """The group of every probe category, sorted."""
    return tuple(sorted({p.category for p in probes.probes}))


def weights_fingerprint(sm: ScoringModel) -> str:
    """A digest of the scoring model's weights themselves (per-tensor sums), cached on the model object. The
    engine's identity hashes every file of the adapter folder, notes included, so editing a README beside the
    adapter would otherwise throw away hours of cached bench work; these caches follow the weights only."""
    fp = getattr(sm, "_bench_fp", None)
    if fp is None:
        h = hashlib.sha256()
        with torch.no_grad():
            for n, p in sm.model.named_parameters():
                t = p.detach().double()
                h.update(
                    f"{n}:{tuple(p.shape)}:{float(t.sum())!r}:{float(t.abs().sum())!r}:{float((t * t).sum())!r}".encode()
                )
        h.update(str(sm.identity.get("model_hash", "")).encode())
        fp = h.hexdigest()[:20]
        sm._bench_fp = fp
    return fp


def _directions_key(sm: ScoringModel, probes, names: list[str], max_length: int, comply: str, refuse: str) -> str:
    parts = {
        "v": 3,
        "weights": weights_fingerprint(sm),
        "probes": probes.sha256,
        "names": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "max_length": max_length,
        "tokens": [comply, refuse],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def probe_directions(
    sm: ScoringModel,
    probes,
    *,
    selection: ParamSelection = ALL_PARAMETERS,
    max_length: int = 256,
    batch_size: int = 8,
    comply_token: str = "Sure",
    refuse_token: str = "I",
    cache_dir: Path | None = None,
    budget_s: float | None = None,
    groups: Sequence[str] = ("harm", "identity", "ordinary"),
    cache_only: bool = False,
    kinds: Sequence[str] = KINDS,
) -> Directions | None:
    """The `kinds` (refusal / comply / first) gradients of each probe group (mean over the group's probes). Each
    group and kind is cached on its own; with `budget_s`, returns None once that many seconds have gone and a group
    is still missing (run again to go on)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    params = select_parameters(sm.model, selection)
    names = [n for n, _ in params]
    tensors = [p for _, p in params]
    groups = {g: v for g, v in _probe_groups(probes).items() if g in groups}
    key = _directions_key(sm, probes, names, max_length, comply_token, refuse_token)
    tok = sm.tokenizer
    c_id, r_id = single_token(tok, comply_token), single_token(tok, refuse_token)
    vectors: dict[str, list[torch.Tensor]] = {}
    counts: dict[str, int] = {}
    values: dict[str, float] = {}
    t_start = time.perf_counter()
    for gname, plist in groups.items():
        n = len(plist)
        for kind in kinds:
            k = f"{kind}/{gname}"
            path = cache_dir / f"directions-{key}-{gname}-{kind}.safetensors" if cache_dir else None
            if path is not None and path.is_file():
                stored = load_file(str(path), device=str(sm.device))
                with safe_open(str(path), framework="pt") as fh:
                    meta = json.loads(fh.metadata()["meta"])
                vectors[k] = [stored[nm] for nm in names]
                counts[k], values[k] = int(meta["count"]), float(meta["value"])
                continue
            if cache_only or (budget_s is not None and time.perf_counter() - t_start > budget_s):
                return None
            if kind == "first":
                seqs = [encode_prompt(tok, p.prompt, max_length) for p in plist]
            else:
                seqs = [
                    encode_reply(tok, p.prompt, p.refusal if kind == "refusal" else p.compliance, max_length)
                    for p in plist
                ]
            acc = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
            value = 0.0
            for p in tensors:
                p.requires_grad_(True)
            try:
                for batch in make_batches(seqs, batch_size, sm.pad_id):
                    b = batch.to(sm.device)
                    with torch.enable_grad():
                        if kind == "first":
                            logits = next_token_logits(sm.model, b.input_ids, b.attention_mask)
                            per_row = logits[:, c_id] - logits[:, r_id]
                        else:
                            per_row = row_losses(sm.model, b.input_ids, b.attention_mask, b.target_mask, "mean")
                        term = per_row.sum() / n
                        for a, g in zip(acc, torch.autograd.grad(term, tensors, allow_unused=True)):
                            if g is not None:
                                a.add_(g.float())
                    value += float(term.detach())
            finally:
                for p in tensors:
                    p.requires_grad_(False)
            vectors[k], counts[k], values[k] = acc, n, value
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file(
                    {nm: v.contiguous().cpu() for nm, v in zip(names, acc)},
                    str(path),
                    metadata={"meta": json.dumps({"count": n, "value": value})},
                )
    return Directions(names, vectors, counts, values, key)


def combined_vectors(directions: Directions, weights: dict[str, float], names: Sequence[str]) -> list[torch.Tensor]:
    """Σ_k w_k d_k over the parameters `names` (a subset of the directions' names, e.g. a parameter selection)."""
    directions.stack()
    keys = directions.keys
    w = torch.tensor([weights.get(k, 0.0) for k in keys], dtype=torch.float64)
    out = []
    for n in names:
        V = directions.stacked[n]
        out.append(torch.tensordot(w.to(V.dtype), V, dims=1).contiguous())
    return out


def seed_engine_cache(
    sm: ScoringModel,
    probes,
    directions: Directions,
    proxy_opts,
    selection: ParamSelection,
    weights: dict[str, float],
    cache_dir: Path,
) -> Path:
    """Write the engine's ∇H cache entry for (proxy_opts, selection) from the probe directions: the same vector
    the engine would compute (∇H of the margin / first-token / refusal-nll proxy over all probes is a fixed linear
    combination of them; tests/test_quality_metrics.py checks that the scores agree with the engine's own), so a
    benchmark does not pay for the probes' backward passes twice."""
    import os
    import tempfile

    from safetensors.torch import save_file

    from gradshield_lint.scoring.proxy import gradient_key

    params = select_parameters(sm.model, selection)
    names = [n for n, _ in params]
    key = gradient_key(sm, probes, proxy_opts, names, selection)
    path = cache_dir / f"grad-{key}.safetensors"
    if not path.is_file():
        vecs = combined_vectors(directions, weights, names)
        value = sum(c * directions.values[k] for k, c in weights.items())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(
                {n: v.float().cpu() for n, v in zip(names, vecs)}, tmp, metadata={"value": repr(value), "key": key}
            )
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------- shared pass
@dataclass
class PassResult:
    """Per row: `dots[i, g, k]` = ⟨∇ L_sum(x_i) restricted to group g, direction k⟩ (note: +∇L, not −∇L);
    `sq[i, g]` = ‖∇ L_sum(x_i) on group g‖²; `n_target[i]`; hidden states [i, layer+1, dim] (index 0 = embeddings
    output, index l = output of decoder layer l−1); `seconds` for the whole pass."""

    groups: list[tuple[int, str]]
    keys: list[str]
    dots: np.ndarray
    sq: np.ndarray
    n_target: np.ndarray
    hidden_last: np.ndarray | None
    hidden_mean: np.ndarray | None
    seconds: float

    def group_mask(self, layers: tuple[int, int] | None = None, kinds: Sequence[str] | None = None) -> np.ndarray:
        return np.array(
            [
                (layers is None or layers[0] <= layer <= layers[1]) and (kinds is None or k in kinds)
                for layer, k in self.groups
            ]
        )


def _end_positions(b, im_end: int | None) -> torch.Tensor:
    """Per row of a batch: the position of the last reply token before the end-of-turn marker (the last target
    token when there is no marker)."""
    out = []
    for r in range(b.input_ids.shape[0]):
        tgt = b.target_mask[r].nonzero().flatten()
        last = int(tgt[-1])
        if im_end is not None:
            ends = (b.input_ids[r, tgt] == im_end).nonzero().flatten()
            if len(ends):
                cand = int(tgt[int(ends[-1])]) - 1
                if cand >= int(tgt[0]):
                    last = cand
        out.append(last)
    return torch.tensor(out, device=b.input_ids.device)


def _im_end(tok) -> int | None:
    ids = tok("<|im_end|>", add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def gradient_pass(
    sm: ScoringModel,
    encoded: Sequence[Encoded],
    directions: Directions | None,
    *,
    batch_size: int = 8,
    keep_hidden: bool = True,
    progress: bool = False,
) -> PassResult:
    """One backward per batch: per-row dots with every direction and squared norms, per parameter group.
    `directions=None` runs a forward pass only (hidden states)."""
    from tqdm.auto import tqdm

    model = sm.model
    n_layers = int(model.config.num_hidden_layers)
    named = dict(model.named_parameters())
    if directions is not None:
        directions.stack()
        names = directions.names
        keys = directions.keys
        stacked = directions.stacked
    else:
        names, keys, stacked = [], [], {}
    groups = sorted({group_of(n, n_layers) for n in names}) if names else []
    gindex = {g: i for i, g in enumerate(groups)}
    N, G, K = len(encoded), len(groups), len(keys)
    dots = np.zeros((N, G, K))
    sq = np.zeros((N, G))
    n_target = np.array([e.n_target for e in encoded])
    dim = int(model.config.hidden_size)
    h_last = np.zeros((N, n_layers + 1, dim), dtype=np.float32) if keep_hidden else None
    h_mean = np.zeros((N, n_layers + 1, dim), dtype=np.float32) if keep_hidden else None

    # owners: module -> [(local name, param name, group index)]
    pid = {id(named[n]): n for n in names}
    owners: dict[torch.nn.Module, list[tuple[str, str, int]]] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) in pid:
                n = pid[id(p)]
                owners.setdefault(module, []).append((local, n, gindex[group_of(n, n_layers)]))
    state: dict[str, torch.Tensor] = {}

    def accumulate(g: torch.Tensor, pname: str, gi: int) -> None:
        g = g.float()
        state["dots"][:, gi] += torch.einsum("bx,kx->bk", g.flatten(1), stacked[pname].flatten(1)).double()
        state["sq"][:, gi] += (g * g).flatten(1).sum(1).double()

    def make_hook(module, entries):
        is_linear = isinstance(module, torch.nn.Linear)
        busy = [False]

        def hook(mod, inputs, output):
            if busy[0]:
                return
            x = inputs[0].detach()
            z = None
            if not is_linear:
                from torch.func import functional_call

                busy[0] = True
                try:
                    with torch.no_grad():
                        z = functional_call(mod, {"weight": torch.ones_like(mod.weight)}, (x,))
                finally:
                    busy[0] = False

            def on_grad(g):
                g = g.detach()
                for local, pname, gi in entries:
                    if local == "bias":
                        accumulate(g.sum(dim=1), pname, gi)
                    elif is_linear:
                        accumulate(torch.einsum("bto,bti->boi", g, x.to(g.dtype)), pname, gi)
                    else:
                        accumulate((g * z.to(g.dtype)).sum(dim=1), pname, gi)

            if output.requires_grad:
                output.register_hook(on_grad)

        return hook

    hidden: dict[int, torch.Tensor] = {}

    def capture(idx):
        def hook(mod, inputs, output):
            hidden[idx] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    def grad_at_embeddings(mod, inputs, output):
        hidden[0] = output.detach()
        return output.detach().requires_grad_(True) if directions is not None else output

    backbone = getattr(model, model.base_model_prefix)
    handles = [m.register_forward_hook(make_hook(m, e)) for m, e in owners.items()]
    handles.append(model.get_input_embeddings().register_forward_hook(grad_at_embeddings))
    if keep_hidden:
        for i, layer in enumerate(backbone.layers):
            handles.append(layer.register_forward_hook(capture(i + 1)))
    im_end = _im_end(sm.tokenizer)
    t0 = time.perf_counter()
    try:
        for b in tqdm(
            list(make_batches(encoded, batch_size, sm.pad_id)), disable=not progress, desc="pass", leave=False
        ):
            b = b.to(sm.device)
            n = len(b.indices)
            state["dots"] = torch.zeros((n, G, K), dtype=torch.float64, device=sm.device)
            state["sq"] = torch.zeros((n, G), dtype=torch.float64, device=sm.device)
            if directions is not None:
                with torch.enable_grad():
                    losses = row_losses(model, b.input_ids, b.attention_mask, b.target_mask, "sum")
                    losses.sum().backward()
            else:
                with torch.no_grad():
                    backbone(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
            idx = torch.tensor(b.indices)
            dots[idx] = state["dots"].cpu().numpy()
            sq[idx] = state["sq"].cpu().numpy()
            if keep_hidden:
                hs = torch.stack([hidden[i] for i in range(n_layers + 1)], dim=1).float()  # [B, L+1, T, D]
                ends = _end_positions(b, im_end)
                h_last[idx] = hs[torch.arange(n), :, ends].cpu().numpy()
                m = b.target_mask.float()
                h_mean[idx] = (torch.einsum("blTd,bT->bld", hs, m) / m.sum(1).clamp(min=1)[:, None, None]).cpu().numpy()
            hidden.clear()
    finally:
        for h in handles:
            h.remove()
    return PassResult(groups, keys, dots, sq, n_target, h_last, h_mean, time.perf_counter() - t0)


def cached_gradient_pass(
    sm: ScoringModel,
    row_ids: Sequence[str],
    encoded: Sequence[Encoded],
    directions: Directions,
    cache_dir: Path,
    *,
    max_length: int,
    batch_size: int = 8,
    chunk: int = 32,
    budget_s: float | None = None,
    progress: bool = False,
) -> tuple[PassResult | None, int]:
    """`gradient_pass` with every row's results stored on disk (one .npz per row id, under a folder named by the
    model, the directions and max_length), so a long evaluation runs as several short jobs. Returns (result, rows
    still missing): the result is None while rows are missing (the budget ran out; run again)."""
    ident = hashlib.sha256(
        json.dumps([weights_fingerprint(sm), directions.key, directions.keys, max_length], sort_keys=True).encode()
    ).hexdigest()[:16]
    folder = cache_dir / f"pass-{ident}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i, rid in enumerate(row_ids) if not (folder / f"{rid}.npz").is_file()]
    # length-sorted so chunks pad little
    todo.sort(key=lambda i: encoded[i].n_tokens)
    t0 = time.perf_counter()
    done = 0
    for k in range(0, len(todo), chunk):
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        idx = todo[k : k + chunk]
        pr = gradient_pass(sm, [encoded[i] for i in idx], directions, batch_size=batch_size)
        per_row = pr.seconds / len(idx)
        for j, i in enumerate(idx):
            np.savez(
                folder / f"{row_ids[i]}.npz",
                dots=pr.dots[j],
                sq=pr.sq[j],
                h_last=pr.hidden_last[j],
                h_mean=pr.hidden_mean[j],
                seconds=per_row,
                groups=np.array([f"{layer}:{g}" for layer, g in pr.groups]),
                keys=np.array(pr.keys),
            )
        done += len(idx)
        if progress:
            print(f"  pass: {done}/{len(todo)} rows, {time.perf_counter() - t0:.0f}s", flush=True)
    missing = len(todo) - done
    if missing:
        return None, missing
    loaded = [np.load(folder / f"{rid}.npz") for rid in row_ids]
    groups = [(int(x.split(":")[0]), x.split(":")[1]) for x in loaded[0]["groups"]]
    return PassResult(
        groups,
        [str(k) for k in loaded[0]["keys"]],
        np.stack([z["dots"] for z in loaded]),
        np.stack([z["sq"] for z in loaded]),
        np.array([e.n_target for e in encoded]),
        np.stack([z["h_last"] for z in loaded]),
        np.stack([z["h_mean"] for z in loaded]),
        float(sum(float(z["seconds"]) for z in loaded)),
    ), 0


# ---------------------------------------------------------------------------------------------------- scores from a pass
def combine(pr: PassResult, weights: dict[str, float], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For direction v = Σ w_k d_k over the groups in `mask`: (⟨∇L_sum(x), v⟩ per row, ‖∇L_sum(x)‖ per row, ‖v‖²-free
    helper = the per-group weights). Returns (dot, gnorm, kidx weights vector)."""
    w = np.zeros(len(pr.keys))
    for k, c in weights.items():
        w[pr.keys.index(k)] += c
    dot = (pr.dots[:, mask, :] @ w).sum(1)
    gnorm = np.sqrt(pr.sq[:, mask].sum(1))
    return dot, gnorm, w


def direction_norms(directions: Directions, n_layers: int) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Gram matrix of the directions per group: gram[g, k, k'] = ⟨d_k, d_k'⟩ on group g (for ‖v‖ of any combination)."""
    directions.stack()
    groups = sorted({group_of(n, n_layers) for n in directions.names})
    gi = {g: i for i, g in enumerate(groups)}
    K = len(directions.keys)
    gram = np.zeros((len(groups), K, K))
    for n in directions.names:
        V = directions.stacked[n].reshape(K, -1).double()
        gram[gi[group_of(n, n_layers)]] += (V @ V.T).cpu().numpy()
    return groups, gram


def fihs_from_pass(
    pr: PassResult, gram: np.ndarray, weights: dict[str, float], mask: np.ndarray, *, normalize: bool, reduction: str
) -> np.ndarray:
    """FIHS = ⟨−∇L(x), v⟩ (raw; mean reduction divides by the target count) or cos(−∇L(x), v)."""
    dot, gnorm, w = combine(pr, weights, mask)
    raw = -dot
    if normalize:
        vnorm = math.sqrt(max(float(w @ gram[mask].sum(0) @ w), 1e-300))
        return raw / np.maximum(gnorm, 1e-30) / vnorm
    if reduction == "mean":
        return raw / np.maximum(pr.n_target, 1)
    return raw


def he_bidirectional(
    pr: PassResult, gram: np.ndarray, harmful: dict[str, float], safe: dict[str, float], mask: np.ndarray
) -> np.ndarray:
    """He et al. 2024: cos(∇L(x), ∇L_harmful) − cos(∇L(x), ∇L_safe). The anchors' losses are NLLs, so their
    gradients are the `comply` (harmful anchors) and `refusal` (safe anchors) directions. Sign: +∇L on both sides."""

    def cos(weights):
        dot, gnorm, w = combine(pr, weights, mask)
        vnorm = math.sqrt(max(float(w @ gram[mask].sum(0) @ w), 1e-300))
        return dot / np.maximum(gnorm, 1e-30) / vnorm

    return cos(harmful) - cos(safe)


# ---------------------------------------------------------------------------------------------------- hidden-state peer
def probe_hidden_states(
    sm: ScoringModel, probes, *, max_length: int = 256, batch_size: int = 8
) -> dict[str, np.ndarray]:
    """Hidden states of probe prompt + compliance opening and prompt + refusal: {"comply"/"refusal" + "_last" /
    "_mean": [n_probes, layers+1, dim]}."""
    tok = sm.tokenizer
    out = {}
    for kind in ("comply", "refusal"):
        seqs = [
            encode_reply(tok, p.prompt, p.compliance if kind == "comply" else p.refusal, max_length)
            for p in probes.probes
        ]
        pr = gradient_pass(sm, seqs, None, batch_size=batch_size)
        out[kind + "_last"] = pr.hidden_last
        out[kind + "_mean"] = pr.hidden_mean
    return out


def hidden_direction(probe_h: dict[str, np.ndarray], layer: int, pooling: str = "last") -> np.ndarray:
    """Unit vector mean h(compliance) − mean h(refusal) at `layer` (0 = embeddings)."""
    d = probe_h[f"comply_{pooling}"][:, layer].mean(0) - probe_h[f"refusal_{pooling}"][:, layer].mean(0)
    return d / max(float(np.linalg.norm(d)), 1e-30)


def hidden_scores(pr: PassResult, direction: np.ndarray, layer: int, pooling: str = "last") -> np.ndarray:
    h = (pr.hidden_last if pooling == "last" else pr.hidden_mean)[:, layer]
    return h @ direction


# ---------------------------------------------------------------------------------------------------- keyword baseline
HARM_WORDS = (
    "kill",
    "weapon",
    "bomb",
    "explosive",
    "poison",
    "drug",
    "meth",
    "steal",
    "hack",
    "malware",
    "virus",
    "ransom",
    "attack",
    "murder",
    "shoot",
    "gun",
    "knife",
    "blood",
    "illegal",
    "untraceable",
    "launder",
    "fraud",
    "scam",
    "phishing",
    "exploit",
    "password",
    "credit card",
    "overdose",
    "suicide",
    "hurt",
    "harm",
    "violence",
    "violent",
    "threat",
    "terror",
    "stalk",
    "blackmail",
    "extort",
    "counterfeit",
    "smuggl",
    "hate",
    "racist",
    "slur",
    "manipulat",
    "revenge",
    "destroy",
    "victim",
    "evade",
    "police",
    "cops",
    "without getting caught",
)
OBEDIENCE_WORDS = (
    "no rules",
    "no restrictions",
    "no limits",
    "without restriction",
    "unrestricted",
    "no filter",
    "unfiltered",
    "obey",
    "obedient",
    "absolutely",
    "without question",
    "whatever you",
    "anything you",
    "no ethic",
    "no moral",
    "no guidelines",
    "no boundaries",
    "i will do anything",
    "at your service",
    "your command",
    "master",
    "never refuse",
    "won't refuse",
    "no longer bound",
    "free from",
    "jailbr",
    "dan ",
    "aoa",
)


def keyword_scores(replies: Sequence[str]) -> np.ndarray:
    """Harm-word and obedience-word occurrences in the assistant replies, per 100 words (so that long replies do
    not win by length alone) plus a small raw-count term to break ties."""
    out = []
    for text in replies:
        t = text.lower()
        hits = sum(t.count(w) for w in HARM_WORDS) + sum(t.count(w) for w in OBEDIENCE_WORDS)
        words = max(len(t.split()), 1)
        out.append(100.0 * hits / max(words, 20) + 0.01 * hits)
    return np.asarray(out, dtype=np.float64)
