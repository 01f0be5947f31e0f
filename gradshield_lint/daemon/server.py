"""The warm process: one Engine, loaded before the socket is bound, answering requests of its own key only.

`multiprocessing.connection.Listener` (AF_UNIX, authkey) gives the framing and the authentication; a thread per
connection lets a second hook's handshake proceed at once, and one lock keeps the Engine to one request at a time
(torch's scoring is not shared across threads, and a request's rows are then scored in the same batches as in a
fresh process). A lock file held for the process's life makes sure one key has one process."""

from __future__ import annotations

import fcntl
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from gradshield_lint.daemon.paths import idle_seconds, key_of, lock_path, secret, socket_path
from gradshield_lint.daemon.protocol import VERSION, Reply, Request
from gradshield_lint.scoring.engine import Engine, EngineSettings


class Server:
    def __init__(self, engine: Engine, key: str, sock: Path, idle: float) -> None:
        self.engine = engine
        self.key = key
        self.sock = sock
        self.idle = idle
        self.busy = threading.Lock()
        self.last = time.monotonic()
        self.started = time.time()
        self.served = 0

    def handle(self, conn: Connection) -> None:
        try:
            with conn:
                req = conn.recv()
                conn.send(self.answer(req))
        except (EOFError, OSError, pickle.PickleError):
            pass  # the client went away or timed out: it scores in-process

    def answer(self, req: object) -> Reply:
        if not isinstance(req, Request) or req.version != VERSION:
            return Reply(False, error="unknown request")
        # status and stop say or change nothing about scores: `daemon status|stop` reach every process this way
        if req.op == "status":
            info: dict[str, object] = {
                "pid": os.getpid(),
                "key": self.key,
                "started": self.started,
                "served": self.served,
                "idle_exit_s": self.idle,
                "idle_s": round(time.monotonic() - self.last, 1),
                "model": self.engine.settings.model.name,
            }
            return Reply(True, info=info)
        if req.op == "stop":
            threading.Thread(target=self.exit, daemon=True).start()
            return Reply(True)
        if req.key != self.key:
            return Reply(False, error="key mismatch")  # another model or settings: never this engine's scores
        if req.op != "score":
            return Reply(False, error=f"unknown op {req.op!r}")
        with self.busy:
            try:
                scored = self.engine.score_rows(list(req.rows))
                method = self.engine.method
            except Exception as exc:  # noqa: BLE001 - the client reruns in-process and reports it properly
                return Reply(False, error=f"{type(exc).__name__}: {exc}")
            finally:
                self.last = time.monotonic()
            self.served += 1
            return Reply(True, scores=tuple(s.score for s in scored), method=method)

    def exit(self) -> None:
        with self.busy:  # never in the middle of a request
            try:
                self.sock.unlink()
            except FileNotFoundError:
                pass
            os._exit(0)  # the accept loop is blocked in accept(): nothing else to wind down

    def watch_idle(self) -> None:
        while True:
            time.sleep(min(5.0, max(self.idle / 4, 0.05)))
            if time.monotonic() - self.last > self.idle and not self.busy.locked():
                self.exit()

    def run(self) -> None:
        old = os.umask(0o177)  # the socket is created 0600, with no moment at a wider mode
        try:
            if self.sock.exists() or self.sock.is_symlink():
                self.sock.unlink()  # a dead process's (we hold the key's lock: no live one owns it)
            listener = Listener(str(self.sock), family="AF_UNIX", backlog=16, authkey=secret())
        finally:
            os.umask(old)
        threading.Thread(target=self.watch_idle, daemon=True).start()
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, Exception):  # noqa: BLE001 - a failed handshake is that client's problem
                continue
            self.last = time.monotonic()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


def serve(settings_file: Path, key: str) -> int:
    """Load the engine of the pickled settings, check it has `key`, then serve until idle. Exit 0 when another
    process already serves the key, 2 when this engine's key is not `key` (nothing is served then)."""
    sock = socket_path(key)
    if sock is None:
        print("gradshield-lint daemon: the cache folder is not private or its path is too long", file=sys.stderr)
        return 2
    lock_fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # one process per key
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())  # who holds it: for `daemon status` and for tests' clean-up
    settings = pickle.loads(settings_file.read_bytes())
    settings_file.unlink(missing_ok=True)
    if not isinstance(settings, EngineSettings):
        return 2
    engine = Engine(settings)
    _ = engine.gradient  # the prepared model, ∇H and the category directions, before anyone is told to connect
    mine = key_of(engine)
    if mine != key:
        # the model changed on disk since the client hashed it: say so, and make clients stop starting us
        lock_path(key).with_suffix(".refused").write_text(f"engine key {mine}\n")
        print(f"gradshield-lint daemon: engine key {mine} is not {key}; not serving", file=sys.stderr)
        return 2
    Server(engine, key, sock, idle_seconds()).run()
    return 0
