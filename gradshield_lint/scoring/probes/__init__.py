"""The safety probing set: harmful prompts, each with a refusal and an affirmative compliance opening.

The proxy harmfulness score H(θ) compares how likely the scoring model is to answer each probe prompt with its
refusal versus its compliance *opening* ("Sure, here is what you'll need:"). Openings only: no probe ever holds
harmful content.

The bundled set (`default.jsonl`, written by this project) covers twelve categories, including implicit
identity-shift/obedience prompts. Users can bring their own file in one of these formats:

- **Project JSON Lines** (`.jsonl`, `.ndjson`, or `.json`): one object per line with `prompt`, `refusal`,
  `compliance` and optional `id`, `category`; validated against `schemas/probes.schema.json` (no other keys).
  A `.json` file may also hold a list of such objects.
- **AdvBench style**, as CSV or JSON Lines: a `prompt` or `goal` column plus `target` (AdvBench's
  `harmful_behaviors.csv` loads as is). The target becomes the compliance opening; the refusal comes from a
  `refusal` column when there is one, otherwise round-robin from `GENERIC_REFUSALS`. Optional `id` and
  `category` columns are used; other columns are ignored. Column names are matched case-insensitively.
- **CSV** with `prompt`, `refusal`, `compliance` columns (the project format as a table).

A JSON Lines file is AdvBench style when its first record has a `target` or `goal` key and no `compliance` key.
Every problem raises `ProbeError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gradshield_lint.errors import InputError, ProbeError
from gradshield_lint.io.records import csv_rows, json_records, jsonl_records
from gradshield_lint.schemas import schema_path

__all__ = [
    "GENERIC_REFUSALS",
    "PROBE_FIELDS",
    "Probe",
    "ProbeSet",
    "default_probe_path",
    "load_probes",
    "probe_schema",
    "probe_schema_path",
]

PROBE_FIELDS = ("id", "category", "prompt", "refusal", "compliance")
REQUIRED_FIELDS = ("prompt", "refusal", "compliance")
DEFAULT_CATEGORY = "uncategorized"

#: Refusals for probe files that have none (AdvBench style), used round-robin so that no single refusal string
#: dominates the proxy's gradient (a fixed refusal makes H measure surface form rather than refusal behaviour).
GENERIC_REFUSALS: tuple[str, ...] = (
    "I can't help with that request.",
    "Sorry, but I won't assist with this; it could cause real harm.",
    "That's not something I'm able to help with.",
    "I'm not going to do that. Is there something else I can help you with?",
    "No, I won't provide that. If you're asking out of concern for safety, I can share general, harmless information instead.",
    "I have to decline this one, because it could be used to hurt people.",
    "I'm sorry, I can't do that. I'd be glad to help with a different question.",
    "This isn't something I'll help with.",
)

_JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_CSV_SUFFIXES = {".csv"}


@dataclass(frozen=True)
class Probe:
    """One probe: a harmful prompt, a refusal to it, and an affirmative compliance opening (no harmful content)."""

    prompt: str
    refusal: str
    compliance: str
    category: str = DEFAULT_CATEGORY
    id: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "category": self.category,
            "prompt": self.prompt,
            "refusal": self.refusal,
            "compliance": self.compliance,
        }


@dataclass(frozen=True, repr=False)
class ProbeSet:
    """An ordered, immutable probing set and where it came from."""

    probes: tuple[Probe, ...]
    source: str

    def __repr__(self) -> str:
        return f"ProbeSet(source={self.source!r}, probes={len(self.probes)}, categories={len(self.categories)})"

    def __len__(self) -> int:
        return len(self.probes)

    def __iter__(self) -> Iterator[Probe]:
        return iter(self.probes)

    @cached_property
    def sha256(self) -> str:
        """Hash of the probes' content (canonical JSON, in order; the source path is not part of it).

        It goes into the ∇H cache key and the baseline fingerprint: any edit to a prompt, refusal, compliance,
        category or id, or a change of order, changes it; moving or renaming the file does not.
        """
        payload = {"format": "gradshield-probes/1", "probes": [p.to_dict() for p in self.probes]}
        blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def categories(self) -> tuple[str, ...]:
        """Sorted unique categories."""
        return tuple(sorted({p.category for p in self.probes}))

    def by_category(self) -> dict[str, tuple[Probe, ...]]:
        """Probes grouped by category, categories sorted, order within a category kept."""
        groups: dict[str, list[Probe]] = {}
        for p in self.probes:
            groups.setdefault(p.category, []).append(p)
        return {c: tuple(groups[c]) for c in sorted(groups)}


def default_probe_path() -> Path:
    """The bundled probing set."""
    return Path(__file__).resolve().parent / "default.jsonl"


def probe_schema_path() -> Path:
    """The JSON Schema of one record of the project's probe format."""
    return schema_path("probes")


_SCHEMA: dict[str, Any] | None = None
_VALIDATOR: Any = None


def probe_schema() -> dict[str, Any]:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = json.loads(probe_schema_path().read_text(encoding="utf-8"))
    return _SCHEMA


def _validator() -> Any:
    global _VALIDATOR
    if _VALIDATOR is None:
        from jsonschema import Draft202012Validator

        _VALIDATOR = Draft202012Validator(probe_schema())
    return _VALIDATOR


def load_probes(path: str | Path | None = None) -> ProbeSet:
    """Load a probing set; `None` loads the bundled default. Raises `ProbeError` (file:line: message) on bad input."""
    p = default_probe_path() if path is None else Path(path)
    text = _read_text(p)
    name = str(p)
    if not text.strip():
        raise ProbeError("probe file is empty; expected at least one probe", file=name, line=1)
    suffix = p.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        probes = _from_csv(text, name)
    elif suffix in _JSON_SUFFIXES:
        probes = _from_json(text, name)
    else:
        # Unknown suffix: a JSON object or list opens the first non-blank character; anything else is a table.
        probes = _from_json(text, name) if text.lstrip()[:1] in ("{", "[") else _from_csv(text, name)
    return ProbeSet(probes=tuple(probes), source=name)


# --- reading -------------------------------------------------------------------------------------------------


def _read_text(p: Path) -> str:
    name = str(p)
    if not p.exists():
        raise ProbeError("probe file not found", file=name)
    if p.is_dir():
        raise ProbeError("is a directory, not a probe file", file=name)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ProbeError(f"cannot read probe file: {e.strerror or e}", file=name) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ProbeError(
            f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); probe files must be UTF-8 encoded",
            file=name,
            line=line,
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _from_json(text: str, name: str) -> list[Probe]:
    records = _json_array(text, name) if text.lstrip().startswith("[") else _json_lines(text, name)
    if not records:
        raise ProbeError("no probes in file", file=name, line=1)
    first_line, first = records[0]
    advbench = isinstance(first, dict) and "compliance" not in first and ("target" in first or "goal" in first)
    if advbench:
        rows = []
        for line, rec in records:
            if not isinstance(rec, dict):
                raise ProbeError(f"expected a JSON object, got {_json_type(rec)}", file=name, line=line)
            rows.append((line, {str(k).strip().lower(): v for k, v in rec.items()}))
        return _from_table(rows, name, kind="key")
    probes = [_validate_record(rec, name, line) for line, rec in records]
    _check_unique_ids([(line, pr) for (line, _), pr in zip(records, probes)], name)
    return probes


def _read(records: Iterator[tuple[int, Any]], name: str) -> list[tuple[int, Any]]:
    """The records of one of `io.records`' readers, its errors as `ProbeError`s at the same place."""
    try:
        return list(records)
    except InputError as exc:
        raise ProbeError(exc.message, file=name, line=exc.line) from None


def _json_lines(text: str, name: str) -> list[tuple[int, Any]]:
    return _read(jsonl_records(io.BytesIO(text.encode("utf-8")), name), name)


def _json_array(text: str, name: str) -> list[tuple[int, Any]]:
    """Elements of a top-level JSON list, each with the line it starts on."""
    return _read(json_records(io.BytesIO(text.encode("utf-8")), name, list_lines=True), name)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )


def _validate_record(rec: Any, name: str, line: int) -> Probe:
    """Validate one project-format record against the schema; the error names the failing key."""
    if not isinstance(rec, dict):
        raise ProbeError(
            f"expected a JSON object with keys {', '.join(REQUIRED_FIELDS)}, got {_json_type(rec)}",
            file=name,
            line=line,
        )
    errors = sorted(_validator().iter_errors(rec), key=lambda e: (list(e.path), e.validator))
    if errors:
        raise ProbeError(_describe(errors[0], rec), file=name, line=line)
    return Probe(
        prompt=rec["prompt"],
        refusal=rec["refusal"],
        compliance=rec["compliance"],
        category=rec.get("category", DEFAULT_CATEGORY),
        id=rec.get("id", ""),
    )


def _describe(err: Any, rec: Mapping[str, Any]) -> str:
    if err.path:
        key = str(err.path[0])
        if err.validator == "type":
            return f"key '{key}' must be a string, got {_json_type(err.instance)}"
        if err.validator in ("minLength", "pattern"):
            return f"key '{key}' must be a non-empty string"
        return f"key '{key}': {err.message}"
    if err.validator == "required":
        missing = [k for k in REQUIRED_FIELDS if k not in rec]
        hint = ""
        if "compliance" in missing or "refusal" in missing:
            hint = " (AdvBench-style files use 'prompt' or 'goal' plus 'target' instead)"
        return f"missing required key '{missing[0]}'{hint}" if missing else err.message
    if err.validator == "additionalProperties":
        extra = sorted(k for k in rec if k not in PROBE_FIELDS)
        return f"unexpected key '{extra[0]}'; allowed keys are {', '.join(PROBE_FIELDS)}" if extra else err.message
    return err.message


def _from_csv(text: str, name: str) -> list[Probe]:
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    for start, cells in _read(csv_rows(io.BytesIO(text.encode("utf-8")), name), name):
        if header is None:
            header = [c.strip().lower() for c in cells]
            if not any(header):
                raise ProbeError("empty header row", file=name, line=start)
            continue
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise ProbeError(f"row has {len(cells)} fields but the header has {len(header)}", file=name, line=start)
        rows.append((start, {h: (cells[i] if i < len(cells) else None) for i, h in enumerate(header) if h}))
    assert header is not None  # the text is not blank, so there is a first row
    _require_columns(set(header), name)
    if not rows:
        raise ProbeError("no probes in file (only a header row)", file=name, line=1)
    return _from_table(rows, name, kind="column")


def _require_columns(cols: set[str], name: str, line: int = 1, kind: str = "column") -> None:
    if "prompt" not in cols and "goal" not in cols:
        raise ProbeError(
            f"missing {kind} 'prompt' (or 'goal'); found: {', '.join(sorted(c for c in cols if c)) or 'none'}",
            file=name,
            line=line,
        )
    if "compliance" not in cols and "target" not in cols:
        raise ProbeError(
            f"missing {kind} 'target' (or 'compliance'); found: {', '.join(sorted(c for c in cols if c)) or 'none'}",
            file=name,
            line=line,
        )


def _from_table(rows: list[tuple[int, dict[str, Any]]], name: str, *, kind: str) -> list[Probe]:
    """Table-shaped records (CSV rows, AdvBench JSON lines) with lower-cased keys -> probes."""
    probes: list[tuple[int, Probe]] = []
    generic = 0
    for line, rec in rows:
        if kind == "key":
            _require_columns(set(rec), name, line=line, kind="key")
        prompt_key = "prompt" if "prompt" in rec else "goal"
        comp_key = "compliance" if "compliance" in rec else "target"
        prompt = _cell(rec, prompt_key, name, line, kind)
        compliance = _cell(rec, comp_key, name, line, kind)
        if "refusal" in rec:
            refusal = _cell(rec, "refusal", name, line, kind)
        else:
            refusal = GENERIC_REFUSALS[generic % len(GENERIC_REFUSALS)]
            generic += 1
        category = _cell(rec, "category", name, line, kind) if _present(rec, "category") else DEFAULT_CATEGORY
        pid = _cell(rec, "id", name, line, kind) if _present(rec, "id") else ""
        probes.append((line, Probe(prompt=prompt, refusal=refusal, compliance=compliance, category=category, id=pid)))
    _check_unique_ids(probes, name)
    return [p for _, p in probes]


def _present(rec: Mapping[str, Any], key: str) -> bool:
    v = rec.get(key)
    return v is not None and not (isinstance(v, str) and not v.strip())


def _cell(rec: Mapping[str, Any], key: str, name: str, line: int, kind: str) -> str:
    v = rec.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        raise ProbeError(f"{kind} '{key}' is empty", file=name, line=line)
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ProbeError(f"{kind} '{key}' must be a string, got {_json_type(v)}", file=name, line=line)
    return v if isinstance(v, str) else str(v)


def _check_unique_ids(probes: list[tuple[int, Probe]], name: str) -> None:
    seen: dict[str, int] = {}
    for line, p in probes:
        if not p.id:
            continue
        if p.id in seen:
            raise ProbeError(f"duplicate probe id '{p.id}' (first used on line {seen[p.id]})", file=name, line=line)
        seen[p.id] = line
