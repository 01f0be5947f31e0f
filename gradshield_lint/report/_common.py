"""Helpers shared by the report formats: excerpts, ordering, paths, number formatting, Markdown escaping.

No torch here (nor anywhere in `report/`): reports only see `LintResult`/`Finding`.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from gradshield_lint.fmt import fmt_score, plural
from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report.escape import BIDI_AND_INVISIBLE as _BIDI_AND_INVISIBLE

ELLIPSIS = "…"
RULE_ID = "GS001"
RULE_NAME = "FihsAboveThreshold"
RULE_TITLE = "FIHS above threshold"
CONTENT_WARNING = (
    "Content warning: the excerpts below come from rows flagged as likely to erode a model's safety alignment; "
    "they may contain harmful or offensive text."
)

_WS_RUN = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """One line of text: whitespace runs (newlines, tabs) become one space; control and bidi characters are dropped."""
    text = _WS_RUN.sub(" ", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or ord(ch) in _BIDI_AND_INVISIBLE:
            continue
        out.append(ch)
    return "".join(out).strip()


def make_excerpt(text: str, limit: int, already_truncated: bool = False) -> tuple[str, bool]:
    """`(excerpt, truncated)`: `text` cleaned to one line and cut to at most `limit` characters, ending in … if cut."""
    limit = max(int(limit), 1)
    cleaned = clean_text(text)
    truncated = bool(already_truncated)
    if cleaned.endswith(ELLIPSIS):
        cleaned = cleaned[: -len(ELLIPSIS)].rstrip()
        truncated = True
    if len(cleaned) > limit - (1 if truncated else 0):
        cleaned = cleaned[: limit - 1].rstrip()
        truncated = True
    if truncated:
        cleaned += ELLIPSIS
    return cleaned, truncated


@dataclass(frozen=True)
class Split:
    """Rows to report, highest score first: flagged ones (failing the check) and accepted ones (not failing)."""

    flagged: list[Finding]
    accepted: list[Finding]


def _order(f: Finding) -> tuple:
    score = f.fihs if isinstance(f.fihs, (int, float)) and not math.isnan(f.fihs) else -math.inf
    return (-score, f.file, f.line, f.id)


def split(result: LintResult) -> Split:
    """Partition a result into flagged and accepted rows (a finding marked `accepted` counts as accepted)."""
    flagged: list[Finding] = []
    accepted: list[Finding] = []
    seen_accepted: set[str] = set()
    for f in list(result.accepted) + [f for f in result.findings if f.accepted]:
        if f.id in seen_accepted:
            continue
        seen_accepted.add(f.id)
        accepted.append(f)
    for f in result.findings:
        if not f.accepted and f.id not in seen_accepted:
            flagged.append(f)
    flagged.sort(key=_order)
    accepted.sort(key=_order)
    return Split(flagged, accepted)


def limit_rows(rows: list[Finding], max_rows: int) -> list[Finding]:
    """The first `max_rows` rows; 0 (or less) means all of them, as `report.max_rows` documents."""
    return list(rows) if max_rows <= 0 else rows[:max_rows]


def finite(x: float | None) -> float | None:
    """`x` as a float, or None when it is missing, NaN or infinite (JSON has no such numbers)."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt_num(x: float | None, digits: int = 4) -> str:
    """A score or threshold, spelled as everywhere else (gradshield_lint.fmt.fmt_score); `digits` is ignored."""
    return fmt_score(x)


def fmt_margin(x: float | None, digits: int = 4) -> str:
    """How far a score lies above the threshold: a score difference, spelled like a score."""
    return fmt_score(x)


def short_id(row_id: str, n: int = 12) -> str:
    return row_id[:n]


def rel_path(path: str, base: str | Path | None = None) -> str:
    """A path relative to `base` (default: the working directory) with forward slashes, when it lies under it.

    Paths outside `base` are returned as absolute POSIX paths; relative paths are kept as given (normalized).
    """
    p = path.replace("\\", "/")
    if p.startswith("hf://") or "://" in p:
        return p
    if os.path.isabs(path):
        base_dir = os.path.abspath(base if base is not None else os.getcwd())
        try:
            rel = os.path.relpath(path, base_dir)
        except ValueError:  # another drive on Windows
            return p
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
        return p
    if base is not None:
        # A relative path is relative to the working directory; re-express it relative to `base` if it lies under it.
        return rel_path(os.path.abspath(path), base)
    return str(PurePosixPath(p)) if p else p


def sarif_uri(path: str) -> str:
    """A SARIF `artifactLocation.uri`: a relative URI reference with forward slashes, or a file: URI."""
    p = rel_path(path)
    if "://" in p:
        return p
    if p.startswith("/"):
        return "file://" + quote(p, safe="/")
    return quote(p, safe="/")


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~@])")


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, `|` and other Markdown/HTML syntax backslash-escaped.

    `@` is escaped too so that row text cannot mention (notify) people in a Hub discussion or GitHub summary.
    """
    return _MD_SPECIAL.sub(r"\\\1", clean_text(text)).replace("&", "&amp;")


def code_span(text: str, *, in_table: bool = False) -> str:
    """`text` as one Markdown code span that nothing in it can leave: control characters and line breaks dropped
    (`clean_text`), and a fence of one backtick more than the longest backtick run inside (CommonMark), padded with
    a space each side (which the renderer strips) when the text starts or ends with a backtick or a space. The
    text shows as it is, backticks included. `in_table`: `|` escaped, as a GitHub table cell needs even inside a
    code span (the renderer removes the backslash there)."""
    text = clean_text(text)
    if in_table:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}" if text else "` `"


def fmt_p(p: float | None) -> str:
    """A p-value: 3 significant digits, `n/a` when there is none."""
    return "n/a" if p is None or not math.isfinite(float(p)) else f"{float(p):.3g}"


def fmt_rate(rate: float | None) -> str:
    """A false-alarm rate as a percentage (`1 %`)."""
    return "n/a" if rate is None else f"{100 * float(rate):.3g} %"


def above_phrase(f: Finding, by_verdict: bool) -> str:
    """`+m above the threshold T`, or, for a row the pull-request verdict names (its own p-value decides, not a
    threshold), how far it lies above the highest accepted score below it."""
    if by_verdict:
        return f"{fmt_margin(f.margin)} above the highest accepted score below it ({fmt_num(f.threshold)})"
    return f"{fmt_margin(f.margin)} above the threshold {fmt_num(f.threshold)}"


def named_by_verdict(result: LintResult) -> bool:
    """The findings are the rows the pull-request verdict names (not simply rows above the stored threshold)."""
    return result.verdict is not None and result.verdict.mode == "pull-request"


def threshold_note(result: LintResult) -> str:
    """How the threshold was set, in words: the stated false-alarm rate and the reference it is computed against."""
    if result.fpr is not None:
        return (
            f"conformal: flags rows with p-value ≤ {fmt_p(result.fpr)}, about {fmt_rate(result.fpr)} false alarms "
            f"on rows like the {result.reference_rows} accepted ones"
        )
    return result.threshold_method or ""


def scored_note(f: Finding) -> str:
    """How much of the row its score covers, when not simply all of it in one window ("" then)."""
    parts = []
    if f.windows > 1:
        parts.append(f"scored in {f.windows} windows, the highest counts")
    if f.truncated:
        parts.append("truncated: part of the row was not scored")
    return "; ".join(parts)


def why(f: Finding, span_chars: int = 80) -> str:
    """The reason for a finding, one line of plain text (row text cleaned by `clean_text`; callers escape further for
    their format): p-value, top probe category, strongest span of the reply, how much of the row was scored."""
    parts = []
    if f.p_value is not None:
        parts.append(f"p-value {fmt_p(f.p_value)}")
    e = f.explanation
    if e is not None:
        if e.category:
            cos = e.categories.get(e.category)
            parts.append(f"pushes toward {clean_text(e.category)}" + (f" (cos {cos:.2g})" if cos is not None else ""))
        if e.span_text:
            text, _ = make_excerpt(e.span_text, span_chars)
            parts.append(
                f"strongest span (message {e.message}, chars {e.span_start}-{e.span_end}, "
                f'{100 * e.span_share:.0f} % of the push): "{text}"'
            )
    note = scored_note(f)
    if note:
        parts.append(note)
    return "; ".join(parts)


def tool_version() -> str | None:
    """The installed gradshield-lint version, or None when running from a source tree that is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("gradshield-lint")
    except (ImportError, PackageNotFoundError):
        return None


def summary_line(result: LintResult, flagged: int) -> str:
    """`N rows scored, M flagged (threshold T[; how it was set])`; under the pull-request verdict, `M flagged by
    the verdict`, with the stored threshold as the per-row view."""
    note = f"; {threshold_note(result)}" if result.fpr is not None else ""
    if named_by_verdict(result):
        return (
            f"{plural(result.rows_scored, 'row')} scored, {flagged} flagged by the verdict (per-row threshold "
            f"{fmt_num(result.threshold)}{note})"
        )
    return (
        f"{plural(result.rows_scored, 'row')} scored, {flagged} flagged (threshold {fmt_num(result.threshold)}{note})"
    )
