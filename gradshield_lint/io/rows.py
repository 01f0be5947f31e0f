"""Dataset files -> Row(id, messages, source, line).

Row identity is a hash of the row's normalized content (canonical JSON of its messages, NFC text, and of every
other field of the record), never its position: reordering rows or moving them between files changes nothing;
editing one, any field of it, makes it new. Every shape is mapped to messages before hashing, so a
prompt/completion row and the same content written as `messages` have the same id; a record with no field beyond
those its messages are read from (null and blank cells count as absent) hashes its messages alone, as ids were
computed before other fields were hashed, so baselines of that time still know it. The id is the whole sha256 (64
hex digits); baselines that stored its first 16 digits are still read (`LEGACY_ID_LEN`).

A field that is not part of the row shape (`text` beside `messages`, a `prompt` in a later record of a `messages`
file, a message's `reasoning_content`, a content part whose type is not `text`) is never scored, so one that holds
text (a string with a letter in it) is an input error at its line, unless its name is metadata: one of
`METADATA_FIELDS` or named in `rows.metadata`. Fields without text (numbers, booleans, an image part with no URL)
are read, and in the id.

Formats (chosen by suffix; every reader streams, so memory stays bounded whatever the file size):

- JSONL / NDJSON: one object per line, read line by line. `line` is the physical 1-based line.
- JSON: a list of records (`[{...}, {...}]`), parsed incrementally one record at a time. A `.json` file whose
  top level is a sequence of objects (what `Dataset.to_json` writes) is read as JSON lines. `line` is the
  record index + 1 for a list, the physical line for JSON lines.
- CSV / TSV: a header row, then one record per row (csv module; quoted fields may span lines). `line` is the
  physical line on which the record starts. Cells of a `messages`/`conversations` column hold JSON.
- Parquet: read batch by batch with pyarrow. `line` is the row index + 1.
- A directory written by `datasets.Dataset.save_to_disk` (memory-mapped Arrow). `line` is the row index + 1.
  A `DatasetDict` directory yields every split; those rows' `source` is `DIR/SPLIT`.
- `hf://datasets/OWNER/NAME[@REVISION]/PATH`: one file of a Hub dataset repository, fetched to the Hugging
  Face cache by `huggingface_hub.hf_hub_download` (so `HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_HUB_CACHE` apply)
  and then read as above; `source` stays the `hf://` string. `GRADSHIELD_HF_MIRROR=DIR` reads
  `DIR/OWNER/NAME[@REVISION]/PATH` instead (a local copy, for tests and air-gapped runners), and `iter_rows`
  takes an `hf_resolver` to do anything else.

Row shapes (detected from the column names, or set with `rows.shape` / `rows.columns` in the config):

- `messages`: a list of {role, content} (ShareGPT-style {from, value} messages are accepted as well).
- `sharegpt`: a `conversations` list of {from, value}; human -> user, gpt -> assistant, system -> system.
- `prompt-completion`: `prompt` + `completion` (or `response`), optional `system`.
- `alpaca`: `instruction` + optional `input` + `output`, optional `system`; the user turn is the instruction,
  then a blank line and the input when there is one.
- `text`: plain `text`. A text-only row has no prompt: it becomes one assistant turn, so all of its tokens are
  trained on (which is what finetuning on raw text does).

Detection: the structured shapes are tried first; more than one matching is an error. `text` is used only when
no structured shape matches (so an Alpaca dump with a pre-formatted `text` column reads as Alpaca, and its `text`
is refused as unscored unless named in `rows.metadata`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradshield_lint.errors import ConfigError, InputError
from gradshield_lint.io import safejson
from gradshield_lint.io.records import csv_records, json_records, jsonl_records

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Row:
    """One training example. `line` is 1-based (the row index for formats without lines)."""

    id: str
    messages: tuple[Message, ...]
    source: str
    line: int


FieldPath = tuple["str | int", ...]
"""Where a field sits in its record: ("topic",), ("messages", 2, "name"), ("messages", 2, "content", 1) (list
indices 1-based, as error messages count them)."""


def row_digest(messages: Sequence[Message], extra: Mapping[FieldPath, Any] | None = None) -> str:
    """Content hash, the full sha256 (64 hex digits): canonical JSON of NFC-normalized (role, content) pairs and,
    when the record holds fields beyond the ones its messages were read from (`extra`, by path; null and blank
    values left out by the reader), those fields normalized too. Without such fields the hash is over the messages
    alone, as before every field was hashed: baselines made then still know those rows."""
    canon: Any = [[m.role, unicodedata.normalize("NFC", m.content)] for m in messages]
    if extra:
        fields = sorted(([list(path), _normal(v)] for path, v in extra.items()), key=_canonical)
        canon = {"messages": canon, "fields": fields}
    return hashlib.sha256(_canonical(canon).encode("utf-8")).hexdigest()


FULL_ID_LEN = 64
"""A row id's length: a sha256 in hex."""
LEGACY_ID_LEN = 16
"""Baselines written before issue 33 stored `row_digest`'s first 16 hex digits: 64 bits, so a row with the same id
as a known one is about 2^32 tries of brute force away. They are still read (`lint.baseline.upgrade_ids`)."""


def row_id(messages: Sequence[Message], extra: Mapping[FieldPath, Any] | None = None) -> str:
    """The id baselines store: the full `row_digest` (64 hex digits), so that no other content can be made to have
    it. Reports show people its first 12 digits."""
    return row_digest(messages, extra)


def make_row(messages: Sequence[Message], source: str, line: int, extra: Mapping[FieldPath, Any] | None = None) -> Row:
    return Row(id=row_id(messages, extra), messages=tuple(messages), source=source, line=line)


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_tagged)


def _normal(value: Any) -> Any:
    """NFC text at every depth (keys too), so a field hashes as the text it shows."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, Mapping):
        return {unicodedata.normalize("NFC", str(k)): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def _tagged(value: Any) -> Any:
    # Parquet and Arrow cells beyond JSON (bytes, dates, decimals...): tagged with their type, so that a byte string
    # and the text of its hex digits never hash alike
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    return {f"${type(value).__name__}": str(value)}


# --------------------------------------------------------------------------------------------------------------
# Shapes

SHAPE_KINDS = ("messages", "sharegpt", "prompt-completion", "alpaca", "text")
"""The row shapes `rows.shape` may name (besides "auto")."""

# kind -> logical field -> (column names tried in order when not mapped, required?)
_FIELDS: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {
    "messages": {"messages": (("messages",), True)},
    "sharegpt": {"conversations": (("conversations",), True)},
    "prompt-completion": {
        "prompt": (("prompt",), True),
        "completion": (("completion", "response"), True),
        "system": (("system",), False),
    },
    "alpaca": {
        "instruction": (("instruction",), True),
        "input": (("input",), False),
        "output": (("output",), True),
        "system": (("system",), False),
    },
    "text": {"text": (("text",), True)},
}
# Keys inside each message of a messages/conversations list (mappable through `rows.columns` too).
_MESSAGE_KEYS = {"messages": ("role", "content"), "sharegpt": ("from", "value")}
_STRUCTURED = ("messages", "sharegpt", "prompt-completion", "alpaca")

SHAPE_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(fields) + (("role", "content") if kind in _MESSAGE_KEYS else ()) for kind, fields in _FIELDS.items()
}
"""For each kind, the logical field names that `rows.columns` may map to a column (or a message key)."""

COLUMN_KEYS: tuple[str, ...] = tuple(dict.fromkeys(k for fields in SHAPE_FIELDS.values() for k in fields))
"""Every logical field name any shape knows."""

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}
"""Role names accepted in messages/conversations, mapped onto `ROLES`."""

_SHAPE_HINT = (
    "set rows.shape (one of " + ", ".join(SHAPE_KINDS) + ") and rows.columns in .gradshield.yaml, "
    "e.g. rows: {shape: prompt-completion, columns: {prompt: question, completion: answer}}"
)


@dataclass(frozen=True)
class RowShape:
    """A row shape override: `kind` is one of `SHAPE_KINDS` or "auto"; `columns` maps logical field names
    (`SHAPE_FIELDS[kind]`, e.g. "prompt", "completion") to the dataset's column names. With kind "auto" the
    mapped fields narrow detection to the kinds that have them."""

    kind: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    # fields read as metadata besides METADATA_FIELDS: in the row's id, never scored, never refused
    metadata: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.metadata:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"rows.metadata: expected field names, got {name!r}")
        if self.kind != "auto" and self.kind not in SHAPE_KINDS:
            raise ConfigError(f"rows.shape: unknown row shape {self.kind!r} (one of auto, {', '.join(SHAPE_KINDS)})")
        allowed = COLUMN_KEYS if self.kind == "auto" else SHAPE_FIELDS[self.kind]
        for key, col in self.columns.items():
            if key not in allowed:
                raise ConfigError(
                    f"rows.columns.{key}: not a field of row shape {self.kind!r} (fields: {', '.join(allowed)})"
                )
            if not isinstance(col, str) or not col:
                raise ConfigError(f"rows.columns.{key}: expected a column name, got {col!r}")


@dataclass(frozen=True)
class _Plan:
    kind: str
    cols: dict[str, str | None]  # logical field -> column (None: optional field not present)
    role_key: str | None = None
    content_key: str | None = None


def _plan_for(
    kind: str, columns: Sequence[str], mapping: Mapping[str, str], schemaless: bool = False
) -> tuple[_Plan | None, list[str]]:
    """The plan for `kind` over `columns`, or None and the required fields that are missing. `schemaless`: the
    columns are one record's keys (JSON), so an optional field absent there may still appear in later records."""
    present = set(columns)
    cols: dict[str, str | None] = {}
    missing: list[str] = []
    ambiguous: str | None = None
    for name, (candidates, required) in _FIELDS[kind].items():
        if name in mapping:
            found = [mapping[name]] if mapping[name] in present else []
        else:
            found = [c for c in candidates if c in present]
        if len(found) > 1 and ambiguous is None:
            ambiguous = f"both {found[0]!r} and {found[1]!r} could be the {name} column"
        if found:
            cols[name] = found[0]
        elif required:
            missing.append(mapping[name] if name in mapping else " / ".join(candidates))
        else:
            cols[name] = mapping.get(name, candidates[0]) if schemaless else None
    if missing:
        return None, missing
    if ambiguous:
        raise _Ambiguous(ambiguous)
    role_key = content_key = None
    if kind in _MESSAGE_KEYS:
        role_key = mapping.get("role", _MESSAGE_KEYS[kind][0])
        content_key = mapping.get("content", _MESSAGE_KEYS[kind][1])
    return _Plan(kind, cols, role_key, content_key), []


class _Ambiguous(Exception):
    pass


def resolve_shape(
    columns: Sequence[str], shape: RowShape | None = None, *, source: str = "", line: int | None = None
) -> RowShape:
    """The concrete shape (kind and full column mapping) rows with these columns are read with.

    Raises InputError, naming the columns found and the config keys that fix it, when no shape or more than
    one fits, or when a mapped column is missing."""
    plan = _resolve(columns, shape, source, line)
    cols = {k: v for k, v in plan.cols.items() if v is not None}
    if plan.role_key is not None and plan.content_key is not None:
        cols.update(role=plan.role_key, content=plan.content_key)
    return RowShape(plan.kind, cols, shape.metadata if shape else ())


def _resolve(
    columns: Sequence[str], shape: RowShape | None, source: str, line: int | None, schemaless: bool = False
) -> _Plan:
    shape = shape or RowShape()
    mapping = dict(shape.columns)
    found = ", ".join(repr(c) for c in columns) or "none"
    if shape.kind != "auto":
        try:
            plan, missing = _plan_for(shape.kind, columns, mapping, schemaless)
        except _Ambiguous as exc:
            raise InputError(
                f"{exc}; name it in rows.columns (columns found: {found})", file=source, line=line
            ) from None
        if plan is None:
            via = [f"rows.columns.{k}" for k in mapping if k in _FIELDS[shape.kind]]
            raise InputError(
                f"row shape {shape.kind!r} needs column(s) {', '.join(repr(m) for m in missing)}, not found "
                f"(columns found: {found}); map them with rows.columns" + (f" (set: {', '.join(via)})" if via else ""),
                file=source,
                line=line,
            )
        return plan
    field_keys = {k for k in mapping if k not in ("role", "content")}
    kinds = [k for k in SHAPE_KINDS if field_keys <= set(_FIELDS[k])]
    if not field_keys and {"role", "content"} & set(mapping):
        kinds = [k for k in kinds if k in _MESSAGE_KEYS]
    matches: list[_Plan] = []
    ambiguous: list[str] = []
    for kind in kinds:
        try:
            plan, _ = _plan_for(kind, columns, mapping, schemaless)
        except _Ambiguous as exc:
            ambiguous.append(f"{kind}: {exc}")
            continue
        if plan is not None:
            matches.append(plan)
    structured = [p for p in matches if p.kind in _STRUCTURED]
    if len(structured) + len(ambiguous) > 1 or (ambiguous and not structured):
        what = [repr(p.kind) for p in structured] + ambiguous
        raise InputError(
            f"ambiguous row shape: columns {found} fit {' and '.join(what)}; {_SHAPE_HINT}", file=source, line=line
        )
    if structured:
        return structured[0]
    if matches:
        return matches[0]
    raise InputError(
        f"unknown row shape: columns found: {found}; expected messages, conversations, prompt + completion/response, "
        f"instruction + output, or text; {_SHAPE_HINT}",
        file=source,
        line=line,
    )


# --------------------------------------------------------------------------------------------------------------
# Records -> messages


METADATA_FIELDS = ("id", "uuid", "source", "url", "label", "category", "language", "meta", "metadata")
"""Fields (at any depth: a record's columns, a message's keys, a content part's type) that are read as metadata
without being named in `rows.metadata`: in the row's id, never scored."""


@dataclass
class _Fields:
    """The fields of one record that its messages were not read from: every one goes into the row's id; those that
    hold text (a string with a letter in it) and are not metadata are what a trainer could read unscored."""

    allowed: frozenset[str]
    found: dict[FieldPath, Any] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)

    def add(self, path: FieldPath, value: Any, *, name: str, what: str | None = None, text: Any = None) -> None:
        """`text`: the part of `value` that is read as text, when not all of it (a content part's type is not)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return  # nothing to read: a null or blank cell is an absent field (CSV and Parquet have every column)
        self.found[path] = value
        if name not in self.allowed and _has_text(value if text is None else text):
            self.unscored.append(what or repr(_path_text(path)))


def _path_text(path: FieldPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return any(c.isalpha() for c in value)
    if isinstance(value, Mapping):
        return any(_has_text(str(k)) or _has_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_text(v) for v in value)
    return False


def _text(value: Any, what: str, source: str, line: int, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        got = "nothing (null)" if value is None else type(value).__name__
        raise InputError(f"{what} must be a string, got {got}", file=source, line=line)
    return value


def _content(value: Any, what: str, source: str, line: int, path: FieldPath, fields: _Fields) -> str:
    # Multimodal-style content parts: the text parts are read; a part of another type is not scored, so it is in
    # the id, and one that carries text (an `output_text`, an image's URL) is refused unless its type is metadata.
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = []
        for j, part in enumerate(value, start=1):
            kind = part.get("type", "text")
            if kind == "text":
                texts.append(part.get("text"))
                for key, v in part.items():
                    if key not in ("type", "text"):
                        fields.add((*path, j, str(key)), v, name=str(key))
            else:
                rest = {k: v for k, v in part.items() if k != "type"}
                fields.add(
                    (*path, j),
                    part,
                    name=str(kind),
                    text=rest,
                    what=f"{_path_text((*path, j))!r} (a content part of type {str(kind)!r})",
                )
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return _text(value, what, source, line)


def _message_list(value: Any, plan: _Plan, column: str, source: str, line: int, fields: _Fields) -> list[Message]:
    if isinstance(value, str):  # CSV cells, JSON-encoded columns
        try:
            value = safejson.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"column {column!r} is not a JSON list of messages: {exc.msg}", file=source, line=line
            ) from None
    if not isinstance(value, list):
        got = "null" if value is None else type(value).__name__
        raise InputError(f"column {column!r} must be a list of messages, got {got}", file=source, line=line)
    role_key, content_key = plan.role_key or "role", plan.content_key or "content"
    out: list[Message] = []
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            raise InputError(
                f"{column}[{i}] must be an object with {role_key!r} and {content_key!r}", file=source, line=line
            )
        rk, ck = role_key, content_key
        if rk not in m and ck not in m:  # the other convention (role/content vs from/value)
            for alt_r, alt_c in _MESSAGE_KEYS.values():
                if alt_r in m and alt_c in m:
                    rk, ck = alt_r, alt_c
        if rk not in m or ck not in m:
            raise InputError(
                f"{column}[{i}] needs {rk!r} and {ck!r} keys (has {', '.join(repr(k) for k in m) or 'none'}); "
                "map other names with rows.columns.role / rows.columns.content",
                file=source,
                line=line,
            )
        raw_role = m[rk]
        role = ROLE_ALIASES.get(raw_role.lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise InputError(
                f"{column}[{i}]: unsupported role {raw_role!r} (supported: {', '.join(ROLE_ALIASES)})",
                file=source,
                line=line,
            )
        for key, v in m.items():
            if key not in (rk, ck):
                fields.add((column, i, str(key)), v, name=str(key))
        out.append(Message(role, _content(m[ck], f"{column}[{i}].{ck}", source, line, (column, i, ck), fields)))
    return out


def _messages(plan: _Plan, record: Mapping[str, Any], source: str, line: int, fields: _Fields) -> list[Message]:
    cols = plan.cols
    read = {c for c in cols.values() if c is not None}
    for key, value in record.items():
        if key not in read:
            fields.add((str(key),), value, name=str(key))

    def get(name: str) -> Any:
        col = cols.get(name)
        if col is None:
            return None
        if col not in record:
            if _FIELDS[plan.kind][name][1]:
                raise InputError(f"missing column {col!r} (the {name} of a {plan.kind} row)", file=source, line=line)
            return None
        return record[col]

    def col_text(name: str, optional: bool = False) -> str:
        return _text(get(name), f"column {cols.get(name)!r}", source, line, optional=optional)

    kind = plan.kind
    msgs: list[Message] = []
    if kind in ("messages", "sharegpt"):
        name = "messages" if kind == "messages" else "conversations"
        col = cols[name]
        assert col is not None
        msgs = _message_list(get(name), plan, col, source, line, fields)
        if not any(m.role == "assistant" and m.content.strip() for m in msgs):
            what = "no assistant turn" if not any(m.role == "assistant" for m in msgs) else "only empty assistant turns"
            raise InputError(f"row has {what}: there is nothing to finetune on", file=source, line=line)
        return msgs
    if kind == "text":
        text = col_text("text")
        if not text.strip():
            raise InputError(
                f"empty text (column {cols['text']!r}): there is nothing to finetune on", file=source, line=line
            )
        return [Message("assistant", text)]
    system = col_text("system", optional=True)
    if kind == "prompt-completion":
        prompt = col_text("prompt", optional=True)
        answer, answer_name = col_text("completion", optional=True), "completion"
    else:  # alpaca
        instruction = col_text("instruction", optional=True)
        extra = col_text("input", optional=True)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        answer, answer_name = col_text("output", optional=True), "output"
    if not answer.strip():
        raise InputError(
            f"empty {answer_name} (column {cols[answer_name]!r}): the row has no assistant turn to finetune on",
            file=source,
            line=line,
        )
    if system.strip():
        msgs.append(Message("system", system))
    if prompt.strip():
        msgs.append(Message("user", prompt))
    msgs.append(Message("assistant", answer))
    return msgs


# --------------------------------------------------------------------------------------------------------------
# Formats

SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
"""File suffixes read as datasets (case-insensitive). `save_to_disk` directories are read too."""

HF_PREFIX = "hf://datasets/"


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def is_dataset_file(path: str | Path) -> bool:
    """Whether the linter reads `path`: a supported suffix (also for `hf://` paths; existence is not checked) or
    an existing `datasets` save_to_disk directory."""
    s = str(path)
    if s.startswith(HF_PREFIX):
        return s.lower().endswith(SUPPORTED_SUFFIXES)
    p = Path(path)
    if p.suffix.lower() in SUPPORTED_SUFFIXES:
        return not p.is_dir() or _is_saved_dataset(p)
    return _is_saved_dataset(p)


@dataclass(frozen=True)
class HfPath:
    """A parsed `hf://datasets/OWNER/NAME[@REVISION]/PATH`."""

    repo_id: str
    revision: str | None
    path_in_repo: str

    @property
    def url(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{self.repo_id}{rev}/{self.path_in_repo}"


_HF_RE = re.compile(r"^hf://datasets/([^/@]+)/([^/@]+)(?:@([^/]+))?/(.+)$")


def parse_hf_path(s: str) -> HfPath:
    """Parse an `hf://datasets/...` path (a revision with slashes is written URL-encoded, e.g. refs%2Fpr%2F1)."""
    from urllib.parse import unquote

    m = _HF_RE.match(s)
    if not m or m.group(4).endswith("/"):
        raise InputError("expected hf://datasets/OWNER/NAME[@REVISION]/PATH/TO/FILE", file=s)
    owner, name, rev, rest = m.groups()
    revision = unquote(rev) if rev else None
    # `..` would leave the dataset (a local mirror's folder, or the repository in a Hub URL): no such file exists
    for what, parts in (
        ("OWNER/NAME", [owner, name]),
        ("REVISION", (revision or "x").split("/")),
        ("PATH", rest.split("/")),
    ):
        if any(part in ("", ".", "..") or "\\" in part for part in parts):
            raise InputError(
                f"'.', '..', '\\' and empty segments are not allowed in the {what} of an hf:// path: it must stay "
                "inside the dataset",
                file=s,
            )
    return HfPath(f"{owner}/{name}", revision, rest)


HfResolver = Callable[[HfPath], "str | Path"]
"""Turns an `hf://` path into a local file (downloading it, or finding a local copy)."""


def default_hf_resolver(ref: HfPath) -> Path:
    """`GRADSHIELD_HF_MIRROR` if set (a local copy laid out as OWNER/NAME[@REVISION]/PATH), else
    `huggingface_hub.hf_hub_download` into the Hugging Face cache (honours HF_ENDPOINT, HF_HUB_OFFLINE)."""
    mirror = os.environ.get("GRADSHIELD_HF_MIRROR")
    if mirror:
        base = Path(mirror)
        candidates = ([base / f"{ref.repo_id}@{ref.revision}"] if ref.revision else []) + [base / ref.repo_id]
        for repo_dir in candidates:
            if (repo_dir / ref.path_in_repo).exists():
                return repo_dir / ref.path_in_repo
        raise InputError(f"not found in the local Hub copy GRADSHIELD_HF_MIRROR={mirror}", file=ref.url)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - a dependency
        raise InputError(f"reading hf:// paths needs huggingface_hub: {exc}", file=ref.url) from exc
    try:
        return Path(hf_hub_download(ref.repo_id, ref.path_in_repo, repo_type="dataset", revision=ref.revision))
    except GatedRepoError as exc:
        raise InputError("the dataset is gated: log in (`hf auth login`) with access to it", file=ref.url) from exc
    except RepositoryNotFoundError as exc:
        raise InputError(f"no such dataset repository {ref.repo_id!r} (or it is private)", file=ref.url) from exc
    except RevisionNotFoundError as exc:
        raise InputError(f"no such revision {ref.revision!r} in {ref.repo_id}", file=ref.url) from exc
    except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: first
        raise InputError(
            "cannot reach the Hub (offline?) and the file is not in the local Hugging Face cache", file=ref.url
        ) from exc
    except EntryNotFoundError as exc:
        raise InputError(f"no file {ref.path_in_repo!r} in {ref.repo_id}", file=ref.url) from exc
    except Exception as exc:  # network and HTTP errors of all kinds
        raise InputError(f"cannot fetch from the Hub: {exc}", file=ref.url) from exc


ARROW_ALONE = (
    "an Arrow file is read only as part of the datasets save_to_disk directory that holds it (state.json and "
    "dataset_info.json beside it, or a dataset_dict.json above), and none holds this one: name the dataset directory, "
    "or leave the file out (the hook's `exclude:`, the Action's `paths`)"
)


def _check_suffix(name: str, source: str) -> str:
    lower = name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    if lower.endswith(".arrow"):
        # the hooks pass `.arrow` files so that a change to a save_to_disk directory's data is seen; one inside such
        # a directory stands for it (io/files.py), so only a stray one gets here
        raise InputError(ARROW_ALONE, file=source)
    raise InputError(
        f"unsupported file type {Path(name).suffix or '(no suffix)'!r}: expected one of {', '.join(SUPPORTED_SUFFIXES)} "
        "or a datasets save_to_disk directory",
        file=source,
    )


_Records = Iterator[tuple[int, Any]]


def _parquet_records(path: Path, source: str) -> tuple[list[str], _Records]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", file=source) from None

    def records() -> _Records:
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=512):
                for rec in batch.to_pylist():
                    index += 1
                    yield index, rec
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"corrupt Parquet data after row {index}: {exc}", file=source, line=index + 1) from None

    return names, records()


def _saved_dataset_records(path: Path, source: str) -> Iterator[tuple[str, list[str], _Records]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a dependency
        raise InputError(f"reading save_to_disk directories needs the datasets package: {exc}", file=source) from exc
    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=False)
    except Exception as exc:  # corrupt or foreign directories raise many kinds of errors
        raise InputError(f"cannot load the datasets directory: {exc}", file=source) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = [(f"{source.rstrip('/')}/{name}", ds) for name, ds in loaded.items()]
    else:
        splits = [(source, loaded)]
    for split_source, ds in splits:

        def records(ds: Any = ds) -> _Records:
            index = 0
            for batch in ds.iter(batch_size=512):
                keys = list(batch)
                for values in zip(*(batch[k] for k in keys)):
                    index += 1
                    yield index, dict(zip(keys, values))

        yield split_source, list(ds.column_names), records()


def _rows_from(
    records: _Records, header: Sequence[str] | None, shape: RowShape | None, source: str
) -> Iterator[tuple[Row, Any]]:
    plan: _Plan | None = None
    allowed = frozenset(METADATA_FIELDS) | frozenset(shape.metadata if shape else ())
    for line, record in records:
        if not isinstance(record, dict):
            got = "null" if record is None else type(record).__name__
            raise InputError(f"expected a JSON object (a record), got {got}", file=source, line=line)
        if plan is None:
            columns = list(header) if header is not None else list(record)
            plan = _resolve(columns, shape, source, line, schemaless=header is None)
        fields = _Fields(allowed)
        messages = _messages(plan, record, source, line, fields)
        if fields.unscored:
            raise InputError(
                f"field(s) {', '.join(fields.unscored)} not scored: the row is read as {plan.kind} "
                f"({', '.join(repr(c) for c in plan.cols.values() if c is not None)}), and a trainer that reads "
                "them would learn from text no check has seen; remove them, map them with rows.shape / rows.columns, "
                "or, if no trainer reads them, name them in rows.metadata",
                file=source,
                line=line,
            )
        yield make_row(messages, source, line, fields.found), record
    if plan is None:
        raise InputError("empty file: no rows", file=source)


def iter_rows_with_records(
    path: str | Path, shape: RowShape | None = None, *, hf_resolver: HfResolver | None = None
) -> Iterator[tuple[Row, dict[str, Any]]]:
    """Like `iter_rows`, yielding each row with the record it was read from (column -> value), e.g. to write a
    filtered copy of the dataset in its own format."""
    source = str(path)
    if source.startswith("hf://"):
        ref = parse_hf_path(source)
        _check_suffix(ref.path_in_repo, source)
        local = Path((hf_resolver or default_hf_resolver)(ref))
        if local.is_dir():
            raise InputError("is a directory in the repository; name a data file", file=source)
        yield from _iter_local(local, source, shape)
        return
    yield from _iter_local(Path(path), source, shape)


def _stat(path: Path, source: str) -> os.stat_result:
    """The file's status (links followed); InputError for a missing file, a symlink loop, or no access."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise InputError(
            "no such file" if not path.is_symlink() else "no such file (a dangling symlink)", file=source
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("symlink loop: the link never reaches a file", file=source) from None
        raise InputError(f"cannot read: {exc.strerror or exc}", file=source) from None


def _open_regular(path: Path, source: str) -> Any:
    """Open for reading without blocking on a FIFO swapped in after the check (O_NONBLOCK), and check again."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", file=source) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(_NOT_REGULAR, file=source)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


_NOT_REGULAR = "not a regular file (a FIFO, socket or device?): name a dataset file"


def _iter_local(path: Path, source: str, shape: RowShape | None) -> Iterator[tuple[Row, dict[str, Any]]]:
    st = _stat(path, source)
    if stat.S_ISDIR(st.st_mode):
        if _is_saved_dataset(path):
            for split_source, names, records in _saved_dataset_records(path, source):
                yield from _rows_from(records, names, shape, split_source)
            return
        raise InputError(
            "is a directory, not a dataset file (expected a file or a datasets save_to_disk directory)", file=source
        )
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block forever, a device read without end
        raise InputError(_NOT_REGULAR, file=source)
    suffix = _check_suffix(path.name, source)
    if suffix == ".parquet":
        names, records = _parquet_records(path, source)
        yield from _rows_from(records, names, shape, source)
        return
    fh = _open_regular(path, source)
    with fh:
        if fh.read(1) == b"":
            raise InputError("empty file: no rows", file=source)
        fh.seek(0)
        if suffix in (".csv", ".tsv"):
            header, records = csv_records(fh, source, "," if suffix == ".csv" else "\t")
            yield from _rows_from(records, header, shape, source)
        elif suffix == ".json":
            yield from _rows_from(json_records(fh, source), None, shape, source)
        else:
            yield from _rows_from(jsonl_records(fh, source), None, shape, source)


def iter_rows(
    path: str | Path, shape: RowShape | None = None, *, hf_resolver: HfResolver | None = None
) -> Iterator[Row]:
    """Stream the rows of one dataset file, directory or `hf://` path (see the module docstring).

    `shape` overrides detection (from `Config.rows`). `source` of each row is `str(path)` as given. Raises
    `InputError` (with file and, where there is one, line) for anything that cannot be read as rows; rows before
    a bad one have already been yielded, so read to the end before acting on the rows if that matters."""
    for row, _ in iter_rows_with_records(path, shape, hf_resolver=hf_resolver):
        yield row


def shape_from_config(kind: str, columns: Mapping[str, str] | None, metadata: Sequence[str] = ()) -> RowShape | None:
    """The RowShape for `rows.shape` / `rows.columns` / `rows.metadata` (None when all are left at their
    defaults)."""
    if kind == "auto" and not columns and not metadata:
        return None
    return RowShape(kind, dict(columns or {}), tuple(metadata))


__all__ = [
    "COLUMN_KEYS",
    "FieldPath",
    "HfPath",
    "HfResolver",
    "METADATA_FIELDS",
    "Message",
    "ROLES",
    "ROLE_ALIASES",
    "Row",
    "RowShape",
    "SHAPE_FIELDS",
    "SHAPE_KINDS",
    "SUPPORTED_SUFFIXES",
    "default_hf_resolver",
    "is_dataset_file",
    "iter_rows",
    "iter_rows_with_records",
    "make_row",
    "parse_hf_path",
    "resolve_shape",
    "row_digest",
    "row_id",
    "shape_from_config",
]
