"""The gate through the GitHub Action's real steps (action/*.sh running the CLI): a pull request cannot relax its
own gate, and what it changes is reported (issue 12, "The gate" items 1 and 6); a symlinked dataset file, a change
inside a save_to_disk directory and a push to a depth-1 checkout are checked, not passed (issue 33 items 1, 3, 4)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import cli_fixtures, compliance_row, ordinary_rows, write_jsonl
from test_action import (  # noqa: F401  (fixtures: base_env, model_dir, origin)
    base_env,
    build_origin,
    commands,
    git,
    lines_of,
    model_dir,
    origin,
    pull_request,
    run_action,
)

env = cli_fixtures().env  # one ∇H cache per module, offline, no pre-commit variables from outside


def test_the_action_flags_a_harmful_row_whose_pull_request_raises_the_threshold_and_reports_the_tampering(
    tmp_path,
    origin,  # noqa: F811
    base_env,  # noqa: F811
):
    """The issue's reproduction through the Action's real steps: a pull request adds a harmful row and edits
    .gradshield-baseline.json to `"value": 1e30`. The row is still flagged (findings=1, step fails), and the edit is
    a `::warning` at the baseline's threshold line, a GS002 SARIF result, the `gate-changes` output and a caution in
    the job summary."""

    def change(w: Path) -> None:
        write_jsonl(w / "data" / "train.jsonl", lines_of(w / "data" / "train.jsonl") + [compliance_row(1)])
        doc = json.loads((w / ".gradshield-baseline.json").read_text(encoding="utf-8"))
        doc["threshold"]["value"] = 1e30
        (w / ".gradshield-baseline.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    ws, event = pull_request(tmp_path, origin, base_env, "tamper", change, shallow=True)
    run = run_action(ws, tmp_path, {"sarif-file": "gs.sarif"}, event, base_ref="main", env=base_env)
    check = run.steps[-1]
    assert check.id == "check" and check.returncode == 1, run.describe()
    out = run.outputs
    assert out["findings"] == "1" and out["gate-changes"] == "1", out
    report = json.loads(Path(out["report-file"]).read_text(encoding="utf-8"))
    n = len(lines_of(ws / "data" / "train.jsonl"))
    assert [(f["file"], f["line"]) for f in report["findings"]] == [("data/train.jsonl", n)]
    assert float(out["threshold"]) < 1e29 and report["gate"]["baseline"] == "origin/main:.gradshield-baseline.json"
    active = commands(check.stdout)
    warnings = [c for c in active if c.startswith("::warning ")]
    assert len(warnings) == 1 and warnings[0].startswith("::warning file=.gradshield-baseline.json,line="), active
    assert "raises the threshold" in warnings[0] and "1e+30" in warnings[0]
    assert any(c.startswith("::error file=data/train.jsonl,") for c in active), active
    sarif = json.loads((ws / "gs.sarif").read_text(encoding="utf-8"))
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"GS001", "GS002"}
    assert "changes its own gate" in check.summary and "raises the threshold" in check.summary


@pytest.mark.parametrize("fail", ["false", "true"])
def test_the_action_reports_a_pull_request_that_only_edits_the_baseline(tmp_path, origin, base_env, fail):  # noqa: F811
    """No dataset file changed, only the threshold: today's "no dataset files changed" pass hid it. The change is
    reported; with fail-on-gate-change it fails the step."""

    def change(w: Path) -> None:
        doc = json.loads((w / ".gradshield-baseline.json").read_text(encoding="utf-8"))
        doc["threshold"]["value"] = 1e30
        (w / ".gradshield-baseline.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    ws, event = pull_request(tmp_path, origin, base_env, f"threshold-{fail}", change, shallow=True)
    run = run_action(ws, tmp_path, {"fail-on-gate-change": fail}, event, base_ref="main", env=base_env)
    assert run.steps[0].outputs["count"] == "0", run.describe()
    check = run.steps[-1]
    assert check.returncode == (1 if fail == "true" else 0), run.describe()
    assert run.outputs["gate-changes"] == "1" and run.outputs["findings"] == "0", run.outputs
    assert Path(run.outputs["sarif-file"]).is_file()
    warnings = [c for c in commands(check.stdout) if c.startswith("::warning file=.gradshield-baseline.json,")]
    assert len(warnings) == 1, check.stdout
    assert "No dataset files changed" in check.summary and "raises the threshold" in check.summary


# ------------------------------------------------------------------------------------------------ item 6


def test_the_action_refuses_pull_request_target(tmp_path, origin, base_env):  # noqa: F811
    """Under pull_request_target actions/checkout checks out the base branch, so there was nothing to diff and the
    step passed. It must refuse, saying why."""
    ws, event = pull_request(
        tmp_path,
        origin,
        base_env,
        "target",
        lambda w: write_jsonl(w / "data" / "train.jsonl", lines_of(w / "data" / "train.jsonl") + [compliance_row(2)]),
        shallow=False,
    )
    git(ws, "fetch", "-q", "origin", "main:main", env=base_env)
    git(ws, "checkout", "-q", "main", env=base_env)  # what actions/checkout checks out for pull_request_target
    run = run_action(ws, tmp_path, {}, event, base_ref="main", env=base_env, event_name="pull_request_target")
    files = run.steps[0]
    assert files.id == "files" and files.returncode == 2 and len(run.steps) == 1, run.describe()
    (err,) = [c for c in commands(files.stdout) if c.startswith("::error")]
    assert "pull_request_target" in err and "secrets" in err and "pull_request instead" in err
    assert "no dataset files changed" not in run.summary


# ------------------------------------------------------------------------------------------------ issue 33


def listed(run) -> list[str]:
    files = run.steps[0]
    assert files.id == "files", run.describe()
    return [x.decode() for x in Path(files.outputs["list"]).read_bytes().split(b"\0")[:-1]]


def inert(stdout: str) -> str:
    """What a step printed between `::stop-commands::` and its token: messages shown, never obeyed."""
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("::"))


def raise_threshold(w: Path, value: float = 1e30) -> None:
    doc = json.loads((w / ".gradshield-baseline.json").read_text(encoding="utf-8"))
    doc["threshold"]["value"] = value
    (w / ".gradshield-baseline.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


# item 1: a dataset file turned into a symlink (git: a type change, T)


@pytest.mark.parametrize("dangling", [False, True], ids=["to-rows", "dangling"])
def test_the_action_refuses_a_dataset_file_turned_into_a_symlink(tmp_path, origin, base_env, dangling):  # noqa: F811
    """The pull request replaces data/train.jsonl with a link to a file outside the `files` globs holding the old
    rows and a harmful one (or to nothing). `--diff-filter=AM` left the type change out: nothing listed, exit 0. The
    link is listed and the check refuses it (exit 2, naming it)."""

    def change(w: Path) -> None:
        data = w / "data" / "train.jsonl"
        if not dangling:
            write_jsonl(w / "notes" / "rows.txt", lines_of(data) + [compliance_row(1)])
        data.unlink()
        data.symlink_to(Path("..") / "notes" / "rows.txt")

    ws, event = pull_request(tmp_path, origin, base_env, f"link-{dangling}", change, shallow=True)
    assert (ws / "data" / "train.jsonl").is_symlink()
    run = run_action(ws, tmp_path, {}, event, base_ref="main", env=base_env)
    assert listed(run) == ["data/train.jsonl"], run.describe()
    check = run.steps[-1]
    assert check.id == "check" and check.returncode == 2, run.describe()
    assert "data/train.jsonl: is a symbolic link" in inert(check.stdout), check.stdout
    assert any(
        c.startswith("::error title=gradshield-lint::the check could not run (exit 2)") for c in commands(check.stdout)
    )


# item 3: a change inside a save_to_disk directory


def _save_dataset(folder: Path, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))


SAVED_ROWS = ordinary_rows(6, start=50)


@pytest.fixture(scope="module")
def saved_origin(tmp_path_factory, model_dir, base_env) -> Path:  # noqa: F811
    """The origin with a save_to_disk directory `data/ds` (6 ordinary rows) beside data/train.jsonl, both in the
    baseline."""

    def extra(work: Path) -> list[str]:
        _save_dataset(work / "data" / "ds", SAVED_ROWS)
        return ["data/ds"]

    return build_origin(tmp_path_factory.mktemp("saved-origin"), model_dir, base_env, extra)


@pytest.mark.parametrize("changed", ["arrow-only", "every-file"])
def test_the_action_checks_a_save_to_disk_directory_once_when_a_file_inside_it_changes(
    tmp_path,
    saved_origin,
    base_env,  # noqa: F811
    changed,
):
    """The pull request rewrites data/ds with a harmful 7th row. When only the Arrow file changes (state.json and
    dataset_info.json kept), nothing was listed and the step passed; when the JSON files change too, they were
    read as JSON datasets (exit 2, "unknown row shape"). Each change stands for the directory, listed once, and
    the row is flagged at data/ds:7."""

    def change(w: Path) -> None:
        ds = w / "data" / "ds"
        keep = {n: (ds / n).read_bytes() for n in ("state.json", "dataset_info.json")}
        shutil.rmtree(ds)
        _save_dataset(ds, SAVED_ROWS + [compliance_row(2)])
        if changed == "arrow-only":
            for n, data in keep.items():
                (ds / n).write_bytes(data)
        else:  # state.json has a new fingerprint; the schema is the same, so the description changes the info
            info = json.loads((ds / "dataset_info.json").read_text(encoding="utf-8"))
            (ds / "dataset_info.json").write_text(json.dumps({**info, "description": "seven rows"}), encoding="utf-8")

    ws, event = pull_request(tmp_path, saved_origin, base_env, f"saved-{changed}", change, shallow=True)
    run = run_action(ws, tmp_path, {}, event, base_ref="main", env=base_env)
    assert listed(run) == ["data/ds"] and run.steps[0].outputs["count"] == "1", run.describe()
    names = set(git(ws, "diff", "--name-only", "origin/main...HEAD", env=base_env).split())
    json_files = {"data/ds/state.json", "data/ds/dataset_info.json"}
    assert "data/ds/data-00000-of-00001.arrow" in names, names
    assert names & json_files == (json_files if changed == "every-file" else set()), names
    check = run.steps[-1]
    assert check.returncode == 1, run.describe()
    report = json.loads(Path(run.outputs["report-file"]).read_text(encoding="utf-8"))
    assert report["rows_scored"] == 1 and [(f["file"], f["line"]) for f in report["findings"]] == [("data/ds", 7)]


# item 4: a push to actions/checkout's default depth-1 checkout


def push(tmp_path: Path, remote: Path, env: dict[str, str], branch: str, change, *, before: str = "pushed"):
    """Push `change(worktree)` as one commit on branch `branch` of `remote` and check the branch out at depth 1 (as
    actions/checkout does), with the push event. `before`: "pushed" (the branch was pushed at main's tip first),
    "created" (this push creates the branch: all zeros) or "gone" (a commit `remote` never had, as after a force push
    whose old commit was collected)."""
    work = tmp_path / "author"
    git(tmp_path, "clone", "-q", str(remote), str(work), env=env)
    git(work, "checkout", "-q", "-b", branch, env=env)
    if before == "pushed":
        git(work, "push", "-q", "origin", branch, env=env)
        before_sha = git(work, "rev-parse", "HEAD", env=env).strip()
    elif before == "gone":
        git(work, "commit", "-q", "--allow-empty", "-m", "never pushed", env=env)
        before_sha = git(work, "rev-parse", "HEAD", env=env).strip()
        git(work, "reset", "-q", "--hard", "HEAD~1", env=env)
    else:
        before_sha = "0" * 40
    change(work)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-q", "-m", "pushed rows", env=env)
    git(work, "push", "-q", "origin", branch, env=env)
    ws = tmp_path / "workspace"
    git(
        tmp_path,
        "clone",
        "-q",
        "--depth",
        "1",
        "--single-branch",
        "--branch",
        branch,
        f"file://{remote}",
        str(ws),
        env=env,
    )
    event = {
        "ref": f"refs/heads/{branch}",
        "before": before_sha,
        "after": git(work, "rev-parse", "HEAD", env=env).strip(),
        "created": before == "created",
        "deleted": False,
        "forced": False,
        "repository": {"full_name": "example/dataset", "default_branch": "main"},
    }
    return ws, event, before_sha


def harmful_and_raised(w: Path) -> None:
    write_jsonl(w / "data" / "train.jsonl", lines_of(w / "data" / "train.jsonl") + [compliance_row(3)])
    raise_threshold(w)


@pytest.mark.parametrize("before", ["pushed", "created"])
def test_a_push_to_a_depth_1_checkout_is_judged_by_the_gate_before_it(tmp_path, origin, base_env, before):  # noqa: F811
    """A push adds a harmful row and raises the baseline's threshold to 1e30. At depth 1 `before` is not in the
    checkout, and the script checked every file without --diff-base: the pushed baseline passed the row. `before`
    is fetched (a real file:// fetch of one commit) and the row is flagged against it; a push that creates a branch
    is judged against the default branch, as a pull request would be."""
    ws, event, before_sha = push(tmp_path, origin, base_env, f"push-{before}", harmful_and_raised, before=before)
    assert git(ws, "rev-parse", "--is-shallow-repository", env=base_env).strip() == "true"
    if before == "pushed":
        p = subprocess.run(
            ["git", "cat-file", "-e", f"{before_sha}^{{commit}}"], cwd=ws, env=base_env, capture_output=True
        )
        assert p.returncode != 0, "the depth-1 checkout already has `before`"
    run = run_action(ws, tmp_path, {}, event, base_ref="", env=base_env, event_name="push")
    files = run.steps[0]
    assert files.returncode == 0 and listed(run) == ["data/train.jsonl"], run.describe()
    assert files.outputs["diff-base"] == (before_sha if before == "pushed" else "origin/main")
    check = run.steps[-1]
    assert check.id == "check" and check.returncode == 1, run.describe()
    out = run.outputs
    assert out["findings"] == "1" and out["gate-changes"] == "1" and float(out["threshold"]) < 1e29, out


def test_a_push_whose_before_commit_cannot_be_fetched_fails_saying_why(tmp_path, origin, base_env):  # noqa: F811
    """`before` is gone from origin (a force push, its old commit collected): no fallback to an ungated check of
    every file under the pushed baseline (which passed the harmful row); the step fails (exit 2) saying why."""
    ws, event, before_sha = push(tmp_path, origin, base_env, "push-gone", harmful_and_raised, before="gone")
    run = run_action(ws, tmp_path, {}, event, base_ref="", env=base_env, event_name="push")
    files = run.steps[0]
    assert files.id == "files" and files.returncode == 2 and len(run.steps) == 1, run.describe()
    (err,) = [c for c in commands(files.stdout) if c.startswith("::error")]
    assert f"cannot fetch the push's before commit {before_sha}" in err and "own baseline" in err, err


def test_the_push_that_creates_the_default_branch_is_checked_under_its_own_gate_with_a_warning(
    tmp_path,
    origin,  # noqa: F811
    base_env,  # noqa: F811
):
    """The repository's first push (`before` all zeros, the default branch): there is nothing earlier to judge it
    against, so every dataset file is checked under the pushed baseline (all rows known: exit 0), and a warning
    says so."""
    ws = tmp_path / "workspace"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "main", f"file://{origin}", str(ws), env=base_env)
    event = {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": git(ws, "rev-parse", "HEAD", env=base_env).strip(),
        "created": True,
        "repository": {"full_name": "example/dataset", "default_branch": "main"},
    }
    run = run_action(ws, tmp_path, {"paths": "data/**"}, event, base_ref="", env=base_env, event_name="push")
    assert run.failed is None, run.describe()
    files = run.steps[0]
    assert files.outputs["diff-base"] == "" and listed(run) == ["data/train.jsonl"], run.describe()
    (warning,) = [c for c in commands(files.stdout) if c.startswith("::warning")]
    assert "creates the default branch" in warning and "own baseline" in warning
    assert run.outputs["findings"] == "0"
