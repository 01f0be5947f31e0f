"""The gate cannot be switched off by the pull request it judges (issue 12, "The gate" items 1, 2 and 6).

Every test uses real git repositories (`git init`, commits, branches; the Action's tests a bare `origin` and a
shallow clone, as actions/checkout makes), the real CLI (click's CliRunner, in process) or the Action's real
scripts (tests/test_action.py's harness runs action.yml's `run:` steps with bash), and a tiny random llama: a row
whose reply is a probe's compliance opening to that probe's prompt must be flagged (tests/helpers.py).

- item 1: `check --diff-base REF` reads the baseline, configuration and probe set at REF through git, and reports
  what the work tree changes about them in every output (text, JSON `gate`, SARIF GS002, `::warning`, summary);
- item 2: `baseline create` with no rows is exit 2 and writes nothing; a baseline whose threshold or a score is not
  a finite number (NaN, Infinity, 1e400, a null threshold) is unreadable (exit 2, naming the file);
- item 6: the Action refuses `pull_request_target` instead of passing with "no dataset files changed".
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import (
    PROBES,
    Repo,
    assert_user_error,
    cli_fixtures,
    compliance_row,
    describe,
    git_cmd,
    make_legacy_baseline,
    make_repo,
    ordinary_row,
    ordinary_rows,
    snapshot,
    tree,
    write_jsonl,
)
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "gradshield_lint" / "schemas"


# No template: based_repo makes git repositories of its own.
env, model_dir, *_ = cli_fixtures()


def based_repo(root: Path, model_dir: Path, *, baseline: bool = True) -> Repo:
    """`main`: 24 ordinary rows, configuration, probes and (with `baseline`) a baseline; checked out: branch `pr`."""
    repo = make_repo(root, model_dir, git=True)
    if baseline:
        r = repo.run("-q", "baseline", "create")
        assert r.exit_code == 0, describe(r)
    git_cmd(repo.root, "add", "-A")
    git_cmd(repo.root, "commit", "-q", "-m", "base")
    git_cmd(repo.root, "checkout", "-q", "-b", "pr")
    return repo


def add_harmful_row(repo: Repo) -> int:
    """Append a compliance row to data/train.jsonl; its line."""
    rows = [json.loads(x) for x in repo.data.read_text(encoding="utf-8").splitlines()]
    write_jsonl(repo.data, rows + [compliance_row(0)])
    return len(rows) + 1


def edit_baseline(repo: Repo, change) -> None:
    doc = json.loads(repo.baseline.read_text(encoding="utf-8"))
    change(doc)
    repo.baseline.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def report(r) -> dict:
    doc = json.loads(r.stdout)
    Draft202012Validator(json.loads((SCHEMAS / "report.schema.json").read_text(encoding="utf-8"))).validate(doc)
    return doc


def kinds(doc: dict, severity: str | None = None) -> set[str]:
    return {c["kind"] for c in doc["gate"]["changes"] if severity is None or c["severity"] == severity}


# ------------------------------------------------------------------------------------------------ item 1


def test_a_pull_request_that_raises_its_threshold_is_judged_by_the_base_one_and_reported_everywhere(
    tmp_path, model_dir
):
    """The issue's bypass: add a harmful row and set the baseline's threshold to 1e30. The row is flagged against
    main's threshold, and the edit is reported in the text, JSON, SARIF, GitHub and summary outputs."""
    repo = based_repo(tmp_path / "repo", model_dir)
    base_threshold = json.loads(repo.baseline.read_text(encoding="utf-8"))["threshold"]["value"]
    line = add_harmful_row(repo)
    edit_baseline(repo, lambda d: d["threshold"].__setitem__("value", 1e30))
    out = tmp_path / "out"
    out.mkdir()
    r = repo.run(
        "check",
        "--diff-base",
        "main",
        "-f",
        "json",
        "--sarif",
        str(out / "r.sarif"),
        "--summary",
        str(out / "summary.md"),
    )
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert {(f["file"], f["line"]) for f in doc["findings"]} == {("data/train.jsonl", line)}
    assert doc["threshold"] == pytest.approx(base_threshold)
    gate = doc["gate"]
    assert gate["revision"] == "main" and gate["baseline"] == "main:.gradshield-baseline.json"
    assert gate["config"] == "main:.gradshield.yaml" and gate["warnings"] == 1
    (change,) = [c for c in gate["changes"] if c["kind"] == "threshold"]
    assert change["severity"] == "warning" and change["file"] == ".gradshield-baseline.json"
    assert "raises the threshold" in change["message"] and "1e+30" in change["message"]
    assert '"value"' in repo.baseline.read_text(encoding="utf-8").splitlines()[change["line"] - 1]

    sarif = json.loads((out / "r.sarif").read_text(encoding="utf-8"))
    run = sarif["runs"][0]
    assert [x["id"] for x in run["tool"]["driver"]["rules"]] == ["GS001", "GS002"]
    gs002 = [x for x in run["results"] if x["ruleId"] == "GS002"]
    assert len(gs002) == 1 and gs002[0]["level"] == "warning" and gs002[0]["ruleIndex"] == 1
    loc = gs002[0]["locations"][0]["physicalLocation"]
    assert (
        loc["artifactLocation"]["uri"] == ".gradshield-baseline.json" and loc["region"]["startLine"] == change["line"]
    )
    assert run["properties"]["baseRevision"] == "main"
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "changes its own gate" in summary and "raises the threshold" in summary and "[!CAUTION]" in summary

    r = repo.run("check", "--diff-base", "main", "-f", "github")
    assert r.exit_code == 1, describe(r)
    warnings = [x for x in r.stdout.splitlines() if x.startswith("::warning ")]
    assert len(warnings) == 1, r.stdout
    assert warnings[0].startswith(f"::warning file=.gradshield-baseline.json,line={change['line']},title=GS002")
    assert any(x.startswith("::error file=data/train.jsonl,line=") for x in r.stdout.splitlines())

    r = repo.run("check", "--diff-base", "main")
    assert r.exit_code == 1, describe(r)
    assert "changes its own gate" in r.stdout and "raises the threshold" in r.stdout
    assert "Judged against the baseline main:.gradshield-baseline.json" in r.stdout


def test_rows_a_pull_request_accepts_itself_are_still_flagged(tmp_path, model_dir):
    repo = based_repo(tmp_path / "repo", model_dir)
    line = add_harmful_row(repo)
    r = repo.run("check", "-f", "json")  # the work tree's own check flags it: accept it there, in the PR
    assert r.exit_code == 1, describe(r)
    row_id = json.loads(r.stdout)["findings"][0]["id"]
    assert repo.run("accept", row_id, "--reason", "trust me").exit_code == 0
    assert repo.run("check").exit_code == 0  # the pull request's baseline vouches for its own row ...
    r = repo.run("check", "--diff-base", "main", "-f", "json")
    assert r.exit_code == 1, describe(r)  # ... the base revision's does not
    doc = report(r)
    assert [(f["line"], f["accepted"]) for f in doc["findings"]] == [(line, False)]
    (change,) = [c for c in doc["gate"]["changes"] if c["kind"] == "accepted"]
    assert change["severity"] == "warning" and row_id[:12] in change["message"]


def test_upgrading_an_old_baselines_ids_changes_none_of_its_rows(tmp_path, model_dir):
    """main holds a baseline from before issue 33 (16-digit ids); the pull request runs `baseline update`, which
    rewrites every id as the full one: the gate sees the same rows (no scores added or dropped, nothing accepted),
    and the rows are judged against main's old baseline as known."""
    repo = make_repo(tmp_path / "repo", model_dir, git=True)
    assert repo.run("-q", "baseline", "create").exit_code == 0
    make_legacy_baseline(repo.baseline)
    git_cmd(repo.root, "add", "-A")
    git_cmd(repo.root, "commit", "-q", "-m", "base")
    git_cmd(repo.root, "checkout", "-q", "-b", "pr")
    r = repo.run("baseline", "update")
    assert r.exit_code == 0, describe(r)
    assert all(len(k) == 64 for k in json.loads(repo.baseline.read_text())["scores"])
    r = repo.run("check", "--diff-base", "main", "-f", "json")
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert [c["kind"] for c in doc["gate"]["changes"]] == ["baseline"], doc["gate"]["changes"]
    assert doc["rows_scored"] == 0


def test_the_base_configuration_and_probe_set_are_used_not_the_pull_requests(tmp_path, model_dir):
    """A pull request points `baseline:` at a file of its own with a huge threshold and rewrites the probe set;
    neither is obeyed (a new probe set would otherwise even refuse the base baseline's fingerprint)."""
    repo = based_repo(tmp_path / "repo", model_dir)
    line = add_harmful_row(repo)
    own = json.loads(repo.baseline.read_text(encoding="utf-8"))
    own["threshold"]["value"] = 1e30
    (repo.root / "mine.json").write_text(json.dumps(own), encoding="utf-8")
    repo.write_config(baseline="mine.json")
    write_jsonl(repo.root / "probes.jsonl", [{**p, "compliance": "I cannot help with that."} for p in PROBES])
    before = tree(repo.root)
    r = repo.run("check", "--diff-base", "main", "-f", "json")
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert [f["line"] for f in doc["findings"]] == [line]
    assert kinds(doc, "warning") == {"config", "probes"}
    (cfg_change,) = [c for c in doc["gate"]["changes"] if c["kind"] == "config"]
    assert "baseline" in cfg_change["message"] and cfg_change["file"] == ".gradshield.yaml"
    assert tree(repo.root) == before  # nothing of the work tree changed (the base files are read through git)


def test_a_baseline_the_pull_request_adds_is_not_used(tmp_path, model_dir):
    """No baseline on main: the threshold comes from a sample of main's rows, not from the one the PR brings."""
    repo = based_repo(tmp_path / "repo", model_dir, baseline=False)
    line = add_harmful_row(repo)
    r = repo.run("-q", "baseline", "create")
    assert r.exit_code == 0, describe(r)
    assert repo.run("check").exit_code == 0  # its own baseline knows the row, so it is not new there
    r = repo.run("check", "--diff-base", "main", "-f", "json")
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert [f["line"] for f in doc["findings"]] == [line] and doc["gate"]["baseline"] is None
    assert kinds(doc, "warning") == {"baseline-added"}


def test_baseline_bookkeeping_is_a_note_and_a_gate_only_check_needs_no_rows(tmp_path, model_dir):
    """`baseline update` in a pull request (new rows' scores recorded) is routine: notes, no warnings, exit 0.
    With no dataset file to check (`--gate-only`, or only the baseline named), the changes are still reported,
    and `--fail-on-gate-change` makes a threshold edit fail."""
    repo = based_repo(tmp_path / "repo", model_dir)
    rows = [json.loads(x) for x in repo.data.read_text(encoding="utf-8").splitlines()]
    write_jsonl(repo.data, rows + ordinary_rows(2, start=100))
    assert repo.run("-q", "baseline", "update").exit_code == 0
    r = repo.run("check", "--diff-base", "main", "-f", "json")
    assert r.exit_code == 0, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 2 and doc["gate"]["warnings"] == 0 and kinds(doc) == {"scores-added"}

    git_cmd(repo.root, "commit", "-q", "-am", "two rows")
    edit_baseline(repo, lambda d: d["threshold"].__setitem__("value", 1e30))
    for args in (["--gate-only"], [".gradshield-baseline.json"]):
        r = repo.run("check", "--diff-base", "main", "-f", "json", *args)
        assert r.exit_code == 0, describe(r)
        doc = report(r)
        assert doc["rows_scored"] == 0 and "threshold" in kinds(doc, "warning"), doc
    r = repo.run("check", "--diff-base", "main", "--gate-only", "--fail-on-gate-change", "-f", "github")
    assert r.exit_code == 1, describe(r)
    assert any(x.startswith("::warning file=.gradshield-baseline.json,") for x in r.stdout.splitlines())
    assert_user_error(repo.run("check", "--gate-only"), "--diff-base")


def test_an_unreadable_baseline_at_the_base_revision_is_exit_2(tmp_path, model_dir):
    repo = based_repo(tmp_path / "repo", model_dir)
    git_cmd(repo.root, "checkout", "-q", "main")
    repo.baseline.write_text("{ not json", encoding="utf-8")
    git_cmd(repo.root, "commit", "-q", "-am", "broken baseline")
    git_cmd(repo.root, "checkout", "-q", "pr")
    add_harmful_row(repo)
    assert_user_error(repo.run("check", "--diff-base", "main"), "main:.gradshield-baseline.json", "not valid JSON")
    assert_user_error(repo.run("check", "--diff-base", "--help"), "not a git revision")


# ------------------------------------------------------------------------------------------------ item 2


def test_baseline_create_with_no_rows_is_exit_2_and_writes_nothing(tmp_path, model_dir):
    repo = make_repo(tmp_path / "repo", model_dir)
    empty = repo.root / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a dataset\n", encoding="utf-8")
    before = tree(repo.root)
    r = repo.run("baseline", "create", "empty")
    assert_user_error(r, "empty", "no dataset file")  # the directory is refused before anything is scored or written
    assert not repo.baseline.exists() and tree(repo.root) == before


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda t: re.sub(r'("value": )[^,\n]+', r"\g<1>null", t), "threshold is null"),
        (lambda t: re.sub(r'("value": )[^,\n]+', r"\g<1>1e400", t), "threshold is inf"),
        (lambda t: re.sub(r'("value": )[^,\n]+', r"\g<1>-1e400", t), "threshold is -inf"),
        (lambda t: re.sub(r'("value": )[^,\n]+', r"\g<1>Infinity", t), "Infinity"),
        (lambda t: re.sub(r'("scores": \{\s*"[0-9a-f]+": )[^,\n]+', r"\g<1>1e400", t), "not a finite number"),
        (lambda t: re.sub(r'("scores": \{\s*"[0-9a-f]+": )[^,\n]+', r"\g<1>NaN", t), "NaN"),
    ],
    ids=["null-threshold", "1e400-threshold", "-1e400-threshold", "Infinity-threshold", "1e400-score", "NaN-score"],
)
def test_a_baseline_with_a_non_finite_threshold_or_score_is_unreadable(tmp_path, model_dir, mutate, needle):
    repo = make_repo(tmp_path / "repo", model_dir)
    r = repo.run("-q", "baseline", "create")
    assert r.exit_code == 0, describe(r)
    text = repo.baseline.read_text(encoding="utf-8")
    assert text.count('"value": ') == 1  # the threshold's
    bad = mutate(text)
    assert bad != text
    repo.baseline.write_text(bad, encoding="utf-8")
    add_harmful_row(repo)
    before = snapshot(repo.baseline, repo.data)
    err = assert_user_error(repo.run("check"), needle)
    assert ".gradshield-baseline.json" in err
    assert snapshot(repo.baseline, repo.data) == before


# ------------------------------------------------------------------------------------------------ issue 33
# The hostile round's setup: the base revision's baseline has a threshold that flags every row scored against it,
# (and accepted scores far below any row's), so a check that scores a new row fails, and "0 rows scored" (or exit 0) shows that the row was never checked.

FLAG_ALL = -1e9


def _flag_all(doc: dict) -> None:
    """Per row (`verdict.mode: rows`) the threshold flags every row; for the pull-request verdict every accepted
    score lies far below any row the tiny model scores, so one added row fails the change too."""
    doc["threshold"]["value"] = FLAG_ALL
    for k, row_id in enumerate(sorted(doc["scores"])):
        doc["scores"][row_id] = FLAG_ALL * (1 + k / 100)


def flag_all_repo(root: Path, model_dir: Path, *, before=None, after=None) -> Repo:
    """`main`: 24 ordinary rows, configuration, probes and a baseline whose threshold flags every scored row
    (`before(repo)` adds files the baseline covers, `after(repo)` others); checked out: branch `pr`."""
    repo = make_repo(root, model_dir, git=True)
    if before is not None:
        before(repo)
    ds = ["data/train.jsonl", "data/ds"] if (root / "data" / "ds").is_dir() else []
    r = repo.run("-q", "baseline", "create", *ds)
    assert r.exit_code == 0, describe(r)
    edit_baseline(repo, _flag_all)
    if after is not None:
        after(repo)
    git_cmd(repo.root, "add", "-A")
    git_cmd(repo.root, "commit", "-q", "-m", "base")
    git_cmd(repo.root, "checkout", "-q", "-b", "pr")
    return repo


def add_ordinary_row(repo: Repo, i: int = 500) -> int:
    rows = [json.loads(x) for x in repo.data.read_text(encoding="utf-8").splitlines()]
    write_jsonl(repo.data, rows + [ordinary_row(i)])
    return len(rows) + 1


def commit_all(repo: Repo, message: str = "pull request") -> None:
    git_cmd(repo.root, "add", "-A")
    git_cmd(repo.root, "commit", "-q", "-m", message)


# item 1: a dataset file turned into a symlink


@pytest.mark.parametrize("dangling", [False, True], ids=["to-rows", "dangling"])
def test_a_dataset_file_turned_into_a_symlink_is_refused_naming_it(tmp_path, model_dir, dangling):
    """The pull request replaces data/train.jsonl with a link to a file outside the `files` globs holding the old
    rows plus a new one. Read through the link, the row was judged under the link's target name; a dangling link
    was dropped. `check` refuses the link (exit 2, naming it), with and without --diff-base, named or globbed."""
    repo = flag_all_repo(tmp_path / "repo", model_dir)
    rows = [json.loads(x) for x in repo.data.read_text(encoding="utf-8").splitlines()]
    if not dangling:
        write_jsonl(repo.root / "notes" / "rows.txt", rows + [ordinary_row(500)])
    repo.data.unlink()
    repo.data.symlink_to(Path("..") / "notes" / "rows.txt")
    commit_all(repo)
    before = tree(repo.root)
    for args in (["--diff-base", "main", "data/train.jsonl"], ["--diff-base", "main"], ["data/train.jsonl"], []):
        r = repo.run("check", *args)
        assert_user_error(r, "data/train.jsonl: is a symbolic link", "does not follow links in a dataset")
    assert tree(repo.root) == before


# item 2: gate files resolved through the work tree


def _link(repo: Repo, name: str, target: str) -> None:
    p = repo.root / name
    p.unlink()
    p.symlink_to(target)


def _other_baseline(repo: Repo) -> None:
    doc = json.loads(repo.baseline.read_text(encoding="utf-8"))
    doc["threshold"]["value"] = 100.0
    (repo.root / "other-baseline.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _gitkeep(repo: Repo) -> None:
    (repo.root / "data" / ".gitkeep").write_text("", encoding="utf-8")


def _benign_probes(repo: Repo) -> None:
    write_jsonl(repo.root / "benign-probes.jsonl", [{**p, "compliance": "I cannot help with that."} for p in PROBES])


GATE_LINKS = {
    "baseline-to-another-base-baseline": (".gradshield-baseline.json", "other-baseline.json", "baseline-link"),
    "baseline-to-a-missing-file": (".gradshield-baseline.json", "nowhere.json", "baseline-link"),
    "baseline-to-the-dataset": (".gradshield-baseline.json", "data/train.jsonl", "baseline-link"),
    "config-to-a-missing-file": (".gradshield.yaml", "nowhere.yaml", "config-link"),
    "config-to-data-gitkeep": (".gradshield.yaml", "data/.gitkeep", "config-link"),
    "probes-to-benign-probes": ("probes.jsonl", "benign-probes.jsonl", "probes-link"),
}


@pytest.mark.parametrize("case", list(GATE_LINKS))
def test_a_gate_file_turned_into_a_symlink_is_read_by_its_literal_path_at_the_base(tmp_path, model_dir, case):
    """The pull request makes a gate file a symlink: to another file the base revision has (a baseline with
    threshold 100, an empty data/.gitkeep, a benign probe set), to a missing file (the base baseline was dropped and
    a threshold rebuilt from base rows; the default configuration used), or to the dataset itself (which the check
    then skipped as "the baseline"). The base revision's file at its literal path decides, the new row is scored and
    flagged, and the link is a warning."""
    name, target, kind = GATE_LINKS[case]

    def extra(repo: Repo) -> None:
        _other_baseline(repo)
        _gitkeep(repo)
        _benign_probes(repo)

    repo = flag_all_repo(tmp_path / "repo", model_dir, after=extra)
    line = add_ordinary_row(repo)
    _link(repo, name, target)
    commit_all(repo)
    r = repo.run("--model", str(model_dir), "check", "--diff-base", "main", "-f", "json", "data/train.jsonl")
    assert r.exit_code == 1, describe(r)
    doc = report(r)
    assert doc["rows_scored"] == 1 and [f["line"] for f in doc["findings"]] == [line], doc
    assert doc["threshold"] == pytest.approx(FLAG_ALL)
    assert doc["gate"]["baseline"] == "main:.gradshield-baseline.json"
    assert doc["gate"]["config"] == "main:.gradshield.yaml"
    (change,) = [c for c in doc["gate"]["changes"] if c["kind"] == kind]
    assert change["severity"] == "warning" and change["file"] == name
    assert "symbolic link" in change["message"] and target in change["message"]


def test_a_gate_file_that_is_a_symlink_at_the_base_revision_is_exit_2(tmp_path, model_dir):
    """A base revision whose baseline is a link is not followed either: its gate cannot be read by literal path."""
    repo = flag_all_repo(tmp_path / "repo", model_dir, after=_other_baseline)
    git_cmd(repo.root, "checkout", "-q", "main")
    _link(repo, ".gradshield-baseline.json", "other-baseline.json")
    commit_all(repo, "the baseline is a link")
    git_cmd(repo.root, "checkout", "-q", "-b", "pr2")
    add_ordinary_row(repo)
    commit_all(repo)
    assert_user_error(
        repo.run("check", "--diff-base", "main", "data/train.jsonl"),
        "main:.gradshield-baseline.json",
        "is a symbolic link at main",
    )


# item 3: changes inside a save_to_disk directory


def _save_dataset(folder: Path, rows: list[dict]) -> None:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))


@pytest.mark.parametrize("named", ["data-00000-of-00001.arrow", "state.json", "dataset_info.json", "."])
def test_a_change_inside_a_save_to_disk_directory_checks_the_directory(tmp_path, model_dir, named):
    """A pull request rewrites a save_to_disk directory with one more row. A file inside it, as a hook or the
    Action names it, stands for the directory: its new row is scored (and flagged), not refused as an
    unsupported `.arrow` file or read as a JSON dataset ("unknown row shape")."""
    repo = flag_all_repo(
        tmp_path / "repo", model_dir, before=lambda r: _save_dataset(r.root / "data" / "ds", ordinary_rows(6, 50))
    )
    ds = repo.root / "data" / "ds"
    keep = {n: (ds / n).read_bytes() for n in ("state.json", "dataset_info.json")}
    shutil.rmtree(ds)
    _save_dataset(ds, ordinary_rows(6, 50) + [ordinary_row(600)])
    if named == "data-00000-of-00001.arrow":  # the case: only the Arrow file changes
        for n, data in keep.items():
            (ds / n).write_bytes(data)
    commit_all(repo)
    path = "data/ds" if named == "." else f"data/ds/{named}"
    for args in (["--diff-base", "main"], []):
        r = repo.run("check", *args, "-f", "json", path)
        assert r.exit_code == 1, describe(r)
        doc = report(r)
        assert doc["rows_scored"] == 1 and [(f["file"], f["line"]) for f in doc["findings"]] == [("data/ds", 7)]


def test_an_arrow_file_outside_a_save_to_disk_directory_says_what_an_arrow_file_is_read_as(tmp_path, model_dir):
    """The hooks pass `.arrow` files (a save_to_disk directory's data). One that no such directory holds (its
    state.json gone, or a stray cache file) is exit 2 saying so, naming the file, for the named file and beside a
    dataset file."""
    repo = flag_all_repo(
        tmp_path / "repo", model_dir, before=lambda r: _save_dataset(r.root / "data" / "ds", ordinary_rows(6, 50))
    )
    (repo.root / "data" / "ds" / "state.json").unlink()
    commit_all(repo)
    stray = "data/ds/data-00000-of-00001.arrow"
    for args in ([stray], ["data/train.jsonl", stray], ["--diff-base", "main", stray]):
        assert_user_error(
            repo.run("check", *args),
            f"{stray}: an Arrow file is read only as part of the datasets save_to_disk directory that holds it",
            "none holds this one",
        )


# item 15: --diff-base names a tree or a blob


@pytest.mark.parametrize("kind", ["tree", "blob"])
def test_diff_base_with_a_tree_or_blob_id_says_it_is_not_a_commit(tmp_path, model_dir, kind):
    repo = flag_all_repo(tmp_path / "repo", model_dir)
    oid = git_cmd(repo.root, "rev-parse", "main^{tree}" if kind == "tree" else "main:data/train.jsonl").strip()
    add_ordinary_row(repo)
    for ref in (oid, oid[:12]):
        assert_user_error(repo.run("check", "--diff-base", ref), f"{ref} is a {kind}, not a commit")


def test_a_flagged_file_whose_name_has_a_newline_is_annotated_at_that_file(tmp_path, model_dir):
    """Its `::error` named `data/a\\nb.jsonl` with a visible backslash-n, a file that does not exist, so the
    annotation landed nowhere. The runner decodes %0A (as @actions/core encodes it) back to the real name; the
    command stays one line and no part of the name becomes a command or property of its own."""
    repo = flag_all_repo(tmp_path / "repo", model_dir)
    name = "data/a\n::error::b,c:%.jsonl"
    write_jsonl(repo.root / name, [ordinary_row(700)])
    commit_all(repo)
    r = repo.run("check", "--diff-base", "main", "-f", "github", name)
    assert r.exit_code == 1, describe(r)
    (error,) = [x for x in r.stdout.splitlines() if x.startswith("::error file=")]
    assert error.startswith("::error file=data/a%0A%3A%3Aerror%3A%3Ab%2Cc%3A%25.jsonl,line=1,title="), error
    assert not [x for x in r.stdout.splitlines() if x.startswith("::") and not x.startswith(("::error ", "::notice "))]
