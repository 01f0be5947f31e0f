"""The warm scoring process (gradshield_lint/daemon): its scores are a fresh process's, bit for bit, and every way
it can fail (killed, a stale socket file, a socket that is not the user's, another key) ends in a correct
in-process score. Each test turns the daemon on in a cache of its own (a short /tmp path: a socket path has a
108-byte limit) and stops and kills whatever it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import CLI_SAYING_IF_TORCH, compliance_rows, make_repo, ordinary_rows, save_tiny_model, write_jsonl

from gradshield_lint.config import load_config
from gradshield_lint.daemon import client, control
from gradshield_lint.daemon.client import State, WarmEngine, ask
from gradshield_lint.daemon.paths import daemon_dir, key_of, socket_path
from gradshield_lint.daemon.protocol import Request
from gradshield_lint.io.rows import Row, iter_rows
from gradshield_lint.scoring.engine import Engine, EngineSettings


def _adapter(model_dir: Path, folder: Path) -> Path:
    # an adapter makes the tiny model a prepared one, as the embedded model is: its fingerprint is then read from
    # the prepared entry, without loading the model (the case the warm process is for)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    base = tmp_path_factory.mktemp("daemon")
    model_dir = save_tiny_model(base / "tiny", tokenizer)
    adapter = _adapter(model_dir, base / "adapter")
    repo = make_repo(base / "repo", model_dir, ordinary_rows(12) + compliance_rows(2), model={"adapter": str(adapter)})
    return repo.root


@pytest.fixture(scope="module")
def settings(repo_root: Path) -> EngineSettings:
    return EngineSettings.from_config(load_config(start=repo_root))


@pytest.fixture(scope="module")
def rows(repo_root: Path) -> list[Row]:
    return list(iter_rows(repo_root / "data" / "train.jsonl"))


@pytest.fixture(scope="module")
def fresh(settings: EngineSettings, rows: list[Row]) -> list:
    return [s.score for s in Engine(settings).score_rows(rows)]


def _holders(cache: Path) -> list[int]:
    """Pids of the processes holding a key's lock (alive, starting or serving)."""
    pids = []
    for lock in (cache / "daemon").glob("*.lock"):
        key = lock.stem
        if not client.lock_free(key):
            text = lock.read_text().strip()
            if text.isdigit():
                pids.append(int(text))
    return pids


@pytest.fixture()
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gsd-", dir="/tmp"))
    monkeypatch.setenv("GRADSHIELD_CACHE", str(root))
    monkeypatch.setenv("GRADSHIELD_DAEMON", "1")
    monkeypatch.setenv("GRADSHIELD_DAEMON_IDLE", "120")  # a process a test failed to stop ends by itself
    monkeypatch.delenv("CI", raising=False)
    started: list[subprocess.Popen[bytes]] = []
    real_start = client.start

    def recorded(*args, **kwargs):  # a process still importing holds no lock yet: known by its Popen
        proc = real_start(*args, **kwargs)
        if proc is not None:
            started.append(proc)
        return proc

    monkeypatch.setattr(client, "start", recorded)
    monkeypatch.setattr(control, "start", recorded)
    try:
        yield root
    finally:
        control.stop()
        for proc in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 15
        while _holders(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _holders(root):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _warm(settings: EngineSettings) -> tuple[Path, str]:
    """Start the process for `settings` and wait until it answers; its socket and key."""
    info = control.start_for(Engine(settings), wait=300)
    key = str(info["key"])
    sock = socket_path(key)
    assert sock is not None
    return sock, key


def _served(engine: WarmEngine) -> bool:
    return engine.warm_method is not None and "scoring_model" not in engine.__dict__


def test_warm_scores_equal_a_fresh_process_and_the_first_run_starts_it(cache, settings, rows, fresh):
    first = WarmEngine(settings)
    assert [s.score for s in first.score_rows(rows)] == fresh  # cold: in-process, then the process is started
    assert not _served(first)
    key = key_of(first)
    sock = socket_path(key)
    assert sock is not None
    deadline = time.monotonic() + 300
    while ask(sock, Request("status", key), 5).state is not State.ANSWERED:
        assert time.monotonic() < deadline, (daemon_dir() / f"{key[:16]}.log").read_text()
        time.sleep(0.2)
    assert sock.stat().st_mode & 0o777 == 0o600 and sock.parent.stat().st_mode & 0o777 == 0o700
    warm = WarmEngine(settings)
    got = [s.score for s in warm.score_rows(rows)]
    assert _served(warm)
    assert got == fresh  # RowScore's floats compared exactly
    assert warm.method == Engine(settings).method


def test_killed_process_and_stale_socket_fall_back_and_are_cleaned_up(cache, settings, rows, fresh):
    sock, key = _warm(settings)
    (pid,) = _holders(cache)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not client.lock_free(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.exists()  # what a killed process leaves: a socket file no one listens on
    engine = WarmEngine(settings)
    assert [s.score for s in engine.score_rows(rows)] == fresh
    assert not _served(engine)
    # the stale file was removed and a new process started in its place
    deadline = time.monotonic() + 300
    while ask(sock, Request("status", key), 5).state is not State.ANSWERED:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _holders(cache) and _holders(cache) != [pid]


def test_a_hung_process_is_bypassed_after_the_handshake_timeout(cache, settings, rows, fresh):
    sock, key = _warm(settings)
    (pid,) = _holders(cache)
    os.kill(pid, signal.SIGSTOP)  # alive, its socket accepting connections into the backlog, answering nothing
    try:
        t = time.monotonic()
        engine = WarmEngine(settings)
        assert [s.score for s in engine.score_rows(rows)] == fresh
        assert not _served(engine)
        assert time.monotonic() - t < client.HANDSHAKE_SECONDS + 60
        assert sock.exists() and _holders(cache) == [pid]  # neither removed nor replaced: it may only be slow
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ask(sock, Request("status", key), 5).state is State.ANSWERED


def test_a_socket_file_with_no_listener_is_bypassed(cache, settings, rows, fresh):
    key = key_of(Engine(settings))
    sock = socket_path(key)
    assert sock is not None
    s = socket.socket(socket.AF_UNIX)
    old = os.umask(0o177)
    s.bind(str(sock))
    os.umask(old)
    s.close()  # bound, never listened on: connecting is refused
    assert ask(sock, Request("score", key, tuple(rows)), 5).state is State.STALE
    engine = WarmEngine(settings)
    assert [s.score for s in engine.score_rows(rows)] == fresh
    assert not _served(engine)
    assert not sock.exists() or ask(sock, Request("status", key), 5).state is not State.STALE


def test_a_socket_that_is_not_the_users_is_never_used(cache, settings, rows, fresh):
    sock, key = _warm(settings)
    served_before = ask(sock, Request("status", key), 5).reply.info["served"]  # type: ignore[union-attr]
    if os.getuid() == 0:
        os.chown(sock, 65534, -1)  # nobody's
    else:
        os.chmod(sock, 0o666)  # anyone's
    try:
        assert ask(sock, Request("score", key, tuple(rows)), 5).state is State.FOREIGN
        engine = WarmEngine(settings)
        assert [s.score for s in engine.score_rows(rows)] == fresh
        assert not _served(engine)
        assert sock.exists()  # not ours to remove
    finally:
        if os.getuid() == 0:
            os.chown(sock, os.getuid(), -1)
        os.chmod(sock, 0o600)
    assert ask(sock, Request("status", key), 5).reply.info["served"] == served_before  # type: ignore[union-attr]


def test_another_key_is_refused_and_scored_in_process(cache, settings, rows, fresh, monkeypatch):
    sock, key = _warm(settings)
    other = key[:16] + ("0" if key[16] != "0" else "1") + key[17:]  # the same socket name, another key
    reply = ask(sock, Request("score", other, tuple(rows)), 30).reply
    assert reply is not None and not reply.ok and "key" in reply.error
    monkeypatch.setattr(client, "key_of", lambda engine: other)
    engine = WarmEngine(settings)
    assert [s.score for s in engine.score_rows(rows)] == fresh
    assert not _served(engine)


def test_concurrent_clients_share_one_process(cache, settings, rows, fresh):
    sock, key = _warm(settings)
    # the rows of one request are scored in one set of batches, as in a fresh process given those rows
    local = Engine(settings)
    want = [[s.score for s in local.score_rows(rows[i::4])] for i in range(4)]
    results: dict[int, tuple[list, bool]] = {}

    def one(i: int) -> None:
        engine = WarmEngine(settings)
        part = rows[i::4]
        results[i] = ([s.score for s in engine.score_rows(part)], _served(engine))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(4):
        got, served = results[i]
        assert served and got == want[i]
    assert len(_holders(cache)) == 1
    assert ask(sock, Request("status", key), 5).reply.info["served"] == 4  # type: ignore[union-attr]


def test_off_with_gradshield_daemon_0_or_in_ci(cache, settings, rows, fresh, monkeypatch):
    for var, value in (("GRADSHIELD_DAEMON", "0"), ("CI", "true")):
        with monkeypatch.context() as mp:
            mp.setenv(var, value)
            engine = WarmEngine(settings)
            assert [s.score for s in engine.score_rows(rows)] == fresh
    assert not list((cache / "daemon").glob("*.sock")) if (cache / "daemon").exists() else True
    assert not _holders(cache)


def test_cli_daemon_commands_and_a_warm_check_imports_no_torch(cache, repo_root, tmp_path):
    """`daemon start|status|stop`, and a check of one new row answered by the warm process: exit and report as
    in-process, and no torch in the checking process."""
    repo = tmp_path / "repo"
    shutil.copytree(repo_root, repo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("PRE_COMMIT_FROM_REF", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI_SAYING_IF_TORCH, *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    env["GRADSHIELD_DAEMON"] = "0"
    made = cli("baseline", "create")
    assert made.returncode == 0, made.stderr
    env["GRADSHIELD_DAEMON"] = "1"
    started = cli("daemon", "start")
    assert started.returncode == 0, started.stderr
    listed = cli("daemon", "status")
    assert listed.returncode == 0 and "pid " in listed.stdout, listed.stderr
    write_jsonl(repo / "data" / "train.jsonl", ordinary_rows(12) + compliance_rows(2) + ordinary_rows(1, start=500))
    warm = cli("check", "data/train.jsonl")
    env["GRADSHIELD_DAEMON"] = "0"
    cold = cli("check", "data/train.jsonl")
    env["GRADSHIELD_DAEMON"] = "1"
    assert warm.returncode == cold.returncode == 0, (warm.stderr, cold.stderr)
    assert warm.stdout == cold.stdout
    assert "no torch" in warm.stderr and "torch imported" in cold.stderr
    stopped = cli("daemon", "stop")
    assert stopped.returncode == 0 and "stopped 1" in stopped.stderr
    deadline = time.monotonic() + 15
    while _holders(cache) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _holders(cache)
    assert "no warm process" in cli("daemon", "status").stderr
