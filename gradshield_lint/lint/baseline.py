"""The stored baseline: read, write, validate, diff against rows.

File format (JSON, `schemas/baseline.schema.json`, Draft 2020-12)::

    {
      "version": 1,
      "fingerprint": {...},      what the scores depend on; any difference refuses the comparison
      "recorded": {...},         method, dtype, device: recorded, never a reason to refuse
      "threshold": {...},        value, method, criterion, iterations, details
      "accepted": {"<row id>": "<reason>", ...},
      "scores": {"<row id>": <FIHS>, ...}
    }

Written so that version control handles it well:

* **Deterministic bytes.** Top-level keys in the fixed order above; every map inside with sorted keys; one entry
  per line (2-space indent, ``\\n`` newlines, UTF-8); floats rounded to `SIG_DIGITS` (7) significant digits and
  written in one way (``format(x, ".7g")``, with ``.0`` added to integral values so they read back as floats);
  no timestamps, no line numbers, no absolute paths. The same content always gives the same bytes, whatever the
  insertion order of the dicts.
* **Merges.** Scores are sorted by row id (a content hash, so new rows land at random places): two pull requests
  that each add rows touch different lines and ``git merge`` combines them without conflict, unless two new ids
  fall into the same gap between existing lines (rare: about k₁·k₂/n for k₁ and k₂ new rows among n; one unchanged
  line between two insertions is enough for git), or one of them lands after the last entry (whose line gains a
  comma), or both change the same metadata line (e.g. both re-ran the threshold: a real conflict).
* **Precision.** 7 significant digits is float32 precision; scores computed in bf16 or on another device differ
  from float32 far more than that, so nothing is lost. Thresholds are rounded the same way (monotone rounding: a
  score at or below the threshold stays at or below it).
* **Non-finite values.** JSON has no NaN/Infinity: every score and the threshold must be finite numbers
  (`BaselineError` otherwise, on writing and on reading: ``NaN``, ``Infinity``, a number too large for a float such
  as ``1e400``, or a ``null`` threshold make a baseline unreadable: a threshold of +inf would flag nothing, so a
  baseline without one must not pass every check). Non-finite `details` entries (informational) are written as
  ``null`` and read back as NaN.

Reading a large baseline: JSON-decoding it is the floor; validating the whole document with `jsonschema` would
cost many times that (it walks every one of the entries through Python validator objects), so the schema
validates the metadata (the document with an empty ``scores`` map) and the scores map is checked directly with the
same rules (id pattern via one regular-expression match over all ids; values must be numbers, via a set of their
types; no duplicate ids). Sizes and timings: `python -m gradshield_research.bench.baseline_size`, docs/measurements.md.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

from gradshield_lint.errors import BaselineError, OutputError, RowIdError
from gradshield_lint.io import safejson
from gradshield_lint.io.atomic import atomic_write_text
from gradshield_lint.io.rows import FULL_ID_LEN, LEGACY_ID_LEN
from gradshield_lint.lint.threshold import ThresholdResult
from gradshield_lint.schemas import schema_path
from gradshield_lint.scoring.fingerprint import Fingerprint, Recorded

VERSION = 1
SIG_DIGITS = 7
SCHEMA_PATH = schema_path("baseline")
ROW_ID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,128}")
_HEX_RE = re.compile(r"[0-9a-f]+")
_ALL_IDS_RE = re.compile(r"(?:[0-9A-Za-z_.:-]{1,128}\n)*")
RESCORE_HINT = "run `gradshield-lint baseline update --rescore`"
DEFAULT_LOCK_TIMEOUT = 60.0
_TOP_KEYS = ("version", "fingerprint", "recorded", "threshold", "accepted", "scores")


# --------------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Baseline:
    """A stored baseline. `scores` and `accepted` are keyed by row id. Treat it as immutable: the functions below
    return new baselines."""

    fingerprint: Fingerprint
    recorded: Recorded
    threshold: ThresholdResult
    scores: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowDiff:
    """Rows of the data relative to a baseline. `new` and `known` keep the order the ids were given in (first
    occurrence; duplicates dropped); `removed` (ids in the baseline's scores but not in the data) is sorted."""

    new: list[str]
    known: list[str]
    removed: list[str]


# --------------------------------------------------------------------------------------------------- helpers


def round_score(x: float) -> float:
    """Round to SIG_DIGITS significant digits, exactly as the file stores it."""
    return float(format(float(x), f".{SIG_DIGITS}g"))


def _fmt(x: float) -> str:
    s = format(x, f".{SIG_DIGITS}g")
    return s if ("." in s or "e" in s or "n" in s) else s + ".0"  # "3" -> "3.0" so that it reads back as float


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _check_row_id(row_id: object, path: str | Path | None = None) -> str:
    if not isinstance(row_id, str) or not ROW_ID_RE.fullmatch(row_id):
        raise BaselineError(f"invalid row id {row_id!r} (expected letters, digits or _.:-, at most 128)", file=path)
    return row_id


def _format_scores(values: list[float]) -> list[str]:
    """`_fmt` over many values at C speed (map), fixing up the rare integral ones."""
    strs = list(map(format, values, repeat(f".{SIG_DIGITS}g")))
    return [x if ("." in x or "e" in x) else x + ".0" for x in strs]


def _check_scores(ids: list[str], values: list[Any], path: str | Path | None = None) -> None:
    """Raise BaselineError for an invalid row id or a score that is not a finite number; fast at a million rows."""
    if ids and not _ALL_IDS_RE.fullmatch("\n".join(ids) + "\n"):
        for k in ids:
            _check_row_id(k, path)
    if not set(map(type, values)) <= {float, int} or not all(map(math.isfinite, values)):
        for k, v in zip(ids, values):
            _check_score(k, v, path)


def _clean_scores(scores: Mapping[str, object], path: str | Path | None = None) -> dict[str, float]:
    """Validated (ids, finite numbers) and rounded as stored."""
    ids = list(scores)
    values = list(scores.values())
    _check_scores(ids, values, path)
    return dict(zip(ids, map(float, _format_scores([float(v) for v in values]))))  # type: ignore[arg-type]  # checked above


def _check_score(row_id: str, v: object, path: str | Path | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BaselineError(f"score of row {row_id} is not a finite number: {v!r}", file=path)
    return round_score(v)


# --------------------------------------------------------------------------------------------------- construction


def make_baseline(
    fingerprint: Fingerprint,
    scores: Mapping[str, float],
    threshold: ThresholdResult,
    recorded: Recorded | None = None,
    accepted: Mapping[str, str] | None = None,
) -> Baseline:
    """A new baseline with validated ids and scores rounded as stored."""
    clean = _clean_scores(scores)
    acc = {_check_row_id(k): _check_reason(r) for k, r in (accepted or {}).items()}
    return Baseline(fingerprint, recorded or Recorded(), threshold, clean, acc)


def _check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise BaselineError('an accepted row needs a non-empty reason (--reason "…")')
    return reason.strip()


def diff_rows(baseline: Baseline, row_ids: Iterable[str]) -> RowDiff:
    """Which of `row_ids` the baseline has scored (`known`), which it has not (`new`), and which baseline rows are
    gone from the data (`removed`)."""
    seen: set[str] = set()
    new: list[str] = []
    known: list[str] = []
    scores = baseline.scores
    for rid in row_ids:
        if rid in seen:
            continue
        seen.add(rid)
        (known if rid in scores else new).append(rid)
    removed = sorted(k for k in scores if k not in seen)
    return RowDiff(new=new, known=known, removed=removed)


def _legacy_keys(baseline: Baseline) -> set[str]:
    """The baseline's ids in the old form (16 lowercase hex digits)."""
    return {
        k
        for keys in (baseline.scores, baseline.accepted)
        for k in keys
        if len(k) == LEGACY_ID_LEN and _HEX_RE.fullmatch(k)
    }


def upgrade_ids(baseline: Baseline, row_ids: Iterable[str]) -> Baseline:
    """The baseline with each old 16-digit id (scores and accepted) replaced by the full id of the row it names
    among `row_ids`: the one full id that starts with it. When two of `row_ids` start with the same old id (a
    collision: one of them may have been made to match), neither takes its place: both are new rows and get
    scored, and `baseline update` drops the old entry. Old ids no row of `row_ids` matches stay as they are (their
    rows may come back; `baseline update` drops them from the scores as it drops every row that is gone).
    Returns `baseline` itself when there is nothing to replace (the usual case, at the cost of a scan of its ids)."""
    legacy = _legacy_keys(baseline)
    if not legacy:
        return baseline
    full: dict[str, str | None] = {}  # old id -> the one full id that starts with it (None: several)
    for rid in row_ids:
        if len(rid) != FULL_ID_LEN:
            continue
        old = rid[:LEGACY_ID_LEN]
        if old in legacy and full.get(old, rid) != rid:
            full[old] = None
        elif old in legacy:
            full[old] = rid
    rename = {old: new for old, new in full.items() if new is not None}
    if not rename:
        return baseline

    def renamed(d: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k not in rename}
        for old, new in rename.items():
            if old in d:
                out.setdefault(new, d[old])  # an entry already under the full id wins
        return out

    return replace(baseline, scores=renamed(baseline.scores), accepted=renamed(baseline.accepted))


class KnownIds:
    """`row_id in KnownIds(baseline)`: the baseline holds a score for the row, under its full id or (a baseline
    from before issue 33) under its first 16 digits. For callers that test ids one by one before they have them
    all (the Ray engine); `upgrade_ids` is the same rule once they are."""

    def __init__(self, baseline: Baseline) -> None:
        self._scores = baseline.scores
        self._legacy = {k for k in baseline.scores if len(k) == LEGACY_ID_LEN and _HEX_RE.fullmatch(k)}

    def __contains__(self, rid: object) -> bool:
        if not isinstance(rid, str):
            return False
        if rid in self._scores:
            return True
        return bool(self._legacy) and len(rid) == FULL_ID_LEN and rid[:LEGACY_ID_LEN] in self._legacy


def update_scores(
    baseline: Baseline,
    scores: Mapping[str, float],
    drop_missing_ids: set[str] | None = None,
    *,
    threshold: ThresholdResult | None = None,
) -> Baseline:
    """A new baseline with `scores` added (or replaced), the rows in `drop_missing_ids` removed (typically
    ``set(diff_rows(b, ids).removed)``: rows that no longer exist; their accepted entries go too) and, when given,
    a new `threshold`. Scores are validated and rounded as stored."""
    merged = dict(baseline.scores)
    merged.update(_clean_scores(scores))
    accepted = baseline.accepted
    if drop_missing_ids:
        for k in drop_missing_ids:
            merged.pop(k, None)
        accepted = {k: r for k, r in accepted.items() if k not in drop_missing_ids}
    new_threshold = threshold if threshold is not None else baseline.threshold
    return replace(baseline, scores=merged, accepted=dict(accepted), threshold=new_threshold)


def accept(baseline: Baseline, row_id: str, reason: str) -> Baseline:
    """A new baseline in which `row_id` is accepted with `reason` (replacing an earlier reason). The row need not
    be scored in the baseline yet: a check flags new rows, and a reviewer accepts them before `baseline update`."""
    accepted = dict(baseline.accepted)
    accepted[_check_row_id(row_id)] = _check_reason(reason)
    return replace(baseline, accepted=accepted)


MIN_ID_PREFIX = 8
"""The fewest hex digits `resolve_row_id` takes: shorter prefixes match some row by chance in a large dataset, so a
mistyped one would accept a row nobody reviewed."""


def resolve_row_id(given: str, baseline: Baseline, rows: Mapping[str, str] | None = None) -> str:
    """The one known row id that `given` names: itself, or the id it is a prefix of (hex digits, any case, at least
    `MIN_ID_PREFIX`: reports show the first 12). Known rows are the baseline's (scored or accepted) and `rows`
    (id -> where the row is, `file:line`: the rows of the dataset files). RowIdError (exit 2) for an id that is not
    hex, too short, unknown, or the prefix of more than one row, naming it and, for several, where they are."""
    known: dict[str, str] = dict(rows or {})
    baseline = upgrade_ids(baseline, known)  # an old 16-digit id and the row it names are one row
    for k in baseline.scores:
        known.setdefault(k, "scored in the baseline")
    for k in baseline.accepted:
        known.setdefault(k, "accepted in the baseline")
    if given in known:
        return given
    prefix = given.strip().lower()
    if not _HEX_RE.fullmatch(prefix):
        raise RowIdError(f"{given!r} is not a row id: ids are hex digits, as reports show them")
    if len(prefix) < MIN_ID_PREFIX:
        raise RowIdError(
            f"{given!r} is too short to name a row: give at least {MIN_ID_PREFIX} hex digits of its id "
            "(reports show 12)"
        )
    matches = sorted(k for k in known if k.startswith(prefix))
    if not matches:
        raise RowIdError(
            f"no row has an id starting with {given!r}: it is neither in the baseline nor in the dataset files "
            f"read ({len(rows or {})} rows); nothing was accepted"
        )
    if len(matches) > 1:
        shown = ", ".join(f"{k} ({known[k]})" for k in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise RowIdError(
            f"{given!r} is the start of {len(matches)} row ids: {shown}{more}; give more digits; nothing was accepted"
        )
    return matches[0]


def rebase(current: Baseline, base: Baseline, changed: Baseline, path: str | Path | None = None) -> Baseline:
    """A three-way merge: the changes that turned `base` into `changed` (scores added, changed or dropped, rows
    accepted or un-accepted, a new threshold or fingerprint), applied to `current`, the file as it is now, which
    another process may have changed since `base` was read. Changes made by the other process are kept.

    A `changed` with a new fingerprint (a rescore) brings every score: its scores replace the current ones. A
    change with the old fingerprint onto a file rescored meanwhile with other settings cannot be merged
    (BaselineError)."""
    if changed.fingerprint != base.fingerprint:
        scores = dict(changed.scores)
    else:
        if current.fingerprint != base.fingerprint:
            raise BaselineError(
                "the baseline was rescored with other settings while this command ran; run it again", file=path
            )
        scores = dict(current.scores)
        for k in base.scores.keys() - changed.scores.keys():
            scores.pop(k, None)
        base_scores = base.scores
        scores.update((k, v) for k, v in changed.scores.items() if base_scores.get(k) != v)
    accepted = dict(current.accepted)
    for k in base.accepted.keys() - changed.accepted.keys():
        accepted.pop(k, None)
    accepted.update((k, r) for k, r in changed.accepted.items() if base.accepted.get(k) != r)
    return Baseline(
        fingerprint=changed.fingerprint if changed.fingerprint != base.fingerprint else current.fingerprint,
        recorded=changed.recorded if changed.recorded != base.recorded else current.recorded,
        # `update_scores` keeps the very threshold object unless it was given a new one
        threshold=changed.threshold if changed.threshold is not base.threshold else current.threshold,
        scores=scores,
        accepted=accepted,
    )


def check_compatible(baseline: Baseline, fingerprint: Fingerprint, path: str | Path | None = None) -> None:
    """Raise BaselineError when the baseline's scores were made with a different fingerprint. Differences in
    `recorded` (method, dtype, device) never raise."""
    diffs = baseline.fingerprint.differences(fingerprint)
    if diffs:
        raise BaselineError(f"baseline made with {', '.join(diffs)}; {RESCORE_HINT}", file=path)


# --------------------------------------------------------------------------------------------------- writing


def _threshold_dict(t: ThresholdResult) -> dict[str, Any]:
    if not math.isfinite(t.value):
        raise BaselineError(f"refusing to write a baseline whose threshold is {t.value} (no rows to find it on?)")
    value = round_score(t.value)
    details = {str(k): (round_score(v) if math.isfinite(float(v)) else None) for k, v in t.details.items()}
    return {
        "value": value,
        "method": t.method,
        "criterion": t.criterion,
        "iterations": int(t.iterations),
        "details": details,
    }


def _metadata(baseline: Baseline) -> dict[str, Any]:
    return {
        "version": VERSION,
        "fingerprint": baseline.fingerprint.to_dict(),
        "recorded": baseline.recorded.to_dict(),
        "threshold": _threshold_dict(baseline.threshold),
        "accepted": dict(baseline.accepted),
        "scores": {},
    }


def _dump_value(v: Any, indent: int) -> str:
    """JSON with sorted keys, one entry per line, floats formatted by `_fmt`."""
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad}  {json.dumps(k, ensure_ascii=False)}: {_dump_value(v[k], indent + 1)}" for k in sorted(v)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, float):
        return _fmt(v)
    return json.dumps(v, ensure_ascii=False)


def dumps_baseline(baseline: Baseline) -> str:
    """The file's exact text (see module doc). Raises BaselineError for invalid ids, scores or metadata."""
    meta = _metadata(baseline)
    err = _first_schema_error(meta)
    if err is not None:
        raise BaselineError(f"refusing to write an invalid baseline: {err}")
    ids = sorted(baseline.scores)
    values = list(map(baseline.scores.__getitem__, ids))
    if ids:
        _check_scores(ids, values)  # raises for an invalid id or a non-finite score
    parts = ["{"]
    for key in _TOP_KEYS[:-1]:
        parts.append(f'  "{key}": {_dump_value(meta[key], 1)},')
    if ids:
        # Formatting rounds: format(x, ".7g") == format(round_score(x), ".7g"), so rounding first is not needed.
        body = ",\n".join(map('    "{}": {}'.format, ids, _format_scores(values)))
        parts.append('  "scores": {\n' + body + "\n  }")
    else:
        parts.append('  "scores": {}')
    parts.append("}")
    return "\n".join(parts) + "\n"


def write_baseline(path: str | Path, baseline: Baseline) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then `os.replace`. On any error the old
    file (if any) is untouched and no partial file is left behind."""
    path = Path(path)
    try:
        text = dumps_baseline(baseline)
    except BaselineError as e:
        raise BaselineError(str(e), file=path) from None
    try:
        atomic_write_text(path, text)
    except OutputError as e:  # before OSError, which it also is
        raise BaselineError(f"cannot write baseline: {e.reason or e.message}", file=path) from None
    except OSError as e:
        raise BaselineError(f"cannot write baseline: {e.strerror or e}", file=path) from e


# --------------------------------------------------------------------------------------------------- locking


def lock_path(path: str | Path) -> Path:
    """The lock file of a baseline: beside it, its name plus `.lock` (`.gradshield-baseline.json.lock`). It holds no
    data and stays after use: keep it out of version control (`.gitignore`)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def lock_timeout() -> float:
    """Seconds to wait for another gradshield-lint writing the same baseline: $GRADSHIELD_LOCK_TIMEOUT or 60."""
    raw = os.environ.get("GRADSHIELD_LOCK_TIMEOUT", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise BaselineError(f"GRADSHIELD_LOCK_TIMEOUT must be a number of seconds, not {raw!r}") from None
    return value if math.isfinite(value) and value >= 0 else DEFAULT_LOCK_TIMEOUT


@contextmanager
def baseline_lock(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the baseline's lock (an OS file lock through `filelock`: released by the kernel when the holder dies,
    so a killed run never leaves it locked). Every read-modify-write of a baseline (`accept`, `baseline update`,
    `baseline create`) runs inside it; plain reads need none (writes are atomic renames). BaselineError when
    another process holds it for longer than `timeout` seconds (default: `lock_timeout()`)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    wait = lock_timeout() if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # `baseline create --baseline new/dir/b.json`
    except OSError as e:
        raise BaselineError(f"cannot create the baseline's folder: {e.strerror or e}", file=path) from None
    lock = FileLock(str(lock_path(path)), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise BaselineError(
            f"another gradshield-lint has been writing this baseline for more than {wait:g} s (lock file "
            f"{lock_path(path).name}); wait for it to finish and retry, or set GRADSHIELD_LOCK_TIMEOUT",
            file=path,
        ) from None
    except OSError as e:
        raise BaselineError(
            f"cannot lock the baseline ({lock_path(path).name}): {e.strerror or e}", file=path
        ) from None
    try:
        yield
    finally:
        lock.release()


def modify_baseline(path: str | Path, change: Callable[[Baseline], Baseline], timeout: float | None = None) -> Baseline:
    """Read the baseline at `path`, apply `change`, write the result: all under `baseline_lock`, so two concurrent
    changes (two `accept`s, an `accept` during `baseline update`) both survive. Returns what was written."""
    if not Path(path).is_file():
        read_baseline(path)  # the error for a missing baseline, without leaving a lock file for it
    with baseline_lock(path, timeout):
        new = change(read_baseline(path))
        write_baseline(path, new)
    return new


# --------------------------------------------------------------------------------------------------- reading


class _NonFinite(ValueError):
    pass


class _Duplicate(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


def _count_keys(doc: dict[str, Any]) -> int:
    """Keys in the document; the scores map counts its own keys only (its values must be numbers anyway)."""

    def count(v: Any) -> int:
        if isinstance(v, dict):
            return len(v) + sum(count(x) for x in v.values())
        if isinstance(v, list):
            return sum(count(x) for x in v)
        return 0

    rest = {k: v for k, v in doc.items() if k != "scores"}
    if "scores" not in doc:
        return count(rest)
    scores = doc["scores"]
    return count(rest) + 1 + (len(scores) if isinstance(scores, dict) else count(scores))


def _line_of(text: str, needle: str) -> int | None:
    i = text.find(needle)
    return text.count("\n", 0, i) + 1 if i >= 0 else None


def _lines_of(text: str, pattern: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(pattern, text)]


def _first_schema_error(doc: Any) -> str | None:
    from jsonschema.exceptions import best_match

    err = best_match(_validator().iter_errors(doc))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"{where}: {err.message}"


def loads_baseline(text: str, path: str | Path = "<baseline>") -> Baseline:
    """Parse and validate a baseline's text. BaselineError names `path` (and the line for JSON errors)."""
    try:
        doc = safejson.loads(text, parse_constant=_reject_constant)
        # Duplicate keys: json keeps the last silently. Every key our writer emits is followed by '":', so when the
        # count of '":' equals the number of keys parsed there is none; otherwise parse again, checking each object.
        if isinstance(doc, dict) and text.count('":') != _count_keys(doc):
            safejson.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs)
    except json.JSONDecodeError as e:
        hint = " (the file ends early: truncated?)" if e.pos >= len(text.rstrip()) else ""
        raise BaselineError(
            f"not valid JSON: {e.msg}{hint}; restore it from version control or recreate it with "
            "`gradshield-lint baseline create`",
            file=path,
            line=e.lineno,
        ) from None
    except RecursionError:  # parsed (just under the parser's limit), but too deep to walk
        raise BaselineError(
            f"not valid JSON: {safejson.TOO_DEEP}; restore it from version control or recreate it with "
            "`gradshield-lint baseline create`",
            file=path,
            line=_line_of(text, "[" * 64) or _line_of(text, "{" * 64),
        ) from None
    except _NonFinite as e:
        lines = _lines_of(text, r":\s*-?" + re.escape(str(e.args[0])) + r"\b")
        raise BaselineError(
            f"{e.args[0]} is not allowed in a baseline (scores must be finite numbers)",
            file=path,
            line=lines[0] if lines else None,
        ) from None
    except _Duplicate as e:
        key = str(e.args[0])
        lines = _lines_of(text, re.escape(json.dumps(key)) + r"\s*:")
        raise BaselineError(
            f"{key} appears more than once (lines {', '.join(map(str, lines))}): a bad merge? Keep one entry, or "
            "rerun `gradshield-lint baseline update`",
            file=path,
            line=lines[-1] if lines else None,
        ) from None
    if not isinstance(doc, dict):
        raise BaselineError(f"expected a JSON object, found {type(doc).__name__}", file=path, line=1)
    version = doc.get("version")
    if version != VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
            msg = (
                f"baseline format version {version} is newer than this gradshield-lint reads ({VERSION}); "
                "upgrade gradshield-lint"
            )
        else:
            msg = f"unsupported baseline format version {version!r} (expected {VERSION})"
        raise BaselineError(msg, file=path, line=_line_of(text, '"version"'))
    t = doc.get("threshold")
    if isinstance(t, dict) and "value" in t and (t["value"] is None or not _finite(t["value"])):
        raise BaselineError(
            f"the threshold is {'null' if t['value'] is None else t['value']}, not a finite number (a threshold of "
            "+inf would flag nothing); recreate the baseline with `gradshield-lint baseline create`",
            file=path,
            line=_line_after_key(text, '"threshold"', '"value"'),
        )
    scores = doc.get("scores")
    meta = dict(doc)
    if isinstance(scores, dict):
        meta["scores"] = {}  # checked below by `_checked_scores` (see module doc)
    err = _first_schema_error(meta)
    if err is not None:
        raise BaselineError(f"invalid baseline: {err}", file=path)
    assert isinstance(scores, dict)
    scores = _checked_scores(scores, text, path)
    t = doc["threshold"]
    threshold = ThresholdResult(
        value=float(t["value"]),
        method=t["method"],
        criterion=t["criterion"],
        iterations=int(t["iterations"]),
        details={k: (math.nan if v is None else float(v)) for k, v in t["details"].items()},
    )
    return Baseline(
        fingerprint=Fingerprint.from_dict(doc["fingerprint"]),
        recorded=Recorded.from_dict(doc["recorded"]),
        threshold=threshold,
        scores=scores,
        accepted=dict(doc["accepted"]),
    )


def _finite(v: object) -> bool:
    """A finite number (bool is not a number here; an int too large for a float is not finite)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True  # not a number at all: the schema or the type check names it
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _line_after_key(text: str, anchor: str, needle: str) -> int | None:
    a = text.find(anchor)
    i = text.find(needle, a) if a >= 0 else -1
    return text.count("\n", 0, i) + 1 if i >= 0 else None


def _checked_scores(scores: dict[str, Any], text: str, path: str | Path) -> dict[str, float]:
    """The schema's rules for `scores`, checked directly (fast at a million rows; see module doc)."""
    if scores and not _ALL_IDS_RE.fullmatch("\n".join(scores) + "\n"):
        for k in scores:
            if not ROW_ID_RE.fullmatch(k):
                raise BaselineError(
                    f"invalid baseline: scores: invalid row id {k!r}", file=path, line=_line_of(text, json.dumps(k))
                )
    types = set(map(type, scores.values()))
    if types <= {float} and all(map(math.isfinite, scores.values())):
        return scores
    for k, v in scores.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BaselineError(
                f"invalid baseline: scores/{k}: {json.dumps(v)} is not a number",
                file=path,
                line=_line_of(text, f'"{k}"'),
            )
        if not _finite(v):  # 1e400: valid JSON, but no float holds it
            raise BaselineError(
                f"invalid baseline: scores/{k}: {v} is not a finite number", file=path, line=_line_of(text, f'"{k}"')
            )
    return {k: float(v) for k, v in scores.items()}


def read_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file. BaselineError (naming the file, and the line for JSON errors) for a
    missing or unreadable file, a truncated or corrupt one, a schema violation (with the key path), or another
    format version."""
    path = Path(path)
    try:
        # a FIFO or device would block the read (or never end): a baseline is a regular file
        if path.exists() and not path.is_dir() and not path.is_file():
            raise BaselineError("not a regular file, expected a baseline file", file=path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise BaselineError("baseline not found; create it with `gradshield-lint baseline create`", file=path) from None
    except IsADirectoryError:
        raise BaselineError("is a directory, expected a baseline file", file=path) from None
    except OSError as e:
        raise BaselineError(f"cannot read baseline: {e.strerror or e}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BaselineError(
            f"not UTF-8 text (byte {e.start}): the baseline is corrupt",
            file=path,
            line=data.count(b"\n", 0, e.start) + 1,
        ) from None
    return loads_baseline(text, path)
