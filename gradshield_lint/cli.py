"""The `gradshield-lint` command line. Nothing else imports this module.

Exit codes: 0 clean, 1 findings, 2 usage, configuration or input error.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click

from .atomic import atomic_write_text
from .errors import GradshieldError


@dataclass
class Context:
    config_path: Path | None
    quiet: bool
    model: str | None = None
    device: str | None = None

    @property
    def progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def config(self):
        from .config import load_config

        return load_config(self.config_path)


class _Group(click.Group):
    """Turns user errors into a one-line message and exit code 2: never a traceback for bad input."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GradshieldError as exc:
            click.echo(f"gradshield-lint: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Configuration file (default: the .gradshield.yaml found from the current directory up to the repository root).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars and no tables on stderr.")
@click.option("--model", envvar="GRADSHIELD_MODEL", help="Scoring model, overriding model.name: 'embedded', a Hub id, a local directory or a .gguf file [env: GRADSHIELD_MODEL].")
@click.option("--device", envvar="GRADSHIELD_DEVICE", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Device, overriding model.device [env: GRADSHIELD_DEVICE].")
@click.version_option(package_name="gradshield-lint")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, quiet: bool, model: str | None, device: str | None) -> None:
    """Lint LLM finetuning datasets for rows that would erode a model's safety alignment.

    Each row gets a Finetuning Implicit Harmfulness Score (FIHS, GradShield): how much one gradient step on that
    row alone would push the scoring model toward complying with harmful requests. Positive means harmful.
    """
    ctx.obj = Context(config_path=config_path, quiet=quiet, model=model, device=device)


def _engine(ctx: Context, cfg, **overrides):
    from .engine import Engine, settings_from_config

    settings = settings_from_config(cfg)
    if ctx.model:
        # the shipped adapter belongs to the embedded model only; another model gets none unless configured
        adapter = settings.model.adapter if ctx.model == "embedded" else (None if settings.model.adapter == "embedded" else settings.model.adapter)
        settings = replace(settings, model=replace(settings.model, name=ctx.model, adapter=adapter))
    if ctx.device:
        settings = replace(settings, model=replace(settings.model, device=ctx.device))
    proxy, method = overrides.get("proxy"), overrides.get("method")
    if proxy:
        settings = replace(settings, proxy=replace(settings.proxy, proxy=proxy))
    if method:
        settings = replace(settings, score=replace(settings.score, method=method))
    if overrides.get("normalize") is not None:
        settings = replace(settings, score=replace(settings.score, normalize=overrides["normalize"]))
    return Engine(settings, progress=ctx.progress)


def _read_rows(cfg, files):
    from .rows import iter_rows

    shape = cfg.rows.row_shape()
    rows = []
    for f in files:
        rows.extend(iter_rows(f, shape))
    return rows


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["auto", "jvp", "fd", "exact", "persample"]), help="How FIHS is computed (default: from the configuration, `auto`).")
@click.option("--proxy", type=click.Choice(["margin", "first-token", "refusal-nll"]), help="Proxy harmfulness score whose gradient defines FIHS.")
@click.option("--normalize/--raw", default=None, help="Cosine between −∇L(row) and ∇H instead of the raw dot product.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write one JSON object per row (JSONL) here instead of stdout.")
@click.option("--top", default=10, show_default=True, help="How many of the highest-scoring rows to show on stderr.")
@click.pass_obj
def score(ctx: Context, files: tuple[Path, ...], method: str | None, proxy: str | None, normalize: bool | None, output: Path | None, top: int) -> None:
    """Score every row of FILES and write one JSON object per row.

    Keys: id, file, line, fihs, raw, truncated, tokens. No baseline and no threshold: use `check` or `scan` for a
    verdict.
    """
    cfg = ctx.config()
    rows = _read_rows(cfg, files)
    engine = _engine(ctx, cfg, proxy=proxy, method=method, normalize=normalize)
    scored = engine.score_rows(rows)
    lines = [
        json.dumps(
            {
                "id": s.row.id,
                "file": s.row.source,
                "line": s.row.line,
                "fihs": s.score.fihs,
                "raw": s.score.raw,
                "truncated": s.score.truncated,
                "tokens": s.score.n_tokens,
            },
            ensure_ascii=False,
        )
        for s in scored
    ]
    text = "".join(line + "\n" for line in lines)
    if output is not None:
        atomic_write_text(output, text)
    else:
        click.echo(text, nl=False)
    if not ctx.quiet and top > 0:
        best = sorted(scored, key=lambda s: s.score.fihs, reverse=True)[:top]
        click.echo(f"{len(scored)} rows scored ({engine.method}, proxy {engine.settings.proxy.proxy}); highest:", err=True)
        for s in best:
            first = next((m.content for m in s.row.messages if m.role == "assistant"), "")
            excerpt = " ".join(first.split())[:60]
            click.echo(f"  {s.row.source}:{s.row.line:<6} {s.score.fihs:+.4g}  {excerpt}", err=True)


# ------------------------------------------------------------------------------------------------ linter

_FORMAT = click.option("-f", "--format", "fmt", type=click.Choice(["text", "json", "sarif", "github"]), help="Report format on stdout (default: report.format in the configuration, `text`).")
_OUTPUT = click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report here instead of stdout.")


def _extra_outputs(f):
    f = click.option("--sarif", "sarif_file", type=click.Path(path_type=Path), help="Also write a SARIF 2.1.0 file (for code scanning).")(f)
    f = click.option("--json", "json_file", type=click.Path(path_type=Path), help="Also write the JSON report.")(f)
    f = click.option("--summary", "summary_file", type=click.Path(path_type=Path), help="Also append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY).")(f)
    return f


def _emit(ctx: Context, cfg, result, fmt, output, sarif_file=None, json_file=None, summary_file=None) -> None:
    from .report import github_summary, render

    rcfg = cfg.report
    text = render(result, fmt or rcfg.format, max_rows=rcfg.max_rows, excerpt_chars=rcfg.excerpt_chars)
    if output is not None:
        atomic_write_text(output, text)
    else:
        click.echo(text, nl=not text.endswith("\n"))
    if sarif_file is not None:
        atomic_write_text(sarif_file, render(result, "sarif"))
    if json_file is not None:
        atomic_write_text(json_file, render(result, "json"))
    if summary_file is not None:
        # Appended, not replaced: GitHub collects every step's summary in the same file.
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(github_summary(result, max_rows=rcfg.max_rows, excerpt_chars=rcfg.excerpt_chars))


def _files(cfg, files, baseline_opt: Path | None = None) -> list[Path]:
    from .lint import expand_files

    # the baseline, the configuration and a custom probe set are JSON(L) too; never read them as datasets
    skip = [cfg.baseline_path] + [p for p in (cfg.path, baseline_opt, cfg.probes_path) if p is not None]
    out = expand_files(files, cfg.files, cfg.root, skip)
    if not out and not files:
        raise click.UsageError("no dataset files given and none match the configured `files` globs")
    return out


def _baseline_path(cfg, option: Path | None) -> Path:
    return option if option is not None else cfg.baseline_path


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_opt", type=click.Path(path_type=Path), help="Baseline file (default: `baseline` in the configuration, .gradshield-baseline.json at the repository root).")
@click.option("--diff-base", metavar="REF", help="Rows present at this git revision are not new. Without a baseline, the threshold is found on a sample of those rows.")
@click.option("--no-baseline", is_flag=True, help="Ignore any baseline (use with --diff-base).")
@click.option("--exit-zero", is_flag=True, help="Report findings but exit 0 (report-only runs).")
@_FORMAT
@_OUTPUT
@_extra_outputs
@click.pass_obj
def check(ctx: Context, files, baseline_opt, diff_base, no_baseline, exit_zero, fmt, output, sarif_file, json_file, summary_file) -> None:
    """Check FILES for new rows above the baseline's threshold (the pre-commit and CI entry point).

    Only rows the baseline does not know are scored, so a check costs what its new rows cost. Exit 0 when clean,
    1 when a new row scores above the threshold (and was not accepted), 2 on a usage, configuration or input
    error. Under pre-commit's pre-push stage, rows already pushed (PRE_COMMIT_FROM_REF) are not new either.
    """
    from .lint import check as run_check, pre_commit_from_ref

    cfg = ctx.config()
    paths = _files(cfg, files, baseline_opt)
    if not paths:
        return  # only the baseline or the configuration changed: no rows to check
    bpath = None if no_baseline else _baseline_path(cfg, baseline_opt)
    if bpath is not None and not bpath.exists() and baseline_opt is None and diff_base:
        bpath = None  # no baseline yet: --diff-base alone decides what is new
    engine = _engine(ctx, cfg)
    result = run_check(engine, paths, cfg.rows.row_shape(), cfg.threshold, baseline_path=bpath, diff_base=diff_base or pre_commit_from_ref())
    _emit(ctx, cfg, result, fmt, output, sarif_file, json_file, summary_file)
    if result.findings and not exit_zero:
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--exit-zero", is_flag=True, help="Report findings but exit 0.")
@_FORMAT
@_OUTPUT
@_extra_outputs
@click.pass_obj
def scan(ctx: Context, files, exit_zero, fmt, output, sarif_file, json_file, summary_file) -> None:
    """Score every row of FILES and flag those above a threshold found on the spot (no baseline needed)."""
    from .lint import scan as run_scan

    cfg = ctx.config()
    engine = _engine(ctx, cfg)
    result, _ = run_scan(engine, _files(cfg, files), cfg.rows.row_shape(), cfg.threshold)
    _emit(ctx, cfg, result, fmt, output, sarif_file, json_file, summary_file)
    if result.findings and not exit_zero:
        sys.exit(1)


@main.command(name="filter")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--removed", "removed_opt", type=click.Path(path_type=Path), help="Where the removed rows go (default: DEST with .removed before the suffix).")
@click.pass_obj
def filter_cmd(ctx: Context, source: Path, dest: Path, removed_opt: Path | None) -> None:
    """Write SOURCE without its flagged rows to DEST (same format) and the removed rows beside it.

    The GradShield use, "clean my data before finetuning", in one command: every row is scored and rows above the
    adaptive threshold (found without knowing how many rows are harmful) are removed. SOURCE is never modified.
    """
    from .lint import scan as run_scan
    from .rows import iter_rows_with_records
    from .writers import WRITABLE, removed_path, write_records

    cfg = ctx.config()
    if dest.resolve() == source.resolve():
        raise click.UsageError("DEST must differ from SOURCE: the input is never overwritten")
    removed = removed_opt or removed_path(dest)
    if removed.resolve() in (source.resolve(), dest.resolve()):
        raise click.UsageError(f"the removed rows' file {removed} must differ from SOURCE and DEST")
    for out in (dest, removed):  # before minutes of scoring, not after
        if out.suffix.lower() not in WRITABLE:
            raise click.UsageError(f"cannot write {out}: its suffix must name the format, one of {', '.join(WRITABLE)}")
    shape = cfg.rows.row_shape()
    pairs = list(iter_rows_with_records(source, shape))
    result, _ = run_scan(_engine(ctx, cfg), [source], shape, cfg.threshold)
    flagged = {f.id for f in result.findings}
    keep = [rec for row, rec in pairs if row.id not in flagged]
    drop = [rec for row, rec in pairs if row.id in flagged]
    columns = list(pairs[0][1]) if pairs else None
    write_records(dest, keep, columns)
    write_records(removed, drop, columns)
    click.echo(
        f"{len(pairs)} rows, {len(drop)} removed (FIHS above {result.threshold:.4g}, {result.threshold_method}); "
        f"kept -> {dest}, removed -> {removed}",
        err=True,
    )


def _ray_options(f):
    f = click.option("--chunk-rows", default=1024, show_default=True, type=click.IntRange(1), help="With --engine ray: rows per block and per shard (the work redone when a worker dies).")(f)
    f = click.option("--workers", type=click.IntRange(1), help="With --engine ray: scoring actors (default: 1 locally; the cluster's GPUs, else its CPUs less one).")(f)
    f = click.option("--ray-address", metavar="ADDR", help="With --engine ray: join this Ray cluster (e.g. auto, or HOST:6379) instead of starting a local instance.")(f)
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Score in this process, or on Ray actors (resumable: a re-run skips rows already scored).")(f)
    return f


def _check_engine(engine: str, address, workers) -> None:
    if engine != "ray" and (address or workers):
        raise click.UsageError("--ray-address and --workers need --engine ray")


def _ray_opts(ctx: Context, address, workers, chunk_rows):
    from .distributed import RayOptions

    return RayOptions(address=address, workers=workers, chunk_rows=chunk_rows, progress=ctx.progress)


def _ray_summary(run) -> str:
    resumed = f", {run.resumed} from an interrupted run" if run.resumed else ""
    return f"ray: {run.workers} worker{'s' if run.workers != 1 else ''}, {run.scored} scored{resumed}, {run.seconds:.1f} s"


@main.group()
def baseline() -> None:
    """Create or update the stored baseline: the scores of the rows already accepted, and the threshold."""


@baseline.command("create")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_opt", type=click.Path(path_type=Path), help="Where to write it (default: from the configuration).")
@click.option("--criterion", type=click.Choice(["distribution", "finetune"]), help="How the threshold is accepted (default: threshold.criterion).")
@click.option("--force", is_flag=True, help="Overwrite an existing baseline.")
@_ray_options
@click.pass_obj
def baseline_create(ctx: Context, files, baseline_opt, criterion, force, engine, ray_address, workers, chunk_rows) -> None:
    """Score every row of FILES (default: the configured `files` globs) and write the baseline.

    With --criterion finetune the threshold is found by GradShield's binary search: each candidate threshold is
    accepted when a brief LoRA finetune on the rows it keeps leaves the probe harmfulness within a tolerance of the
    starting model's (slow: one short finetune per search step; the baseline records the iterations and seconds).
    """
    from dataclasses import replace as dc_replace

    from .baseline import write_baseline
    from .lint import create_baseline, read_all

    cfg = ctx.config()
    path = _baseline_path(cfg, baseline_opt)
    if path.exists() and not force:
        raise click.UsageError(f"{path} exists; use `baseline update`, or --force to start over")
    tcfg = dc_replace(cfg.threshold, criterion=criterion) if criterion else cfg.threshold
    _check_engine(engine, ray_address, workers)
    if engine == "ray":
        from .distributed import create_baseline_ray

        opts = _ray_opts(ctx, ray_address, workers, chunk_rows)
        b, run, values = create_baseline_ray(_engine(ctx, cfg).settings, _files(cfg, files, baseline_opt), cfg.rows.row_shape(), tcfg, path, opts)
        above = sum(s > b.threshold.value for s in values)
        click.echo(f"baseline written to {path}: {run.rows} rows, threshold {b.threshold.value:.4g} ({b.threshold.method}); {above} rows above it; {_ray_summary(run)}", err=True)
        return
    rows = read_all(_files(cfg, files, baseline_opt), cfg.rows.row_shape())
    b, scored = create_baseline(_engine(ctx, cfg), rows, tcfg)
    write_baseline(path, b)
    above = sum(s > b.threshold.value for s in scored.scores)
    click.echo(f"baseline written to {path}: {len(rows)} rows, threshold {b.threshold.value:.4g} ({b.threshold.method}); {above} rows above it", err=True)


@baseline.command("update")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_opt", type=click.Path(path_type=Path), help="The baseline to update (default: from the configuration).")
@click.option("--rescore", is_flag=True, help="Score every row again (after the model, probes or proxy changed); finds the threshold again.")
@click.option("--rethreshold", is_flag=True, help="Find the threshold again on all rows (default: keep the stored one, so that concurrent updates merge cleanly).")
@_ray_options
@click.pass_obj
def baseline_update(ctx: Context, files, baseline_opt, rescore, rethreshold, engine, ray_address, workers, chunk_rows) -> None:
    """Score the rows the baseline does not know and drop rows that no longer exist.

    The stored threshold is kept unless --rethreshold or --rescore is given: two pull requests that each add rows
    then change only their own lines of the baseline and merge without conflict.
    """
    from .baseline import read_baseline, write_baseline
    from .lint import read_all, update_baseline

    cfg = ctx.config()
    path = _baseline_path(cfg, baseline_opt)
    if not path.exists():
        raise click.UsageError(f"{path} does not exist; run `gradshield-lint baseline create` first")
    old = read_baseline(path)
    _check_engine(engine, ray_address, workers)
    if engine == "ray":
        from .distributed import update_baseline_ray

        opts = _ray_opts(ctx, ray_address, workers, chunk_rows)
        new, run = update_baseline_ray(_engine(ctx, cfg).settings, old, _files(cfg, files, baseline_opt), cfg.rows.row_shape(), cfg.threshold, path, opts, rescore=rescore, rethreshold=rethreshold)
        click.echo(f"baseline updated: {run.scored + run.resumed} rows scored, {len(new.scores)} rows, threshold {new.threshold.value:.4g}; {_ray_summary(run)}", err=True)
        return
    rows = read_all(_files(cfg, files, baseline_opt), cfg.rows.row_shape())
    new, n_scored = update_baseline(_engine(ctx, cfg), old, rows, cfg.threshold, rescore=rescore, rethreshold=rethreshold)
    write_baseline(path, new)
    click.echo(f"baseline updated: {n_scored} rows scored, {len(new.scores)} rows, threshold {new.threshold.value:.4g}", err=True)


@main.command()
@click.argument("row_id")
@click.option("--reason", required=True, help="Why this row is fine (kept in the baseline and shown in reports).")
@click.option("--baseline", "baseline_opt", type=click.Path(path_type=Path), help="The baseline (default: from the configuration).")
@click.pass_obj
def accept(ctx: Context, row_id: str, reason: str, baseline_opt: Path | None) -> None:
    """Accept a flagged row (by the id a report shows): it stops failing the check and is listed as accepted."""
    from .baseline import accept as accept_row, read_baseline, write_baseline

    cfg = ctx.config()
    path = _baseline_path(cfg, baseline_opt)
    write_baseline(path, accept_row(read_baseline(path), row_id, reason))
    click.echo(f"accepted {row_id} in {path}", err=True)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_opt", type=click.Path(path_type=Path), help="Judge only rows new to this baseline (default: scan every row).")
@click.option("--push", "repo_id", metavar="REPO_ID", help="Upload the card (and image) to this Hub dataset repository.")
@click.option("--create-pr", is_flag=True, help="With --push: open a pull request instead of committing to main.")
@click.option("--endpoint", envvar="HF_ENDPOINT", help="Hub endpoint (default: huggingface.co or $HF_ENDPOINT).")
@click.pass_obj
def card(ctx: Context, path: Path, baseline_opt, repo_id, create_pr, endpoint) -> None:
    """Write the report into the dataset card (README.md) of the dataset at PATH.

    One `gradshield:` metadata key and a section between `<!-- gradshield:start -->` and `<!-- gradshield:end -->`,
    replaced on each run; everything else in the card stays as it was. A histogram image is written beside it.
    """
    from .hub import push_card, write_card_report
    from .lint import check as run_check, scan as run_scan

    cfg = ctx.config()
    folder = path if path.is_dir() else path.parent
    files = _files(cfg, [path])
    engine = _engine(ctx, cfg)
    if baseline_opt is not None:
        result = run_check(engine, files, cfg.rows.row_shape(), cfg.threshold, baseline_path=baseline_opt)
    else:
        result, _ = run_scan(engine, files, cfg.rows.row_shape(), cfg.threshold)
    upd = write_card_report(folder / "README.md", result)
    click.echo(f"wrote {upd.card_path}" + (f" and {upd.image_path}" if upd.image_path else ""), err=True)
    if repo_id:
        import os

        url = push_card(repo_id, upd.card_path, upd.image_path, create_pr=create_pr, token=os.environ.get("HF_TOKEN"), endpoint=endpoint)
        click.echo(url)


if __name__ == "__main__":  # pragma: no cover
    main()
