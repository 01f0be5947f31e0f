"""Write dataset records back in the format their file suffix names (for `filter`): JSONL, JSON, CSV/TSV, Parquet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_path, atomic_write_text
from .errors import InputError

WRITABLE = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


def write_records(path: Path, records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write `records` to `path` atomically, in the format of its suffix; column order from `columns` or the first
    record."""
    suffix = path.suffix.lower()
    cols = list(columns) if columns else (list(records[0]) if records else [])
    if suffix in (".jsonl", ".ndjson"):
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    elif suffix == ".json":
        atomic_write_text(path, json.dumps(list(records), ensure_ascii=False, indent=2) + "\n")
    elif suffix in (".csv", ".tsv"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow({k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
        atomic_write_text(path, buf.getvalue())
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(records)) if records else pa.table({c: [] for c in cols})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    else:
        raise InputError(f"cannot write this format; use one of {', '.join(WRITABLE)}", file=path)


def removed_path(out: Path) -> Path:
    """Where `filter` puts the rows it removed: beside the output, `.removed` before the suffix."""
    return out.with_name(f"{out.stem}.removed{out.suffix}")
