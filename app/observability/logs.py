"""Logging set-up: level and plain or JSON lines (HEATPOSE_LOG_LEVEL, HEATPOSE_JSON_LOGS);
credentials in URLs are redacted from every line (:mod:`app.observability.redaction`)."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

from app.observability.redaction import install_redaction


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, json_logs: bool) -> dict[str, Any]:
    """Configure the ``heatpose`` and ``uvicorn`` loggers; returns uvicorn's ``log_config``."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if json_logs else {"format": fmt}
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"redact": {"()": "app.observability.redaction.RedactingFilter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
            for name in ("heatpose", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
    logging.config.dictConfig(config)
    install_redaction()
    return config
