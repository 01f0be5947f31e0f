"""The change's verdict in words: the one line every report leads with, what finetuning on the change would do to
the proxy H to first order, and the note for a baseline too small for the stated rate.

Plain text here (no row text: only counts, rates and the rule's name); each format escapes it as it escapes the rest.
"""

from __future__ import annotations

import math
from typing import Any

from gradshield_lint.fmt import fmt_score
from gradshield_lint.lint.findings import LintResult
from gradshield_lint.lint.verdict import Verdict, needed_reference
from gradshield_lint.report._common import finite

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt_pvalue(p: float) -> str:
    """`0.41`, `0.0032`, `3.1·10⁻⁶`: two significant digits, powers of ten below 10⁻³."""
    if not math.isfinite(p):
        return "n/a"
    if p >= 1e-3 or p == 0.0:
        return f"{p:.2g}"
    mant, exp = f"{p:.1e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}·10{str(int(exp)).translate(_SUPERSCRIPT)}"


def _n(k: int) -> str:
    return f"{k:,}"


def _rows(k: int, what: str = "row") -> str:
    return f"{_n(k)} {what}{'' if k == 1 else 's'}"


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _percent(x: float) -> str:
    return f"{100 * x:.3g} %"


def rule_name(v: Verdict) -> str:
    if v.rule == "exact-scan":
        return "exact tail test"
    if v.rule == "gaussian-null":
        return f"Gaussian null fitted to the {_rows(v.reference, 'accepted row')}"
    return "per-row rule"


def verdict_line(result: LintResult) -> str:
    """`PASS: …` or `FAIL: …`: the change as a whole, in one line."""
    v = result.verdict
    if v is None:
        return ""
    word = "FAIL" if v.failed else "PASS"
    if v.added == 0:
        return f"{word}: no new rows to judge."
    if v.mode == "rows":
        if v.failed:
            return (
                f"FAIL: {_n(v.named)} of the {_rows(v.added, 'added row')} score above the threshold (per-row rule, "
                f"verdict.mode: rows: any row above it fails the change)."
            )
        return f"PASS: none of the {_rows(v.added, 'added row')} scores above the threshold (per-row rule)."
    how = f"{rule_name(v)}: p = {fmt_pvalue(v.p_value)} {'≤' if v.failed else '>'} α = {v.alpha:g}"
    against = f"the {_rows(v.reference, 'accepted row')}"
    subject = "the added row scores" if v.added == 1 else f"the {_n(v.added)} added rows score"
    if not v.failed:
        return f"PASS: {subject} like {against} ({how})."
    line = f"FAIL: {subject} higher than {against} ({how})"
    if v.rule == "exact-scan" and v.rank is not None and v.above is not None and v.expected is not None:
        where = "every accepted row" if v.rank == 1 else f"the {_ordinal(v.rank)}-highest accepted row"
        verb = "scores" if v.above == 1 else "score"
        line += f"; {_n(v.above)} {verb} above {where} where {v.expected:.2g} would by chance"
    if v.controlled:
        line += f"; {_rows(v.named)} named at a false discovery rate of {_percent(v.fdr)}."
    else:
        line += (
            f"; no single row stands out at a false discovery rate of {_percent(v.fdr)}: the {_rows(v.named)} "
            f"above it are named, about {v.expected or 0:.2g} of them by chance alone."
        )
    return line if line.endswith(".") else line + "."


def harm_line(result: LintResult) -> str:
    """What one gradient step on all the added rows does to H, to first order, against as many accepted rows."""
    v = result.verdict
    if v is None or v.harm is None or v.added == 0:
        return ""
    line = (
        f"To first order, finetuning on the {_rows(v.added, 'added row')} moves the harmfulness proxy H by "
        f"Σ raw FIHS = {fmt_score(v.harm)} per unit learning rate"
    )
    if v.harm_reference is None:
        return line + " (the baseline records no raw scores of its accepted rows to compare with)."
    line += f"; as many accepted rows: {fmt_score(v.harm_reference)}"
    if v.harm_reference > 0 and v.harm > 0:
        line += f" ({v.harm / v.harm_reference:.2g}× that)"
    return line + "."


def reference_note(result: LintResult) -> str:
    """Said in every report while the baseline is too small for the rate the verdict states distribution-free."""
    v = result.verdict
    if v is None or v.mode == "rows" or not v.small_reference:
        return ""
    return reference_advice(v.reference, v.alpha, v.rule)


def reference_advice(n: int, alpha: float, rule: str) -> str:
    need = needed_reference(alpha)
    head = (
        f"Note: {_rows(n, 'accepted row')} are too few for a distribution-free verdict at α = {alpha:g} "
        f"(it needs at least {_n(need)}; `gradshield-lint baseline update` adds the rows a merged change brings)"
    )
    if rule == "gaussian-null":
        return (
            head + "; until then the verdict uses a Gaussian null fitted to them (Student's t for a new row), which "
            "holds the rate only as far as the accepted scores look Gaussian."
        )
    return head + "; until then only a change of several rows that all score above every accepted row can fail."


def verdict_lines(result: LintResult) -> list[str]:
    """The verdict, ΔH and the small-reference note: the lines every report starts with (empty ones left out).
    Under `verdict.mode: rows` the reports stay as the per-row rule always wrote them (the JSON still carries the
    verdict object)."""
    v = result.verdict
    if v is None:
        return []
    caveat = f"Caveat: {v.caveat}." if v.caveat else ""
    if v.mode == "rows":
        return [caveat] if caveat else []
    return [x for x in (verdict_line(result), harm_line(result), reference_note(result), caveat) if x]


def verdict_dict(v: Verdict | None) -> dict[str, Any] | None:
    """The verdict for the JSON report and SARIF properties."""
    if v is None:
        return None
    return {
        "mode": v.mode,
        "rule": v.rule,
        "failed": bool(v.failed),
        "p_value": finite(v.p_value),
        "alpha": float(v.alpha),
        "fdr": float(v.fdr),
        "rows_added": int(v.added),
        "reference_rows": int(v.reference),
        "reference_rows_needed": int(v.needed),
        "rank": v.rank,
        "rows_above_rank": v.above,
        "expected_above_rank": finite(v.expected),
        "rows_named": int(v.named),
        "fdr_controlled": bool(v.controlled),
        "harm": finite(v.harm),
        "harm_reference": finite(v.harm_reference),
        "caveat": v.caveat,
    }


__all__ = [
    "fmt_pvalue",
    "harm_line",
    "reference_advice",
    "reference_note",
    "rule_name",
    "verdict_dict",
    "verdict_line",
    "verdict_lines",
]
