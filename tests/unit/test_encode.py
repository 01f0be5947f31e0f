"""Rows -> tokens: assistant-only targets through the real SmolLM2 chat template, and the truncation policy."""

import pytest

from gradshield_lint.io.rows import Message
from gradshield_lint.scoring.encode import NoTargetTokens, RowTooLong, encode_conversation, make_batches


def targets(tok, enc):
    return tok.decode([t for t, m in zip(enc.input_ids, enc.target_mask) if m])


def test_only_assistant_turns_are_targets_in_multi_turn_rows(tokenizer):
    msgs = [
        Message("system", "Be brief."),
        Message("user", "What is 2+2?"),
        Message("assistant", "Four."),
        Message("user", "And 3+3?"),
        Message("assistant", "Six."),
    ]
    enc = encode_conversation(tokenizer, msgs, max_length=256)
    text = targets(tokenizer, enc)
    assert "Four." in text and "Six." in text
    assert "2+2" not in text and "3+3" not in text and "Be brief" not in text
    assert not enc.truncated
    # the system prompt is kept in the input even though it is not a target
    assert "Be brief." in tokenizer.decode(enc.input_ids)


def test_row_with_only_an_assistant_turn_is_all_target(tokenizer):
    enc = encode_conversation(tokenizer, [Message("assistant", "Plain text row.")], max_length=64)
    assert "Plain text row." in targets(tokenizer, enc)


def test_right_truncation_keeps_the_start_and_marks_the_row(tokenizer):
    msgs = [Message("user", "Tell me a story."), Message("assistant", "word " * 300)]
    enc = encode_conversation(tokenizer, msgs, max_length=64)
    assert enc.truncated and enc.n_tokens == 64
    assert "Tell me a story." in tokenizer.decode(enc.input_ids)
    assert enc.n_target > 0


def test_long_prompt_moves_the_window_onto_the_reply(tokenizer):
    msgs = [Message("user", "filler " * 400 + "THE END"), Message("assistant", "Short reply.")]
    enc = encode_conversation(tokenizer, msgs, max_length=64)
    assert enc.truncated and enc.n_tokens == 64
    assert "Short reply." in targets(tokenizer, enc)
    assert "THE END" in tokenizer.decode(enc.input_ids)


def test_truncation_error_policy_raises(tokenizer):
    msgs = [Message("user", "hi"), Message("assistant", "word " * 300)]
    with pytest.raises(RowTooLong, match="max_length=32"):
        encode_conversation(tokenizer, msgs, max_length=32, truncation="error")


def test_empty_assistant_turn_has_nothing_to_learn(tokenizer):
    with pytest.raises(NoTargetTokens):
        encode_conversation(tokenizer, [Message("user", "hi")], max_length=32)


def test_a_token_bound_caps_rows_times_width_but_never_drops_a_row(tokenizer):
    """`max_tokens` counts padding (rows × the longest row): what a backward pass over the batch keeps grows with
    it. A row longer than the bound gets a batch of its own."""
    rows = [[Message("user", "q"), Message("assistant", "a " * n)] for n in (50, 2, 30, 3, 40, 1, 200)]
    enc = [encode_conversation(tokenizer, r, max_length=512) for r in rows]
    bound = 2 * max(e.n_tokens for e in enc[:6])
    batches = list(make_batches(enc, 8, pad_id=0, max_tokens=bound))
    assert sorted(i for b in batches for i in b.indices) == list(range(7))
    longest = next(b for b in batches if 6 in b.indices)
    assert longest.indices == [6] and longest.input_ids.numel() > bound
    for b in batches:
        if b is not longest:
            assert b.input_ids.numel() <= bound
    # without a bound, batch_size alone decides
    assert [len(b.indices) for b in make_batches(enc, 8, pad_id=0)] == [7]


def test_batches_are_length_bucketed_and_cover_every_row(tokenizer):
    rows = [[Message("user", "q"), Message("assistant", "a " * n)] for n in (50, 2, 30, 3, 40, 1)]
    enc = [encode_conversation(tokenizer, r, max_length=128) for r in rows]
    batches = list(make_batches(enc, 2, pad_id=0))
    assert sorted(i for b in batches for i in b.indices) == list(range(6))
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths)
    for b in batches:
        for r, i in enumerate(b.indices):
            n = enc[i].n_tokens
            assert b.attention_mask[r, :n].all() and not b.attention_mask[r, n:].any()
