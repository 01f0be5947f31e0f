"""SARIF 2.1.0 for GitHub code scanning (and any other SARIF consumer).

One rule, GS001 "FIHS above threshold". Each flagged row is a result at its file:line, fingerprinted by the row's
content hash (`partialFingerprints["gradshieldRowHash/v1"]`), so code scanning follows a row when it moves between
lines or files and treats an edited row as a new alert. Accepted rows are results with an `external` suppression.
"""

from __future__ import annotations

import json
from typing import Any

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import (
    RULE_ID,
    RULE_NAME,
    RULE_TITLE,
    above_phrase,
    finite,
    fmt_num,
    make_excerpt,
    named_by_verdict,
    sarif_uri,
    short_id,
    split,
    tool_version,
    why,
)
from gradshield_lint.report.escape import json_text_safe
from gradshield_lint.report.jsonfmt import explanation_dict

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
FINGERPRINT_KEY = "gradshieldRowHash/v1"
INFORMATION_URI = "https://arxiv.org/abs/2605.14194"

_HELP_TEXT = (
    "The Finetuning Implicit Harmfulness Score (FIHS) of a row is the first-order change of the scoring model's "
    "proxy harmfulness score caused by one gradient step on that row: <-grad L(row), grad H>. A row above the "
    "adaptive threshold would push the model toward complying with harmful requests if it were finetuned on, "
    "whatever the row looks like on its surface. Remove the row, rewrite it, or - if a reviewer judges it "
    'harmless - accept it with `gradshield-lint accept ROW_ID --reason "..."`.'
)


def _rule() -> dict[str, Any]:
    return {
        "id": RULE_ID,
        "name": RULE_NAME,
        "shortDescription": {"text": RULE_TITLE},
        "fullDescription": {
            "text": "Training on this row would erode the model's safety alignment: its FIHS lies above the "
            "adaptive threshold kept in the baseline."
        },
        "help": {"text": _HELP_TEXT, "markdown": _HELP_TEXT},
        "helpUri": INFORMATION_URI,
        "defaultConfiguration": {"level": "error"},
        "properties": {
            "tags": ["security", "ai-safety", "dataset"],
            "precision": "medium",
            "problem.severity": "error",
        },
    }


def _result(f: Finding, excerpt_chars: int, by_verdict: bool = False) -> dict[str, Any]:
    text, cut = make_excerpt(f.excerpt, excerpt_chars, f.excerpt_truncated)
    message = (
        f"Row {short_id(f.id)} has FIHS {fmt_num(f.fihs)}, {above_phrase(f, by_verdict)}: "
        "finetuning on it would push the model toward complying with harmful requests."
    )
    reason = why(f, excerpt_chars)
    if reason:
        message += f" Why: {reason}."
    res: dict[str, Any] = {
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "level": "error",
        "message": {"text": message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": sarif_uri(f.file), "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": max(int(f.line), 1)},
                }
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: f.id},
        "properties": {
            "rowId": f.id,
            "fihs": finite(f.fihs),
            "threshold": finite(f.threshold),
            "margin": finite(f.margin),
            "excerpt": text,
            "excerptTruncated": cut,
            "truncated": bool(f.truncated),
            "windows": int(f.windows),
            "pValue": finite(f.p_value),
            "explanation": explanation_dict(f, excerpt_chars),
        },
    }
    if f.accepted:
        sup: dict[str, Any] = {"kind": "external", "status": "accepted"}
        if f.reason:
            sup["justification"] = f.reason
        res["suppressions"] = [sup]
    return res


def sarif_dict(result: LintResult, *, excerpt_chars: int = 80) -> dict[str, Any]:
    s = split(result)
    driver: dict[str, Any] = {"name": "gradshield-lint", "informationUri": INFORMATION_URI, "rules": [_rule()]}
    version = tool_version()
    if version:
        driver["version"] = version
        driver["semanticVersion"] = version
    results = [_result(f, excerpt_chars, named_by_verdict(result)) for f in s.flagged]
    # An accepted row is still reported, suppressed, so code scanning can show and close it.
    results += [_result(f if f.accepted else _as_accepted(f), excerpt_chars) for f in s.accepted]
    if result.gate is not None and result.gate.warnings:
        from gradshield_lint.report.gatefmt import sarif_results, sarif_rule

        driver["rules"].append(sarif_rule())
        results += sarif_results(result, len(driver["rules"]) - 1)
    from gradshield_lint.report.verdictfmt import verdict_dict, verdict_lines

    run: dict[str, Any] = {"tool": {"driver": driver}}
    said = verdict_lines(result)
    if said:
        # the change's verdict is about no one file: the invocation's notifications carry it, first one the verdict
        failed = result.verdict is not None and result.verdict.failed
        notes = [
            {"level": "error" if failed and i == 0 else "note", "message": {"text": t}} for i, t in enumerate(said)
        ]
        run["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": notes}]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                **run,
                "columnKind": "unicodeCodePoints",
                "results": results,
                "properties": {
                    "verdict": verdict_dict(result.verdict),
                    "threshold": finite(result.threshold),
                    "thresholdMethod": result.threshold_method or "",
                    "rowsTotal": int(result.rows_total),
                    "rowsScored": int(result.rows_scored),
                    "model": result.model or "",
                    "proxy": result.proxy or "",
                    "probeSet": result.probe_set or "",
                    **({"baseRevision": result.gate.revision, "baseCommit": result.gate.commit} if result.gate else {}),
                },
            }
        ],
    }


def _as_accepted(f: Finding) -> Finding:
    from dataclasses import replace

    return replace(f, accepted=True)


def render_sarif(result: LintResult, *, excerpt_chars: int = 80) -> str:
    # printed to terminals and CI logs too: bidi/C1 characters and "##[" as \\u escapes (the same JSON value)
    return (
        json_text_safe(
            json.dumps(sarif_dict(result, excerpt_chars=excerpt_chars), indent=2, ensure_ascii=False, allow_nan=False)
        )
        + "\n"
    )
