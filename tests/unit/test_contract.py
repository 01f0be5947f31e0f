"""The exit-code contract (issue 12): 0 clean, 1 findings and nothing else, 2 for a usage, configuration or input
error with a message naming the file (and line), a code of its own (3) for an internal error, never a traceback
unless asked for with --debug, and no file of the user's changed.

Every case is a real bad file written into a throwaway repository (a real FIFO from os.mkfifo, a real symlink loop,
a real YAML alias bomb, real 100,000-deep JSON) and the real `gradshield-lint` command run on it: in process through
click's runner, or as a subprocess with a timeout and a memory cap where the old behaviour was to hang. The
repository's files are compared byte for byte (and by mtime) before and after each run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    Repo,
    assert_user_error,
    cli_fixtures,
    describe,
    jsonl,
    ordinary_row,
    ordinary_rows,
    tree,
    write_jsonl,
)

N_BASE = 12
REPO_ROOT = Path(__file__).resolve().parents[2]
DEEP = 100_000
DIGITS = 5_000


env, model_dir, template, repo = cli_fixtures(N_BASE, unset=("GRADSHIELD_HF_MIRROR", "GRADSHIELD_DEBUG"))


def fails_cleanly(repo: Repo, *args: str, needles: tuple[str, ...], max_s: float = 20.0) -> str:
    """`gradshield-lint ARGS` in the repository: exit 2, every needle in the one message, no traceback, fast, and
    no file changed, added or removed."""
    before = tree(repo.root)
    t0 = time.monotonic()
    r = repo.run(*args)
    took = time.monotonic() - t0
    err = assert_user_error(r, *needles)
    assert tree(repo.root) == before, "a file of the user's was changed, added or removed"
    assert took < max_s, f"took {took:.1f}s"
    return err


def run_subprocess(
    repo: Repo, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real command in a child process, bounded in time and memory: the old behaviour for these inputs was to
    hang (a FIFO) or to expand without end (a YAML bomb); a timeout fails the test instead of hanging the suite."""

    def cap_memory() -> None:
        limit = 3 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "gradshield_lint.cli", *args],
            cwd=repo.root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=cap_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`gradshield-lint {' '.join(args)}` did not finish within {timeout}s")


def assert_subprocess_user_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    shown = f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    assert p.returncode == 2, shown
    assert "Traceback" not in p.stderr + p.stdout, shown
    for n in needles:
        assert n.lower() in p.stderr.lower(), f"{n!r} not in the message\n{shown}"


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def deep_messages() -> str:
    """A row whose `messages` is a list nested 100,000 deep."""
    return '{"messages": ' + "[" * DEEP + "]" * DEEP + "}"


def long_int_row() -> str:
    return json.dumps(ordinary_row(500))[:-1] + ', "n": ' + "7" * DIGITS + "}"


# --------------------------------------------------------------------------------- JSON past the parser's limits


@pytest.mark.parametrize(
    "bad,needle", [(deep_messages, "nested too deeply"), (long_int_row, "integer too long")], ids=["deep", "long-int"]
)
def test_jsonl_line_past_the_parsers_limits(repo, bad, needle):
    repo.data.write_text(repo.data.read_text() + bad() + "\n" + jsonl([ordinary_row(99)]))
    fails_cleanly(repo, "check", needles=(f"data/train.jsonl:{N_BASE + 1}", needle))
    fails_cleanly(repo, "scan", "data/train.jsonl", needles=(f"data/train.jsonl:{N_BASE + 1}", needle))


@pytest.mark.parametrize(
    "bad,needle", [(deep_messages, "nested too deeply"), (long_int_row, "integer too long")], ids=["deep", "long-int"]
)
def test_json_list_record_past_the_parsers_limits(repo, bad, needle):
    extra = repo.root / "data" / "extra.json"
    extra.write_text(
        "[\n" + json.dumps(ordinary_row(200)) + ",\n" + json.dumps(ordinary_row(201)) + ",\n" + bad() + "\n]\n"
    )
    fails_cleanly(repo, "check", "data/extra.json", needles=("data/extra.json:4", needle))


@pytest.mark.parametrize(
    "cell,needle",
    [("[" * DEEP + "]" * DEEP, "nested too deeply"), ("[" + "9" * DIGITS + "]", "integer too long")],
    ids=["deep", "long-int"],
)
def test_csv_cell_past_the_parsers_limits(repo, cell, needle):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["messages"])
    w.writerow([json.dumps(ordinary_row(300)["messages"])])
    w.writerow([cell])
    (repo.root / "data" / "chat.csv").write_text(buf.getvalue())
    fails_cleanly(repo, "check", "data/chat.csv", needles=("data/chat.csv:3", "column 'messages'", needle))


def test_baseline_with_an_integer_of_5000_digits(repo):
    text = repo.baseline.read_text()
    doc = json.loads(text)
    row_id = sorted(doc["scores"])[3]
    old = f'"{row_id}": {text.split(f"{chr(34)}{row_id}{chr(34)}: ", 1)[1].split(",", 1)[0].split(chr(10), 1)[0]}'
    assert old in text
    repo.baseline.write_text(text.replace(old, f'"{row_id}": ' + "1" * DIGITS))
    line = line_of(repo.baseline, row_id)
    fails_cleanly(repo, "check", needles=(f".gradshield-baseline.json:{line}", "integer too long"))
    fails_cleanly(
        repo, "accept", row_id, "--reason", "fine", needles=(f".gradshield-baseline.json:{line}", "integer too long")
    )


def test_baseline_nested_100000_deep(repo):
    text = repo.baseline.read_text()
    assert '  "recorded": {\n' in text
    repo.baseline.write_text(
        text.replace('  "recorded": {\n', '  "recorded": {\n    "x": ' + "[" * DEEP + "]" * DEEP + ",\n", 1)
    )
    line = line_of(repo.baseline, '"x": [[[')
    fails_cleanly(repo, "check", needles=(f".gradshield-baseline.json:{line}", "nested too deeply"))


# --------------------------------------------------------------------------------------- files that are not files


def test_fifo_given_as_a_dataset(repo):
    """Opening a FIFO for reading blocks until a writer comes: the check hung forever."""
    fifo = repo.root / "data" / "pipe.jsonl"
    os.mkfifo(fifo)
    before = tree(repo.root)
    p = run_subprocess(repo, "check", "data/pipe.jsonl", timeout=60)
    assert_subprocess_user_error(p, "data/pipe.jsonl", "not a regular file")
    p = run_subprocess(repo, "score", "data/pipe.jsonl", timeout=60)
    assert_subprocess_user_error(p, "data/pipe.jsonl", "not a regular file")
    assert tree(repo.root) == before


def test_fifo_given_as_the_configuration(repo):
    os.mkfifo(repo.root / "conf.yaml")
    p = run_subprocess(repo, "--config", "conf.yaml", "check", timeout=60)
    assert_subprocess_user_error(p, "conf.yaml", "not a regular file")


def test_symlink_loop(repo):
    loop = repo.root / "data" / "loop.jsonl"
    loop.symlink_to("loop.jsonl")
    for cmd in ("check", "scan", "score"):
        fails_cleanly(repo, cmd, "data/loop.jsonl", needles=("data/loop.jsonl", "symlink loop"))


@pytest.mark.parametrize("command", ["check", "scan", "score", "baseline create --baseline other.json"])
def test_directory_with_no_dataset_file(repo, command):
    """Today `check empty/` passed (exit 0) and `scan empty/` judged zero rows: a check of nothing must not pass.
    (`score DIR` already refused a directory; kept here so that it stays refused.)"""
    (repo.root / "empty").mkdir()
    (repo.root / "empty" / "notes.txt").write_text("not a dataset\n")
    fails_cleanly(repo, *command.split(), "empty", needles=("empty", "directory"))
    assert not (repo.root / "other.json").exists()


def test_absolute_glob_in_files(repo):
    repo.write_config(files=["data/**/*.jsonl", "/etc/**/*.jsonl"])
    line = line_of(repo.config, "/etc/**/*.jsonl")
    for args in (["check"], ["check", "data"], ["scan"]):
        fails_cleanly(repo, *args, needles=(f".gradshield.yaml:{line}", "files[1]", "relative"))


# ---------------------------------------------------------------------------------------------------- YAML


# 271 bytes: each level holds nine aliases of the one before, 9**8 (43 million) strings once expanded.
BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{k}: &{k} [{','.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefg", "bcdefgh")
)


def test_yaml_alias_bomb(repo):
    assert len(BOMB.encode()) == 271
    repo.config.write_text(BOMB)
    before = tree(repo.root)
    t0 = time.monotonic()
    p = run_subprocess(repo, "check", timeout=60)
    assert_subprocess_user_error(p, ".gradshield.yaml:2", "alias")
    assert time.monotonic() - t0 < 30
    assert tree(repo.root) == before


def test_yaml_recursive_alias(repo):
    repo.config.write_text(repo.config.read_text() + "rows: &r {columns: *r}\n")
    line = line_of(repo.config, "&r")
    fails_cleanly(repo, "check", needles=(f".gradshield.yaml:{line}", "alias"))


def test_yaml_integer_of_5000_digits(repo):
    repo.config.write_text(repo.config.read_text().replace("max_length: 96", "max_length: " + "9" * DIGITS))
    line = line_of(repo.config, "max_length")
    fails_cleanly(repo, "check", needles=(f".gradshield.yaml:{line}", "integer too long"))


# ------------------------------------------------------------------------------------- outputs, checked first


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check", "-o", "out"], "--output"),
        (["check", "--json", "out"], "--json"),
        (["check", "--sarif", "out"], "--sarif"),
        (["check", "--summary", "out"], "--summary"),
        (["scan", "--summary", "out"], "--summary"),
        (["score", "data/train.jsonl", "-o", "out"], "--output"),
        (["filter", "data/train.jsonl", "clean.jsonl", "--removed", "out"], "--removed"),
        (["filter", "data/train.jsonl", "out"], "DEST"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_output_path_naming_a_directory(repo, args, needle):
    """Refused when the command line is read, before the model is loaded: it used to be a traceback after scoring
    (and `filter` had already replaced DEST when writing the removed rows failed)."""
    (repo.root / "out").mkdir()
    err = fails_cleanly(repo, *args, needles=(needle, "'out'", "directory"), max_s=5)
    assert not (repo.root / "clean.jsonl").exists(), err


def test_filters_default_removed_file_is_a_directory(repo):
    (repo.root / "clean.removed.jsonl").mkdir()
    fails_cleanly(
        repo, "filter", "data/train.jsonl", "clean.jsonl", needles=("clean.removed.jsonl", "directory"), max_s=5
    )


def test_output_below_a_file(repo):
    fails_cleanly(
        repo, "check", "-o", "data/train.jsonl/report.txt", needles=("data/train.jsonl", "not a directory"), max_s=5
    )


# -------------------------------------------------------------------------------------------- options that clash


@pytest.mark.parametrize("method", ["fd", "jvp"])
def test_score_raw_only_method_under_normalize(repo, method):
    err = fails_cleanly(
        repo, "score", "--method", method, "data/train.jsonl", needles=(method, "--raw", "persample"), max_s=10
    )
    assert "normalize" in err
    r = repo.run("score", "--method", method, "--raw", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    assert len(r.stdout.splitlines()) == N_BASE


# ------------------------------------------------------------------------------------------------- hf:// paths


def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "hub-mirror"
    write_jsonl(root / "org" / "name" / "data" / "train.jsonl", ordinary_rows(3, start=700))
    write_jsonl(root / "org" / "other" / "secret.jsonl", [ordinary_row(800)])
    return root


def test_hf_path_on_the_command_line(repo, tmp_path, monkeypatch):
    """`hf://datasets/...` reached the linter as `hf:/datasets/...` (click's path type) and never worked."""
    monkeypatch.setenv("GRADSHIELD_HF_MIRROR", str(mirror(tmp_path)))
    url = "hf://datasets/org/name/data/train.jsonl"
    r = repo.run("score", url)
    assert r.exit_code == 0, describe(r)
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 3 and {o["file"] for o in out} == {url}
    r = repo.run("check", url)
    assert r.exit_code == 0, describe(r)  # 3 ordinary rows, new to the baseline, below its threshold


@pytest.mark.parametrize(
    "url",
    [
        "hf://datasets/org/name/../other/secret.jsonl",
        "hf://datasets/org/name/data/../../other/secret.jsonl",
        "hf://datasets/org/name@..%2F..%2Forg%2Fother/secret.jsonl",
    ],
)
def test_hf_path_cannot_leave_the_dataset(repo, tmp_path, monkeypatch, url):
    monkeypatch.setenv("GRADSHIELD_HF_MIRROR", str(mirror(tmp_path)))
    from gradshield_lint.errors import InputError
    from gradshield_lint.io.rows import iter_rows

    with pytest.raises(InputError, match=r"'\.\.'"):
        list(iter_rows(url))  # the local copy held another dataset's file at that place: it was read
    fails_cleanly(repo, "score", url, needles=(url, "'..'"))
    fails_cleanly(repo, "check", url, needles=(url, "'..'"))


# -------------------------------------------------------------------------------------------- internal errors


def _bug(*args, **kwargs):
    raise ValueError("an id that is not there\x1b[31m")


def test_internal_error_has_its_own_exit_code(repo, monkeypatch):
    """A bug (any exception that is not a user error) must not exit 1, which CI reads as findings."""
    import gradshield_lint.lint.service

    monkeypatch.setattr(gradshield_lint.lint.service, "read_all", _bug)
    r = repo.run("check")
    assert r.exit_code == 3, describe(r)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, describe(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "ValueError" in lines[0] and "--debug" in lines[0], (
        describe(r)
    )
    assert "\x1b" not in r.stderr  # an exception's text can carry row content: no raw escape sequences

    r = repo.run("--debug", "check")
    assert r.exit_code == 3, describe(r)
    assert "Traceback" in r.stderr and "ValueError" in r.stderr, describe(r)

    monkeypatch.setenv("GRADSHIELD_DEBUG", "1")
    r = repo.run("check")
    assert r.exit_code == 3 and "Traceback" in r.stderr, describe(r)


def test_interrupt_is_not_findings(repo, monkeypatch):
    import gradshield_lint.lint.service

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradshield_lint.lint.service, "read_all", interrupted)
    r = repo.run("check")
    assert r.exit_code == 130, describe(r)
    assert "interrupted" in r.stderr


def test_internal_error_in_a_real_process(repo):
    """The same through a real process, its exit status as CI sees it (a sitecustomize module plants the bug)."""
    shim = repo.root / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import gradshield_lint.lint.service as l\n"
        "def _boom(*a, **k):\n    raise ZeroDivisionError('a bug')\n"
        "l.read_all = _boom\n"
    )
    p = run_subprocess(repo, "check", env={"PYTHONPATH": os.pathsep.join([str(shim), str(REPO_ROOT)])})
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "ZeroDivisionError: a bug" in p.stderr


def test_fifo_given_as_the_baseline(tmp_path):
    """A FIFO named as the baseline is refused at once (reading it would wait for a writer forever): exit 2 naming
    it, through the library the CLI calls."""
    import pytest as _pytest

    from gradshield_lint.errors import BaselineError
    from gradshield_lint.lint.baseline import read_baseline

    fifo = tmp_path / "baseline.json"
    os.mkfifo(fifo)
    with _pytest.raises(BaselineError) as info:
        read_baseline(fifo)
    assert info.value.exit_code == 2 and "not a regular file" in str(info.value) and str(fifo) in str(info.value)
