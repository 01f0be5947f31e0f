"""Why a row scored high, as data (torch-free: findings and reports carry it; `explain.py` computes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Explanation:
    """Why a row scored high (explain.py computes it for findings only).

    `category`: the probe category whose proxy the row's gradient step raises most (`categories`: the cosine of the
    row's −∇L with each category's ∇H_c, over the explanation's parameter subset; higher = pushes toward that
    category's compliance). `span_*`: the window of the reply whose tokens push hardest along ∇H, as character
    offsets [span_start, span_end) into the content of message `message` (0-based, the row's messages in order);
    `span_text` is that slice (untrusted row text: reports escape it). `span_share`: the window's share of the row's
    positive per-token push (1.0: all of it)."""

    category: str | None
    categories: dict[str, float]
    message: int
    span_start: int
    span_end: int
    span_text: str
    span_share: float
    span_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "categories": dict(self.categories),
            "span": {
                "message": self.message,
                "start": self.span_start,
                "end": self.span_end,
                "text": self.span_text,
                "share": self.span_share,
                "tokens": self.span_tokens,
            },
        }


__all__ = ["Explanation"]
