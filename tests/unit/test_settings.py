"""One settings tree: the configuration schema holds every default, engine settings come only from the
configuration, command-line flags are overrides validated with it, and strategy names come from one registry."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from gradshield_lint.cli import Context, build_engine, main, model_override
from gradshield_lint.config import Override, config_from_dict, load_config, load_schema
from gradshield_lint.errors import ConfigError
from gradshield_lint.scoring.engine import Engine, EngineSettings
from gradshield_lint.scoring.fihs import ScoreOptions
from gradshield_lint.scoring.model import ModelSpec
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.proxy import ProxyOptions
from gradshield_lint.scoring.registry import METHODS, PROXIES


def _enum(*keys: str) -> list[str]:
    node = load_schema()
    for k in keys:
        node = node["properties"][k]
    return list(node["enum"])


def test_default_engine_settings_are_the_configuration_defaults():
    assert EngineSettings() == EngineSettings.from_config(config_from_dict({}))
    assert EngineSettings().score.normalize is True  # the schema's default, not a second one
    assert EngineSettings().params == ParamSelection(exclude="norm|(^|\\.)ln_")


def test_engine_with_default_settings_scores_like_the_cli_with_no_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .gradshield.yaml, no repository
    ctx = Context(config_path=None, quiet=True)
    assert build_engine(ctx, ctx.config()).settings == Engine().settings == Engine(EngineSettings()).settings


def test_each_settings_dataclass_takes_its_defaults_from_the_schema():
    d = config_from_dict({})
    assert ModelSpec() == ModelSpec(
        **{k: getattr(d.model, k) for k in ("name", "revision", "gguf_file", "adapter", "device", "dtype")}
    )
    assert ScoreOptions() == ScoreOptions(
        d.scoring.method, d.scoring.normalize, d.scoring.loss_reduction, d.scoring.batch_size
    )
    assert ProxyOptions() == ProxyOptions(
        d.scoring.proxy, d.scoring.first_token.comply, d.scoring.first_token.refuse, batch_size=d.scoring.batch_size
    )
    assert ParamSelection() == d.scoring.params


def test_registry_names_are_the_schema_enums_and_the_cli_choices():
    assert list(METHODS) == _enum("scoring", "method")
    assert list(PROXIES) == _enum("scoring", "proxy")
    score = main.commands["score"]
    choices = {p.name: list(p.type.choices) for p in score.params if isinstance(p.type, click.Choice)}
    assert choices["method"] == list(METHODS) and choices["proxy"] == list(PROXIES)
    # every strategy is implemented in its home module, and nothing else is
    assert set(METHODS.implemented()) == {m for m in METHODS if not METHODS[m].resolves}
    assert PROXIES.implemented() == PROXIES.names()


def test_an_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="scoring.method"):
        METHODS["nope"]
    with pytest.raises(ConfigError, match="scoring.proxy"):
        PROXIES.implementation("nope")


@pytest.mark.parametrize("method", ["fd", "jvp"])
def test_normalize_rule_is_a_config_error_wherever_the_settings_come_from(tmp_path, method):
    with pytest.raises(ConfigError, match="persample"):  # a file
        config_from_dict({"scoring": {"method": method}})
    with pytest.raises(ConfigError, match=r"scoring.method \(--method\)"):  # a flag, before any validation passes
        load_config(start=tmp_path, overrides=[Override(("scoring", "method"), method, "--method")])
    with pytest.raises(ConfigError, match="normalize"):  # settings built by hand
        Engine(EngineSettings(score=ScoreOptions(method=method)))
    assert Engine(EngineSettings(score=ScoreOptions(method=method, normalize=False))).settings.score.method == method


def test_overrides_are_validated_with_the_file_and_keep_its_other_keys(tmp_path):
    cfg_file = tmp_path / ".gradshield.yaml"
    cfg_file.write_text("scoring:\n  normalize: false\n  max_length: 64\n")
    cfg = load_config(cfg_file, overrides=[Override(("scoring", "method"), "fd", "--method")])
    assert (cfg.scoring.method, cfg.scoring.normalize, cfg.scoring.max_length) == ("fd", False, 64)
    with pytest.raises(ConfigError, match=r"scoring.method \(--method\).*normalized"):
        cfg.with_overrides([Override(("scoring", "normalize"), True, "--normalize/--raw")])
    with pytest.raises(ConfigError, match=r"model.device \(--device\)"):
        cfg.with_overrides([Override(("model", "device"), "tpu", "--device")])


def test_the_embedded_adapter_follows_the_embedded_model():
    assert ModelSpec().adapter_dir() is not None
    assert ModelSpec(name="HuggingFaceTB/SmolLM2-360M-Instruct").adapter_dir() is None  # default adapter: none
    s = EngineSettings.from_config(config_from_dict({"model": {"name": "HuggingFaceTB/SmolLM2-360M-Instruct"}}))
    assert s.model.adapter_dir() is None


def test_a_model_path_on_the_command_line_is_relative_to_where_it_runs(tmp_path, monkeypatch):
    (tmp_path / "models" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    o = model_override(os.path.join("models", "m"))
    assert o is not None and o.key == ("model", "name") and o.origin == "--model"
    assert Path(o.value) == (tmp_path / "models" / "m").resolve()
    assert model_override("OWNER/NAME").value == "OWNER/NAME" and model_override(None) is None
