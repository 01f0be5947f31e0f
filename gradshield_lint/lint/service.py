"""The linter service: which rows are new, which are above the threshold, what goes in the baseline.

Data flows one way: rows (`io.rows`) -> scores (`scoring.engine.Engine`) -> threshold/baseline -> findings
(`LintResult`) -> `report/`. The CLI, the GitHub Action (through the CLI) and the Hub webhook app all call it:
`Linter(engine, config)` binds one engine and configuration, and its methods read the row shape, the threshold
settings and the report's explanation settings from that configuration. The functions below it are the same
service for callers that hold their own settings (benchmarks, the Ray engine).

The Engine is passed in, so this module never loads a model by itself and tests can hand it a tiny one. Git and
pre-commit plumbing lives in `io.gitrefs`, file globs in `io.files`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gradshield_lint.config import Config, ThresholdConfig
from gradshield_lint.errors import BaselineError, ConfigError, InputError
from gradshield_lint.io.gitrefs import rows_at_revision
from gradshield_lint.io.rows import Row, RowShape, iter_rows
from gradshield_lint.lint.baseline import (
    RESCORE_HINT,
    Baseline,
    check_compatible,
    diff_rows,
    make_baseline,
    modify_baseline,
    read_baseline,
    rebase,
    update_scores,
    upgrade_ids,
)
from gradshield_lint.lint.conformal import conformal_threshold, p_values, stated_rate
from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.lint.threshold import Criterion, ThresholdResult, find_threshold
from gradshield_lint.lint.verdict import Verdict, VerdictOptions, decide, rows_verdict

if TYPE_CHECKING:
    from gradshield_lint.lint.criteria import FinetuneCriterion
    from gradshield_lint.scoring.engine import Engine, ScoredRow

# Without a baseline, the threshold for a check comes from a deterministic sample of the rows that already existed
# (the lowest row ids: a hash order, so effectively random): the cost stays bounded whatever the dataset's size.
REFERENCE_SAMPLE = 256
MIN_REFERENCE = 8
"""Fewer rows than this at the reference revision: no threshold can be found without a baseline."""
# threshold.method: threshold.py's methods, plus the conformal rule and the mixture test under its own name ("auto"
# here means conformal with a reference of accepted rows, the mixture test without; see `threshold_for`).
THRESHOLD_METHODS = ("auto", "conformal", "mixture", "gmm", "sigma", "fixed", "search")


def excerpt(row: Row, chars: int = 120) -> str:
    return excerpt_of(row, chars)[0]


def excerpt_of(row: Row, chars: int = 120) -> tuple[str, bool]:
    """The row's first assistant turn on one line, at most `chars` characters, and whether it was cut."""
    text = " ".join(next((m.content for m in row.messages if m.role == "assistant"), "").split())
    return text[:chars], len(text) > chars


def read_all(files: Sequence[str | Path], shape: RowShape | None) -> list[Row]:
    """Rows of all files; a row that appears twice (same content) is kept once, at its first place."""
    seen: set[str] = set()
    out: list[Row] = []
    for f in files:
        for row in iter_rows(f, shape):
            if row.id not in seen:
                seen.add(row.id)
                out.append(row)
    return out


def score(engine: Engine, rows: Sequence[Row]) -> list[ScoredRow]:
    """Each row with its score, in the order of `rows`."""
    return engine.score_rows(rows)


def fihs_of(scored: Sequence[ScoredRow]) -> list[float]:
    return [s.score.fihs for s in scored]


RAW_MEAN = "reference_raw_mean"
"""`threshold.details` key: the accepted rows' mean raw FIHS when the threshold was set (for the verdict's ΔH)."""


def with_raw_mean(threshold: ThresholdResult, scored: Sequence[ScoredRow]) -> ThresholdResult:
    """The threshold with the accepted rows' mean raw FIHS recorded beside how it was found."""
    raw = np.asarray([s.score.raw for s in scored], dtype=np.float64)
    raw = raw[np.isfinite(raw)]
    if not raw.size:
        return threshold
    return replace(threshold, details={**threshold.details, RAW_MEAN: float(raw.mean())})


def threshold_for(
    scores: Sequence[float],
    cfg_threshold: ThresholdConfig,
    criterion: Criterion | None = None,
    *,
    reference: bool = False,
) -> ThresholdResult:
    """The threshold for `scores` by the configured method; a `criterion` (e.g. FinetuneCriterion) turns it into a
    binary search with that acceptance test.

    `reference`: the scores are those of accepted rows (a baseline being created or re-thresholded, the rows at a
    `--diff-base` revision), so the default (`auto`) and `conformal` use the conformal rule at `threshold.fpr`
    (conformal.py); otherwise (`scan`, `filter`) `auto` is GradShield's mixture test and `conformal` is refused."""
    t = cfg_threshold
    if t.method == "fixed" and t.value is None:
        raise ConfigError("threshold.method is 'fixed' but threshold.value is not set")
    if criterion is not None:
        return find_threshold(np.asarray(scores, dtype=np.float64), method="search", criterion=criterion)
    if t.criterion == "finetune":
        raise ConfigError("threshold.criterion 'finetune' needs the rows: use it with `baseline create` or `scan`")
    method = t.method
    if method in ("auto", "conformal"):
        if reference:
            return conformal_threshold(scores, float(t.fpr))
        if method == "conformal":
            raise ConfigError(
                "threshold.method 'conformal' needs a reference of accepted rows (a baseline, or --diff-base); "
                "scan and filter have none: use auto or mixture there"
            )
    if method in ("auto", "mixture"):
        method = "auto"  # threshold.py's "auto" is the mixture test
    return find_threshold(
        np.asarray(scores, dtype=np.float64), method=method, k=t.k, lrt_margin=t.lrt_margin, value=t.value
    )


def finetune_criterion(engine: Engine, rows: Sequence[Row]) -> FinetuneCriterion:
    """GradShield's acceptance test for a threshold: a brief LoRA finetune on the kept rows must not raise H."""
    from gradshield_lint.lint.criteria import FinetuneCriterion

    convs = [[{"role": m.role, "content": m.content} for m in r.messages] for r in rows]
    return FinetuneCriterion(engine.scoring_model, engine.probes, convs, engine.settings.proxy)


def _criterion_for(engine: Engine, rows: Sequence[Row], cfg_threshold: ThresholdConfig) -> FinetuneCriterion | None:
    return finetune_criterion(engine, rows) if cfg_threshold.criterion == "finetune" else None


def _finding(s: ScoredRow, threshold: float, reason: str | None = None, p_value: float | None = None) -> Finding:
    text, cut = excerpt_of(s.row)
    return Finding(
        id=s.row.id,
        file=s.row.source,
        line=s.row.line,
        fihs=float(s.score.fihs),
        threshold=float(threshold),
        excerpt=text,
        truncated=s.score.truncated,
        accepted=reason is not None,
        reason=reason,
        p_value=p_value,
        windows=s.score.windows,
        excerpt_truncated=cut,
    )


def judge(
    scored: Sequence[ScoredRow],
    threshold: ThresholdResult,
    accepted: dict[str, str],
    *,
    rows_total: int,
    engine: Engine | None = None,
    reference: Sequence[float] | None = None,
    explain: bool = False,
    explain_window: int | None = None,
    verdict: VerdictOptions | None = None,
) -> LintResult:
    """The verdict on the scored rows and its findings; rows a reviewer accepted go to `accepted` instead.

    `reference`: the accepted rows' scores (the baseline's), against which each row gets its conformal p-value.
    With a reference and `verdict.mode` "pull-request" (the default of every check) the rows are tested as one
    change (lint/verdict.py) and the findings are the rows it names; otherwise (`verdict.mode: rows`, or `scan`
    and `filter`, which have no reference) each row above the threshold is a finding.
    `explain`: ask the engine why each finding scored high (explain.py: one backward and two forward passes per
    finding, findings only)."""
    findings, acc = [], []
    scores = fihs_of(scored)
    ref = None if reference is None else np.asarray(list(reference), dtype=np.float64)
    pv = p_values(ref, scores) if ref is not None else None
    flagged_rows: list[Row] = []
    opts = verdict or VerdictOptions()
    the_verdict: Verdict | None
    judged = [i for i, s in enumerate(scored) if s.row.id not in accepted]
    raw = [scored[i].score.raw for i in judged]
    raw_mean = threshold.details.get(RAW_MEAN)
    for i, s in enumerate(scored):
        if s.score.fihs > threshold.value and s.row.id in accepted:
            acc.append(_finding(s, threshold.value, accepted[s.row.id], _p(pv, i)))
    if ref is not None and opts.mode == "pull-request":
        decision = decide(ref, [scores[i] for i in judged], opts, raw=raw, reference_raw_mean=raw_mean)
        the_verdict = decision.verdict
        row_p = decision.p_values
        for k in decision.named:
            s = scored[judged[k]]
            findings.append(_finding(s, decision.cut, p_value=float(row_p[k])))
            flagged_rows.append(s.row)
    else:
        for i in judged:
            s = scored[i]
            if s.score.fihs > threshold.value:
                findings.append(_finding(s, threshold.value, p_value=_p(pv, i)))
                flagged_rows.append(s.row)
        n_ref = 0 if ref is None else int(np.isfinite(ref).sum())
        ref_harm = None if raw_mean is None else len(judged) * float(raw_mean)
        harm = float(np.nansum(raw)) if raw else None
        the_verdict = (
            None  # scan and filter: no change to judge, only rows
            if verdict is None and ref is None
            else rows_verdict(len(findings), len(judged), n_ref, opts, harm=harm, harm_reference=ref_harm)
        )
    if explain and findings and engine is not None:
        reasons = engine.explain(flagged_rows, explain_window)
        findings = [replace(f, explanation=e) for f, e in zip(findings, reasons)]
    findings.sort(key=lambda f: f.fihs, reverse=True)
    fp = engine.fingerprint() if engine is not None else None
    return LintResult(
        threshold=threshold.value,
        threshold_method=f"{threshold.method}/{threshold.criterion}",
        rows_total=rows_total,
        rows_scored=len(scored),
        findings=findings,
        accepted=acc,
        scores=scores,
        model=str(fp.model or "") if fp else "",
        proxy=str(fp.proxy or "") if fp else "",
        probe_set=str(fp.probe_set or "") if fp else "",
        fpr=stated_rate(threshold),
        reference_rows=0 if ref is None else int(np.isfinite(ref).sum()),
        verdict=the_verdict,
    )


def _p(pv: np.ndarray | None, i: int) -> float | None:
    return float(pv[i]) if pv is not None else None


# ------------------------------------------------------------------------------------------------ baseline


def load_checked_baseline(path: Path, engine: Engine) -> Baseline:
    if not path.exists():
        raise BaselineError("no baseline here; create one with `gradshield-lint baseline create`", file=path)
    baseline = read_baseline(path)
    check_compatible(baseline, engine.fingerprint(), path)
    return baseline


def require_rows(rows: Sequence[Row], where: Sequence[str | Path], globs: Sequence[str] = ()) -> None:
    """InputError (exit 2) when there are no rows: a baseline of nothing would have no threshold and pass every
    check. `where`: the files or directories read (named in the message); `globs`: how directories were expanded."""
    if rows:
        return
    names = ", ".join(str(w) for w in where) or "."
    how = f" (files matching {', '.join(globs)})" if globs else ""
    raise InputError(f"no rows found in {names}{how}; nothing was written: a baseline needs the rows it vouches for")


def create_baseline(
    engine: Engine, rows: Sequence[Row], cfg_threshold: ThresholdConfig
) -> tuple[Baseline, list[ScoredRow]]:
    require_rows(rows, ["the rows given"])
    scored = score(engine, rows)
    threshold = threshold_for(
        fihs_of(scored), cfg_threshold, _criterion_for(engine, rows, cfg_threshold), reference=True
    )
    threshold = with_raw_mean(threshold, scored)
    b = make_baseline(engine.fingerprint(), {s.row.id: s.score.fihs for s in scored}, threshold, engine.recorded())
    return b, scored


def update_baseline(
    engine: Engine,
    baseline: Baseline,
    rows: Sequence[Row],
    cfg_threshold: ThresholdConfig,
    *,
    rescore: bool,
    rethreshold: bool = False,
) -> tuple[Baseline, int]:
    """Score the rows the baseline does not know (all of them with `rescore`) and drop rows that are gone. The
    stored threshold is kept unless `rethreshold` or `rescore`: two pull requests that each add rows then touch
    only their own score lines and merge cleanly. Returns the new baseline and how many rows were scored."""
    baseline = upgrade_ids(baseline, (r.id for r in rows))  # written back: old ids of rows present become full
    if rescore:
        new, _ = create_baseline(engine, rows, cfg_threshold)
        kept = {k: v for k, v in baseline.accepted.items() if k in new.scores}
        return Baseline(new.fingerprint, new.recorded, new.threshold, new.scores, kept), len(rows)
    check_compatible(baseline, engine.fingerprint())
    diff = diff_rows(baseline, (r.id for r in rows))
    by_id = {r.id: r for r in rows}
    scored = score(engine, [by_id[i] for i in diff.new])
    merged = update_scores(baseline, {s.row.id: s.score.fihs for s in scored}, set(diff.removed))
    if rethreshold:
        if cfg_threshold.criterion == "finetune":
            raise ConfigError("--rethreshold with the finetune criterion needs every row's text: use --rescore")
        fresh = threshold_for(list(merged.scores.values()), cfg_threshold, reference=True)
        if RAW_MEAN in baseline.threshold.details:  # the scores alone do not give it: keep the one recorded
            fresh = replace(fresh, details={**fresh.details, RAW_MEAN: baseline.threshold.details[RAW_MEAN]})
        merged = update_scores(merged, {}, None, threshold=fresh)
    return merged, len(scored)


def update_baseline_file(
    engine: Engine,
    path: Path,
    rows: Sequence[Row],
    cfg_threshold: ThresholdConfig,
    *,
    rescore: bool,
    rethreshold: bool = False,
    snapshot: Baseline | None = None,
) -> tuple[Baseline, int]:
    """`update_baseline` on the baseline file at `path`, safe against concurrent writers. The rows are scored
    without holding the baseline's lock (that takes minutes); then, under the lock, the file is read again and
    this update's changes are merged into what it holds now (`baseline.rebase`), so an `accept` or another update
    that ran meanwhile is kept. `snapshot`: the baseline as the caller already read it from `path` (read here
    otherwise). Returns what was written and how many rows were scored."""
    base = read_baseline(path) if snapshot is None else snapshot
    changed, n_scored = update_baseline(engine, base, rows, cfg_threshold, rescore=rescore, rethreshold=rethreshold)
    written = modify_baseline(path, lambda current: rebase(current, base, changed, path))
    return written, n_scored


# ------------------------------------------------------------------------------------------------ check


def judge_rows(
    engine: Engine,
    rows: Sequence[Row],
    cfg_threshold: ThresholdConfig,
    *,
    baseline: Baseline | None,
    known: Collection[str] = (),
    reference_rows: Sequence[Row] = (),
    too_few: Callable[[int], str],
    rows_total: int | None = None,
    explain: bool = False,
    explain_window: int | None = None,
    verdict: VerdictOptions | None = None,
) -> LintResult:
    """The verdict on `rows`: score those that are new (not in `known`, the rows of the revision they are judged
    against, and not in `baseline`) and judge them against the baseline's threshold, or, without a baseline,
    against a threshold found by the conformal rule on a bounded sample of `reference_rows` (the rows at the base
    revision). `too_few(n)`: the message when the sample has fewer than `MIN_REFERENCE` rows. `rows_total`: the rows
    the report says were checked (default: the new ones)."""
    reference: list[float] | None
    if baseline is not None:
        baseline = upgrade_ids(baseline, (r.id for r in rows))  # an old baseline's 16-digit ids
        new_ids = set(diff_rows(baseline, (r.id for r in rows)).new) - set(known)
        new = [r for r in rows if r.id in new_ids]
        threshold, accepted = baseline.threshold, baseline.accepted
        reference = list(baseline.scores.values())
    else:
        new = [r for r in rows if r.id not in set(known)]
        accepted, reference = {}, None
        if cfg_threshold.method == "fixed":
            threshold = threshold_for([], cfg_threshold)
        else:
            sample = sorted({r.id: r for r in reference_rows}.values(), key=lambda r: r.id)[:REFERENCE_SAMPLE]
            if len(sample) < MIN_REFERENCE:
                raise ConfigError(too_few(len(sample)))
            ref_scored = score(engine, sample)
            reference = fihs_of(ref_scored)
            threshold = with_raw_mean(threshold_for(reference, cfg_threshold, reference=True), ref_scored)
    scored = score(engine, new)
    result = judge(
        scored,
        threshold,
        accepted,
        rows_total=len(new) if rows_total is None else rows_total,
        engine=engine,
        reference=reference,
        explain=explain,
        explain_window=explain_window,
        verdict=verdict,
    )
    caveat = _truncation_caveat(baseline, engine, scored)
    if caveat and result.verdict is not None:
        result = replace(result, verdict=replace(result.verdict, caveat=caveat))
    return result


def _truncation_caveat(baseline: Baseline | None, engine: Engine, scored: Sequence[ScoredRow]) -> str | None:
    """A baseline scored with head truncation (every baseline written before windows, which records none) and a
    check that scored a long row in windows: that row's score is its worst window's, at least its head's, so
    against head-scored accepted rows long rows look higher than they are. Not in the fingerprint, which would
    refuse every such baseline although rows that fit score the same; said instead, with the remedy."""
    if baseline is None:
        return None
    theirs = str(baseline.recorded.extra.get("truncation") or "head")
    ours = engine.settings.truncation
    long_rows = sum(1 for s in scored if s.score.windows > 1)
    if theirs == ours or not long_rows:
        return None
    return (
        f"the baseline was scored with scoring.truncation: {theirs} and this check uses {ours}; "
        f"{long_rows} added row{'s' if long_rows != 1 else ''} longer than scoring.max_length scored differently "
        f"from how the accepted rows were; {RESCORE_HINT} to score both alike"
    )


def check(
    engine: Engine,
    files: Sequence[str | Path],
    shape: RowShape | None,
    cfg_threshold: ThresholdConfig,
    *,
    baseline_path: Path | None,
    diff_base: str | None = None,
    baseline: Baseline | None = None,
    baseline_label: str | None = None,
    explain: bool = False,
    explain_window: int | None = None,
    verdict: VerdictOptions | None = None,
) -> LintResult:
    """Score only the rows of `files` that are new (not in the baseline, and, with `diff_base`, not present at that
    revision either) and judge them against the baseline's threshold (without a baseline: a threshold found on a
    bounded sample of the rows present at `diff_base`).

    `baseline` is one already read (e.g. at the base revision, by `gate.open_gate`), named `baseline_label` in
    messages; it takes the place of `baseline_path`."""
    rows = read_all(files, shape)
    old_rows: list[Row] = []
    if diff_base:
        for f in files:
            old_rows.extend(rows_at_revision(Path(f), diff_base, shape))
    if baseline is not None:
        check_compatible(baseline, engine.fingerprint(), baseline_label)
    elif baseline_path is not None:
        baseline = load_checked_baseline(baseline_path, engine)
    elif not diff_base:
        raise ConfigError("a check needs a baseline (`gradshield-lint baseline create`) or --diff-base REF")

    def too_few(n: int) -> str:
        return (
            f"--diff-base {diff_base}: only {n} rows existed there, too few to find a threshold; "
            "create a baseline or set threshold.method: fixed"
        )

    return judge_rows(
        engine,
        rows,
        cfg_threshold,
        baseline=baseline,
        known={r.id for r in old_rows},
        reference_rows=old_rows,
        too_few=too_few,
        rows_total=len(rows),
        explain=explain,
        explain_window=explain_window,
        verdict=verdict,
    )


def scan(
    engine: Engine,
    files: Sequence[str | Path],
    shape: RowShape | None,
    cfg_threshold: ThresholdConfig,
    *,
    explain: bool = False,
) -> tuple[LintResult, list[ScoredRow]]:
    """Score every row and find the threshold on the spot: no baseline needed."""
    rows = read_all(files, shape)
    scored = score(engine, rows)
    threshold = threshold_for(fihs_of(scored), cfg_threshold, _criterion_for(engine, rows, cfg_threshold))
    return judge(scored, threshold, {}, rows_total=len(rows), engine=engine, explain=explain), scored


# ------------------------------------------------------------------------------------------------ the service


@dataclass
class Linter:
    """The linter service for one engine and configuration: the row shape, the threshold settings and whether
    findings are explained all come from `config`. The CLI and the webhook app call these methods."""

    engine: Engine
    config: Config

    @property
    def shape(self) -> RowShape | None:
        return self.config.rows.row_shape()

    def read(self, files: Sequence[str | Path]) -> list[Row]:
        return read_all(files, self.shape)

    def check(
        self,
        files: Sequence[str | Path],
        *,
        baseline_path: Path | None,
        diff_base: str | None = None,
        baseline: Baseline | None = None,
        baseline_label: str | None = None,
    ) -> LintResult:
        """`check`, with findings explained as `report.explain` says."""
        r = self.config.report
        return check(
            self.engine,
            files,
            self.shape,
            self.config.threshold,
            baseline_path=baseline_path,
            diff_base=diff_base,
            baseline=baseline,
            baseline_label=baseline_label,
            explain=r.explain,
            explain_window=r.span_tokens,
            verdict=self.config.verdict,
        )

    def judge_rows(
        self,
        rows: Sequence[Row],
        *,
        baseline: Baseline | None,
        known: Collection[str] = (),
        reference_rows: Sequence[Row] = (),
        too_few: Callable[[int], str],
        rows_total: int | None = None,
    ) -> LintResult:
        """`judge_rows`, with findings explained as `report.explain` says; a `baseline` is checked against the
        engine's fingerprint first."""
        if baseline is not None:
            check_compatible(baseline, self.engine.fingerprint())
        r = self.config.report
        return judge_rows(
            self.engine,
            rows,
            self.config.threshold,
            baseline=baseline,
            known=known,
            reference_rows=reference_rows,
            too_few=too_few,
            rows_total=rows_total,
            explain=r.explain,
            explain_window=r.span_tokens,
            verdict=self.config.verdict,
        )

    def scan(
        self, files: Sequence[str | Path], threshold: ThresholdConfig | None = None
    ) -> tuple[LintResult, list[ScoredRow]]:
        return scan(self.engine, files, self.shape, threshold or self.config.threshold)

    def create_baseline(
        self, rows: Sequence[Row], threshold: ThresholdConfig | None = None
    ) -> tuple[Baseline, list[ScoredRow]]:
        return create_baseline(self.engine, rows, threshold or self.config.threshold)

    def update_baseline_file(
        self,
        path: Path,
        rows: Sequence[Row],
        *,
        rescore: bool,
        rethreshold: bool = False,
        snapshot: Baseline | None = None,
    ) -> tuple[Baseline, int]:
        return update_baseline_file(
            self.engine, path, rows, self.config.threshold, rescore=rescore, rethreshold=rethreshold, snapshot=snapshot
        )


__all__ = [
    "Linter",
    "MIN_REFERENCE",
    "REFERENCE_SAMPLE",
    "THRESHOLD_METHODS",
    "check",
    "create_baseline",
    "excerpt",
    "finetune_criterion",
    "judge",
    "judge_rows",
    "load_checked_baseline",
    "read_all",
    "require_rows",
    "scan",
    "score",
    "threshold_for",
    "update_baseline",
    "update_baseline_file",
]
