"""What travels on a daemon socket: pickled dataclasses over `multiprocessing.connection` (length-framed, and
authenticated with the user's secret before anything is unpickled), so floats come back bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradshield_lint.io.rows import Row
from gradshield_lint.scoring.options import RowScore

VERSION = 1


@dataclass(frozen=True)
class Request:
    op: str  # "score", "status" or "stop"
    key: str
    rows: tuple[Row, ...] = ()
    version: int = VERSION


@dataclass(frozen=True)
class Reply:
    ok: bool
    scores: tuple[RowScore, ...] = ()
    method: str = ""
    error: str = ""  # why not: the client then scores in-process, which raises the real error if there is one
    info: dict[str, object] = field(default_factory=dict)
