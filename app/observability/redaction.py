"""No credential in a log line: query-string values that may carry one are replaced.

A client may put a secret in a URL (``/v1/stream?api_key=...`` from old clients, a
``?token=`` some proxy adds); uvicorn's access log writes the path with its query string
(``"GET /predict?api_key=... HTTP/1.1" 200``, ``"WebSocket /v1/stream?api_key=..."
[accepted]``). :class:`RedactingFilter` rewrites every record whose message holds such a
parameter to ``api_key=[redacted]``. :func:`install_redaction` puts it on the loggers that write
request lines (uvicorn's and ours); :func:`app.observability.logs.configure_logging` also puts it on
its handler, so every line that handler writes is covered.

A parameter is taken for a credential when its name (case-insensitive) is one of
:data:`CREDENTIAL_NAMES` or ends with ``_``/``-``/``.`` and one of them (``access_token``,
``X-Amz-Signature``); ``keypoint=`` (a ``/visualize`` parameter) is not.
"""

from __future__ import annotations

import logging
import re

CREDENTIAL_NAMES = (
    "api_key",
    "apikey",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "authorization",
    "signature",
    "credential",
    "credentials",
    "jwt",
)
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "heatpose.app", "heatpose.batcher")
"""The loggers whose records may hold a request's URL."""

_NAMES = "|".join(re.escape(n) for n in CREDENTIAL_NAMES)
_PARAM = re.compile(
    rf"(?P<head>[?&;](?:[\w.%-]*[_.-])?(?:{_NAMES})=)(?P<value>[^&;#\s\"']*)", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the value of every credential-carrying query parameter replaced by
    ``[redacted]`` (the parameter's name stays: what was sent remains visible)."""
    if "=" not in text:
        return text
    return _PARAM.sub(lambda m: m["head"] + (REDACTED if m["value"] else ""), text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message when it holds a credential (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()


def install_redaction(*loggers: logging.Logger | logging.Handler) -> None:
    """Put the one :class:`RedactingFilter` on ``loggers`` (default: :data:`LOGGERS`);
    installing it twice changes nothing."""
    targets = loggers or tuple(logging.getLogger(n) for n in LOGGERS)
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
