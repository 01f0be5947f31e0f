"""The default terminal report: a table of flagged rows, accepted rows, and a one-line summary; and the `score`
command's summary of its highest rows. Every field from a row or a file name goes through `term_escape`, and the
whole text through `log_safe` (escape.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gradshield_lint.fmt import fmt_score, plural
from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import (
    fmt_margin,
    fmt_num,
    limit_rows,
    make_excerpt,
    named_by_verdict,
    rel_path,
    short_id,
    split,
    summary_line,
    why,
)
from gradshield_lint.report.escape import log_safe, term_escape

if TYPE_CHECKING:  # report/ knows nothing of torch: the type only
    from gradshield_lint.scoring.engine import ScoredRow


def _table(rows: list[Finding], excerpt_chars: int, accepted: bool) -> list[str]:
    header = ["FILE:LINE", "FIHS", "ABOVE", "ROW", "ACCEPTED BECAUSE" if accepted else "EXCERPT"]
    body = []
    for f in rows:
        last = (f.reason or "(no reason given)") if accepted else f.excerpt
        text, _ = make_excerpt(last, excerpt_chars, f.excerpt_truncated and not accepted)
        where = f"{term_escape(rel_path(f.file))}:{f.line}"
        body.append([where, fmt_num(f.fihs), fmt_margin(f.margin), term_escape(short_id(f.id)), term_escape(text)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
    out = []
    for k, r in enumerate([header, *body]):
        out.append(
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip()
        )
        reason = why(rows[k - 1], excerpt_chars) if k > 0 and not accepted else ""
        if reason:
            out.append(f"{'':<{widths[0]}}  why: {reason}")
    return out


def render_text(result: LintResult, *, max_rows: int = 50, excerpt_chars: int = 80) -> str:
    from gradshield_lint.report.gatefmt import text_lines
    from gradshield_lint.report.verdictfmt import verdict_lines

    s = split(result)
    head = verdict_lines(result)
    lines: list[str] = (head + [""] if head else []) + text_lines(result)
    if s.flagged:
        lines.append(
            "Rows the verdict names (content warning: excerpts may contain harmful text):"
            if named_by_verdict(result)
            else "Rows whose FIHS lies above the threshold (content warning: excerpts may contain harmful text):"
        )
        shown = limit_rows(s.flagged, max_rows)
        lines += _table(shown, excerpt_chars, accepted=False)
        if len(s.flagged) > len(shown):
            lines.append(f"... and {len(s.flagged) - len(shown)} more flagged rows (use --format json for all)")
        lines.append("")
    if s.accepted:
        lines.append("Accepted rows (above the threshold, accepted by a reviewer; they do not fail the check):")
        shown = limit_rows(s.accepted, max_rows)
        lines += _table(shown, excerpt_chars, accepted=True)
        if len(s.accepted) > len(shown):
            lines.append(f"... and {len(s.accepted) - len(shown)} more accepted rows")
        lines.append("")
    if not s.flagged and result.verdict is None:
        lines.append("No rows above the threshold.")
    tail = summary_line(result, len(s.flagged))
    if s.accepted:
        tail += f"; {len(s.accepted)} accepted"
    lines.append(tail)
    return log_safe("\n".join(lines)) + "\n"


def score_summary(scored: Sequence[ScoredRow], top: int, how: str, excerpt_chars: int = 60) -> str:
    """The `score` command's stderr summary: how many rows, then the `top` highest (file:line, FIHS, excerpt).
    `scored`: the engine's ScoredRow objects (`.row`, `.score`)."""
    best = sorted(scored, key=lambda s: s.score.fihs, reverse=True)[: max(top, 0)]
    lines = [f"{plural(len(scored), 'row')} scored ({term_escape(how)}); highest:"]
    for s in best:
        first = next((m.content for m in s.row.messages if m.role == "assistant"), "")
        excerpt, _ = make_excerpt(first, excerpt_chars)
        lines.append(f"  {term_escape(s.row.source)}:{s.row.line:<6} {fmt_score(s.score.fihs)}  {term_escape(excerpt)}")
    return log_safe("\n".join(lines)) + "\n"
