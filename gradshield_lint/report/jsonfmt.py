"""The JSON report: one document valid against `schemas/report.schema.json` (Draft 2020-12)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import clean_text, finite, make_excerpt, rel_path, split, tool_version
from gradshield_lint.report.escape import json_text_safe

REPORT_VERSION = 1


def finding_dict(f: Finding, excerpt_chars: int) -> dict[str, Any]:
    text, cut = make_excerpt(f.excerpt, excerpt_chars, f.excerpt_truncated)
    return {
        "id": f.id,
        "file": rel_path(f.file),
        "line": int(f.line),
        "fihs": finite(f.fihs),
        "threshold": finite(f.threshold),
        "margin": finite(f.margin),
        "excerpt": text,
        "excerpt_truncated": cut,
        "truncated": bool(f.truncated),
        "windows": int(f.windows),
        "accepted": bool(f.accepted),
        "reason": f.reason,
        "p_value": finite(f.p_value),
        "explanation": explanation_dict(f, excerpt_chars),
    }


def explanation_dict(f: Finding, excerpt_chars: int) -> dict[str, Any] | None:
    e = f.explanation
    if e is None:
        return None
    d = e.to_dict()
    d["category"] = clean_text(e.category) if e.category else None
    d["categories"] = {clean_text(k): finite(v) for k, v in e.categories.items()}
    # the span's text as an excerpt (one line, control/bidi characters dropped); offsets locate it exactly
    d["span"]["text"] = make_excerpt(e.span_text, max(excerpt_chars, 1))[0] if e.span_text else ""
    return d


def report_dict(result: LintResult, *, excerpt_chars: int = 80) -> dict[str, Any]:
    """The report as a dict. All findings are included (`max_rows` limits only the human-oriented formats)."""
    s = split(result)
    out = {
        "report_version": REPORT_VERSION,
        "tool": {"name": "gradshield-lint", "version": tool_version()},
        "threshold": finite(result.threshold),
        "threshold_method": result.threshold_method or "",
        "rows_total": int(result.rows_total),
        "rows_scored": int(result.rows_scored),
        "rows_flagged": len(s.flagged),
        "rows_accepted": len(s.accepted),
        "max_score": finite(result.max_score),
        "model": result.model or "",
        "proxy": result.proxy or "",
        "probe_set": result.probe_set or "",
        "fpr": finite(result.fpr),
        "reference_rows": int(result.reference_rows),
        "verdict": verdict_json(result),
        "findings": [finding_dict(f, excerpt_chars) for f in s.flagged],
        "accepted": [finding_dict(f, excerpt_chars) for f in s.accepted],
    }
    if result.gate is not None:
        from gradshield_lint.report.gatefmt import json_dict

        out["gate"] = json_dict(result.gate)
    return out


def verdict_json(result: LintResult) -> dict[str, Any] | None:
    from gradshield_lint.report.verdictfmt import harm_line, reference_note, verdict_dict, verdict_line

    d = verdict_dict(result.verdict)
    if d is not None:
        d.update(
            summary=verdict_line(result), harm_summary=harm_line(result) or None, note=reference_note(result) or None
        )
    return d


def render_json(result: LintResult, *, excerpt_chars: int = 80) -> str:
    # printed to terminals and CI logs too: bidi/C1 characters and "##[" as \\u escapes (the same JSON value)
    return (
        json_text_safe(
            json.dumps(report_dict(result, excerpt_chars=excerpt_chars), indent=2, ensure_ascii=False, allow_nan=False)
        )
        + "\n"
    )


def report_schema() -> dict[str, Any]:
    """The report JSON Schema shipped in the package."""
    text = resources.files("gradshield_lint").joinpath("schemas/report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
