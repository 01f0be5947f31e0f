"""Errors a user can act on. Each carries the exit code the CLI returns (2: usage, configuration or input)."""

from __future__ import annotations

from pathlib import Path

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
"""Any exception that is not a GradshieldError: a bug in gradshield-lint (never 1, which means findings)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as a shell reports it)."""


class GradshieldError(Exception):
    """Base class: a user error. The CLI prints the message (no traceback) and exits with `exit_code`."""

    exit_code: int = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.message = message  # without the file:line prefix
        where = ""
        if self.file is not None:
            where = f"{self.file}:{line}: " if line is not None else f"{self.file}: "
        super().__init__(where + message)


class InputError(GradshieldError):
    """A dataset file that cannot be read as rows."""


class ConfigError(GradshieldError, ValueError):
    """A configuration file or option that is invalid (a bad value: also a ValueError, for library callers)."""


class ModelLoadError(GradshieldError):
    """A scoring model that cannot be loaded; the message names what was tried."""


class ProbeError(GradshieldError):
    """A safety probing set that is invalid."""


class BaselineError(GradshieldError):
    """A baseline that is unreadable or was made with different settings."""


class RowIdError(GradshieldError):
    """A row id given on the command line (`accept`) that names no known row, or more than one."""


class OutputError(GradshieldError, OSError):
    """An output file that cannot be written (a missing or read-only folder, a full device, an input named as an
    output); the message names the path. Also an OSError, so that a caller that tolerates a failed write (a
    read-only cache) still does. `reason`: the system's words, for a caller that words its own message."""

    reason: str | None = None
