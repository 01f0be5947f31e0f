"""Where a warm process listens and what it is keyed by.

Sockets live in `<cache>/daemon/`, a folder of mode 0700 owned by the user; each socket is named after the key of
the scores it serves (a hash of everything a score depends on), and a socket file there that is not the user's, or
a folder anyone else can enter, is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from gradshield_lint.scoring.cache import cache_root

if TYPE_CHECKING:
    from gradshield_lint.scoring.engine import Engine

# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS): a longer one cannot be bound at all
MAX_SOCKET_PATH = 100
# a 64-bit prefix of the key names the socket (the whole key is checked in every request)
NAME_CHARS = 16
IDLE_SECONDS = 15 * 60
"""Default idle exit: a working session's commits minutes apart reuse one process, and the model's memory is not
held for the rest of the day once the user has stopped committing."""


def daemon_enabled() -> bool:
    """False with GRADSHIELD_DAEMON=0, in CI (CI set to anything but 0/false) and on Windows (no Unix sockets in
    multiprocessing there, nor flock): nothing is started then."""
    if sys.platform == "win32":
        return False
    if os.environ.get("GRADSHIELD_DAEMON", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return os.environ.get("CI", "").strip().lower() in ("", "0", "false")


def idle_seconds() -> float:
    try:
        return float(os.environ.get("GRADSHIELD_DAEMON_IDLE", IDLE_SECONDS))
    except ValueError:
        return float(IDLE_SECONDS)


def daemon_dir(create: bool = True) -> Path:
    d = cache_root() / "daemon"
    if create:
        d.mkdir(parents=True, mode=0o700, exist_ok=True)
    return d


def private_dir(d: Path) -> bool:
    """The folder is the user's and no one else's: only then is a socket in it trusted or created."""
    try:
        st = d.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def own_socket(p: Path) -> bool:
    """A socket file of this user that no one else can connect to."""
    try:
        st = p.lstat()
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _code_stamp() -> str:
    # an edited installation (an editable checkout, an upgrade in place) must not be answered by the old code
    pkg = Path(__file__).resolve().parents[1]
    stamps = sorted((str(p.relative_to(pkg)), p.stat().st_mtime_ns) for p in pkg.rglob("*.py"))
    return hashlib.sha256(repr(stamps).encode()).hexdigest()


def key_of(engine: Engine) -> str:
    """A hash of everything that decides a score: the engine's fingerprint (model, adapter, probe set, proxy,
    parameters, template), every scoring setting (method, dtype, device, batch sizes, truncation, cache) and the
    code and interpreter that compute it."""
    from gradshield_lint import __version__

    parts = {
        "fingerprint": asdict(engine.fingerprint()),
        "settings": repr(engine.settings),
        "version": __version__,
        "code": _code_stamp(),
        "python": sys.executable,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def socket_path(key: str) -> Path | None:
    """The socket of `key`; None when the cache folder is not private or its path is too long for a socket."""
    d = daemon_dir()
    if not private_dir(d):
        return None
    p = d / f"{key[:NAME_CHARS]}.sock"
    return p if len(os.fsencode(str(p))) <= MAX_SOCKET_PATH else None


def lock_path(key: str) -> Path:
    return daemon_dir() / f"{key[:NAME_CHARS]}.lock"


def secret() -> bytes:
    """The user's authentication key for the sockets (0600 in the private folder): a connection that cannot
    answer with it is refused before anything is unpickled."""
    p = daemon_dir() / "secret"
    try:
        return p.read_bytes()
    except FileNotFoundError:
        pass
    # written aside then linked into place: two first runs at once agree on one key, never read a half-written one
    tmp = p.with_name(f"secret.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))
    try:
        os.link(tmp, p)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return p.read_bytes()
