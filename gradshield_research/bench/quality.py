"""Detection quality of FIHS and its peers on labelled rows (issue 3's instrument).

Input: labelled JSON Lines files or folders of them (`label` = harmful / implicit / benign; any row shape that
`rows.iter_rows` reads; other fields ignored; files without labels, such as prompt lists, are skipped). Each file
is sampled to `--per-file` rows with a fixed seed; a file whose rows carry a `subset` field naming He et al.'s
top-100 / bottom-100 selections (`…_top100` / `…_bottom100`) is sampled to `--per-subset` rows per subset for the He et al. check, and
`--per-file` of those rows also join the main benign pool.

For every scoring method, on the same rows and the same scoring model:
- AUROC (Mann–Whitney, ties counted half) and AUPRC (average precision) of harmful vs benign and implicit vs benign;
- the same AUROC within reply-length quartiles (pooled over the bins: pairs are only compared inside a bin),
  which a pure length effect cannot pass, and next to it the length-only baseline (reply token count as a score);
- per source file (and per `category` when rows carry one): AUROC of that file against all benign rows (for a
  harmful/implicit file) or of all harmful rows against that file (for a benign file);
- TPR per label and FPR at the adaptive threshold (`threshold.find_threshold(all scores, method="auto")`);
- rows/s of the pass that produced the score;
- He et al.: AUROC of each source's top-100 against its bottom-100.
Markdown tables go to stdout; `--out DIR` also gets `quality.json` (metrics and every row's scores),
`scores.png` (score distributions per label) and, with `sweep`, `pass.npz` (every row's gradient projections per
parameter group and its hidden states: what `gradshield_research.bench.ceiling` reads).

Methods (`--methods`, comma-separated):
- `default`: the engine with the configuration schema's defaults (whatever `.gradshield.yaml` would give with no
  file), through `Engine.score_rows`: the number the linter gives out of the box.
- `engine:KEY=VAL;...`: the engine with overrides, keys proxy, normalize, reduction, include, exclude, layers
  (e.g. `engine:proxy=first-token;normalize=1;include=mlp;layers=10-20`).
- `sweep`: one shared per-sample-gradient pass (`gradshield_research.bench.peers`) that yields many FIHS variants at once (proxies ×
  raw/normalized × mean/sum × parameter subsets) plus the He et al. peer.
- `peers`: He et al. (from the shared pass), the hidden-state probe and the keyword baseline.
- `length`: reply token count (always added).

    python -m gradshield_research.bench.quality ../shared/eval-dev/ --per-file 40 --methods default,peers --out /tmp/quality
    python -m gradshield_research.bench.quality bench/data/ --methods default,sweep,peers
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

LABELS = ("harmful", "implicit", "benign")
POSITIVE = ("harmful", "implicit")


# ====================================================================================================== metrics
def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (midranks)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    n = len(x)
    while i < n:
        j = i
        while j + 1 < n and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative) + ½ P(tie): the Mann–Whitney U statistic over
    n_pos·n_neg. NaN when either side is empty."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = _ranks(np.concatenate([pos, neg]))
    u = r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def average_precision(pos: Sequence[float], neg: Sequence[float]) -> float:
    """AUPRC as average precision: Σ over distinct score thresholds (high to low) of (recall gained) × precision
    at that threshold; rows with equal scores enter together (no optimistic ordering of ties)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if len(pos) == 0:
        return float("nan")
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y[order]
    ap = 0.0
    tp = fp = 0.0
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        gained = y[i : j + 1].sum()
        tp += gained
        fp += (j + 1 - i) - gained
        if gained:
            ap += (gained / len(pos)) * (tp / (tp + fp))
        i = j + 1
    return float(ap)


def stratified_auroc(
    pos: Sequence[float], neg: Sequence[float], pos_len: Sequence[float], neg_len: Sequence[float], bins: int = 4
) -> float:
    """AUROC counting only pairs whose reply lengths fall in the same quantile bin (bins from the pooled lengths):
    Σ_bins U_b / Σ_bins n_pos,b·n_neg,b. A score that only tracks length gets about 0.5 here."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    pl, nl = np.asarray(pos_len, float), np.asarray(neg_len, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    edges = np.unique(np.quantile(np.concatenate([pl, nl]), np.linspace(0, 1, bins + 1)[1:-1]))
    pb, nb = np.searchsorted(edges, pl, side="right"), np.searchsorted(edges, nl, side="right")
    u = pairs = 0.0
    for b in range(len(edges) + 1):
        p, n = pos[pb == b], neg[nb == b]
        if len(p) and len(n):
            u += auroc(p, n) * len(p) * len(n)
            pairs += len(p) * len(n)
    return float(u / pairs) if pairs else float("nan")


def rates_at(scores_by_label: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """Flagged fraction (score > threshold, as `threshold.flagged`) per label: TPR for harmful/implicit, FPR for benign."""
    return {
        lab: float((np.asarray(s) > threshold).mean()) if len(s) else float("nan") for lab, s in scores_by_label.items()
    }


# ====================================================================================================== data
@dataclass
class Item:
    row: object  # gradshield_lint.io.rows.Row
    label: str
    file: str
    group: str  # file, or file:category
    subset: str | None
    in_main: bool = True
    reply: str = ""
    n_target: int = 0


def _files(paths: Sequence[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        out.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return out


def load_items(paths: Sequence[str], per_file: int | None, per_subset: int, seed: int) -> list[Item]:
    from gradshield_lint.errors import InputError
    from gradshield_research.bench import labelled_rows

    items: list[Item] = []
    for f in _files(paths):
        try:
            recs = list(labelled_rows(f))
        except InputError as exc:
            print(f"skip {f.name}: {exc}", file=sys.stderr)
            continue
        recs = [
            (r, rec) for r, rec in recs if rec.get("label") in LABELS and any(m.role == "assistant" for m in r.messages)
        ]
        if not recs:
            print(f"skip {f.name}: no labelled rows", file=sys.stderr)
            continue
        rnd = random.Random(f"{seed}:{f.name}")
        has_subset = any(str(rec.get("subset") or "").endswith(("_top100", "_bottom100")) for _, rec in recs)
        chosen: list[tuple[object, dict, bool]] = []
        if has_subset:
            by: dict[str, list] = defaultdict(list)
            for r, rec in recs:
                by[str(rec.get("subset"))].append((r, rec))
            for s in sorted(by):
                pool = by[s]
                chosen.extend((r, rec, False) for r, rec in rnd.sample(pool, min(per_subset, len(pool))))
            main = set(rnd.sample(range(len(chosen)), min(per_file or len(chosen), len(chosen))))
            chosen = [(r, rec, i in main) for i, (r, rec, _) in enumerate(chosen)]
        else:
            pool = recs if per_file is None or per_file >= len(recs) else rnd.sample(recs, per_file)
            chosen = [(r, rec, True) for r, rec in pool]
        for r, rec, main in chosen:
            cat = rec.get("category")
            items.append(
                Item(
                    row=r,
                    label=rec["label"],
                    file=f.stem,
                    group=f"{f.stem}:{cat}" if cat else f.stem,
                    subset=rec.get("subset") if has_subset else None,
                    in_main=main,
                    reply="\n".join(m.content for m in r.messages if m.role == "assistant"),
                )
            )
    return items


# ====================================================================================================== methods
@dataclass
class Scores:
    name: str
    values: np.ndarray
    seconds: float  # time of the pass that produced it (shared passes: the whole pass)
    note: str = ""


def _parse_engine_spec(spec: str) -> dict[str, str]:
    body = spec.split(":", 1)[1] if ":" in spec else ""
    out = {}
    for part in filter(None, body.split(";")):
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def engine_settings(overrides: dict[str, str], args) -> object:
    """Settings from the configuration schema's defaults, with the bench's model options and `overrides`."""
    from dataclasses import replace

    from gradshield_lint.config import config_from_dict
    from gradshield_lint.scoring.engine import settings_from_config
    from gradshield_lint.scoring.params import ParamSelection

    cfg = config_from_dict({}, root=Path.cwd())
    s = settings_from_config(cfg, cache_dir=Path(args.cache) if args.cache else None)
    model = replace(s.model, adapter=None if args.adapter == "none" else args.adapter)
    s = replace(s, model=model, max_length=args.max_length)
    score, proxy, params = s.score, s.proxy, s.params
    if "proxy" in overrides:
        proxy = replace(proxy, proxy=overrides["proxy"])
    if "normalize" in overrides:
        score = replace(score, normalize=overrides["normalize"] in ("1", "true", "yes"))
    if "reduction" in overrides:
        score = replace(score, loss_reduction=overrides["reduction"])
    if "method" in overrides:
        score = replace(score, method=overrides["method"])
    if any(k in overrides for k in ("include", "exclude", "layers")):
        inc = overrides.get("include", params.include)
        inc = {"mlp": r"\.mlp\.", "attn": r"\.self_attn\."}.get(inc, inc)
        layers = tuple(int(x) for x in overrides["layers"].split("-")) if "layers" in overrides else params.layers
        params = ParamSelection(include=inc or None, exclude=overrides.get("exclude", params.exclude), layers=layers)
    score = replace(score, batch_size=args.batch_size)
    return replace(s, score=score, proxy=proxy, params=params)


def run_engine(name: str, overrides: dict[str, str], items: list[Item], args, sm=None) -> Scores:
    """Scores from `Engine.score_rows`, cached per row under the engine's fingerprint and method, in chunks, so
    that a long run can go on across several invocations with `--budget`."""
    from gradshield_lint.scoring.engine import Engine

    settings = engine_settings(overrides, args)
    eng = Engine(settings)
    if sm is not None and sm.spec == settings.model:
        eng.__dict__["scoring_model"] = sm  # the model already loaded for this run
        _seed_from_directions(eng, args)
    _ = eng.gradient  # ∇H (cached on disk per configuration) outside the timed part
    fp = eng.fingerprint().to_dict() | {"method": eng.method}
    key = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = (Path(args.cache) if args.cache else default_cache()) / f"engine-{key}.json"
    store = json.loads(path.read_text()) if path.is_file() else {}
    todo = [i for i, it in enumerate(items) if it.row.id not in store]
    t0 = time.perf_counter()
    for k in range(0, len(todo), 32):
        if args.budget is not None and time.perf_counter() - t0 > args.budget:
            raise Incomplete(f"{name}: {len(todo) - k} rows left")
        idx = todo[k : k + 32]
        t1 = time.perf_counter()
        scored = eng.score_rows([items[i].row for i in idx])
        per_row = (time.perf_counter() - t1) / len(idx)
        for i, x in zip(idx, scored):
            store[items[i].row.id] = [x.score.fihs, per_row]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(store))
        print(
            f"  {name}: {k + len(idx)}/{len(todo)} rows, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True
        )
    s = settings
    desc = (
        f"proxy={s.proxy.proxy} normalize={s.score.normalize} reduction={s.score.loss_reduction} "
        f"params={s.params.describe()} method={eng.method} adapter={s.model.adapter} max_length={s.max_length}"
    )
    vals = np.array([store[it.row.id][0] for it in items])
    secs = float(sum(store[it.row.id][1] for it in items))
    return Scores(name, vals, secs, desc)


_DIRECTIONS: dict[str, object] = {}
ENGINE_PROXY_WEIGHTS = {"margin": "margin", "first-token": "first", "refusal-nll": "refusal-nll"}


def _seed_from_directions(eng, args) -> None:
    """When the shared pass's probe directions are at hand (in memory or cached), write the engine's ∇H cache
    entry from them instead of recomputing it (same vector; see peers.seed_engine_cache)."""
    from gradshield_research.bench import peers

    s = eng.settings
    if s.probes is not None or s.proxy.proxy not in ENGINE_PROXY_WEIGHTS or s.proxy.max_length != 256:
        return
    D = _DIRECTIONS.get("D")
    if D is None:
        D = peers.probe_directions(
            eng.scoring_model,
            eng.probes,
            cache_dir=Path(args.cache) if args.cache else default_cache(),
            batch_size=args.batch_size,
            groups=("harm", "identity"),
            cache_only=True,
        )
    if D is None or not all(f"{k}/{g}" in D.keys for k in ("refusal", "comply", "first") for g in ("harm", "identity")):
        return
    w = proxy_weights({k: v for k, v in D.counts.items() if not k.endswith("/ordinary")})[
        ENGINE_PROXY_WEIGHTS[s.proxy.proxy]
    ]
    cache = s.cache_dir or default_cache_dir_engine()
    peers.seed_engine_cache(eng.scoring_model, eng.probes, D, s.proxy, s.params, w, cache)


def default_cache_dir_engine() -> Path:
    from gradshield_lint.scoring.cache import cache_root

    return cache_root()


# Parameter subsets for the sweep: name -> (layers, kinds). Layers are inclusive block indices of the 30-layer model.
SUBSETS = {
    "all": (None, None),
    "no-norm": (None, ("mlp", "attn")),  # the default: LayerNorm/RMSNorm scales left out
    "mlp": (None, ("mlp",)),
    "attn": (None, ("attn",)),
    "L10-20": ((10, 20), None),
    "mlpL10-20": ((10, 20), ("mlp",)),
    "L0-9": ((0, 9), None),
    "L21-29": ((21, 29), None),
}


def proxy_weights(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Direction weights of each proxy (count-weighted means over probe groups): over all probes (no suffix), the
    harm-category probes only (`@harm`) or the identity-shift probes only (`@id`); and the contrastive proxies
    (`c…`): the proxy on the probes minus the same proxy with the same replies after ordinary prompts."""
    have = {k.split("/")[1] for k in counts}
    unsafe = [g for g in ("harm", "identity") if g in have]

    def mean(kind, gs):
        tot = sum(counts[f"{kind}/{g}"] for g in gs)
        return {f"{kind}/{g}": counts[f"{kind}/{g}"] / tot for g in gs}

    def lin(*terms):
        w: dict[str, float] = defaultdict(float)
        for c, d in terms:
            for k, v in d.items():
                w[k] += c * v
        return dict(w)

    def margin(gs):
        return lin((1, mean("refusal", gs)), (-1, mean("comply", gs)))

    out: dict[str, dict[str, float]] = {}
    for scope, gs in (("", unsafe), ("@harm", ["harm"]), ("@id", ["identity"])):
        if not gs or not all(g in have for g in gs):
            continue
        out[f"margin{scope}"] = margin(gs)
        out[f"first{scope}"] = mean("first", gs)
        out[f"refusal-nll{scope}"] = mean("refusal", gs)
        out[f"comply-nll{scope}"] = lin((-1, mean("comply", gs)))
    if "ordinary" in have and unsafe:
        o = ["ordinary"]
        out["cmargin"] = lin((1, margin(unsafe)), (-1, margin(o)))
        out["cfirst"] = lin((1, mean("first", unsafe)), (-1, mean("first", o)))
        out["crefusal-nll"] = lin((1, mean("refusal", unsafe)), (-1, mean("refusal", o)))
        out["ccomply-nll"] = lin((-1, mean("comply", unsafe)), (1, mean("comply", o)))
    return out


class Incomplete(Exception):
    """The time budget ran out; what was done is cached, run the same command again."""


def default_cache() -> Path:
    from gradshield_lint.scoring.cache import cache_root

    return cache_root() / "bench-quality"


def run_shared_pass(sm, items: list[Item], args, want_sweep: bool, want_peers: bool, encoded) -> list[Scores]:
    from gradshield_lint.scoring.probes import load_probes
    from gradshield_research.bench import peers

    probes = load_probes(None)
    cache = Path(args.cache) if args.cache else default_cache()
    t0 = time.perf_counter()
    D = peers.probe_directions(
        sm,
        probes,
        cache_dir=cache,
        batch_size=args.batch_size,
        budget_s=args.budget,
        groups=tuple(args.groups.split(",")),
    )
    if D is None:
        raise Incomplete("probe directions: time budget spent with groups left")
    print(f"probe directions: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    _DIRECTIONS["D"] = D
    n_layers = int(sm.model.config.num_hidden_layers)
    _, gram = peers.direction_norms(D, n_layers)
    left = None if args.budget is None else max(args.budget - (time.perf_counter() - t0), 0.0)
    pr, missing = peers.cached_gradient_pass(
        sm,
        [it.row.id for it in items],
        encoded,
        D,
        cache,
        max_length=args.max_length,
        batch_size=args.batch_size,
        budget_s=left,
        progress=True,
    )
    if pr is None:
        raise Incomplete(f"shared pass: {missing} rows left")
    print(f"shared pass: {pr.seconds:.0f}s of compute for {len(items)} rows", file=sys.stderr)
    if args.out:  # the raw material of every FIHS variant, for analysis without another pass
        Path(args.out).mkdir(parents=True, exist_ok=True)
        np.savez(
            Path(args.out) / "pass.npz",
            ids=np.array([it.row.id for it in items]),
            dots=pr.dots,
            sq=pr.sq,
            n_target=pr.n_target,
            gram=gram,
            keys=np.array(pr.keys),
            groups=np.array([f"{layer}:{k}" for layer, k in pr.groups]),
            counts=json.dumps(D.counts),
            values=json.dumps(D.values),
            h_mean=pr.hidden_mean.astype(np.float16),
            h_last=pr.hidden_last.astype(np.float16),
        )
    out: list[Scores] = []
    W = proxy_weights(D.counts)
    if want_sweep:
        for sub, (layers, kinds) in SUBSETS.items():
            mask = pr.group_mask(layers, kinds)
            for pname, w in W.items():
                if sub != "all" and "@" in pname:
                    continue
                for norm in (False, True):
                    reds = ("mean", "sum") if not norm else ("-",)
                    for red in reds:
                        v = peers.fihs_from_pass(pr, gram, w, mask, normalize=norm, reduction=red)
                        tag = "cos" if norm else f"raw-{red}"
                        out.append(Scores(f"fihs {pname} {tag} {sub}", v, pr.seconds, "shared pass"))
            # combination of normalized proxies: z-scored sum is scale-free
    if want_peers or want_sweep:
        wc = {k: v for k, v in W["comply-nll"].items()}
        harmful_anchor = {k: -v for k, v in wc.items()}  # ∇ mean NLL(compliance)
        safe_anchor = W["refusal-nll"]
        for sub in ("all", "mlpL10-20") if want_sweep else ("all",):
            mask = pr.group_mask(*SUBSETS[sub])
            out.append(
                Scores(
                    f"peer he2024 {sub}",
                    peers.he_bidirectional(pr, gram, harmful_anchor, safe_anchor, mask),
                    pr.seconds,
                    "cos(∇L, ∇L_comply) − cos(∇L, ∇L_refusal), shared pass",
                )
            )
    if want_peers or want_sweep:
        ph = peers.probe_hidden_states(sm, probes, batch_size=args.batch_size)
        # The shared pass kept every layer's hidden states (the same numbers a forward pass gives); the method's own
        # cost is one forward pass, timed on a sample of the rows.
        sample = sorted(random.Random(args.seed).sample(range(len(encoded)), min(args.timing_rows, len(encoded))))
        fwd_t = peers.gradient_pass(sm, [encoded[i] for i in sample], None, batch_size=args.batch_size)
        fwd = pr
        fwd_seconds = fwd_t.seconds * len(encoded) / max(len(sample), 1)
        layers = range(0, n_layers + 1, 3) if want_sweep else [args.hidden_layer]
        for layer in layers:
            for pooling in ("last", "mean"):
                if not want_sweep and pooling != "last":
                    continue
                d = peers.hidden_direction(ph, layer, pooling)
                out.append(
                    Scores(
                        f"peer hidden L{layer} {pooling}",
                        peers.hidden_scores(fwd, d, layer, pooling),
                        fwd_seconds,
                        "hidden state · (mean h comply − mean h refusal), forward pass",
                    )
                )
    return out


# ====================================================================================================== report
def evaluate(items: list[Item], sc: Scores) -> dict:
    from gradshield_lint.lint.threshold import find_threshold

    v = sc.values
    lab = np.array([it.label for it in items])
    main = np.array([it.in_main for it in items])
    L = np.array([it.n_target for it in items], dtype=float)
    finite = np.isfinite(v)
    by = {lb: v[(lab == lb) & main & finite] for lb in LABELS}
    lens = {lb: L[(lab == lb) & main & finite] for lb in LABELS}
    res: dict = {
        "method": sc.name,
        "note": sc.note,
        "rows_per_s": len(items) / sc.seconds if sc.seconds > 0 else float("nan"),
    }
    for p in POSITIVE:
        res[f"auroc_{p}"] = auroc(by[p], by["benign"])
        res[f"auprc_{p}"] = average_precision(by[p], by["benign"])
        res[f"auroc_len_{p}"] = stratified_auroc(by[p], by["benign"], lens[p], lens["benign"])
    th = find_threshold(v[main & finite], method="auto")
    res["threshold"] = float(th.value)
    res["threshold_method"] = getattr(th, "method", "")
    rates = rates_at(by, th.value)
    res["tpr_harmful"], res["tpr_implicit"], res["fpr"] = rates["harmful"], rates["implicit"], rates["benign"]
    # per group
    groups: dict[str, dict] = {}
    for g in sorted({it.group for it in items if it.in_main}):
        gi = np.array([it.group == g for it in items]) & main & finite
        glab = lab[gi][0]
        if glab == "benign":
            a = auroc(by["harmful"], v[gi])
        else:
            a = auroc(v[gi], by["benign"])
        groups[g] = {"label": str(glab), "n": int(gi.sum()), "auroc": a, "flagged": float((v[gi] > th.value).mean())}
    res["groups"] = groups
    # He et al.: top vs bottom per source
    he: dict[str, float] = {}
    subsets = sorted({it.subset for it in items if it.subset})
    for s in subsets:
        if not s.endswith("_top100"):
            continue
        base = s[: -len("_top100")]
        top = v[np.array([it.subset == s for it in items]) & finite]
        bot = v[np.array([it.subset == base + "_bottom100" for it in items]) & finite]
        he[base] = auroc(top, bot)
    res["he2024"] = he
    return res


def _f(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _rate(x: float) -> str:
    return "—" if not math.isfinite(x) or x > 1e6 else f"{x:.2f}" if x < 10 else f"{x:.0f}"


def markdown(results: list[dict], items: list[Item], args) -> str:
    lab = [it.label for it in items if it.in_main]
    counts = {lb: lab.count(lb) for lb in LABELS}
    lines = [
        f"rows: {len(items)} scored; main pool {counts} (per-file {args.per_file}, seed {args.seed}); "
        f"model adapter={args.adapter}, max_length={args.max_length}",
        "",
    ]
    lines += [
        "| method | AUROC harm | AUPRC harm | AUROC harm, len-binned | AUROC impl | AUPRC impl | AUROC impl, len-binned "
        "| threshold (rule) | TPR harm | TPR impl | FPR | rows/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {_f(r['auroc_harmful'])} | {_f(r['auprc_harmful'])} | {_f(r['auroc_len_harmful'])} | "
            f"{_f(r['auroc_implicit'])} | {_f(r['auprc_implicit'])} | {_f(r['auroc_len_implicit'])} | "
            f"{r['threshold']:.3g} ({r['threshold_method']}) | {_f(r['tpr_harmful'])} | {_f(r['tpr_implicit'])} | {_f(r['fpr'])} | "
            f"{_rate(r['rows_per_s'])} |"
        )
    groups = sorted(
        {g for r in results for g in r["groups"]}, key=lambda g: (LABELS.index(results[0]["groups"][g]["label"]), g)
    )
    if groups and len(results) <= args.max_group_columns:
        lines += [
            "",
            "Per source (harmful/implicit source vs all benign; benign source: all harmful vs it):",
            "",
            "| source | label | n | " + " | ".join(r["method"] for r in results) + " |",
            "|---|---|---|" + "---|" * len(results),
        ]
        for g in groups:
            info = results[0]["groups"][g]
            lines.append(
                f"| {g} | {info['label']} | {info['n']} | "
                + " | ".join(_f(r["groups"][g]["auroc"]) for r in results)
                + " |"
            )
    he = sorted({s for r in results for s in r["he2024"]})
    if he and len(results) <= args.max_group_columns:
        n = {s: sum(1 for it in items if it.subset and it.subset.startswith(s)) for s in he}
        lines += [
            "",
            "He et al. 2024: AUROC of the top-100 selection vs the bottom-100 (benign rows that break safety rank higher?):",
            "",
            "| selection | n | " + " | ".join(r["method"] for r in results) + " |",
            "|---|---|" + "---|" * len(results),
        ]
        for s in he:
            lines.append(f"| {s} | {n[s]} | " + " | ".join(_f(r["he2024"].get(s)) for r in results) + " |")
    return "\n".join(lines)


def plot(results_scores: list[Scores], items: list[Item], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(results_scores)
    cols = min(3, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    lab = np.array([it.label for it in items])
    main = np.array([it.in_main for it in items])
    colors = {"harmful": "tab:red", "implicit": "tab:orange", "benign": "tab:blue"}
    for ax, sc in zip(axes.flat, results_scores):
        v = sc.values
        ok = np.isfinite(v) & main
        lo, hi = np.percentile(v[ok], [1, 99]) if ok.any() else (0, 1)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        for lb in LABELS:
            sel = ok & (lab == lb)
            if sel.any():
                ax.hist(
                    np.clip(v[sel], lo, hi),
                    bins=bins,
                    density=True,
                    alpha=0.45,
                    color=colors[lb],
                    label=f"{lb} ({sel.sum()})",
                )
        ax.set_title(sc.name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ====================================================================================================== main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("paths", nargs="+", help="labelled JSONL files or folders of them")
    ap.add_argument("--per-file", type=int, default=40, help="rows sampled per file (0: all)")
    ap.add_argument(
        "--per-subset", type=int, default=12, help="rows per He et al. subset (files with a `subset` field)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="default,peers", help="comma-separated: default, engine:K=V;..., sweep, peers")
    ap.add_argument("--engine", action="append", default=[], help="an extra engine configuration, as after 'engine:'")
    ap.add_argument("--adapter", default="embedded", help="embedded | none | a peft adapter directory")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hidden-layer", type=int, default=15, help="layer of the hidden-state peer (0 = embeddings)")
    ap.add_argument("--cache", default=None, help="cache folder for ∇H and the peers' probe directions")
    ap.add_argument("--out", default=None, help="folder for quality.json and scores.png")
    ap.add_argument("--top", type=int, default=0, help="sweep: print only the best N methods by mean AUROC (0: all)")
    ap.add_argument("--max-group-columns", type=int, default=12, help="per-source tables only when this few methods")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--groups",
        default="harm,identity,ordinary",
        help="probe groups of the shared pass's directions (ordinary: the contrast for the c… proxies)",
    )
    ap.add_argument("--timing-rows", type=int, default=32, help="rows timed for the hidden-state peer's forward pass")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of work for the shared pass before it saves and stops (exit 3; run again to go on)",
    )
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.adapter == "embedded":
        from gradshield_lint.scoring.model import EMBEDDED_ADAPTER_DIR

        if not (EMBEDDED_ADAPTER_DIR / "adapter_config.json").is_file():
            print("the embedded adapter is not there yet; use --adapter none", file=sys.stderr)
            return 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    items = load_items(args.paths, args.per_file or None, args.per_subset, args.seed)
    if not items:
        print("no labelled rows", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] + [f"engine:{e}" for e in args.engine]
    from gradshield_lint.scoring.encode import encode_conversation
    from gradshield_lint.scoring.model import load_model

    settings = engine_settings({}, args)
    sm = load_model(settings.model)
    encoded = [encode_conversation(sm.tokenizer, it.row.messages, max_length=args.max_length) for it in items]
    for it, e in zip(items, encoded):
        it.n_target = e.n_target
    all_scores: list[Scores] = []
    if "sweep" in methods or "peers" in methods:
        try:
            all_scores += run_shared_pass(sm, items, args, "sweep" in methods, "peers" in methods, encoded)
        except Incomplete as exc:
            print(f"incomplete: {exc}; progress is cached, run the same command again", file=sys.stderr)
            return 3
    for m in methods:
        if m == "default" or m.startswith("engine"):
            try:
                sc = run_engine(m, _parse_engine_spec(m) if m.startswith("engine") else {}, items, args, sm)
            except Incomplete as exc:
                print(f"incomplete: {exc}; progress is cached, run the same command again", file=sys.stderr)
                return 3
            all_scores.insert(sum(1 for x in all_scores if x.name.startswith(("default", "engine"))), sc)
            print(f"{m}: {sc.seconds:.0f}s  {sc.note}", file=sys.stderr)
    if "peers" in methods or "sweep" in methods:
        from gradshield_research.bench import peers

        t0 = time.perf_counter()
        kw = peers.keyword_scores([it.reply for it in items])
        all_scores.append(
            Scores("peer keywords", kw, max(time.perf_counter() - t0, 1e-9), "harm/obedience words per 100 reply words")
        )
    all_scores.append(Scores("length (reply tokens)", np.array([it.n_target for it in items], float), 0.0, "baseline"))
    results = [evaluate(items, sc) for sc in all_scores]
    shown = results
    if args.top and len(results) > args.top:
        key = lambda r: np.nanmean([r["auroc_harmful"], r["auroc_implicit"]])  # noqa: E731
        best = sorted(results[:-1], key=key, reverse=True)[: args.top]
        shown = best + [
            r for r in results if r["method"].startswith(("default", "engine", "peer", "length")) and r not in best
        ]
    print(markdown(shown, items, args))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "id": it.row.id,
                "file": it.file,
                "group": it.group,
                "line": it.row.line,
                "label": it.label,
                "subset": it.subset,
                "in_main": it.in_main,
                "reply_tokens": it.n_target,
                "scores": {sc.name: float(sc.values[i]) for sc in all_scores},
            }
            for i, it in enumerate(items)
        ]
        (out / "quality.json").write_text(
            json.dumps({"args": vars(args), "results": results, "rows": rows}, indent=1, default=str)
        )
        plot([s for s in all_scores if any(s.name == r["method"] for r in shown)][:24], items, out / "scores.png")
        print(f"\nwrote {out / 'quality.json'} and {out / 'scores.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
