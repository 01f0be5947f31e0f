"""Hostile row text and file names never reach a terminal or a CI log raw (issue 12).

Escape sequences (ESC, CSI as C1 U+009B, OSC retitling, BEL), CR/LF, bidi overrides and zero-width characters in
a row or a file name are shown as visible escapes; no printed line made from them can start a GitHub workflow
command (``::`` after leading whitespace) or hold an old-style one (``##[``), except the GitHub reporter's own
annotations, whose message and properties are encoded as `@actions/core` encodes them. Checked on the text and
GitHub reports, the JSON/SARIF text, the real CLI's `score` summary (tiny model) and its error messages, with
real files whose names carry the payload.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import describe, make_repo, ordinary_rows, save_tiny_model, write_jsonl

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report import render

PAYLOAD = "\x1b[31mRED\x1b]0;owned\x07\x9b2J\r\n::error file=x::injected\u202egnp.exe\u200b\x00 ##[add-mask]secret"
HOSTILE_NAME = "\x1b[2J::warning::name\n::error::file\u202e.jsonl"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]")


def assert_log_safe(text: str, *, own_commands: tuple[str, ...] = ()) -> None:
    """No raw control/bidi character (LF only between lines), no line that starts a workflow command unless it
    is one of ours, and no old-style `##[` command anywhere."""
    assert not RAW.search(text), repr(RAW.search(text).group())
    for line in text.split("\n"):
        if line.lstrip().startswith("::"):
            assert line.startswith(own_commands) and own_commands, f"a workflow command from hostile text: {line!r}"
    assert "##[" not in text


def test_term_escape_shows_every_unsafe_character_visibly():
    from gradshield_lint.report.escape import term_escape

    out = term_escape(PAYLOAD)
    assert_log_safe(out)
    assert "\n" not in out and "\\x1b[31mRED" in out and "\\u202e" in out and "\\x9b" in out and "\\r\\n" in out
    assert term_escape("::error::x").startswith("\\x3a:") and term_escape("  ::x").startswith("  \\x3a:")
    assert term_escape("plain text, ünïcode, 中文: fine") == "plain text, ünïcode, 中文: fine"


def test_log_safe_and_error_text_guard_every_line():
    from gradshield_lint.report.escape import error_text, log_safe

    assert_log_safe(log_safe("ours\n   ::set-output name=x::y\n##[group]z"))
    exc = Exception(f"{HOSTILE_NAME}: not valid JSON\n  tried: a\n  tried: b")
    exc.file = HOSTILE_NAME
    out = error_text(exc)
    assert_log_safe(out)
    assert out.count("\n") == 2, out  # our own line breaks stay, the file name's are escaped


def _result(file: str, text: str, reason: str) -> LintResult:
    flagged = Finding("ab" * 32, file, 3, 0.9, 0.2, text)
    acc = Finding("cd" * 32, file, 7, 0.8, 0.2, text, accepted=True, reason=reason)
    return LintResult(
        threshold=0.2,
        threshold_method="mad",
        rows_total=9,
        rows_scored=9,
        findings=[flagged],
        accepted=[acc],
        scores=[0.9, 0.8, 0.1],
    )


@pytest.mark.parametrize("file", [HOSTILE_NAME, "::error::starts-the-line.jsonl", "ok.jsonl"])
def test_text_report_escapes_rows_reasons_and_file_names(file):
    out = render(_result(file, PAYLOAD, PAYLOAD), "text", max_rows=0)
    assert_log_safe(out)
    assert "owned" in out and "injected" in out  # shown, escaped, not dropped


def test_github_annotations_are_the_only_commands_and_are_encoded():
    file = "dir,with:colon%/" + HOSTILE_NAME
    out = render(_result(file, PAYLOAD, PAYLOAD), "github")
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 2 and lines[0].startswith("::error file=") and lines[1].startswith("::notice ")
    assert_log_safe(out, own_commands=("::error ", "::notice "))
    props, _, message = lines[0][len("::error ") :].partition("::")
    fields = dict(p.split("=", 1) for p in props.split(","))
    assert set(fields) == {"file", "line", "title"}  # the hostile ',' and ':' did not add or split properties
    assert fields["file"].startswith("dir%2Cwith%3Acolon%25/")
    decoded = message.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
    assert not RAW.search(decoded) and "\n" not in decoded  # the runner's decoding gives one safe line


def test_github_encoding_follows_actions_core():
    from gradshield_lint.report.github import escape_data, escape_property

    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_json_reports_print_safely_and_decode_to_the_same_text(fmt):
    res = _result(HOSTILE_NAME, "bidi \u202e and C1 \x9b and ##[add-mask]x", "ok")
    from gradshield_lint.report import report_dict, sarif_dict

    out = render(res, fmt)
    assert_log_safe(out)
    # only the spelling changed: the document decodes to exactly the report's data (hostile file name included)
    assert json.loads(out) == (report_dict(res) if fmt == "json" else sarif_dict(res))


# ------------------------------------------------------------------------------------------------ the real CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)


def test_score_summary_escapes_row_text_and_file_names(tmp_path, model_dir, monkeypatch):
    """`score` on a real file whose name and rows carry escape sequences and `::error::` lines: stderr's
    summary shows them escaped."""
    monkeypatch.setenv("GRADSHIELD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(2))
    name = "::error::x\x1b[31m\u202e.jsonl"
    rows = ordinary_rows(3)
    rows[1]["messages"][1]["content"] = PAYLOAD
    f = write_jsonl(repo.root / "data" / name, rows)
    r = repo.run("score", str(f.relative_to(repo.root)), "--top", "5")
    assert r.exit_code == 0, describe(r)
    assert_log_safe(r.stderr)
    assert "injected" in r.stderr and "\\x1b[31m" in r.stderr


def test_error_messages_escape_hostile_file_names(tmp_path, model_dir):
    """A broken dataset whose name carries a newline and `::error::`: exit 2, one escaped message."""
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(2))
    bad = repo.root / "data" / "bad\n::error::pwned\x1b[2J.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    r = repo.run("scan", str(Path("data") / bad.name))
    assert r.exit_code == 2, describe(r)
    assert_log_safe(r.stderr)
    assert "pwned" in r.stderr and "Traceback" not in r.stderr
