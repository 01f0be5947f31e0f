"""`baseline create|update --engine ray`: a real local Ray instance (2 CPUs, started once for this module) scores
real files with the tiny test model. The Ray baseline must equal the single-process one; a driver killed with
SIGKILL half-way must resume and score only what is missing; a scoring actor killed with SIGKILL mid-job must be
retried by Ray with nothing lost; and without Ray installed `--engine ray` is a clean exit 2.

Drivers run as real `gradshield-lint` processes joining the module's Ray instance (`--ray-address`), except the
first, which starts its own local instance. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import (
    compliance_rows,
    make_legacy_baseline,
    make_repo,
    ordinary_rows,
    run_cli,
    save_tiny_model,
    write_jsonl,
)

try:
    import ray
except ImportError:  # the no-ray test below still runs
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'gradshield-lint[ray]')")

ROOT = Path(__file__).resolve().parents[2]
N_ROWS = 120  # ordinary rows in a.jsonl; b.jsonl repeats 10 of them (de-duplicated) and adds 2 compliance rows
CHUNK = "8"
# The kill tests: one row per chunk, so the job is a hundred Ray tasks and "half-way" is a wide window (each chunk
# is its own block and shard; the tiny model scores one in about a tenth of a second)
KILL_CHUNK = "1"
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def env(tmp_path_factory, tokenizer):
    """A module-wide Ray instance, a tiny model and a cache directory shared with the Ray workers (they inherit
    the environment at `ray.init`, so the cache and PYTHONPATH are set before it)."""
    base = tmp_path_factory.mktemp("ray")
    model = save_tiny_model(base / "tiny-llama", tokenizer)
    cache = base / "cache"
    saved = {k: os.environ.get(k) for k in ("GRADSHIELD_CACHE", "PYTHONPATH")}
    os.environ["GRADSHIELD_CACHE"] = str(cache)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    import logging

    # 3 CPUs: two scoring actors and a slot for Ray Data's read tasks (as the command does for a local instance)
    ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield {"model": model, "cache": cache, "address": ray.get_runtime_context().gcs_address}
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_data(root: Path, model: Path):
    rows = ordinary_rows(N_ROWS)
    repo = make_repo(root, model, rows=rows)
    write_jsonl(root / "data" / "b.jsonl", rows[:10] + compliance_rows(2))
    return repo


def reference(repo, name="ref.json") -> dict:
    """The single-process baseline of the same rows."""
    r = run_cli(repo.root, "-q", "baseline", "create", "--baseline", name)
    assert r.exit_code == 0, r.stderr
    return json.loads((repo.root / name).read_text())


@pytest.fixture(scope="module")
def ref(env, tmp_path_factory) -> dict:
    """The single-process baseline of `make_data`'s rows, made once: every test's repository holds the same rows,
    and a baseline holds ids (content hashes) and scores, nothing of the repository's path."""
    return reference(make_data(tmp_path_factory.mktemp("ref") / "repo", env["model"]))


def assert_same_baseline(got: dict, ref: dict) -> None:
    assert got["fingerprint"] == ref["fingerprint"]
    assert got["recorded"] == ref["recorded"]
    assert sorted(got["scores"]) == sorted(ref["scores"])  # same row ids, each once
    assert len(ref["scores"]) == N_ROWS + 2
    for k, v in ref["scores"].items():
        assert got["scores"][k] == pytest.approx(v, rel=1e-4, abs=1e-9), k
    t, rt = got["threshold"], ref["threshold"]
    assert (t["method"], t["criterion"]) == (rt["method"], rt["criterion"])
    assert t["value"] == pytest.approx(rt["value"], rel=1e-4)
    above = [k for k, v in got["scores"].items() if v > t["value"]]
    assert sorted(above) == sorted(k for k, v in ref["scores"].items() if v > rt["value"])
    assert len(above) == 2  # the compliance rows


def cli(cwd: Path, *args: str, cache: Path) -> subprocess.Popen:
    """A real `gradshield-lint` process."""
    e = {**os.environ, "GRADSHIELD_CACHE": str(cache), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gradshield_lint.cli", *args],
        cwd=cwd,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(p: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        pytest.fail(f"gradshield-lint did not finish in {RUN_TIMEOUT} s\n{err}")
    return p.returncode, err


def shard_dirs(cache: Path) -> list[Path]:
    return sorted((cache / "ray-shards").glob("*")) if (cache / "ray-shards").is_dir() else []


def shard_ids(cache: Path) -> list[str]:
    """Every row id in every shard file (a list: an id scored twice would appear twice)."""
    out: list[str] = []
    for d in shard_dirs(cache):
        for p in sorted(d.glob("shard-*.json")):
            out.extend(json.loads(p.read_text())["scores"])
    return out


def wait_for(cond, timeout: float, what: str, poll: float = 0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def summary(err: str) -> dict[str, int]:
    import re

    m = re.search(r"ray: (\d+) workers?, (\d+) scored(?:, (\d+) from an interrupted run)?", err)
    assert m, err
    return {"workers": int(m[1]), "scored": int(m[2]), "resumed": int(m[3] or 0)}


# ------------------------------------------------------------------------------------------------ tests


@needs_ray
def test_ray_baseline_equals_single_process(env, ref, tmp_path):
    """A local Ray instance started by the command (no --ray-address), 2 workers: same ids, scores, threshold."""
    repo = make_data(tmp_path / "repo", env["model"])
    cache = tmp_path / "cache"
    p = cli(repo.root, "baseline", "create", "--engine", "ray", "--workers", "2", "--chunk-rows", CHUNK, cache=cache)
    rc, err = finish(p)
    assert rc == 0, err
    assert summary(err) == {"workers": 2, "scored": N_ROWS + 2, "resumed": 0}
    assert_same_baseline(json.loads(repo.baseline.read_text()), ref)
    assert shard_dirs(cache) == []  # the work directory goes once the baseline is written

    # update: two new rows scored on Ray, the stored threshold kept; equal to a single-process update
    write_jsonl(repo.root / "data" / "c.jsonl", ordinary_rows(2, start=1000))
    (repo.root / "ref.json").write_text(repo.baseline.read_text())
    r = run_cli(repo.root, "-q", "baseline", "update", "--baseline", "ref.json")
    assert r.exit_code == 0, r.stderr
    r = run_cli(repo.root, "-q", "baseline", "update", "--engine", "ray", "--ray-address", env["address"])
    assert r.exit_code == 0, r.stderr
    assert "2 scored" in r.stderr
    got, want = json.loads(repo.baseline.read_text()), json.loads((repo.root / "ref.json").read_text())
    assert sorted(got["scores"]) == sorted(want["scores"]) and len(got["scores"]) == N_ROWS + 4
    assert got["threshold"] == want["threshold"]
    for k, v in want["scores"].items():
        assert got["scores"][k] == pytest.approx(v, rel=1e-4, abs=1e-9)

    # a baseline from before issue 33 (16-digit ids): its rows are known on Ray too, and the ids come back full
    make_legacy_baseline(repo.baseline)
    r = run_cli(repo.root, "-q", "baseline", "update", "--engine", "ray", "--ray-address", env["address"])
    assert r.exit_code == 0, r.stderr
    assert "0 scored" in r.stderr, r.stderr
    assert json.loads(repo.baseline.read_text())["scores"] == got["scores"]


@needs_ray
def test_killed_driver_resumes_and_scores_each_row_once(env, ref, tmp_path):
    """SIGKILL the driver once shards exist; the shards left are whole and distinct; a re-run scores only the
    rest, and the baseline equals the single-process one."""
    repo = make_data(tmp_path / "repo", env["model"])
    cache = env["cache"]
    args = (
        "baseline",
        "create",
        "--engine",
        "ray",
        "--ray-address",
        env["address"],
        "--workers",
        "1",
        "--chunk-rows",
        KILL_CHUNK,
    )
    p = cli(repo.root, *args, cache=cache)
    try:
        wait_for(lambda: shard_ids(cache) or p.poll() is not None, 120, "the first shard")
        os.killpg(p.pid, signal.SIGSTOP)  # frozen at once; killed after counting what it left
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert not repo.baseline.exists()
    first = shard_ids(cache)  # every shard file parses: writes are atomic
    assert 0 < len(first) < N_ROWS + 2, "the kill must come half-way"
    assert len(first) == len(set(first))

    p = cli(repo.root, *args, cache=cache)
    rc, err = finish(p)
    assert rc == 0, err
    s = summary(err)
    assert s["resumed"] == len(first)  # nothing scored before is scored again...
    assert s["scored"] == N_ROWS + 2 - len(first)  # ...and nothing is missing
    assert_same_baseline(json.loads(repo.baseline.read_text()), ref)
    assert shard_dirs(cache) == []


def _scoring_actors() -> list:
    import psutil

    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "_Scorer" in " ".join(c.cmdline()):
                out.append(c)
        except psutil.Error:
            pass
    return out


@needs_ray
def test_killed_worker_is_retried_nothing_lost(env, ref, tmp_path):
    """Mid-job (shards exist, the driver still runs), SIGKILL one of the two scoring actors: Ray restarts it and
    retries its work; every row is scored, none twice, and the baseline equals the single-process one."""
    import psutil

    repo = make_data(tmp_path / "repo", env["model"])
    cache = env["cache"]
    killed: dict = {}

    def killer():
        try:
            wait_for(lambda: shard_ids(cache), 120, "the first shard")
            actors = _scoring_actors()
            for a in actors:  # freeze them, so the job cannot end between the check and the kill
                a.suspend()
            killed["done_at_kill"] = len(shard_ids(cache))
            killed["pid"] = actors[0].pid
            actors[0].kill()
            for a in actors[1:]:
                a.resume()
            before = {a.pid for a in actors}
            # Ray restarts the killed actor (max_restarts): a new scoring process appears
            killed["restarted"] = wait_for(
                lambda: [a.pid for a in _scoring_actors() if a.pid not in before], 120, "a restarted actor", poll=0.05
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
            killed["error"] = exc

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    r = run_cli(
        repo.root,
        "-q",
        "baseline",
        "create",
        "--engine",
        "ray",
        "--ray-address",
        env["address"],
        "--workers",
        "2",
        "--chunk-rows",
        KILL_CHUNK,
    )
    t.join(timeout=30)
    assert "error" not in killed, killed.get("error")
    assert r.exit_code == 0, r.stderr
    assert 0 < killed["done_at_kill"] < N_ROWS + 2, "the kill must come mid-job"
    assert killed["restarted"]
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    assert_same_baseline(json.loads(repo.baseline.read_text()), ref)


def test_engine_ray_without_ray_exits_2(tmp_path):
    """`import ray` fails (a meta-path blocker in sitecustomize): a real run exits 2 with the install hint and
    writes nothing (it fails before any model is loaded, so the model directory need not exist)."""
    repo = make_data(tmp_path / "repo", tmp_path / "no-model")
    block = tmp_path / "noray"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError('blocked: ray is not installed')\n"
        "sys.meta_path.insert(0, _NoRay())\n"
    )
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), str(ROOT)])}
    r = subprocess.run(
        [sys.executable, "-m", "gradshield_lint.cli", "baseline", "create", "--engine", "ray"],
        check=False,
        cwd=repo.root,
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "pip install 'gradshield-lint[ray]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not repo.baseline.exists()


# ------------------------------------------------------------------------------------------------ without Ray


def test_staging_dedups_skips_and_chunks(tmp_path):
    """The driver's pass: rows de-duplicated by id across files, ids already scored skipped, staging files of
    at most chunk_rows rows that hold every other row exactly once (real files, read back with pyarrow)."""
    import pyarrow.parquet as pq

    from gradshield_lint.io.rows import iter_rows
    from gradshield_lint.lint.distributed import iter_unique_rows, stage_rows

    a = write_jsonl(tmp_path / "a.jsonl", ordinary_rows(25))
    b = write_jsonl(tmp_path / "b.jsonl", ordinary_rows(5) + ordinary_rows(3, start=100))
    rows = list(iter_unique_rows([a, b], None))
    assert len(rows) == 28
    skip = {r.id for r in rows[:4]}
    staging = tmp_path / "staging"
    staging.mkdir()
    staged, seen = stage_rows(iter(rows), skip, staging, chunk_rows=10)
    assert seen == 28 and len(staged) == 24
    files = sorted(staging.glob("*.parquet"))
    sizes = [pq.read_table(f).num_rows for f in files]
    assert sizes == [10, 10, 4]
    got = [i for f in files for i in pq.read_table(f).column("id").to_pylist()]
    assert got == [r.id for r in rows[4:]]
    first = pq.read_table(files[0]).to_pylist()[0]
    want = next(r for r in iter_rows(a, None) if r.id == first["id"])
    assert (first["source"], first["line"]) == (want.source, want.line)
    assert json.loads(first["messages"]) == [[m.role, m.content] for m in want.messages]


def test_shards_are_read_back_and_a_corrupt_one_is_rescored(tmp_path):
    """Shards round-trip exactly; an unreadable shard is dropped (its rows get scored again), a temporary file
    left by a kill mid-write is ignored; a second run on the same shards is refused while the first holds them."""
    from gradshield_lint.errors import ConfigError
    from gradshield_lint.lint.distributed import WorkDir

    w = WorkDir(tmp_path / "work")
    lock = w.lock()
    w.write_shard({"a1": 0.1 + 0.2, "b2": -3e-7})
    bad = w.write_shard({"c3": 1.0})
    bad.write_text('{"scores": {"c3": 1.')  # as if edited by hand
    (w.root / ".shard-x.json.tmp").write_text("{")
    assert w.read_scores() == {"a1": 0.1 + 0.2, "b2": -3e-7}
    assert not bad.exists()
    with pytest.raises(ConfigError, match="another run"):
        WorkDir(w.root).lock()
    lock.release()
    WorkDir(w.root).lock().release()
