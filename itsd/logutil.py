"""Logging set-up shared by the supervisor and every stage process.

Every line names the process role (``supervisor``, ``decode:cam1``, ``infer``...) so one
journal or terminal shows which stage said what. Every record's final message, exception
text and stack text pass through :func:`itsd.redact.redact_text` before they are
formatted, so no log line carries a camera password or a token, whatever a caller or a
library (FFmpeg quoting the URL it failed to open) put in it.

This module must never import anything beyond the standard library and ``itsd.redact``
(itself standard library only).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from itsd.redact import redact_text

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(role)s[%(process)d] %(name)s: %(message)s"


class _RoleFilter(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


class _RedactFilter(logging.Filter):
    """Replace a record's message (arguments merged in), exception and stack text by their
    redacted forms. Installed on the handler, so it sees every record that is written."""

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, redacted
            message = f"{record.msg!s} % {record.args!r}"
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": getattr(record, "role", ""),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj)


def setup_logging(level: str, role: str, fmt: str = "text") -> None:
    """Send log records of this process to stderr, tagged with ``role``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter(role))
    handler.addFilter(_RedactFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate every step at INFO (the store's migrations) speak up only
    # for warnings unless itsd itself runs at DEBUG.
    if level.upper() != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
