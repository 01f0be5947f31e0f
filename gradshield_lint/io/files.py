"""Which files are datasets: the configuration's `files` globs, read by one matcher everywhere.

`glob_regex` turns a glob into a regular expression over POSIX paths relative to the repository root; the CLI
(`expand_files`, over the work tree) and the webhook app (over a Hub repository's file listing) both match with
it, so a glob means the same in both. Globs read as `Path.glob` reads them: `**` is any number of directories
(`**/*.jsonl` also matches `a.jsonl`), `*` and `?` stay within one name and match a leading dot too, `[...]` is a
class (`[!...]` negated). Symbolic links to directories are never descended into, and `.git` and `.venv` folders
hold no datasets.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from gradshield_lint.errors import InputError
from gradshield_lint.io.rows import is_dataset_file

SKIPPED_FOLDERS = frozenset({".git", ".venv"})


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A configuration glob as a regex over POSIX paths relative to the repository root (see the module)."""
    out, i = "", 0
    p = pattern.lstrip("/")
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif p.startswith("**", i):
            out += ".*"
            i += 2
        elif p[i] == "*":
            out += "[^/]*"
            i += 1
        elif p[i] == "?":
            out += "[^/]"
            i += 1
        elif p[i] == "[":
            j = i + 1
            if p[j : j + 1] == "!":
                j += 1
            if p[j : j + 1] == "]":
                j += 1
            k = p.find("]", j)
            if k == -1:
                out += re.escape("[")
                i += 1
                continue
            body = p[i + 1 : k]
            if body.startswith("!"):
                body = "^/" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = k + 1
        else:
            out += re.escape(p[i])
            i += 1
    return re.compile(out + r"\Z")


def matches(path: str, globs: Iterable[str]) -> bool:
    """Whether POSIX path `path` (relative to the root) matches any of `globs`."""
    return any(glob_regex(g).match(path) for g in globs)


def files_under(folder: Path) -> list[str]:
    """Every file under `folder` as a POSIX path relative to it, in `Path.glob`'s sorted order; `.git` and `.venv`
    folders and symbolic links to directories are skipped."""
    out: list[str] = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIPPED_FOLDERS]
        rel = PurePosixPath(Path(here).relative_to(folder).as_posix())
        out.extend(str(rel / n) if str(rel) != "." else n for n in names)
    return sorted(out, key=lambda r: PurePosixPath(r).parts)


def glob_files(folder: Path, globs: Sequence[str]) -> list[Path]:
    """The files under `folder` matching `globs` (read relative to `folder`), glob by glob, each sorted."""
    found = files_under(folder)
    return [folder / rel for g in globs for rel in found if glob_regex(g).match(rel)]


def _resolved(p: Path) -> Path:
    """`p.resolve()`, or the absolute path for a symlink loop (which `resolve` refuses): reading it says why."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def _literal(p: Path) -> Path:
    """`p` with its folders resolved but not its last name: a link named like the baseline is not its target."""
    return _resolved(p.parent) / p.name


LINK_REFUSED = "is a symbolic link; gradshield-lint does not follow links in a dataset (commit the file itself)"


def _refuse_link(p: Path) -> None:
    # A link lets a dataset file's rows live under another name (outside the `files` globs, or outside the
    # repository), and git, the Action and pre-commit all see a link change, not a content change.
    if not p.is_symlink():
        return
    try:
        p.resolve(strict=True)
        what = ""
    except RuntimeError:
        what = " (a symlink loop)"
    except OSError as e:
        what = " (a symlink loop)" if e.errno == errno.ELOOP else " (a dangling one)"
    raise InputError(LINK_REFUSED.replace(";", what + ";", 1), file=p)


def saved_dataset_of(p: Path, root: Path) -> Path | None:
    """The outermost `datasets` save_to_disk directory holding file `p` (looked for up to `root` when `p` lies
    under it), spelled as `p` is; None when there is none. Its files (Arrow data, state.json, dataset_info.json)
    are no datasets of their own: the directory is."""
    found = None
    top = _resolved(root)
    for d in p.parents:
        if d.is_dir() and is_dataset_file(d):
            found = d
        if _resolved(d) == top:
            break
    return found


def expand_files(
    paths: Iterable[str | Path],
    globs: Sequence[str],
    root: Path,
    skip: Iterable[Path] = (),
    *,
    refuse_links: bool = False,
) -> list[str | Path]:
    """Files named on the command line; a directory expands by the configured globs; none: the globs under root.
    `hf://` paths stay strings (a Path would fold their `//`). A file inside a save_to_disk directory stands for
    the directory.

    Paths in `skip` (the baseline: it is JSON, and a hook's `files:` pattern passes it along with the data) are
    never read as datasets; they are compared by name, not by what a link points at. A directory named in `paths`
    with no dataset file in it is an InputError: a check of nothing must not pass. With `refuse_links` (`check`), a
    dataset file that is a symbolic link is an InputError naming it.
    """
    skipped = {_literal(Path(p)) for p in skip}
    out: list[str | Path] = []
    paths = list(paths)
    items = paths or [root]
    for item in items:
        if str(item).startswith("hf://"):
            out.append(str(item))
            continue
        p = Path(item)
        if refuse_links and _literal(p) not in skipped:
            _refuse_link(p)
        if not p.is_dir() or is_dataset_file(p):
            out.append(p)
            continue
        # the globs are the repository's (relative to root), but a user naming `data/` means the files under it
        # whether the globs are read from the root (`data/**/*.jsonl`) or from the directory itself (`**/*.jsonl`)
        under = _resolved(p)
        from_root = [q for q in glob_files(root, globs) if under in _resolved(q).parents]
        found = [q for q in [*from_root, *glob_files(p, globs)] if _literal(q) not in skipped]
        if refuse_links:
            for q in found:
                _refuse_link(q)
        found = [q for q in found if q.is_file()]
        found = list({_resolved(q): q for q in reversed(found)}.values())[::-1]  # one entry per file, first spelling
        if not found and paths:
            raise InputError(
                f"no dataset file in this directory (none matches the configured `files` globs: {', '.join(globs) or 'none'})",
                file=p,
            )
        out.extend(found)
    uniq: dict[str, str | Path] = {}
    for f in out:
        if isinstance(f, Path) and not f.is_dir():
            f = saved_dataset_of(f, root) or f
        if isinstance(f, str) or _literal(f) not in skipped:
            uniq.setdefault(str(f), f)
    return list(uniq.values())


__all__ = [
    "LINK_REFUSED",
    "SKIPPED_FOLDERS",
    "expand_files",
    "files_under",
    "glob_files",
    "glob_regex",
    "matches",
    "saved_dataset_of",
]
