"""`gradshield-lint daemon start|stop|status`: the warm processes of this user, by their sockets."""

from __future__ import annotations

import time
from pathlib import Path

from gradshield_lint.daemon.client import HANDSHAKE_SECONDS, State, ask, clean_stale, lock_free, start
from gradshield_lint.daemon.paths import daemon_dir, key_of, socket_path
from gradshield_lint.daemon.protocol import Request
from gradshield_lint.errors import ConfigError
from gradshield_lint.scoring.engine import Engine


def sockets() -> list[Path]:
    d = daemon_dir(create=False)
    return sorted(d.glob("*.sock")) if d.is_dir() else []


def status() -> list[tuple[Path, State, dict[str, object]]]:
    """Each socket, what answered on it, and the process's own account (pid, key, model, idle time)."""
    out = []
    for sock in sockets():
        got = ask(sock, Request("status", ""), HANDSHAKE_SECONDS)
        info = got.reply.info if got.reply is not None and got.reply.ok else {}
        out.append((sock, got.state, info))
    return out


def stop() -> int:
    """Ask every process to exit (each finishes the request it is serving first); remove stale socket files.
    Returns how many were asked."""
    asked = 0
    for sock, state, _info in status():
        if state is State.ANSWERED:
            ask(sock, Request("stop", ""), HANDSHAKE_SECONDS)
            asked += 1
        elif state is State.STALE:
            clean_stale(sock, sock.stem)
    return asked


def start_for(engine: Engine, wait: float = 600.0) -> dict[str, object]:
    """Start the process for this engine's key (unless one answers already) and wait until it answers."""
    key = key_of(engine)
    sock = socket_path(key)
    if sock is None:
        raise ConfigError(f"no warm process: {daemon_dir()} is not private to this user or its path is too long")
    proc = None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        got = ask(sock, Request("status", key), HANDSHAKE_SECONDS)
        if got.state is State.ANSWERED and got.reply is not None and got.reply.ok:
            return got.reply.info
        if got.state is State.STALE:
            clean_stale(sock, key)
        if got.state is State.FOREIGN:
            raise ConfigError(f"{sock} is not this user's socket, or its folder is not private; nothing was started")
        if proc is None and got.state in (State.ABSENT, State.STALE):
            proc = start(engine.settings, key)
            if proc is None and lock_free(key):
                break  # refused before (the model changed while it loaded) or the folder cannot be used
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    log = daemon_dir() / f"{key[:16]}.log"
    raise ConfigError(f"the warm process did not start; see {log}")
