"""Errors a user can act on. Each carries the exit code the CLI returns (2: usage, configuration or input)."""

from __future__ import annotations

from pathlib import Path


class GradshieldError(Exception):
    """Base class: a user error. The CLI prints the message (no traceback) and exits with `exit_code`."""

    exit_code: int = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        where = ""
        if self.file is not None:
            where = f"{self.file}:{line}: " if line is not None else f"{self.file}: "
        super().__init__(where + message)


class InputError(GradshieldError):
    """A dataset file that cannot be read as rows."""


class ConfigError(GradshieldError):
    """A configuration file or option that is invalid."""


class ModelLoadError(GradshieldError):
    """A scoring model that cannot be loaded; the message names what was tried."""


class ProbeError(GradshieldError):
    """A safety probing set that is invalid."""


class BaselineError(GradshieldError):
    """A baseline that is unreadable or was made with different settings."""
