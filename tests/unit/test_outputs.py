"""Outputs (issue 33, items 7, 8 and 12): what `-o`, `--json`, `--sarif` and `--summary` do to what is already at
the path, and the outputs refused before any scoring.

Real files throughout: symlinks, a FIFO read by a thread, character devices (/dev/null, /dev/full and, as root, a
private /dev/null made with mknod), the real CLI (in process, and as a subprocess for /dev/stdout) on a throwaway
repository scored by the tiny model of tests/helpers.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import assert_user_error, cli_fixtures, compliance_row, describe, ordinary_rows, snapshot, write_jsonl

from gradshield_lint.errors import OutputError
from gradshield_lint.io.atomic import atomic_write_many, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
N_BASE = 12

env, model_dir, template, repo = cli_fixtures(N_BASE)


def _read_fifo(path: Path, got: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path, "rb") as fh:
            got.append(fh.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device of our own (made with mknod as root; else the machine's): a write that replaced it with
    a plain file (as the rename did before issue 33) can never break the machine's /dev/null or /dev/full."""
    if os.geteuid() != 0:
        return Path("/dev") / name
    dev = tmp_path / name
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return dev


@pytest.fixture()
def chardev(tmp_path: Path) -> Path:
    return _device(tmp_path, "null", 3)


@pytest.fixture()
def fulldev(tmp_path: Path) -> Path:
    return _device(tmp_path, "full", 7)


# ------------------------------------------------------------------------------------------------ the writes (item 7)


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "report.json"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real"]  # no temporary file left beside
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    # a dangling link: the file it names is created, the link kept
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "later.json")
    atomic_write_text(dangling, "created\n")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.json").read_text() == "created\n"


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    atomic_write_many([(tmp_path / "a.json", b"{}\n"), (fifo, b"through the pipe\n")])
    reader.join(10)
    assert got == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert (tmp_path / "a.json").read_bytes() == b"{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "pipe"]


def test_character_devices_stay_devices(chardev):
    atomic_write_text(chardev, "discarded\n")
    assert stat.S_ISCHR(os.lstat(chardev).st_mode)
    atomic_write_text("/dev/null", "discarded\n")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_a_full_device_is_an_output_error_naming_it(fulldev):
    with pytest.raises(OutputError, match=f"{fulldev}: cannot write this output: No space left on device"):
        atomic_write_text(fulldev, "x" * 100_000)
    assert stat.S_ISCHR(os.lstat(fulldev).st_mode)


def test_cli_outputs_over_a_link_a_fifo_and_a_device(repo, chardev):
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [compliance_row(0)])
    real = repo.root / "reports" / "check.json"
    real.parent.mkdir()
    real.write_text("old\n")
    link = repo.root / "link.json"
    link.symlink_to(real)
    fifo = repo.root / "sarif.pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    r = repo.run("check", "--json", str(link), "--sarif", str(fifo), "-o", str(chardev), "data/train.jsonl")
    reader.join(10)
    assert r.exit_code == 1, describe(r)
    assert link.is_symlink() and json.loads(real.read_text())["findings"][0]["line"] == N_BASE + 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and json.loads(got[0])["version"] == "2.1.0"
    assert stat.S_ISCHR(os.lstat(chardev).st_mode)
    assert r.stdout == ""


def test_cli_output_through_dev_stdout_reaches_the_pipe_and_appends(repo, tmp_path):
    """`-o` on a link to /dev/stdout, in a real process: the report reaches the process's stdout (a pipe, then a
    file opened for appending, as `>> log` does) and the link stays a link; the appended file keeps what it held."""
    link = tmp_path / "stdout.txt"
    link.symlink_to("/dev/stdout")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "gradshield_lint.cli", "check", "-q", "-o", str(link), "data/train.jsonl"]
    p = subprocess.run(cmd, cwd=repo.root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "0 rows scored, 0 flagged" in p.stdout
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"
    log = tmp_path / "log.txt"
    log.write_text("earlier lines\n")
    with open(log, "a") as fh:
        p = subprocess.run(cmd, cwd=repo.root, env=env, stdout=fh, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    assert text.startswith("earlier lines\n") and "0 rows scored, 0 flagged" in text


# ------------------------------------------------------------------------------------------------ refused before scoring


@pytest.fixture()
def no_scoring(monkeypatch):
    """A run that gets as far as building the scoring engine fails the test: the refusals below come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr("gradshield_lint.cli.build_engine", refuse)


def test_an_output_that_is_an_input_or_the_baseline_is_refused_before_scoring(repo, no_scoring):
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [compliance_row(0)])
    (repo.root / "via-link.jsonl").symlink_to(repo.data)
    os.link(repo.data, repo.root / "hard.jsonl")
    watched = [repo.data, repo.baseline, repo.config, repo.root / "probes.jsonl"]
    before = snapshot(*watched)
    cases = [
        (["scan", "-o", "data/train.jsonl", "data/train.jsonl"], "-o/--output is an input", "data/train.jsonl"),
        (["scan", "-o", "data/../data/train.jsonl"], "-o/--output is an input", "train.jsonl"),
        (["check", "--json", ".gradshield-baseline.json", "data/train.jsonl"], "--json is the baseline", "baseline"),
        (["check", "--sarif", "via-link.jsonl", "data/train.jsonl"], "--sarif is an input", "via-link.jsonl"),
        (["check", "--summary", "hard.jsonl", "data/train.jsonl"], "--summary is an input", "hard.jsonl"),
        (["check", "-o", ".gradshield.yaml", "data/train.jsonl"], "is the configuration", ".gradshield.yaml"),
        (["scan", "--json", "probes.jsonl", "data/train.jsonl"], "is the probe set", "probes.jsonl"),
        (["score", "-o", "via-link.jsonl", "data/train.jsonl"], "-o/--output is an input", "via-link.jsonl"),
        (["check", "--json", "r.json", "--sarif", "r.json", "data/train.jsonl"], "name the same file", "r.json"),
        (["filter", "data", "data/clean.jsonl"], "DEST lies inside an input", "data/clean.jsonl"),
    ]
    for args, says, path in cases:
        assert_user_error(repo.run(*args), says, path)
    assert snapshot(*watched) == before
    assert not (repo.root / "r.json").exists() and not (repo.root / "data" / "clean.jsonl").exists()


def test_an_unwritable_output_is_refused_before_scoring(repo, no_scoring, tmp_path):
    for args, says in [
        (["scan", "-o", "/proc/nope.txt", "data/train.jsonl"], "-o/--output cannot be written"),
        (["check", "--json", "/proc/nope.txt", "data/train.jsonl"], "--json cannot be written"),
        (["check", "--summary", "/proc/nope.txt", "data/train.jsonl"], "--summary cannot be written"),
        (["score", "-o", "/proc/x/y.jsonl", "data/train.jsonl"], "-o/--output cannot be written"),
    ]:
        assert_user_error(repo.run(*args), says, "/proc/")
    link = tmp_path / "into-nowhere.json"
    link.symlink_to(tmp_path / "missing" / "report.json")
    assert_user_error(repo.run("scan", "--json", str(link)), "--json cannot be written", "missing")


def test_a_full_device_is_exit_2_naming_it_after_scoring(repo, fulldev, tmp_path):
    """/dev/full takes the open and fails the write: only the write can tell, and it is exit 2 (not 3, a bug)
    naming the path, with the other outputs of the run as they were or complete."""
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [compliance_row(0)])
    r = repo.run("check", "--summary", str(fulldev), "data/train.jsonl")
    assert_user_error(r, str(fulldev), "No space left on device")
    report = tmp_path / "report.json"
    r = repo.run("check", "--json", str(report), "-o", str(fulldev), "data/train.jsonl")
    assert_user_error(r, str(fulldev), "No space left on device")
    assert not report.exists()  # written through first, renamed after: the failed run replaced nothing
    assert stat.S_ISCHR(os.lstat(fulldev).st_mode)
