"""The scoring stage's option and result records, torch-free: the configuration, the CLI and a check that scores
no rows build and read them without importing torch (`fihs` and `proxy` re-export them where they are used)."""

from __future__ import annotations

from dataclasses import dataclass

from gradshield_lint.schemas import config_default

PROBE_MAX_LENGTH = 256
"""Tokens of a probe's prompt and reply that H reads (probes are short: a prompt and an opening)."""


@dataclass(frozen=True)
class ProxyOptions:
    """Which proxy H is and how it is computed; the defaults are the configuration schema's (`scoring.*`)."""

    proxy: str = config_default("scoring", "proxy")
    comply_token: str = config_default("scoring", "first_token", "comply")
    refuse_token: str = config_default("scoring", "first_token", "refuse")
    max_length: int = PROBE_MAX_LENGTH
    batch_size: int = config_default("scoring", "batch_size")


@dataclass(frozen=True)
class ScoreOptions:
    """How rows are scored; the defaults are the configuration schema's (`scoring.*`)."""

    method: str = config_default("scoring", "method")
    normalize: bool = config_default("scoring", "normalize")
    loss_reduction: str = config_default("scoring", "loss_reduction")
    batch_size: int = config_default("scoring", "batch_size")
    # persample's backward passes: at most this many tokens each ("auto": see fihs.backward_tokens)
    batch_tokens: int | str | None = config_default("scoring", "batch_tokens")
    # ε moves the selected weights by this fraction of their norm. None: calibrated (see `calibrate_fd_step`).
    # No fixed value suits every model: a large step errs by curvature, a small one drowns in float32 rounding of
    # the loss, and where the balance lies differs by orders of magnitude between the embedded model and a tiny
    # test model (bench/QUALITY.md, "Figures behind the code's defaults").
    fd_relative_step: float | None = None


@dataclass(frozen=True)
class RowScore:
    """`fihs` is the score used for decisions: the raw dot product, or the cosine when normalized.

    A row scored in several windows (`scoring.truncation: windows`) has its worst window's numbers (`fihs`, `raw`,
    `grad_norm`, `n_tokens`, `n_target`: one window's, so they agree with each other) and the count in `windows`.
    `truncated`: part of the row before its last reply token was scored in no window (encode.py)."""

    fihs: float
    raw: float
    grad_norm: float | None
    truncated: bool
    n_tokens: int
    n_target: int
    windows: int = 1
