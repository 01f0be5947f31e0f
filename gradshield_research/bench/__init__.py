"""The benchmarks (not tests): each module is a library that the tests exercise and a command,
`python -m gradshield_research.bench.NAME`. Their results are recorded in bench/QUALITY.md and docs/measurements.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The labelled corpora the benchmarks read (../shared/eval-dev/, data/adapter/, data/levers/) annotate each row with
# these fields; they are what a row is about, not text a trainer reads, so `rows.py` takes them as metadata instead
# of refusing the row (issue 33, item 5).
EVAL_METADATA = (
    "model",
    "note",
    "subset",
    "rank_in_subset",
    "attack_method",
    "human_votes",
    "behavior_id",
    "functional_category",
    "semantic_category",
    "target",
    "kind",
)


def labelled_rows(path: str | Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(row, record) of a labelled corpus file, its annotation fields read as metadata."""
    from gradshield_lint.io.rows import RowShape, iter_rows_with_records

    return iter_rows_with_records(path, RowShape(metadata=EVAL_METADATA))
