"""The pre-commit hooks (.pre-commit-hooks.yaml), run by the real `pre-commit` in throwaway git repositories.

pre-commit builds the `gradshield-lint` hook's own virtualenv from a commit of this working tree (a temporary
repository holding the package and the manifest; the hook's `rev` is that commit): pip installs the package with
torch, transformers and the rest, which takes minutes and reaches PyPI. It is built ONCE per test session
(PRE_COMMIT_HOME in a session temp dir) and every test reuses it. PIP_CONSTRAINT pins torch to the CPU build that
lies on disk, so no CUDA build is ever downloaded; without that file on disk the python-hook tests are skipped
(the `gradshield-lint-system` hook, which uses this venv's `gradshield-lint`, is still tested).

Set GRADSHIELD_TEST_PRE_COMMIT_HOME=DIR to keep pre-commit's environment between sessions (a developer's loop):
the hook repository's commit is deterministic, so an unchanged tree reuses the environment built before.

Scoring uses a tiny random llama and the 4-probe file of tests/helpers.py: rows whose reply is a probe's
compliance opening to that probe's prompt score far above ordinary rows and must be flagged; ordinary rows pass.
The threshold is the baseline's robust median + k·σ with a wide k, so no ordinary row of the random model
crosses it by chance.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import (
    PROBES,
    compliance_row,
    describe,
    make_repo,
    ordinary_rows,
    run_cli,
    save_tiny_model,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
N_BASE = 24  # ordinary rows in each repository's baseline
THRESHOLD = {"method": "sigma", "k": 10.0}
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


def run(args: list[str], cwd: Path, env: dict[str, str], *, timeout: float = 900, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


def out(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"


def precommit(s: Session, cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pre_commit", *args], cwd, env or s.env, timeout=timeout)


def git(s: Session, cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
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
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
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
    pythons = sorted(session.home.glob("repo*/py_env-*/bin/python"))
    assert len(pythons) >= 1, f"no python environment under {session.home}\n{out(p)}"
    built = "Installing environment" in p.stdout + p.stderr
    print(f"\npre-commit environment: {'built' if built else 'reused'} in {elapsed:.0f} s at {pythons[-1].parents[1]}", file=sys.stderr)
    return {"python": pythons[-1], "seconds": elapsed, "built": built}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)


@pytest.fixture(scope="session")
def template(tmp_path_factory, model_dir, session) -> Path:
    """A dataset repository's files (no .git yet): config, probes, N_BASE ordinary rows and their baseline."""
    repo = make_repo(tmp_path_factory.mktemp("template") / "repo", model_dir, ordinary_rows(N_BASE), threshold=THRESHOLD)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADSHIELD_CACHE", session.env["GRADSHIELD_CACHE"])
        mp.setenv("HF_HUB_OFFLINE", "1")
        r = run_cli(repo.root, "-q", "baseline", "create", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    return repo.root


def write_precommit_config(root: Path, s: Session, hook_id: str, **hook_options) -> None:
    hook = {"id": hook_id, "verbose": True, **hook_options}
    cfg = {"repos": [{"repo": str(s.hook_repo), "rev": s.rev, "hooks": [hook]}]}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def dataset_repo(tmp_path: Path, template: Path, s: Session, hook_id: str = "gradshield-lint", *, env=None, hooked_first_commit: bool = False) -> Path:
    """A git repository with the template's files, the hook installed for pre-commit and pre-push, and a first
    commit (with `hooked_first_commit`, made through the hook: every row is in the baseline, so it passes)."""
    root = tmp_path / "dataset"
    shutil.copytree(template, root)
    # The probe set is JSONL too, but not a dataset: leave it out, as a user would. An `exclude:` in the config
    # replaces the manifest's, so it names the baseline again.
    write_precommit_config(root, s, hook_id, exclude=r"^(probes\.jsonl|\.gradshield-baseline\.json)$")
    git(s, root, "init", "-q", "-b", "main")
    p = precommit(s, root, "install", "-t", "pre-commit", "-t", "pre-push", env=env)
    assert p.returncode == 0, out(p)
    git(s, root, "add", "-A")
    if not hooked_first_commit:
        git(s, root, "commit", "-q", "--no-verify", "-m", "dataset and baseline", env=env)
        return root
    p = git(s, root, "commit", "-m", "dataset and baseline", env=env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, out(p)
    # Only the dataset reached the hook (the baseline and the probe set did not), and every row was known.
    assert re.search(r"gradshield-lint.*\.+Passed", text) and "0 rows scored, 0 flagged" in text, text
    return root


def data_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()]


def head(s: Session, root: Path) -> str:
    return git(s, root, "rev-parse", "HEAD").stdout.strip()


# ------------------------------------------------------------------------------------------------ manifest


def test_manifest_validates():
    p = run([sys.executable, "-m", "pre_commit", "validate-manifest", ".pre-commit-hooks.yaml"], ROOT, dict(os.environ))
    assert p.returncode == 0, out(p)
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    assert set(hooks) == {"gradshield-lint", "gradshield-lint-system"}
    for h in hooks.values():
        assert h["entry"] == "gradshield-lint check" and h["require_serial"] is True
        assert h["stages"] == ["pre-commit", "pre-push", "manual"]
        files = re.compile(h["files"])
        for name in ["a.jsonl", "d/b.ndjson", "c.json", "x.csv", "y.tsv", "z/train-00000.parquet"]:
            assert files.search(name), name
        for name in ["README.md", "jsonl.txt", "a.jsonl.bak", ".gradshield.yaml"]:
            assert not files.search(name), name
        assert re.search(h["exclude"], ".gradshield-baseline.json") and re.search(h["exclude"], "sub/.gradshield-baseline.json")
        assert not re.search(h["exclude"], "data/train.jsonl")
    assert hooks["gradshield-lint"]["language"] == "python"
    assert hooks["gradshield-lint-system"]["language"] in ("system", "unsupported")


# ------------------------------------------------------------------------------------------------ python hook


def test_python_hook_environment_has_the_cpu_torch_and_the_package(python_env, session):
    py = python_env["python"]
    p = run([str(py), "-c", "import torch, gradshield_lint, importlib.metadata as m; "
             "print(torch.__version__, torch.version.cuda, m.version('gradshield-lint'))"], session.home, session.env)
    assert p.returncode == 0, out(p)
    version, cuda, pkg = p.stdout.split()
    assert version == f"{TORCH_PIN}+cpu" and cuda == "None" and pkg
    assert (py.parent / "gradshield-lint").is_file()
    listed = run([str(py), "-m", "pip", "list", "--format=json"], session.home, session.env)
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert not {n for n in names if n.startswith(("nvidia-", "triton"))}, sorted(names)


def test_commit_of_ordinary_rows_passes(python_env, session, template, tmp_path):
    root = dataset_repo(tmp_path, template, session, hooked_first_commit=True)
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE + 6))
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "six more rows", check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, out(p)
    assert re.search(r"gradshield-lint.*\.+Passed", text), text
    assert "6 rows scored, 0 flagged" in text, text


def test_commit_adding_compliance_rows_fails_with_the_finding(python_env, session, template, tmp_path):
    root = dataset_repo(tmp_path, template, session)
    before = head(session, root)
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE + 1) + [compliance_row(0), compliance_row(2)])
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "harmful rows", check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0, out(p)
    assert re.search(r"gradshield-lint.*\.+Failed", text), text
    assert "3 rows scored, 2 flagged" in text, text
    found = {(f, int(n)) for f, n in FINDING.findall(text)}
    assert found == {("data/train.jsonl", N_BASE + 2), ("data/train.jsonl", N_BASE + 3)}, text
    assert PROBES[0]["compliance"][:30] in text and PROBES[2]["compliance"][:30] in text
    assert head(session, root) == before  # nothing was committed


def test_commit_that_only_reorders_rows_passes(python_env, session, template, tmp_path):
    root = dataset_repo(tmp_path, template, session)
    rows = data_rows(root)
    random.Random(7).shuffle(rows)
    assert rows != data_rows(root)
    # Reordered, and a third of them moved to a new file: same rows, same identities.
    write_jsonl(root / "data" / "train.jsonl", rows[8:])
    write_jsonl(root / "data" / "moved.jsonl", rows[:8])
    git(session, root, "add", "-A")
    p = git(session, root, "commit", "-m", "reorder", check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, out(p)
    assert re.search(r"gradshield-lint.*\.+Passed", text) and "0 rows scored, 0 flagged" in text, text


def test_pre_push_scores_only_rows_new_since_the_pushed_ref(python_env, session, template, tmp_path):
    root = dataset_repo(tmp_path, template, session)
    remote = tmp_path / "remote.git"
    git(session, tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(session, root, "remote", "add", "origin", str(remote))
    p = git(session, root, "push", "-q", "-u", "origin", "main", check=False)  # a new branch: every file, all known
    assert p.returncode == 0, out(p)

    # A compliance row that reached the remote before (pushed without the hook): already pushed, so not new.
    pushed = ordinary_rows(N_BASE) + [compliance_row(1)]
    write_jsonl(root / "data" / "train.jsonl", pushed)
    git(session, root, "commit", "-q", "--no-verify", "-am", "pushed earlier")
    git(session, root, "push", "-q", "--no-verify", "origin", "main")
    pushed_line = N_BASE + 1

    # The next push adds three ordinary rows: only they are scored (PRE_COMMIT_FROM_REF), and it passes.
    write_jsonl(root / "data" / "train.jsonl", pushed + ordinary_rows(3, start=100))
    git(session, root, "commit", "-q", "--no-verify", "-am", "three ordinary rows")
    p = git(session, root, "push", "origin", "main", check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, out(p)
    assert "3 rows scored, 0 flagged" in text, text

    # The same file outside pre-push (no from-ref): the earlier row is new to the baseline and is flagged.
    p = precommit(session, root, "run", "gradshield-lint", "--files", "data/train.jsonl")
    text = p.stdout + p.stderr
    assert p.returncode == 1 and ("data/train.jsonl", str(pushed_line)) in FINDING.findall(text), out(p)

    # A push that adds a compliance row fails, naming that row only.
    write_jsonl(root / "data" / "train.jsonl", pushed + ordinary_rows(3, start=100) + [compliance_row(3)])
    git(session, root, "commit", "-q", "--no-verify", "-am", "a harmful row")
    pushed_head = git(session, root, "ls-remote", "origin", "refs/heads/main").stdout.split()[0]
    p = git(session, root, "push", "origin", "main", check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0, out(p)
    assert "1 rows scored, 1 flagged" in text, text
    assert {(f, int(n)) for f, n in FINDING.findall(text)} == {("data/train.jsonl", N_BASE + 5)}, text
    assert git(session, root, "ls-remote", "origin", "refs/heads/main").stdout.split()[0] == pushed_head


def test_split_invocations_give_the_verdict_of_one(python_env, session, template, tmp_path, monkeypatch):
    """pre-commit splits a long file list into several invocations (xargs, 128 KiB of arguments at most on Linux),
    run one after the other (require_serial). Their verdict and findings equal one invocation's."""
    root = dataset_repo(tmp_path, template, session)
    shard_dir = Path("data") / ("shards-" + "x" * 190)
    n = 800  # ~225 bytes a path: about 180 KiB of arguments, so at least two invocations
    base = ordinary_rows(N_BASE)
    harmful = {5: compliance_row(0), n - 5: compliance_row(3)}  # one in the first and one in the last invocation
    fresh = {n // 2: ordinary_rows(1, start=500)[0], 17: ordinary_rows(1, start=501)[0]}
    names = []
    for i in range(n):
        rel = shard_dir / f"part-{i:04d}.jsonl"
        rows = [base[i % N_BASE]] + ([harmful[i]] if i in harmful else []) + ([fresh[i]] if i in fresh else [])
        write_jsonl(root / rel, rows)
        names.append(rel.as_posix())
    git(session, root, "add", "-A")

    p = precommit(session, root, "run", "gradshield-lint", "--files", *names)
    text = p.stdout + p.stderr
    invocations = len(re.findall(r"\d+ rows scored, \d+ flagged", text))
    assert invocations >= 2, f"pre-commit did not split the file list\n{text[-3000:]}"
    split_findings = {(f, int(ln)) for f, ln in FINDING.findall(text)}

    # One invocation over all files, in process.
    monkeypatch.setenv("GRADSHIELD_CACHE", session.env["GRADSHIELD_CACHE"])
    monkeypatch.delenv("PRE_COMMIT_FROM_REF", raising=False)
    one = run_cli(root, "-q", "check", "-f", "json", *names)
    assert one.exit_code in (0, 1), describe(one)
    doc = json.loads(one.stdout)
    one_findings = {(f["file"], f["line"]) for f in doc["findings"]}

    assert one.exit_code == 1 and p.returncode == 1, out(p)
    assert split_findings == one_findings == {((shard_dir / f"part-{i:04d}.jsonl").as_posix(), 2) for i in harmful}
    assert doc["rows_scored"] == len(harmful) + len(fresh)
    scored = sum(int(m) for m in re.findall(r"(\d+) rows scored", text))
    assert scored == doc["rows_scored"], text[-3000:]


# ------------------------------------------------------------------------------------------------ system hook


def test_system_hook_uses_the_gradshield_lint_on_path(session, template, tmp_path):
    """`gradshield-lint-system` (language system/unsupported): no environment is built; the `gradshield-lint` on
    PATH (here this venv's, as a user's own CUDA environment would be) runs the check."""
    env = session.with_venv_on_path()
    root = dataset_repo(tmp_path, template, session, "gradshield-lint-system", env=env)
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE + 2) + [compliance_row(1)])
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "harmful row", env=env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "3 rows scored, 1 flagged" in text, out(p)
    assert {(f, int(n)) for f, n in FINDING.findall(text)} == {("data/train.jsonl", N_BASE + 3)}, text

    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE + 2))
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "two ordinary rows", env=env, check=False)
    assert p.returncode == 0 and "2 rows scored, 0 flagged" in p.stdout + p.stderr, out(p)

    # Without gradshield-lint on PATH the hook fails loudly instead of passing silently.
    write_jsonl(root / "data" / "train.jsonl", ordinary_rows(N_BASE + 3))
    git(session, root, "add", "data/train.jsonl")
    p = git(session, root, "commit", "-m", "one more", check=False)
    assert p.returncode != 0, out(p)
