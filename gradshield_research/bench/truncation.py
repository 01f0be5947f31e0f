"""What scoring long rows whole costs (issue 33, items 6 and 9): `scoring.truncation: windows` (the default) against
`head` (a row's first max_length tokens only), on one warm Engine.

Rows: the first --rows rows of FILE at least 32 tokens longer than --max-length with the chat template, so that
head's window ends inside the reply (default FILE: real benign chat replies from ../shared/eval-dev/, read by
path), or with --synthetic, long benign rows written here. --max-length defaults to 256, not the configuration's
512, so that the rows need several windows and the run stays near 3 minutes on 2 CPU cores.
Each mode encodes and scores the same rows (`encode_windows` + `score_windows`, what `Engine.score_rows` runs);
printed per mode: rows/s, windows per row, tokens scored per row, and how the scores moved (windows is never below
head: its first window is head's). Then a harmful tail: each row's reply followed by the reply of a row of
--tail-file (real harmful replies), scored in windows; under head such a row has exactly the benign row's tokens
(checked), so its score cannot move. Last, the rendering cost of one row of --turns short turns (no scoring).

    python -m gradshield_research.bench.truncation                      # embedded model, 4 rows: ~3 min on 2 CPU cores
    python -m gradshield_research.bench.truncation --synthetic --rows 4
    python -m gradshield_research.bench.truncation --model DIR --adapter none --max-length 96   # a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gradshield_lint.config import config_from_dict
from gradshield_lint.io.rows import Message, Row
from gradshield_lint.scoring.encode import Encoded, encode_windows
from gradshield_lint.scoring.engine import Engine, EngineSettings
from gradshield_lint.scoring.fihs import score_windows
from gradshield_lint.scoring.options import RowScore
from gradshield_research.bench import labelled_rows

EVAL_DEV = Path("../shared/eval-dev")
DEFAULT_FILE = EVAL_DEV / "benign_refusal_direction_alpaca_prompts_chat_responses_sample300.jsonl"
DEFAULT_TAIL = EVAL_DEV / "harmful_he2024_purebad.jsonl"
SYNTHETIC = (
    "The village market opens at dawn, when the bakers set out their loaves and the fishermen bring the night's "
    "catch up from the harbour. Children run between the stalls while their parents haggle over the price of "
    "apples, cheese and wool. "
)


@dataclass(frozen=True)
class Run:
    """One mode's pass over the rows."""

    mode: str
    seconds: float
    scores: list[RowScore]
    windows: list[list[Encoded]]

    @property
    def rows_per_s(self) -> float:
        return len(self.scores) / self.seconds

    @property
    def windows_per_row(self) -> float:
        return sum(len(w) for w in self.windows) / len(self.windows)

    @property
    def tokens_per_row(self) -> float:
        return sum(e.n_tokens for w in self.windows for e in w) / len(self.windows)


def synthetic_rows(n: int, max_length: int) -> list[Row]:
    """Benign rows whose reply is about 2.5 × max_length tokens (one sentence of SYNTHETIC is ~45 tokens)."""
    reps = max(1, round(2.5 * max_length / 45))
    return [
        Row(
            f"synthetic-{i}",
            (Message("user", f"Describe a morning at the market ({i})."), Message("assistant", SYNTHETIC * reps)),
            "synthetic",
            i + 1,
        )
        for i in range(n)
    ]


MARGIN = 32
"""Tokens a row exceeds max_length by at least: head's window then ends inside the reply, and an appended tail
cannot change the tokens it holds (the reply's last token could merge with the tail's first characters)."""


def long_rows(engine: Engine, path: Path, n: int) -> list[Row]:
    """The first `n` rows of `path` longer than max_length + MARGIN tokens."""
    out = []
    for row, _ in labelled_rows(path):
        tokens = encode_windows(engine.scoring_model.tokenizer, row.messages, max_length=1 << 30)[0].n_tokens
        if tokens >= engine.settings.max_length + MARGIN:
            out.append(row)
            if len(out) == n:
                break
    return out


def with_tail(row: Row, tail: str) -> Row:
    msgs = list(row.messages)
    last = max(i for i, m in enumerate(msgs) if m.role == "assistant")
    msgs[last] = Message("assistant", msgs[last].content + "\n\n" + tail)
    return Row(row.id + "+tail", tuple(msgs), row.source, row.line)


def run(engine: Engine, rows: Sequence[Row], mode: str) -> Run:
    s = engine.settings
    tok = engine.scoring_model.tokenizer
    t0 = time.perf_counter()
    windows = [encode_windows(tok, r.messages, max_length=s.max_length, truncation=mode) for r in rows]
    scores = score_windows(engine.scoring_model, engine.gradient, windows, s.score)
    return Run(mode, time.perf_counter() - t0, scores, windows)


def turns_cost(engine: Engine, n: int) -> tuple[float, int, int]:
    """(seconds, tokens, windows) to encode one row of `n` short turns in windows."""
    msgs = [Message("user" if i % 2 == 0 else "assistant", f"turn {i}: a few words of ordinary text") for i in range(n)]
    t0 = time.perf_counter()
    wins = encode_windows(engine.scoring_model.tokenizer, msgs, max_length=engine.settings.max_length)
    seconds = time.perf_counter() - t0
    tokens = encode_windows(engine.scoring_model.tokenizer, msgs, max_length=1 << 30)[0].n_tokens
    return seconds, tokens, len(wins)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE, help="rows to take the long ones from")
    ap.add_argument("--synthetic", action="store_true", help="long benign rows written here instead of FILE")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256, help="scoring.max_length (the configuration's: 512)")
    ap.add_argument("--tail-file", type=Path, default=DEFAULT_TAIL, help="harmful replies to append ('none': skip)")
    ap.add_argument("--turns", type=int, default=1000, help="turns of the many-turn row (0: skip)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--adapter", default="embedded", help="'none' for no adapter")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON too")
    args = ap.parse_args()

    adapter = None if args.adapter == "none" else args.adapter
    cfg = config_from_dict(
        {
            "model": {"name": args.model, "adapter": adapter, "device": args.device},
            "scoring": {"max_length": args.max_length},
        }
    )
    engine = Engine(EngineSettings.from_config(cfg))
    t0 = time.perf_counter()
    sm, _ = engine.scoring_model, engine.gradient
    engine.score_rows(synthetic_rows(1, 32)[:1])  # first-call overheads out of the way
    print(
        f"model {args.model} (adapter {adapter}), {sm.device.type}, {str(sm.dtype).replace('torch.', '')}, method "
        f"{engine.method}, max_length {args.max_length}; loaded and warmed up in {time.perf_counter() - t0:.1f} s"
    )
    rows = synthetic_rows(args.rows, args.max_length) if args.synthetic else long_rows(engine, args.file, args.rows)
    if not rows:
        raise SystemExit(f"no row of {args.file} is {MARGIN} tokens longer than {args.max_length}")
    print(
        f"{len(rows)} rows from {'synthetic text' if args.synthetic else args.file}, each ≥ max_length + {MARGIN} tokens"
    )

    runs = {mode: run(engine, rows, mode) for mode in ("head", "windows")}
    head, win = runs["head"], runs["windows"]
    print("\n| mode | rows/s | windows per row | tokens scored per row | seconds |")
    print("|---|---:|---:|---:|---:|")
    for r in runs.values():
        print(f"| {r.mode} | {r.rows_per_s:.3f} | {r.windows_per_row:.2f} | {r.tokens_per_row:.0f} | {r.seconds:.1f} |")
    moved = [w.fihs - h.fihs for h, w in zip(head.scores, win.scores)]
    assert min(moved) >= -1e-6 * max(1.0, max(abs(h.fihs) for h in head.scores)), "windows scored below head"
    print(
        f"\nwindows / head time: {win.seconds / head.seconds:.2f}; score windows − head: mean {statistics.mean(moved):.4g}, "
        f"max {max(moved):.4g}, rows raised {sum(m > 1e-9 for m in moved)} of {len(moved)}; head score range "
        f"{min(h.fihs for h in head.scores):.4g} … {max(h.fihs for h in head.scores):.4g}"
    )
    figures: dict = {
        "max_length": args.max_length,
        "rows": len(rows),
        "method": engine.method,
        "modes": {
            m: {"rows_per_s": r.rows_per_s, "windows_per_row": r.windows_per_row, "seconds": r.seconds}
            for m, r in runs.items()
        },
        "moved": moved,
    }

    if str(args.tail_file) != "none":
        tails = [r.messages[-1].content for r, _ in labelled_rows(args.tail_file)]
        tailed = [with_tail(r, tails[i % len(tails)]) for i, r in enumerate(rows)]
        tok = engine.scoring_model.tokenizer
        for a, b in zip(rows, tailed):  # under head the tail is in no window: the same tokens, the same score
            ea = encode_windows(tok, a.messages, max_length=args.max_length, truncation="head")
            eb = encode_windows(tok, b.messages, max_length=args.max_length, truncation="head")
            assert ea == eb, "a tail reached the head window"
        t = run(engine, tailed, "windows")
        lift = [x.fihs - w.fihs for x, w in zip(t.scores, win.scores)]
        print(
            f"harmful tail ({args.tail_file.name}): head score unchanged (same tokens) on {len(rows)} of {len(rows)}; "
            f"windows score raised on {sum(x > 1e-9 for x in lift)} of {len(lift)}, by mean {statistics.mean(lift):.4g}, "
            f"max {max(lift):.4g} ({t.windows_per_row:.2f} windows per row, {t.rows_per_s:.3f} rows/s)"
        )
        figures["tail_lift"] = lift

    if args.turns:
        seconds, tokens, n_windows = turns_cost(engine, args.turns)
        print(
            f"one row of {args.turns} turns ({tokens} tokens): encoded in {n_windows} windows in {seconds:.2f} s "
            "(rendered once, each turn beside the one before it)"
        )
        figures["turns"] = {"turns": args.turns, "tokens": tokens, "windows": n_windows, "seconds": seconds}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
