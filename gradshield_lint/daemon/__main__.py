"""`python -m gradshield_lint.daemon serve SETTINGS KEY`: what `gradshield-lint` starts in the background."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "serve":
        print("usage: python -m gradshield_lint.daemon serve SETTINGS_FILE KEY", file=sys.stderr)
        return 2
    from gradshield_lint.daemon.server import serve

    return serve(Path(argv[1]), argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
