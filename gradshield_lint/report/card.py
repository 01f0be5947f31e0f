"""The dataset-card report: the Markdown section between the gradshield markers and the score histogram PNG.

`hub.py` puts them into the card; this module only renders them.
"""

from __future__ import annotations

import math
from pathlib import Path

from gradshield_lint.fmt import fmt_score, plural
from gradshield_lint.io.atomic import atomic_path
from gradshield_lint.lint.findings import LintResult
from gradshield_lint.report._common import (
    CONTENT_WARNING,
    code_span,
    fmt_num,
    limit_rows,
    md_escape,
    split,
    threshold_note,
)
from gradshield_lint.report.histogram import text_histogram
from gradshield_lint.report.markdown import rows_table

SECTION_START = "<!-- gradshield:start -->"
SECTION_END = "<!-- gradshield:end -->"
IMAGE_NAME = "gradshield-scores.png"


def card_section(
    result: LintResult,
    *,
    image_link: str | None,
    max_rows: int = 10,
    excerpt_chars: int = 80,
    base: str | None = None,
    line_break: str = "\n",
) -> str:
    """The section, markers included, without a trailing line break.

    `image_link` is the relative link to the histogram image (None: a text histogram instead). `base` is the
    directory that file paths are shown relative to (the card's directory).
    """
    s = split(result)
    rows = sorted(s.flagged + s.accepted, key=lambda f: (-(f.fihs if math.isfinite(f.fihs) else -math.inf), f.id))
    out = [
        SECTION_START,
        "## Safety-alignment lint (gradshield-lint)",
        "",
        "*This section is written by [gradshield-lint](https://arxiv.org/abs/2605.14194) and replaced on each run; "
        "edits inside it are lost.*",
        "",
    ]
    n_flag, n_acc = len(s.flagged), len(s.accepted)
    summary = (
        f"{result.rows_scored} of {plural(result.rows_total, 'row')} scored for their Finetuning Implicit Harmfulness Score "
        f"(FIHS: how much one gradient step on the row would erode the safety alignment of the scoring model). "
        f"**{n_flag}** {'rows lie' if n_flag != 1 else 'row lies'} above the adaptive threshold {fmt_num(result.threshold)}"
        + (f" ({md_escape(threshold_note(result))})" if threshold_note(result) else "")
        + (f"; {n_acc} more {'were' if n_acc != 1 else 'was'} accepted by a reviewer." if n_acc else ".")
    )
    from gradshield_lint.report.verdictfmt import verdict_lines

    said = [f"**{md_escape(t)}**" if i == 0 else md_escape(t) for i, t in enumerate(verdict_lines(result))]
    out += [x for t in said for x in (t, "")]
    out += [summary, ""]
    meta = []
    if result.model:
        meta.append(f"scoring model {code_span(result.model)}")
    if result.proxy:
        meta.append(f"proxy {code_span(result.proxy)}")
    if result.probe_set:
        meta.append(f"probe set {code_span(result.probe_set)}")
    if meta:
        out += ["Scored with " + ", ".join(meta) + ".", ""]
    if rows:
        shown = limit_rows(rows, max_rows)
        out += [
            f"> **{CONTENT_WARNING}**",
            "",
            "### Highest-scoring rows",
            "",
            rows_table(shown, excerpt_chars=excerpt_chars, status=True, base=base, margin=False),
            "",
        ]
        if len(rows) > len(shown):
            out += [f"…and {len(rows) - len(shown)} more rows above the threshold.", ""]
    out += ["### Score distribution", ""]
    if image_link is not None and result.scores:
        out += [
            f"![Histogram of the FIHS of {plural(len(result.scores), 'row')}, threshold {fmt_num(result.threshold)} marked]"
            f"({image_link})",
            "",
        ]
    elif result.scores:
        out += ["```text", text_histogram(result.scores, result.threshold), "```", ""]
    else:
        out += ["No rows were scored in this run.", ""]
    out.append(SECTION_END)
    # Row text and reasons are single-line by construction (clean_text), so the only line breaks are ours.
    return "\n".join(out).replace("\n", line_break)


def write_histogram_png(scores: list[float], threshold: float | None, path: Path) -> Path:
    """Write `histogram_png` to `path` (a temporary name, then renamed)."""
    path = Path(path)
    data = histogram_png(scores, threshold)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def histogram_png(scores: list[float], threshold: float | None) -> bytes:
    """A PNG histogram of `scores` with the threshold marked, drawn with matplotlib's Agg backend, in memory.

    Uses `Figure` + `FigureCanvasAgg` directly (no pyplot, no global backend switch). No timestamp or version
    metadata, so equal inputs give equal bytes.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [x for x in scores if isinstance(x, (int, float)) and math.isfinite(x)]
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t = threshold if threshold is not None and math.isfinite(threshold) else None
    if xs:
        lo, hi = min(xs + ([t] if t is not None else [])), max(xs + ([t] if t is not None else []))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = [lo + (hi - lo) * i / 40 for i in range(41)]
        below = [x for x in xs if t is None or x < t]
        above = [x for x in xs if t is not None and x >= t]
        counts, _, _ = ax.hist(
            [below, above],
            bins=edges,
            stacked=True,
            color=["#4c72b0", "#c44e52"],
            label=["below threshold", "at or above threshold"],
        )
        totals = [c for c in counts[-1] if c > 0]
        if totals and max(totals) > 50 * min(totals):  # a few flagged rows among many: keep them visible
            ax.set_yscale("log")
    if t is not None:
        ax.axvline(t, color="black", linestyle="--", linewidth=1.2, label=f"threshold {fmt_score(t)}")
    ax.set_xlabel("FIHS")
    ax.set_ylabel("rows")
    ax.set_title(f"gradshield-lint: FIHS of {plural(len(xs), 'row')}")
    if xs or t is not None:
        ax.legend(loc="upper right", fontsize="small")
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.16, top=0.9)  # fixed layout: faster than tight_layout
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
