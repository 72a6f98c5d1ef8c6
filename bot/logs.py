"""Log formatting: plain text for terminals, one JSON object per line for log collectors (COUNSEL_LOG_FORMAT=json).

Message text is never logged unless COUNSEL_LOG_MESSAGE_TEXT is set: the modules log pseudonymous user keys and
request ids, and this formatter adds only the record's own fields (no `args` dump, no locals).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("httpx", "httpcore", "urllib3", "discord.gateway", "transformers", "filelock", "aiohttp.access")


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg", "process", "host"[, "exc"]}, one line per record."""

    def __init__(self, service: str | None = None):
        super().__init__()
        self.static = {"host": socket.gethostname(), "pid": os.getpid()}
        if service:
            self.static["service"] = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", service: str | None = None) -> None:
    """Configure the root logger once, in an entry point."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    # Like basicConfig: a root logger that is already configured (pytest, an embedding app) is left as it is.
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
