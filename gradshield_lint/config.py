""".gradshield.yaml -> Config: validated with jsonschema against `schemas/config.schema.json`, defaults filled.

The schema file is the single source of every default: the dataclasses below take their field defaults from it,
so `Config()` and a missing or empty `.gradshield.yaml` mean the same thing. Validation errors raise `ConfigError`
naming the file, the key path (e.g. `scoring.proxy`) and, for YAML, the line.

The configuration is `.gradshield.yaml` (or `.gradshield.yml`) in the current directory or the nearest parent,
searching up to the git repository root; `--config PATH` names one explicitly. `Config.root` is the directory of
the configuration file, and relative paths in it (baseline, probes, model, adapter) are relative to that. With no
configuration file, every key takes its default and `root` is the git repository root (so `check` run from a
subdirectory finds the baseline at the top of the repository), or the start directory outside a repository.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from gradshield_lint.errors import ConfigError
from gradshield_lint.io.rows import RowShape, shape_from_config
from gradshield_lint.lint.verdict import VerdictOptions
from gradshield_lint.schemas import config_default as _d
from gradshield_lint.schemas import load_schema as _load_schema
from gradshield_lint.schemas import schema_path
from gradshield_lint.scoring.params import ParamSelection
from gradshield_lint.scoring.registry import normalize_problem

SCHEMA_PATH = schema_path("config")
CONFIG_NAMES = (".gradshield.yaml", ".gradshield.yml")
"""File names `find_config` looks for, in this order, in each directory."""


def load_schema() -> dict[str, Any]:
    """The configuration JSON Schema (Draft 2020-12) shipped in the package."""
    return _load_schema("config")


def schema_defaults(node: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every default of the schema as one nested document (objects expanded into their keys' defaults)."""
    node = load_schema() if node is None else node
    out: dict[str, Any] = {}
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub and key != "columns":
            out[key] = schema_defaults(sub)
        else:
            out[key] = sub.get("default")
    return out


# --------------------------------------------------------------------------------------------------------------
# The configuration, as frozen dataclasses (defaults from the schema)


@dataclass(frozen=True)
class ModelConfig:
    """The scoring model (`model.*`)."""

    name: str = _d("model", "name")
    revision: str | None = _d("model", "revision")
    gguf_file: str | None = _d("model", "gguf_file")
    adapter: str | None = _d("model", "adapter")
    device: str = _d("model", "device")
    dtype: str = _d("model", "dtype")


@dataclass(frozen=True)
class FirstTokenConfig:
    """The tokens the first-token proxy compares (`scoring.first_token.*`)."""

    comply: str = _d("scoring", "first_token", "comply")
    refuse: str = _d("scoring", "first_token", "refuse")


@dataclass(frozen=True)
class ScoringConfig:
    """How FIHS is computed (`scoring.*`). `params` is the scoring stage's own `ParamSelection`."""

    proxy: str = _d("scoring", "proxy")
    probes: str | None = _d("scoring", "probes")
    method: str = _d("scoring", "method")
    normalize: bool = _d("scoring", "normalize")
    loss_reduction: str = _d("scoring", "loss_reduction")
    params: ParamSelection = field(default_factory=ParamSelection)
    max_length: int = _d("scoring", "max_length")
    truncation: str = _d("scoring", "truncation")
    batch_size: int = _d("scoring", "batch_size")
    batch_tokens: int | str | None = _d("scoring", "batch_tokens")
    first_token: FirstTokenConfig = field(default_factory=FirstTokenConfig)


@dataclass(frozen=True)
class RowsConfig:
    """How records are read as rows (`rows.*`)."""

    shape: str = _d("rows", "shape")
    columns: dict[str, str] = field(default_factory=lambda: dict(_d("rows", "columns")))
    metadata: tuple[str, ...] = tuple(_d("rows", "metadata"))

    def row_shape(self) -> RowShape | None:
        """The override for `rows.iter_rows` (None: detect everything automatically)."""
        return shape_from_config(self.shape, self.columns, self.metadata)


@dataclass(frozen=True)
class ThresholdConfig:
    """How the threshold is found (`threshold.*`)."""

    method: str = _d("threshold", "method")
    k: float = _d("threshold", "k")
    lrt_margin: float | None = _d("threshold", "lrt_margin")
    value: float | None = _d("threshold", "value")
    criterion: str = _d("threshold", "criterion")
    fpr: float = _d("threshold", "fpr")


@dataclass(frozen=True)
class ReportConfig:
    """How findings are reported (`report.*`)."""

    format: str = _d("report", "format")
    max_rows: int = _d("report", "max_rows")
    excerpt_chars: int = _d("report", "excerpt_chars")
    explain: bool = _d("report", "explain")
    span_tokens: int = _d("report", "span_tokens")


@dataclass(frozen=True)
class Override:
    """One setting given outside the configuration file (a command-line flag, an Action input): `key` is its path
    in the configuration (`("scoring", "method")`), `origin` what set it (`--method`), named in error messages.
    Overrides are applied to the document before it is validated, so each rule checks them like the file's keys."""

    key: tuple[str, ...]
    value: Any
    origin: str


@dataclass(frozen=True)
class Config:
    """The whole configuration. `path`: the file it came from (None: defaults only, or text read through git);
    `root`: the directory relative paths are resolved against; `source`: how messages name where it came from."""

    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    rows: RowsConfig = field(default_factory=RowsConfig)
    files: tuple[str, ...] = field(default_factory=lambda: tuple(_d("files")))
    baseline: str = _d("baseline")
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    verdict: VerdictOptions = field(default_factory=VerdictOptions)
    report: ReportConfig = field(default_factory=ReportConfig)
    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)
    # what it was built from, to apply overrides later (`with_overrides`) with errors located as before
    source: str | None = field(default=None, compare=False, repr=False)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    lines: Mapping[tuple[Any, ...], int] = field(default_factory=dict, compare=False, repr=False)
    overrides: tuple[Override, ...] = field(default=(), compare=False, repr=False)

    def resolve(self, p: str | Path) -> Path:
        """A path from the configuration, made absolute against `root` (`~` expanded)."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.root / q

    @property
    def baseline_path(self) -> Path:
        return self.resolve(self.baseline)

    @property
    def probes_path(self) -> Path | None:
        """The probing set named by `scoring.probes` (None: the bundled one)."""
        return None if self.scoring.probes is None else self.resolve(self.scoring.probes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain document in the schema's layout (without `path`, `root` and the provenance)."""
        out = _as_document(self, load_schema())
        assert isinstance(out, dict)
        return out

    def with_overrides(self, overrides: Iterable[Override]) -> Config:
        """This configuration with `overrides` applied, validated again as a whole (`ConfigError` naming the
        override's origin when one breaks a rule)."""
        overrides = tuple(overrides)
        if not overrides:
            return self
        return _build(
            self.document,
            self.source,
            root=self.root,
            lines=self.lines,
            overrides=(*self.overrides, *overrides),
            path=self.path,
        )


def _as_document(value: Any, node: Mapping[str, Any]) -> Any:
    """A settings dataclass (or value) as plain JSON values, keeping only the keys the schema node declares."""
    if is_dataclass(value) and not isinstance(value, type):
        props = node.get("properties", {})
        return {
            f.name: _as_document(getattr(value, f.name), props.get(f.name, {}))
            for f in fields(value)
            if f.name in props
        }
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------------------------------------------
# Finding and loading


def _git_root(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def find_config(start: Path | None = None) -> Path | None:
    """The `.gradshield.yaml` in `start` (default: cwd) or the nearest parent, not searching above the git
    repository root (outside a repository: up to the filesystem root). None when there is none."""
    here = Path(start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for d in (here, *here.parents):
        for name in CONFIG_NAMES:
            if (d / name).is_file():
                return d / name
        if (d / ".git").exists():
            break
    return None


def load_config(path: Path | None = None, *, start: Path | None = None, overrides: Iterable[Override] = ()) -> Config:
    """Load and validate the configuration: `path` if given, else `find_config(start)`; all defaults if none.
    `overrides` (command-line flags) are applied before validation."""
    if path is None:
        path = find_config(start)
        if path is None:
            here = Path(start or Path.cwd()).resolve()
            return _build({}, None, root=_git_root(here) or here, overrides=tuple(overrides))
    path = Path(path)
    if not path.exists():
        raise ConfigError("no such configuration file", file=path)
    if path.is_dir():
        raise ConfigError("is a directory, not a configuration file", file=path)
    if not path.is_file():
        raise ConfigError("not a regular file (a FIFO or device?): name a YAML file", file=path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file", file=path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte offset {exc.start})", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from None
    data, lines = _parse_yaml(text, path)
    return config_from_dict(data, path, lines=lines, overrides=overrides)


MAX_CONFIG_BYTES = 1 << 20
"""A configuration is a few hundred bytes; anything past a MiB is not one (and YAML parsing it would take long)."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without aliases: a configuration needs none, and aliases are how 229 bytes expand to a billion
    nodes (nested anchors, "billion laughs") or to a cycle (`a: &a [*a]`) that every later walk follows forever."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in the configuration: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise yaml.constructor.ConstructorError(
                None, None, f"integer too long: {exc}".split(";")[0], node.start_mark
            ) from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def config_from_text(text: str, source: str, *, root: Path) -> Config:
    """A configuration from YAML text that is not a file of the work tree (e.g. `REF:.gradshield.yaml`, read
    through git): validated as `load_config` validates a file, errors naming `source`; relative paths resolve
    against `root`. `Config.path` is None (the text has no file of its own)."""
    data, lines = _parse_yaml(text, source)
    return _build(data, source, root=root, lines=lines, path=None)


def _parse_yaml(text: str, path: Path | str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        mark = loader.get_mark()
        raise ConfigError("invalid YAML: nested too deeply", file=path, line=mark.line + 1) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        if context and exc.context_mark is not None and exc.problem_mark is not None:
            if exc.context_mark.line != exc.problem_mark.line:
                context += f" (from line {exc.context_mark.line + 1})"
        what = ", ".join(p for p in (context, exc.problem) if p) or "invalid YAML"
        raise ConfigError(f"invalid YAML: {what}", file=path, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from None
    finally:
        loader.dispose()
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _walk(node, (), lines, path)
        lines[()] = node.start_mark.line + 1
    return ({} if data is None else data), lines


def _walk(node: yaml.Node, at: tuple[Any, ...], lines: dict[tuple[Any, ...], int], path: Path | str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{_keypath(at + (key,))}: duplicate key", file=path, line=line)
            seen.add(key)
            lines[at + (key,)] = line
            _walk(value_node, at + (key,), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[at + (i,)] = item.start_mark.line + 1
            _walk(item, at + (i,), lines, path)


def _keypath(at: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for k in at:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out or "(top level)"


def _line_for(at: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int]) -> int | None:
    at = tuple(at)
    while at:
        if at in lines:
            return lines[at]
        at = at[:-1]
    return lines.get(())


def _check_keys(value: Any, at: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return at, f"keys must be strings, got {k!r} (quote it in YAML: {str(k).lower()!r})"
            bad = _check_keys(v, at + (k,))
            if bad:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad = _check_keys(v, at + (i,))
            if bad:
                return bad
    return None


def _check_finite(value: Any, at: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """The first nan or ±inf in the document. JSON Schema cannot say "finite" (JSON has no nan), and a nan passes
    every bound it can say (nan ≤ 0 is false): a threshold of .nan would flag nothing."""
    if isinstance(value, float) and not math.isfinite(value):
        return at, f"expected a finite number, got {value}"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        bad = _check_finite(v, at + (k,))
        if bad:
            return bad
    return None


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _messages_for(error: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, message) pairs a person can act on, for one jsonschema ValidationError."""
    at = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key not in known:
                hint = _suggest(key, known) or f" (known keys: {', '.join(known)})"
                out.append((at + (key,), f"unknown key {key!r}{hint}"))
        return out
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        want = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        return [(at, f"expected {want}, got {_json_type(error.instance)} {error.instance!r}")]
    if kind == "enum":
        choices = [str(c) for c in error.validator_value]
        hint = _suggest(error.instance, choices) if isinstance(error.instance, str) else ""
        return [(at, f"{error.instance!r} is not one of {', '.join(choices)}{hint}")]
    if kind == "anyOf":
        want = " or ".join(_describe(alt) for alt in error.validator_value)
        return [(at, f"expected {want}, got {_json_type(error.instance)} {error.instance!r}")]
    return [(at, error.message)]


def _describe(schema: dict[str, Any]) -> str:
    """One alternative of an `anyOf`, in words: "an integer ≥ 1", "'auto'", "null"."""
    if "enum" in schema:
        return " or ".join(repr(c) for c in schema["enum"])
    kind = str(schema.get("type"))
    words = _TYPE_NAMES.get(kind, kind)
    if "minimum" in schema:
        words += f" ≥ {schema['minimum']}"
    return words


@dataclass(frozen=True)
class _Where:
    """Where a key's value came from, for messages: the file and line, or the override (flag) that set it."""

    source: Path | str | None
    lines: Mapping[tuple[Any, ...], int]
    origins: Mapping[tuple[Any, ...], str]

    def origin(self, at: tuple[Any, ...]) -> str | None:
        while at:
            if at in self.origins:
                return self.origins[at]
            at = at[:-1]
        return None

    def name(self, at: tuple[Any, ...]) -> str:
        origin = self.origin(tuple(at))
        return f"{_keypath(at)} ({origin})" if origin else _keypath(at)

    def line(self, at: tuple[Any, ...]) -> int | None:
        return None if self.origin(tuple(at)) else _line_for(at, self.lines)

    def error(self, at: tuple[Any, ...], msg: str) -> ConfigError:
        if self.origin(tuple(at)):  # set on the command line: no line of the file to point at
            return ConfigError(f"{self.name(at)}: {msg}")
        return ConfigError(f"{_keypath(at)}: {msg}", file=self.source, line=self.line(at))


def _validate(data: Any, where: _Where) -> None:
    from jsonschema import Draft202012Validator

    source, lines = where.source, where.lines
    if not isinstance(data, dict):
        raise ConfigError(
            f"the configuration must be a mapping of keys (model, scoring, rows, ...), got {_json_type(data)}",
            file=source,
            line=lines.get(()),
        )
    bad = _check_keys(data, ()) or _check_finite(data, ())
    if bad:
        raise where.error(bad[0], bad[1])
    problems: list[tuple[int, tuple[Any, ...], str]] = []
    for error in Draft202012Validator(load_schema()).iter_errors(data):
        for at, msg in _messages_for(error):
            problems.append((where.line(at) or 0, at, msg))
    if not problems:
        return
    problems.sort(key=lambda p: (p[0], [str(k) for k in p[1]]))
    line, at, msg = problems[0]
    if where.origin(at):
        first = where.error(at, msg)
        text, line = str(first), 0
    else:
        text = f"{_keypath(at)}: {msg}"
    for line2, at2, msg2 in problems[1:10]:
        where2 = f"{source}:{line2}" if source is not None and line2 else (str(source) if source is not None else "")
        text += f"\n  {where2 + ': ' if where2 and not where.origin(at2) else ''}{where.name(at2)}: {msg2}"
    if len(problems) > 10:
        text += f"\n  ... and {len(problems) - 10} more"
    if where.origin(at):
        raise ConfigError(text)
    raise ConfigError(text, file=source, line=line or None)


def _merge(defaults: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for k, v in data.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "columns":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _with(document: Mapping[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """`document` with each override's value set at its key (intermediate mappings created)."""
    out: dict[str, Any] = _copy(document)
    for o in overrides:
        node = out
        for k in o.key[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[o.key[-1]] = o.value
    return out


def _copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def config_from_dict(
    d: Mapping[str, Any] | None,
    source: str | Path | None = None,
    *,
    root: Path | None = None,
    lines: Mapping[tuple[Any, ...], int] | None = None,
    overrides: Iterable[Override] = (),
) -> Config:
    """Validate a configuration document and build the Config (defaults filled).

    `source`: the file it came from (named in errors; becomes `Config.path`); `root`: the directory relative
    paths are resolved against (default: the file's directory, else cwd); `lines`: key path -> line, for errors;
    `overrides`: settings from the command line, applied before validation."""
    data = {} if d is None else d
    path = Path(source) if source is not None else None
    return _build(data, source, root=root, lines=lines or {}, overrides=tuple(overrides), path=path)


def _build(
    data: Any,
    source: str | Path | None,
    *,
    root: Path | None,
    lines: Mapping[tuple[Any, ...], int] | None = None,
    overrides: tuple[Override, ...] = (),
    path: Path | None = None,
) -> Config:
    lines = lines or {}
    if isinstance(data, Mapping) and not isinstance(data, dict):
        data = dict(data)
    where = _Where(source, lines, {o.key: o.origin for o in overrides})
    document = data
    if overrides and isinstance(data, dict):
        data = _with(data, overrides)
    _validate(data, where)
    fail = where.error

    m = _merge(schema_defaults(), data)
    sc, params = m["scoring"], m["scoring"]["params"]
    for key in ("include", "exclude"):
        if params[key] is not None:
            try:
                re.compile(params[key])
            except re.error as exc:
                raise fail(("scoring", "params", key), f"not a valid regular expression: {exc}") from None
    layers = params["layers"]
    if layers is not None and layers[0] > layers[1]:
        raise fail(("scoring", "params", "layers"), f"[first, last] needs first <= last, got {layers}")
    problem = normalize_problem(sc["method"], sc["normalize"])
    if problem:
        at = (
            ("scoring", "method")
            if not where.origin(("scoring", "normalize")) or where.origin(("scoring", "method"))
            else ("scoring", "normalize")
        )
        raise fail(at, problem)
    for i, pattern in enumerate(m["files"]):
        # Path.glob refuses absolute and empty patterns with an exception, not a match
        if not pattern or Path(pattern).is_absolute() or Path(pattern).anchor:
            raise fail(
                ("files", i), f"{pattern!r}: a glob relative to the repository root is expected (e.g. data/**/*.jsonl)"
            )
    th = m["threshold"]
    if th["method"] == "fixed" and th["value"] is None:
        raise fail(("threshold", "value"), "a number is required when threshold.method is fixed")
    vd = m["verdict"]
    if vd["fdr"] < vd["alpha"]:
        raise fail(
            ("verdict", "fdr"),
            f"must be at least verdict.alpha ({vd['alpha']:g}): a one-row change that fails must name its row",
        )
    columns = {k: v for k, v in m["rows"]["columns"].items() if v is not None}
    try:
        RowShape(m["rows"]["shape"], columns)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        rows_at: tuple[str, ...] = tuple(key.split(".")) if key.startswith("rows.") else ("rows",)
        raise ConfigError(str(exc), file=source, line=_line_for(rows_at, lines)) from None

    if root is None:
        root = path.resolve().parent if path is not None else Path.cwd()
    return Config(
        model=ModelConfig(**m["model"]),
        scoring=ScoringConfig(
            proxy=sc["proxy"],
            probes=sc["probes"],
            method=sc["method"],
            normalize=sc["normalize"],
            loss_reduction=sc["loss_reduction"],
            params=ParamSelection(
                include=params["include"],
                exclude=params["exclude"],
                layers=(int(layers[0]), int(layers[1])) if layers is not None else None,
                embeddings=bool(params["embeddings"]),
            ),
            max_length=sc["max_length"],
            # `right` is `head`'s former name: one name downstream
            truncation="head" if sc["truncation"] == "right" else sc["truncation"],
            batch_size=sc["batch_size"],
            batch_tokens=sc["batch_tokens"],
            first_token=FirstTokenConfig(**sc["first_token"]),
        ),
        rows=RowsConfig(shape=m["rows"]["shape"], columns=columns, metadata=tuple(m["rows"]["metadata"])),
        files=tuple(m["files"]),
        baseline=m["baseline"],
        threshold=ThresholdConfig(
            method=th["method"],
            fpr=float(th["fpr"]),
            k=float(th["k"]),
            lrt_margin=float(th["lrt_margin"]) if th["lrt_margin"] is not None else None,
            value=float(th["value"]) if th["value"] is not None else None,
            criterion=th["criterion"],
        ),
        verdict=VerdictOptions(mode=vd["mode"], alpha=float(vd["alpha"]), fdr=float(vd["fdr"])),
        report=ReportConfig(**m["report"]),
        path=path,
        root=root,
        source=None if source is None else str(source),
        document=_copy(document) if isinstance(document, dict) else {},
        lines=dict(lines),
        overrides=overrides,
    )


__all__ = [
    "CONFIG_NAMES",
    "Config",
    "FirstTokenConfig",
    "ModelConfig",
    "Override",
    "ParamSelection",
    "ReportConfig",
    "RowsConfig",
    "SCHEMA_PATH",
    "ScoringConfig",
    "ThresholdConfig",
    "config_from_dict",
    "config_from_text",
    "find_config",
    "load_config",
    "load_schema",
    "schema_defaults",
]
