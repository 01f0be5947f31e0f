"""Outputs checked before any scoring: a report must never replace what the run reads, and an output that cannot be
written is found in seconds, not after minutes of scoring.

An output is refused (OutputError, exit 2, naming the option and the path) when it is the same file as an input, the
baseline, the configuration or the probe set (compared as the write would reach them: through symlinks, and by
inode for hard links), lies inside an input directory, names the same file as another output, or cannot be written
(its folder, or the nearest one that exists, refuses a new file; a device or /proc path that does not exist). What
only a write can tell (/dev/full, a disk that fills up meanwhile) is an OutputError at write time (io/atomic.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gradshield_lint.errors import OutputError
from gradshield_lint.io.atomic import Destination, destination


@dataclass(frozen=True)
class Output:
    """An output as the user named it: the option (`-o/--output`, `--json`) and the path."""

    option: str
    path: Path
    appended: bool = False  # `--summary`: opened for appending, never renamed over


@dataclass(frozen=True)
class Protected:
    """A file the run reads and no output may replace: `what` says which (`an input`, `the baseline`)."""

    what: str
    path: Path


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): where a write would land
        return os.path.realpath(a) == os.path.realpath(b)


def _probe_folder(folder: Path) -> str | None:
    """Why a new file cannot be made in `folder` (or its nearest existing ancestor, where the missing folders would
    be created), or None. Tried for real, with a file removed at once: permission bits say nothing to root, nor
    about /proc or a read-only mount."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
    if not candidate.is_dir():
        return f"{candidate} is not a directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gradshield-probe.", suffix=".tmp", dir=candidate)
    except OSError as exc:
        return f"cannot create a file in {candidate}: {exc.strerror or exc}"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def _unwritable(out: Output, dest: Destination) -> str | None:
    if dest.direct:
        if not os.path.exists(dest.named):
            return "it does not exist (a device, a FIFO or a /proc path is written in place, never created)"
        return None if os.access(dest.named, os.W_OK) else "it is not writable"
    if dest.real != dest.named and not dest.real.parent.is_dir():
        return f"the symlink points into {dest.real.parent}, which is not a directory"
    if out.appended and dest.real.exists():
        try:
            with open(dest.real, "ab"):  # appending nothing: the file stays as it is
                pass
        except OSError as exc:
            return f"cannot append to it: {exc.strerror or exc}"
        return None
    return _probe_folder(dest.real.parent)


def check_outputs(outputs: Sequence[Output], protected: Sequence[Protected]) -> None:
    """Raise OutputError for the first output that must not or cannot be written (see the module doc)."""
    seen: list[tuple[Output, Destination]] = []
    for out in outputs:
        dest = destination(out.path)
        if not dest.direct:  # a device (/dev/null) can take several outputs and shares no bytes with an input
            for p in protected:
                if p.path.is_dir() and Path(os.path.realpath(dest.real)).is_relative_to(os.path.realpath(p.path)):
                    raise OutputError(
                        f"{out.option} lies inside {p.what} ({p.path}); choose another path", file=out.path
                    )
                if _same(dest.real, p.path):
                    raise OutputError(
                        f"{out.option} is {p.what} of this run; writing there would replace it", file=out.path
                    )
            for other, other_dest in seen:
                if not other_dest.direct and _same(dest.real, other_dest.real):
                    raise OutputError(f"{out.option} and {other.option} name the same file", file=out.path)
        why = _unwritable(out, dest)
        if why is not None:
            raise OutputError(f"{out.option} cannot be written: {why}", file=out.path)
        seen.append((out, dest))
