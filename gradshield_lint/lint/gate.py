"""The gate a `check --diff-base REF` judges by: baseline, configuration and probe set as they are at REF.

A pull request is untrusted, its baseline and `.gradshield.yaml` included: judged by its own, it could raise the
threshold, accept its own rows or point `scoring.probes` at a set nothing scores high on. So the check reads all
three through git at the base revision (`gitrefs.Revision`), never from the work tree, and compares the work
tree's versions with them: every difference becomes a `GateChange` that the reports show reviewers (changes to the
threshold, accepted rows, fingerprint, recorded scores and configuration as warnings; scores a `baseline update`
adds or drops as notes). The change itself is never applied to the check that reports it; it takes effect once
merged, which is what the reviewer decides.

The scoring model is loaded from where the base configuration names it (a hub id, or a path in the work tree: a
model is too large to copy out of git); when that path lies in the repository and the work tree changes it, that
is a warning too, and a base baseline refuses a model whose fingerprint differs.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path, PurePosixPath

from gradshield_lint.config import CONFIG_NAMES, Config, Override, config_from_text, find_config, load_config
from gradshield_lint.errors import BaselineError, ConfigError, GradshieldError
from gradshield_lint.io.gitrefs import Revision
from gradshield_lint.lint.baseline import Baseline, loads_baseline, read_baseline, upgrade_ids
from gradshield_lint.lint.findings import GateChange, GateInfo, LintResult

WARNING = "warning"
NOTE = "note"


@dataclass
class BaseGate:
    """The trusted side of a check. `config` is the base revision's configuration (its probe set copied out of git
    into a temporary file while the gate is open); `skip`: the work tree's own baseline, configuration and probe
    files, never to be read as datasets."""

    revision: Revision
    config: Config
    baseline: Baseline | None
    baseline_label: str | None
    info: GateInfo
    skip: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ opening


@contextlib.contextmanager
def open_gate(
    ref: str,
    *,
    config_opt: Path | None = None,
    baseline_opt: Path | None = None,
    use_baseline: bool = True,
    start: Path | None = None,
    overrides: Iterable[Override] = (),
) -> Iterator[BaseGate]:
    """The gate at `ref` for a check run in `start` (default: the working directory). `config_opt` and
    `baseline_opt` (the --config and --baseline options) are read at `ref` too when they lie in the repository;
    outside it they are no part of any revision and are read as given. `overrides` (--model, --device) apply to
    the base configuration before its probe set is copied out (applied after, they would rebuild the configuration
    from its document and so read the work tree's probe set). Raises ConfigError / BaselineError (exit 2) when the
    base revision's own gate is unreadable."""
    rev = Revision.open(ref, start)
    here = Path(start or Path.cwd()).resolve()
    changes: list[GateChange] = []
    with tempfile.TemporaryDirectory(prefix="gradshield-base-") as tmp:
        cfg, config_label, skip = _config_at(rev, here, config_opt, changes)
        cfg = cfg.with_overrides(overrides)
        cfg = _probes_at(rev, cfg, config_label, Path(tmp), changes, skip)
        _model_changes(rev, cfg, changes)
        baseline, baseline_label = None, None
        if use_baseline:
            baseline, baseline_label = _baseline_at(rev, cfg, baseline_opt, changes, skip)
        info = GateInfo(rev.ref, rev.commit, baseline_label, config_label, tuple(changes))
        yield BaseGate(rev, cfg, baseline, baseline_label, info, skip)


def _read_at(rev: Revision, rel: str, error: type[GradshieldError]) -> bytes | None:
    """A gate file's bytes at the revision by its literal path, or None when it has none. A link there is refused:
    following it would read another file than the one named, and resolving it is no business of a linter."""
    if rev.is_link(rel):
        raise error(
            f"is a symbolic link at {rev.ref}; gradshield-lint reads the baseline, configuration and probe set by "
            "their literal path and follows no links: commit the file itself",
            file=rev.label(rel),
        )
    return rev.read(rel)


def _work_tree_link(rev: Revision, rel: str) -> Path | None:
    """The first part of the work tree's `rel` (the file, or a folder above it) that is a symbolic link."""
    p = rev.root
    for part in PurePosixPath(rel).parts:
        p = p / part
        if p.is_symlink():
            return p
    return None


def _link_change(rev: Revision, rel: str, what: str, kind: str, changes: list[GateChange]) -> bool:
    """Record a warning when the work tree's gate file `rel` is (or lies under) a symbolic link; whether it is.
    The link is never followed, neither to read the work tree's version nor to choose the base revision's file."""
    link = _work_tree_link(rev, rel)
    if link is None:
        return False
    name = link.relative_to(rev.root).as_posix()
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    changes.append(
        GateChange(
            kind,
            WARNING,
            rel,
            None,
            f"makes {name} a symbolic link (to {target}); {what} is read by its literal path, links are not "
            f"followed: this check uses {rel} as it is at {rev.ref}",
        )
    )
    return True


def _decode(data: bytes, label: str, error: type[GradshieldError]) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"not UTF-8 (byte offset {e.start})", file=label) from None
    return text.removeprefix("\ufeff")


def _config_at(
    rev: Revision, here: Path, config_opt: Path | None, changes: list[GateChange]
) -> tuple[Config, str | None, list[Path]]:
    """The configuration at the revision, what names it in messages, and the work tree's configuration file."""
    wt_found = find_config(here) if config_opt is None else Path(config_opt)
    skip = [wt_found.absolute()] if wt_found is not None and wt_found.exists() else []
    if config_opt is not None:
        rel = rev.rel(config_opt)
        if rel is None:  # outside the repository: the workflow's own file, not the pull request's
            return load_config(config_opt), str(config_opt), skip
        data = _read_at(rev, rel, ConfigError)
        if data is None:
            raise ConfigError(
                f"no such configuration at {rev.ref}; commit it to the base branch first", file=rev.label(rel)
            )
    else:
        rel = None
        data = None
        for d in (here, *here.parents):
            for name in CONFIG_NAMES:
                cand = rev.rel(d / name)
                if cand is not None and rev.exists(cand):
                    rel = cand
                    break
            if rel is not None or d == rev.root or rev.rel(d) is None:
                break
        if rel is not None:
            data = _read_at(rev, rel, ConfigError)
    if rel is None or data is None:
        cfg = Config(root=rev.root)
        if wt_found is not None:
            wrel = rev.rel(wt_found) or str(wt_found)
            changes.append(
                GateChange(
                    "config-added",
                    WARNING,
                    wrel,
                    None,
                    f"adds the configuration {wrel}; this check uses the defaults, as at {rev.ref}",
                )
            )
        return cfg, None, skip
    label = rev.label(rel)
    root = rev.root / PurePosixPath(rel).parent
    cfg = config_from_text(_decode(data, label, ConfigError), label, root=root)
    _config_changes(rev, rel, data, cfg, wt_found, changes)
    return cfg, label, skip


def _config_changes(
    rev: Revision, rel: str, data: bytes, base: Config, wt_found: Path | None, changes: list[GateChange]
) -> None:
    wt = rev.root / rel
    if _link_change(rev, rel, "the configuration", "config-link", changes):
        pass  # its target is never read, so there is nothing to compare
    elif not wt.is_file():
        changes.append(
            GateChange(
                "config-removed",
                WARNING,
                rel,
                None,
                f"deletes the configuration {rel}; this check uses it as it is at {rev.ref}",
            )
        )
    else:
        new = wt.read_bytes()
        if new != data:
            line = _first_different_line(data, new)
            what = _config_keys_changed(base, new, rel, rev)
            changes.append(
                GateChange(
                    "config",
                    WARNING,
                    rel,
                    line,
                    f"changes the configuration {rel} ({what}); this check uses it as it is at {rev.ref}",
                )
            )
    if wt_found is not None and rev.rel(wt_found) not in (None, rel):
        wrel = rev.rel(wt_found) or str(wt_found)
        changes.append(
            GateChange(
                "config-added",
                WARNING,
                wrel,
                None,
                f"adds the configuration {wrel}, which would take the place of {rel}; this check "
                f"uses {rel} as it is at {rev.ref}",
            )
        )


def _config_keys_changed(base: Config, new: bytes, rel: str, rev: Revision) -> str:
    try:
        mine = config_from_text(new.decode("utf-8"), rel, root=base.root)
    except (GradshieldError, UnicodeDecodeError, RecursionError):
        return "the new version is not a valid configuration"
    keys = sorted(_dict_diff(base.as_dict(), mine.as_dict()))
    if not keys:
        return "no setting changed"
    return "changed: " + ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def _dict_diff(a: dict, b: dict, at: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict) and k != "columns":
            out += _dict_diff(x, y, f"{at}{k}.")
        elif x != y:
            out.append(f"{at}{k}")
    return out


def _first_different_line(old: bytes, new: bytes) -> int:
    a, b = old.split(b"\n"), new.split(b"\n")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i + 1
    return min(len(a), len(b))


def _probes_at(
    rev: Revision, cfg: Config, config_label: str | None, tmp: Path, changes: list[GateChange], skip: list[Path]
) -> Config:
    """`cfg` with its probe set copied out of the revision (the bundled set, or one outside the repository: as is)."""
    path = cfg.probes_path
    if path is None:
        return cfg
    rel = rev.rel(path)
    if rel is None:
        return cfg
    data = _read_at(rev, rel, ConfigError)
    if data is None:
        raise ConfigError(
            f"scoring.probes names {rel}, which does not exist at {rev.ref}", file=config_label or rev.label(rel)
        )
    copy = tmp / "probes" / PurePosixPath(rel).name  # the same suffix: it decides the probe file's format
    copy.parent.mkdir()
    copy.write_bytes(data)
    wt = rev.root / rel
    if wt.exists() or wt.is_symlink():
        skip.append(wt)
    if _link_change(rev, rel, "the probe set", "probes-link", changes):
        pass  # its target is never read, so there is nothing to compare
    elif rev.changed(rel):
        line = _first_different_line(data, wt.read_bytes()) if wt.is_file() else None
        changes.append(
            GateChange(
                "probes", WARNING, rel, line, f"changes the probe set {rel}; this check uses it as it is at {rev.ref}"
            )
        )
    return replace(cfg, scoring=replace(cfg.scoring, probes=str(copy)))


def _model_changes(rev: Revision, cfg: Config, changes: list[GateChange]) -> None:
    for key, name in (("model.name", cfg.model.name), ("model.adapter", cfg.model.adapter)):
        if name is None or name == "embedded":
            continue
        p = cfg.resolve(name)
        rel = rev.rel(p) if p.exists() else None
        if rel is not None and rev.changed(rel):
            changes.append(
                GateChange(
                    "model",
                    WARNING,
                    rel,
                    None,
                    f"changes the files of {key} ({rel}) since {rev.ref}; the check loads the "
                    "working tree's, and a baseline refuses a model whose fingerprint differs",
                )
            )


def gate_only_result(gate: BaseGate) -> LintResult:
    """The report of a check that scores no rows (none changed): the base threshold, when there is one, and the
    gate's changes."""
    t = gate.baseline.threshold if gate.baseline is not None else None
    value = (
        t.value
        if t is not None
        else (gate.config.threshold.value if gate.config.threshold.value is not None else math.nan)
    )
    method = f"{t.method}/{t.criterion}" if t is not None else ""
    fp = gate.baseline.fingerprint if gate.baseline is not None else None
    return LintResult(
        threshold=value,
        threshold_method=method,
        rows_total=0,
        rows_scored=0,
        findings=[],
        model=fp.model if fp else "",
        proxy=(fp.proxy or "") if fp else "",
        probe_set=(fp.probe_set or "") if fp else "",
        gate=gate.info,
    )


# ------------------------------------------------------------------------------------------------ the baseline


def _baseline_at(
    rev: Revision, cfg: Config, baseline_opt: Path | None, changes: list[GateChange], skip: list[Path]
) -> tuple[Baseline | None, str | None]:
    path = Path(baseline_opt) if baseline_opt is not None else cfg.baseline_path
    rel = rev.rel(path)
    if rel is None:  # outside the repository: no part of the pull request
        if path.exists() or baseline_opt is not None:
            return read_baseline(path), str(path)
        return None, None
    label = rev.label(rel)
    wt = rev.root / rel
    if wt.exists() or wt.is_symlink():
        skip.append(wt)
    linked = _link_change(rev, rel, "the baseline", "baseline-link", changes)
    data = _read_at(rev, rel, BaselineError)
    if data is None:
        if baseline_opt is not None:
            raise BaselineError(
                f"no baseline at {rev.ref}; a pull request cannot bring its own: commit the "
                "baseline to the base branch first",
                file=label,
            )
        if wt.is_file() and not linked:
            changes.append(
                GateChange(
                    "baseline-added",
                    WARNING,
                    rel,
                    None,
                    f"adds the baseline {rel}; this check does not use it (there is none at "
                    f"{rev.ref}): its rows and threshold take effect once merged",
                )
            )
        return None, None
    base = loads_baseline(_decode(data, label, BaselineError), label)
    if linked:
        return base, label
    if not wt.is_file():
        changes.append(
            GateChange(
                "baseline-removed",
                WARNING,
                rel,
                None,
                f"deletes the baseline {rel}; this check uses it as it is at {rev.ref}",
            )
        )
        return base, label
    new_bytes = wt.read_bytes()
    if new_bytes != data:
        try:
            text = new_bytes.decode("utf-8")
            mine = loads_baseline(text, rel)
        except (BaselineError, UnicodeDecodeError, RecursionError, ValueError) as e:
            changes.append(
                GateChange(
                    "baseline-unreadable",
                    WARNING,
                    rel,
                    getattr(e, "line", None),
                    f"changes the baseline {rel} into one that cannot be read ({e}); this check "
                    f"uses it as it is at {rev.ref}",
                )
            )
        else:
            changes += baseline_changes(base, mine, text, rel, rev.ref)
    return base, label


def baseline_changes(base: Baseline, mine: Baseline, text: str, rel: str, ref: str) -> list[GateChange]:
    """What `mine` (the work tree's baseline, whose file text is `text`) changes relative to `base`. An old
    16-digit id at `base` that `mine` holds as the full id of its row (`baseline update` upgrades them) is the same
    entry, not a removal and an addition."""
    base = upgrade_ids(base, chain(mine.scores, mine.accepted))
    out: list[GateChange] = []
    tail = f"this check uses the baseline as it is at {ref}"
    bt, mt = base.threshold, mine.threshold
    if bt.value != mt.value:
        way = "raises" if mt.value > bt.value else "lowers"
        out.append(
            GateChange(
                "threshold",
                WARNING,
                rel,
                _line_after(text, '"threshold"', '"value"'),
                f"{way} the threshold from {bt.value:.6g} to {mt.value:.6g}; {tail}",
            )
        )
    if (bt.method, bt.criterion) != (mt.method, mt.criterion):
        out.append(
            GateChange(
                "threshold",
                WARNING,
                rel,
                _line_after(text, '"threshold"', '"method"'),
                f"changes the threshold method from {bt.method}/{bt.criterion} to {mt.method}/{mt.criterion}; {tail}",
            )
        )
    diffs = base.fingerprint.differences(mine.fingerprint)
    if diffs:
        out.append(
            GateChange(
                "fingerprint",
                WARNING,
                rel,
                _line_after(text, '"fingerprint"', '"fingerprint"'),
                f"changes the fingerprint ({'; '.join(diffs)}); {tail}",
            )
        )
    accepted = sorted(k for k, r in mine.accepted.items() if base.accepted.get(k) != r)
    if accepted:
        out.append(
            GateChange(
                "accepted",
                WARNING,
                rel,
                _line_after(text, '"accepted"', f'"{accepted[0]}"'),
                f"accepts {_count(accepted, 'row')} ({_ids(accepted)}); accepted rows stop failing "
                f"checks once merged; {tail}",
            )
        )
    unaccepted = sorted(set(base.accepted) - set(mine.accepted))
    if unaccepted:
        out.append(
            GateChange(
                "accepted-removed",
                NOTE,
                rel,
                _line_after(text, '"accepted"', '"accepted"'),
                f"withdraws the acceptance of {_count(unaccepted, 'row')} ({_ids(unaccepted)})",
            )
        )
    changed = sorted(k for k, v in mine.scores.items() if k in base.scores and base.scores[k] != v)
    if changed:
        out.append(
            GateChange(
                "scores-changed",
                WARNING,
                rel,
                _line_after(text, '"scores"', f'"{changed[0]}"'),
                f"changes the recorded score of {_count(changed, 'row')} ({_ids(changed)}); {tail}",
            )
        )
    added = sorted(set(mine.scores) - set(base.scores))
    if added:
        out.append(
            GateChange(
                "scores-added",
                NOTE,
                rel,
                _line_after(text, '"scores"', f'"{added[0]}"'),
                f"records the scores of {_count(added, 'row')} not in the baseline at {ref}; the rows "
                "this check finds new are scored and judged all the same",
            )
        )
    removed = sorted(set(base.scores) - set(mine.scores))
    if removed:
        out.append(
            GateChange(
                "scores-removed",
                NOTE,
                rel,
                _line_after(text, '"scores"', '"scores"'),
                f"drops the scores of {_count(removed, 'row')} ({_ids(removed)})",
            )
        )
    if not out:
        out.append(GateChange("baseline", NOTE, rel, None, "rewrites the baseline without changing its content"))
    return out


def _count(ids: list[str], noun: str) -> str:
    return f"{len(ids)} {noun}{'s' if len(ids) != 1 else ''}"


def _ids(ids: list[str], n: int = 5) -> str:
    shown = ", ".join(i[:12] for i in ids[:n])  # as reports show ids; `accept` takes them
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _line_after(text: str, anchor: str, needle: str) -> int | None:
    """The line of the first `needle` at or after the first `anchor` (a key of the baseline's layout)."""
    a = text.find(anchor)
    if a < 0:
        return None
    i = text.find(needle, a)
    return text.count("\n", 0, i if i >= 0 else a) + 1


__all__ = ["NOTE", "WARNING", "BaseGate", "baseline_changes", "gate_only_result", "open_gate"]
