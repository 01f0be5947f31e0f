"""The CLI's side: ask the warm process for scores, and score in-process whenever it cannot answer.

Every way a warm process can fail (none yet, killed, hung, a stale socket file, a socket that is not the user's,
another key, an error while scoring) ends in `None` here and an in-process score in `WarmEngine`: a check never
fails, nor gets a score a fresh process would not give, because of the daemon.
"""

from __future__ import annotations

import enum
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Client
from pathlib import Path

from gradshield_lint.daemon.paths import (
    daemon_dir,
    daemon_enabled,
    key_of,
    lock_path,
    own_socket,
    private_dir,
    secret,
    socket_path,
)
from gradshield_lint.daemon.protocol import Reply, Request
from gradshield_lint.io.rows import Row
from gradshield_lint.scoring.engine import Engine, EngineSettings, ScoredRow
from gradshield_lint.scoring.options import RowScore

HANDSHAKE_SECONDS = 5.0
"""A live process accepts and authenticates at once (a thread per connection): longer than this is a hung one."""


class State(enum.Enum):
    ANSWERED = "answered"
    ABSENT = "absent"  # no socket file: nothing runs for this key
    STALE = "stale"  # a socket file no one listens on (a killed process's)
    FOREIGN = "foreign"  # not this user's socket, or not private: never connected to
    HUNG = "hung"
    FAILED = "failed"  # refused (another key) or an error: the in-process run says what it is


@dataclass(frozen=True)
class Outcome:
    state: State
    reply: Reply | None = None


def reply_timeout(n_rows: int) -> float:
    try:
        return float(os.environ["GRADSHIELD_DAEMON_TIMEOUT"])
    except (KeyError, ValueError):
        return 60.0 + 5.0 * n_rows


def ask(sock: Path, req: Request, timeout: float) -> Outcome:
    """Send `req` to the process at `sock`. The exchange runs in a thread so that a process stopped mid-way (or
    never reading a large request) costs at most the handshake or reply timeout, never a hang."""
    try:
        sock.lstat()
    except FileNotFoundError:
        return Outcome(State.ABSENT)
    if not own_socket(sock) or not private_dir(sock.parent):
        return Outcome(State.FOREIGN)
    box: list[Outcome] = []
    shook, done = threading.Event(), threading.Event()

    def exchange() -> None:
        try:
            conn = Client(str(sock), family="AF_UNIX", authkey=secret())
            shook.set()
            with conn:
                conn.send(req)
                reply = conn.recv()
            box.append(Outcome(State.ANSWERED, reply) if isinstance(reply, Reply) else Outcome(State.FAILED))
        except (ConnectionRefusedError, FileNotFoundError):
            box.append(Outcome(State.STALE))
        except Exception:  # noqa: BLE001 - whatever went wrong, the caller scores in-process
            box.append(Outcome(State.FAILED))
        finally:
            done.set()

    threading.Thread(target=exchange, daemon=True).start()
    if not shook.wait(HANDSHAKE_SECONDS) and not done.is_set():
        return Outcome(State.HUNG)
    if not done.wait(timeout):
        return Outcome(State.HUNG)
    return box[0]


def lock_free(key: str) -> bool:
    """No process holds the key's lock: none is alive (or starting) for this key."""
    import fcntl  # POSIX only, like the whole warm process (daemon_enabled is False elsewhere)

    fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the lock
    return True


def clean_stale(sock: Path, key: str) -> None:
    """Remove a socket file no one listens on, only when no process holds its key (one starting up might)."""
    if own_socket(sock) and lock_free(key):
        sock.unlink(missing_ok=True)


def start(settings: EngineSettings, key: str) -> subprocess.Popen[bytes] | None:
    """Start the warm process for `key` in the background, detached from the terminal and the hook; None when none
    may be started (the folder is not private, the key was refused before, one is already alive)."""
    d = daemon_dir()
    name = key[:16]
    if not private_dir(d) or (d / f"{name}.refused").exists() or not lock_free(key):
        return None
    spec = d / f"{name}.{os.getpid()}.settings"
    fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(settings, fh)
    env = dict(os.environ)
    # the process imports this very package, wherever it was imported from
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with os.fdopen(os.open(d / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gradshield_lint.daemon", "serve", str(spec), key],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=d,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


class WarmEngine(Engine):
    """The Engine the CLI scores with: `score_rows` asks the warm process of the same key first. Everything else
    (explanations, thresholds' finetune criterion, the recorded dtype) is the in-process Engine's, loaded only when
    used. After an in-process score it starts the warm process for the next run (after, not before: a cold run
    does not share the CPU with a second model load)."""

    warm_method: str | None = None

    @property
    def method(self) -> str:
        if self.warm_method is not None and "scoring_model" not in self.__dict__:
            return self.warm_method
        return super().method

    def score_rows(self, rows: Sequence[Row]) -> list[ScoredRow]:
        if not rows or not daemon_enabled() or "scoring_model" in self.__dict__:
            return super().score_rows(rows)
        try:
            key = key_of(self)
            sock = socket_path(key)
        except Exception:  # noqa: BLE001 - e.g. max_length beyond the context: the in-process run raises it properly
            return super().score_rows(rows)
        if sock is None:
            return super().score_rows(rows)
        got = ask(sock, Request("score", key, tuple(rows)), reply_timeout(len(rows)))
        if got.state is State.ANSWERED and got.reply is not None and got.reply.ok:
            scores = got.reply.scores
            if len(scores) == len(rows) and all(isinstance(s, RowScore) for s in scores):
                self.warm_method = got.reply.method
                return [ScoredRow(r, s) for r, s in zip(rows, scores)]
        scored = super().score_rows(rows)
        if got.state is State.STALE:
            clean_stale(sock, key)
        if got.state in (State.ABSENT, State.STALE):
            try:
                start(self.settings, key)
            except OSError:
                pass  # a cache folder that cannot be written: no warm process, the next run is cold too
        return scored
