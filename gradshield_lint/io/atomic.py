"""Atomic file writes: write a temporary file in the target's folder, fsync it, then rename over the target.

A crash or an error midway never leaves a partial file, and the user's previous file stays intact (permissions
kept) until the new one is complete.

Several files written together (`atomic_paths`: `filter`'s DEST and removed rows, `card`'s image and card) are
all written to temporary files first; only when every one is complete are they renamed, in the order given, so
the last one is the commit point. The renames run with SIGINT, SIGTERM and SIGHUP held back (delivered right
after), so Ctrl-C or a CI cancellation never splits them. What a user sees after a kill:

* before the renames (while writing): every target as it was; the temporary files are removed on the way out
  (try/finally; the CLI turns SIGTERM/SIGHUP into an orderly exit), and only SIGKILL or a power loss leaves one
  behind, which the next write to the same target removes (see `remove_stale_temps`);
* during the renames (microseconds): only SIGKILL or a power loss can stop there; the targets before the commit
  point are new and the commit point (the last target: DEST, the card) is still the old file;
* after: every target is new.

Temporary files are named ``.NAME.PID.RANDOM.tmp`` beside the target NAME, so a leftover names its owner.

Only regular files are replaced: a symlink is written through (the temporary file and the rename are beside the
file it resolves to, so the link stays a link), and what is not a regular file (a character device such as
/dev/null, a FIFO, /dev/stdout or anything else reached through /proc) is opened for writing and written in place,
appended to and never truncated, since renaming over it would replace the device or the shell's redirection with a
plain file. Those are written, in order, before the regular files are renamed; they are not atomic.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from gradshield_lint.errors import OutputError

TMP_SUFFIX = ".tmp"
# A temporary file lives for the seconds one write takes; one this old is a leftover whoever made it.
STALE_AFTER_S = 3600.0
# A leftover of a dead PID is removed once it is this old: a younger one may belong to a live writer in another
# PID namespace (a container sharing the folder), whose PID means nothing here.
DEAD_OWNER_GRACE_S = 30.0
_Handler = Callable[[int, FrameType | None], Any] | int | None
_HELD_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
# `.NAME.PID.RANDOM.tmp` (this module) or `.NAME.RANDOM.tmp` (before PIDs were in the name); RANDOM is mkstemp's.
_MIDDLE = re.compile(r"(?:(\d+)\.)?[A-Za-z0-9_]{8}")


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) means something else on Windows: rely on the age rule there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temps(target: str | Path, *, now: float | None = None) -> list[Path]:
    """Remove leftovers of earlier killed writes to `target`: files named like this module's temporary files for
    `target` that are older than `STALE_AFTER_S`, or whose PID is dead and that are older than
    `DEAD_OWNER_GRACE_S`. This process's own files and anything that is not a regular file are kept. Returns what
    was removed."""
    target = Path(target)
    prefix = f".{target.name}."
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        m = _MIDDLE.fullmatch(name[len(prefix) : -len(TMP_SUFFIX)])
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid == os.getpid():
            continue
        age = now - st.st_mtime
        if age > STALE_AFTER_S or (pid is not None and age > DEAD_OWNER_GRACE_S and not _pid_alive(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP for the block and deliver them (to the handlers that were in place) after
    it. Only the main thread can set handlers; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, _Handler] = {}

    def hold(signum, frame):
        caught.append(signum)

    try:
        for sig in _HELD_SIGNALS:
            previous[sig] = signal.signal(sig, hold)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


@dataclass(frozen=True)
class Destination:
    """Where the bytes for a named output go. `real`: the file renamed over (a symlink's resolved target, else the
    path as named); `direct`: not a regular file (a device, a FIFO, a /proc link), opened and written in place."""

    named: Path
    real: Path
    direct: bool


def _through_proc(path: Path) -> bool:
    """Whether `path`, followed link by link, passes through /proc (/dev/stdout, /dev/fd/N, /proc/self/fd/N): such
    a link names an open file of the process (a pipe, a terminal, the file a shell's `>>` appends to), which a
    rename would not reach and the resolved name would truncate."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        parent = os.path.realpath(os.path.dirname(p))
        if parent == "/proc" or parent.startswith("/proc/"):
            return True
        p = os.path.join(parent, os.path.basename(p))
        if not os.path.islink(p):
            return False
        p = os.path.join(parent, os.readlink(p))  # an absolute link target replaces `parent`
    return False


def destination(target: str | Path) -> Destination:
    """How a write to `target` is done (see the module doc)."""
    named = Path(target)
    if _through_proc(named):
        return Destination(named, named, True)
    try:
        st = os.stat(named)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        return Destination(named, named, True)
    if os.path.islink(named):  # to a regular file, or dangling (the file it names is created)
        return Destination(named, Path(os.path.realpath(named)), False)
    return Destination(named, named, False)


def _fail(dest: Destination, exc: OSError) -> OutputError:
    why = exc.strerror or type(exc).__name__
    err = OutputError(f"cannot write this output: {why}", file=dest.named)
    err.reason = why
    return err


def _new_temp(dest: Destination) -> Path:
    if dest.direct:  # written through at the end: the temporary file is ours, not beside a device
        fd, tmp = tempfile.mkstemp(prefix=f".gradshield-out.{os.getpid()}.", suffix=TMP_SUFFIX)
        os.close(fd)
        return Path(tmp)
    target = dest.real
    if dest.real == dest.named:  # a link's target folder is the link's business: never created
        target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _write_through(tmp: Path, dest: Destination) -> None:
    # O_APPEND, no O_TRUNC: a device or FIFO ignores both; a regular file behind /dev/stdout (`>> log`) keeps its
    # earlier content, as the process's own writes to stdout would.
    fd = os.open(dest.named, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_paths(targets: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Yield one temporary path per target, to write; when the block succeeds each is fsynced and all are renamed
    over their targets in the order given (the last target is the commit point; see the module doc). On an error
    or an interrupt no target is touched and the temporary files are removed. Symlinks, devices and FIFOs: see the
    module doc. An OSError of this module's own steps is an OutputError naming the target."""
    dests = [destination(t) for t in targets]
    temps: list[Path] = []
    try:
        for dest in dests:
            try:
                temps.append(_new_temp(dest))
            except OSError as exc:
                raise _fail(dest, exc) from None
        yield list(temps)
        for tmp, dest in zip(temps, dests):
            if dest.direct:
                continue
            try:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(tmp, _mode_for(dest.real))
            except OSError as exc:
                raise _fail(dest, exc) from None
        # outside signals_held: a FIFO blocks until its reader opens it, and Ctrl-C must still work then
        for tmp, dest in zip(temps, dests):
            if dest.direct:
                try:
                    _write_through(tmp, dest)
                except OSError as exc:
                    raise _fail(dest, exc) from None
        with signals_held():
            for tmp, dest in zip(temps, dests):
                if not dest.direct:
                    try:
                        os.replace(tmp, dest.real)
                    except OSError as exc:
                        raise _fail(dest, exc) from None
        for folder in dict.fromkeys(d.real.parent for d in dests if not d.direct):
            _fsync_dir(folder)
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` to write; when the block succeeds it replaces `target`."""
    with atomic_paths([target]) as (tmp,):
        yield tmp


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    atomic_write_many([(target, data)])


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_many(items: Sequence[tuple[str | Path, bytes]]) -> None:
    """Write several files as one commit: all complete before any is renamed, the last one renamed last."""
    with atomic_paths([p for p, _ in items]) as temps:
        for tmp, (target, data) in zip(temps, items):
            try:
                tmp.write_bytes(data)
            except OSError as exc:  # a full disk: the user's to fix, not a bug
                raise _fail(destination(target), exc) from None


@contextlib.contextmanager
def exit_on_termination() -> Iterator[None]:
    """For the CLI: SIGTERM and SIGHUP raise SystemExit(128 + signal) instead of killing the process at once, so
    `finally` blocks (temporary files, locks) run. The previous handlers are restored after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    previous: dict[int, _Handler] = {}
    try:
        for sig in _HELD_SIGNALS:
            # SIGINT already raises KeyboardInterrupt; a signal someone chose to ignore (nohup) stays ignored
            if sig != signal.SIGINT and signal.getsignal(sig) is signal.SIG_DFL:
                previous[sig] = signal.signal(sig, leave)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def append_text(target: str | Path, text: str) -> None:
    """Append `text` to `target` (created if missing; through a symlink, to a device or a FIFO as to a file): for
    outputs that collect several writers' text (`--summary`, $GITHUB_STEP_SUMMARY). An OSError is an OutputError
    naming `target`."""
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise _fail(destination(target), exc) from None
