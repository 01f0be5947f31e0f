"""The gate's part of every report: what a `check --diff-base REF` was judged against, and what the checked
revision changes about its own gate (baseline, configuration, probe set). Rule GS002.

Warnings (the threshold, accepted rows, the fingerprint, recorded scores, the configuration) go into every format:
text, JSON, SARIF results (level warning), `::warning` annotations at the changed file's line, and the job summary.
Notes (scores a `baseline update` records or drops) go into text, JSON and the summary only: they are routine.
File names and messages are escaped like everything else a pull request controls.
"""

from __future__ import annotations

from typing import Any

from gradshield_lint.lint.findings import GateChange, GateInfo, LintResult
from gradshield_lint.report._common import clean_text, code_span, md_escape, sarif_uri

GATE_RULE_ID = "GS002"
GATE_RULE_NAME = "GateChanged"
GATE_RULE_TITLE = "the revision changes its own gate"
_NOT_APPLIED = "not applied to this check; they take effect once merged"


def _where(c: GateChange) -> str:
    return f"{c.file}:{c.line}" if c.line else c.file


def judged_against(gate: GateInfo) -> str:
    what = []
    what.append(f"the baseline {gate.baseline}" if gate.baseline else "no baseline (none at the revision)")
    what.append(f"the configuration {gate.config}" if gate.config else "the default configuration")
    return f"Judged against {' and '.join(what)}, at {gate.revision} ({gate.commit[:12]})."


def text_lines(result: LintResult) -> list[str]:
    gate = result.gate
    if gate is None:
        return []
    lines = [clean_text(judged_against(gate))]
    if gate.changes:
        lines.append(f"This revision changes its own gate ({_NOT_APPLIED}):")
        lines += [f"  {c.severity} {clean_text(_where(c))}: {clean_text(c.message)}" for c in gate.changes]
    lines.append("")
    return lines


def json_dict(gate: GateInfo) -> dict[str, Any]:
    return {
        "revision": gate.revision,
        "commit": gate.commit,
        "baseline": gate.baseline,
        "config": gate.config,
        "warnings": len(gate.warnings),
        "changes": [
            {"kind": c.kind, "severity": c.severity, "file": c.file, "line": c.line, "message": c.message}
            for c in gate.changes
        ],
    }


def sarif_rule() -> dict[str, Any]:
    text = (
        "The checked revision changes the baseline, configuration or probe set that its own rows are judged "
        "by. The check judges it by the base revision's; once merged, the change applies to later checks, so a "
        "reviewer should confirm it (a raised threshold or newly accepted rows let harmful rows through)."
    )
    return {
        "id": GATE_RULE_ID,
        "name": GATE_RULE_NAME,
        "shortDescription": {"text": GATE_RULE_TITLE},
        "fullDescription": {"text": text},
        "help": {"text": text, "markdown": text},
        "defaultConfiguration": {"level": "warning"},
        "properties": {
            "tags": ["security", "ai-safety", "dataset"],
            "precision": "high",
            "problem.severity": "warning",
        },
    }


def sarif_results(result: LintResult, rule_index: int) -> list[dict[str, Any]]:
    gate = result.gate
    out = []
    for c in gate.warnings if gate is not None else []:
        loc: dict[str, Any] = {"artifactLocation": {"uri": sarif_uri(c.file), "uriBaseId": "%SRCROOT%"}}
        if c.line:
            loc["region"] = {"startLine": max(int(c.line), 1)}
        out.append(
            {
                "ruleId": GATE_RULE_ID,
                "ruleIndex": rule_index,
                "level": "warning",
                "message": {"text": c.message},
                "locations": [{"physicalLocation": loc}],
                "partialFingerprints": {"gradshieldGateChange/v1": f"{c.kind}:{c.file}"},
                "properties": {"kind": c.kind, "revision": gate.revision if gate else ""},
            }
        )
    return out


def github_commands(result: LintResult) -> list[str]:
    from gradshield_lint.report.github import command

    gate = result.gate
    if gate is None:
        return []
    return [
        command("warning", c.message, file=c.file, line=c.line, title=f"{GATE_RULE_ID} {GATE_RULE_TITLE}")
        for c in gate.warnings
    ]


def github_notice_suffix(result: LintResult) -> str:
    gate = result.gate
    if gate is None:
        return ""
    n = len(gate.warnings)
    tail = f"; judged against {gate.revision}"
    return tail + (f"; the revision changes its own gate ({n} warning{'s' if n != 1 else ''})" if n else "")


def markdown_lines(result: LintResult) -> list[str]:
    gate = result.gate
    if gate is None:
        return []
    base = code_span(gate.revision)
    out: list[str] = []
    if gate.warnings:
        out += [
            "> [!CAUTION]",
            (
                f"> **This pull request changes its own gate.** Its rows were judged against the gate at {base} "
                f"({_NOT_APPLIED}); a reviewer should confirm each change:"
            ),
            ">",
        ]
        out += [f"> - {code_span(_where(c))}: {md_escape(c.message)}" for c in gate.warnings]
        out.append("")
    notes = [c for c in gate.changes if c not in gate.warnings]
    if notes:
        out += ["Baseline bookkeeping in this pull request:", ""]
        out += [f"- {code_span(_where(c))}: {md_escape(c.message)}" for c in notes]
        out.append("")
    out += [md_escape(judged_against(gate)), ""]
    return out
