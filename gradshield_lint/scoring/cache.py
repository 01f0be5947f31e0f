"""The machine-wide cache every environment on a machine shares: the embedded model's file (`models/`), prepared
models (`prepared/`) and ∇H entries (`grad-*.safetensors`).

`$GRADSHIELD_CACHE`, else `$XDG_CACHE_HOME/gradshield-lint`, else `~/.cache/gradshield-lint`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (read from the environment on each call: tests and the CLI may change it)."""
    root = os.environ.get("GRADSHIELD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gradshield-lint"
    )
    return Path(root)


__all__ = ["cache_root"]
