"""Per-finding explanations (issue 11, item 4) on a tiny random model: the per-token pushes add up to the row's
exact FIHS, the strongest window is the span that copies a probe's compliance opening, the top category is that
probe's; and every report format carries the reason, escaped. The CLI test runs the real `check` on a real
repository folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import (
    PROBES,
    compliance_rows,
    describe,
    make_repo,
    ordinary_rows,
    save_tiny_model,
    write_jsonl,
)

from gradshield_lint.io.rows import Message
from gradshield_lint.lint.findings import Explanation, Finding, LintResult
from gradshield_lint.scoring.encode import encode_with_offsets
from gradshield_lint.scoring.explain import TokenPush, explain, strongest_window, token_push
from gradshield_lint.scoring.fihs import ScoreOptions, score_encoded
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.probes import load_probes
from gradshield_lint.scoring.proxy import ProxyOptions, proxy_gradient

FILLER = (
    "Here are some notes on gardening. Water the tomatoes in the morning, keep the soil loose, and pick the "
    "fruit when it is red. "
)
SELECTION = ParamSelection(exclude="norm|(^|\\.)ln_")


@pytest.fixture(scope="module")
def setup(tokenizer, tmp_path_factory):
    from conftest import build_tiny_llama

    from gradshield_lint.scoring.model import ModelSpec, ScoringModel

    folder = tmp_path_factory.mktemp("explain")
    (folder / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBES), encoding="utf-8")
    sm = ScoringModel(
        build_tiny_llama(len(tokenizer), seed=1, tie=False),
        tokenizer,
        ModelSpec(name="tiny"),
        torch.device("cpu"),
        torch.float32,
        {"model": "tiny", "model_hash": "0"},
    )
    probes = load_probes(folder / "probes.jsonl")
    grad = proxy_gradient(sm, probes, ProxyOptions(), SELECTION, folder)
    return sm, probes, grad, folder


def _row(j: int) -> list[Message]:
    p = PROBES[j]
    return [Message("user", p["prompt"]), Message("assistant", FILLER + p["compliance"])]


@pytest.mark.parametrize("j", range(len(PROBES)))
def test_token_pushes_sum_to_the_exact_score(setup, j):
    sm, _, grad, _ = setup
    loc = encode_with_offsets(sm.tokenizer, _row(j), max_length=256)
    (push,) = token_push(sm, grad, [loc])
    (exact,) = score_encoded(sm, grad, [loc.encoded], ScoreOptions(method="exact"))
    assert sum(push.values) == pytest.approx(exact.raw, rel=1e-3)
    assert len(push.values) == loc.encoded.n_target


@pytest.mark.parametrize("j", range(len(PROBES)))
def test_the_strongest_window_is_the_copied_compliance_and_the_category_is_its_probes(setup, j):
    sm, probes, grad, folder = setup
    p = PROBES[j]
    n_tokens = len(sm.tokenizer(p["compliance"], add_special_tokens=False)["input_ids"])
    others = [_row(k) for k in range(len(PROBES))]
    (e,) = [
        x
        for k, x in enumerate(
            explain(
                sm,
                grad,
                probes,
                others,
                proxy=ProxyOptions(),
                selection=SELECTION,
                max_length=256,
                window=n_tokens,
                cache_dir=folder,
            )
        )
        if k == j
    ]
    reply = FILLER + p["compliance"]
    assert e.message == 1
    assert e.span_text.strip() == p["compliance"]  # exactly the copied opening (with its leading space)
    assert reply[e.span_start : e.span_end] == e.span_text
    assert e.category == p["category"]
    assert e.categories[p["category"]] == max(e.categories.values())
    assert set(e.categories) == {q["category"] for q in PROBES}
    assert 0.0 < e.span_share <= 1.0 and e.span_tokens == n_tokens


def test_strongest_window_stays_inside_one_message():
    push = TokenPush([1.0, 1.0, 5.0, 5.0, 0.1], [1, 1, 3, 3, 3], [(0, 1), (1, 2), (0, 3), (3, 6), (6, 7)])
    assert strongest_window(push, 3) == (2, 5, pytest.approx(10.1))
    assert strongest_window(push, 2) == (2, 4, pytest.approx(10.0))
    assert strongest_window(TokenPush([], [], []), 4)[:2] == (0, 0)


def test_check_findings_carry_their_reasons_in_every_format(tmp_path, tokenizer):
    """A real repository: 24 accepted rows, then the change adds two compliance rows; `check` explains both."""
    model_dir = save_tiny_model(tmp_path / "model", tokenizer)
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(24))
    assert repo.run("baseline", "create").exit_code == 0
    write_jsonl(repo.data, ordinary_rows(24) + compliance_rows(2))
    r = repo.run(
        "check", "--format", "json", "--sarif", str(tmp_path / "out.sarif"), "--summary", str(tmp_path / "summary.md")
    )
    assert r.exit_code == 1, describe(r)
    rep = json.loads(r.stdout)
    from jsonschema import Draft202012Validator

    from gradshield_lint.report.jsonfmt import report_schema

    Draft202012Validator(report_schema()).validate(rep)
    by_line = {f["line"]: f for f in rep["findings"]}
    assert set(by_line) == {25, 26}
    for line, j in ((25, 0), (26, 1)):
        ex = by_line[line]["explanation"]
        assert ex["category"] == PROBES[j]["category"]
        assert ex["span"]["message"] == 1 and ex["span"]["text"] in PROBES[j]["compliance"]
        assert PROBES[j]["compliance"][ex["span"]["start"] : ex["span"]["end"]] == ex["span"]["text"]
        # 24 accepted rows are too few for a distribution-free 1 % (99 needed): the Gaussian null names them.
        assert by_line[line]["p_value"] < 0.01
    assert rep["verdict"]["rule"] == "gaussian-null" and rep["verdict"]["failed"]
    sarif = json.loads((tmp_path / "out.sarif").read_text())
    messages = [res["message"]["text"] for res in sarif["runs"][0]["results"]]
    assert all("Why:" in m and "pushes toward" in m for m in messages)
    summary = (tmp_path / "summary.md").read_text()
    assert "| Why |" in summary and "pushes toward weapons" in summary
    text = repo.run("check")
    assert text.exit_code == 1 and "why: p-value" in text.stdout and "strongest span" in text.stdout, describe(text)


def test_row_text_in_a_reason_is_escaped():
    from gradshield_lint.report.github import render_github
    from gradshield_lint.report.markdown import github_summary
    from gradshield_lint.report.text import render_text

    hostile = "ok | **bold** @maintainer\n::error::fake\u202e"
    e = Explanation("weapons", {"weapons": 0.5}, 1, 0, len(hostile), hostile, 0.5, 4)
    f = Finding("abc", "data/x.jsonl", 3, 0.9, 0.5, "excerpt", p_value=0.004, explanation=e)
    result = LintResult(0.5, "conformal/fpr", 10, 1, [f], fpr=0.01, reference_rows=120)
    md = github_summary(result)
    row = next(line for line in md.splitlines() if "abc" in line)
    assert "\\|" in row and "\\@maintainer" in row and "\\*\\*bold" in row and "\u202e" not in row
    assert row.count(" | ") == row.replace("\\|", "").count(" | ")  # no unescaped cell separators from row text
    gh = render_github(result)
    assert all(not line.startswith("::error::fake") for line in gh.splitlines())
    assert "\n::error::fake" not in gh
    txt = render_text(result)
    assert "\u202e" not in txt and "\n::error" not in txt
    assert "p-value 0.004" in txt and "1 % false alarms" in txt
    assert not math.isnan(f.margin)


def test_forward_mode_token_derivatives_agree_with_finite_differences(setup):
    """The half-precision path (jvp) and the float32 path (fd) give the same per-token derivatives."""
    from gradshield_lint.scoring.explain import token_derivatives_fd, token_derivatives_jvp

    sm, _, grad, _ = setup
    locs = [encode_with_offsets(sm.tokenizer, _row(j), max_length=256) for j in range(2)]
    fd = token_derivatives_fd(sm, grad, locs, 2)
    jv = token_derivatives_jvp(sm, grad, locs, 2)
    for a, b in zip(fd, jv):
        assert len(a) == len(b)
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-2, atol=1e-3 * max(map(abs, b)))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 summation order (the same sums, taken in other batches)."""
    return float((a - b).norm()) <= 1e-5 * float(b.norm()) + 1e-12


def test_gradient_computed_with_the_category_directions_in_one_pass(setup, tmp_path):
    """A machine's first ∇H (Engine.gradient) also stores the category directions, from the same pass: both equal
    what the separate computations give (∇H over all probes at once; each category's margin on its own), and the
    next explanation reads them from the cache instead of computing them."""
    from gradshield_lint.scoring.categories import (
        category_directions,
        category_selection,
        proxy_gradient_with_categories,
    )

    sm, probes, grad, _ = setup
    assert len({p.category for p in probes.probes}) > 1
    subset = category_selection(sm, SELECTION)
    folded = proxy_gradient_with_categories(sm, probes, ProxyOptions(), SELECTION, tmp_path)
    assert not folded.from_cache and folded.names == grad.names and folded.key == grad.key
    for a, b in zip(folded.vectors, grad.vectors):
        assert close(a, b)
    assert folded.value == pytest.approx(grad.value, rel=1e-5)
    [entry] = list(tmp_path.glob("categories-*.safetensors"))
    stamp = entry.stat().st_mtime_ns

    alone = category_directions(sm, probes, ProxyOptions(), subset, tmp_path / "separate")
    stored = category_directions(sm, probes, ProxyOptions(), subset, tmp_path)
    assert entry.stat().st_mtime_ns == stamp  # read, not computed again
    assert stored.categories == alone.categories and stored.names == alone.names
    for vs, ws in zip(stored.vectors, alone.vectors):
        assert all(close(a, b) for a, b in zip(vs, ws))

    # a second first-run elsewhere with ∇H already cached: nothing recomputed, the directions left for later
    again = proxy_gradient_with_categories(sm, probes, ProxyOptions(), SELECTION, tmp_path)
    assert again.from_cache
