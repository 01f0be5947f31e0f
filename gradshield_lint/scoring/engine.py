"""Rows -> scores: the scoring model, the probe set and ∇H loaded once per Engine, then rows scored in batches.

`EngineSettings` is the scoring part of the configuration: `EngineSettings.from_config(cfg)` is how the CLI, the
webhook and the benchmarks build it, and `EngineSettings()` is the same as `from_config` of an empty configuration
(every default comes from the configuration schema).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gradshield_lint.errors import ConfigError, InputError
from gradshield_lint.io.rows import Row
from gradshield_lint.schemas import config_default
from gradshield_lint.scoring.encode import (
    Encoded,
    NoTargetTokens,
    RowTooLong,
    chat_template_hash,
    encode_conversation,
    encode_windows,
)
from gradshield_lint.scoring.fingerprint import Fingerprint, Recorded
from gradshield_lint.scoring.model import ModelSpec, ScoringModel, load_model, prepared_meta
from gradshield_lint.scoring.options import ProxyOptions, RowScore, ScoreOptions
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.probes import ProbeSet
from gradshield_lint.scoring.registry import check_normalize

T = TypeVar("T")

# torch and the scoring methods are imported where rows are scored: a check with no new rows never imports them
if TYPE_CHECKING:
    from gradshield_lint.config import Config
    from gradshield_lint.scoring.explanation import Explanation
    from gradshield_lint.scoring.proxy import ProxyGradient


@dataclass(frozen=True)
class EngineSettings:
    """What the engine loads and how it scores. Build it with `from_config`; its defaults are the schema's."""

    model: ModelSpec = field(default_factory=ModelSpec)
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    probes: str | None = config_default("scoring", "probes")  # None: the bundled probe set
    params: ParamSelection = field(default_factory=ParamSelection)
    score: ScoreOptions = field(default_factory=ScoreOptions)
    max_length: int = config_default("scoring", "max_length")
    truncation: str = config_default("scoring", "truncation")
    cache_dir: Path | None = None

    @classmethod
    def from_config(cls, cfg: Config, *, cache_dir: Path | None = None) -> EngineSettings:
        """The scoring part of a `Config`: the only way the tool's entry points build engine settings."""
        m, s = cfg.model, cfg.scoring

        def local(p: str | None) -> str | None:
            # a path in the configuration is relative to the configuration's folder, not to where the command runs
            if p is None or p == "embedded" or not cfg.resolve(p).exists():
                return p
            return str(cfg.resolve(p))

        return cls(
            model=ModelSpec(
                name=local(m.name) or m.name,
                revision=m.revision,
                gguf_file=m.gguf_file,
                adapter=local(m.adapter),
                device=m.device,
                dtype=m.dtype,
            ),
            proxy=ProxyOptions(
                proxy=s.proxy,
                comply_token=s.first_token.comply,
                refuse_token=s.first_token.refuse,
                batch_size=s.batch_size,
            ),
            probes=str(cfg.probes_path) if cfg.probes_path is not None else None,
            params=s.params,
            score=ScoreOptions(
                method=s.method,
                normalize=s.normalize,
                loss_reduction=s.loss_reduction,
                batch_size=s.batch_size,
                batch_tokens=s.batch_tokens,
            ),
            max_length=s.max_length,
            truncation=s.truncation,
            cache_dir=cache_dir,
        )


@dataclass(frozen=True)
class ScoredRow:
    row: Row
    score: RowScore


class Engine:
    """Holds one loaded scoring model and its ∇H; nothing is loaded until first needed."""

    def __init__(self, settings: EngineSettings | None = None, *, progress: bool = False) -> None:
        settings = EngineSettings() if settings is None else settings
        # settings built by hand (not through Config): the same rule, before minutes of loading and scoring
        check_normalize(settings.score.method, settings.score.normalize)
        self.settings = settings
        self.progress = progress

    @cached_property
    def scoring_model(self) -> ScoringModel:
        sm = load_model(self.settings.model, progress=self.progress, cache_dir=self.settings.cache_dir)
        if self.settings.max_length > sm.context_length:
            raise ConfigError(
                f"scoring.max_length={self.settings.max_length} exceeds the model's context of {sm.context_length} tokens"
            )
        return sm

    @cached_property
    def probes(self) -> ProbeSet:
        from gradshield_lint.scoring.probes import load_probes

        return load_probes(self.settings.probes)

    @cached_property
    def gradient(self) -> ProxyGradient:
        # computed with the category directions that explanations need, in the same pass (categories.py)
        from gradshield_lint.scoring.categories import proxy_gradient_with_categories

        return proxy_gradient_with_categories(
            self.scoring_model, self.probes, self.settings.proxy, self.settings.params, self.settings.cache_dir
        )

    @property
    def method(self) -> str:
        from gradshield_lint.scoring.fihs import resolve_method

        return resolve_method(self.settings.score.method, self.settings.score.normalize, self.scoring_model.dtype)

    def _identity(self) -> tuple[dict[str, str], str, int]:
        """(identity, chat-template hash, context length): from the loaded model, or, before it is loaded, from its
        prepared-cache entry (prepared.py), so that a check with no new rows never loads the model."""
        if "scoring_model" not in self.__dict__:
            if "_prepared_meta" not in self.__dict__:  # hashing the source files once per Engine, not per call
                self.__dict__["_prepared_meta"] = prepared_meta(self.settings.model, self.settings.cache_dir)
            meta = self.__dict__["_prepared_meta"]
            if meta is not None:
                return dict(meta["identity"]), str(meta["chat_template"]), int(meta["context_length"])
        sm = self.scoring_model
        return sm.identity, chat_template_hash(sm.tokenizer), sm.context_length

    def fingerprint(self) -> Fingerprint:
        """What scores depend on. Method, dtype and device are not in it: they change scores only within rounding."""
        identity, template, context = self._identity()
        s = self.settings
        if s.max_length > context:
            raise ConfigError(f"scoring.max_length={s.max_length} exceeds the model's context of {context} tokens")
        return Fingerprint(
            model=identity.get("model", ""),
            model_revision=identity.get("revision", ""),
            model_hash=identity.get("model_hash", ""),
            adapter=identity.get("adapter", ""),
            proxy=s.proxy.proxy
            if s.proxy.proxy != "first-token"
            else f"first-token:{s.proxy.comply_token}/{s.proxy.refuse_token}",
            probe_set=self.probes.sha256,
            params=s.params.describe(),
            max_length=s.max_length,
            chat_template=template,
            loss_reduction=s.score.loss_reduction,
            normalize=s.score.normalize,
        )

    def recorded(self) -> Recorded:
        """How the scores are computed here (recorded in a baseline, never a reason to refuse one)."""
        sm = self.scoring_model
        return Recorded(
            method=self.method,
            dtype=str(sm.dtype).replace("torch.", ""),
            device=sm.device.type,
            extra={"truncation": self.settings.truncation},
        )

    def encode(self, row: Row) -> Encoded:
        """The row's first window: the whole row when it fits in max_length (`encode_windows`: all of them)."""
        return self._encoded(encode_conversation, row)

    def encode_windows(self, row: Row) -> list[Encoded]:
        """The windows the row is scored in (encode.py's policy: one when it fits in max_length)."""
        return self._encoded(encode_windows, row)

    def _encoded(self, how: Callable[..., T], row: Row) -> T:
        """`how` (an encode.py function) on the row with this engine's tokenizer and budget; a row that cannot be
        encoded is the user's input error at its file and line."""
        try:
            return how(
                self.scoring_model.tokenizer,
                row.messages,
                max_length=self.settings.max_length,
                truncation=self.settings.truncation,
            )
        except (NoTargetTokens, RowTooLong) as exc:
            raise InputError(str(exc), file=row.source, line=row.line) from exc

    def explain(self, rows: Sequence[Row], window: int | None = None) -> list[Explanation]:
        """Why each row scores high (explain.py): the strongest reply span and the top probe category."""
        from gradshield_lint.scoring.explain import DEFAULT_WINDOW, explain

        s = self.settings
        return explain(
            self.scoring_model,
            self.gradient,
            self.probes,
            [r.messages for r in rows],
            proxy=s.proxy,
            selection=s.params,
            max_length=s.max_length,
            truncation=s.truncation,
            window=window or DEFAULT_WINDOW,
            batch_size=s.score.batch_size,
            cache_dir=s.cache_dir,
        )

    def score_rows(self, rows: Sequence[Row]) -> list[ScoredRow]:
        """Scores in the order of `rows`. All rows are encoded first, so a bad row fails before any scoring."""
        if not rows:
            return []  # nothing to score: no model to load
        from gradshield_lint.scoring.fihs import score_windows

        windows = [self.encode_windows(r) for r in rows]
        scores = score_windows(self.scoring_model, self.gradient, windows, self.settings.score, progress=self.progress)
        return [ScoredRow(r, s) for r, s in zip(rows, scores)]


def settings_from_config(cfg: Config, *, cache_dir: Path | None = None) -> EngineSettings:
    """`EngineSettings.from_config` (the name the public API has always had)."""
    return EngineSettings.from_config(cfg, cache_dir=cache_dir)
