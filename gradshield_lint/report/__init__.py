"""Reports of a lint run: terminal text, JSON, SARIF 2.1.0, GitHub workflow commands and job summary.

`render(result, fmt)` returns the report as a string; the caller decides where it goes. Nothing here imports torch.
Row text appears only as excerpts: one line, control and bidi characters stripped, truncated with …, escaped for
the target format.
"""

from __future__ import annotations

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import CONTENT_WARNING, RULE_ID, clean_text, code_span, make_excerpt, split
from gradshield_lint.report.escape import log_safe, term_escape
from gradshield_lint.report.github import DEFAULT_MAX_ANNOTATIONS, escape_data, escape_property, render_github
from gradshield_lint.report.histogram import text_histogram
from gradshield_lint.report.jsonfmt import render_json, report_dict, report_schema
from gradshield_lint.report.markdown import discussion_comment, github_summary, rows_table
from gradshield_lint.report.sarif import FINGERPRINT_KEY, render_sarif, sarif_dict
from gradshield_lint.report.text import render_text
from gradshield_lint.schemas import config_enum

FORMATS = config_enum("report", "format")

__all__ = [
    "CONTENT_WARNING",
    "DEFAULT_MAX_ANNOTATIONS",
    "FINGERPRINT_KEY",
    "FORMATS",
    "RULE_ID",
    "Finding",
    "LintResult",
    "clean_text",
    "code_span",
    "discussion_comment",
    "escape_data",
    "escape_property",
    "github_summary",
    "log_safe",
    "make_excerpt",
    "render",
    "report_dict",
    "report_schema",
    "rows_table",
    "sarif_dict",
    "split",
    "term_escape",
    "text_histogram",
]


def render(
    result: LintResult,
    fmt: str,
    *,
    max_rows: int = 50,
    excerpt_chars: int = 80,
    max_annotations: int = DEFAULT_MAX_ANNOTATIONS,
) -> str:
    """The report of `result` in format `fmt` (one of `FORMATS`).

    `max_rows` limits the rows listed by `text` (JSON and SARIF always carry every finding: machines read them);
    `max_annotations` limits the `::error` lines of `github` (the rest are counted in a final `::notice`).
    """
    if fmt == "text":
        return render_text(result, max_rows=max_rows, excerpt_chars=excerpt_chars)
    if fmt == "json":
        return render_json(result, excerpt_chars=excerpt_chars)
    if fmt == "sarif":
        return render_sarif(result, excerpt_chars=excerpt_chars)
    if fmt == "github":
        return render_github(result, max_annotations=max_annotations, excerpt_chars=excerpt_chars)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
