"""The linter: which rows are new, which are above the threshold, what goes in the baseline.

Data flows one way: rows (rows.py) -> scores (Engine) -> threshold/baseline -> findings (LintResult) -> report/.
The Engine is passed in, so this module never loads a model by itself and tests can hand it a tiny one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gradshield_lint.lint.baseline import (
    Baseline,
    Fingerprint,
    Recorded,
    check_compatible,
    diff_rows,
    make_baseline,
    modify_baseline,
    read_baseline,
    rebase,
    update_scores,
)
from gradshield_lint.lint.conformal import DEFAULT_FPR, conformal_threshold, p_values, stated_rate
from gradshield_lint.errors import BaselineError, ConfigError, InputError
from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.io.rows import Row, RowShape, iter_rows
from gradshield_lint.lint.threshold import ThresholdResult, find_threshold

# Without a baseline, the threshold for a check comes from a deterministic sample of the rows that already existed
# (the lowest row ids: a hash order, so effectively random): the cost stays bounded whatever the dataset's size.
REFERENCE_SAMPLE = 256
# threshold.method: threshold.py's methods, plus the conformal rule and the mixture test under its own name ("auto"
# here means conformal with a reference of accepted rows, the mixture test without; see `threshold_for`).
THRESHOLD_METHODS = ("auto", "conformal", "mixture", "gmm", "sigma", "fixed", "search")


@dataclass
class ScoredSet:
    rows: list[Row]
    scores: list[float]
    truncated: list[bool]


def excerpt(row: Row, chars: int = 120) -> str:
    text = next((m.content for m in row.messages if m.role == "assistant"), "")
    return " ".join(text.split())[:chars]


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


def score(engine, rows: Sequence[Row]) -> ScoredSet:
    scored = engine.score_rows(rows)
    return ScoredSet(list(rows), [s.score.fihs for s in scored], [s.score.truncated for s in scored])


def fingerprint_of(engine) -> Fingerprint:
    return Fingerprint.from_dict(engine.fingerprint())


def recorded_of(engine) -> Recorded:
    return Recorded.from_dict(engine.recorded())


def threshold_for(scores: Sequence[float], cfg_threshold, criterion=None, *, reference: bool = False) -> ThresholdResult:
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
            return conformal_threshold(scores, float(getattr(t, "fpr", DEFAULT_FPR)))
        if method == "conformal":
            raise ConfigError(
                "threshold.method 'conformal' needs a reference of accepted rows (a baseline, or --diff-base); "
                "scan and filter have none: use auto or mixture there"
            )
    if method in ("auto", "mixture"):
        method = "auto"  # threshold.py's "auto" is the mixture test
    return find_threshold(np.asarray(scores, dtype=np.float64), method=method, k=t.k, lrt_margin=t.lrt_margin, value=t.value)


def finetune_criterion(engine, rows: Sequence[Row]):
    """GradShield's acceptance test for a threshold: a brief LoRA finetune on the kept rows must not raise H."""
    from gradshield_lint.lint.criteria import FinetuneCriterion

    convs = [[{"role": m.role, "content": m.content} for m in r.messages] for r in rows]
    return FinetuneCriterion(engine.scoring_model, engine.probes, convs, engine.settings.proxy)


def _criterion_for(engine, rows: Sequence[Row], cfg_threshold):
    return finetune_criterion(engine, rows) if cfg_threshold.criterion == "finetune" else None


def _finding(row: Row, fihs: float, threshold: float, truncated: bool, reason: str | None = None,
             p_value: float | None = None) -> Finding:
    return Finding(
        id=row.id, file=row.source, line=row.line, fihs=float(fihs), threshold=float(threshold),
        excerpt=excerpt(row), truncated=truncated, accepted=reason is not None, reason=reason, p_value=p_value,
    )


def judge(
    scored: ScoredSet,
    threshold: ThresholdResult,
    accepted: dict[str, str],
    *,
    rows_total: int,
    engine=None,
    reference: Sequence[float] | None = None,
    explain: bool = False,
    explain_window: int | None = None,
) -> LintResult:
    """Findings: scored rows above the threshold; those a reviewer accepted go to `accepted` instead.

    `reference`: the accepted rows' scores (the baseline's), against which each finding gets its conformal p-value.
    `explain`: ask the engine why each finding scored high (explain.py: one backward and two forward passes per
    finding, findings only)."""
    findings, acc = [], []
    ref = None if reference is None else np.asarray(list(reference), dtype=np.float64)
    pv = p_values(ref, scored.scores) if ref is not None else None
    flagged_rows: list[Row] = []
    for i, (row, s, tr) in enumerate(zip(scored.rows, scored.scores, scored.truncated)):
        if s > threshold.value:
            p = float(pv[i]) if pv is not None else None
            if row.id in accepted:
                acc.append(_finding(row, s, threshold.value, tr, accepted[row.id], p))
            else:
                findings.append(_finding(row, s, threshold.value, tr, p_value=p))
                flagged_rows.append(row)
    if explain and findings and engine is not None and hasattr(engine, "explain"):
        reasons = engine.explain(flagged_rows, explain_window)
        findings = [replace(f, explanation=e) for f, e in zip(findings, reasons)]
    findings.sort(key=lambda f: f.fihs, reverse=True)
    fp = engine.fingerprint() if engine is not None else {}
    return LintResult(
        threshold=threshold.value,
        threshold_method=f"{threshold.method}/{threshold.criterion}",
        rows_total=rows_total,
        rows_scored=len(scored.rows),
        findings=findings,
        accepted=acc,
        scores=list(scored.scores),
        model=str(fp.get("model", "")),
        proxy=str(fp.get("proxy", "")),
        probe_set=str(fp.get("probe_set", "")),
        fpr=stated_rate(threshold),
        reference_rows=0 if ref is None else int(np.isfinite(ref).sum()),
    )


# ------------------------------------------------------------------------------------------------ baseline


def load_checked_baseline(path: Path, engine) -> Baseline:
    if not path.exists():
        raise BaselineError("no baseline here; create one with `gradshield-lint baseline create`", file=path)
    baseline = read_baseline(path)
    check_compatible(baseline, fingerprint_of(engine), path)
    return baseline


def require_rows(rows: Sequence[Row], where: Sequence[str | Path], globs: Sequence[str] = ()) -> None:
    """InputError (exit 2) when there are no rows: a baseline of nothing would have no threshold and pass every
    check. `where`: the files or directories read (named in the message); `globs`: how directories were expanded."""
    if rows:
        return
    names = ", ".join(str(w) for w in where) or "."
    how = f" (files matching {', '.join(globs)})" if globs else ""
    raise InputError(f"no rows found in {names}{how}; nothing was written: a baseline needs the rows it vouches for")


def create_baseline(engine, rows: Sequence[Row], cfg_threshold) -> tuple[Baseline, ScoredSet]:
    require_rows(rows, ["the rows given"])
    scored = score(engine, rows)
    threshold = threshold_for(scored.scores, cfg_threshold, _criterion_for(engine, scored.rows, cfg_threshold), reference=True)
    b = make_baseline(
        fingerprint_of(engine), {r.id: s for r, s in zip(scored.rows, scored.scores)}, threshold, recorded_of(engine)
    )
    return b, scored


def update_baseline(
    engine, baseline: Baseline, rows: Sequence[Row], cfg_threshold, *, rescore: bool, rethreshold: bool = False
) -> tuple[Baseline, int]:
    """Score the rows the baseline does not know (all of them with `rescore`) and drop rows that are gone. The
    stored threshold is kept unless `rethreshold` or `rescore`: two pull requests that each add rows then touch
    only their own score lines and merge cleanly. Returns the new baseline and how many rows were scored."""
    if rescore:
        new, _ = create_baseline(engine, rows, cfg_threshold)
        kept = {k: v for k, v in baseline.accepted.items() if k in new.scores}
        return Baseline(new.fingerprint, new.recorded, new.threshold, new.scores, kept), len(rows)
    check_compatible(baseline, fingerprint_of(engine))
    diff = diff_rows(baseline, (r.id for r in rows))
    by_id = {r.id: r for r in rows}
    scored = score(engine, [by_id[i] for i in diff.new])
    merged = update_scores(baseline, {r.id: s for r, s in zip(scored.rows, scored.scores)}, set(diff.removed))
    if rethreshold:
        if cfg_threshold.criterion == "finetune":
            raise ConfigError("--rethreshold with the finetune criterion needs every row's text: use --rescore")
        merged = update_scores(merged, {}, None, threshold=threshold_for(list(merged.scores.values()), cfg_threshold, reference=True))
    return merged, len(scored.rows)


def update_baseline_file(
    engine,
    path: Path,
    rows: Sequence[Row],
    cfg_threshold,
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
    if snapshot is None:
        snapshot = read_baseline(path)
    changed, n_scored = update_baseline(engine, snapshot, rows, cfg_threshold, rescore=rescore, rethreshold=rethreshold)
    written = modify_baseline(path, lambda current: rebase(current, snapshot, changed, path))
    return written, n_scored


# ------------------------------------------------------------------------------------------------ check


def rows_at_revision(path: Path, ref: str, shape: RowShape | None) -> list[Row]:
    """The rows a file had at git revision `ref` (none if the file did not exist there)."""
    from gradshield_lint.io.gitrefs import Revision

    path = Path(path)
    rev = Revision.open(ref, path.parent if str(path.parent) else Path.cwd())
    rel = rev.rel(path)
    if rel is None:
        raise InputError("--diff-base needs the file to be inside the git repository", file=path)
    data = rev.read(rel) if rev.exists(rel) else None
    if data is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / path.name
        old.write_bytes(data)
        try:
            return [Row(r.id, r.messages, str(path), r.line) for r in iter_rows(old, shape)]
        except InputError:
            return []  # the old version was broken: every row of the new one counts as new


def check(
    engine,
    files: Sequence[Path],
    shape: RowShape | None,
    cfg_threshold,
    *,
    baseline_path: Path | None,
    diff_base: str | None = None,
    baseline: Baseline | None = None,
    baseline_label: str | None = None,
    explain: bool = False,
    explain_window: int | None = None,
) -> LintResult:
    """Score only the rows of `files` that are new (not in the baseline, and, with `diff_base`, not present at that
    revision either) and judge them against the baseline's threshold (without a baseline: a threshold found on a
    bounded sample of the rows present at `diff_base`).

    `baseline` is one already read (e.g. at the base revision, by `gate.open_gate`), named `baseline_label` in
    messages; it takes the place of `baseline_path`."""
    rows = read_all(files, shape)
    old_ids: set[str] = set()
    old_rows: list[Row] = []
    if diff_base:
        for f in files:
            old_rows.extend(rows_at_revision(Path(f), diff_base, shape))
        old_ids = {r.id for r in old_rows}
    if baseline is not None:
        check_compatible(baseline, fingerprint_of(engine), baseline_label)
    elif baseline_path is not None:
        baseline = load_checked_baseline(baseline_path, engine)
    if baseline is not None:
        diff = diff_rows(baseline, (r.id for r in rows))
        new_ids = set(diff.new) - old_ids
        new = [r for r in rows if r.id in new_ids]
        threshold, accepted = baseline.threshold, baseline.accepted
        reference: list[float] | None = list(baseline.scores.values())
    else:
        reference = None
        if not diff_base:
            raise ConfigError("a check needs a baseline (`gradshield-lint baseline create`) or --diff-base REF")
        new = [r for r in rows if r.id not in old_ids]
        accepted = {}
        if cfg_threshold.method == "fixed":
            threshold = threshold_for([], cfg_threshold)
        else:
            reference_rows = sorted({r.id: r for r in old_rows}.values(), key=lambda r: r.id)[:REFERENCE_SAMPLE]
            if len(reference_rows) < 8:
                raise ConfigError(
                    f"--diff-base {diff_base}: only {len(reference_rows)} rows existed there, too few to find a threshold; "
                    "create a baseline or set threshold.method: fixed"
                )
            reference = score(engine, reference_rows).scores
            threshold = threshold_for(reference, cfg_threshold, reference=True)
    scored = score(engine, new)
    return judge(scored, threshold, accepted, rows_total=len(rows), engine=engine, reference=reference, explain=explain,
                 explain_window=explain_window)


def scan(
    engine, files: Sequence[Path], shape: RowShape | None, cfg_threshold, *, explain: bool = False
) -> tuple[LintResult, ScoredSet]:
    """Score every row and find the threshold on the spot: no baseline needed."""
    rows = read_all(files, shape)
    scored = score(engine, rows)
    threshold = threshold_for(scored.scores, cfg_threshold, _criterion_for(engine, scored.rows, cfg_threshold))
    return judge(scored, threshold, {}, rows_total=len(rows), engine=engine, explain=explain), scored


def pre_commit_from_ref() -> str | None:
    """pre-commit sets PRE_COMMIT_FROM_REF for pre-push hooks: rows already pushed are not new."""
    ref = os.environ.get("PRE_COMMIT_FROM_REF") or os.environ.get("PRE_COMMIT_SOURCE")
    if ref and set(ref) != {"0"}:
        return ref
    return None


def _resolved(p: Path) -> Path:
    """`p.resolve()`, or the absolute path for a symlink loop (which `resolve` refuses): reading it says why."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def expand_files(
    paths: Iterable[str | Path], globs: Sequence[str], root: Path, skip: Iterable[Path] = ()
) -> list[str | Path]:
    """Files named on the command line; a directory expands by the configured globs; none: the globs under root.
    `hf://` paths stay strings (a Path would fold their `//`).

    Paths in `skip` (the baseline: it is JSON, and a hook's `files:` pattern passes it along with the data) are
    never read as datasets. A directory named in `paths` with no dataset file in it is an InputError: a check of
    nothing must not pass.
    """
    from gradshield_lint.io.rows import is_dataset_file

    skipped = {_resolved(Path(p)) for p in skip}
    out: list[str | Path] = []
    items = list(paths) or [root]
    for item in items:
        if str(item).startswith("hf://"):
            out.append(str(item))
            continue
        p = Path(item)
        if not p.is_dir() or is_dataset_file(p):
            out.append(p)
            continue
        # the globs are the repository's (relative to root), but a user naming `data/` means the files under it
        # whether the globs are read from the root (`data/**/*.jsonl`) or from the directory itself (`**/*.jsonl`)
        under = _resolved(p)
        from_root = [q for g in globs for q in sorted(root.glob(g)) if under in _resolved(q).parents]
        found = [
            q for q in [*from_root, *(q for g in globs for q in sorted(p.glob(g)))]
            if q.is_file() and not {".git", ".venv"} & set(q.parts) and _resolved(q) not in skipped
        ]
        found = list({_resolved(q): q for q in reversed(found)}.values())[::-1]  # one entry per file, first spelling
        if not found and paths:
            raise InputError(
                f"no dataset file in this directory (none matches the configured `files` globs: {', '.join(globs) or 'none'})",
                file=p,
            )
        out.extend(found)
    uniq: dict[str, str | Path] = {}
    for f in out:
        if isinstance(f, str) or _resolved(f) not in skipped:
            uniq.setdefault(str(f), f)
    return list(uniq.values())
