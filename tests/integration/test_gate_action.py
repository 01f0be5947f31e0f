"""The gate through the GitHub Action's real steps (action/*.sh running the CLI): a pull request cannot relax its
own gate, and what it changes is reported (issue 12, "The gate" items 1 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli_fixtures, compliance_row, write_jsonl
from test_action import (  # noqa: F401  (fixtures: base_env, model_dir, origin)
    base_env,
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
