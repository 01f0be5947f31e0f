"""What a lint run found: the data that flows from the threshold/baseline stage into `report/` (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """A scored row above the threshold (or one a reviewer accepted).

    `line` is 1-based (row index + 1 for formats without lines). `excerpt` is a short single-line preview of the
    row's first assistant turn; reports print it behind a content warning.
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

    @property
    def margin(self) -> float:
        """How far above the threshold the score lies."""
        return self.fihs - self.threshold


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

    @property
    def max_score(self) -> float | None:
        return max(self.scores) if self.scores else None
