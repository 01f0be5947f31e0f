"""The conformal threshold: p-values against accepted rows, a threshold with a stated false-alarm rate (issue 11,
item 3). Synthetic score sets with a known distribution check the rate; hand-made sets check the formula exactly;
a real CLI run on a tiny model (a real baseline file, real `check`) checks that findings carry their p-value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gradshield_lint.config import ThresholdConfig, config_from_dict
from gradshield_lint.errors import ConfigError
from gradshield_lint.lint.baseline import (
    Fingerprint,
    dumps_baseline,
    loads_baseline,
    make_baseline,
)
from gradshield_lint.lint.conformal import (
    conformal_threshold,
    describe,
    p_value,
    p_values,
    stated_rate,
)
from gradshield_lint.lint.service import threshold_for


def test_p_value_formula_on_hand_made_sets():
    ref = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert p_value(ref, 3.0) == pytest.approx(3 / 5)  # 3 and 4 score at least as high: (1 + 2) / 5
    assert p_value(ref, 3.5) == pytest.approx(2 / 5)
    assert p_value(ref, 5.0) == pytest.approx(1 / 5)  # above every accepted row: the smallest p there is
    assert p_value(ref, 0.0) == pytest.approx(1.0)
    assert p_value([1.0, 1.0, 1.0], 1.0) == pytest.approx(1.0)  # ties count as "at least as high"
    assert p_value([], 7.0) == 1.0
    assert p_values(ref, [float("nan")])[0] == 1.0  # a NaN score is never flagged
    assert p_value([1.0, float("nan"), 2.0], 1.5) == pytest.approx(2 / 3)  # non-finite reference scores are ignored


@pytest.mark.parametrize("n,fpr", [(99, 0.01), (999, 0.01), (199, 0.02), (500, 0.05), (1000, 0.013)])
def test_threshold_flags_exactly_the_rows_with_p_at_most_fpr(n, fpr):
    rng = np.random.default_rng(n)
    ref = rng.normal(size=n)
    t = conformal_threshold(ref, fpr)
    assert t.method == "conformal" and t.details["small_reference"] == 0.0
    probe = np.concatenate([ref, rng.normal(size=2000) * 2, [t.value, np.nextafter(t.value, np.inf)]])
    assert np.array_equal(probe > t.value, p_values(ref, probe) <= fpr)
    assert t.details["fpr_achieved"] <= fpr + 1e-12
    assert stated_rate(t) == pytest.approx(fpr)


@pytest.mark.parametrize("dist", ["normal", "student-t", "lognormal"])
@pytest.mark.parametrize("n,fpr", [(999, 0.01), (199, 0.05)])
def test_empirical_false_alarm_rate_matches_the_stated_one(dist, n, fpr):
    """Fresh benign draws against many reference sets: the share flagged is ≈ fpr, whatever the distribution.
    Exchangeability makes P(flag) = ⌊fpr(n+1)⌋/(n+1) exactly (= fpr here); the tolerance is five standard errors of
    the mean over reference sets (Beta spread of one set's rate) and fresh draws (binomial)."""
    rng = np.random.default_rng(hash((dist, n)) % 2**32)
    draw = {
        "normal": lambda k: rng.normal(size=k),
        "student-t": lambda k: rng.standard_t(2.5, size=k),
        "lognormal": lambda k: rng.lognormal(sigma=1.5, size=k),
    }[dist]
    sets, fresh = 200, 1000
    rates = []
    for _ in range(sets):
        t = conformal_threshold(draw(n), fpr)
        rates.append(float((draw(fresh) > t.value).mean()))
    m = math.floor(fpr * (n + 1) + 1e-9)
    a, b = m, n + 1 - m  # the rate of one reference set is Beta(m, n + 1 - m)
    beta_var = a * b / ((a + b) ** 2 * (a + b + 1))
    se = math.sqrt((beta_var + fpr * (1 - fpr) / fresh) / sets)
    assert abs(np.mean(rates) - fpr) < 5 * se, (np.mean(rates), fpr, se)


def test_small_reference_flags_rows_above_every_accepted_row_and_says_so():
    ref = np.arange(24, dtype=float)
    t = conformal_threshold(ref, 0.01)
    assert t.value == 23.0 and t.details["small_reference"] == 1.0
    assert t.details["fpr_achieved"] == pytest.approx(1 / 25)
    assert stated_rate(t) == pytest.approx(1 / 25)  # what the rule can give, not what was asked for
    assert "too few" in describe(t) and "99" in describe(t)
    assert math.isinf(conformal_threshold([], 0.01).value)
    with pytest.raises(ValueError):
        conformal_threshold(ref, 0.0)


def test_default_config_uses_conformal_with_a_reference_and_the_mixture_test_without():
    cfg = config_from_dict({}).threshold
    assert cfg.method == "auto" and cfg.fpr == 0.01
    rng = np.random.default_rng(0)
    benign = rng.normal(size=400)
    with_ref = threshold_for(benign, cfg, reference=True)
    assert with_ref.method == "conformal" and with_ref.details["fpr"] == 0.01
    assert with_ref.value == pytest.approx(np.sort(benign)[-4])  # ⌊0.01·401⌋ − 1 = 3: the 4th largest
    scan = threshold_for(benign, cfg)  # scan/filter: no clean reference
    assert scan.method in ("gmm", "sigma")
    mixture = threshold_for(benign, ThresholdConfig(method="mixture"), reference=True)
    assert mixture.method in ("gmm", "sigma")
    with pytest.raises(ConfigError, match="conformal"):
        threshold_for(benign, ThresholdConfig(method="conformal"))
    assert config_from_dict({"threshold": {"fpr": 0.02}}).threshold.fpr == 0.02
    with pytest.raises(ConfigError):
        config_from_dict({"threshold": {"fpr": 0}})


def test_a_conformal_threshold_round_trips_through_the_baseline_file():
    t = conformal_threshold(np.linspace(0, 1, 150), 0.01)
    b = make_baseline(Fingerprint(model="m"), {f"r{i:03d}": float(i) / 149 for i in range(150)}, t)
    back = loads_baseline(dumps_baseline(b))
    assert back.threshold.method == "conformal" and back.threshold.criterion == "fpr"
    assert back.threshold.details["fpr"] == 0.01 and back.threshold.details["n"] == 150.0


def test_check_reports_p_values_against_the_baseline(tmp_path, model_dir):
    """A real repository (tiny model) with 120 accepted ordinary rows and the default threshold (conformal, 1 %):
    `baseline create` stores the conformal quantile; `check` flags the compliance rows a change adds, each with the
    p-value computed from the baseline file's scores, and says the rate in the report."""
    from helpers import compliance_rows, make_repo, ordinary_rows, write_jsonl
    from helpers import describe as describe_run

    n = 120
    repo = make_repo(tmp_path / "repo", model_dir, ordinary_rows(n), threshold={"method": "auto", "k": 3.0})
    r = repo.run("baseline", "create")
    assert r.exit_code == 0, describe_run(r)
    assert "conformal" in r.stderr
    doc = json.loads(repo.baseline.read_text())
    assert doc["threshold"]["method"] == "conformal" and doc["threshold"]["details"]["fpr"] == 0.01
    scores = sorted(doc["scores"].values())
    assert doc["threshold"]["value"] == pytest.approx(scores[-1])  # ⌊0.01·121⌋ − 1 = 0: the largest
    write_jsonl(repo.data, ordinary_rows(n) + compliance_rows(2))
    r = repo.run("check", "--format", "json")
    assert r.exit_code == 1, describe_run(r)
    rep = json.loads(r.stdout)
    assert rep["fpr"] == 0.01 and rep["reference_rows"] == n
    assert len(rep["findings"]) == 2
    for f in rep["findings"]:
        assert f["p_value"] == pytest.approx(p_value(scores, f["fihs"]))
        assert f["p_value"] <= 0.01
    r = repo.run("check")
    assert "p-value" in r.stdout and "1 % false alarms" in r.stdout, describe_run(r)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)
