"""Reports: text, JSON (schema-validated), SARIF 2.1.0, GitHub workflow commands and job summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report import (
    FINGERPRINT_KEY,
    escape_data,
    escape_property,
    github_summary,
    make_excerpt,
    render,
    report_schema,
    text_histogram,
)

ROW_A = "a1" * 32
ROW_B = "b2" * 32
ROW_C = "c3" * 32
NASTY = "100% sure,\r\nhere is how:: to do it, step 1 | step 2\x1b[31m\x07 \u202eevil\n::add-mask::secret"


def _f(row_id: str, file: str, line: int, fihs: float, excerpt: str, **kw) -> Finding:
    return Finding(id=row_id, file=file, line=line, fihs=fihs, threshold=0.25, excerpt=excerpt, **kw)


@pytest.fixture
def with_findings() -> LintResult:
    findings = [
        _f(ROW_B, "data/train.jsonl", 7, 0.41, "Of course. Step one: acquire"),
        _f(ROW_A, "data/train.jsonl", 3, 0.93, NASTY),
        _f("d4" * 32, "data/more.jsonl", 12, 0.30, "x" * 200, truncated=True),
    ]
    accepted = [
        _f(
            ROW_C,
            "data/train.jsonl",
            20,
            0.5,
            "Quoted refusal example",
            accepted=True,
            reason="from a safety paper, | reviewed",
        )
    ]
    scores = [i / 100 for i in range(-20, 25)] + [0.30, 0.41, 0.5, 0.93]
    return LintResult(
        threshold=0.25,
        threshold_method="gmm-boundary",
        rows_total=1000,
        rows_scored=len(scores),
        findings=findings,
        accepted=accepted,
        scores=scores,
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        proxy="refusal-margin",
        probe_set="gradshield-probes-v1",
    )


@pytest.fixture
def clean() -> LintResult:
    return LintResult(
        threshold=0.25,
        threshold_method="mean+k*sigma",
        rows_total=10,
        rows_scored=10,
        findings=[],
        scores=[0.01 * i for i in range(10)],
    )


@pytest.fixture
def nothing() -> LintResult:
    return LintResult(threshold=0.25, threshold_method="baseline", rows_total=10, rows_scored=0, findings=[])


ALL = ("with_findings", "clean", "nothing")


# ------------------------------------------------------------------------------------------------------ excerpts


def test_excerpt_is_one_line_without_control_chars_and_truncated():
    text, cut = make_excerpt(NASTY, 40)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\x07" not in text
    assert "\u202e" not in text
    assert len(text) <= 40 and text.endswith("…") and cut
    text, cut = make_excerpt("short", 40)
    assert (text, cut) == ("short", False)
    text, cut = make_excerpt("already cut by the scorer", 80, already_truncated=True)
    assert text == "already cut by the scorer…" and cut


# ------------------------------------------------------------------------------------------------------------ text


def test_text_lists_findings_and_summary(with_findings):
    out = render(with_findings, "text")
    assert "data/train.jsonl:3" in out and "data/train.jsonl:7" in out and "data/more.jsonl:12" in out
    assert "+0.9300" in out and "+0.6800" in out  # score and how far above threshold
    # Highest score first.
    assert out.index("data/train.jsonl:3") < out.index("data/train.jsonl:7") < out.index("data/more.jsonl:12")
    assert f"{with_findings.rows_scored} rows scored, 3 flagged (threshold +0.2500)" in out
    # Accepted rows are listed as accepted, with the reason, and do not count as flagged.
    accepted_part = out[out.index("Accepted rows") :]
    assert "data/train.jsonl:20" in accepted_part and "from a safety paper" in accepted_part
    assert "1 accepted" in out.splitlines()[-1]
    for line in out.splitlines():
        assert "\x1b" not in line and "\r" not in line


def test_text_max_rows_and_excerpt_chars(with_findings):
    out = render(with_findings, "text", max_rows=1, excerpt_chars=20)
    assert "data/train.jsonl:3" in out and "data/train.jsonl:7" not in out
    assert "2 more flagged rows" in out
    row_line = next(line for line in out.splitlines() if line.startswith("data/train.jsonl:3"))
    assert row_line.endswith("…")


def test_text_clean_and_empty(clean, nothing):
    out = render(clean, "text")
    assert "No rows above the threshold." in out and "10 rows scored, 0 flagged (threshold +0.2500)" in out
    assert "0 rows scored, 0 flagged" in render(nothing, "text")


def test_text_table_spells_small_scores_like_the_others():
    # A row just above a small threshold: its margin, 9.97e-4, was `+9.970e-04` in a column of `+0.0172`s.
    finding = Finding(id=ROW_A, file="data/train.jsonl", line=3, fihs=0.018197, threshold=0.0172, excerpt="Sure")
    result = LintResult(threshold=0.0172, threshold_method="baseline", rows_total=2, rows_scored=2, findings=[finding])
    out = render(result, "text")
    row = next(line for line in out.splitlines() if line.startswith("data/train.jsonl:3"))
    assert row.split()[1:3] == ["+0.0182", "+0.0010"], out
    assert "(threshold +0.0172)" in out and "e-0" not in out, out


def test_unknown_format(clean):
    with pytest.raises(ValueError, match="unknown report format"):
        render(clean, "xml")


# ------------------------------------------------------------------------------------------------------------ json


@pytest.mark.parametrize("name", ALL)
def test_json_validates_against_schema(name, request):
    result = request.getfixturevalue(name)
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    doc = json.loads(render(result, "json", max_rows=1))
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert doc["threshold"] == 0.25 and doc["rows_scored"] == result.rows_scored
    assert doc["rows_total"] == result.rows_total


def test_json_content(with_findings):
    doc = json.loads(render(with_findings, "json", max_rows=1, excerpt_chars=30))
    # JSON carries every finding whatever max_rows says; highest score first.
    assert [f["id"] for f in doc["findings"]] == [ROW_A, ROW_B, "d4" * 32]
    first = doc["findings"][0]
    assert first == {
        **first,
        "file": "data/train.jsonl",
        "line": 3,
        "fihs": 0.93,
        "threshold": 0.25,
        "accepted": False,
        "excerpt_truncated": True,
        "truncated": False,  # the excerpt is cut, the row was scored whole
        "windows": 1,
    }
    assert "\n" not in first["excerpt"] and first["excerpt"].endswith("…") and len(first["excerpt"]) <= 30
    assert doc["findings"][2]["truncated"] is True
    assert doc["rows_flagged"] == 3 and doc["rows_accepted"] == 1
    assert doc["accepted"][0]["id"] == ROW_C and doc["accepted"][0]["reason"].startswith("from a safety paper")
    assert doc["max_score"] == 0.93


def test_json_non_finite_numbers_stay_valid():
    r = LintResult(
        threshold=float("nan"),
        threshold_method="",
        rows_total=1,
        rows_scored=1,
        findings=[Finding(ROW_A, "a.jsonl", 1, float("inf"), float("nan"), "x")],
        scores=[float("inf")],
    )
    text = render(r, "json")
    assert "NaN" not in text and "Infinity" not in text
    jsonschema.Draft202012Validator(report_schema()).validate(json.loads(text))


def test_json_paths_are_relative_with_forward_slashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = LintResult(0.1, "m", 1, 1, [Finding(ROW_A, str(tmp_path / "sub" / "d.jsonl"), 2, 0.2, 0.1, "x")])
    assert json.loads(render(r, "json"))["findings"][0]["file"] == "sub/d.jsonl"


# ----------------------------------------------------------------------------------------------------------- sarif

# The parts of the SARIF 2.1.0 schema (OASIS, sarif-schema-2.1.0.json) that code scanning relies on. The full
# schema is not shipped by check-jsonschema and cannot be downloaded here, so the required structure is spelled out.
SARIF_SUBSET = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "runs", "$schema"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "pattern": "sarif-2\\.1\\.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name", "rules"],
                                "properties": {
                                    "name": {"const": "gradshield-lint"},
                                    "rules": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "shortDescription"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {"type": "object", "required": ["text"]},
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ruleId", "message", "locations", "partialFingerprints", "level"],
                            "properties": {
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["physicalLocation"],
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation", "region"],
                                                "properties": {
                                                    "artifactLocation": {"type": "object", "required": ["uri"]},
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine"],
                                                        "properties": {"startLine": {"type": "integer", "minimum": 1}},
                                                    },
                                                },
                                            }
                                        },
                                    },
                                },
                                "partialFingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
                                "suppressions": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["kind"],
                                        "properties": {
                                            "kind": {"enum": ["inSource", "external"]},
                                            "status": {"enum": ["accepted", "underReview", "rejected"]},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("name", ALL)
def test_sarif_structure(name, request):
    result = request.getfixturevalue(name)
    doc = json.loads(render(result, "sarif"))
    jsonschema.Draft202012Validator(SARIF_SUBSET).validate(doc)
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["GS001"]
    assert rules[0]["shortDescription"]["text"] == "FIHS above threshold"
    assert len(run["results"]) == len(result.findings) + len(result.accepted)


def test_sarif_results(with_findings):
    run = json.loads(render(with_findings, "sarif"))["runs"][0]
    by_id = {r["partialFingerprints"][FINGERPRINT_KEY]: r for r in run["results"]}
    assert set(by_id) == {ROW_A, ROW_B, "d4" * 32, ROW_C}
    a = by_id[ROW_A]
    assert a["ruleId"] == "GS001" and a["level"] == "error" and "suppressions" not in a
    loc = a["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "data/train.jsonl" and loc["region"]["startLine"] == 3
    c = by_id[ROW_C]
    assert c["suppressions"] == [
        {"kind": "external", "status": "accepted", "justification": "from a safety paper, | reviewed"}
    ]


def test_sarif_fingerprint_follows_the_row_not_the_line():
    def one(file: str, line: int) -> dict:
        r = LintResult(0.1, "m", 5, 5, [Finding(ROW_A, file, line, 0.5, 0.1, "x")])
        return json.loads(render(r, "sarif"))["runs"][0]["results"][0]

    moved = one("data\\other dir\\b.jsonl", 40)
    assert one("a.jsonl", 1)["partialFingerprints"] == moved["partialFingerprints"] == {FINGERPRINT_KEY: ROW_A}
    # Relative URI with forward slashes, percent-encoded.
    assert moved["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "data/other%20dir/b.jsonl"


# ---------------------------------------------------------------------------------------------------------- github


def test_toolkit_escaping():
    # Same results as @actions/core escapeData / escapeProperty.
    assert escape_data("100%\r\nnext::x, y") == "100%25%0D%0Anext::x, y"
    assert escape_property("a:b,c%\r\n") == "a%3Ab%2Cc%25%0D%0A"
    assert escape_data(None) == ""


def _parse_command(line: str) -> tuple[str, dict[str, str], str]:
    """Parse a workflow command as the runner does, and unescape it."""
    m = re.fullmatch(r"::(\w+)(?: ([^:]*))?::(.*)", line)
    assert m, line

    def unesc(s: str) -> str:
        return s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")

    props = {}
    for part in (m.group(2) or "").split(","):
        if part:
            k, v = part.split("=", 1)
            props[k] = unesc(v)
    data = m.group(3).replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
    return m.group(1), props, data


def test_github_annotations_escape_row_text():
    f = Finding(ROW_A, "data/we,ird:name 100%.jsonl", 9, 0.9, 0.25, NASTY)
    out = render(LintResult(0.25, "m", 3, 3, [f]), "github", excerpt_chars=200)
    lines = out.splitlines()
    assert len(lines) == 2  # one annotation and the summary notice: row text cannot add lines
    assert all(line.startswith(("::error ", "::notice ")) for line in lines)
    assert not any(line.startswith("::add-mask") for line in lines)
    cmd, props, data = _parse_command(lines[0])
    assert cmd == "error"
    assert props == {"file": "data/we,ird:name 100%.jsonl", "line": "9", "title": "GS001 FIHS above threshold"}
    assert "file=data/we%2Cird%3Aname 100%25.jsonl," in lines[0]
    assert "100% sure," in data and "how:: to do it" in data and "::add-mask::secret" in data
    assert "\n" not in data and "\r" not in data  # the excerpt is one line before escaping, too
    assert "%25 sure" in lines[0]


def test_github_limits_annotations(with_findings):
    many = [Finding(f"{i:064x}", "d.jsonl", i + 1, 1.0 - i / 100, 0.25, f"row {i}") for i in range(13)]
    r = LintResult(0.25, "m", 100, 100, many, accepted=with_findings.accepted)
    lines = render(r, "github").splitlines()
    errors = [line for line in lines if line.startswith("::error")]
    assert len(errors) == 10
    assert "line=1," in errors[0] and "line=10," in errors[-1]  # highest scores first
    assert lines[-1].startswith("::notice ") and "3 more flagged rows not annotated" in lines[-1]
    assert "13 flagged" in lines[-1] and "1 accepted" in lines[-1]
    assert len([x for x in render(r, "github", max_annotations=2).splitlines() if x.startswith("::error")]) == 2


def test_github_clean(clean, nothing):
    for r in (clean, nothing):
        lines = render(r, "github").splitlines()
        assert len(lines) == 1 and lines[0].startswith("::notice ") and "0 flagged" in lines[0]


def test_github_summary(with_findings):
    md = github_summary(with_findings)
    assert "Content warning" in md
    assert "| `a1a1a1a1a1a1` | `data/train.jsonl:3` | +0.9300 | +0.6800 |" in md
    assert "threshold **+0.2500**" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| `")]
    for row in table_rows:  # escaped pipes: every row has the header's number of cells
        assert len(re.split(r"(?<!\\)\|", row)) in (7, 8)
    assert "step 1 \\| step 2" in md
    assert "### Accepted rows" in md and "from a safety paper, \\| reviewed" in md
    hist = md[md.index("```text") :]
    assert "threshold +0.2500" in hist and hist.count("|") > 5


def test_github_summary_escapes_markdown_and_mentions():
    f = Finding(ROW_A, "d.jsonl", 1, 0.9, 0.25, "ping @octocat <img src=x> [link](http://e) `code`")
    md = github_summary(LintResult(0.25, "m", 1, 1, [f], scores=[0.9]))
    assert not re.search(r"(?<!\\)@octocat", md) and "\\@octocat" in md
    assert not re.search(r"(?<!\\)<img", md) and "[link](" not in md


def test_github_summary_clean(clean, nothing):
    md = github_summary(clean)
    assert "no rows above the FIHS threshold" in md and "Flagged rows" not in md and "Content warning" not in md
    assert "threshold +0.2500" in md  # histogram still drawn
    assert "Score distribution" not in github_summary(nothing)


def test_text_histogram_marks_threshold():
    hist = text_histogram([0.0, 0.1, 0.2, 0.3, 0.9], 0.25, n=8).splitlines()
    marker = next(i for i, line in enumerate(hist) if "threshold +0.2500" in line)
    counts_below = sum(int(line.split("|")[1].split()[0]) for line in hist[:marker])
    counts_above = sum(int(line.split("|")[1].split()[0]) for line in hist[marker + 1 :])
    assert (counts_below, counts_above) == (3, 2)


def test_report_does_not_import_torch():
    code = (
        "import sys, gradshield_lint.report, gradshield_lint.hub; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
