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
import sys
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
from precommit_env import (
    FINDING,
    ROOT,
    TORCH_PIN,
    Session,
    git,
    out,
    precommit,
    run,
    write_precommit_config,
)

N_BASE = 24  # ordinary rows in each repository's baseline
THRESHOLD = {"method": "sigma", "k": 10.0}

# ------------------------------------------------------------------------------------------------ environment
# The fixtures `session` and `python_env` live in precommit_env.py (registered in conftest.py: one environment
# build per test run, shared with test_precommit_fresh.py).


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)


@pytest.fixture(scope="session")
def template(tmp_path_factory, model_dir, session) -> Path:
    """A dataset repository's files (no .git yet): config, probes, N_BASE ordinary rows and their baseline."""
    repo = make_repo(
        tmp_path_factory.mktemp("template") / "repo", model_dir, ordinary_rows(N_BASE), threshold=THRESHOLD
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADSHIELD_CACHE", session.env["GRADSHIELD_CACHE"])
        mp.setenv("HF_HUB_OFFLINE", "1")
        r = run_cli(repo.root, "-q", "baseline", "create", "data/train.jsonl")
    assert r.exit_code == 0, describe(r)
    return repo.root


def dataset_repo(
    tmp_path: Path,
    template: Path,
    s: Session,
    hook_id: str = "gradshield-lint",
    *,
    env=None,
    hooked_first_commit: bool = False,
) -> Path:
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
        # a save_to_disk directory's data (it stands for the directory); links reach the check, which refuses them
        assert files.search("ds/data-00000-of-00001.arrow")
        assert h["types"] == [] and h["types_or"] == ["file", "symlink"]
        for name in ["README.md", "jsonl.txt", "a.jsonl.bak", ".gradshield.yaml"]:
            assert not files.search(name), name
        assert re.search(h["exclude"], ".gradshield-baseline.json") and re.search(
            h["exclude"], "sub/.gradshield-baseline.json"
        )
        assert not re.search(h["exclude"], "data/train.jsonl")
    assert hooks["gradshield-lint"]["language"] == "python"
    assert hooks["gradshield-lint-system"]["language"] in ("system", "unsupported")


# ------------------------------------------------------------------------------------------------ python hook


def test_python_hook_environment_has_the_cpu_torch_and_the_package(python_env, session):
    py = python_env["python"]
    p = run(
        [
            str(py),
            "-c",
            "import torch, gradshield_lint, importlib.metadata as m; "
            "print(torch.__version__, torch.version.cuda, m.version('gradshield-lint'))",
        ],
        session.home,
        session.env,
    )
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
    found = {(f, int(n)) for f, n in FINDING.findall(text)}
    harmful = {("data/train.jsonl", N_BASE + 2), ("data/train.jsonl", N_BASE + 3)}
    # The pull-request verdict names both; Benjamini-Hochberg at 10 % may add the ordinary row when it scores
    # above every accepted one (chance explains it: the report gives its p-value).
    assert harmful <= found <= harmful | {("data/train.jsonl", N_BASE + 1)}, text
    assert "FAIL: the 3 added rows score higher than the 24 accepted rows" in text, text
    assert f"3 rows scored, {len(found)} flagged by the verdict" in text, text
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
    assert "1 row scored, 1 flagged" in text, text
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
    invocations = len(re.findall(r"\d+ rows? scored, \d+ flagged", text))
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
    scored = sum(int(m) for m in re.findall(r"(\d+) rows? scored", text))
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


# ------------------------------------------------------------------------------------------------ issue 33
# Through the system hook (the manifest's `files`/`types` are the same for both hooks, test_manifest_validates):
# what reaches the check, and what the check makes of it.


def test_hook_refuses_a_dataset_file_turned_into_a_symlink(session, template, tmp_path):
    """identify tags a link `symlink`, never `file`, so `types: [file]` skipped the hook ("no files to check") and a
    dataset file turned into a link to a file holding a harmful row was committed. It reaches the check now, which
    refuses it (exit 2, naming it), and nothing is committed."""
    env = session.with_venv_on_path()
    root = dataset_repo(tmp_path, template, session, "gradshield-lint-system", env=env)
    before = head(session, root)
    write_jsonl(root / "notes" / "rows.txt", data_rows(root) + [compliance_row(1)])
    (root / "data" / "train.jsonl").unlink()
    (root / "data" / "train.jsonl").symlink_to(Path("..") / "notes" / "rows.txt")
    git(session, root, "add", "-A")
    p = git(session, root, "commit", "-m", "a link", env=env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and re.search(r"gradshield-lint.*\.+Failed", text), out(p)
    assert "data/train.jsonl: is a symbolic link" in text, text
    assert head(session, root) == before


def _save_dataset(folder: Path, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))


@pytest.mark.parametrize("changed", ["arrow-only", "every-file"])
def test_hook_checks_a_save_to_disk_directory_once_when_a_file_inside_it_changes(
    session, template, tmp_path, monkeypatch, changed
):
    """A commit rewrites data/ds (in the baseline, 6 rows) with a harmful 7th row. When only its Arrow file changes,
    the `files:` pattern passed nothing and the commit went through. The Arrow file (and state.json and
    dataset_info.json when they change too) stand for the directory, checked once: 1 row scored, flagged at
    data/ds:7."""
    env = session.with_venv_on_path()
    root = dataset_repo(tmp_path, template, session, "gradshield-lint-system", env=env)
    ds = root / "data" / "ds"
    rows = ordinary_rows(6, start=50)
    _save_dataset(ds, rows)
    monkeypatch.setenv("GRADSHIELD_CACHE", session.env["GRADSHIELD_CACHE"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run_cli(root, "-q", "baseline", "update", "data/train.jsonl", "data/ds")
    assert r.exit_code == 0, describe(r)
    git(session, root, "add", "-A")
    git(session, root, "commit", "-q", "--no-verify", "-m", "a saved dataset")
    before = head(session, root)

    keep = {n: (ds / n).read_bytes() for n in ("state.json", "dataset_info.json")}
    shutil.rmtree(ds)
    _save_dataset(ds, rows + [compliance_row(0)])
    if changed == "arrow-only":
        for n, data in keep.items():
            (ds / n).write_bytes(data)
    else:
        info = json.loads((ds / "dataset_info.json").read_text(encoding="utf-8"))
        (ds / "dataset_info.json").write_text(json.dumps({**info, "description": "seven rows"}), encoding="utf-8")
    git(session, root, "add", "-A")
    staged = set(git(session, root, "diff", "--staged", "--name-only").stdout.split())
    json_files = {"data/ds/state.json", "data/ds/dataset_info.json"}
    assert staged & json_files == (json_files if changed == "every-file" else set()), staged
    p = git(session, root, "commit", "-m", "a harmful row", env=env, check=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0 and "1 row scored, 1 flagged" in text, out(p)
    assert {(f, int(n)) for f, n in FINDING.findall(text)} == {("data/ds", 7)}, text
    assert head(session, root) == before
