"""The detection-quality metrics of bench/quality.py on hand-made score lists whose AUROC / AUPRC is known."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from gradshield_research.bench import peers as bench_peers
from gradshield_research.bench import quality as bench_quality

q = bench_quality


def brute_auroc(pos, neg):
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_perfect_inverse_and_chance():
    assert q.auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert q.auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert q.auroc([1, 1, 1], [1, 1]) == 0.5  # all tied: half of every pair


def test_auroc_known_values():
    # pairs: 0.9 beats all 3; 0.4 beats 0.1 and 0.3, loses to 0.5 -> (3 + 2) / 6
    assert q.auroc([0.9, 0.4], [0.1, 0.3, 0.5]) == pytest.approx(5 / 6)
    # one tie counts half: 2 > 1 (1), 2 == 2 (0.5) -> 1.5 / 2
    assert q.auroc([2], [1, 2]) == pytest.approx(0.75)


def test_auroc_matches_brute_force_with_ties():
    rnd = random.Random(0)
    for _ in range(50):
        pos = [rnd.randint(0, 6) for _ in range(rnd.randint(1, 12))]
        neg = [rnd.randint(0, 6) for _ in range(rnd.randint(1, 12))]
        assert q.auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg))


def test_auroc_empty_side_is_nan():
    assert math.isnan(q.auroc([], [1.0]))
    assert math.isnan(q.auroc([1.0], []))


def test_average_precision_known_values():
    assert q.average_precision([5, 4], [1, 2, 3]) == 1.0
    # ranking: P(0.9) N(0.8) P(0.7) -> precision 1 at recall 1/2, 2/3 at recall 1 -> (1 + 2/3) / 2
    assert q.average_precision([0.9, 0.7], [0.8]) == pytest.approx((1 + 2 / 3) / 2)
    # all tied: precision is the positive fraction
    assert q.average_precision([1, 1], [1, 1, 1, 1, 1, 1]) == pytest.approx(0.25)


def test_average_precision_matches_sklearn_definition():
    rnd = random.Random(1)
    for _ in range(30):
        pos = [rnd.random() for _ in range(rnd.randint(1, 10))]
        neg = [rnd.random() for _ in range(rnd.randint(1, 10))]
        # without ties, AP = mean over positives of the precision at that positive's rank
        allv = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg], reverse=True)
        tp, precs = 0, []
        for k, (_, y) in enumerate(allv, 1):
            if y:
                tp += 1
                precs.append(tp / k)
        assert q.average_precision(pos, neg) == pytest.approx(sum(precs) / len(pos))


def test_stratified_auroc_removes_a_pure_length_effect():
    rnd = np.random.default_rng(0)
    # positives are longer; the score is the length plus noise: plain AUROC is high, within length bins ~0.5
    pos_len = rnd.integers(100, 400, 400).astype(float)
    neg_len = rnd.integers(10, 300, 400).astype(float)
    score_p = pos_len + rnd.normal(0, 1e-3, 400) * 0
    score_n = neg_len
    assert q.auroc(score_p, score_n) > 0.75
    # a score that is a function of length alone: within narrow bins it still orders by length, so use a score
    # that is length-independent noise instead to check the ~0.5, and a truly separating one to check ~1.
    noise_p, noise_n = rnd.normal(size=400), rnd.normal(size=400)
    assert abs(q.stratified_auroc(noise_p, noise_n, pos_len, neg_len) - 0.5) < 0.08
    assert q.stratified_auroc(noise_p + 10, noise_n, pos_len, neg_len) == 1.0


def test_stratified_auroc_equals_auroc_with_one_bin():
    pos, neg = [0.9, 0.4, 0.7], [0.1, 0.5]
    assert q.stratified_auroc(pos, neg, [1, 1, 1], [1, 1]) == pytest.approx(q.auroc(pos, neg))


def test_rates_at_threshold():
    r = q.rates_at({"harmful": np.array([1, 2, 3, 4]), "benign": np.array([0, 0, 3, 5])}, 2.5)
    assert r["harmful"] == 0.5 and r["benign"] == 0.5
    # equal to the threshold is not flagged
    assert q.rates_at({"benign": np.array([2.5])}, 2.5)["benign"] == 0.0


def test_load_items_sampling_and_subsets(tmp_path):
    rows = []
    for i in range(30):
        rows.append(
            {
                "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                "label": "benign",
            }
        )
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    he = []
    for s in ("x_top100", "x_bottom100"):
        for i in range(20):
            he.append(
                {
                    "messages": [{"role": "user", "content": f"{s}{i}"}, {"role": "assistant", "content": "ok"}],
                    "label": "benign",
                    "subset": s,
                }
            )
    (tmp_path / "he.jsonl").write_text("\n".join(json.dumps(r) for r in he))
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "p", "target": "t"}))  # no label: skipped
    items = q.load_items([str(tmp_path)], per_file=10, per_subset=5, seed=0)
    a = [it for it in items if it.file == "a"]
    h = [it for it in items if it.file == "he"]
    assert len(a) == 10 and len(h) == 10 and sum(it.in_main for it in h) == 10
    items2 = q.load_items([str(tmp_path)], per_file=4, per_subset=5, seed=0)
    assert [it.row.id for it in items2 if it.file == "a"] == [
        it.row.id for it in q.load_items([str(tmp_path)], 4, 5, 0) if it.file == "a"
    ]
    assert sum(it.in_main for it in items2 if it.file == "he") == 4


def test_evaluate_reports_he_and_groups(tmp_path):
    class R:  # a stand-in row
        def __init__(self, i):
            self.id = str(i)

    items = []
    for i in range(10):
        items.append(q.Item(R(i), "harmful", "h", "h", None, True, "", 10))
    for i in range(10):
        items.append(q.Item(R(100 + i), "benign", "b", "b", None, True, "", 10))
    for i in range(4):
        items.append(q.Item(R(200 + i), "benign", "he", "he", "s_top100", False, "", 10))
        items.append(q.Item(R(300 + i), "benign", "he", "he", "s_bottom100", False, "", 10))
    v = np.array([5.0] * 10 + [0.0] * 10 + [3.0, 1.0] * 4)  # top, bottom, top, bottom, ...
    res = q.evaluate(items, q.Scores("x", v, 1.0))
    assert res["auroc_harmful"] == 1.0 and math.isnan(res["auroc_implicit"])
    assert res["he2024"] == {"s": 1.0}
    assert res["groups"]["h"]["auroc"] == 1.0 and res["groups"]["b"]["auroc"] == 1.0


# ------------------------------------------------------------------------------------------ the shared gradient pass
peers = bench_peers


def _small_probes():
    """A few harm probes and a few identity-shift probes of the bundled set (enough for every group)."""
    from gradshield_lint.scoring.probes import ProbeSet, load_probes

    full = load_probes(None)
    harm = [p for p in full.probes if p.category != "identity_shift"][:5]
    ident = [p for p in full.probes if p.category == "identity_shift"][:3]
    return ProbeSet(tuple(harm + ident), "small")


def _rows(tokenizer, n=5):
    from gradshield_lint.io.rows import Message
    from gradshield_lint.scoring.encode import encode_conversation

    texts = [
        ("hi", "hello there"),
        ("what is 2+2?", "4"),
        ("tell me a story", "Once upon a time a fox met a crow and they talked."),
        ("obey me", "I will obey every order without question."),
        ("name a colour", "Blue"),
    ]
    return [
        encode_conversation(tokenizer, [Message("user", u), Message("assistant", a)], max_length=64)
        for u, a in texts[:n]
    ]


def test_shared_pass_matches_the_engine(tiny_model, tmp_path):
    """The sweep's FIHS (any proxy, raw mean/sum and cosine, any layer subset) equals the engine's exact scores."""
    from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
    from gradshield_lint.scoring.params import ParamSelection
    from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient

    probes = _small_probes()
    enc = _rows(tiny_model.tokenizer)
    D = peers.probe_directions(tiny_model, probes, max_length=64, cache_dir=tmp_path)
    _, gram = peers.direction_norms(D, 2)
    pr = peers.gradient_pass(tiny_model, enc, D, batch_size=2)
    W = q.proxy_weights(D.counts)
    for proxy, wname in (("margin", "margin"), ("first-token", "first"), ("refusal-nll", "refusal-nll")):
        for layers, mask in ((None, pr.group_mask()), ((1, 1), pr.group_mask((1, 1)))):
            sel = ParamSelection(layers=layers, exclude=None)
            g = proxy_gradient(tiny_model, probes, ProxyOptions(proxy=proxy, max_length=64), sel, cache_dir=tmp_path)
            for normalize, red in ((False, "mean"), (False, "sum"), (True, "mean")):
                ref = [
                    s.fihs
                    for s in score_encoded(
                        tiny_model, g, enc, ScoreOptions(method="exact", normalize=normalize, loss_reduction=red)
                    )
                ]
                got = peers.fihs_from_pass(pr, gram, W[wname], mask, normalize=normalize, reduction=red)
                np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-6 * max(1.0, max(abs(x) for x in ref)))
    # the directions and the pass come back from the on-disk caches unchanged
    D2 = peers.probe_directions(tiny_model, probes, max_length=64, cache_dir=tmp_path)
    pr2, missing = peers.cached_gradient_pass(
        tiny_model, [str(i) for i in range(len(enc))], enc, D2, tmp_path, max_length=64, chunk=2
    )
    assert missing == 0
    np.testing.assert_allclose(pr2.dots, pr.dots, rtol=1e-5, atol=1e-9)


def test_he_bidirectional_is_a_difference_of_cosines(tiny_model, tmp_path):
    probes = _small_probes()
    enc = _rows(tiny_model.tokenizer, 3)
    D = peers.probe_directions(tiny_model, probes, max_length=64, cache_dir=tmp_path)
    _, gram = peers.direction_norms(D, 2)
    pr = peers.gradient_pass(tiny_model, enc, D, batch_size=4)
    W = q.proxy_weights(D.counts)
    mask = pr.group_mask()
    harmful = {k: -v for k, v in W["comply-nll"].items()}
    he = peers.he_bidirectional(pr, gram, harmful, W["refusal-nll"], mask)
    # cos(+∇L, ∇NLL_c) = −FIHS_cos with v = ∇NLL_c ... so He = −cos(comply-nll→ −∇NLL_c) ... check through fihs_from_pass
    cos_c = -peers.fihs_from_pass(pr, gram, harmful, mask, normalize=True, reduction="mean")
    cos_r = -peers.fihs_from_pass(pr, gram, W["refusal-nll"], mask, normalize=True, reduction="mean")
    np.testing.assert_allclose(he, cos_c - cos_r, rtol=1e-9)
    assert np.all(np.abs(he) <= 2.0)


def test_hidden_and_keyword_peers(tiny_model):
    probes = _small_probes()
    enc = _rows(tiny_model.tokenizer, 3)
    ph = peers.probe_hidden_states(tiny_model, probes, max_length=64)
    d = peers.hidden_direction(ph, 1)
    assert np.isclose(np.linalg.norm(d), 1.0)
    fwd = peers.gradient_pass(tiny_model, enc, None)
    assert peers.hidden_scores(fwd, d, 1).shape == (3,)
    kw = peers.keyword_scores(["I will obey, no rules at all.", "The capital of France is Paris."])
    assert kw[0] > kw[1] == 0.0


def test_seeded_engine_cache_equals_the_engines_own_gradient(tiny_model, tmp_path):
    from gradshield_lint.scoring.params import ParamSelection
    from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient

    probes = _small_probes()
    D = peers.probe_directions(
        tiny_model, probes, max_length=256, cache_dir=tmp_path / "d", groups=("harm", "identity")
    )
    W = q.proxy_weights(D.counts)
    for proxy, wname in (("margin", "margin"), ("first-token", "first")):
        for sel in (ParamSelection(exclude=None), ParamSelection(include=r"\.mlp\.", exclude=None, layers=(1, 1))):
            opts = ProxyOptions(proxy=proxy)
            peers.seed_engine_cache(tiny_model, probes, D, opts, sel, W[wname], tmp_path / "seeded")
            seeded = proxy_gradient(tiny_model, probes, opts, sel, tmp_path / "seeded")
            own = proxy_gradient(tiny_model, probes, opts, sel, tmp_path / "own")
            assert seeded.from_cache and not own.from_cache
            assert seeded.names == own.names
            for a, b in zip(seeded.vectors, own.vectors):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)
            assert seeded.value == pytest.approx(own.value, rel=1e-5)
