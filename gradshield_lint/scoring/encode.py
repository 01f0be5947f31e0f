"""Rows -> token tensors: the chat template applied, the loss on assistant turns only, a stated truncation policy.

A row of at most `max_length` tokens is scored whole, as one window. A longer row, by `truncation` (tested):
- `windows` (the default): whole, in windows of at most `max_length` tokens. The first window is the one `head`
  keeps; each further one is the row's prompt (the tokens before its first reply token, cut to its last
  `max_length // 2` tokens when longer, as `head` cuts a prompt too long to leave room for the reply) followed by
  the next reply tokens no window holds yet. Where tokens that are no target come first (a later user turn), the
  window starts up to half its room before the next target, so a reply keeps the end of the text it answers.
  Every target token is a target in exactly one window; the row scores as its worst window (fihs.score_windows).
- `head` (`right` is its former name): the first `max_length` tokens. If that cut leaves no assistant token to
  learn from (a very long prompt), the window is moved so that the first assistant turn starts half-way into it.
- `error`: `RowTooLong`.
A row is marked `truncated` when a token before its last target is in no window: under `head` every row longer
than `max_length`, under `windows` only a row whose prompt is too long for the first window (its start is cut).

The row is rendered once, and each turn's place in it is found from renders of that turn beside the one before
it, so the cost grows with the row's length, not with its square (`_spans_by_turns`).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported where batches are made: encoding a row needs only the tokenizer
    import torch

# Used when a tokenizer has no chat template (a base model): plain ChatML, the most common convention.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRUNCATION_MODES = ("windows", "head", "right", "error")
"""`scoring.truncation`'s values: `right` is `head`'s former name, kept so that older configurations still read."""


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
            f"row has {n_tokens} tokens, more than max_length={max_length} (set scoring.truncation: windows to "
            "score it whole in windows, or head to score its first max_length tokens)"
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


def _spans_by_prefixes(tokenizer: Any, messages: Sequence[dict[str, str]], full: str) -> list[tuple[int, int]]:
    """Character spans of every assistant turn in `full`, end-of-turn marker included.

    The template is rendered for each prefix of the conversation: the span of turn i runs from the end of
    "messages[:i] + generation prompt" to the end of "messages[:i+1]". Templates that are not prefix-stable there
    (e.g. one that injects a default system prompt only when the conversation starts with the assistant) fall back
    to locating the turn's content in the rendered text. Each prefix is rendered whole: quadratic in the number of
    turns, so used only where `_spans_by_turns` cannot tell the turns apart.
    """

    def by_prefix(i: int, cursor: int) -> tuple[int, int] | None:
        head = render_chat(tokenizer, messages[:i], generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1])
        if full.startswith(upto) and upto.startswith(head) and len(head) >= cursor:
            return len(head), len(upto)
        return None

    return _walk_spans(messages, full, by_prefix)


def _walk_spans(
    messages: Sequence[dict[str, str]], full: str, known: Callable[[int, int], tuple[int, int] | None]
) -> list[tuple[int, int]]:
    """Walk the turns in order: `known(i, cursor)` gives assistant turn i's span (i > 0) where the renders tell it,
    else the turn's content is located in `full` after the previous turn."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            if m["content"]:
                found = full.find(m["content"], cursor)
                if found >= 0:
                    cursor = found + len(m["content"])
            continue
        span = known(i, cursor) if i > 0 else None
        if span is None:
            found = full.find(m["content"], cursor)
            if found < 0:
                raise NoTargetTokens("the chat template dropped an assistant turn")
            span = (found, found + len(m["content"]))
        spans.append(span)
        cursor = span[1]
    return spans


def _render_or_none(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool = False) -> str | None:
    try:
        return render_chat(tokenizer, messages, generation_prompt=generation_prompt)
    except Exception:  # a template that refuses a part of a conversation (roles must alternate): no fast path
        return None


def _turn_text(tokenizer: Any, messages: Sequence[dict[str, str]], i: int) -> tuple[str, int] | None:
    """Turn i's text as the template renders it after the turn before it, and the length of the generation header
    that text starts with (-1: none; only a turn that is no reply may lack it): from renders of one or two turns, so
    that a template that wants the roles to alternate from the start sees them alternate."""
    for back in (1, 2):
        if i - back < 0:
            break
        context = messages[i - back : i]
        before = _render_or_none(tokenizer, context)
        upto = _render_or_none(tokenizer, messages[i - back : i + 1])
        if before is None or upto is None or not upto.startswith(before):
            continue
        header = -1
        opened = _render_or_none(tokenizer, context, generation_prompt=True)
        if opened is not None and opened.startswith(before) and upto.startswith(opened):
            header = len(opened) - len(before)
        return upto[len(before) :], header
    return None


def _spans_by_turns(tokenizer: Any, messages: Sequence[dict[str, str]], full: str) -> list[tuple[int, int]] | None:
    """`_spans_by_prefixes`' spans from renders of at most three turns each: linear in the row's length.

    The prefix renders find where turn i ends in `full` and where its reply starts after the generation header.
    A template that renders turn by turn (each turn's text depends on that turn and its neighbours, not on the
    whole conversation) gives those places from a render of the turn beside the one before it; that the turns'
    texts so found put `full` back together, in order and whole, is checked. None where they do not, or where a
    reply's text does not start with the generation header: the prefix renders are then the only safe answer."""
    first = _render_or_none(tokenizer, messages[:1])
    if first is None or not full.startswith(first):
        return None
    ends = [len(first)]  # where turn i's text ends in `full`
    headers = [-1]  # the generation header turn i's text starts with
    for i in range(1, len(messages)):
        got = _turn_text(tokenizer, messages, i)
        if got is None or not full.startswith(got[0], ends[-1]):
            return None
        if messages[i]["role"] == "assistant" and got[1] < 0:
            return None
        ends.append(ends[-1] + len(got[0]))
        headers.append(got[1])
    if ends[-1] != len(full):
        return None

    def by_turn(i: int, cursor: int) -> tuple[int, int] | None:
        start = ends[i - 1] + headers[i]
        return (start, ends[i]) if start >= cursor else None

    return _walk_spans(messages, full, by_turn)


def assistant_spans(tokenizer: Any, messages: Sequence[dict[str, str]], full: str) -> list[tuple[int, int]]:
    """Character spans of every assistant turn in `full` (the rendered `messages`), end-of-turn marker included."""
    spans = _spans_by_turns(tokenizer, messages, full)
    return _spans_by_prefixes(tokenizer, messages, full) if spans is None else spans


@dataclass(frozen=True)
class Located:
    """An `Encoded` row and, per kept token, where it came from: `message[i]` is the index of the assistant message
    token i belongs to (-1 for any other token) and `offsets[i]` its [start, end) characters in that message's
    content (clipped to it). Used to map per-token numbers back to the text of a reply (explain.py)."""

    encoded: Encoded
    message: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Windowed:
    """A row as the windows it is scored in (one when it fits in max_length) and whether any of its tokens before
    its last target is in none of them."""

    windows: tuple[Located, ...]
    truncated: bool

    @property
    def encoded(self) -> list[Encoded]:
        return [w.encoded for w in self.windows]


@dataclass(frozen=True)
class _Tokens:
    """The whole row, per token: id, target or not, assistant message and offsets in its content."""

    ids: list[int]
    mask: list[bool]
    where: list[int]
    local: list[tuple[int, int]]


def _tokens(tokenizer: Any, messages: Sequence[MessageLike]) -> _Tokens:
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    full = render_chat(tokenizer, msgs)
    spans = assistant_spans(tokenizer, msgs, full)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    # where each assistant message's content starts in `full` (the span may begin with a role header)
    assistant = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    starts = []
    for (s0, e0), i in zip(spans, assistant):
        found = full.find(msgs[i]["content"], s0, e0) if msgs[i]["content"] else -1
        starts.append(found if found >= 0 else s0)
    # spans are disjoint and in order: a token's span by bisection, not by a scan of every span
    span_starts = [s for s, _ in spans]
    mask: list[bool] = []
    where: list[int] = []
    local: list[tuple[int, int]] = []
    for a, b in (tuple(o) for o in enc["offset_mapping"]):
        k = bisect_right(span_starts, a) - 1
        if k < 0 or a >= spans[k][1]:
            mask.append(False)
            where.append(-1)
            local.append((0, 0))
            continue
        n = len(msgs[assistant[k]]["content"])
        mask.append(True)
        where.append(assistant[k])
        local.append((min(max(a - starts[k], 0), n), min(max(b - starts[k], 0), n)))
    if ids and mask[0]:
        mask[0] = False  # the first token has no context to be predicted from
    if not any(mask):
        raise NoTargetTokens("row has no assistant tokens to learn from")
    return _Tokens(ids, mask, where, local)


def _window_ranges(mask: Sequence[bool], max_length: int, truncation: str) -> tuple[list[list[range]], bool]:
    """The windows of a row, each as the ranges of token positions it holds, and whether a token before the last
    target is in none (the policy in the module's docstring)."""
    n = len(mask)
    if n <= max_length:
        return [[range(n)]], False
    if truncation == "error":
        raise RowTooLong(n, max_length)
    first = mask.index(True)
    lo = 0 if any(mask[1:max_length]) else max(0, min(first - max_length // 2, n - max_length))
    windows = [[range(lo, lo + max_length)]]
    if truncation != "windows":
        return windows, True
    targets = [t for t in range(n) if mask[t]]
    prompt = range(max(0, first - max_length // 2), first)
    room = max_length - len(prompt)  # at least half the budget: every window holds new targets
    covered, gaps = lo + max_length, lo > 0
    while (k := bisect_left(targets, covered)) < len(targets):
        start = max(covered, targets[k] - room // 2)
        gaps = gaps or start > covered
        windows.append([prompt, range(start, min(start + room, n))])
        covered = start + room
    return windows, gaps


def locate_windows(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "windows"
) -> Windowed:
    """The row's windows by the module's policy, each token with its place in the assistant messages' content."""
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"unknown truncation {truncation!r}: one of {', '.join(TRUNCATION_MODES)}")
    tok = _tokens(tokenizer, messages)
    ranges, truncated = _window_ranges(tok.mask, max_length, truncation)
    out = []
    for parts in ranges:
        idx = [p for r in parts for p in r]
        window_mask = [tok.mask[p] for p in idx]
        window_mask[0] = False  # no context to predict it from, in this window
        out.append(
            Located(
                Encoded(tuple(tok.ids[p] for p in idx), tuple(window_mask), truncated=truncated),
                tuple(tok.where[p] for p in idx),
                tuple(tok.local[p] for p in idx),
            )
        )
    return Windowed(tuple(out), truncated)


def encode_windows(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "windows"
) -> list[Encoded]:
    """The windows a row is scored in (`locate_windows` without the offsets)."""
    return locate_windows(tokenizer, messages, max_length=max_length, truncation=truncation).encoded


def encode_with_offsets(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "right"
) -> Located:
    """The row's first window with each token's place in the assistant messages' content: the whole row when it
    fits, else what `head` keeps (under `windows` too: `locate_windows` gives them all)."""
    mode = "head" if truncation == "windows" else truncation
    return locate_windows(tokenizer, messages, max_length=max_length, truncation=mode).windows[0]


def encode_conversation(
    tokenizer: Any, messages: Sequence[MessageLike], *, max_length: int, truncation: str = "right"
) -> Encoded:
    """Apply the chat template and mark assistant-turn tokens as targets: the row's first window
    (`encode_with_offsets`; `encode_windows` for all of them)."""
    return encode_with_offsets(tokenizer, messages, max_length=max_length, truncation=truncation).encoded


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
