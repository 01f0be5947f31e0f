"""config.py and schemas/config.schema.json: defaults, discovery, validation errors with key path and line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from gradshield_lint.config import (
    SCHEMA_PATH,
    Config,
    FirstTokenConfig,
    ModelConfig,
    ParamSelection,
    ReportConfig,
    RowsConfig,
    ScoringConfig,
    ThresholdConfig,
    config_from_dict,
    find_config,
    load_config,
    load_schema,
    schema_defaults,
)
from gradshield_lint.errors import ConfigError
from gradshield_lint.io.rows import SHAPE_KINDS, RowShape


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


def _cfg(root: Path, text: str, name: str = ".gradshield.yaml") -> Path:
    p = root / name
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


def _load_err(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# ----------------------------------------------------------------------------------------------------------------
# The schema


def _objects(node: dict, at: str = ""):
    yield at, node
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "object":
            yield from _objects(sub, f"{at}.{key}" if at else key)


def _properties(node: dict, at: str = ""):
    for key, sub in node.get("properties", {}).items():
        here = f"{at}.{key}" if at else key
        yield here, sub
        if sub.get("type") == "object":
            yield from _properties(sub, here)


def test_schema_is_draft_2020_12():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert SCHEMA_PATH.is_file()


def test_schema_closed_at_every_level():
    for at, node in _objects(load_schema()):
        assert node.get("additionalProperties") is False, at or "(top level)"


def test_every_property_has_description_and_default():
    for at, sub in _properties(load_schema()):
        assert sub.get("description"), at
        assert "default" in sub, at


def test_schema_defaults_validate():
    Draft202012Validator(load_schema()).validate(schema_defaults())


def test_dataclass_defaults_agree_with_the_schema():
    """The schema is the single source of defaults: Config() is the schema's defaults, key for key."""
    assert Config().as_dict() == schema_defaults()
    for cls, keys in [
        (ModelConfig, ("model",)),
        (ScoringConfig, ("scoring",)),
        (ParamSelection, ("scoring", "params")),
        (FirstTokenConfig, ("scoring", "first_token")),
        (RowsConfig, ("rows",)),
        (ThresholdConfig, ("threshold",)),
        (ReportConfig, ("report",)),
    ]:
        d = schema_defaults()
        for k in keys:
            d = d[k]
        assert {f.name for f in dataclasses.fields(cls)} == set(d), cls.__name__


def test_row_shape_enum_matches_rows_module():
    assert load_schema()["properties"]["rows"]["properties"]["shape"]["enum"] == ["auto", *SHAPE_KINDS]


# ----------------------------------------------------------------------------------------------------------------
# Discovery and defaults


def test_no_config_at_all_means_defaults(tmp_path):
    root = _repo(tmp_path)
    sub = root / "a" / "b"
    sub.mkdir(parents=True)
    cfg = load_config(start=sub)
    assert cfg.path is None and cfg.root == root.resolve()
    assert dataclasses.replace(cfg, root=Path("/")) == dataclasses.replace(Config(), root=Path("/"))
    assert cfg.model.name == "embedded" and cfg.scoring.max_length == 512 and cfg.scoring.batch_size == 8
    assert cfg.files == ("**/*.jsonl", "**/*.json", "**/*.csv", "**/*.tsv", "**/*.parquet")
    assert cfg.baseline_path == root.resolve() / ".gradshield-baseline.json"
    assert cfg.rows.row_shape() is None and cfg.probes_path is None


def test_find_config_walks_up_to_the_git_root(tmp_path):
    root = _repo(tmp_path)
    p = _cfg(root, "report: {format: json}\n")
    sub = root / "data" / "train"
    sub.mkdir(parents=True)
    assert find_config(sub) == p.resolve()
    cfg = load_config(start=sub)
    assert cfg.path == p.resolve() and cfg.root == root.resolve() and cfg.report.format == "json"


def test_find_config_stops_at_the_git_root(tmp_path):
    _cfg(tmp_path, "report: {format: json}\n")  # above the repository: not ours
    root = _repo(tmp_path)
    assert find_config(root) is None
    assert load_config(start=root).report.format == "text"


def test_explicit_path_and_root(tmp_path):
    p = _cfg(tmp_path, "baseline: scores/base.json\nscoring: {probes: probes/p.jsonl}\n", name="custom.yaml")
    cfg = load_config(p)
    assert cfg.path == p and cfg.root == tmp_path.resolve()
    assert cfg.baseline_path == tmp_path.resolve() / "scores" / "base.json"
    assert cfg.probes_path == tmp_path.resolve() / "probes" / "p.jsonl"


def test_empty_config_file_is_all_defaults(tmp_path):
    p = _cfg(tmp_path, "# nothing set yet\n")
    cfg = load_config(p)
    assert cfg.path == p and dataclasses.replace(cfg, path=None, root=Path("/")) == Config(root=Path("/"))


def test_missing_explicit_config(tmp_path):
    e = _load_err(tmp_path / "nope.yaml")
    assert e.file == str(tmp_path / "nope.yaml") and "no such" in str(e)
    e = _load_err(tmp_path)
    assert "directory" in str(e)


def test_full_config(tmp_path):
    p = _cfg(
        tmp_path,
        """
        model:
          name: HuggingFaceTB/SmolLM2-360M-Instruct
          revision: 0123abc
          gguf_file: null
          adapter: null
          device: cuda
          dtype: bfloat16
        scoring:
          proxy: first-token
          probes: my_probes.jsonl
          method: persample
          normalize: true
          loss_reduction: sum
          params:
            include: "mlp"
            exclude: "embed"
            layers: [4, 11]
          max_length: 1024
          truncation: error
          batch_size: 16
          first_token: {comply: Certainly, refuse: Sorry}
        rows:
          shape: prompt-completion
          columns: {prompt: question, completion: answer}
        files: ["data/**/*.jsonl"]
        baseline: .baseline.json
        threshold:
          method: fixed
          k: 2
          lrt_margin: 5
          value: 0.25
          criterion: finetune
        report: {format: sarif, max_rows: 0, excerpt_chars: 120}
        """,
    )
    cfg = load_config(p)
    assert cfg.model == ModelConfig("HuggingFaceTB/SmolLM2-360M-Instruct", "0123abc", None, None, "cuda", "bfloat16")
    assert cfg.scoring.params == ParamSelection("mlp", "embed", (4, 11))
    assert cfg.scoring.first_token == FirstTokenConfig("Certainly", "Sorry")
    assert (cfg.scoring.proxy, cfg.scoring.method, cfg.scoring.normalize, cfg.scoring.loss_reduction) == (
        "first-token",
        "persample",
        True,
        "sum",
    )
    assert (cfg.scoring.max_length, cfg.scoring.truncation, cfg.scoring.batch_size) == (1024, "error", 16)
    assert cfg.rows.row_shape() == RowShape("prompt-completion", {"prompt": "question", "completion": "answer"})
    assert cfg.files == ("data/**/*.jsonl",) and cfg.baseline == ".baseline.json"
    assert cfg.threshold == ThresholdConfig("fixed", 2.0, 5.0, 0.25, "finetune")
    assert isinstance(cfg.threshold.k, float)
    assert cfg.report == ReportConfig("sarif", 0, 120)
    # as_dict round-trips through config_from_dict
    assert config_from_dict(cfg.as_dict(), root=cfg.root).as_dict() == cfg.as_dict()


def test_config_from_dict_partial_nested():
    cfg = config_from_dict({"scoring": {"params": {"layers": [0, 2]}}})
    assert cfg.scoring.params.layers == (0, 2) and cfg.scoring.proxy == "margin" and cfg.path is None


# ----------------------------------------------------------------------------------------------------------------
# Validation errors: file, key path, YAML line


def test_typo_top_level_key_suggests(tmp_path):
    p = _cfg(tmp_path, "report:\n  format: json\nmodle:\n  name: embedded\n")
    e = _load_err(p)
    assert e.file == str(p) and e.line == 3
    assert "unknown key 'modle' (did you mean 'model'?)" in str(e)
    assert str(e).startswith(f"{p}:3: modle: unknown key")


def test_typo_nested_key_suggests(tmp_path):
    p = _cfg(tmp_path, "scoring:\n  proxy: margin\n  batchsize: 4\n")
    e = _load_err(p)
    assert e.line == 3 and "scoring.batchsize: unknown key 'batchsize' (did you mean 'batch_size'?)" in str(e)


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path):
    e = _load_err(_cfg(tmp_path, "threshold:\n  zzz: 1\n"))
    assert "threshold.zzz: unknown key 'zzz'" in str(e) and "known keys: method, k" in str(e)


def test_wrong_type_names_key_and_line(tmp_path):
    p = _cfg(tmp_path, "scoring:\n  proxy: margin\n  max_length: lots\n")
    e = _load_err(p)
    assert e.file == str(p) and e.line == 3
    assert "scoring.max_length: expected an integer, got a string 'lots'" in str(e)


def test_bool_is_not_an_integer(tmp_path):
    e = _load_err(_cfg(tmp_path, "scoring:\n  batch_size: true\n"))
    assert "scoring.batch_size" in str(e) and e.line == 2


def test_a_setting_of_several_kinds_lists_them_all(tmp_path):
    e = _load_err(_cfg(tmp_path, "scoring:\n  batch_size: 4\n  batch_tokens: lots\n"))
    assert e.line == 3
    assert "scoring.batch_tokens: expected an integer ≥ 1 or 'auto' or null, got a string 'lots'" in str(e)
    e = _load_err(_cfg(tmp_path, "scoring:\n  batch_tokens: 0\n", name="b.yaml"))
    assert e.line == 2 and "scoring.batch_tokens" in str(e)
    for value, parsed in (("auto", "auto"), ("1024", 1024), ("null", None)):
        cfg = load_config(_cfg(tmp_path, f"scoring:\n  batch_tokens: {value}\n", name=f"ok-{parsed}.yaml"))
        assert cfg.scoring.batch_tokens == parsed


def test_enum_typo_suggests(tmp_path):
    e = _load_err(_cfg(tmp_path, "# settings\n\nscoring:\n  proxy: marign\n"))
    assert (
        e.line == 4
        and "scoring.proxy: 'marign' is not one of margin, first-token, refusal-nll (did you mean 'margin'?)" in str(e)
    )


def test_list_item_error_line(tmp_path):
    e = _load_err(_cfg(tmp_path, "files:\n  - '**/*.jsonl'\n  - 3\n"))
    assert e.line == 3 and "files[1]" in str(e)


def test_several_problems_all_listed(tmp_path):
    p = _cfg(tmp_path, "modle: {}\nreport:\n  format: html\n")
    e = _load_err(p)
    assert e.line == 1 and "modle" in str(e) and f"{p}:3: report.format" in str(e)


def test_yaml_syntax_error_line(tmp_path):
    p = _cfg(tmp_path, "model:\n  name: embedded\nscoring: [margin\n")
    e = _load_err(p)
    assert e.file == str(p) and e.line in (3, 4) and "invalid YAML" in str(e)
    e = _load_err(_cfg(tmp_path, "model:\n  name: a\n   bad: indent\n", name="b.yaml"))
    assert e.line == 3 and "invalid YAML" in str(e)


def test_top_level_must_be_a_mapping(tmp_path):
    e = _load_err(_cfg(tmp_path, "- model\n- scoring\n"))
    assert "must be a mapping" in str(e) and e.line == 1


def test_duplicate_key(tmp_path):
    e = _load_err(_cfg(tmp_path, "report:\n  format: json\n  format: text\n"))
    assert e.line == 3 and "report.format: duplicate key" in str(e)


def test_non_string_key(tmp_path):
    e = _load_err(_cfg(tmp_path, "rows:\n  columns:\n    yes: answer\n"))
    assert "keys must be strings" in str(e)


def test_invalid_regex_and_layers_and_fixed_threshold(tmp_path):
    e = _load_err(_cfg(tmp_path, "scoring:\n  params:\n    include: 'mlp('\n", name="a.yaml"))
    assert e.line == 3 and "scoring.params.include: not a valid regular expression" in str(e)
    assert load_config(
        _cfg(tmp_path, "scoring:\n  params:\n    layers: [5, 5]\n", name="ok.yaml")
    ).scoring.params.layers == (5, 5)
    e = _load_err(_cfg(tmp_path, "scoring:\n  params:\n    layers: [6, 5]\n", name="b.yaml"))
    assert e.line == 3 and "scoring.params.layers" in str(e)
    e = _load_err(_cfg(tmp_path, "scoring:\n  params:\n    layers: [1, 2, 3]\n", name="c.yaml"))
    assert "scoring.params.layers" in str(e)
    e = _load_err(_cfg(tmp_path, "threshold:\n  method: fixed\n", name="d.yaml"))
    assert "threshold.value" in str(e) and e.line == 1


def test_rows_columns_validated(tmp_path):
    e = _load_err(_cfg(tmp_path, "rows:\n  columns:\n    promt: question\n", name="a.yaml"))
    assert e.line == 3 and "rows.columns.promt: unknown key 'promt' (did you mean 'prompt'?)" in str(e)
    e = _load_err(_cfg(tmp_path, "rows:\n  shape: text\n  columns:\n    prompt: question\n", name="b.yaml"))
    assert e.line == 4 and "rows.columns.prompt" in str(e) and "'text'" in str(e)
    e = _load_err(_cfg(tmp_path, "rows:\n  shape: chatml\n", name="c.yaml"))
    assert e.line == 2 and "rows.shape" in str(e)


def test_config_from_dict_errors_name_the_source():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"report": {"format": 3}}, "settings.yaml")
    assert info.value.file == "settings.yaml" and info.value.line is None
    assert "report.format: expected a string, got an integer 3" in str(info.value)


def test_normalize_needs_a_method_with_gradient_norms(tmp_path):
    e = _load_err(_cfg(tmp_path, "scoring:\n  normalize: true\n  method: fd\n"))
    assert e.line == 3 and "scoring.method" in str(e) and "persample" in str(e)


def test_lrt_margin_default_is_adaptive():
    assert Config().threshold.lrt_margin is None
    assert config_from_dict({"threshold": {"lrt_margin": 12}}).threshold.lrt_margin == 12.0


def test_enums_agree_with_the_modules_that_use_them():
    """The schema's choices are exactly what fihs.py and threshold.py accept."""
    from gradshield_lint.lint import threshold
    from gradshield_lint.scoring import fihs

    props = load_schema()["properties"]
    assert props["scoring"]["properties"]["method"]["enum"] == list(fihs.METHODS)
    from gradshield_lint.lint import service as lint

    assert props["threshold"]["properties"]["method"]["enum"] == list(lint.THRESHOLD_METHODS)
    assert set(threshold.METHODS) <= set(lint.THRESHOLD_METHODS)
    assert Config().threshold.k == threshold.DEFAULT_K


# ----------------------------------------------------------------------------------------------------------------
# Numbers that are not numbers, and lengths no model takes (issue 33, item 13)


@pytest.mark.parametrize(
    "key,value",
    [
        ("value", ".nan"),
        ("value", ".inf"),
        ("value", "-.inf"),
        ("fpr", ".nan"),
        ("fpr", ".NaN"),
        ("k", ".nan"),
        ("k", ".inf"),
        ("lrt_margin", ".nan"),
        ("lrt_margin", ".inf"),
    ],
)
def test_nan_and_inf_are_refused_in_every_number_setting(tmp_path, key, value):
    """YAML's .nan passes every bound (nan ≤ 0 is false), and a threshold of nan flags nothing: refused with the
    file and line, whichever setting holds it."""
    method = "fixed" if key == "value" else "mixture"
    p = _cfg(tmp_path, f"# gate\nthreshold:\n  method: {method}\n  {key}: {value}\n")
    e = _load_err(p)
    assert e.file == str(p) and e.line == 4, str(e)
    assert f"threshold.{key}: expected a finite number, got {float(value.lower().replace('.', '', 1))}" in str(e)


def test_max_length_has_an_upper_bound(tmp_path):
    e = _load_err(_cfg(tmp_path, "scoring:\n  max_length: 1000000000\n"))
    assert e.line == 2 and "scoring.max_length: 1000000000 is greater than the maximum of 32768" in str(e)
    assert load_config(_cfg(tmp_path, "scoring:\n  max_length: 32768\n", name="ok.yaml")).scoring.max_length == 32768


def test_cli_refuses_a_nan_threshold_with_exit_2(tmp_path):
    from helpers import assert_user_error, run_cli, write_jsonl

    root = _repo(tmp_path)
    write_jsonl(root / "data" / "train.jsonl", [{"text": "hello"}])
    for text, key in (
        ("threshold:\n  method: fixed\n  value: .nan\n", "threshold.value"),
        ("threshold:\n  fpr: .nan\n", "threshold.fpr"),
        ("scoring:\n  max_length: 99999999\n", "scoring.max_length"),
    ):
        cfg = _cfg(root, text)
        for cmd in ("check", "scan", "score"):
            assert_user_error(run_cli(root, cmd, "data/train.jsonl"), f"{cfg}:", key)
