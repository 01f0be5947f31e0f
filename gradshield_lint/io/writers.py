"""Write dataset records back in the format their file suffix names (for `filter`): JSONL, JSON, CSV/TSV, Parquet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradshield_lint.errors import InputError
from gradshield_lint.io.atomic import atomic_paths

WRITABLE = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


def _writer(path: Path, records: Sequence[dict[str, Any]], columns: Sequence[str] | None) -> Callable[[Path], None]:
    """A function that writes `records` into a given (temporary) file in the format of `path`'s suffix; column order
    from `columns` or the first record. Raises InputError for a suffix it cannot write, before anything is written."""
    suffix = path.suffix.lower()
    cols = list(columns) if columns else (list(records[0]) if records else [])
    if suffix in (".jsonl", ".ndjson"):
        return _bytes_writer("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if suffix == ".json":
        return _bytes_writer(json.dumps(list(records), ensure_ascii=False, indent=2) + "\n")
    if suffix in (".csv", ".tsv"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow(
                {k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v) for k, v in r.items()}
            )
        return _bytes_writer(buf.getvalue())
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(records)) if records else pa.table({c: [] for c in cols})
        return lambda tmp: pq.write_table(table, tmp)
    raise InputError(f"cannot write this format; use one of {', '.join(WRITABLE)}", file=path)


def _bytes_writer(text: str) -> Callable[[Path], None]:
    data = text.encode("utf-8")

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write


def write_records(path: Path, records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write `records` to `path` atomically, in the format of its suffix; column order from `columns` or the first
    record."""
    write_record_sets([(path, records)], columns)


def write_record_sets(
    items: Sequence[tuple[Path, Sequence[dict[str, Any]]]], columns: Sequence[str] | None = None
) -> None:
    """Write several files of records as one commit (`atomic.atomic_paths`): every file is complete before any is
    renamed, and the last one is renamed last. `filter` passes the removed rows first and DEST last, so DEST is
    the commit point: a new DEST always has its removed rows beside it."""
    writers = [_writer(Path(p), recs, columns) for p, recs in items]
    with atomic_paths([Path(p) for p, _ in items]) as temps:
        for write, tmp in zip(writers, temps):
            write(tmp)


def removed_path(out: Path) -> Path:
    """Where `filter` puts the rows it removed: beside the output, `.removed` before the suffix."""
    return out.with_name(f"{out.stem}.removed{out.suffix}")
