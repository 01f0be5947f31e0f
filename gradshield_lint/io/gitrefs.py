"""Git and pre-commit plumbing: files and rows as they are at a git revision (what `check --diff-base REF` reads
the trusted gate with), and the revision pre-commit's pre-push stage names.

Everything is read through git (`git cat-file`), never from the work tree: the work tree is what the pull request
being judged checked out, the revision is what it is judged against. `git` runs with an argument list (no shell)
and a revision that starts with `-` is refused, so a ref or path from a pull request is never read as an option.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gradshield_lint.errors import ConfigError, InputError
from gradshield_lint.io.rows import Row, RowShape, iter_rows


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    # LC_ALL=C: messages are never parsed, but keep them stable in logs; GIT_OPTIONAL_LOCKS=0: read-only here.
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, env=env)


def repo_root(start: Path) -> Path | None:
    """The top of the git work tree that holds `start` (a file or directory), or None outside one."""
    start = Path(start)
    here = start if start.is_dir() else (start.parent if str(start.parent) else Path.cwd())
    if not here.exists():
        here = Path.cwd()
    top = _git(["rev-parse", "--show-toplevel"], here)
    if top.returncode != 0:
        return None
    return Path(top.stdout.decode("utf-8", "surrogateescape").strip()).resolve()


@dataclass(frozen=True)
class Revision:
    """One commit of the repository at `root`. `ref` is what the user named, `commit` what it resolved to."""

    root: Path
    ref: str
    commit: str

    @classmethod
    def open(cls, ref: str, start: Path | None = None) -> Revision:
        """The commit `ref` names in the repository holding `start` (default: the working directory).

        ConfigError when there is no repository or no such commit (exit 2: a usage error, not a finding)."""
        if not ref or ref.startswith("-"):
            raise ConfigError(f"--diff-base: {ref!r} is not a git revision")
        root = repo_root(Path(start) if start is not None else Path.cwd())
        if root is None:
            raise ConfigError(f"--diff-base {ref}: not inside a git repository")
        got = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], root)
        if got.returncode != 0:
            # a tree or blob id (or a tag of one) is a revision git knows, just not one that has a baseline
            kind = _git(["cat-file", "-t", f"{ref}^{{}}"], root)
            if kind.returncode == 0 and kind.stdout.strip() in (b"tree", b"blob"):
                raise ConfigError(f"--diff-base: {ref} is a {kind.stdout.decode().strip()}, not a commit")
            raise ConfigError(f"--diff-base: unknown git revision {ref!r} (fetch it first, e.g. with fetch-depth: 0)")
        return cls(root, ref, got.stdout.decode().strip())

    def rel(self, path: str | Path) -> str | None:
        """`path` (absolute, or relative to the working directory) relative to the repository root, POSIX style;
        None when it lies outside the repository (it is then no part of any revision).

        Lexical: symbolic links in the work tree are not followed, or the checked revision would choose which
        file of the base revision is read (a baseline linked to another one). Only a path that lies outside the
        root as spelled (reached through a link above the repository) has its folders resolved."""
        p = Path(path)
        p = Path(os.path.normpath(p if p.is_absolute() else Path.cwd() / p))
        for cand in (p, p.parent.resolve() / p.name):
            try:
                rel = cand.relative_to(self.root)
            except ValueError:
                continue
            return PurePosixPath(rel.as_posix()).as_posix()
        return None

    def label(self, rel: str) -> str:
        """How messages name a file of this revision: `REF:path`."""
        return f"{self.ref}:{rel}"

    def _kind(self, rel: str) -> str | None:
        got = _git(["cat-file", "-t", f"{self.commit}:{rel}"], self.root)
        return got.stdout.decode().strip() if got.returncode == 0 else None

    def exists(self, rel: str) -> bool:
        return self._kind(rel) == "blob"

    def is_link(self, rel: str) -> bool:
        """Whether `rel` is a symbolic link at this revision (a blob holding the link's target, mode 120000)."""
        parent, _, name = rel.rpartition("/")
        listing = _git(["ls-tree", "-z", f"{self.commit}:{parent}" if parent else f"{self.commit}^{{tree}}"], self.root)
        if listing.returncode != 0:
            return False
        for entry in listing.stdout.split(b"\0"):
            meta, _, entry_name = entry.partition(b"\t")
            if entry_name == os.fsencode(name):
                return meta.startswith(b"120000 ")
        return False

    def read(self, rel: str) -> bytes | None:
        """The bytes of file `rel` at this revision (after the repository's filters, e.g. Git LFS, where git can
        apply them), or None when the revision has no such file."""
        kind = self._kind(rel)
        if kind is None:
            return None
        if kind != "blob":
            raise InputError(f"is a {kind} at {self.ref}, not a file", file=self.label(rel))
        spec = f"{self.commit}:{rel}"
        got = _git(["cat-file", "--filters", spec], self.root)
        if got.returncode != 0:  # a filter that is not installed: the stored bytes
            got = _git(["cat-file", "blob", spec], self.root)
        if got.returncode != 0:
            msg = got.stderr.decode("utf-8", "replace").strip().splitlines()
            raise InputError(f"git cannot read it: {msg[-1] if msg else 'unknown error'}", file=self.label(rel))
        return got.stdout

    def changed(self, rel: str) -> bool:
        """Whether the work tree's `rel` (a file or a directory) differs from this revision: modified, added,
        deleted, or untracked files under it."""
        if _git(["diff", "--quiet", "--no-ext-diff", self.commit, "--", f":(literal){rel}"], self.root).returncode != 0:
            return True
        untracked = _git(["ls-files", "-z", "--others", "--exclude-standard", "--", f":(literal){rel}"], self.root)
        return bool(untracked.stdout)


def rows_at_revision(path: Path, ref: str, shape: RowShape | None) -> list[Row]:
    """The rows a file had at git revision `ref` (none if the file did not exist there, or did not read as rows:
    then every row of the new one counts as new). Each row is named by the work tree's `path`."""
    path = Path(path)
    rev = Revision.open(ref, path.parent if str(path.parent) else Path.cwd())
    rel = rev.rel(path)
    if rel is None:
        raise InputError("--diff-base needs the file to be inside the git repository", file=path)
    data = rev.read(rel) if rev.exists(rel) else None
    if data is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / path.name
        old.write_bytes(data)
        try:
            return [Row(r.id, r.messages, str(path), r.line) for r in iter_rows(old, shape)]
        except InputError:
            return []


def pre_commit_from_ref(environ: Mapping[str, str] | None = None) -> str | None:
    """The revision already pushed, under pre-commit's pre-push stage (`PRE_COMMIT_FROM_REF`; rows there are not
    new), or None (another stage, or a new branch: pre-commit passes all zeros)."""
    env = os.environ if environ is None else environ
    ref = env.get("PRE_COMMIT_FROM_REF") or env.get("PRE_COMMIT_SOURCE")
    if ref and set(ref) != {"0"}:
        return ref
    return None


__all__ = ["Revision", "pre_commit_from_ref", "repo_root", "rows_at_revision"]
