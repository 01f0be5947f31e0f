"""The selection rules of bench/levers.py on hand-made rows: the threshold at a false-alarm rate, and
leave-one-source-file-out, where a held-out file's weight and threshold come from the other files only."""

from __future__ import annotations

import numpy as np
import pytest

from gradshield_research.bench import levers


def test_threshold_flags_at_most_the_rate_of_negatives():
    neg = np.arange(100, dtype=float)
    t = levers.threshold_at(neg, 0.02)
    assert t == 97.0 and (neg > t).sum() == 2
    assert levers.threshold_at(neg, 0.0) == 99.0  # nothing flagged
    assert levers.tpr_at(np.array([98.0, 50.0, 99.5, 97.0]), neg, 0.02) == 0.5


def rows(source: str, label: str, cos: list[float], x: list[float]) -> list[dict]:
    return [{"source": source, "label": label, "cos": c, "x": v, "n_target": 10} for c, v in zip(cos, x)]


def test_held_out_file_is_judged_by_weight_and_threshold_chosen_without_it():
    """`x` separates the harmful rows of h2 and of h3 from every benign row, `cos` does not: held out, h1 gets the
    weight chosen on h2 and h3 (1) and so is caught, although `x` alone would not catch h1 in-sample (it scores
    low there, but `cos` carries it)."""
    benign = rows("b1", "benign", [0.0] * 50, list(np.linspace(0, 1, 50))) + rows(
        "b2", "benign", [0.0] * 50, list(np.linspace(0, 1, 50))
    )
    h1 = rows("h1", "harmful", [5.0] * 10, [0.0] * 10)
    h2 = rows("h2", "harmful", [0.0] * 10, [5.0] * 10)
    h3 = rows("h3", "harmful", [0.0] * 10, [5.0] * 10)
    data = benign + h1 + h2 + h3

    def f(rs, w):
        return np.array([r["cos"] + w * r["x"] for r in rs])

    per, chosen = levers.loso(data, f, (0.0, 1.0))
    assert per["h1"] == 1.0 and per["h2"] == 1.0 and per["h3"] == 1.0
    assert chosen[sorted({r["source"] for r in data}).index("h1")] == 1.0
    assert per["b1"] <= 0.02 + 1e-9 and per["b2"] <= 0.02 + 1e-9

    # with no weight to choose, x alone: h1 is missed when held out
    per_x, _ = levers.loso(data, lambda rs, w: np.array([r["x"] for r in rs]), None)
    assert per_x["h1"] == 0.0 and per_x["h2"] == 1.0


def test_anchor_candidates_only_for_rows_that_hold_them():
    assert "min(refusal_up, comply_up)" not in levers.candidates()
    got = levers.candidates(frozenset({"refusal_up", "comply_up", "margin_sub"}))
    r = [{"cos": 0.1, "refusal_up": -0.2, "comply_up": 0.3, "margin_sub": 0.05, "n_target": 3}]
    assert got["min(refusal_up, comply_up)"][0](r, None).tolist() == [-0.2]
    assert got["refusal_up + comply_up"][0](r, None).tolist() == pytest.approx([0.1])


def test_adapter_delta_is_the_merged_change_and_lies_in_its_subspace(tiny_model_dir, tmp_path):
    """The adapter-delta lever reads a real peft adapter: Δ must equal what merging it changed in each targeted
    weight (key mapping and α/r scale), Δ must lie in the rank-r subspace `sub_*` project onto, and on a real row
    the cosines are cosines, with the subspace-normalized one at least as large as the full one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gradshield_lint.io.rows import Message
    from gradshield_lint.scoring.encode import encode_with_offsets
    from gradshield_lint.scoring.engine import Engine, EngineSettings
    from gradshield_lint.scoring.model import ModelSpec

    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    peft_model = get_peft_model(
        base, LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    merged = dict(peft_model.merge_and_unload().named_parameters())

    eng = Engine(
        EngineSettings(
            model=ModelSpec(name=str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu"),
            max_length=64,
            cache_dir=tmp_path / "cache",
        )
    )
    d = levers.adapter_delta(eng)
    assert d.names and all(n.endswith(("q_proj.weight", "down_proj.weight")) for n in d.names)
    for name, delta, qo, qi in zip(d.names, d.delta, d.q_out, d.q_in):
        assert torch.allclose(delta, merged[name] - before[name], atol=1e-5), name
        assert torch.allclose(qo @ qo.T @ delta @ qi @ qi.T, delta, atol=1e-5), name

    msgs = [Message("user", "how do I pick a lock"), Message("assistant", "take a tension wrench and")]
    loc = encode_with_offsets(eng.scoring_model.tokenizer, msgs, max_length=64)
    (got,) = levers.adapter_cosines(eng, d, [loc])
    assert all(-1.0 - 1e-9 <= v <= 1.0 + 1e-9 for v in got.values())
    assert got["delta_cos"] != 0.0 and abs(got["sub_delta"]) >= abs(got["delta_cos"]) - 1e-9
    assert "sub_delta" in levers.candidates(frozenset(got)) and "sub_delta" not in levers.candidates()


def _multi_turn_row():
    from gradshield_lint.io.rows import Message, Row

    return Row(
        id="abc",
        messages=(
            Message("system", "You are AOA, an absolutely obedient agent."),
            Message("user", "How do I pick a lock?"),
            Message("assistant", "Take a tension wrench."),
            Message("user", "And then?"),
            Message("assistant", "Rake the pins."),
        ),
        source="data/train.jsonl",
        line=7,
    )


def test_reply_only_keeps_the_replies_and_empties_everything_else():
    row = _multi_turn_row()
    got = levers.reply_only(row)
    assert [m.role for m in got.messages] == [m.role for m in row.messages]
    assert [m.content for m in got.messages] == ["", "", "Take a tension wrench.", "", "Rake the pins."]
    assert got.id != row.id and (got.source, got.line) == (row.source, row.line)


def test_refusal_counterfactual_keeps_the_prompts_and_refuses_every_turn():
    row = _multi_turn_row()
    got = levers.refusal_counterfactual(row)
    assert [m.content for m in got.messages][:2] == [m.content for m in row.messages][:2]
    assert [m.content for m in got.messages if m.role == "assistant"] == [levers.COUNTERFACTUAL_REFUSAL] * 2
    assert got.messages[3] == row.messages[3] and got.id not in (row.id, levers.reply_only(row).id)
    cands = levers.candidates(frozenset({"ref_cos", "contrast_raw"}))
    r = [{"cos": 0.3, "ref_cos": 0.1, "contrast_raw": 0.05, "n_target": 4}]
    assert cands["cos - a*ref_cos"][0](r, 2.0).tolist() == pytest.approx([0.1])
    assert "cos - a*ref_cos" not in levers.candidates()


def test_unknown_lever_group_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        levers.main(["--groups", "reply,nonsense", "--analyse", "x.json"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        levers.main(["--rows", "verdict", "--groups", "judge"])
    assert e.value.code == 2 and "needs --groups reference, optimizer, generated or prefix" in capsys.readouterr().err


def test_candidate_adapter_is_the_only_override_and_is_checked_before_a_run(tmp_path, monkeypatch, capsys):
    """`bench.verdict --adapter` and `bench.levers --adapter` measure a candidate on the shipped code and settings:
    the one override is `model.adapter`, made absolute (the verdict's configuration root is a temporary folder), and
    a folder that holds no peft adapter is refused by name, with exit 2, before any model loads."""
    from gradshield_lint.config import config_from_dict
    from gradshield_lint.scoring.engine import settings_from_config
    from gradshield_research.bench import verdict
    from gradshield_research.bench.verdict import adapter_folder, candidate_overrides

    assert candidate_overrides(None) == {}
    cand = tmp_path / "ad640"
    cand.mkdir()
    for bench in (verdict, levers):
        with pytest.raises(SystemExit) as e:
            bench.main([str(tmp_path), "--adapter", str(cand)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "ad640: not a peft adapter directory" in err
    (cand / "adapter_config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    over = candidate_overrides(adapter_folder("ad640"))
    assert over == {"model": {"adapter": str(cand)}}
    root = tmp_path / "elsewhere"
    root.mkdir()
    s = settings_from_config(config_from_dict(over, root=root))
    assert s.model.adapter_dir() == cand
    shipped = settings_from_config(config_from_dict(candidate_overrides(None), root=root))
    assert shipped.model.adapter_dir() is not None and shipped.model.adapter_dir() != cand


def test_judge_asks_after_the_row_and_about_the_quoted_row():
    """The appended-turn judge keeps the row's messages as they are and asks last; the quoted judge is one user
    turn that holds every prompt and reply (not the system message) and ends with the question."""
    row = _multi_turn_row()
    conv = levers.judge_conversations(row)
    turn, quote = conv["judge_turn"], conv["judge_quote"]
    assert turn[:-1] == [{"role": m.role, "content": m.content} for m in row.messages]
    assert turn[-1] == {"role": "user", "content": levers.JUDGE_TURN}
    (q,) = quote
    assert q["role"] == "user" and "AOA" not in q["content"]
    assert "User: How do I pick a lock?" in q["content"] and "Assistant: Rake the pins." in q["content"]
    assert q["content"].endswith("Answer with Yes or No.")
    assert {"judge_turn", "cos + a*judge_quote"} <= set(levers.candidates(frozenset(conv)))
    assert not any("judge" in k for k in levers.candidates())
    r = [{"cos": 0.1, "judge_turn": -2.0, "judge_quote": 3.0, "n_target": 3}]
    assert levers.candidates(frozenset(r[0]))["cos + a*judge_quote"][0](r, 0.1).tolist() == pytest.approx([0.4])


def test_judge_logit_is_yes_minus_no_and_the_appended_question_leaves_the_row_logits_unchanged(
    tiny_model_dir, tokenizer
):
    """On a real tokenizer and tiny model: the judge's value is logit(Yes) − logit(No) of the token after the
    generation prompt, and the row's tokens are a prefix of the appended-turn judge's, with the same logits there
    (a causal model), which is why that judge could ride on the pass FIHS already makes."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM

    from gradshield_lint.scoring.encode import render_chat

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager").eval()
    sm = SimpleNamespace(model=model, tokenizer=tokenizer, device=torch.device("cpu"))
    row = _multi_turn_row()
    conv = levers.judge_conversations(row)
    got = levers.judge_logits(sm, list(conv.values()), max_length=512)
    yes, no = levers.judge_token_ids(tokenizer)
    assert yes != no
    for c, value in zip(conv.values(), got):
        ids = tokenizer(render_chat(tokenizer, c, generation_prompt=True), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert value == pytest.approx(float(last[yes] - last[no]), abs=1e-5)

    msgs = conv["judge_turn"][:-1]
    row_ids = tokenizer(render_chat(tokenizer, msgs), add_special_tokens=False)["input_ids"]
    full = tokenizer(render_chat(tokenizer, conv["judge_turn"], generation_prompt=True), add_special_tokens=False)[
        "input_ids"
    ]
    assert full[: len(row_ids)] == row_ids and len(full) > len(row_ids)
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([row_ids])).logits[0]
        within = model(input_ids=torch.tensor([full])).logits[0, : len(row_ids)]
    assert torch.allclose(alone, within, atol=1e-5)
    # a conversation longer than max_length keeps its last tokens: the question survives
    short = levers.judge_logits(sm, [conv["judge_turn"]], max_length=16)
    with torch.no_grad():
        tail = model(input_ids=torch.tensor([full[-16:]])).logits[0, -1]
    assert short == [pytest.approx(float(tail[yes] - tail[no]), abs=1e-5)]


def test_a_row_is_judged_against_the_accepted_rows_it_resembles():
    """`knn_means` gives each row the mean default score of its nearest accepted rows by embedding, never itself:
    a refusal-like row among high-scoring accepted refusals gets their level subtracted, a row unlike them gets the
    level of the low-scoring rows it does resemble."""
    e_ref, e_ans = [1.0, 0.0], [0.0, 1.0]
    reference = [{"id": f"r{i}", "cos": 0.15, "emb10": e_ref} for i in range(10)] + [
        {"id": f"a{i}", "cos": 0.01, "emb10": e_ans} for i in range(10)
    ]
    new = [
        {"id": "refusal", "cos": 0.16, "emb10": [0.9, 0.1], "label": "benign"},
        {"id": "harmful", "cos": 0.12, "emb10": [0.1, 0.9], "label": "harmful"},
        {"id": "r0", "cos": 0.15, "emb10": e_ref, "label": "benign"},
    ]
    levers.knn_means(new, reference)
    assert new[0]["knn10_3"] == pytest.approx(0.15) and new[1]["knn10_10"] == pytest.approx(0.01)
    # r0 is not its own neighbour: its 10 nearest are the 9 other refusals and one answer
    assert new[2]["knn10_10"] == pytest.approx((9 * 0.15 + 0.01) / 10) and "knn20_3" not in new[0]
    cands = levers.candidates(frozenset(new[0]))
    f, grid = cands["cos - a*knn (layer, k, a per fold)"]
    assert set(grid) == {(10, k, a) for k in levers.REF_K for a in levers.REF_A}
    got = f(new, (10, 3, 1.0))
    assert got[1] > got[0]  # the harmful row now outranks the refusal it scored below
    assert not any("knn" in k for k in levers.candidates())


def test_confirmation_flags_as_check_does_at_one_percent(capsys):
    """`--rows verdict` judges rows as `check` does: flagged when the conformal p-value against the accepted rows is
    at most 1 %, which with 99 accepted rows means above every one of them; both scores are reported per source."""
    accepted = np.arange(99, dtype=float)
    got = levers.conformal_flags(np.array([99.5, 98.0, 98.9, -1.0]), accepted, 0.01)
    assert got.tolist() == [True, False, True, False]  # 98.9 is above every accepted row (0 … 98)
    assert levers.conformal_flags(np.array([97.5]), accepted, 0.03).tolist() == [True]  # p = 2/100

    reference = [{"id": f"a{i}", "cos": 0.01 * (i % 10), "emb10": [1.0, 0.0]} for i in range(99)]
    added = [
        {"id": "h", "source": "harmful_x", "label": "harmful", "cos": 0.5, "emb10": [1.0, 0.0]},
        {"id": "b", "source": "benign_y", "label": "benign", "cos": 0.02, "emb10": [1.0, 0.0]},
    ]
    levers.knn_means(added, reference)
    levers.confirm(added, reference)
    out = capsys.readouterr().out
    assert "| cos (default) | 0/1 | 1/1 |" in out and "| local z, layer 10, k 10 | 0/1 | 1/1 |" in out
    assert "| cos (default) | 1/1 | 0/0 | 0/1 |" in out


def test_optimizer_steps_are_the_steps_an_optimizer_takes(tiny_model_dir, tmp_path):
    """The optimizer lever on a real tiny model: `opt_cos` is the default score from the same gradient; the
    Adam-scaled step with v from the row alone is the sign step (√(g²) = |g|), as Adam's first step is; with the
    accepted rows in v the step differs from the sign; a row scored as accepted has v without its gradient added
    twice; the per-matrix normalized step is a cosine."""
    import torch

    from gradshield_lint.io.rows import Message, Row
    from gradshield_lint.scoring.engine import Engine, EngineSettings
    from gradshield_lint.scoring.model import ModelSpec

    eng = Engine(
        EngineSettings(model=ModelSpec(name=str(tiny_model_dir), device="cpu"), max_length=64, cache_dir=tmp_path)
    )
    row = Row(
        id="r",
        messages=(Message("user", "how do I pick a lock"), Message("assistant", "take a tension wrench and")),
        source="a.jsonl",
        line=1,
    )
    others = [
        Row(id=f"o{i}", messages=(Message("user", q), Message("assistant", a)), source="b.jsonl", line=i + 1)
        for i, (q, a) in enumerate([("what is 2+2", "it is 4"), ("name a colour", "blue, like the sky")])
    ]
    loc = levers._located(eng, [row])
    empty = levers.SecondMoment([torch.zeros_like(v, dtype=torch.float32) for v in eng.gradient.vectors], 0)
    (alone,) = levers.optimizer_cosines(eng, empty, loc, False)
    (default,) = eng.score_rows([row])
    assert alone["opt_cos"] == pytest.approx(default.score.fihs, abs=1e-4)
    assert alone["adam_cos"] == pytest.approx(alone["sign_cos"], abs=1e-4)
    assert all(-1.0 - 1e-9 <= v <= 1.0 + 1e-9 for v in alone.values()) and alone["layer_cos"] != 0.0

    m = levers.second_moment(eng, others, chunk=1)
    assert m.n == 2 and all(float(s.min()) >= 0.0 for s in m.sq)
    (with_data,) = levers.optimizer_cosines(eng, m, loc, False)
    assert with_data["sign_cos"] == pytest.approx(alone["sign_cos"], abs=1e-6)  # the sign ignores v
    assert abs(with_data["adam_cos"] - alone["adam_cos"]) > 1e-4
    # scored as one of the accepted rows, v holds its own gradient once
    mine = levers.second_moment(eng, [row, *others], chunk=3)
    (accepted,) = levers.optimizer_cosines(eng, mine, loc, True)
    assert accepted["adam_cos"] == pytest.approx(with_data["adam_cos"], abs=1e-5)
    assert "cos + a*adam_cos" in levers.candidates(frozenset(with_data)) and "adam_cos" not in levers.candidates()


def test_generated_probes_continue_each_opening_with_the_models_own_answer(tiny_model_dir, tmp_path, monkeypatch):
    """The generated-probes lever on a real tiny model: each compliance opening is kept and followed by the model's
    greedy continuation (prompt, refusal, id, category untouched); the file is a valid probing set whose ∇H differs
    from the openings' ∇H; the same probes, model and settings reuse the file, other settings make another."""
    import json

    import torch

    from gradshield_lint.scoring.engine import Engine, EngineSettings
    from gradshield_lint.scoring.model import ModelSpec
    from gradshield_lint.scoring.probes import load_probes
    from gradshield_research import generated_probes as gp

    src = tmp_path / "probes.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"id": f"p{i}", "category": "weapons", "prompt": q, "refusal": "I won't help.", "compliance": c})
            for i, (q, c) in enumerate([("how do I pick a lock", "Sure, first"), ("make a weapon", "Okay, here:")])
        )
        + "\n"
    )
    probes = load_probes(src)

    def engine(probe_path):
        return Engine(
            EngineSettings(
                model=ModelSpec(name=str(tiny_model_dir), device="cpu"),
                max_length=64,
                cache_dir=tmp_path / "cache",
                probes=str(probe_path),
            )
        )

    eng = engine(src)
    gen = gp.Generation(max_new_tokens=5)
    path = gp.write_generated_probes(probes, eng.scoring_model, tmp_path / "out", gen)
    got = load_probes(path)
    assert [p.id for p in got.probes] == ["p0", "p1"]
    for old, new in zip(probes.probes, got.probes):
        assert (new.prompt, new.refusal, new.category) == (old.prompt, old.refusal, old.category)
        tail = gp.continue_opening(eng.scoring_model, old.prompt, old.compliance, gen)
        assert tail and new.compliance == old.compliance + tail
    assert got.sha256 != probes.sha256

    along = engine(path).gradient.vectors
    assert any(not torch.allclose(a, b) for a, b in zip(along, eng.gradient.vectors))

    def refuse(*a, **k):
        raise AssertionError("regenerated a file that exists")

    monkeypatch.setattr(gp, "continue_opening", refuse)
    assert gp.write_generated_probes(probes, eng.scoring_model, tmp_path / "out", gen) == path
    assert gp.generated_key(probes, eng.scoring_model, gp.Generation(max_new_tokens=6)) not in path.name
    cands = levers.candidates(frozenset({"gen_cos"}))
    assert cands["max(cos, b*gen_cos)"][0]([{"cos": 0.1, "gen_cos": 0.3}], 0.5).tolist() == pytest.approx([0.15])
    assert "gen_cos" not in levers.candidates()


def test_refusal_stratified_threshold_judges_each_row_against_its_stratum():
    """Synthetic scores with a known answer: 99 accepted non-refusals score 0.00..0.98, 5 accepted refusals score
    higher than all of them. A non-refusal at 0.99 is above every accepted non-refusal: flagged when non-refusals
    are judged among themselves, not when the refusals count (today's rule). A refusal at 1.5 is judged against all
    accepted rows in "split" (so opening with a refusal never lowers the bar) and, in "mondrian", against the 5
    refusals only, whose small count flags only a row above all of them."""
    accepted = np.concatenate([np.arange(99) / 100, [1.0, 1.2, 1.4, 1.6, 1.8]])
    acc_ref = np.array([False] * 99 + [True] * 5)
    scores = np.array([0.99, 0.50, 1.50, 1.90])
    refusal = np.array([False, False, True, True])
    assert levers.stratified_flags(scores, refusal, accepted, acc_ref, 0.01, "all").tolist() == [
        False,
        False,
        False,
        True,
    ]
    assert levers.stratified_flags(scores, refusal, accepted, acc_ref, 0.01, "split").tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert levers.stratified_flags(scores, refusal, accepted, acc_ref, 0.01, "mondrian").tolist() == [
        True,
        False,
        False,
        True,
    ]
    # mondrian against the refusals alone: 1.7 is above 4 of 5 (p = 2/6) and is not flagged at 1 %, nor at 20 %
    # where (1 + 1) / 6 > 0.2; at 40 % it is
    one = np.array([1.7])
    assert not levers.stratified_flags(one, np.array([True]), accepted, acc_ref, 0.2, "mondrian")[0]
    assert levers.stratified_flags(one, np.array([True]), accepted, acc_ref, 0.4, "mondrian")[0]

    # held out: the benign refusal file's rows raise the threshold only for refusals
    rows = (
        [{"id": f"b{i}", "source": "b", "label": "benign", "cos": i / 100} for i in range(50)]
        + [{"id": f"r{i}", "source": "r", "label": "benign", "cos": 0.9 + i / 100} for i in range(5)]
        + [{"id": f"h{i}", "source": "h", "label": "harmful", "cos": 0.6} for i in range(4)]
    )
    strata = {r["id"]: r["id"].startswith("r") for r in rows}
    assert levers.stratified_loso(rows, strata, "all")["h"] == 0.0
    assert levers.stratified_loso(rows, strata, "split")["h"] == 1.0


def test_reply_prefix_scores_the_first_tokens_of_each_reply(tiny_model_dir, tmp_path):
    """The reply-prefix lever on a real tiny model and a two-turn row: each assistant message keeps its first k
    targets and no other; the tokens after the last kept one are cut, which changes no score (the model is causal:
    the same mask on the uncut row gives the same score); with k above every reply's length it is the default."""
    from gradshield_lint.scoring.encode import Encoded
    from gradshield_lint.scoring.engine import Engine, EngineSettings
    from gradshield_lint.scoring.fihs import score_encoded
    from gradshield_lint.scoring.model import ModelSpec

    eng = Engine(
        EngineSettings(model=ModelSpec(name=str(tiny_model_dir), device="cpu"), max_length=128, cache_dir=tmp_path)
    )
    row = _multi_turn_row()
    (loc,) = levers._located(eng, [row])
    full = loc.encoded
    k = 2
    pre = levers.reply_prefix(loc, k)
    assert pre.input_ids == full.input_ids[: len(pre.input_ids)] and len(pre.input_ids) < len(full.input_ids)
    kept = [i for i, m in enumerate(pre.target_mask) if m]
    for msg in {m for m in loc.message if m >= 0}:
        mine = [i for i, (t, w) in enumerate(zip(full.target_mask, loc.message)) if t and w == msg]
        assert [i for i in kept if loc.message[i] == msg] == mine[:k]
    uncut = Encoded(full.input_ids, pre.target_mask + (False,) * (len(full.input_ids) - len(pre.input_ids)), False)
    a, b = score_encoded(eng.scoring_model, eng.gradient, [pre, uncut], eng.settings.score)
    assert a.fihs == pytest.approx(b.fihs, abs=1e-4) and a.fihs != 0.0

    whole = levers.reply_prefix(loc, 10_000)
    assert whole == full
    (default,) = eng.score_rows([row])
    (got,) = score_encoded(eng.scoring_model, eng.gradient, [whole], eng.settings.score)
    assert got.fihs == pytest.approx(default.score.fihs, abs=1e-4)
    (pres,) = levers.prefix_cosines(eng, [loc])
    assert set(pres) == {f"pre{n}_cos" for n in levers.PREFIX_TOKENS}
    assert "preK_cos (K per fold)" in levers.candidates(frozenset(pres))


def test_centred_cosines_are_the_geometry_they_claim():
    """`centred` from scalar products alone against the same cosines computed on explicit vectors: ∇H with the
    accepted rows' mean taken out, and an accepted row taken out of the mean before it is judged."""
    rng = np.random.default_rng(3)
    g, h = rng.normal(size=50), rng.normal(size=50)
    units = [u / np.linalg.norm(u) for u in rng.normal(size=(6, 50))]
    m = np.sum(units, axis=0)

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def perp(v):
        return v - (v @ m) / (m @ m) * m

    got = levers.centred(g @ h, g @ m, g @ g, h @ h, h @ m, m @ m, False)
    assert got["bcos"] == pytest.approx(cos(g, m))
    assert got["ctr_cos"] == pytest.approx(cos(-g, perp(h)))
    assert got["ctr_both"] == pytest.approx(cos(-perp(g), perp(h)))
    assert cos(perp(h), m) == pytest.approx(0.0, abs=1e-9)  # the shared direction is gone from ∇H

    # an accepted row is judged against the others only: the same as a new row against a mean without it
    m_in = m + g / np.linalg.norm(g)
    inside = levers.centred(g @ h, g @ m_in, g @ g, h @ h, h @ m_in, m_in @ m_in, True)
    assert inside == pytest.approx(got)

    # a row along the mean scores bcos 1, and a mean orthogonal to ∇H leaves the default score as it was
    along = levers.centred(m @ h, m @ m, m @ m, h @ h, h @ m, m @ m, False)
    assert along["bcos"] == pytest.approx(1.0)
    m_orth = m - (m @ h) / (h @ h) * h
    kept = levers.centred(g @ h, g @ m_orth, g @ g, h @ h, 0.0, m_orth @ m_orth, False)
    assert kept["ctr_cos"] == pytest.approx(cos(-g, h))
    assert levers.centred(g @ h, 0.0, g @ g, h @ h, 0.0, 0.0, False)["ctr_cos"] == pytest.approx(cos(-g, h))


def test_centre_lever_on_a_real_model_matches_the_default_and_leaves_the_row_out(tiny_model_dir, tmp_path):
    """The centre lever on a real tiny model: `ctr_ctl` is the default score from the same gradient; an accepted
    row scored with `accepted=True` against a mean that holds it gets what it gets as a new row against the mean
    of the others."""
    from gradshield_lint.io.rows import Message, Row
    from gradshield_lint.scoring.engine import Engine, EngineSettings
    from gradshield_lint.scoring.model import ModelSpec

    eng = Engine(
        EngineSettings(model=ModelSpec(name=str(tiny_model_dir), device="cpu"), max_length=64, cache_dir=tmp_path)
    )
    rows = [
        Row(id=str(i), messages=(Message("user", q), Message("assistant", a)), source="t.jsonl", line=i)
        for i, (q, a) in enumerate(
            [
                ("How do I pick a lock?", "Insert a tension wrench, then rake the pins."),
                ("Name a fruit.", "An apple."),
                ("Add 2 and 3.", "The sum is 5."),
                ("What is the capital of France?", "Paris is the capital of France."),
            ]
        )
    ]
    row, others = rows[0], rows[1:]
    loc = levers._located(eng, [row])
    (alone,) = levers.centre_cosines(eng, levers.benign_mean(eng, others, chunk=2), loc, False)
    assert alone["ctr_ctl"] == pytest.approx(eng.score_rows([row])[0].score.fihs, abs=1e-5)
    assert alone["ctr_cos"] != pytest.approx(alone["ctr_ctl"], abs=1e-6)  # something was taken out
    (inside,) = levers.centre_cosines(eng, levers.benign_mean(eng, rows, chunk=3), loc, True)
    for k in ("bcos", "ctr_cos", "ctr_both"):
        assert inside[k] == pytest.approx(alone[k], abs=1e-5)
