"""Nothing lost (issue 12): concurrent baseline writers, all-or-nothing writes under kills, no leftovers, and the
documented behaviours `report.max_rows: 0` and `-q` silencing the model's loading bars.

Real processes throughout: `python -m gradshield_lint.cli` subprocesses racing on a real baseline in a throwaway
repository (the tiny model of tests/helpers.py where scoring is needed), children that send themselves SIGTERM or
SIGKILL at a controlled point of a real write (a patched `os.replace`/`os.fsync` that kills its own process, then
lets the real call run), and the files they leave behind.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import (
    Repo,
    cli_fixtures,
    compliance_row,
    describe,
    make_repo,
    ordinary_row,
    ordinary_rows,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
N_BASE = 12


# ------------------------------------------------------------------------------------------------ fixtures


env, model_dir, template, repo = cli_fixtures(N_BASE, unset=("GRADSHIELD_LOCK_TIMEOUT",))


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", **extra}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    """The real CLI in its own process (not started until the OS schedules it: several race for real)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gradshield_lint.cli", *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child(cwd: Path, prelude: str, *args: str, **env: str) -> subprocess.Popen:
    """The real CLI in a child process that first runs `prelude` (installs the kill point), then `main(args)`."""
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        from gradshield_lint.cli import main
        main({list(args)!r}, prog_name="gradshield-lint")
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def accepted(repo: Repo) -> dict[str, str]:
    return json.loads(repo.baseline.read_text(encoding="utf-8"))["accepted"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def data_ids(repo: Repo) -> list[str]:
    """The ids of the rows in the repository's dataset file, in file order (`accept` takes only known rows)."""
    from gradshield_lint.io.rows import iter_rows

    return [r.id for r in iter_rows(repo.data)]


# ------------------------------------------------------------------------------------------------ the baseline lock


def test_concurrent_accepts_all_survive(repo):
    """Eight `accept`s started at once, three times over: every accepted id is in the baseline afterwards (on the
    unlocked read-modify-write most of them were lost)."""
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [ordinary_row(100 + i) for i in range(24)])
    new_ids = data_ids(repo)[N_BASE:]
    expected: dict[str, str] = {}
    for try_ in range(3):
        procs = {
            new_ids[8 * try_ + i]: cli(repo.root, "accept", new_ids[8 * try_ + i], "--reason", f"ok {try_}/{i}")
            for i in range(8)
        }
        for i, (rid, p) in enumerate(procs.items()):
            rc, _, err = finish(p)
            assert rc == 0, err
            expected[rid] = f"ok {try_}/{i}"
        got = accepted(repo)
        missing = sorted(set(expected) - set(got))
        assert not missing, f"try {try_}: lost {len(missing)} of {len(expected)} accepts: {missing}"
        assert {k: got[k] for k in expected} == expected
    assert leftovers(repo.root) == []


_HOLD_AFTER_SCORING = """
    import os, pathlib, time
    from gradshield_lint.scoring import engine

    _score = engine.Engine.score_rows

    def score_rows(self, rows):
        out = _score(self, rows)
        # the update has read the baseline and scored its rows; let the accepts run now, before it writes
        pathlib.Path(os.environ["GS_READY"]).touch()
        deadline = time.time() + 120
        while not pathlib.Path(os.environ["GS_GO"]).exists() and time.time() < deadline:
            time.sleep(0.02)
        return out

    engine.Engine.score_rows = score_rows
"""


@pytest.mark.parametrize("flags", [(), ("--rescore",)], ids=["update", "rescore"])
def test_accepts_during_baseline_update_survive(repo, tmp_path, flags):
    """`baseline update` (a real child process) is held after it has read the baseline and scored the new rows;
    three `accept`s run to completion meanwhile; then the update writes. The accepts and the update's new scores
    are all in the file."""
    write_jsonl(repo.data, ordinary_rows(N_BASE) + [ordinary_row(100 + i) for i in range(3)])
    ready, go = tmp_path / "ready", tmp_path / "go"
    upd = child(repo.root, _HOLD_AFTER_SCORING, "baseline", "update", *flags, GS_READY=str(ready), GS_GO=str(go))
    deadline = time.time() + 240
    while not ready.exists():
        assert upd.poll() is None, finish(upd)
        assert time.time() < deadline, "the update never reached scoring"
        time.sleep(0.05)
    ids = data_ids(repo)[N_BASE:]  # the three rows the update scores
    procs = [cli(repo.root, "accept", rid, "--reason", "reviewed") for rid in ids]
    for p in procs:
        rc, _, err = finish(p)
        assert rc == 0, err
    go.touch()
    rc, _, err = finish(upd)
    assert rc == 0, err
    doc = json.loads(repo.baseline.read_text(encoding="utf-8"))
    assert set(ids) <= set(doc["accepted"]), f"accepts lost by the update: {sorted(set(ids) - set(doc['accepted']))}"
    assert len(doc["scores"]) == N_BASE + 3


def test_a_held_lock_times_out_with_a_clear_error_and_changes_nothing(repo):
    """Another process holds the baseline's lock (a real OS lock from a second process): `accept` waits
    GRADSHIELD_LOCK_TIMEOUT seconds, then exits 2 naming the baseline and the lock, and the baseline is intact."""
    lock_file = repo.baseline.with_name(repo.baseline.name + ".lock")  # documented: beside it, name + .lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, filelock; l = filelock.FileLock(sys.argv[1]); l.acquire(); "
                "print('held', flush=True); sys.stdin.read()"
            ),
            str(lock_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = repo.baseline.read_bytes()
        some_row = data_ids(repo)[0]
        t0 = time.monotonic()
        rc, _, err = finish(cli(repo.root, "accept", some_row, "--reason", "x", GRADSHIELD_LOCK_TIMEOUT="0.5"))
        assert rc == 2, err
        assert "Traceback" not in err and ".gradshield-baseline.json" in err and "lock" in err, err
        assert time.monotonic() - t0 < 60
        assert repo.baseline.read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    rc, _, err = finish(cli(repo.root, "accept", some_row, "--reason", "x"))  # released: it works now
    assert rc == 0, err
    assert some_row in accepted(repo)


# ------------------------------------------------------------------------------------------------ kills


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, model_dir) -> Repo:
    rows = ordinary_rows(12)
    rows.insert(4, compliance_row(0))
    rows.insert(9, compliance_row(2))
    return make_repo(tmp_path_factory.mktemp("mixed") / "repo", model_dir, rows)


_KILL_AT = """
    import os, signal
    _under = os.environ["GS_KILL_UNDER"]
    _real = os.{fn}
    _calls = []

    def _path(a):
        if isinstance(a, int):  # a file descriptor: its path (Linux)
            try:
                return os.readlink(f"/proc/self/fd/{{a}}")
            except OSError:
                return ""
        return os.fspath(a)

    def {fn}(*args, **kwargs):
        if _path(args[{arg}]).startswith(_under):  # only the writes under test, not e.g. the gradient cache
            _calls.append(1)
            if len(_calls) == {at}:
                os.kill(os.getpid(), signal.{sig})  # a CI cancellation (or an OOM kill) arriving right here
        return _real(*args, **kwargs)

    os.{fn} = {fn}
"""


def kill_at(fn: str, at: int, sig: str) -> str:
    """A prelude for `child`: the `at`-th call of os.replace (by destination) or os.fsync (by the file's path)
    on a path under $GS_KILL_UNDER sends `sig` to the child's own process first, then runs the real call."""
    return _KILL_AT.format(fn=fn, arg=1 if fn == "replace" else 0, at=at, sig=sig)


def _stale(dest: Path, removed: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(dest, [ordinary_row(900)])
    write_jsonl(removed, [ordinary_row(901)])


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_filter_killed_between_its_renames_leaves_a_consistent_pair(mixed, tmp_path):
    """SIGTERM (a CI cancellation) arrives between `filter`'s two renames, where a previous run's DEST and removed
    file lie: the signal waits for the second rename, so the pair on disk is whole (DEST and removed rows from
    the same run, together the source's rows), no temporary file is left, and the exit status says killed."""
    dest = tmp_path / "out" / "clean.jsonl"
    removed = dest.with_name("clean.removed.jsonl")
    _stale(dest, removed)
    p = child(
        mixed.root,
        kill_at("replace", 2, "SIGTERM"),
        "filter",
        str(mixed.data),
        str(dest),
        GS_KILL_UNDER=str(dest.parent.resolve()),
    )
    rc, _, err = finish(p)
    assert rc in (143, -signal.SIGTERM), err
    kept, dropped = _records(dest), _records(removed)
    source = _records(mixed.data)
    assert dropped and sorted(map(json.dumps, kept + dropped)) == sorted(map(json.dumps, source)), (kept, dropped)
    assert leftovers(dest.parent) == []


def test_filter_sigkilled_between_its_renames_keeps_the_old_dest(mixed, tmp_path):
    """SIGKILL cannot be held back: killed between the two renames, the removed rows are this run's but DEST, the
    commit point renamed last, is still the previous run's, so a DEST never comes without its removed rows (the
    documented state; rerunning `filter` completes it)."""
    dest = tmp_path / "out" / "clean.jsonl"
    removed = dest.with_name("clean.removed.jsonl")
    _stale(dest, removed)
    old_dest = dest.read_bytes()
    p = child(
        mixed.root,
        kill_at("replace", 2, "SIGKILL"),
        "filter",
        str(mixed.data),
        str(dest),
        GS_KILL_UNDER=str(dest.parent.resolve()),
    )
    rc, _, err = finish(p)
    assert rc == -signal.SIGKILL, err
    assert dest.read_bytes() == old_dest
    assert {json.dumps(r) for r in _records(removed)} <= {json.dumps(r) for r in _records(mixed.data)}


def test_filter_killed_while_writing_changes_nothing_and_cleans_up(mixed, tmp_path):
    """SIGTERM while the outputs are being written (at the first fsync, before any rename): DEST and the removed
    rows are exactly the previous run's, and no `.NAME.*.tmp` is left behind."""
    dest = tmp_path / "out" / "clean.jsonl"
    removed = dest.with_name("clean.removed.jsonl")
    _stale(dest, removed)
    before = (dest.read_bytes(), removed.read_bytes())
    p = child(
        mixed.root,
        kill_at("fsync", 1, "SIGTERM"),
        "filter",
        str(mixed.data),
        str(dest),
        GS_KILL_UNDER=str(dest.parent.resolve()),
    )
    rc, _, err = finish(p)
    assert rc in (143, -signal.SIGTERM), err
    assert (dest.read_bytes(), removed.read_bytes()) == before
    assert leftovers(dest.parent) == []


def test_a_sigkilled_writes_leftover_is_removed_by_the_next_run(repo):
    """SIGKILL (no cleanup possible) in the middle of `accept`'s write leaves `..gradshield-baseline.json.PID.*.tmp`
    and the old baseline. The next `accept` removes that leftover once it is stale (its PID is dead; aged here as
    if killed two minutes ago) and keeps a live process's temporary file, a fresh one, and other files."""
    before = repo.baseline.read_bytes()
    row1, row2 = data_ids(repo)[:2]
    p = child(
        repo.root,
        kill_at("fsync", 1, "SIGKILL"),
        "accept",
        row1,
        "--reason",
        "x",
        GS_KILL_UNDER=str(repo.root.resolve()),
    )
    rc, _, _ = finish(p)
    assert rc == -signal.SIGKILL
    assert repo.baseline.read_bytes() == before
    left = leftovers(repo.root)
    assert len(left) == 1 and left[0].startswith(f".{repo.baseline.name}.{p.pid}."), left
    stale = repo.root / left[0]
    old = time.time() - 120
    os.utime(stale, (old, old))
    live = repo.root / f".{repo.baseline.name}.{os.getpid()}.abcd1234.tmp"  # this test process: alive
    live.write_text("in use")
    os.utime(live, (old, old))
    fresh = repo.root / f".{repo.baseline.name}.{p.pid}.fresh123.tmp"  # dead PID, but seconds old
    fresh.write_text("maybe another PID namespace's")
    other = repo.root / f".train.jsonl.{p.pid}.abcd1234.tmp"  # not this target's
    other.write_text("x")
    os.utime(other, (old, old))
    rc, _, err = finish(cli(repo.root, "accept", row2, "--reason", "y"))
    assert rc == 0, err
    assert not stale.exists()
    assert live.exists() and fresh.exists() and other.exists()
    assert row2 in accepted(repo)


def test_card_that_fails_writes_no_image(tmp_path):
    """A card update that fails (an unclosed gradshield section) writes nothing: no PNG, the card untouched."""
    pytest.importorskip("matplotlib")
    from gradshield_lint.hub import CardError, write_card_report
    from gradshield_lint.lint.findings import Finding, LintResult
    from gradshield_lint.report.card import IMAGE_NAME, SECTION_START

    card = tmp_path / "README.md"
    original = f"---\nlicense: mit\n---\n{SECTION_START}\nno end marker\n".encode()
    card.write_bytes(original)
    result = LintResult(
        threshold=0.2,
        threshold_method="mad",
        rows_total=3,
        rows_scored=3,
        findings=[Finding("a" * 16, "data/x.jsonl", 1, 0.9, 0.2, "text")],
        scores=[0.1, 0.0, 0.9],
    )
    with pytest.raises(CardError):
        write_card_report(card, result)
    assert card.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"], f"{IMAGE_NAME} or a temp file written"
    up = write_card_report(tmp_path / "new" / "README.md", result)  # and a good one writes both
    assert up.image_path is not None and up.image_path.is_file() and up.card_path.is_file()


# ------------------------------------------------------------------------------------------------ documented


def test_max_rows_zero_lists_every_row(tmp_path):
    """`report.max_rows: 0` lists all rows (the configuration schema says so), in the text report and the job
    summary; a positive value still limits."""
    from gradshield_lint.lint.findings import Finding, LintResult
    from gradshield_lint.report import github_summary, render

    findings = [Finding(f"{i:016x}", "data/x.jsonl", i + 1, 1.0 + i, 0.5, f"row number {i}") for i in range(7)]
    result = LintResult(threshold=0.5, threshold_method="mad", rows_total=7, rows_scored=7, findings=findings)
    text = render(result, "text", max_rows=0)
    assert all(f"row number {i}" in text for i in range(7)) and "more flagged" not in text
    summary = github_summary(result, max_rows=0)
    assert all(f"row number {i}" in summary for i in range(7))
    limited = render(result, "text", max_rows=2)
    assert sum(f"row number {i}" in limited for i in range(7)) == 2 and "5 more flagged" in limited


def test_max_rows_zero_in_the_configuration(mixed, tmp_path):
    """The same through the CLI: `report: {max_rows: 0}` in .gradshield.yaml, `scan` lists both flagged rows."""
    shutil.copytree(mixed.root, tmp_path / "repo")
    repo = Repo(tmp_path / "repo", mixed.model_dir)
    repo.write_config(report={"max_rows": 0})
    r = repo.run("scan")
    assert r.exit_code == 1, describe(r)
    assert r.stdout.count("train.jsonl:") == 2, r.stdout


def test_quiet_loading_silences_the_gguf_bar(monkeypatch):
    """`load_model(progress=False)` (what -q and a non-TTY stderr give) silences the bar that transformers' GGUF
    loader draws with tqdm directly, past transformers' own switch, and restores every switch afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from gradshield_lint.scoring import model

    bars = io.StringIO()

    def fake_load(spec, cache_dir=None):  # the GGUF path: the loader iterates its tensors under its module's `tqdm`
        for _ in gguf_utils.tqdm(range(5), desc="Converting and de-quantizing GGUF tensors...", file=bars):
            pass
        return "loaded"

    monkeypatch.setattr(model, "_load", fake_load)
    tf_on, hub_off, real_tqdm = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled(), gguf_utils.tqdm
    assert model.load_model(model.ModelSpec(), progress=False) == "loaded"
    assert "de-quantizing" not in bars.getvalue()
    assert (hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()) == (tf_on, hub_off)
    assert gguf_utils.tqdm is real_tqdm
    model.load_model(model.ModelSpec(), progress=True)
    assert "de-quantizing" in bars.getvalue()  # the bar is real: shown when progress is on


@pytest.mark.integration
def test_quiet_cli_loads_the_embedded_gguf_without_a_bar(tmp_path):
    """The embedded GGUF model loaded as `gradshield-lint -q` loads it (progress off), in a real process: nothing
    about de-quantizing on stderr."""
    from gradshield_lint.scoring.model import embedded_model_dir

    try:
        embedded_model_dir()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"embedded model not installed: {exc}")
    code = "from gradshield_lint.scoring.model import ModelSpec, load_model; load_model(ModelSpec(device='cpu'), progress=False)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "de-quantizing" not in out.stderr and "it/s]" not in out.stderr, out.stderr  # no tqdm bar at all
