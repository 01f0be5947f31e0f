"""A warm scoring process the CLI reuses, so that a pre-commit hook does not pay the model's load on every commit.

`server.py` holds one Engine (prepared model, ∇H, category directions) and answers score requests on a Unix socket
in the cache folder (`paths.py`); `client.py` is the Engine the CLI scores with, which asks that process first and
scores in-process whenever it cannot (disabled, not started yet, dead, hung, stale, foreign, another key).
"""

from __future__ import annotations

from gradshield_lint.daemon.client import WarmEngine
from gradshield_lint.daemon.paths import daemon_enabled

__all__ = ["WarmEngine", "daemon_enabled"]
