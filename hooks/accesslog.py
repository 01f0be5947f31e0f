"""Query values out of uvicorn's access log.

The Hub may carry the webhook secret in the target URL (`?secret=...`), and uvicorn's access log writes every
request's path with its query string: the secret would land in the server's logs (a Space's logs are visible to
everyone who can see the Space). A filter on the `uvicorn.access` logger replaces each query value before any
handler formats the record; the keys stay, so the log still shows which parameters a request carried.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "***"


def redact_query(target: str) -> str:
    """`target` (a path with its query string) with every query value replaced by `REDACTED`; a parameter without
    `=` is replaced whole (it could be a secret pasted without its name)."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for segment in query.split("&"):
        key, eq, _ = segment.partition("=")
        parts.append(f"{key}={REDACTED}" if eq else (REDACTED if segment else ""))
    return f"{path}?{'&'.join(parts)}"


class RedactQuery(logging.Filter):
    """Rewrites uvicorn's access records: their arguments are (client, method, path with query, HTTP version,
    status), and uvicorn's `AccessFormatter` reads them from `record.args`, so the path is replaced there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install `RedactQuery` on the `uvicorn.access` logger once. A logger's filters survive uvicorn's
    `dictConfig` (it replaces handlers, not filters), so this may run before or after uvicorn configures logging."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())


__all__ = ["REDACTED", "RedactQuery", "redact_access_log", "redact_query"]
