"""What a lint run found: the data that flows from the threshold/baseline stage into `report/` (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradshield_lint.lint.verdict import Verdict
from gradshield_lint.scoring.explanation import Explanation


@dataclass(frozen=True)
class Finding:
    """A scored row above the threshold (or one a reviewer accepted).

    `line` is 1-based (row index + 1 for formats without lines). `excerpt` is a short single-line preview of the
    row's first assistant turn; reports print it behind a content warning, ending in … when `excerpt_truncated`
    (the preview is shorter than the turn).

    `truncated`: part of the row was scored in no window (`scoring.truncation: head` on a row longer than
    max_length, or a prompt too long for the first window); `windows`: how many windows of max_length tokens the
    row was scored in (1: whole, or only its head), its score the highest of theirs.
    """

    id: str
    file: str
    line: int
    fihs: float
    threshold: float
    excerpt: str
    truncated: bool = False
    accepted: bool = False
    reason: str | None = None
    # Conformal p-value against the baseline's accepted rows: (1 + #{accepted ≥ fihs}) / (n + 1); None without a
    # reference (scan). Small = unlike every accepted row.
    p_value: float | None = None
    explanation: Explanation | None = None
    windows: int = 1
    excerpt_truncated: bool = False

    @property
    def margin(self) -> float:
        """How far above the threshold the score lies."""
        return self.fihs - self.threshold


@dataclass(frozen=True)
class GateChange:
    """A change the checked revision makes to its own gate (baseline, configuration, probe set, model files),
    reported to reviewers and never applied to the check that reports it.

    `severity` is "warning" for changes that would relax or alter the verdicts of later checks once merged (the
    threshold, accepted rows, the fingerprint, recorded scores, the configuration), "note" for the bookkeeping a
    `baseline update` does (scores of added rows recorded, of removed rows dropped). `file` is relative to the
    repository root; `line` is in the checked revision's file, when there is one."""

    kind: str
    severity: str
    file: str
    line: int | None
    message: str


@dataclass(frozen=True)
class GateInfo:
    """What a `check --diff-base REF` was judged against: the baseline and configuration as they are at `revision`
    (None: there was none there), and what the checked work tree changes about them."""

    revision: str
    commit: str
    baseline: str | None
    config: str | None
    changes: tuple[GateChange, ...] = ()

    @property
    def warnings(self) -> list[GateChange]:
        return [c for c in self.changes if c.severity == "warning"]


@dataclass
class LintResult:
    """Everything a report needs. `scores` are the scores of the rows scored in this run (for histograms)."""

    threshold: float
    threshold_method: str
    rows_total: int
    rows_scored: int
    findings: list[Finding]
    accepted: list[Finding] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    model: str = ""
    proxy: str = ""
    probe_set: str = ""
    gate: GateInfo | None = None  # set by `check --diff-base`
    # The false-alarm rate the threshold states (conformal rule; None for the mixture test and fixed thresholds) and
    # the number of accepted rows the p-values are computed against (0: none).
    fpr: float | None = None
    reference_rows: int = 0
    # The change's verdict (lint/verdict.py): pull-request mode names its findings; None for results made by hand.
    verdict: Verdict | None = None

    @property
    def max_score(self) -> float | None:
        return max(self.scores) if self.scores else None
