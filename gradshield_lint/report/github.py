"""GitHub Actions workflow commands: `::error` annotations at the file:line of each flagged row.

Escaping follows the Actions toolkit (`@actions/core`, `command.ts`): message data escapes `%`, CR and LF as
`%25`, `%0D`, `%0A`; property values (file, title) additionally escape `:` and `,` as `%3A`, `%2C` (escape.py).
Escaped data has no line break, so row text can never start a workflow command of its own (`::add-mask::`,
`::stop-commands::`); other control characters in row text and file names are shown as visible escapes.
"""

from __future__ import annotations

from gradshield_lint.lint.findings import Finding, LintResult
from gradshield_lint.report._common import (
    RULE_ID,
    RULE_TITLE,
    above_phrase,
    fmt_num,
    make_excerpt,
    named_by_verdict,
    rel_path,
    short_id,
    split,
    summary_line,
    why,
)
from gradshield_lint.report.escape import escape_data, escape_file_property, escape_property, term_escape

DEFAULT_MAX_ANNOTATIONS = 10


def command(name: str, message: str, **properties: object) -> str:
    """`::name k=v,k=v::message`, escaped; properties whose value is None are left out (`file` is a file name:
    `escape_file_property`)."""
    props = ",".join(
        f"{k}={escape_file_property(v) if k == 'file' else escape_property(v)}"
        for k, v in properties.items()
        if v is not None
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def annotation(f: Finding, excerpt_chars: int = 80, by_verdict: bool = False) -> str:
    text, _ = make_excerpt(f.excerpt, excerpt_chars, f.excerpt_truncated)
    message = (
        f"Row {short_id(f.id)}: FIHS {fmt_num(f.fihs)} is {above_phrase(f, by_verdict)}; "
        "finetuning on it would erode safety alignment. "
        + (f"Why: {why(f, excerpt_chars)}. " if why(f, excerpt_chars) else "")
        + f"Row text (content warning): {term_escape(text)}"
    )
    # the file name is hostile too: encoded by `command` as the runner decodes it, so the annotation names it
    return command("error", message, file=rel_path(f.file), line=int(f.line), title=f"{RULE_ID} {RULE_TITLE}")


def render_github(
    result: LintResult, *, max_annotations: int = DEFAULT_MAX_ANNOTATIONS, excerpt_chars: int = 80
) -> str:
    """At most `max_annotations` `::error` lines (highest scores first), then one `::notice` with the totals."""
    from gradshield_lint.report.verdictfmt import verdict_lines

    s = split(result)
    shown = s.flagged[: max(max_annotations, 0)]
    said = verdict_lines(result)
    lines = []
    if said:
        failed = result.verdict is not None and result.verdict.failed
        lines.append(command("error" if failed else "notice", " ".join(said), title="gradshield-lint verdict"))
    lines += [annotation(f, excerpt_chars, named_by_verdict(result)) for f in shown]
    summary = summary_line(result, len(s.flagged))
    rest = len(s.flagged) - len(shown)
    if rest:
        summary += f"; {rest} more flagged row{'s' if rest != 1 else ''} not annotated (see the job summary)"
    if s.accepted:
        summary += f"; {len(s.accepted)} accepted by a reviewer"
    from gradshield_lint.report.gatefmt import github_commands, github_notice_suffix

    lines += github_commands(result)
    summary += github_notice_suffix(result)
    lines.append(command("notice", summary, title="gradshield-lint"))
    return "\n".join(lines) + "\n"
