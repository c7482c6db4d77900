"""One log format for every line the router writes: a JSON object per line.

The router's own modules log through structlog (``router.telemetry``); libraries
(aiokafka, aiohttp) and the warehouse loaders log through the standard library. Without
this, their lines were plain text between the JSON ones, which a log pipeline parsing
JSON would mangle or drop. ``JsonFormatter`` writes a standard-library record with the
keys structlog's lines have (``event``, ``level``, ``timestamp``), plus ``logger`` and,
for an exception, ``exception``; every line passes through ``router.redact``. Standard
library, ``orjson`` and the redactor only, so that DuckDB's loader process can use it
without importing the rest of the router.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from router.redact import redact

QUIET = ("aiokafka", "kafka")  # their INFO is per-connection chatter: WARNING and up


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "event": record.getMessage(), "level": record.levelname.lower(),
            "logger": record.name,
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace(
                "+00:00", "Z")}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())  # e.g. a URL's api key


def configure_stdlib(level: str | int = "INFO", stream: Any = None) -> None:
    """The root logger writes JSON lines to ``stream`` (stderr) at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
