"""Baselines scored on a Ray cluster: batch inference over rows with θ and ∇H fixed, resumable, loss-free.

The flow (the driver is the `gradshield-lint` process; it must run on a node of the cluster, e.g. the head):

1. A Ray task loads the scoring model once (on a GPU when the cluster has one) and reports the fingerprint and
   the recorded method/dtype/device; it also writes ∇H into the cache, so actors on that node load it instead of
   computing it again. A model that cannot be loaded fails here, as a user error, before any row is read.
2. The driver reads the rows as a single process does (`rows.iter_rows`, hashed, de-duplicated by id), skips the
   ids already scored (shards of an interrupted run, or the baseline's rows for `update`) and writes the rest to
   staging Parquet files of `chunk_rows` rows each, one chunk in memory at a time. The driver keeps only row ids.
3. Ray Data reads the staging files, one block per file (read tasks on the driver's node: no shared filesystem)
   and scores them with `map_batches` on a pool of actors (`_Scorer`): each loads the model and ∇H once, from the
   picklable `EngineSettings`, never from a pickled model. Ray restarts an actor that dies and retries its tasks
   (`max_restarts`, `max_task_retries`); a failed attempt returns nothing, so no row is counted twice.
4. Every result block that reaches the driver is written as one shard (JSON, id -> score, written atomically)
   in a work directory keyed by the fingerprint and the baseline's path. A killed run leaves complete shards only;
   a re-run reads them and scores only what is missing. At the end every staged id must have a score (otherwise
   an internal error, never a silent gap), the baseline is computed and written exactly as a single process does
   (same threshold code, same file), and the work directory is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradshield_lint.config import ThresholdConfig
from gradshield_lint.errors import ConfigError, GradshieldError, InputError
from gradshield_lint.io.rows import Message, Row, RowShape, iter_rows
from gradshield_lint.lint.baseline import (
    Baseline,
    Fingerprint,
    KnownIds,
    Recorded,
    baseline_lock,
    check_compatible,
    diff_rows,
    make_baseline,
    modify_baseline,
    rebase,
    update_scores,
    upgrade_ids,
    write_baseline,
)
from gradshield_lint.scoring.engine import Engine, EngineSettings

RAY_HINT = "--engine ray needs Ray: pip install 'gradshield-lint[ray]'"
SHARD_PREFIX = "shard-"
STAGING_PREFIX = "staging-"
# Per actor: restarts after a crash (OOM kill, lost node, preemption) and retries of the task it was running.
# Bounded, not Ray Data's default of forever: an actor that dies on every attempt must fail the run.
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4


class InternalError(GradshieldError):
    """A bug or an unexpected state, not a user error: its own exit code, never 1 or 2."""

    exit_code = 3


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray instance with `workers` CPUs
    workers: int | None = None  # actors; None: 1 locally, the cluster's GPUs (else CPUs) when joining
    chunk_rows: int = 1024  # rows per staging file, Ray block and shard: the work redone when a worker dies
    progress: bool = False


@dataclass
class RayRun:
    """What a run did, for the CLI's one-line summary."""

    rows: int  # distinct rows in the data
    scored: int  # rows scored by this run (not from shards of an earlier one)
    resumed: int  # rows whose scores came from an interrupted run's shards
    workers: int
    seconds: float


def require_ray():
    """The `ray` module, or a ConfigError (exit 2) naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    return ray


# ------------------------------------------------------------------------------------------------ rows


def iter_unique_rows(files: Sequence[str | Path], shape: RowShape | None) -> Iterator[Row]:
    """Rows of all files, each id once, at its first place: `lint.read_all`, streamed (the driver keeps ids)."""
    seen: set[str] = set()
    for f in files:
        for row in iter_rows(f, shape):
            if row.id not in seen:
                seen.add(row.id)
                yield row


def _row_record(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "messages": json.dumps([[m.role, m.content] for m in row.messages], ensure_ascii=False),
        "source": row.source,
        "line": row.line,
    }


def _record_row(rid: str, messages: str, source: str, line: int) -> Row:
    return Row(str(rid), tuple(Message(r, c) for r, c in json.loads(messages)), str(source), int(line))


# ------------------------------------------------------------------------------------------------ work directory


class WorkDir:
    """Shards of one (fingerprint, baseline) pair. One run at a time (a file lock); shards written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def for_baseline(cache_root: Path, fingerprint: Fingerprint, baseline_path: Path) -> WorkDir:
        key = json.dumps(
            {"fingerprint": fingerprint.to_dict(), "baseline": str(Path(baseline_path).resolve())}, sort_keys=True
        )
        return WorkDir(cache_root / "ray-shards" / hashlib.sha256(key.encode()).hexdigest()[:24])

    def lock(self):
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ConfigError(
                f"another run is scoring this baseline (its shards are in {self.root}); wait for it"
            ) from None
        return lock

    def shards(self) -> list[Path]:
        return sorted(self.root.glob(f"{SHARD_PREFIX}*.json"))

    def read_scores(self) -> dict[str, float]:
        """Scores in all shards. A shard that does not parse (only possible if edited by hand: writes are atomic)
        is dropped, so its rows are scored again."""
        out: dict[str, float] = {}
        for p in self.shards():
            try:
                out.update({str(k): float(v) for k, v in json.loads(p.read_text(encoding="utf-8"))["scores"].items()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                p.unlink(missing_ok=True)
        return out

    def write_shard(self, scores: Mapping[str, float]) -> Path:
        from gradshield_lint.io.atomic import atomic_write_text

        path = self.root / f"{SHARD_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        # repr-exact floats: the merge rounds once, as a single process does
        atomic_write_text(path, json.dumps({"scores": dict(scores)}, sort_keys=True))
        return path

    def new_staging(self) -> Path:
        for old in self.root.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)  # from a killed run: we hold the lock, nobody else uses it
        d = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stage_rows(rows: Iterable[Row], skip: Container[Any], staging: Path, chunk_rows: int) -> tuple[list[str], int]:
    """Write the rows whose id is not in `skip` as Parquet files of `chunk_rows` rows. Returns (staged ids, rows
    seen). One chunk is in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    staged: list[str] = []
    chunk: list[dict[str, Any]] = []
    seen = 0

    def flush() -> None:
        if chunk:
            pq.write_table(pa.Table.from_pylist(chunk), staging / f"{len(staged):012d}.parquet")
            staged.extend(r["id"] for r in chunk)
            chunk.clear()

    for row in rows:
        seen += 1
        if row.id in skip:
            continue
        chunk.append(_row_record(row))
        if len(chunk) >= chunk_rows:
            flush()
    flush()
    return staged, seen


# ------------------------------------------------------------------------------------------------ Ray side


class _Scorer:
    """A Ray Data actor: one Engine (model, probes, ∇H) per actor, loaded once from picklable settings."""

    def __init__(self, settings: EngineSettings) -> None:
        self.engine = Engine(settings)
        _ = self.engine.gradient  # load now, not on the first batch: actor start-up is where Ray expects it

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from gradshield_lint.scoring.fihs import score_windows

        eng = self.engine
        rows = [_record_row(*t) for t in zip(batch["id"], batch["messages"], batch["source"], batch["line"])]
        errors = [""] * len(rows)
        encoded, good = [], []
        for i, row in enumerate(rows):
            try:
                encoded.append(eng.encode_windows(row))
                good.append(i)
            except InputError as exc:  # reported by the driver with file and line, never raised in the actor
                errors[i] = str(exc)
        fihs = np.zeros(len(rows), dtype=np.float64)
        for i, s in zip(good, score_windows(eng.scoring_model, eng.gradient, encoded, eng.settings.score)):
            fihs[i] = s.fihs
        return {
            "id": np.array([r.id for r in rows], dtype=object),
            "fihs": fihs,
            "error": np.array(errors, dtype=object),
        }


def _describe(settings: EngineSettings) -> tuple[Fingerprint, Recorded]:
    """Run as a Ray task where the actors will run: fingerprint and recorded, and ∇H written to the cache."""
    engine = Engine(settings)
    _ = engine.gradient
    return engine.fingerprint(), engine.recorded()


def _uses_gpu(ray: Any, settings: EngineSettings) -> bool:
    return settings.model.device in ("auto", "cuda") and ray.cluster_resources().get("GPU", 0) >= 1


class _Session:
    """`ray.init` for the run (local instance or an existing cluster) and `ray.shutdown` after; a process that is
    already connected (a notebook, a test) keeps its connection."""

    def __init__(self, ray: Any, opts: RayOptions) -> None:
        self.ray, self.opts, self.owned = ray, opts, False

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
                "configure_logging": True,
            }
            try:
                if self.opts.address:
                    ray.init(address=self.opts.address, **kwargs)
                else:
                    # one CPU more than the actors take: Ray Data starts the actors first, and actors on every
                    # CPU leave none for the read tasks (the run hangs: ray-project/ray#44687)
                    ray.init(num_cpus=(self.opts.workers or 1) + 1, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"the Ray cluster at {self.opts.address}" if self.opts.address else "a local Ray instance"
                raise ConfigError(f"cannot start or join {where}: {exc}") from None
            self.owned = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.ray.shutdown()


def _workers(ray: Any, opts: RayOptions, gpu: bool) -> int:
    if opts.workers:
        return opts.workers
    if opts.address is None:
        return 1
    res = ray.cluster_resources()
    # CPU actors leave one CPU free for the read tasks (see _Session)
    return max(1, int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 2)) - 1)


def _unwrap(ray: Any, exc: BaseException) -> BaseException:
    """A user error raised inside a Ray task (a model that cannot load) as itself, not as Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, GradshieldError) else exc


def _describe_remote(ray: Any, settings: EngineSettings, gpu: bool) -> tuple[Fingerprint, Recorded]:
    task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_retries=MAX_TASK_RETRIES)(_describe)
    from ray.exceptions import RayTaskError

    try:
        fp, rec = ray.get(task.remote(settings))
    except RayTaskError as exc:
        raise _unwrap(ray, exc) from None
    return fp, rec


def _read_staging(ray: Any, staging: Path) -> Any:
    """The staging files as a Dataset: exactly one block per file (one chunk, one actor call, one shard), read on
    the driver's node (no shared filesystem is needed) by at most two read tasks at a time that take no CPU slot.

    A Datasource of our own rather than `read_parquet`: Ray's Parquet reader rolls files under
    `target_min_block_size` (1 MiB) into one block — a staged job became ONE block, one actor got all the work and
    its scores came back at the very end as one shard, so a kill lost everything — and it starts footer-reading
    actors and a read task per file, dozens of processes on a small machine. This one reads each file with
    pyarrow and nothing else."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    files = sorted(staging.glob("*.parquet"))

    class _Staging(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(f.stat().st_size for f in files)

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: Any = None, data_context: Any = None
        ) -> list[Any]:
            return [
                ReadTask(
                    _reader(str(f)),
                    BlockMetadata(num_rows=None, size_bytes=f.stat().st_size, exec_stats=None, input_files=(str(f),)),
                )
                for f in files
            ]

        @property
        def supports_distributed_reads(self) -> bool:
            return False  # the staging files are on the driver's disk

    return ray.data.read_datasource(_Staging(), num_cpus=0, concurrency=2, override_num_blocks=max(len(files), 1))


def _reader(path: str) -> Any:
    def read() -> list[Any]:
        import pyarrow.parquet as pq

        return [pq.read_table(path)]

    return read


@dataclass(frozen=True)
class _PoolJob:
    """The staged rows of one run, and the pool that scores them into `work`'s shards."""

    ray: Any
    settings: EngineSettings
    staging: Path
    staged: list[str]  # the staged ids; every one must come back scored
    work: WorkDir
    workers: int
    gpu: bool
    opts: RayOptions


def _score_staged(job: _PoolJob) -> int:
    """Score the staged rows with a pool of `job.workers` actors; every result block becomes a shard. Returns the
    number of rows scored."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _CONTEXT}
    try:
        for k, v in _CONTEXT.items():
            setattr(ctx, k, v)
        return _run_pool(job)
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)


# The driver's Ray Data context while it scores (restored afterwards: a library caller keeps its own).
_CONTEXT: dict[str, Any] = {
    "enable_progress_bars": False,  # ours is the one bar (rows done / total, rows/s)
    "print_on_execution_start": False,
}


def _run_pool(job: _PoolJob) -> int:
    from ray.data import ActorPoolStrategy
    from tqdm.auto import tqdm

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not "progress bars disabled" on every run
    ds = _read_staging(job.ray, job.staging)
    resources: dict[str, Any] = {"num_gpus": 1} if job.gpu else {"num_cpus": 1}
    with warnings.catch_warnings():
        # Ray Data has no named parameter for an actor's restarts and task retries, and its own default is to
        # retry for ever (an actor killed by the OOM killer on every attempt would never end the job). The bound
        # goes through `ray_remote_args`, deprecated for removal in Ray 2.64: the `ray` extra stays below 2.64.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        scored = ds.map_batches(
            _Scorer,
            fn_constructor_kwargs={"settings": job.settings},
            # one call per chunk: score_windows buckets the chunk's rows' windows by length into model batches itself
            batch_size=job.opts.chunk_rows,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=job.workers),
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES,
            **resources,
        )
    pending = set(job.staged)
    done = 0
    with (
        tqdm(
            total=len(job.staged),
            desc=f"FIHS (ray, {job.workers} worker{'s' if job.workers != 1 else ''})",
            unit="row",
            disable=not job.opts.progress,
            file=sys.stderr,
            leave=False,
        ) as bar,
        warnings.catch_warnings(),
    ):
        # a job of fewer chunks than workers is normal (an update of a few rows): not a warning to the user
        warnings.filterwarnings("ignore", message=r"The (minimum|maximum) number of concurrent", category=UserWarning)
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            ids = [str(i) for i in batch["id"]]
            bad = [(i, e) for i, e in zip(ids, batch["error"]) if e]
            good = {i: float(s) for i, s, e in zip(ids, batch["fihs"], batch["error"]) if not e and i in pending}
            if good:
                job.work.write_shard(good)  # before anything can fail: scored rows are never lost
                pending.difference_update(good)
                done += len(good)
                bar.update(len(good))
            if bad:  # the message names the row's file and line (Engine.encode); the shards so far are kept
                raise InputError(str(bad[0][1]))
    return done


def score_rows_ray(
    settings: EngineSettings,
    files: Sequence[str | Path],
    shape: RowShape | None,
    baseline_path: Path,
    opts: RayOptions,
    *,
    known: Container[str] | None = None,
    check_against: Baseline | None = None,
) -> tuple[Fingerprint, Recorded, dict[str, float], list[str], RayRun, WorkDir, Any]:
    """Scores of every distinct row of `files` not in `known`: (fingerprint, recorded, {id: score} for those rows,
    all row ids in data order, run summary, work directory, its held lock). The caller writes the baseline, then
    removes the work directory and releases the lock."""
    from gradshield_lint.scoring.cache import cache_root

    ray = require_ray()
    t0 = time.perf_counter()
    with _Session(ray, opts):
        gpu = _uses_gpu(ray, settings)
        fp, rec = _describe_remote(ray, settings, gpu)
        if check_against is not None:
            check_compatible(check_against, fp, baseline_path)
        work = WorkDir.for_baseline(settings.cache_dir or cache_root(), fp, baseline_path)
        lock = work.lock()
        try:
            earlier = work.read_scores()
            seen: Container[str] = known if known is not None else frozenset()
            all_ids: list[str] = []

            def rows() -> Iterator[Row]:
                for r in iter_unique_rows(files, shape):
                    all_ids.append(r.id)
                    yield r

            staging = work.new_staging()

            class _Skip:
                def __contains__(self, rid: object) -> bool:
                    return rid in seen or rid in earlier

            staged, _ = stage_rows(rows(), _Skip(), staging, opts.chunk_rows)
            workers = _workers(ray, opts, gpu)
            done = 0
            if staged:
                job = _PoolJob(
                    ray=ray,
                    settings=settings,
                    staging=staging,
                    staged=staged,
                    work=work,
                    workers=workers,
                    gpu=gpu,
                    opts=opts,
                )
                done = _score_staged(job)
            shutil.rmtree(staging, ignore_errors=True)
            scores = work.read_scores()
            wanted = [i for i in all_ids if i not in seen]
            missing = [i for i in wanted if i not in scores]
            if missing:
                raise InternalError(
                    f"{len(missing)} rows have no score after the Ray run (first: {missing[0]}); rerun to score them"
                )
            resumed = sum(1 for i in wanted if i in earlier)
            run = RayRun(
                rows=len(all_ids), scored=done, resumed=resumed, workers=workers, seconds=time.perf_counter() - t0
            )
            return fp, rec, {i: scores[i] for i in wanted}, all_ids, run, work, lock
        except BaseException:
            lock.release()
            raise


def create_baseline_ray(
    settings: EngineSettings,
    files: Sequence[str | Path],
    shape: RowShape | None,
    cfg_threshold: ThresholdConfig,
    baseline_path: Path,
    opts: RayOptions,
    *,
    accepted_from: Baseline | None = None,
) -> tuple[Baseline, RayRun, list[float]]:
    """`baseline create` on Ray: the same file a single process writes. Returns (baseline, run, scores).
    `accepted_from` (for --rescore): keep that baseline's accepted rows that still exist."""
    from gradshield_lint.lint.service import threshold_for

    if cfg_threshold.criterion == "finetune":
        raise ConfigError(
            "--engine ray scores rows only; the finetune criterion needs every row's text on one machine: "
            "use the distribution criterion, or the default engine"
        )
    fp, rec, scores, ids, run, work, lock = score_rows_ray(settings, files, shape, baseline_path, opts)
    try:
        values = [scores[i] for i in ids]
        if accepted_from is not None:  # its old 16-digit ids of rows present become full ones
            accepted_from = upgrade_ids(accepted_from, scores)
        accepted = {k: v for k, v in accepted_from.accepted.items() if k in scores} if accepted_from else None
        b = make_baseline(fp, scores, threshold_for(values, cfg_threshold, reference=True), rec, accepted)
        with baseline_lock(baseline_path):
            write_baseline(baseline_path, b)
        work.remove()
    finally:
        lock.release()
    return b, run, values


def update_baseline_ray(
    settings: EngineSettings,
    baseline: Baseline,
    files: Sequence[str | Path],
    shape: RowShape | None,
    cfg_threshold: ThresholdConfig,
    baseline_path: Path,
    opts: RayOptions,
    *,
    rescore: bool,
    rethreshold: bool = False,
) -> tuple[Baseline, RayRun]:
    """`baseline update` on Ray: `lint.update_baseline`'s rules (threshold kept unless --rethreshold/--rescore)."""
    from gradshield_lint.lint.service import threshold_for

    if rescore:
        b, run, _ = create_baseline_ray(
            settings, files, shape, cfg_threshold, baseline_path, opts, accepted_from=baseline
        )
        return b, run
    if rethreshold and cfg_threshold.criterion == "finetune":
        raise ConfigError("--rethreshold with the finetune criterion needs every row's text: use --rescore")
    _, _, new, ids, run, work, lock = score_rows_ray(
        settings, files, shape, baseline_path, opts, known=KnownIds(baseline), check_against=baseline
    )
    try:
        upgraded = upgrade_ids(baseline, ids)  # written back: old ids of rows present become full ones
        diff = diff_rows(upgraded, ids)
        merged = update_scores(upgraded, new, set(diff.removed))
        if rethreshold:
            merged = update_scores(
                merged, {}, None, threshold=threshold_for(list(merged.scores.values()), cfg_threshold, reference=True)
            )
        # merged under the baseline's lock into the file as it is now: an `accept` meanwhile is kept
        merged = modify_baseline(baseline_path, lambda current: rebase(current, baseline, merged, baseline_path))
        work.remove()
    finally:
        lock.release()
    return merged, run


__all__ = ["RAY_HINT", "RayOptions", "RayRun", "create_baseline_ray", "require_ray", "update_baseline_ray"]
