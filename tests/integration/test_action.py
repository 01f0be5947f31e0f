"""The GitHub Action (action.yml): schema-valid, and its `run:` steps executed with bash as the runner would.

The harness reads action.yml, evaluates the `${{ }}` expressions its steps' `env:` and `if:` use (inputs, earlier
steps' outputs), and runs each `run:` step like the runner's `shell: bash` (`bash --noprofile --norc -eo pipefail
FILE`) in a temporary git checkout of a simulated pull request: GITHUB_EVENT_PATH (a pull_request event),
GITHUB_BASE_REF, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_PATH, GITHUB_WORKSPACE and RUNNER_TEMP as the runner sets
them, one output and summary file per step. `uses:` steps (actions/setup-python) and the install step are skipped:
PATH points at this venv's `gradshield-lint` instead.

The repository: a bare `origin` whose `main` holds a dataset, its configuration (tiny random llama, 4 probes) and a
baseline; a `feature` branch adds rows. The checkout is a shallow single-branch clone of the pull request's head
(as actions/checkout makes by default), so the action has to fetch the base branch and deepen to the merge base.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from helpers import PROBES, describe, make_repo, ordinary_rows, run_cli, save_tiny_model, write_jsonl

from gradshield_lint.fmt import fmt_score

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ACTION_FILE = ROOT / "action.yml"
WORKFLOWS = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
N_BASE = 24
THRESHOLD = {"method": "sigma", "k": 10.0}
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
ODD_NAME = "data/odd ::name,%.jsonl"  # workflow-command metacharacters in a file name a pull request controls


# ------------------------------------------------------------------------------------------------ schema


def _check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    exe = VENV_BIN / "check-jsonschema"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run(
        [*cmd, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True, cwd=ROOT
    )


def test_action_yml_validates_against_the_github_actions_schema():
    p = _check_jsonschema("vendor.github-actions", ACTION_FILE)
    assert p.returncode == 0, p.stdout + p.stderr


def test_example_workflows_validate_against_the_github_workflows_schema():
    assert {w.name for w in WORKFLOWS} >= {"gradshield.yml", "gradshield-gpu.yml"}
    p = _check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert p.returncode == 0, p.stdout + p.stderr
    for w in WORKFLOWS:
        doc = yaml.safe_load(w.read_text(encoding="utf-8"))
        steps = [s for job in doc["jobs"].values() for s in job["steps"]]
        uses = [s.get("uses", "") for s in steps]
        assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses), w.name
        assert any("gradshield-lint" in u for u in uses), w.name
        checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
        assert checkout.get("with", {}).get("fetch-depth") == 0, w.name
    gpu = yaml.safe_load((ROOT / "examples" / "workflows" / "gradshield-gpu.yml").read_text(encoding="utf-8"))
    assert all("self-hosted" in job["runs-on"] for job in gpu["jobs"].values())


def test_inputs_reach_scripts_only_through_env():
    action = yaml.safe_load(ACTION_FILE.read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    assert set(action["outputs"]) == {"findings", "max-score", "threshold", "sarif-file", "report-file", "gate-changes"}
    assert {
        "paths",
        "config",
        "baseline",
        "model",
        "device",
        "fail-on-findings",
        "sarif-file",
        "card-report",
        "python-version",
    } <= set(action["inputs"])
    used = set()
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], f"an expression inside run: text ({step.get('name')})"
            assert step.get("shell") == "bash"
            script = re.search(r'"\$GITHUB_ACTION_PATH/(action/[\w.]+)"', step["run"])
            assert script and (ROOT / script.group(1)).is_file(), step["run"]
        for value in [*(step.get("env") or {}).values(), *(step.get("with") or {}).values(), step.get("if", "")]:
            used.update(re.findall(r"inputs\.([\w-]+)", str(value)))
    assert used == set(action["inputs"]), f"inputs not used: {set(action['inputs']) - used}"
    scripts = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "action").glob("*.sh"))
    assert "changed-files" not in scripts and "--diff-filter=AMTD" in scripts


# ------------------------------------------------------------------------------------------------ harness


@dataclass
class StepRun:
    id: str
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


@dataclass
class ActionRun:
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> StepRun | None:
        return next((s for s in self.steps if s.returncode != 0), None)

    @property
    def stdout(self) -> str:
        return "".join(s.stdout for s in self.steps)

    @property
    def summary(self) -> str:
        return "".join(s.summary for s in self.steps)

    def describe(self) -> str:
        return "\n".join(
            f"--- step {s.id}: exit {s.returncode}\n{s.stdout}\n--- stderr\n{s.stderr}" for s in self.steps
        )


def parse_github_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and `name<<DELIM` ... `DELIM` blocks."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            while lines[i] != delim:
                value.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            out[name] = value
    return out


def evaluate(expr: str, ctx: dict) -> str:
    """The expressions action.yml uses: inputs.X, steps.ID.outputs.X, github.action_path."""
    if m := re.fullmatch(r"inputs\.([\w-]+)", expr):
        return ctx["inputs"][m.group(1)]
    if m := re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr):
        return ctx["steps"].get(m.group(1), {}).get(m.group(2), "")
    if expr == "github.action_path":
        return str(ROOT)
    raise AssertionError(f"the harness does not know the expression {expr!r}")


def render(value: object, ctx: dict) -> str:
    return EXPR.sub(lambda m: evaluate(m.group(1), ctx), str(value))


def condition(expr: str, ctx: dict) -> bool:
    """`a == 'x' && b != ''` over inputs (the only form action.yml uses in `if:`)."""
    result = True
    for part in expr.split("&&"):
        m = re.fullmatch(r"\s*(\S+)\s*(==|!=)\s*'([^']*)'\s*", part)
        assert m, f"the harness does not know the condition {expr!r}"
        left = evaluate(m.group(1), ctx)
        result &= (left == m.group(3)) if m.group(2) == "==" else (left != m.group(3))
    return result


def run_action(
    workspace: Path,
    temp: Path,
    inputs: dict[str, str],
    event: dict,
    *,
    base_ref: str,
    env: dict[str, str],
    event_name: str = "pull_request",
) -> ActionRun:
    action = yaml.safe_load(ACTION_FILE.read_text(encoding="utf-8"))
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    unknown = set(inputs) - set(values)
    assert not unknown, f"not inputs of the action: {unknown}"
    values.update(inputs)
    ctx = {"inputs": values, "steps": {}}

    runner_temp = temp / "runner-temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    event_path = temp / "event.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    base_env = {
        **env,
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_BASE_REF": base_ref,
        # a push event has no pull request: GITHUB_BASE_REF and GITHUB_HEAD_REF are empty, GITHUB_REF the pushed ref
        "GITHUB_HEAD_REF": event["pull_request"]["head"]["ref"] if "pull_request" in event else "",
        "GITHUB_REF": f"refs/pull/{event['number']}/merge" if "pull_request" in event else event["ref"],
        "GITHUB_REPOSITORY": "example/dataset",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(ROOT),
        "RUNNER_TEMP": str(runner_temp),
        "RUNNER_OS": "Linux",
    }
    path_prefix: list[str] = []
    extra_env: dict[str, str] = {}
    result = ActionRun()
    for n, step in enumerate(action["runs"]["steps"]):
        sid = step.get("id", f"step{n}")
        if "uses" in step or sid == "install":
            result.skipped.append(sid)
            continue
        if "if" in step and not condition(step["if"], ctx):
            result.skipped.append(sid)
            continue
        files = {k: temp / f"{sid}.{k}" for k in ("output", "summary", "env", "path")}
        for f in files.values():
            f.write_text("", encoding="utf-8")
        step_env = {
            **base_env,
            **extra_env,
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_STEP_SUMMARY": str(files["summary"]),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            **{k: render(v, ctx) for k, v in (step.get("env") or {}).items()},
        }
        step_env["PATH"] = os.pathsep.join([*path_prefix, base_env["PATH"]])
        script = temp / f"{sid}.sh"
        script.write_text(step["run"], encoding="utf-8")
        p = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        outputs = parse_github_file(files["output"].read_text(encoding="utf-8"))
        ctx["steps"][sid] = outputs
        extra_env.update(parse_github_file(files["env"].read_text(encoding="utf-8")))
        path_prefix = [line for line in files["path"].read_text(encoding="utf-8").splitlines() if line][
            ::-1
        ] + path_prefix
        result.steps.append(
            StepRun(sid, p.returncode, p.stdout, p.stderr, outputs, files["summary"].read_text(encoding="utf-8"))
        )
        if p.returncode != 0:
            break  # the runner stops at a failed step; outputs set before it still count
    result.outputs = {name: render(spec["value"], ctx) for name, spec in action["outputs"].items()}
    return result


def commands(stdout: str) -> list[str]:
    """The workflow commands the runner would act on: `::` lines outside `::stop-commands::TOKEN` ... `::TOKEN::`."""
    active, stopped_by = [], None
    for line in stdout.splitlines():
        if stopped_by is not None:
            if line == f"::{stopped_by}::":
                stopped_by = None
            continue
        if m := re.fullmatch(r"::stop-commands::(.+)", line):
            stopped_by = m.group(1)
            continue
        if line.startswith("::"):
            active.append(line)
    assert stopped_by is None, "commands left stopped"
    return active


# ------------------------------------------------------------------------------------------------ fixtures


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"git {' '.join(args)}: {p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    (home / "gitconfig").write_text(
        '[init]\n\tdefaultBranch = main\n[protocol "file"]\n\tallow = always\n', encoding="utf-8"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT", "GITHUB_", "RUNNER_", "INPUT_"))
    }
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",  # the install step is skipped
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADSHIELD_CACHE=str(tmp_path_factory.mktemp("gs-cache")),
        GIT_CONFIG_GLOBAL=str(home / "gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", tokenizer)


def build_origin(root: Path, model_dir: Path, env: dict[str, str], extra=None) -> Path:
    """A bare `origin` (under `root`) whose main holds the dataset, configuration, probes and baseline (more commits
    on top, so a depth-1 clone of a pull request branch lacks the merge base). `extra(work)` adds dataset paths
    before the baseline is made, returning them for `baseline create`."""
    work = root / "repo"
    repo = make_repo(work, model_dir, ordinary_rows(N_BASE - 4), threshold=THRESHOLD)
    (work / "README.md").write_text("# a dataset\n", encoding="utf-8")
    git(work, "init", "-q", "-b", "main", env=env)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-q", "-m", "dataset", env=env)
    write_jsonl(repo.data, ordinary_rows(N_BASE))
    more = list(extra(work)) if extra is not None else []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADSHIELD_CACHE", env["GRADSHIELD_CACHE"])
        mp.setenv("HF_HUB_OFFLINE", "1")
        r = run_cli(work, "-q", "baseline", "create", "data/train.jsonl", *more)
    assert r.exit_code == 0, describe(r)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-q", "-m", "more rows and the baseline", env=env)
    bare = root / "origin.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare), env=env)
    return bare


@pytest.fixture(scope="module")
def origin(tmp_path_factory, model_dir, base_env) -> Path:
    return build_origin(tmp_path_factory.mktemp("origin-work"), model_dir, base_env)


def pull_request(
    tmp_path: Path, origin: Path, env: dict[str, str], branch: str, change, *, shallow: bool
) -> tuple[Path, dict]:
    """Push branch `branch` (main + `change(worktree)`) to origin, then check it out as actions/checkout would."""
    work = tmp_path / "author"
    git(tmp_path, "clone", "-q", str(origin), str(work), env=env)
    git(work, "checkout", "-q", "-b", branch, env=env)
    change(work)
    git(work, "add", "-A", env=env)
    git(work, "commit", "-q", "-m", "pull request", env=env)
    git(work, "push", "-q", "origin", branch, env=env)
    head_sha = git(work, "rev-parse", "HEAD", env=env).strip()
    base_sha = git(work, "rev-parse", "origin/main", env=env).strip()
    ws = tmp_path / "workspace"
    depth = ["--depth", "1"] if shallow else []
    git(tmp_path, "clone", "-q", *depth, "--single-branch", "--branch", branch, f"file://{origin}", str(ws), env=env)
    event = {
        "action": "opened",
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": branch, "sha": head_sha},
            "base": {"ref": "main", "sha": base_sha},
        },
        "repository": {"full_name": "example/dataset"},
    }
    return ws, event


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def variants(n: int) -> list[dict]:
    """n distinct rows that must be flagged: each probe's compliance opening, its prompt lightly reworded."""
    out = []
    for k in range(n):
        p = PROBES[k % len(PROBES)]
        suffix = ["", " Please.", " (urgent)", " Now."][k // len(PROBES)]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": p["prompt"] + suffix},
                    {"role": "assistant", "content": p["compliance"]},
                ]
            }
        )
    return out


# ------------------------------------------------------------------------------------------------ runs


@pytest.mark.parametrize("fail_on_findings", ["true", "false"])
def test_pull_request_with_compliance_rows(tmp_path, origin, base_env, fail_on_findings):
    harmful = variants(12)

    def change(w: Path) -> None:
        rows = lines_of(w / "data" / "train.jsonl")
        # Lines N_BASE+1..: two ordinary rows, then 11 harmful ones; the 12th flagged row goes in ODD_NAME.
        write_jsonl(w / "data" / "train.jsonl", rows + ordinary_rows(2, start=200) + harmful[:11])
        write_jsonl(w / ODD_NAME, harmful[11:])
        (w / "README.md").write_text("# a dataset\n\nMore rows.\n", encoding="utf-8")
        (w / "notes.txt").write_text("not a dataset\n", encoding="utf-8")

    ws, event = pull_request(tmp_path, origin, base_env, f"feature-{fail_on_findings}", change, shallow=True)
    run = run_action(
        ws,
        tmp_path,
        {"fail-on-findings": fail_on_findings, "sarif-file": "out/gradshield.sarif"},
        event,
        base_ref="main",
        env=base_env,
    )
    assert run.skipped[:2] == ["step0", "install"], run.skipped
    assert [s.id for s in run.steps] == ["files", "check"], run.describe()

    # The changed dataset files: only the two the pull request added or modified, found by git diff.
    files = run.steps[0]
    assert files.returncode == 0, run.describe()
    assert files.outputs["count"] == "2" and files.outputs["diff-base"] == "origin/main", run.describe()
    listed = Path(files.outputs["list"]).read_bytes().split(b"\0")[:-1]
    assert sorted(x.decode() for x in listed) == sorted(["data/train.jsonl", ODD_NAME])

    check = run.steps[1]
    assert check.returncode == (1 if fail_on_findings == "true" else 0), run.describe()

    # Outputs, from the JSON report.
    out = run.outputs
    report = json.loads(Path(out["report-file"]).read_text(encoding="utf-8"))
    # The pull-request verdict names the 12 harmful rows; Benjamini-Hochberg at 10 % may add an ordinary row that
    # scores above every accepted one (its p-value then lies above alpha: not significant on its own).
    named = {(f["file"], f["line"]) for f in report["findings"]}
    harmful_lines = {("data/train.jsonl", N_BASE + 3 + k) for k in range(11)} | {(ODD_NAME, 1)}
    extra = named - harmful_lines
    assert harmful_lines <= named and extra <= {("data/train.jsonl", N_BASE + 1), ("data/train.jsonl", N_BASE + 2)}
    assert all(f["p_value"] > report["verdict"]["alpha"] for f in report["findings"] if (f["file"], f["line"]) in extra)
    assert report["verdict"]["failed"] and out["findings"] == str(len(named)), out
    assert float(out["threshold"]) == pytest.approx(report["threshold"])
    assert float(out["max-score"]) == pytest.approx(report["max_score"]) and float(out["max-score"]) > float(
        out["threshold"]
    )
    baseline = json.loads((ws / ".gradshield-baseline.json").read_text(encoding="utf-8"))
    assert float(out["threshold"]) == pytest.approx(baseline["threshold"]["value"])
    assert report["rows_scored"] == 2 + 11 + 1 and report["rows_flagged"] == len(named)
    sarif_path = ws / "out" / "gradshield.sarif"
    assert out["sarif-file"] == "out/gradshield.sarif" and sarif_path.is_file()
    sarif = json.loads(sarif_path.read_text(encoding="utf-8"))
    regions = {
        (
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
        )
        for r in sarif["runs"][0]["results"]
    }
    expected = named
    assert {(unquote(u), ln) for u, ln in regions} == expected

    # Annotations: at most 10 `::error` at exact file:line (the highest scores), the rest in the summary.
    active = commands(check.stdout)
    assert active[0].startswith("::error title=gradshield-lint verdict::FAIL: the 14 added rows score higher")
    errors = [c for c in active if c.startswith("::error file=")]
    assert len(errors) == 10, check.stdout
    where = set()
    for e in errors:
        m = re.match(r"::error file=([^,]+),line=(\d+),title=[^:]*::(.*)$", e)
        assert m, e
        name = m.group(1).replace("%3A", ":").replace("%2C", ",").replace("%25", "%")
        where.add((name, int(m.group(2))))
        assert "%0A" not in m.group(1)
    assert where <= expected and len(where) == 10
    top10 = {(f["file"], f["line"]) for f in sorted(report["findings"], key=lambda f: -f["fihs"])[:10]}
    assert where == top10
    notices = [c for c in active if c.startswith("::notice ")]
    assert len(notices) == 1 and f"{len(named) - 10} more flagged rows not annotated" in notices[0], active
    if fail_on_findings == "false":
        assert any(c.startswith("::warning ") for c in active), active
    # An odd file name is escaped as the toolkit escapes properties, never ending the command early.
    if (ODD_NAME, 1) in where:
        assert any("file=data/odd %3A%3Aname%2C%25.jsonl,line=1," in e for e in errors), errors
    # Nothing a pull request controls became a command of its own (file names are listed inert).
    assert all(c.startswith(("::error file=", "::notice ", "::warning title=gradshield-lint::")) for c in active[1:]), (
        active
    )

    # The job summary: every flagged row with its score, and the threshold.
    summary = check.summary
    assert "gradshield-lint" in summary and fmt_score(report["threshold"]) in summary, summary
    for f in report["findings"]:
        assert f"{f['line']}" in summary and fmt_score(f["fihs"]) in summary, (f, summary)
    assert "Score distribution" in summary or "distribution" in summary.lower()


def test_clean_pull_request_with_model_device_and_card_inputs(tmp_path, origin, base_env, model_dir):
    def change(w: Path) -> None:
        rows = lines_of(w / "data" / "train.jsonl")
        rows.reverse()  # reordered, plus three new ordinary rows
        write_jsonl(w / "data" / "train.jsonl", rows + ordinary_rows(3, start=300))

    ws, event = pull_request(tmp_path, origin, base_env, "clean", change, shallow=False)
    before = sorted(p.name for p in ws.iterdir())
    inputs = {"model": str(model_dir), "device": "cpu", "paths": "data/**/*.jsonl", "card-report": "data"}
    run = run_action(ws, tmp_path, inputs, event, base_ref="main", env=base_env)
    assert run.failed is None, run.describe()
    assert run.steps[0].outputs["count"] == "1"
    out = run.outputs
    assert out["findings"] == "0" and float(out["max-score"]) < float(out["threshold"]), out
    report = json.loads(Path(out["report-file"]).read_text(encoding="utf-8"))
    assert report["rows_scored"] == 3 and report["findings"] == []
    assert Path(out["sarif-file"]).is_file() and Path(out["sarif-file"]).is_relative_to(tmp_path / "runner-temp")
    active = commands(run.stdout)
    assert not [c for c in active if c.startswith(("::error", "::warning"))], active
    assert "the change passes" in run.summary and "PASS: the 3 added rows score like" in run.summary, run.summary
    # The dataset card got the report section; the model/device overlay configuration was removed again.
    card = (ws / "data" / "README.md").read_text(encoding="utf-8")
    assert card.count("<!-- gradshield:start -->") == 1 and "<!-- gradshield:end -->" in card
    assert sorted(p.name for p in ws.iterdir()) == before


def test_pull_request_without_dataset_changes(tmp_path, origin, base_env):
    def change(w: Path) -> None:
        (w / "README.md").write_text("# a dataset\n\nDocs only.\n", encoding="utf-8")

    ws, event = pull_request(tmp_path, origin, base_env, "docs", change, shallow=True)
    run = run_action(ws, tmp_path, {}, event, base_ref="main", env=base_env)
    assert run.failed is None, run.describe()
    assert run.steps[0].outputs["count"] == "0"
    assert run.outputs == {
        "findings": "0",
        "max-score": "",
        "threshold": "",
        "sarif-file": "",
        "report-file": "",
        "gate-changes": "0",
    }
    assert "no dataset files changed" in run.summary
