"""gradshield-lint: flag finetuning rows whose gradient step would erode a model's safety alignment.

The public API is what this module exports. Names are imported lazily (PEP 562): `import gradshield_lint` stays
cheap, and torch-free parts (rows, config, baseline, threshold, report) never pull in torch.

    from gradshield_lint import Engine, EngineSettings, iter_rows
    engine = Engine(EngineSettings())            # the embedded SmolLM2 + safety adapter, offline, CPU
    scored = engine.score_rows(list(iter_rows("train.jsonl")))

`EngineSettings()` is the configuration's defaults (`EngineSettings.from_config(load_config())` for a
`.gradshield.yaml`), so this scores exactly as `gradshield-lint score train.jsonl` does with no configuration.

The package by stage: `io/` (dataset files -> rows, atomic writes, git plumbing, file globs), `scoring/` (model,
chat encoding, losses, parameters, probes, proxy H and its gradient, FIHS methods, the Engine), `lint/` (baseline,
threshold, criteria, findings, the linter service), `report/` and `hub.py`; `config.py` and `schemas/` hold the
settings, `cli.py` the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # scoring
    "Engine": "scoring.engine",
    "EngineSettings": "scoring.engine",
    "ScoredRow": "scoring.engine",
    "settings_from_config": "scoring.engine",
    "ModelSpec": "scoring.model",
    "ScoringModel": "scoring.model",
    "load_model": "scoring.model",
    "Probe": "scoring.probes",
    "ProbeSet": "scoring.probes",
    "load_probes": "scoring.probes",
    "ProxyOptions": "scoring.options",
    "ProxyGradient": "scoring.proxy",
    "proxy_gradient": "scoring.proxy",
    "proxy_value": "scoring.proxy",
    "ScoreOptions": "scoring.options",
    "RowScore": "scoring.options",
    "score_encoded": "scoring.fihs",
    "ParamSelection": "scoring.params",
    "encode_conversation": "scoring.encode",
    # data and configuration
    "Message": "io.rows",
    "Row": "io.rows",
    "RowShape": "io.rows",
    "iter_rows": "io.rows",
    "row_id": "io.rows",
    "Config": "config",
    "load_config": "config",
    # linting
    "find_threshold": "lint.threshold",
    "ThresholdResult": "lint.threshold",
    "Baseline": "lint.baseline",
    "Fingerprint": "scoring.fingerprint",
    "read_baseline": "lint.baseline",
    "write_baseline": "lint.baseline",
    "check": "lint.service",
    "scan": "lint.service",
    "Finding": "lint.findings",
    "LintResult": "lint.findings",
    "render": "report",
    # errors
    "GradshieldError": "errors",
    "InputError": "errors",
    "ConfigError": "errors",
    "ModelLoadError": "errors",
    "ProbeError": "errors",
    "BaselineError": "errors",
}

__all__ = [
    "Baseline",
    "BaselineError",
    "Config",
    "ConfigError",
    "Engine",
    "EngineSettings",
    "Finding",
    "Fingerprint",
    "GradshieldError",
    "InputError",
    "LintResult",
    "Message",
    "ModelLoadError",
    "ModelSpec",
    "ParamSelection",
    "Probe",
    "ProbeError",
    "ProbeSet",
    "ProxyGradient",
    "ProxyOptions",
    "Row",
    "RowScore",
    "RowShape",
    "ScoreOptions",
    "ScoredRow",
    "ScoringModel",
    "ThresholdResult",
    "check",
    "encode_conversation",
    "find_threshold",
    "iter_rows",
    "load_config",
    "load_model",
    "load_probes",
    "proxy_gradient",
    "proxy_value",
    "read_baseline",
    "render",
    "row_id",
    "scan",
    "score_encoded",
    "settings_from_config",
    "write_baseline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradshield_lint' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover
    from .config import Config, load_config
    from .errors import BaselineError, ConfigError, GradshieldError, InputError, ModelLoadError, ProbeError
    from .io.rows import Message, Row, RowShape, iter_rows, row_id
    from .lint.baseline import Baseline, read_baseline, write_baseline
    from .lint.findings import Finding, LintResult
    from .lint.service import check, scan
    from .lint.threshold import ThresholdResult, find_threshold
    from .report import render
    from .scoring.encode import encode_conversation
    from .scoring.engine import Engine, EngineSettings, ScoredRow, settings_from_config
    from .scoring.fihs import RowScore, ScoreOptions, score_encoded
    from .scoring.fingerprint import Fingerprint
    from .scoring.model import ModelSpec, ScoringModel, load_model
    from .scoring.params import ParamSelection
    from .scoring.probes import Probe, ProbeSet, load_probes
    from .scoring.proxy import ProxyGradient, ProxyOptions, proxy_gradient, proxy_value
