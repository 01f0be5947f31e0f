"""gradshield-lint: flag finetuning rows whose gradient step would erode a model's safety alignment.

The public API is what this module exports. Names are imported lazily (PEP 562): `import gradshield_lint` stays
cheap, and torch-free parts (rows, config, baseline, threshold, report) never pull in torch.

    from gradshield_lint import Engine, EngineSettings, iter_rows
    engine = Engine(EngineSettings())            # the embedded SmolLM2 + safety adapter, offline, CPU
    scored = engine.score_rows(list(iter_rows("train.jsonl")))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # scoring
    "Engine": "engine", "EngineSettings": "engine", "ScoredRow": "engine", "settings_from_config": "engine",
    "ModelSpec": "model", "ScoringModel": "model", "load_model": "model",
    "Probe": "probes", "ProbeSet": "probes", "load_probes": "probes",
    "ProxyOptions": "proxy", "ProxyGradient": "proxy", "proxy_gradient": "proxy", "proxy_value": "proxy",
    "ScoreOptions": "fihs", "RowScore": "fihs", "score_encoded": "fihs",
    "ParamSelection": "params",
    "encode_conversation": "encode",
    # data and configuration
    "Message": "rows", "Row": "rows", "RowShape": "rows", "iter_rows": "rows", "row_id": "rows",
    "Config": "config", "load_config": "config",
    # linting
    "find_threshold": "threshold", "ThresholdResult": "threshold",
    "Baseline": "baseline", "Fingerprint": "baseline", "read_baseline": "baseline", "write_baseline": "baseline",
    "check": "lint", "scan": "lint",
    "Finding": "findings", "LintResult": "findings",
    "render": "report",
    # errors
    "GradshieldError": "errors", "InputError": "errors", "ConfigError": "errors", "ModelLoadError": "errors",
    "ProbeError": "errors", "BaselineError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradshield_lint' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover
    from .baseline import Baseline, Fingerprint, read_baseline, write_baseline
    from .config import Config, load_config
    from .encode import encode_conversation
    from .engine import Engine, EngineSettings, ScoredRow, settings_from_config
    from .errors import BaselineError, ConfigError, GradshieldError, InputError, ModelLoadError, ProbeError
    from .fihs import RowScore, ScoreOptions, score_encoded
    from .findings import Finding, LintResult
    from .lint import check, scan
    from .model import ModelSpec, ScoringModel, load_model
    from .params import ParamSelection
    from .probes import Probe, ProbeSet, load_probes
    from .proxy import ProxyGradient, ProxyOptions, proxy_gradient, proxy_value
    from .report import render
    from .rows import Message, Row, RowShape, iter_rows, row_id
    from .threshold import ThresholdResult, find_threshold
