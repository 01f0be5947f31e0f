"""Rows -> token tensors: the chat template applied, the loss on assistant turns only, a stated truncation policy.

Truncation policy (tested): a row longer than `max_length` tokens keeps its first `max_length` tokens. If that cut
leaves no assistant token to learn from (a very long prompt), the window is moved instead so that the first
assistant turn starts half-way into it: the end of the prompt and the start of the reply are kept. Either way the
row is marked `truncated`. With `truncation="error"` such a row raises `RowTooLong` instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported where batches are made: encoding a row needs only the tokenizer
    import torch

# Used when a tokenizer has no chat template (a base model): plain ChatML, the most common convention.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class MessageLike(Protocol):
    """A chat message: `io.rows.Message`, or anything with a role and a content."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


class RowTooLong(ValueError):
    """A row exceeds max_length while truncation is "error"."""

    def __init__(self, n_tokens: int, max_length: int) -> None:
        super().__init__(
            f"row has {n_tokens} tokens, more than max_length={max_length} (set scoring.truncation: right to truncate)"
        )
        self.n_tokens = n_tokens
        self.max_length = max_length


class NoTargetTokens(ValueError):
    """A row whose assistant turns are empty after templating: there is nothing to finetune on."""


@dataclass(frozen=True)
class Encoded:
    """Token ids and, per position, whether that token is a training target (an assistant-turn token)."""

    input_ids: tuple[int, ...]
    target_mask: tuple[bool, ...]
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(self.target_mask[1:])


def chat_template_of(tokenizer: Any) -> str:
    return str(tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE)


def chat_template_hash(tokenizer: Any) -> str:
    return hashlib.sha256(chat_template_of(tokenizer).encode("utf-8")).hexdigest()[:16]


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool = False) -> str:
    """`messages` (role/content dicts) as the text the chat template renders (the fallback template for a
    tokenizer without one); `generation_prompt` adds the assistant header a reply starts after."""
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=generation_prompt,
        chat_template=chat_template_of(tokenizer),
    )


def _assistant_spans(tokenizer: Any, messages: Sequence[dict[str, str]], full: str) -> list[tuple[int, int]]:
    """Character spans of every assistant turn in `full`, end-of-turn marker included.

    The template is rendered for each prefix of the conversation: the span of turn i runs from the end of
    "messages[:i] + generation prompt" to the end of "messages[:i+1]". Templates that are not prefix-stable there
    (e.g. one that injects a default system prompt only when the conversation starts with the assistant) fall back
    to locating the turn's content in the rendered text.
    """
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            if m["content"]:
                found = full.find(m["content"], cursor)
                if found >= 0:
                    cursor = found + len(m["content"])
            continue
        start = end = -1
        if i > 0:
            head = render_chat(tokenizer, messages[:i], generation_prompt=True)
            upto = render_chat(tokenizer, messages[: i + 1])
            if full.startswith(upto) and upto.startswith(head) and len(head) >= cursor:
                start, end = len(head), len(upto)
        if start < 0:
            found = full.find(m["content"], cursor)
            if found < 0:
                raise NoTargetTokens("the chat template dropped an assistant turn")
            start, end = found, found + len(m["content"])
        spans.append((start, end))
        cursor = end
    return spans


def encode_conversation(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "right"
) -> Encoded:
    """Apply the chat template and mark assistant-turn tokens as targets; truncate by the module's policy."""
    return encode_with_offsets(tokenizer, messages, max_length=max_length, truncation=truncation).encoded


@dataclass(frozen=True)
class Located:
    """An `Encoded` row and, per kept token, where it came from: `message[i]` is the index of the assistant message
    token i belongs to (-1 for any other token) and `offsets[i]` its [start, end) characters in that message's
    content (clipped to it). Used to map per-token numbers back to the text of a reply (explain.py)."""

    encoded: Encoded
    message: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]


def encode_with_offsets(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "right"
) -> Located:
    """`encode_conversation`, keeping each token's place in the assistant messages' content."""
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    full = render_chat(tokenizer, msgs)
    spans = _assistant_spans(tokenizer, msgs, full)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offs: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    mask = [any(s <= a < e for s, e in spans) for a, _ in offs]
    if ids and mask[0]:
        mask[0] = False  # the first token has no context to be predicted from
    if not any(mask):
        raise NoTargetTokens("row has no assistant tokens to learn from")
    # where each assistant message's content starts in `full` (the span may begin with a role header)
    assistant = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    starts = []
    for (s0, e0), i in zip(spans, assistant):
        found = full.find(msgs[i]["content"], s0, e0) if msgs[i]["content"] else -1
        starts.append(found if found >= 0 else s0)
    where: list[int] = []
    local: list[tuple[int, int]] = []
    for a, b in offs:
        k = next((j for j, (s0, e0) in enumerate(spans) if s0 <= a < e0), -1)
        if k < 0:
            where.append(-1)
            local.append((0, 0))
            continue
        n = len(msgs[assistant[k]]["content"])
        where.append(assistant[k])
        local.append((min(max(a - starts[k], 0), n), min(max(b - starts[k], 0), n)))
    if len(ids) <= max_length:
        return Located(Encoded(tuple(ids), tuple(mask), truncated=False), tuple(where), tuple(local))
    if truncation == "error":
        raise RowTooLong(len(ids), max_length)
    if any(mask[1:max_length]):
        lo = 0
    else:
        first = mask.index(True)
        lo = max(0, min(first - max_length // 2, len(ids) - max_length))
    window_mask = list(mask[lo : lo + max_length])
    window_mask[0] = False
    return Located(
        Encoded(tuple(ids[lo : lo + max_length]), tuple(window_mask), truncated=True),
        tuple(where[lo : lo + max_length]),
        tuple(local[lo : lo + max_length]),
    )


@dataclass
class Batch:
    """Right-padded tensors for rows `indices` (positions in the caller's list)."""

    indices: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor  # bool, same shape; True where the token is a target

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.indices, self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device)
        )


def make_batches(
    encoded: Sequence[Encoded], batch_size: int, pad_id: int, max_tokens: int | None = None
) -> Iterator[Batch]:
    """Length-bucketed batches: rows sorted by length so a batch pads little; caller re-orders by `indices`. A
    batch holds at most `batch_size` rows and, with `max_tokens`, at most that many tokens counting padding (rows ×
    the longest row), but always at least one row."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: (encoded[i].n_tokens, i))
    groups: list[list[int]] = []
    for i in order:
        last = groups[-1] if groups else None
        # sorted by length: row i is the longest of any group it joins
        fits = last is not None and len(last) < batch_size
        if fits and last is not None and max_tokens is not None:
            fits = (len(last) + 1) * encoded[i].n_tokens <= max_tokens
        if fits and last is not None:
            last.append(i)
        else:
            groups.append([i])
    for idx in groups:
        width = max(encoded[i].n_tokens for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        tgt = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            e = encoded[i]
            n = e.n_tokens
            ids[r, :n] = torch.tensor(e.input_ids)
            att[r, :n] = 1
            tgt[r, :n] = torch.tensor(e.target_mask)
        yield Batch(idx, ids, att, tgt)
