"""The public API is what gradshield_lint exports; every name resolves, and importing it does not load torch."""

import subprocess
import sys

import gradshield_lint


def test_every_exported_name_resolves():
    for name in gradshield_lint.__all__:
        assert getattr(gradshield_lint, name) is not None, name


def test_import_is_light():
    code = "import sys, gradshield_lint, gradshield_lint.io.rows, gradshield_lint.lint.baseline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_settings_and_results_are_torch_free():
    """What a caller builds before scoring (settings, options, a model spec) and reads after (a row's score) needs
    no torch: an Engine that is asked for nothing never imports it."""
    code = (
        "import sys, gradshield_lint as g; "
        "s = g.EngineSettings(); g.Engine(s); g.ScoreOptions(); g.ProxyOptions(); g.ModelSpec(); "
        "g.RowScore(0.0, 0.0, None, False, 1, 1); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
