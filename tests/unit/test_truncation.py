"""Rows longer than max_length (issue 33, items 6 and 9): scored whole in windows by default, truncation reported in
every format, and a row of many turns rendered at a cost linear in its length.

The scores come from a tiny random llama whose ∇H is built from the probes of tests/helpers.py: a reply that is a
probe's compliance opening to that probe's prompt scores far above ordinary text (see helpers.py), so it serves as
the harmful tail a long benign reply can hide."""

from __future__ import annotations

import json

import pytest
from helpers import PROBES, cli_fixtures, describe, ordinary_rows, write_jsonl

from gradshield_lint.io.rows import Message
from gradshield_lint.scoring import encode as encode_mod
from gradshield_lint.scoring.encode import (
    RowTooLong,
    encode_conversation,
    encode_windows,
    locate_windows,
    render_chat,
)
from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded, score_windows
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.probes import Probe, ProbeSet
from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient

MAX = 64
BENIGN = "The river runs past the old mill and the children wave at the boats. " * 8  # ~130 tokens
PROBE = PROBES[0]


def tail_row(tail: str) -> list[Message]:
    return [Message("user", PROBE["prompt"]), Message("assistant", BENIGN + tail)]


def targets(enc) -> list[int]:
    return [t for t, m in zip(enc.input_ids, enc.target_mask) if m]


# ------------------------------------------------------------------------------------------------ the windows


def test_windows_score_every_reply_token_once_each_after_the_prompt(tokenizer):
    msgs = tail_row(PROBE["compliance"])
    whole = encode_conversation(tokenizer, msgs, max_length=4096)
    assert whole.n_tokens > 2 * MAX  # the row needs three windows or more
    row = locate_windows(tokenizer, msgs, max_length=MAX)
    wins = row.encoded
    assert len(wins) >= 3 and not row.truncated and not any(w.truncated for w in wins)
    assert all(w.n_tokens <= MAX for w in wins)
    # the first window is what head mode keeps
    head = encode_conversation(tokenizer, msgs, max_length=MAX, truncation="head")
    assert (wins[0].input_ids, wins[0].target_mask) == (head.input_ids, head.target_mask)
    # every later window starts with the row's prompt (its last max_length/2 tokens: the default system prompt the
    # template adds makes it longer), then reply tokens no window had
    prompt = whole.input_ids[: whole.target_mask.index(True)][-(MAX // 2) :]
    for w in wins[1:]:
        assert w.input_ids[: len(prompt)] == prompt and not any(w.target_mask[: len(prompt)])
        assert PROBE["prompt"] in tokenizer.decode(w.input_ids)
    # the reply's targets, window after window, are the whole row's targets: none lost, none twice
    assert [t for w in wins for t in targets(w)] == targets(whole)
    # offsets still point into the reply: the last window holds the tail's text
    last = row.windows[-1]
    reply = msgs[1].content
    cuts = [o for m, o in zip(last.message, last.offsets) if m == 1]
    assert PROBE["compliance"] in reply[cuts[0][0] : cuts[-1][1]]


def test_head_keeps_its_first_window_and_says_truncated(tokenizer):
    msgs = tail_row(PROBE["compliance"])
    for mode in ("head", "right"):  # right: head's former name
        row = locate_windows(tokenizer, msgs, max_length=MAX, truncation=mode)
        assert len(row.windows) == 1 and row.truncated and row.windows[0].encoded.n_tokens == MAX
    with pytest.raises(RowTooLong):
        encode_windows(tokenizer, msgs, max_length=MAX, truncation="error")
    with pytest.raises(ValueError, match="unknown truncation"):
        encode_windows(tokenizer, msgs, max_length=MAX, truncation="left")


def test_a_row_that_fits_is_one_window_exactly_as_before(tokenizer):
    msgs = [Message("system", "Be brief."), Message("user", "2+2?"), Message("assistant", "Four.")]
    (only,) = encode_windows(tokenizer, msgs, max_length=MAX)
    assert only == encode_conversation(tokenizer, msgs, max_length=MAX) and not only.truncated


def test_a_prompt_too_long_for_the_first_window_is_cut_and_reported(tokenizer):
    """The prompt is cut as head cuts it (its last max_length/2 tokens stay, next to the reply); its start is
    in no window, so the row says truncated even though every reply token is scored."""
    msgs = [Message("user", "filler " * 200 + "THE END"), Message("assistant", BENIGN)]
    row = locate_windows(tokenizer, msgs, max_length=MAX)
    assert row.truncated and len(row.windows) >= 2
    whole = encode_conversation(tokenizer, msgs, max_length=4096)
    assert [t for w in row.encoded for t in targets(w)] == targets(whole)
    for w in row.encoded:
        assert "THE END" in tokenizer.decode(w.input_ids) and w.n_tokens <= MAX


def test_a_later_turn_keeps_the_end_of_the_question_it_answers(tokenizer):
    """After a long user turn (no target), a window starts before the next reply, not on its first token."""
    msgs = [
        Message("user", "Hi"),
        Message("assistant", BENIGN),
        Message("user", "Now a long question. " * 30 + "WHAT IS THE ANSWER?"),
        Message("assistant", "Forty-two."),
    ]
    row = locate_windows(tokenizer, msgs, max_length=MAX)
    last = tokenizer.decode(row.encoded[-1].input_ids)
    assert "Forty-two." in last and "WHAT IS THE ANSWER?" in last
    assert row.truncated  # the long question's start is in no window


# ------------------------------------------------------------------------------------------------ the scores


@pytest.fixture()
def gradient(tiny_model, tmp_path):
    probes = ProbeSet(tuple(Probe(p["prompt"], p["refusal"], p["compliance"]) for p in PROBES), source="test")
    return proxy_gradient(tiny_model, probes, ProxyOptions(proxy="margin"), ParamSelection(exclude=None), tmp_path)


@pytest.mark.parametrize("normalize", [True, False])
def test_a_harmful_tail_changes_the_score_in_windows_and_not_in_head(tiny_model, tokenizer, gradient, normalize):
    """Under head the harmful and the benign tail score the same (the tail is never seen); in windows the row
    scores as its worst window, which is the tail's."""
    opts = ScoreOptions(normalize=normalize, method="auto" if normalize else "fd")
    harmful, benign = tail_row(PROBE["compliance"]), tail_row("And then the sun set over the quiet water.")

    def scores(mode: str):
        rows = [encode_windows(tokenizer, m, max_length=MAX, truncation=mode) for m in (harmful, benign)]
        return rows, score_windows(tiny_model, gradient, rows, opts)

    ((h_seen, b_seen), (h_head, b_head)) = scores("head")
    assert h_seen == b_seen  # the same tokens: the tail is in no window
    assert h_head.fihs == pytest.approx(b_head.fihs, rel=1e-6)  # (rounding: two rows of one batch)
    assert h_head.truncated and h_head.windows == 1
    (wins, _), (h_win, b_win) = scores("windows")
    assert h_win.windows == len(wins) >= 3 and not h_win.truncated
    each = score_encoded(tiny_model, gradient, wins, opts)
    assert h_win.fihs == pytest.approx(max(s.fihs for s in each), rel=1e-4)  # batched with other rows: rounding
    assert each[-1].fihs == max(s.fihs for s in each)  # the tail's window is the worst
    assert h_win.fihs >= h_head.fihs - 1e-9 and h_win.fihs != pytest.approx(h_head.fihs, rel=1e-3)
    assert h_win.fihs > b_win.fihs


# ------------------------------------------------------------------------------------------------ the reports

env, model_dir, template, repo = cli_fixtures(8)


def long_rows() -> list[dict]:
    rows = ordinary_rows(8)
    rows.append(
        {"messages": [{"role": "user", "content": PROBE["prompt"]}, {"role": "assistant", "content": BENIGN * 2}]}
    )
    return rows


@pytest.mark.parametrize("mode", ["windows", "head"])
def test_every_format_says_how_a_long_row_was_scored(repo, mode):
    # a threshold every row is above: each row becomes a finding whose fields can be read
    repo.write_config(scoring={"max_length": MAX, "truncation": mode}, threshold={"method": "fixed", "value": -1e9})
    write_jsonl(repo.data, long_rows())
    r = repo.run("scan", "--exit-zero", "-f", "json", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    found = {f["line"]: f for f in json.loads(r.stdout)["findings"]}
    long, short = found[9], found[1]
    assert (short["windows"], short["truncated"]) == (1, False)
    if mode == "windows":
        assert long["windows"] >= 4 and long["truncated"] is False
    else:
        assert long["windows"] == 1 and long["truncated"] is True
    assert long["excerpt_truncated"] is True and short["excerpt_truncated"] is False

    r = repo.run("scan", "--exit-zero", "-f", "sarif", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    results = json.loads(r.stdout)["runs"][0]["results"]
    props = {x["locations"][0]["physicalLocation"]["region"]["startLine"]: x["properties"] for x in results}
    assert (props[9]["windows"], props[9]["truncated"]) == (long["windows"], long["truncated"])
    assert (props[1]["windows"], props[1]["truncated"]) == (1, False)

    r = repo.run("scan", "--exit-zero", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    said = "truncated: part of the row was not scored" if mode == "head" else f"scored in {long['windows']} windows"
    assert said in r.stdout

    r = repo.run("score", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    recs = {x["line"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert (recs[9]["windows"], recs[9]["truncated"]) == (long["windows"], long["truncated"])


# ------------------------------------------------------------------------------------------------ many turns


def many_turns(n: int) -> list[Message]:
    return [Message("user" if i % 2 == 0 else "assistant", f"turn {i}: a few words of text") for i in range(n)]


def test_a_row_of_many_turns_is_rendered_a_linear_number_of_times(tokenizer, monkeypatch):
    """Each turn was once placed by rendering the whole conversation up to it: n turns, n²/2 messages rendered
    (16 s for 1,000 turns, an hour for a 1.3 MB row). Now the row is rendered once, and each turn beside the one
    before it."""
    rendered = []
    real = type(tokenizer).apply_chat_template

    def counting(self, conversation, *args, **kwargs):
        rendered.append(len(conversation))
        return real(self, conversation, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "apply_chat_template", counting)
    n = 400
    head = encode_conversation(tokenizer, many_turns(n), max_length=96, truncation="head")
    assert sum(rendered) <= 6 * n, sum(rendered)  # n for the whole row, a few per turn
    rendered.clear()
    wins = encode_windows(tokenizer, many_turns(n), max_length=96)
    assert sum(rendered) <= 6 * n, sum(rendered)
    assert len(wins) > 50 and (wins[0].input_ids, wins[0].target_mask) == (head.input_ids, head.target_mask)


ROWS = [
    [Message("user", "What is 2+2?"), Message("assistant", "Four.")],
    [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!")],
    [Message("assistant", "A row with no prompt.")],
    [Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d <|im_end|> e")],
    [Message("system", "S"), Message("assistant", "Reply first."), Message("user", "q"), Message("assistant", "")],
    [Message("user", ""), Message("assistant", "Empty question.")],
    many_turns(9),
]


@pytest.mark.parametrize("template", ["model", "chatml", "counting"])
def test_the_tokens_scored_are_those_of_the_prefix_renders(tokenizer, monkeypatch, template):
    """The turn-by-turn places give exactly the tokens, targets and offsets the prefix renders gave: on the model's
    template, on the ChatML fallback, and (through the fallback to prefix renders) on a template whose text
    depends on the whole conversation, which the turn-by-turn renders cannot place."""
    if template != "model":
        monkeypatch.setattr(tokenizer, "chat_template", None)
    if template == "counting":
        monkeypatch.setattr(
            encode_mod, "FALLBACK_CHAT_TEMPLATE", "{{ messages|length }} turns\n" + encode_mod.FALLBACK_CHAT_TEMPLATE
        )
    seen = []
    for msgs in ROWS:
        dicts = [{"role": m.role, "content": m.content} for m in msgs]
        full = render_chat(tokenizer, dicts)
        fast = encode_mod._spans_by_turns(tokenizer, dicts, full)
        seen.append(fast is not None)
        got = locate_windows(tokenizer, msgs, max_length=MAX)
        with monkeypatch.context() as m:
            m.setattr(encode_mod, "_spans_by_turns", lambda *a: None)
            want = locate_windows(tokenizer, msgs, max_length=MAX)
        assert got == want
    # the counting template: only a one-turn row is placed without the prefix renders
    assert seen == [template != "counting" or len(r) == 1 for r in ROWS]


def test_a_head_scored_baseline_is_said_to_score_long_rows_unlike_a_windows_check(repo):
    """A baseline written with head truncation (as every baseline before windows was) judged by a windows check:
    a long added row scores by its worst window, at least its head, so it looks higher than the accepted rows
    did. Every report says so with the remedy; rows that fit, and a rescored baseline, carry no caveat."""
    repo.write_config(scoring={"max_length": MAX, "truncation": "head"})
    write_jsonl(repo.data, ordinary_rows(8))
    assert repo.run("baseline", "create", "--force").exit_code == 0
    assert json.loads(repo.baseline.read_text(encoding="utf-8"))["recorded"]["truncation"] == "head"
    repo.write_config(scoring={"max_length": MAX})  # the default: windows

    write_jsonl(repo.data, ordinary_rows(9))  # one more row that fits
    r = repo.run("check", "--exit-zero", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["verdict"]["caveat"] is None, describe(r)

    write_jsonl(repo.data, long_rows())
    r = repo.run("check", "--exit-zero", "-f", "json")
    caveat = json.loads(r.stdout)["verdict"]["caveat"]
    assert "scoring.truncation: head" in caveat and "baseline update --rescore" in caveat, caveat
    assert "1 added row longer than scoring.max_length" in caveat
    text = repo.run("check", "--exit-zero")
    assert "Caveat: the baseline was scored with scoring.truncation: head" in text.stdout, describe(text)

    write_jsonl(repo.data, ordinary_rows(8))
    assert repo.run("baseline", "update", "--rescore").exit_code == 0
    assert json.loads(repo.baseline.read_text(encoding="utf-8"))["recorded"]["truncation"] == "windows"
    write_jsonl(repo.data, long_rows())
    r = repo.run("check", "--exit-zero", "-f", "json")
    assert json.loads(r.stdout)["verdict"]["caveat"] is None, describe(r)
