"""The real `pre-commit` and its `gradshield-lint` (python) hook environment, shared by the pre-commit tests.

The fixtures `session` (pre-commit's home, the hook repository: a commit of this working tree's package and
manifest, and the environment every command gets) and `python_env` (the hook's own virtualenv, built once with
`pre-commit install-hooks`) are session-scoped and registered in conftest.py, so test_precommit.py and
test_precommit_fresh.py share ONE environment build per test run.

pip installs the package with torch, transformers and the rest, which takes minutes and reaches PyPI.
PIP_CONSTRAINT pins torch to the CPU build that lies on disk, so no CUDA build is ever downloaded; without that file
on disk the python-hook tests are skipped. Set GRADSHIELD_TEST_PRE_COMMIT_HOME=DIR to keep pre-commit's environment
between sessions (a developer's loop): the hook repository's commit is deterministic, so an unchanged tree reuses
the environment built before.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
HOOK_REPO_FILES = ["pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "gradshield_lint"]
TORCH_PIN = "2.13.0"
FINDING = re.compile(r"^(\S+):(\d+)\s+\S+\s+\+", re.M)  # a row of the text report's table: FILE:LINE FIHS +ABOVE
FIXED_DATE = "2026-01-01T00:00:00+00:00"


# ------------------------------------------------------------------------------------------------ environment


def _cpu_torch_wheel() -> Path | None:
    """The CPU build of torch that lies on disk (pip's find-links), if any."""
    dirs = [d for d in os.environ.get("PIP_FIND_LINKS", "").split() if d] + ["/opt/wheels"]
    for d in dirs:
        hits = sorted(Path(d).glob(f"torch-{TORCH_PIN}+cpu-*.whl")) if Path(d).is_dir() else []
        if hits:
            return hits[0]
    return None


def _without_venv(path: str) -> str:
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and Path(p) != VENV_BIN)


@dataclass
class Session:
    env: dict[str, str]  # the environment every pre-commit and git command gets (PATH without this venv)
    home: Path  # PRE_COMMIT_HOME
    hook_repo: Path
    rev: str

    def with_venv_on_path(self) -> dict[str, str]:
        return {**self.env, "PATH": f"{VENV_BIN}{os.pathsep}{self.env['PATH']}"}


def run(
    args: list[str], cwd: Path, env: dict[str, str], *, timeout: float = 900, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


def out(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"


def precommit(
    s: Session, cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pre_commit", *args], cwd, env or s.env, timeout=timeout)


def git(
    s: Session, cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    p = run(["git", *args], cwd, env or s.env)
    if check:
        assert p.returncode == 0, f"git {' '.join(args)}\n{out(p)}"
    return p


@pytest.fixture(scope="session")
def session(tmp_path_factory) -> Iterator[Session]:
    """pre-commit's home, the hook repository (a commit of this tree's package and manifest), and the environment."""
    keep = os.environ.get("GRADSHIELD_TEST_PRE_COMMIT_HOME")
    base = Path(keep) if keep else tmp_path_factory.mktemp("pre-commit")
    base.mkdir(parents=True, exist_ok=True)
    home = base / "home"
    gitconfig = base / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n", encoding="utf-8")

    constraints = base / "constraints.txt"
    wheel = _cpu_torch_wheel()
    # The CPU build's local version (+cpu) pins that very file; pip prefers find-links for it and never sees CUDA.
    constraints.write_text(f"torch=={TORCH_PIN}+cpu\n" if wheel else f"torch=={TORCH_PIN}\n", encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRE_COMMIT", "GIT_", "VIRTUAL_ENV"))}
    env.update(
        PATH=_without_venv(os.environ.get("PATH", "/usr/bin:/bin")),
        PRE_COMMIT_HOME=str(home),
        PRE_COMMIT_COLOR="never",
        PIP_CONSTRAINT=str(constraints),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADSHIELD_CACHE=str(base / "gradshield-cache"),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )

    # The hook repository: what pre-commit clones at `rev`. Fixed dates: the same tree gives the same commit.
    hook_repo = base / "gradshield-lint-src"
    shutil.rmtree(hook_repo, ignore_errors=True)
    hook_repo.mkdir()
    for name in HOOK_REPO_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, hook_repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, hook_repo / name)
    dated = {**env, "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    s = Session(env, home, hook_repo, "")
    git(s, hook_repo, "init", "-q", "-b", "main")
    git(s, hook_repo, "add", "-A")
    git(s, hook_repo, "commit", "-q", "-m", "gradshield-lint hooks", env=dated)
    s.rev = git(s, hook_repo, "rev-parse", "HEAD").stdout.strip()
    yield s
    if not keep:
        shutil.rmtree(home, ignore_errors=True)  # pre-commit's environment is 1.5 GB: don't leave it in the temp dir


@pytest.fixture(scope="session")
def python_env(session, tmp_path_factory) -> dict:
    """pre-commit's own virtualenv for the `gradshield-lint` hook, built once (`pre-commit install-hooks`)."""
    if _cpu_torch_wheel() is None:
        pytest.skip(f"the CPU build of torch {TORCH_PIN} is not on disk: pre-commit's pip would download a CUDA build")
    scratch = tmp_path_factory.mktemp("install-hooks")
    git(session, scratch, "init", "-q", "-b", "main")
    write_precommit_config(scratch, session, "gradshield-lint")
    t0 = time.monotonic()
    p = precommit(session, scratch, "install-hooks", timeout=1800)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, out(p)
    # The clone of THIS rev (a kept PRE_COMMIT_HOME also holds environments of earlier trees): pre-commit's own
    # record of which folder holds which (repo, rev).
    with contextlib.closing(sqlite3.connect(session.home / "db.db")) as db:
        row = db.execute(
            "SELECT path FROM repos WHERE repo = ? AND ref = ?", (str(session.hook_repo), session.rev)
        ).fetchone()
    assert row, f"pre-commit recorded no clone of {session.hook_repo}@{session.rev}\n{out(p)}"
    pythons = sorted(Path(row[0]).glob("py_env-*/bin/python"))
    assert len(pythons) == 1, f"expected one python environment in {row[0]}: {pythons}\n{out(p)}"
    built = "Installing environment" in p.stdout + p.stderr
    print(
        f"\npre-commit environment: {'built' if built else 'reused'} in {elapsed:.0f} s at {pythons[0].parents[1]}",
        file=sys.stderr,
    )
    return {"python": pythons[0], "seconds": elapsed, "built": built}


def write_precommit_config(root: Path, s: Session, hook_id: str, **hook_options) -> None:
    hook = {"id": hook_id, "verbose": True, **hook_options}
    cfg = {"repos": [{"repo": str(s.hook_repo), "rev": s.rev, "hooks": [hook]}]}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
