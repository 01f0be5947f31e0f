"""bfloat16 scores against float32 ones (issue 4): a bf16 baseline must serve a float32 check and the other way
round, so the dtype is recorded in a baseline but kept out of its fingerprint. These tests pin how far the two
may drift on a tiny llama, and run the real CLI: a float32 baseline, then a bfloat16 check against it.

Tolerances, from measurement: 12 tiny llamas (seeds 0-5, tied and untied heads), test_fihs's 12 rows, raw and
normalized scores over all weights and over all but the norm scales, each side computing ∇H in its own dtype and
scoring with `auto` (float32: fd or persample; bf16: jvp or persample). Relative L2 error 0.34-1.0 %, Spearman
≥ 0.986 (two adjacent pairs swapped at worst), largest difference ≤ 0.034 σ of the float32 scores. The bounds
below (3 %, 0.97, 0.1 σ) leave about 3× room for other CPUs' bf16 kernels, and still fail finite differences in
bf16 (12 % and 0.24 σ on the fixture's model): the rounding error `auto` avoids by picking jvp in half precision.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compliance_row, describe, make_repo, ordinary_rows, save_tiny_model, snapshot, write_jsonl
from test_fihs import PROBES, rows, spearman

from gradshield_lint.scoring.encode import Encoded, encode_conversation
from gradshield_lint.scoring.fihs import ScoreOptions, resolve_method, score_encoded
from gradshield_lint.scoring.model import ModelSpec, ScoringModel
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.proxy import ProxyGradient, ProxyOptions, proxy_gradient

MAX_REL_L2 = 0.03
MIN_SPEARMAN = 0.97
MAX_ABS_IN_SD = 0.1
N_BASE = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a busy 2-core machine the tiny model's many small ops are otherwise dominated by
    thread hand-offs (as in test_replicate)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def drift(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The figures bench/dtype_drift.py prints, for bounds and assertion messages."""
    return {
        "rel_l2": float(np.linalg.norm(x - ref) / np.linalg.norm(ref)),
        "spearman": spearman(x, ref),
        "max_abs_sd": float(np.max(np.abs(x - ref)) / np.std(ref)),
    }


def within_tolerance(d: dict[str, float]) -> bool:
    return d["rel_l2"] < MAX_REL_L2 and d["spearman"] > MIN_SPEARMAN and d["max_abs_sd"] < MAX_ABS_IN_SD


def as_bf16(sm: ScoringModel) -> ScoringModel:
    """The same weights cast to bfloat16, as `model.dtype: bfloat16` loads them (same identity: same fingerprint)."""
    return ScoringModel(
        copy.deepcopy(sm.model).to(torch.bfloat16), sm.tokenizer, sm.spec, sm.device, torch.bfloat16, sm.identity
    )


def fihs(sm: ScoringModel, grad: ProxyGradient, encoded: list[Encoded], **opts: object) -> np.ndarray:
    return np.array([s.fihs for s in score_encoded(sm, grad, encoded, ScoreOptions(**opts))])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pair(tokenizer, tmp_path_factory) -> tuple[ScoringModel, ProxyGradient, ScoringModel, ProxyGradient, list[Encoded]]:
    """conftest's tiny llama in float32 and bf16, with ∇H each computed in its own dtype, as a laptop and a GPU
    runner do. Module-scoped: the tests below only read it."""
    from conftest import build_tiny_llama

    sm32 = ScoringModel(
        build_tiny_llama(len(tokenizer)),
        tokenizer,
        ModelSpec(name="tiny"),
        torch.device("cpu"),
        torch.float32,
        {"model": "tiny"},
    )
    sm16 = as_bf16(sm32)
    cache = tmp_path_factory.mktemp("grad")
    g32 = proxy_gradient(sm32, PROBES, ProxyOptions(), ParamSelection(exclude=None), cache)
    g16 = proxy_gradient(sm16, PROBES, ProxyOptions(), ParamSelection(exclude=None), cache)
    assert g16.key != g32.key and not g16.from_cache  # the cache keeps the two dtypes apart
    return sm32, g32, sm16, g16, [encode_conversation(tokenizer, r, max_length=96) for r in rows()]


# ------------------------------------------------------------------------------------------------ scores


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "cosine"])
def test_bf16_scores_agree_with_fp32_within_the_measured_tolerance(pair, normalize):
    sm32, g32, sm16, g16, encoded = pair
    ref = fihs(sm32, g32, encoded, normalize=normalize)  # auto: fd (raw) or persample (cosine)
    x = fihs(sm16, g16, encoded, normalize=normalize)  # auto: jvp (raw) or persample (cosine)
    d = drift(x, ref)
    assert within_tolerance(d), d
    # Not vacuous: the bf16 side really ran in bf16 (identical scores would mean it silently used float32).
    assert next(sm16.model.parameters()).dtype == torch.bfloat16 and d["rel_l2"] > 1e-4, d


def test_the_tolerance_catches_finite_differences_in_bf16(pair):
    """The bounds are tight enough to fail the error that `auto` avoids: a finite step drowning in bf16 rounding."""
    sm32, g32, sm16, g16, encoded = pair
    assert resolve_method("auto", False, torch.bfloat16) == "jvp"
    d = drift(
        fihs(sm16, g16, encoded, method="fd", normalize=False), fihs(sm32, g32, encoded, method="fd", normalize=False)
    )
    assert not within_tolerance(d), d


# ------------------------------------------------------------------------------------------------ baseline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    # Untied head: with a tied one the compliance rows' signal drowns in embedding noise (see helpers.save_tiny_model).
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Iterator[Path]:
    """One ∇H cache for the module (∇H does not depend on normalization, so the second test reuses both entries;
    counted below), offline, no pre-commit variables from the outside."""
    folder = tmp_path_factory.mktemp("gs-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADSHIELD_CACHE", str(folder))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("PRE_COMMIT_FROM_REF", raising=False)
        mp.delenv("PRE_COMMIT_SOURCE", raising=False)
        yield folder


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "cosine"])
def test_a_float32_baseline_serves_a_bfloat16_check(tmp_path, model_dir, cache, normalize):
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(N_BASE), scoring={"normalize": normalize})  # float32
    r = repo.run("baseline", "create")
    assert r.exit_code == 0, describe(r)
    doc = json.loads(repo.baseline.read_text(encoding="utf-8"))
    assert doc["recorded"] == {
        "method": resolve_method("auto", normalize, torch.float32),
        "dtype": "float32",
        "device": "cpu",
        "truncation": "windows",
    }
    threshold, stored = doc["threshold"]["value"], doc["scores"]
    before = snapshot(repo.baseline)

    repo.write_config(model={"dtype": "bfloat16"}, scoring={"normalize": normalize})
    # The baseline's rows scored again in bf16 drift from the stored float32 scores within the tolerance above,
    # and none crosses the stored threshold.
    r = repo.run("score", "data/train.jsonl", "-o", "bf16.jsonl")
    assert r.exit_code == 0, describe(r)
    assert f"({resolve_method('auto', normalize, torch.bfloat16)}," in r.stderr, r.stderr
    bf16 = {d["id"]: d["fihs"] for d in map(json.loads, (repo.root / "bf16.jsonl").read_text().splitlines())}
    assert set(bf16) == set(stored)
    ids = sorted(stored)
    x, ref = np.array([bf16[i] for i in ids]), np.array([stored[i] for i in ids])
    d = drift(x, ref)
    assert within_tolerance(d) and d["rel_l2"] > 1e-4, d
    assert np.array_equal(x > threshold, ref > threshold)

    # The check takes the float32 baseline as comparable (exit 1 for a finding, not 2 for a refused baseline),
    # scores only the two new rows, in bf16, against the stored threshold: the compliance row is flagged, the
    # ordinary one is not. The baseline is left as it was.
    write_jsonl(repo.data, ordinary_rows(N_BASE + 1) + [compliance_row(0)])
    r = repo.run("check", "-f", "json")
    assert r.exit_code == 1, describe(r)
    report = json.loads(r.stdout)
    assert report["rows_scored"] == 2 and report["rows_total"] == N_BASE + 2
    assert report["threshold"] == threshold
    assert [(f["file"], f["line"]) for f in report["findings"]] == [("data/train.jsonl", N_BASE + 2)]
    assert snapshot(repo.baseline) == before
    # One ∇H per dtype: the bf16 side computed its own instead of reusing the float32 one (and nothing else did).
    assert len(list(cache.glob("grad-*.safetensors"))) == 2
