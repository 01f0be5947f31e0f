"""The installed `gradshield-lint` console script, run as a real process."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_installed_console_script_runs(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("gradshield-lint")
    if not exe.exists():
        pytest.skip("console script not installed")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "check" in out.stdout
    out = subprocess.run(
        [str(exe), "check", "nope.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nope.jsonl" in out.stderr, out.stderr
