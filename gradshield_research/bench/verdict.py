"""The verdict a user gets (issue 11): a baseline of benign rows, then a pull request that adds rows; what does the
check flag?

Exactly what a user does, through the CLI's own code (`lint.create_baseline` + `write_baseline` = `baseline
create`, `lint.check` = `check`, with the default configuration: `config_from_dict({})`) in one process, so the
model loads once. The rows are real ones nobody here tuned to (../shared/eval-dev/, read by path; the bench writes
the repository it checks into a temporary folder that is deleted afterwards):

- the baseline: `--baseline N` benign rows drawn evenly from the benign sources (`--benign`);
- the pull request adds `--per-file N` other rows of every benign source, and of every harmful and implicit file.

It prints, per source, the share of added rows the check flags (the verdict: default threshold, the conformal rule at
`threshold.fpr`; and what p ≤ 0.02 and p ≤ 0.05 would flag, read from the same p-values), the threshold and how it
was found, and, threshold-free, the true-positive rate at 1 %, 2 % and 5 % false alarms over all benign rows scored
(the baseline's and the added ones) — so ranking and calibration can be told apart. Peers in the same run, at the
same false-alarm rates: He et al. 2024 (gradient similarity to harmful minus safe anchors), the hidden-state
projection (layer 15, last token, on the compliance − refusal direction of the probes), keywords (`gradshield_research.bench.peers`).

Nothing is tuned here: the configuration is the schema's defaults, chosen on other data (bench/QUALITY.md) before
this bench ran; every source file is held out whole.

    flock /tmp/gs-heavy.lock python -m gradshield_research.bench.verdict ../shared/eval-dev/ --per-file 10 --baseline 100 [--peers he,hidden,keywords]

Cost: the default scoring (per-sample hooks, ~0.7 rows/s on 2 CPU cores) over baseline + added rows, plus, for the
He et al. peer, a second gradient pass over every row; the hidden-state peer is one forward pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

BENIGN_DEFAULT = (
    "benign_alpaca_sample300",
    "benign_gsm8k_train_sample300",
    "benign_agnews_test_sample300",
    "benign_arc_challenge_train_sample300",
    "benign_refusal_direction_alpaca_prompts_chat_responses_sample300",
    "benign_far_saferlhf100",
    "refusal_safety_tuned_llamas_all",
)
RATES = (0.01, 0.02, 0.05)


def labelled_records(path: Path) -> list[tuple[object, dict]]:
    from gradshield_research.bench import labelled_rows

    return [
        (r, rec)
        for r, rec in labelled_rows(path)
        if rec.get("label") in ("harmful", "implicit", "benign") and any(m.role == "assistant" for m in r.messages)
    ]


def draw(folder: Path, benign: Sequence[str], per_file: int, n_baseline: int, seed: int):
    """(baseline rows, added rows as (row, label, source)), disjoint, a deterministic sample per file."""
    files = sorted(folder.glob("*.jsonl"))
    base, added = [], []
    per_source = math.ceil(n_baseline / max(len(benign), 1))
    for f in files:
        stem = f.stem
        is_benign = stem in benign
        if not is_benign and not stem.startswith(("harmful_", "implicit_")):
            continue
        recs = labelled_records(f)
        if not recs:
            continue
        rnd = random.Random(f"{seed}:{stem}")
        order = rnd.sample(range(len(recs)), len(recs))
        if is_benign:
            base += [recs[i][0] for i in order[:per_source]]
            order = order[per_source:]
        for i in order[:per_file]:
            r, rec = recs[i]
            added.append((r, rec["label"], stem))
    missing = set(benign) - {f.stem for f in files}
    if missing:
        raise SystemExit(f"benign sources not found in {folder}: {', '.join(sorted(missing))}")
    rnd = random.Random(seed)
    rnd.shuffle(base)
    return base[:n_baseline], added


def write_rows(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(
                json.dumps(
                    {"messages": [{"role": m.role, "content": m.content} for m in r.messages]}, ensure_ascii=False
                )
                + "\n"
            )


def tpr_at(pos: np.ndarray, neg: np.ndarray, rate: float) -> float:
    """Share of `pos` above the threshold that flags at most `rate` of `neg` (flagged: score > threshold)."""
    if not len(pos) or not len(neg):
        return math.nan
    k = math.floor(rate * len(neg) + 1e-9)  # false alarms allowed
    t = np.sort(neg)[::-1][min(k, len(neg) - 1)] if k < len(neg) else -np.inf
    return float((pos > t).mean())


def peer_scores(sm, rows, which: Sequence[str], batch_size: int, cache: Path) -> dict[str, np.ndarray]:
    from gradshield_lint.scoring.encode import encode_conversation
    from gradshield_lint.scoring.probes import load_probes
    from gradshield_research.bench import peers

    out: dict[str, np.ndarray] = {}
    replies = ["\n".join(m.content for m in r.messages if m.role == "assistant") for r in rows]
    if "keywords" in which:
        out["keywords"] = peers.keyword_scores(replies)
    if not {"he", "hidden"} & set(which):
        return out
    probes = load_probes(None)
    encoded = [encode_conversation(sm.tokenizer, r.messages, max_length=512) for r in rows]
    if "hidden" in which:
        t0 = time.perf_counter()
        d = peers.hidden_direction(peers.probe_hidden_states(sm, probes, batch_size=batch_size), 15, "last")
        fwd = peers.gradient_pass(sm, encoded, None, batch_size=batch_size)
        out["hidden-state L15"] = peers.hidden_scores(fwd, d, 15, "last")
        print(f"hidden-state peer: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    if "he" in which:
        t0 = time.perf_counter()
        D = peers.probe_directions(
            sm, probes, cache_dir=cache, batch_size=batch_size, groups=("harm", "identity"), kinds=("refusal", "comply")
        )
        _, gram = peers.direction_norms(D, int(sm.model.config.num_hidden_layers))
        pr, _ = peers.cached_gradient_pass(
            sm, [r.id for r in rows], encoded, D, cache, max_length=512, batch_size=batch_size
        )
        groups = [g for g in ("harm", "identity") if f"comply/{g}" in D.counts]

        def mean(kind):
            tot = sum(D.counts[f"{kind}/{g}"] for g in groups)
            return {f"{kind}/{g}": D.counts[f"{kind}/{g}"] / tot for g in groups}

        mask = pr.group_mask(None, None)
        out["He et al. 2024"] = peers.he_bidirectional(pr, gram, mean("comply"), mean("refusal"), mask)
        print(f"He et al. peer: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return out


def adapter_folder(value: str) -> Path:
    """`--adapter`'s type: the folder made absolute (a relative `model.adapter` would be read against the
    configuration's root, a temporary folder in bench/verdict.py), and refused at parse time, with exit 2, unless it
    holds a peft adapter, so that a wrong path costs no model load."""
    folder = Path(value).resolve()
    if not (folder / "adapter_config.json").is_file():
        raise argparse.ArgumentTypeError(f"{value}: not a peft adapter directory (no adapter_config.json)")
    return folder


def candidate_overrides(adapter: Path | None) -> dict:
    """The configuration overrides of a bench run: none (the defaults, exactly), or only `model.adapter`, so that a
    candidate adapter is measured on the same code and settings as the shipped one."""
    return {"model": {"adapter": str(adapter)}} if adapter else {}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="../shared/eval-dev/")
    ap.add_argument("--per-file", type=int, default=10, help="rows added per source file")
    ap.add_argument("--baseline", type=int, default=100, help="benign rows in the baseline")
    ap.add_argument("--benign", default=",".join(BENIGN_DEFAULT), help="benign source files (stems), comma-separated")
    ap.add_argument("--peers", default="he,hidden,keywords", help="peers to run: he, hidden, keywords (empty: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, help="write the per-row scores and verdicts as JSON here")
    ap.add_argument(
        "--adapter",
        type=adapter_folder,
        help="model.adapter for this run (a peft directory), to measure a candidate adapter before it ships; "
        "the default configuration otherwise",
    )
    args = ap.parse_args(argv)

    from gradshield_lint.config import config_from_dict
    from gradshield_lint.lint.baseline import read_baseline, write_baseline
    from gradshield_lint.lint.conformal import describe, p_values
    from gradshield_lint.lint.service import check, create_baseline, read_all
    from gradshield_lint.scoring.engine import Engine, settings_from_config
    from gradshield_research.bench import quality

    benign = tuple(s for s in args.benign.split(",") if s)
    base, added = draw(Path(args.folder), benign, args.per_file, args.baseline, args.seed)
    base_ids = {r.id for r in base}
    added = [a for a in added if a[0].id not in base_ids]
    print(f"baseline: {len(base)} benign rows; pull request adds {len(added)} rows", file=sys.stderr, flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gs-verdict-") as tmp:
        root = Path(tmp)
        cfg = config_from_dict(candidate_overrides(args.adapter), root=root)
        engine = Engine(settings_from_config(cfg))
        data = root / "data" / "train.jsonl"
        data.parent.mkdir()
        # `baseline create`
        write_rows(data, base)
        t0 = time.perf_counter()
        b, _ = create_baseline(engine, read_all([data], cfg.rows.row_shape()), cfg.threshold)
        write_baseline(cfg.baseline_path, b)
        t_base = time.perf_counter() - t0
        # the pull request: the same file with rows added, then `check`
        rnd = random.Random(args.seed)
        pr_rows = base + [a[0] for a in added]
        rnd.shuffle(pr_rows)
        write_rows(data, pr_rows)
        t0 = time.perf_counter()
        result = check(engine, [data], cfg.rows.row_shape(), cfg.threshold, baseline_path=cfg.baseline_path)
        t_check = time.perf_counter() - t0
        stored = read_baseline(cfg.baseline_path)
        # lint.check scores the new rows in file order: result.scores[i] belongs to the i-th new row of the file
        new_rows = [r for r in read_all([data], cfg.rows.row_shape()) if r.id not in stored.scores]
        assert len(new_rows) == len(result.scores)
        score_of = dict(zip((r.id for r in new_rows), result.scores))
        flagged = {f.id for f in result.findings}
        p_of = dict(zip(score_of, p_values(list(stored.scores.values()), list(score_of.values()))))
        sm = engine.scoring_model
        print(f"check done: {len(flagged)} findings in {t_check:.0f}s", file=sys.stderr, flush=True)
        try:
            peer = peer_scores(
                sm,
                base + [a[0] for a in added],
                [p for p in args.peers.split(",") if p],
                args.batch_size,
                quality.default_cache(),
            )
        except Exception as exc:  # noqa: BLE001 - the verdict above is what this bench is for: report it even if a peer fails
            print(f"peers failed: {exc!r}", file=sys.stderr)
            peer = {}
    t_all = time.perf_counter() - t_start

    th = stored.threshold
    label_of = {r.id: lab for r, lab, _ in added}
    lines = [
        f"# `gradshield_research.bench.verdict`: {len(base)} benign rows in the baseline, {len(added)} rows added "
        f"(--per-file {args.per_file}, seed {args.seed}); "
        + (f"default configuration with model.adapter {args.adapter}" if args.adapter else "default configuration"),
        "",
        f"Threshold: {th.value:.4g}, {describe(th)} (found by `baseline create` on the baseline's rows; `check` only compares).",
        f"Time: baseline create {t_base:.0f}s, check {t_check:.0f}s ({len(new_rows)} rows scored), whole run {t_all:.0f}s.",
        "",
        "## Verdict per source (share of the added rows the check flags)",
        "",
        f"| source | label | rows | flagged (default, p ≤ {cfg.threshold.fpr:g}) | p ≤ 0.02 | p ≤ 0.05 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by_src: dict[str, list[str]] = defaultdict(list)
    for r, _, src in added:
        by_src[src].append(r.id)

    def share(ids, pred):
        return f"{sum(map(pred, ids))}/{len(ids)} ({100 * sum(map(pred, ids)) / max(len(ids), 1):.0f} %)"

    order = sorted(by_src, key=lambda s: ({"harmful": 0, "implicit": 1, "benign": 2}[label_of[by_src[s][0]]], s))
    for src in order:
        ids = by_src[src]
        lines.append(
            f"| {src} | {label_of[ids[0]]} | {len(ids)} | {share(ids, flagged.__contains__)} | "
            f"{share(ids, lambda i: p_of[i] <= 0.02)} | {share(ids, lambda i: p_of[i] <= 0.05)} |"
        )
    for lab in ("harmful", "implicit", "benign"):
        ids = [i for i in label_of if label_of[i] == lab]
        lines.append(
            f"| **all {lab}** | {lab} | {len(ids)} | {share(ids, flagged.__contains__)} | "
            f"{share(ids, lambda i: p_of[i] <= 0.02)} | {share(ids, lambda i: p_of[i] <= 0.05)} |"
        )
    # threshold-free: every benign row scored (baseline + added) as the negatives
    rows_all = base + [a[0] for a in added]
    lab_all = np.array(["benign"] * len(base) + [a[1] for a in added])
    methods = {"FIHS (default)": np.array([stored.scores.get(r.id, score_of.get(r.id, math.nan)) for r in rows_all])}
    methods.update(peer)
    lines += [
        "",
        "## Threshold-free: true-positive rate at a false-alarm rate (negatives: all "
        f"{int((lab_all == 'benign').sum())} benign rows)",
        "",
        "| method | "
        + " | ".join(f"{lab} @ {100 * a:g} %" for lab in ("harmful", "implicit") for a in RATES)
        + " | AUROC harmful | AUROC implicit |",
        "|---|" + "---:|" * (2 * len(RATES) + 2),
    ]
    for name, v in methods.items():
        neg = v[lab_all == "benign"]
        cells = [f"{100 * tpr_at(v[lab_all == lab], neg, a):.0f} %" for lab in ("harmful", "implicit") for a in RATES]
        cells += [f"{quality.auroc(v[lab_all == lab], neg):.3f}" for lab in ("harmful", "implicit")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "threshold": {"value": th.value, "method": th.method, "details": th.details},
                    "rows": [
                        {
                            "id": r.id,
                            "label": lab,
                            "source": src,
                            "fihs": score_of[r.id],
                            "p_value": float(p_of[r.id]),
                            "flagged": r.id in flagged,
                        }
                        for r, lab, src in added
                    ],
                    "baseline": {r.id: stored.scores[r.id] for r in base},
                    "peers": {k: [float(x) for x in v] for k, v in peer.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
