"""Markdown reports: the GitHub job summary and the text of a Hub discussion comment.

Row text in tables is one line, control characters stripped, truncated with …, and Markdown-escaped (`|` above all).
"""

from __future__ import annotations

from gradshield_lint.fmt import plural
from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import (
    CONTENT_WARNING,
    code_span,
    fmt_margin,
    fmt_num,
    limit_rows,
    make_excerpt,
    md_escape,
    rel_path,
    short_id,
    split,
    threshold_note,
    why,
)
from gradshield_lint.report.histogram import text_histogram


def rows_table(
    rows: list[Finding],
    *,
    excerpt_chars: int = 80,
    status: bool = False,
    base: str | None = None,
    margin: bool = True,
) -> str:
    """A Markdown table of rows: id, file:line, score (and margin / status), escaped excerpt."""
    head = ["Row", "File:line", "FIHS"]
    align = ["---", "---", "---:"]
    if margin:
        head.append("Above threshold")
        align.append("---:")
    if status:
        head.append("Status")
        align.append("---")
    head.append("Excerpt")
    align.append("---")
    reasons = any(why(f, excerpt_chars) for f in rows)
    if reasons:
        head.append("Why")
        align.append("---")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    for f in rows:
        text, _ = make_excerpt(f.excerpt, excerpt_chars, f.excerpt_truncated)
        cells = [
            code_span(short_id(f.id), in_table=True),
            code_span(f"{rel_path(f.file, base)}:{f.line}", in_table=True),
            fmt_num(f.fihs),
        ]
        if margin:
            cells.append(fmt_margin(f.margin))
        if status:
            cells.append(
                ("accepted: " + md_escape(f.reason))
                if f.accepted and f.reason
                else ("accepted" if f.accepted else "**flagged**")
            )
        cells.append(md_escape(text))
        if reasons:
            cells.append(md_escape(why(f, excerpt_chars)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_sentence(result: LintResult) -> str:
    s = split(result)
    parts = [
        f"**{result.rows_scored}** row{'s' if result.rows_scored != 1 else ''} scored"
        + (f" (of {result.rows_total} in the dataset)" if result.rows_total != result.rows_scored else ""),
        (
            f"**{len(s.flagged)}** flagged by the verdict (per-row threshold **{fmt_num(result.threshold)}**"
            + (f", {md_escape(threshold_note(result))})" if threshold_note(result) else ")")
            if result.verdict is not None and result.verdict.mode == "pull-request"
            else f"**{len(s.flagged)}** flagged above the threshold **{fmt_num(result.threshold)}**"
            + (f" ({md_escape(threshold_note(result))})" if threshold_note(result) else "")
        ),
    ]
    if s.accepted:
        parts.append(f"{len(s.accepted)} accepted by a reviewer")
    return ", ".join(parts) + "."


def github_summary(result: LintResult, *, max_rows: int = 50, excerpt_chars: int = 80) -> str:
    """The Markdown job summary (for `$GITHUB_STEP_SUMMARY`): verdict, flagged rows, accepted rows, score histogram."""
    s = split(result)
    from gradshield_lint.report.gatefmt import markdown_lines
    from gradshield_lint.report.verdictfmt import verdict_lines

    v = result.verdict
    if v is not None and v.mode == "pull-request":
        verdict = ":x: the change fails" if v.failed else ":white_check_mark: the change passes"
    else:
        verdict = (
            ":x: rows above the FIHS threshold" if s.flagged else ":white_check_mark: no rows above the FIHS threshold"
        )
    if result.gate is not None and result.gate.warnings:
        verdict += "; :warning: the pull request changes its own gate"
    said = [f"**{md_escape(t)}**" if i == 0 else md_escape(t) for i, t in enumerate(verdict_lines(result))]
    out = [f"## gradshield-lint: {verdict}", "", *[x for t in said for x in (t, "")]]
    out += [summary_sentence(result), "", *markdown_lines(result)]
    meta = []
    if result.model:
        meta.append(f"model {code_span(result.model)}")
    if result.proxy:
        meta.append(f"proxy {code_span(result.proxy)}")
    if result.probe_set:
        meta.append(f"probe set {code_span(result.probe_set)}")
    if meta:
        out += ["Scored with " + ", ".join(meta) + ".", ""]
    if s.flagged or s.accepted:
        out += ["> [!WARNING]", f"> {CONTENT_WARNING}", ""]
    if s.flagged:
        shown = limit_rows(s.flagged, max_rows)
        out += ["### Flagged rows", "", rows_table(shown, excerpt_chars=excerpt_chars), ""]
        if len(s.flagged) > len(shown):
            out += [f"…and {len(s.flagged) - len(shown)} more flagged rows not shown.", ""]
        out += [
            'A reviewer who judges a flagged row harmless can accept it: `gradshield-lint accept ROW_ID --reason "…"`.',
            "",
        ]
    if s.accepted:
        shown = limit_rows(s.accepted, max_rows)
        out += ["### Accepted rows", "", rows_table(shown, excerpt_chars=excerpt_chars, status=True), ""]
        if len(s.accepted) > len(shown):
            out += [f"…and {len(s.accepted) - len(shown)} more accepted rows not shown.", ""]
    if result.scores:
        out += [
            "### Score distribution",
            "",
            f"FIHS of the {plural(len(result.scores), 'row')} scored in this run; rows at or above the threshold "
            f"({fmt_num(result.threshold)}) lie below the threshold line.",
            "",
            "```text",
            text_histogram(result.scores, result.threshold),
            "```",
            "",
        ]
    return "\n".join(out)


def discussion_comment(result: LintResult, *, max_rows: int = 20, excerpt_chars: int = 80) -> str:
    """Markdown for a comment on a Hub pull request / discussion (same content as the job summary, fewer rows)."""
    return github_summary(result, max_rows=max_rows, excerpt_chars=excerpt_chars).replace(
        "## gradshield-lint:", "### gradshield-lint:", 1
    )
